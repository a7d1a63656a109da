"""``loradex add``: probe a file, store its bytes, register the version — in that order.

The blob is in place before the row is committed, and the shared store lock keeps ``gc`` from
deleting it in between. A failure at any point leaves at most an unreferenced blob (freed by gc).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import entities as E
from ..errors import InvalidFile
from .operations import AddVersion, LinkLineage, MoveAlias


@dataclass(frozen=True)
class AddResult:
    version: E.Version
    stored_bytes: int  # 0 when the blob was already in the store
    linked: bool
    note: str = ""

    def to_dict(self) -> dict:
        return {**self.version.to_dict(), "stored_bytes": self.stored_bytes, "linked": self.linked,
                "note": self.note}


def default_name(path: Path) -> str:
    """An adapter name from a file name: lower-case, runs of other characters become '-'."""
    import re

    stem = path.name.split(".")[0] if path.suffix else path.name
    name = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._")
    return name or "adapter"


def add_file(catalog, path, *, name: str | None = None, version: str | None = None,
             bump: str | None = None, kind: str | None = None, base: str | None = None,
             triggers: list[str] | None = None, message: str = "", tags: dict | None = None,
             description: str = "", link: bool = False, move: bool = False, allow_pickle: bool = False,
             extra: dict | None = None, alias: str | None = None, lineage: list | None = None,
             progress=None, user: str | None = None) -> AddResult:
    """``user``: who the version is recorded as created by (default: the OS user). ``move``: the
    caller gives ``path`` up (a file it wrote under the home): renamed into the blob store, not
    copied."""
    from ..probe import probe_path

    path = Path(path)
    if path.is_dir():
        raise InvalidFile(path, "is a directory", hint="give an adapter file; use `loradex import DIR` for folders")
    if not path.exists():
        raise InvalidFile(path, "no such file")
    probe = probe_path(path, allow_pickle=allow_pickle)
    facts = probe.to_dict()
    op = AddVersion(
        name=name or default_name(path), version=version, bump=bump, sha256="", autov1=None,
        autov2="", autov3=None, size=0, file_format=facts.get("format") or "unknown",
        kind=kind or facts.get("kind") or "lora", base=base or facts.get("base") or "unknown",
        file_name=path.name, probe=facts, file_metadata=dict(facts.get("metadata") or {}),
        trigger_words=list(triggers) if triggers else list(facts.get("trigger_words") or []),
        message=message, description=description, tags=dict(tags or {}), extra=dict(extra or {}),
    )
    if user:
        op.user = user
    op.validate()  # fail on bad names/versions before copying any bytes
    with catalog.blobs.writing():
        stored = catalog.blobs.add_file(path, link=link, move=move, progress=progress)
        h = stored.hashes
        op.sha256, op.autov1, op.autov2, op.autov3, op.size = h.sha256, h.autov1, h.autov2, h.autov3, h.size
        ops: list = [op]
        results = catalog.transact(lambda s: _apply_chain(s, catalog, ops, alias, lineage or []))
    return AddResult(results, 0 if stored.existed else h.size, stored.linked, stored.note)


def _apply_chain(s, catalog, ops, alias, lineage):
    version = ops[0].apply(s, catalog)
    for edge in lineage:
        edge = LinkLineage(child=version.ref, **edge)
        edge.validate()
        edge.apply(s, catalog)
    if alias:
        move = MoveAlias(version.ref, alias, reason="set on add")
        move.validate()
        move.apply(s, catalog)
    return version
