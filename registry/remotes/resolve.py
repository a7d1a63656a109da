"""What does this workflow / image need? Each model a file names, matched to the catalog, else to
where it can be had, and (``pull=True``) fetched through the existing pull paths.

The readers (``registry/folders``: ComfyUI workflows, A1111 parameters, Civitai generation data,
PNG text) turn a file into :class:`ModelNeed` entries; :func:`resolve_needs` answers each one:

1. **catalog** — by hash first (SHA256, AutoV3, AutoV2, AutoV1, in the order the need lists
   them: a 12-hex A1111 LoRA hash is an AutoV3 for a .safetensors file and a SHA256 prefix for
   others), then by the Civitai version id it came from (``extra.civitai.versionId`` of a version
   pulled from civitai.com), then by name (the stored file name, else the adapter named like
   the file's stem). A name-only match says so: the bytes were not compared.
2. **remotes** — each recorded ``civitai`` remote is asked by hash (and, when it is Civitai
   itself, by version id); a ``mirror`` (``loradex serve``) by hash through its Civitai-style API.
   A URL in the file (a workflow template's ``properties.models``) is listed as a source; it is
   only ever fetched when its origin is a recorded remote's (a file from outside never makes
   loradex contact a host the user did not configure).
3. otherwise **unknown**.

A remote that fails (down, 401, rate-limited) is noted on the entries it could not answer and
the others go on; nothing here raises for one model.
"""

from __future__ import annotations

import re
from pathlib import Path
from dataclasses import dataclass, field, replace
from typing import Callable
from urllib.parse import unquote, urlsplit

from sqlalchemy import select

from ..errors import AmbiguousRef, LoradexError, NotFound, UsageError
from ..catalog.refs import Ref
from ..files.hashing import EMPTY_SHA256
from . import RemoteRecord, get_remote, guess_kind, list_remotes

HASH_ORDER = ("sha256", "autov3", "autov2", "autov1")
LOOKUP_KINDS = ("civitai", "mirror")  # remote kinds that answer a hash look-up
MAX_NEEDS = 500  # models one file may name (real workflows name < 50)
AIR_RE = re.compile(r"\Aurn:air:([a-z0-9.-]+):([a-z0-9_-]+):([a-z0-9_-]+):(\d{1,15})(?:@(\d{1,15}))?", re.I)
HF_RESOLVE_RE = re.compile(r"\A/([^/]+)/([^/]+)/(?:resolve|blob)/([^/]+)/(.+)\Z")
CIVITAI_DOWNLOAD_RE = re.compile(r"\A/api/download/models/(\d{1,15})/?\Z")


@dataclass(frozen=True)
class ModelNeed:
    """One model a file needs, with every identity the file gave for it."""

    kind: str  # lora | embedding | checkpoint | unet | clip | vae | controlnet | upscaler | other
    name: str | None = None  # as the file spells it (a ComfyUI file name, an A1111 name)
    hashes: tuple[tuple[str, str], ...] = ()  # (sha256|autov3|autov2|autov1, lower-case hex), try in order
    civitai_version_id: int | None = None
    civitai_model_id: int | None = None
    air: str | None = None
    url: str | None = None
    weight: float | None = None
    source: str = ""  # where in the file: "node 10 (LoraLoader)", "Lora hashes", …

    @property
    def identified_by(self) -> str:
        """The strongest identity the file gave: a hash kind, ``air``, ``civitai_version``,
        ``url`` or ``name``."""
        if self.hashes:
            return self.hashes[0][0]
        if self.air:
            return "air"
        if self.civitai_version_id:
            return "civitai_version"
        if self.url:
            return "url"
        return "name"

    @property
    def file_name(self) -> str | None:
        """The last path segment of ``name`` (ComfyUI names may hold sub-folders, either slash)."""
        if not self.name:
            return None
        return re.split(r"[\\/]", self.name)[-1] or None

    def merge(self, other: "ModelNeed") -> "ModelNeed":
        """The same model named twice (a node and the template's ``models``): keep every identity."""
        hashes = self.hashes + tuple(h for h in other.hashes if h not in self.hashes)
        return replace(self, hashes=tuple(sorted(hashes, key=lambda h: _hash_rank(h[0]))),
                       civitai_version_id=self.civitai_version_id or other.civitai_version_id,
                       civitai_model_id=self.civitai_model_id or other.civitai_model_id,
                       air=self.air or other.air, url=self.url or other.url,
                       weight=self.weight if self.weight is not None else other.weight,
                       name=self.name or other.name, source=self.source or other.source)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "weight": self.weight, "source": self.source,
                "identified_by": self.identified_by, "hashes": {k: v for k, v in reversed(self.hashes)},
                "air": self.air, "civitai_version_id": self.civitai_version_id,
                "civitai_model_id": self.civitai_model_id, "url": self.url}


def _hash_rank(kind: str) -> int:
    return HASH_ORDER.index(kind) if kind in HASH_ORDER else len(HASH_ORDER)


def parse_air(text: str) -> dict | None:
    """``urn:air:sdxl:lora:civitai:328553@368189`` → {ecosystem, type, source, model_id, version_id}."""
    m = AIR_RE.match(text.strip()) if isinstance(text, str) else None
    if not m:
        return None
    eco, typ, src, model, version = m.groups()
    return {"ecosystem": eco.lower(), "type": typ.lower(), "source": src.lower(), "model_id": int(model),
            "version_id": int(version) if version else None}


def need_from_air(text: str, kind: str, *, weight: float | None = None, source: str = "") -> ModelNeed | None:
    air = parse_air(text)
    if air is None:
        return None
    on_civitai = air["source"] == "civitai"
    return ModelNeed(kind=kind or air["type"], air=text.strip(), weight=weight, source=source,
                     civitai_model_id=air["model_id"] if on_civitai else None,
                     civitai_version_id=air["version_id"] if on_civitai else None)


def merge_needs(needs: list[ModelNeed]) -> list[ModelNeed]:
    """One entry per model: entries naming the same file (or the same hash / Civitai version) merge."""
    out: list[ModelNeed] = []
    for need in needs:
        for i, have in enumerate(out):
            if _same_model(have, need):
                out[i] = have.merge(need)
                break
        else:
            out.append(need)
        if len(out) > MAX_NEEDS:
            raise UsageError(f"the file names more than {MAX_NEEDS} models; not resolved")
    return out


def _same_model(a: ModelNeed, b: ModelNeed) -> bool:
    if a.civitai_version_id and a.civitai_version_id == b.civitai_version_id:
        return True
    if any(x == y for x in a.hashes for y in b.hashes if len(x[1]) >= 10):
        return True
    return (a.kind == b.kind and a.file_name is not None and b.file_name is not None
            and a.file_name.lower() == b.file_name.lower())


# --- answers -------------------------------------------------------------------------------
@dataclass
class Resolution:
    need: ModelNeed
    status: str = "unknown"  # in_catalog | pulled | available | ambiguous | unknown
    catalog_ref: str | None = None
    matched_by: str | None = None  # sha256 | autov3 | autov2 | autov1 | civitai_version | file_name | name
    sources: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {**self.need.to_dict(), "status": self.status, "catalog_ref": self.catalog_ref,
                "matched_by": self.matched_by, "sources": list(self.sources), "notes": list(self.notes)}


@dataclass
class ResolveReport:
    file: str
    format: str  # comfyui-ui | comfyui-api | a1111-parameters | civitai-generation | several, "+"-joined
    entries: list[Resolution]

    def to_dict(self) -> dict:
        counts: dict[str, int] = {}
        for e in self.entries:
            counts[e.status] = counts.get(e.status, 0) + 1
        return {"file": self.file, "format": self.format, "counts": counts,
                "models": [e.to_dict() for e in self.entries]}


def resolve_needs(catalog, needs: list[ModelNeed], *, file: str = "", fmt: str = "", remote: str | None = None,
                  pull: bool = False, progress: Callable | None = None) -> ResolveReport:
    """Answer every need: catalog, else remotes (``remote``: only that recorded remote), else
    unknown; with ``pull`` the ones a remote has are pulled (hash-verified) and matched again."""
    records = _lookup_remotes(catalog, remote)
    entries = [Resolution(need) for need in merge_needs(needs)]
    for entry in entries:
        _match_catalog(catalog, entry)
        if entry.status in ("in_catalog", "ambiguous"):
            continue
        entry.sources.extend(_url_sources(entry.need, records))
        for record in records:
            _ask_remote(record, entry)
        if entry.sources:
            entry.status = "available"
    if pull:
        for entry in entries:
            if entry.status == "available":
                _pull(catalog, entry, records, progress)
    return ResolveReport(file=file, format=fmt, entries=entries)


# --- the catalog ---------------------------------------------------------------------------
def _match_catalog(catalog, entry: Resolution) -> None:
    need = entry.need
    for kind, value in need.hashes:
        if len(value) < 8 or (kind == "autov1" and value == EMPTY_SHA256[:8]):
            continue  # the AutoV1 of every file under 1 MiB names no file
        try:
            version = catalog.resolve(Ref(hash_kind=kind, hash_prefix=value))
        except NotFound:
            continue
        except AmbiguousRef as exc:
            entry.status, entry.notes = "ambiguous", entry.notes + [str(exc)]
            return
        entry.status, entry.catalog_ref, entry.matched_by = "in_catalog", version.ref, kind
        return
    if need.civitai_version_id:
        ref = _by_civitai_version(catalog, need.civitai_version_id)
        if ref:
            entry.status, entry.catalog_ref, entry.matched_by = "in_catalog", ref, "civitai_version"
            return
    found = _by_name(catalog, need)
    if found:
        entry.status, entry.catalog_ref, entry.matched_by = "in_catalog", found[0], found[1]
        if need.hashes:
            # the file gave a hash no catalog version has, yet a name matches: different bytes
            entry.status = "ambiguous"
            entry.notes.append(f"{found[0]} has the name but not the hash the file gives: another version "
                               "or another file of the same name")
        else:
            entry.notes.append("matched by name only: the file gives no hash, the bytes were not compared")


def _by_civitai_version(catalog, version_id: int) -> str | None:
    from ..catalog.db_schema import AdapterRow, VersionRow

    def run(s):
        rows = s.execute(
            select(AdapterRow.name, VersionRow.version, VersionRow.extra)
            .join(AdapterRow, AdapterRow.id == VersionRow.adapter_id)
            .where(VersionRow.extra[("civitai", "versionId")].as_integer() == version_id,
                   VersionRow.deleted_at.is_(None)).order_by(VersionRow.id)).all()
        for name, version, extra in rows:
            endpoint = ((extra or {}).get("civitai") or {}).get("endpoint") or ""
            if guess_kind(endpoint) == "civitai":  # ids of Civitai itself, not of a mirror
                return f"{name}@{version}"
        return None

    return catalog.read(run)


def _by_name(catalog, need: ModelNeed) -> tuple[str, str] | None:
    from ..catalog.adding import default_name
    from ..catalog.db_schema import AdapterRow, VersionRow
    from ..catalog.store import adapter_row, latest_row

    file_name = need.file_name
    if not file_name:
        return None

    def run(s):
        row = s.execute(
            select(AdapterRow.name, VersionRow.version)
            .join(AdapterRow, AdapterRow.id == VersionRow.adapter_id)
            .where(VersionRow.file_name == file_name, VersionRow.deleted_at.is_(None))
            .order_by(VersionRow.sort_key.desc()).limit(1)).first()
        if row is not None:
            return f"{row[0]}@{row[1]}", "file_name"
        try:
            name = default_name(Path(file_name))
            adapter = adapter_row(s, name)
        except LoradexError:
            return None
        latest = latest_row(s, adapter)
        return (f"{adapter.name}@{latest.version}", "name") if latest is not None else None

    return catalog.read(run)


# --- remotes -------------------------------------------------------------------------------
def _lookup_remotes(catalog, only: str | None) -> list[RemoteRecord]:
    if only:
        record = get_remote(catalog, only)
        if record.kind not in LOOKUP_KINDS and record.kind != "hf":
            raise UsageError(f"remote {only!r} is of kind {record.kind}, which cannot be asked by hash")
        return [record]
    return [r for r in list_remotes(catalog) if r.kind in LOOKUP_KINDS]


def _origin(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def _url_sources(need: ModelNeed, records: list[RemoteRecord]) -> list[dict]:
    """Where the file's own URL points: a recorded remote (pullable), the Hub, or a plain URL."""
    if not need.url:
        return []
    origin = _origin(need.url)
    if origin is None:
        return []
    path = urlsplit(need.url).path
    source = {"via": "url", "url": need.url, "remote": None, "ref": None}
    for record in records:
        if _origin(record.url) != origin:
            continue
        m = CIVITAI_DOWNLOAD_RE.match(path)
        if record.kind == "civitai" and m:
            return [{**source, "remote": record.name, "ref": f"{record.name}:{m.group(1)}"}]
        hub = HF_RESOLVE_RE.match(path)
        if record.kind == "mirror" and hub:
            revision = unquote(hub.group(3))
            return [{**source, "remote": record.name,
                     "ref": f"mirror://{record.name}/{unquote(hub.group(2))}@{revision}"}]
    hub = HF_RESOLVE_RE.match(path)
    if hub and guess_kind(need.url) == "hf":
        revision = unquote(hub.group(3))
        source["ref"] = f"hf://{unquote(hub.group(1))}/{unquote(hub.group(2))}@{revision}"
    return [source]


def _client_for(record: RemoteRecord):
    from .civitai_client import CivitaiClient

    if record.kind == "mirror":
        from .hub import split_remote_url
        from .hub_client import resolve_token

        return CivitaiClient(split_remote_url(record.url)[0], token=resolve_token(record.name, hf_fallback=False))
    return CivitaiClient(record.url)


def _ask_remote(record: RemoteRecord, entry: Resolution) -> None:
    if record.kind not in LOOKUP_KINDS:
        return
    need = entry.need
    asks: list[tuple[str, Callable]] = []
    for kind, value in need.hashes:
        if len(value) in (8, 10, 12, 64):  # the lengths Civitai's by-hash answers
            asks.append((kind, lambda c, v=value: c.version_by_hash(v)))
    # version ids are Civitai's own: asked of Civitai, never of a mirror with ids of its own
    if need.civitai_version_id and record.kind == "civitai" and guess_kind(record.url) == "civitai":
        asks.append(("air" if need.air else "civitai_version",
                     lambda c, v=need.civitai_version_id: c.version(v)))
    if not asks:
        return
    try:
        with _client_for(record) as client:
            for how, ask in asks:
                try:
                    info = ask(client)
                except NotFound:
                    continue
                entry.sources.append(_remote_source(record, info, how))
                return
    except LoradexError as exc:
        entry.notes.append(f"remote {record.name}: {exc}")


def _remote_source(record: RemoteRecord, info: dict, how: str) -> dict:
    model = info.get("model") or {}
    files = [f for f in info.get("files") or [] if isinstance(f, dict)]
    primary = next((f for f in files if f.get("primary")), files[0] if files else {})
    sha = ((primary.get("hashes") or {}).get("SHA256") or "").lower() or None
    if record.kind == "mirror":
        ref = f"mirror://{record.name}/{model.get('name')}@{info.get('name')}"
    else:
        ref = f"{record.name}:{info['id']}"
    return {"via": how, "remote": record.name, "remote_kind": record.kind, "ref": ref,
            "model": model.get("name"), "version": info.get("name"), "version_id": info.get("id"),
            "base_model": info.get("baseModel"), "file": primary.get("name"), "sha256": sha,
            "url": None}


def _pull(catalog, entry: Resolution, records: list[RemoteRecord], progress) -> None:
    from . import pull as pull_ref

    by_name = {r.name: r for r in records}
    for source in entry.sources:
        if not source.get("remote") or source["remote"] not in by_name or not source.get("ref"):
            continue
        try:
            result = pull_ref(catalog, source["ref"], progress=progress)
        except LoradexError as exc:
            entry.notes.append(f"pull {source['ref']}: {exc}")
            continue
        version = getattr(result, "version", None) or (getattr(result, "versions", None) or [None])[0]
        before = entry.status
        _match_catalog(catalog, entry)
        if entry.status == "in_catalog":
            entry.status = "pulled" if before != "in_catalog" else entry.status
            return
        got = getattr(version, "ref", None)
        entry.status = "pulled"
        entry.catalog_ref = got
        entry.matched_by = entry.matched_by or "pulled"
        entry.notes.append(f"pulled {source['ref']} as {got}, but it does not match every identity the "
                           "file gave: check it")
        return
    entry.notes.append("not pulled: no source is a recorded remote (fetch the URL with `loradex pull` "
                       "or add its host as a remote)")
