"""What the version, compare and review pages show, gathered from the catalog as plain dicts.

Everything here reads through the catalog's own calls (``catalog.resolve``, ``list_records``,
``latest_card``, ``alias_policies``...) and returns data for the templates; nothing is marked safe
and nothing from the catalog becomes a path or a URL other than through ``url_part``-escaped
segments (names, versions and record ids follow the catalog's patterns anyway). The pages
(``version_pages``, ``compare_pages``, ``review_forms``) decide who may see what.
"""

from __future__ import annotations

from ...catalog.records import PromptRecord, get_record, latest_card, list_records
from ...catalog.refs import check_name
from ...errors import NotFound

GALLERY_LIMIT = 60          # prompt records shown on a version page (newest first)
COMPARE_RECORD_LIMIT = 400  # records read per compared version
MAX_COMPARED = 4
DEFAULT_PROMPT_WEIGHT = 0.8  # the weight in the line to paste (the README's examples use 0.8)
METADATA_GROUPS = (("ss_", "kohya (ss_*)"), ("modelspec.", "ModelSpec (modelspec.*)"))
METADATA_VALUE_CHARS = 4000  # a metadata value longer than this is cut (ss_tag_frequency can be huge)


# --- one version ----------------------------------------------------------------------------------

def resolve_version(catalog, name: str, selector: str):
    """``name`` + a version / alias / ``latest`` → the catalog ``Version`` (InvalidName, NotFound)."""
    check_name(name)
    return catalog.resolve(f"{name}@{selector}")


def prompt_line(adapter_kind: str, version) -> str:
    """What to paste into a prompt: ``<lora:NAME@X.Y.Z:0.8>``; an embedding is used by its token."""
    if adapter_kind == "embedding":
        tokens = (version.probe or {}).get("tokens") or []
        return str(tokens[0]) if tokens else version.adapter
    return f"<lora:{version.adapter}@{version.version}:{DEFAULT_PROMPT_WEIGHT}>"


def probe_facts(version) -> list[tuple[str, str]]:
    """(label, value) rows of what probing found: kind, format, family, rank, alpha, targets, components."""
    probe = version.probe or {}

    def joined(values) -> str:
        return ", ".join(str(v) for v in values) if values else "—"

    alphas = probe.get("alphas") or []
    rows = [("kind", probe.get("kind") or "—"), ("algorithm", probe.get("algorithm") or "—"),
            ("format", probe.get("format") or version.file_format or "—"),
            ("base family", probe.get("base") or "—"), ("base evidence", probe.get("base_reason") or "—"),
            ("rank", joined(probe.get("ranks"))),
            ("alpha", joined(alphas) if alphas else "= rank (none stored)"),
            ("modules", str(probe.get("module_count", "—"))),
            ("targets", joined(probe.get("target_modules"))), ("components", joined(probe.get("components"))),
            ("dtypes", joined(probe.get("dtypes")))]
    if probe.get("tokens"):
        rows.append(("tokens", joined(probe.get("tokens"))))
    return rows


def metadata_groups(version) -> list[dict]:
    """The file's header metadata split into ``ss_*``, ``modelspec.*`` and the rest (sorted keys)."""
    metadata = version.file_metadata or (version.probe or {}).get("metadata") or {}
    groups = [{"title": title, "prefix": prefix, "items": []} for prefix, title in METADATA_GROUPS]
    other = {"title": "other", "prefix": "", "items": []}
    for key in sorted(metadata, key=str):
        value = metadata[key]
        text = value if isinstance(value, str) else repr(value)
        if len(text) > METADATA_VALUE_CHARS:
            text = text[:METADATA_VALUE_CHARS] + f"… ({len(text)} characters)"
        group = next((g for g in groups if str(key).startswith(g["prefix"])), other)
        group["items"].append((str(key), text))
    return [g for g in groups + [other] if g["items"]]


def sample_view(record: PromptRecord, verdicts: dict | None = None) -> dict:
    """One prompt record as the gallery shows it, with the line that reproduces it."""
    r = record.record
    scheduler = (r.get("scheduler") or {}).get("name")
    base = r.get("base") or {}
    return {"id": record.id, "image": record.image_blob, "source": r.get("source"),
            "prompt": r.get("prompt", ""), "clean_prompt": r.get("clean_prompt", ""),
            "negative": r.get("negative_prompt", ""), "seed": r.get("seed"), "steps": r.get("steps"),
            "cfg": r.get("cfg"), "width": r.get("width"), "height": r.get("height"),
            "size": f"{r.get('width')}×{r.get('height')}" if r.get("width") and r.get("height") else "—",
            "scheduler": scheduler or "—", "base": base.get("ref") or "—", "base_family": base.get("family") or "—",
            "stack": [{"ref": e.get("ref") or e.get("requested"), "te": e.get("te_weight"), "unet": e.get("unet_weight")}
                      for e in r.get("stack") or []],
            "render_line": f"loradex render {record.id}", "created_by": record.created_by,
            "verdicts": (verdicts or {}).get(record.id, [])}


def _verdicts_by_record(card: dict | None) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for v in (card or {}).get("human_verdicts", []):
        out.setdefault(v["record_id"], []).append(v)
    return out


def card_view(card) -> dict | None:
    """The evaluation card: every metric with its threshold, the failure checks, the verdict, the
    human verdicts and the chosen / rejected candidates. None when the version has none."""
    if card is None:
        return None
    c = card.card
    thresholds = c.get("thresholds") or {}
    metrics = []
    for name, m in c.get("metrics", {}).items():
        limits = thresholds.get(name) or {}
        value = m.get("value")
        outside = [bound for bound, limit in limits.items()
                   if value is not None and ((bound == "min" and value < limit) or (bound == "max" and value > limit))]
        metrics.append({"name": name, "value": value, "status": m.get("status"), "note": m.get("note", ""),
                        "definition": m.get("definition", ""), "model": m.get("model", ""),
                        "threshold": ", ".join(f"{bound} {limit:g}" for bound, limit in sorted(limits.items())),
                        "state": "none" if not limits else ("missing" if value is None else
                                                           ("outside" if outside else "inside"))})
    checks = [{"name": name, **chk} for name, chk in c.get("failure_checks", {}).items()]
    return {"id": card.id, "passed": card.passed, "reasons": c.get("reasons", []), "metrics": metrics,
            "checks": checks, "human_verdicts": c.get("human_verdicts", []),
            "chosen": [x for x in c.get("candidates", []) if x["status"] == "chosen"],
            "rejected": [x for x in c.get("candidates", []) if x["status"] == "rejected"],
            "revises": c.get("revises"), "created_at": c.get("created_at"), "created_by": c.get("created_by"),
            "embedder": (c.get("embedder") or {}).get("model", ""), "base": (c.get("base") or {}).get("ref", ""),
            "settings": c.get("settings") or {}, "seeds": c.get("seeds") or [],
            "prompts": (c.get("prompt_suite") or {}).get("prompts", []), "samples": c.get("samples", [])}


def newest_card(catalog, ref: str):
    try:
        return latest_card(catalog, ref)
    except NotFound:
        return None


def deleted_upstream(version) -> dict | None:
    """``{"date", "source"}`` when `loradex outdated` recorded the version gone where it was pulled
    from (``extra["upstream"]``, registry.remotes.upstream), else None. The stored values are
    shown only as short strings (the template escapes them)."""
    upstream = (version.extra or {}).get("upstream")
    if not isinstance(upstream, dict) or upstream.get("state") != "deleted":
        return None

    def text(value, fallback: str) -> str:
        return value[:120] if isinstance(value, str) and value else fallback

    return {"date": text(upstream.get("deleted_at"), "an unknown day"),
            "source": text(upstream.get("source"), "its source")}


def version_view(catalog, version) -> dict:
    """Everything the version page shows about ``version`` (a catalog ``Version``)."""
    from ...catalog.records import alias_policies

    adapter = catalog.get_adapter(version.adapter)
    card = newest_card(catalog, version.ref)
    verdicts = _verdicts_by_record(card.card if card else None)
    records = list_records(catalog, version.ref, limit=GALLERY_LIMIT)
    aliases = catalog.aliases(version.adapter)
    policies = alias_policies(catalog, version.adapter)
    others = [v.version for v in reversed(catalog.versions(version.adapter)) if v.version != version.version]
    return {"adapter": adapter, "version": version, "prompt_line": prompt_line(adapter.kind, version),
            "hashes": [("sha256", version.sha256), ("AutoV1", version.autov1 or "—"),
                       ("AutoV2", version.autov2 or "—"), ("AutoV3", version.autov3 or "—")],
            "probe": probe_facts(version), "metadata": metadata_groups(version),
            "triggers": list(version.trigger_words), "samples": [sample_view(r, verdicts) for r in records],
            "card": card_view(card), "aliases": aliases,
            "here": sorted(a.name for a in aliases if a.version == version.version),
            "alias_names": sorted({a.name for a in aliases} | {p.alias for p in policies} | {"production"}),
            "alias_targets": {a.name: a.version for a in aliases}, "gated": {p.alias for p in policies},
            "others": others, "deleted_upstream": deleted_upstream(version)}


def adapter_namespace_of(catalog, name: str) -> str:
    """The namespace adapter ``name`` belongs to (the Hub's rule: the repo its first pushed version
    came from; ``HOME_NAMESPACE`` for the home's own); NotFound for an unknown name."""
    from ...catalog.store import adapter_row
    from ..civitai_query import adapter_namespace

    check_name(name)
    return catalog.read(lambda s: adapter_namespace(s, adapter_row(s, name).id))


# --- compare ---------------------------------------------------------------------------------------

def setting_key(record: dict) -> tuple:
    """What makes two renders comparable: same prompt text (without the adapter tags), negative,
    seed, steps, CFG, size, scheduler and base model."""
    base = record.get("base") or {}
    return (record.get("clean_prompt") or "", record.get("negative_prompt") or "", record.get("seed"),
            record.get("steps"), record.get("cfg"), record.get("width"), record.get("height"),
            (record.get("scheduler") or {}).get("name"), base.get("ref"), base.get("sha256"))


def _metric_deltas(cards: list) -> list[dict]:
    """Per metric: each compared card's value and its difference from the first column's."""
    names: list[str] = []
    for card in cards:
        for name in (card.card.get("metrics") if card else {}) or {}:
            if name not in names:
                names.append(name)
    rows = []
    for name in names:
        values = [((card.card["metrics"].get(name) or {}).get("value") if card else None) for card in cards]
        first = values[0]
        rows.append({"name": name, "cells": [{"value": v, "delta": (v - first) if v is not None and first is not None
                                                and i > 0 else None} for i, v in enumerate(values)]})
    return rows


def compare_view(catalog, name: str, selectors: list[str]) -> dict:
    """2-4 versions of ``name`` on the same prompt records: a row per setting key (``setting_key``)
    that at least two columns share, a column per version plus the base model alone where records
    without the adapter exist for the keys (the cards' ``without_adapter`` samples)."""
    from ...errors import UsageError

    if not 2 <= len(selectors) <= MAX_COMPARED:
        raise UsageError(f"compare takes 2 to {MAX_COMPARED} versions (?v=1.0.0&v=1.1.0)")
    versions = [resolve_version(catalog, name, s) for s in selectors]
    if len({v.id for v in versions}) != len(versions):
        raise UsageError("compare: the same version is named twice")
    cards = [newest_card(catalog, v.ref) for v in versions]
    columns: list[dict[tuple, PromptRecord]] = []
    for version in versions:
        by_key: dict[tuple, PromptRecord] = {}
        for record in list_records(catalog, version.ref, limit=COMPARE_RECORD_LIMIT):  # newest first
            by_key.setdefault(setting_key(record.record), record)
        columns.append(by_key)
    base_column: dict[tuple, PromptRecord] = {}
    for card in cards:
        for sample in (card.card.get("samples") if card else []) or []:
            try:
                record = get_record(catalog, sample["without_adapter"])
            except NotFound:
                continue
            if not record.record.get("stack"):
                base_column.setdefault(setting_key(record.record), record)
    keys = [k for k in dict.fromkeys(k for col in columns for k in col)
            if sum(k in col for col in columns) >= 2]
    keys.sort(key=lambda k: (k[0], k[2] if k[2] is not None else -1, k[1], str(k[3:])))
    with_base = any(k in base_column for k in keys)
    rows = []
    for key in keys:
        cells = [sample_view(col[key]) if key in col else None for col in columns]
        base = sample_view(base_column[key]) if with_base and key in base_column else None
        rows.append({"prompt": key[0], "negative": key[1], "seed": key[2], "steps": key[3], "cfg": key[4],
                     "size": f"{key[5]}×{key[6]}" if key[5] and key[6] else "—", "scheduler": key[7] or "—",
                     "base": key[8] or "—", "cells": cells, "base_cell": base})
    return {"name": name, "versions": versions, "cards": cards, "rows": rows, "with_base": with_base,
            "metrics": _metric_deltas(cards), "flip": len(versions) == 2}


# --- review ----------------------------------------------------------------------------------------

def review_view(catalog, version, reviewer: str | None) -> dict:
    """The review form's samples: the card's samples (with and without the adapter) and the
    version's other records (``generate`` candidates), each with the reviewer's verdict so far."""
    card = newest_card(catalog, version.ref)
    if card is None:
        raise NotFound(f"{version.ref} has no evaluation card",
                       hint=f"run `loradex eval {version.ref} --prompts SUITE.txt` first")
    c = card.card
    mine = {v["record_id"]: v for v in c.get("human_verdicts", []) if v["by"] == reviewer}
    samples, seen = [], set()
    for s in c.get("samples", []):
        try:
            record = get_record(catalog, s["with_adapter"])
        except NotFound:
            continue
        seen.add(record.id)
        samples.append({**sample_view(record), "mine": mine.get(record.id), "base_image": _image_of(catalog, s)})
    for record in list_records(catalog, version.ref, limit=GALLERY_LIMIT):
        if record.id not in seen:
            seen.add(record.id)
            samples.append({**sample_view(record), "mine": mine.get(record.id), "base_image": None})
    checks = [{"name": n, **chk} for n, chk in c.get("failure_checks", {}).items()]
    return {"card": card_view(card), "samples": samples, "checks": checks, "record_ids": [s["id"] for s in samples]}


def _image_of(catalog, sample: dict) -> str | None:
    try:
        return get_record(catalog, sample["without_adapter"]).image_blob
    except NotFound:
        return None
