"""What the catalog and adapter pages read: one function per page, plain dicts out, every read
limited to the namespaces the visitor may see (``namespaces`` None: all).

``find_adapters`` is the catalog page's search; it calls the library's search when there is one
(``registry/catalog/search.py``, the same function as ``loradex search``) and otherwise matches
words in Python over ``Catalog.list_adapters`` and the versions' texts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import select

from ...catalog.db_schema import (AdapterRow, AliasEventRow, AliasRow, EvalCardRow, LineageRow, PromptRecordRow,
                                  PromptRecordVersionRow, VersionRow)
from ...catalog.search import family_filter
from ...catalog.search_words import family_words, version_variant
from ..civitai_query import in_namespaces

SORTS = ("relevance", "updated", "name")
MAX_QUERY_CHARS = 200


@dataclass(frozen=True)
class CatalogQuery:
    """The catalog page's GET form, validated."""

    q: str = ""
    kind: str = ""
    base: str = ""
    variant: str = ""  # family/variant (the variant facet)
    tag: str = ""  # K=V or K
    trigger: str = ""
    alias: str = ""
    sort: str = "relevance"
    page: int = 1
    per_page: int = 24

    @classmethod
    def from_params(cls, params) -> "CatalogQuery":
        from .common import int_param

        def text(key: str) -> str:
            value = params.get(key) or ""
            return " ".join(str(value).split())[:MAX_QUERY_CHARS]

        sort = text("sort") if text("sort") in SORTS else "relevance"
        return cls(q=text("q"), kind=text("kind"), base=text("base"), variant=text("variant"), tag=text("tag"),
                   trigger=text("trigger"),
                   alias=text("alias"), sort=sort, page=int_param(params.get("page"), 1, most=100_000),
                   per_page=int_param(params.get("per_page"), 24, least=1, most=100))

    def params(self, **changes) -> dict:
        """The query as URL parameters (empty ones left out), with ``changes``."""
        values = {"q": self.q, "kind": self.kind, "base": self.base, "variant": self.variant, "tag": self.tag,
                  "trigger": self.trigger,
                  "alias": self.alias, "sort": self.sort if self.sort != "relevance" else "",
                  "page": self.page if self.page != 1 else "", "per_page": self.per_page if self.per_page != 24 else ""}
        values.update(changes)
        return {k: v for k, v in values.items() if v not in ("", None)}


@dataclass
class Found:
    names: list[str]  # this page's adapters, in order
    total: int
    facets: dict[str, list[tuple[str, int]]] = field(default_factory=dict)


def _words(text: str) -> list[str]:
    return [w for w in text.lower().split() if w]


def _visible(stmt, namespaces):
    return stmt if namespaces is None else stmt.where(in_namespaces(namespaces))


def find_adapters(catalog, query: CatalogQuery, namespaces: frozenset | None) -> Found:
    """The adapters matching ``query`` (this page of them), their total and the facet counts
    (kind, base, tag, alias) over all matches: ``search_catalog`` (what ``loradex search``
    runs) for visitors who may see every adapter; for anonymous visitors limited to public
    namespaces, which ``search_catalog`` cannot filter on, the same filters matched here."""
    if namespaces is not None:
        return match_visible(catalog, query, namespaces)
    from ...catalog.search import MAX_OFFSET, search_catalog

    tags = None
    if query.tag:
        key, sep, value = query.tag.partition("=")
        tags = {key: value} if sep else {key: ""}
    result = search_catalog(catalog, query.q, kind=query.kind or None, base=query.base or None, tags=tags,
                            trigger=query.trigger or None, alias=query.alias or None, sort=query.sort,
                            limit=query.per_page, offset=min(MAX_OFFSET, (query.page - 1) * query.per_page),
                            variant=query.variant or None)
    return Found([h.name for h in result.hits], result.total,
                 {key: list(counts.items()) for key, counts in result.facets.items()})


def match_visible(catalog, query: CatalogQuery, namespaces: frozenset) -> Found:
    """``find_adapters`` over the adapters of ``namespaces``: every query word must occur in the
    adapter's name, triggers, tags, description or version messages (case ignored)."""
    def run(s):
        adapters = {r.id: r for r in s.scalars(_visible(select(AdapterRow), namespaces))}
        versions: dict[int, list] = {}
        for v in s.execute(select(VersionRow.adapter_id, VersionRow.version, VersionRow.sort_key,
                                  VersionRow.trigger_words, VersionRow.message, VersionRow.created_at,
                                  VersionRow.file_metadata, VersionRow.extra)
                           .where(VersionRow.deleted_at.is_(None))):
            if v.adapter_id in adapters:
                versions.setdefault(v.adapter_id, []).append(v)
        aliases: dict[int, set] = {}
        for adapter_id, alias in s.execute(select(AliasRow.adapter_id, AliasRow.name)):
            aliases.setdefault(adapter_id, set()).add(alias)
        moved: dict[int, datetime] = {}
        for adapter_id, at in s.execute(select(AliasEventRow.adapter_id, AliasEventRow.at)):
            moved[adapter_id] = max(_aware(at), moved.get(adapter_id, _aware(at)))
        return adapters, versions, aliases, moved

    adapters, versions, aliases, moved = catalog.read(run)
    words = _words(query.q)
    want_base, want_variant = family_filter(query.base or None, query.variant or None)
    scored = []
    variants: dict[int, set[str]] = {}
    for adapter_id, a in adapters.items():
        vs = versions.get(adapter_id, [])
        variants[adapter_id] = {f"{a.base}/{name}" for v in vs
                                if (name := version_variant(a.base, file_metadata=v.file_metadata, extra=v.extra))}
        if want_variant and want_variant not in variants[adapter_id]:
            continue
        triggers = {t.lower() for v in vs for t in (v.trigger_words or []) if isinstance(t, str)}
        tags = {str(k).lower(): str(val).lower() for k, val in (a.tags or {}).items()}
        if query.kind and a.kind != query.kind or want_base and a.base != want_base:
            continue
        if query.alias and query.alias not in aliases.get(adapter_id, set()):
            continue
        if query.trigger and query.trigger.lower() not in triggers:
            continue
        if query.tag:
            key, _, value = query.tag.lower().partition("=")
            if key not in tags or tags[key] != value:
                continue
        family = " ".join(w for fv in sorted(variants[adapter_id]) or [a.base]
                          for w in family_words(a.base, fv.partition("/")[2] or None))
        fields = [(a.name.lower(), 4), (" ".join(sorted(triggers)), 3),
                  (" ".join(f"{k} {v}" for k, v in tags.items()), 2), ((a.description or "").lower(), 2),
                  (" ".join((v.message or "").lower() for v in vs), 1), (family.lower(), 1)]
        score = 0
        for word in words:
            hit = sum(weight for text, weight in fields if word in text)
            if not hit:
                break
            score += hit
        else:
            changes = [_aware(v.created_at) for v in vs] + ([moved[adapter_id]] if adapter_id in moved else [])
            changed = max(changes) if changes else _aware(a.created_at)
            scored.append((a, score, changed))
    if query.sort == "name":
        scored.sort(key=lambda t: t[0].name)
    elif query.sort == "updated" or not words:
        scored.sort(key=lambda t: (t[2], t[0].name), reverse=True)
    else:
        scored.sort(key=lambda t: (-t[1], t[0].name))
    facets = {"kind": Counter(), "base": Counter(), "tag": Counter(), "alias": Counter(), "variant": Counter()}
    for a, _score, _changed in scored:
        facets["kind"][a.kind] += 1
        facets["base"][a.base] += 1
        facets["variant"].update(variants[a.id])
        for k, v in (a.tags or {}).items():
            facets["tag"][f"{k}={v}"] += 1
        for alias in aliases.get(a.id, ()):
            facets["alias"][alias] += 1
    start = (query.page - 1) * query.per_page
    return Found([a.name for a, _s, _c in scored[start:start + query.per_page]], len(scored),
                 {k: sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:30] for k, c in facets.items()
                  if c or k != "variant"})


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def adapter_cards(catalog, names: list[str]) -> list[dict]:
    """One card per adapter of ``names`` (in that order): kind, base, latest version, aliases,
    triggers, size, last change and the thumbnail's blob (newest sample image, else preview).
    Reads only the columns shown (a version's metadata and probe facts are large)."""
    if not names:
        return []

    def run(s):
        rows = {r.name: r for r in s.execute(select(AdapterRow.id, AdapterRow.name, AdapterRow.kind, AdapterRow.base,
                                                    AdapterRow.created_at).where(AdapterRow.name.in_(names)))}
        ids = {r.id: r.name for r in rows.values()}
        live: dict[int, list] = {}
        adapter_of: dict[int, int] = {}
        for v in s.execute(select(VersionRow.id, VersionRow.adapter_id, VersionRow.version, VersionRow.sort_key,
                                  VersionRow.size, VersionRow.trigger_words, VersionRow.created_at,
                                  VersionRow.extra["preview_sha256"].as_string().label("preview"))
                           .where(VersionRow.adapter_id.in_(ids), VersionRow.deleted_at.is_(None))):
            live.setdefault(v.adapter_id, []).append(v)
            adapter_of[v.id] = v.adapter_id
        alias_rows = s.execute(select(AliasRow.adapter_id, AliasRow.name, VersionRow.version)
                               .join(VersionRow, VersionRow.id == AliasRow.version_id)
                               .where(AliasRow.adapter_id.in_(ids)).order_by(AliasRow.name)).all()
        moved = dict(s.execute(select(AliasEventRow.adapter_id, AliasEventRow.at).where(
            AliasEventRow.adapter_id.in_(ids)).order_by(AliasEventRow.id)).all())
        newest_image: dict[int, tuple] = {}
        # From the page's versions to their records, in two steps: joined, SQLite's planner
        # scans every record (large JSON rows) instead of looking up these few.
        links = s.execute(select(PromptRecordVersionRow.record_id, PromptRecordVersionRow.version_id).where(
            PromptRecordVersionRow.version_id.in_(adapter_of))).all() if adapter_of else []
        versions_of: dict[str, list[int]] = {}
        for record_id, vid in links:
            versions_of.setdefault(record_id, []).append(vid)
        for chunk in range(0, len(versions_of), 500):
            wanted = list(versions_of)[chunk:chunk + 500]
            for record_id, sha, at in s.execute(select(PromptRecordRow.id, PromptRecordRow.image_sha256,
                                                       PromptRecordRow.created_at).where(
                    PromptRecordRow.id.in_(wanted), PromptRecordRow.image_sha256.is_not(None))):
                for vid in versions_of[record_id]:
                    aid = adapter_of[vid]
                    if aid not in newest_image or _aware(at) > newest_image[aid][1]:
                        newest_image[aid] = (sha, _aware(at))
        out = []
        for name in names:
            a = rows.get(name)
            if a is None:
                continue
            vs = sorted(live.get(a.id, []), key=lambda v: v.sort_key)
            latest = vs[-1] if vs else None
            preview = next((v.preview for v in reversed(vs) if v.preview), None)
            changes = [_aware(v.created_at) for v in vs] + ([_aware(moved[a.id])] if a.id in moved else [])
            out.append({
                "name": a.name, "kind": a.kind, "base": a.base,
                "latest": latest.version if latest else None, "versions": len(vs),
                "size": latest.size if latest else 0,
                "triggers": [t for t in (latest.trigger_words if latest else []) or [] if isinstance(t, str)][:8],
                "aliases": [(alias, version) for adapter_id, alias, version in alias_rows if adapter_id == a.id],
                "changed": max(changes) if changes else _aware(a.created_at),
                "thumb": newest_image[a.id][0] if a.id in newest_image else preview,
            })
        return out

    return catalog.read(run)


def adapter_page(catalog, name: str, namespaces: frozenset | None) -> dict:
    """Everything the adapter page shows; ``NotFound`` when there is no such adapter or the
    visitor may not see it."""
    from ...catalog.store import adapter_row
    from ...errors import NotFound
    from ..civitai_query import adapter_namespace

    def run(s):
        a = adapter_row(s, name)
        if namespaces is not None and adapter_namespace(s, a.id) not in namespaces:
            raise NotFound(f"no adapter named {name!r}")
        vs = s.scalars(select(VersionRow).where(VersionRow.adapter_id == a.id).order_by(VersionRow.sort_key)).all()
        by_id = {v.id: v for v in vs}
        cards = {}
        for vid, passed, card in s.execute(select(EvalCardRow.version_id, EvalCardRow.passed, EvalCardRow.card)
                                           .where(EvalCardRow.version_id.in_(by_id)).order_by(EvalCardRow.id)):
            cards[vid] = (passed, card)
        versions = [{
            "version": v.version, "created_by": v.created_by, "created_at": v.created_at, "message": v.message,
            "size": v.size, "deleted": v.deleted_at is not None, "sha256": v.sha256,
            "triggers": [t for t in v.trigger_words or [] if isinstance(t, str)],
            "verdict": None if v.id not in cards else ("pass" if cards[v.id][0] else "fail"),
            "human": len((cards.get(v.id, (None, {}))[1] or {}).get("human_verdicts") or []),
        } for v in reversed(vs)]
        current = {alias: by_id[vid].version for alias, vid in s.execute(
            select(AliasRow.name, AliasRow.version_id).where(AliasRow.adapter_id == a.id)) if vid in by_id}
        names = {v.id: v.version for v in vs}
        history: dict[str, list[dict]] = {}
        for e in s.scalars(select(AliasEventRow).where(AliasEventRow.adapter_id == a.id).order_by(AliasEventRow.id)):
            history.setdefault(e.alias, []).append({
                "action": e.action, "from": names.get(e.from_version_id), "to": names.get(e.to_version_id),
                "at": e.at, "by": e.by, "reason": e.reason})
        aliases = [{"alias": alias, "version": current.get(alias), "events": list(reversed(events))}
                   for alias, events in sorted(history.items())]
        for alias in sorted(set(current) - set(history)):
            aliases.append({"alias": alias, "version": current[alias], "events": []})
        latest = next((v for v in reversed(vs) if v.deleted_at is None), None)
        card = cards.get(latest.id) if latest else None
        return {
            "name": a.name, "kind": a.kind, "base": a.base, "description": a.description or "",
            "tags": dict(a.tags or {}), "created_at": a.created_at, "versions": versions, "aliases": aliases,
            "latest": latest.version if latest else None,
            "card": card[1] if card else None, "card_ref": f"{a.name}@{latest.version}" if card else None,
            "civitai_description": _civitai_description(latest),
            "lineage": _lineage(s, a, by_id, namespaces),
        }

    return catalog.read(run)


def _civitai_description(version) -> str:
    civ = version.extra.get("civitai") if version is not None and isinstance(version.extra, dict) else None
    text = civ.get("description") if isinstance(civ, dict) else None
    return text[:20_000] if isinstance(text, str) else ""


def _lineage(s, adapter, by_id: dict, namespaces) -> dict:
    """Edges into (parents) and out of (children) this adapter's versions, one level each way:
    {"edges": [(parent_label, child_label, relation)], "nodes": {label: {"href", "kind"}}}."""
    from ..civitai_query import adapter_namespace

    ids = set(by_id)
    rows = s.scalars(select(LineageRow).where(LineageRow.child_version_id.in_(ids)
                                              | LineageRow.parent_version_id.in_(ids)).order_by(LineageRow.id)).all()
    other = {r.parent_version_id for r in rows} | {r.child_version_id for r in rows}
    other = {i for i in other if i is not None and i not in ids}
    labels = {vid: (adapter.name, v.version) for vid, v in by_id.items()}
    hidden = set()
    if other:
        for vid, adapter_id, aname, version in s.execute(
                select(VersionRow.id, VersionRow.adapter_id, AdapterRow.name, VersionRow.version)
                .join(AdapterRow, AdapterRow.id == VersionRow.adapter_id).where(VersionRow.id.in_(other))):
            if namespaces is not None and adapter_namespace(s, adapter_id) not in namespaces:
                hidden.add(vid)
            labels[vid] = (aname, version)
    nodes: dict[str, dict] = {}
    edges = []

    def node(vid, external=None) -> str:
        if vid is None and (external or "").startswith("dataset:"):  # a catalog dataset version: its page
            nodes.setdefault(external, {"href": "dataset", "role": "dataset"})
            return external
        if vid is None or vid in hidden:
            label = external if vid is None else "(a version you cannot see)"
            nodes.setdefault(label or "?", {"href": None, "role": "external"})
            return label or "?"
        aname, version = labels[vid]
        label = f"{aname}@{version}"
        nodes.setdefault(label, {"href": f"/ui/versions/{aname}/{version}",
                                 "role": "self" if vid in ids else "other"})
        return label

    for r in rows[:200]:
        edges.append((node(r.parent_version_id, r.parent_ref), node(r.child_version_id), r.relation))
    return {"nodes": nodes, "edges": edges}


def audit_entries(catalog, *, user: str = "", method: str = "", path: str = "", since=None, until=None,
                  status: str = "", page: int = 1, per_page: int = 50) -> tuple[list[dict], int, list[str]]:
    """The server's audit log, newest first, filtered: (this page's entries, total matches, the
    token names seen in the log for the filter's list)."""
    from sqlalchemy import func

    from ...catalog.db_schema import ServeAuditRow

    def run(s):
        conds = []
        if user:
            conds.append(ServeAuditRow.token_name == user)
        if method:
            conds.append(ServeAuditRow.method == method.upper())
        if path:
            conds.append(ServeAuditRow.path.contains(path, autoescape=True))
        if since is not None:
            conds.append(ServeAuditRow.at >= since)
        if until is not None:
            conds.append(ServeAuditRow.at <= until)
        if status == "ok":
            conds.append(ServeAuditRow.status < 400)
        elif status == "refused":
            conds.append(ServeAuditRow.status >= 400)
        total = s.scalar(select(func.count(ServeAuditRow.id)).where(*conds))
        rows = s.scalars(select(ServeAuditRow).where(*conds).order_by(ServeAuditRow.id.desc())
                         .offset((page - 1) * per_page).limit(per_page)).all()
        users = [u for (u,) in s.execute(select(ServeAuditRow.token_name).distinct().order_by(ServeAuditRow.token_name)
                                         .limit(200))]
        return [{"id": r.id, "at": r.at, "user": r.token_name, "method": r.method, "path": r.path,
                 "status": r.status, "client": r.client} for r in rows], total, users

    return catalog.read(run)
