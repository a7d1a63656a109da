"""``loradex add``: probe a file, store its bytes, register the version — in that order.

The blob is in place before the row is committed, and the shared store lock keeps ``gc`` from
deleting it in between. A failure at any point leaves at most an unreferenced blob (freed by gc).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from . import entities as E
from ..errors import InvalidFile, UsageError
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


def add_files(catalog, paths, *, roles: list[str | None] | None = None, name: str | None = None,
              version: str | None = None, bump: str | None = None, kind: str | None = None,
              base: str | None = None, triggers: list[str] | None = None, message: str = "",
              tags: dict | None = None, description: str = "", link: bool = False,
              allow_pickle: bool = False, extra: dict | None = None, alias: str | None = None,
              lineage: list | None = None, file_names: list[str] | None = None, progress=None,
              user: str | None = None) -> AddResult:
    """``loradex add A B``: ONE version holding several named files (a Wan 2.2 high-noise +
    low-noise pair; ``registry.catalog.version_files``). Each file is probed and stored as its own
    blob; the first is the primary, the blob the version row names. ``roles``: a name per file
    (None: from its file name); ``file_names``: what each is stored as (default: its own name,
    tidied to ``[A-Za-z0-9._-]``). The files must be of one kind and one base family."""
    from ..probe import probe_path
    from .version_files import NewFile, check_file_name, name_files, record_files, tidy_file_name

    paths = [Path(p) for p in paths]
    if len(paths) == 1:
        return add_file(catalog, paths[0], name=name, version=version, bump=bump, kind=kind, base=base,
                        triggers=triggers, message=message, tags=tags, description=description, link=link,
                        allow_pickle=allow_pickle, extra=extra, alias=alias, lineage=lineage,
                        progress=progress, user=user)
    for path in paths:
        if path.is_dir():
            raise InvalidFile(path, "is a directory", hint="give adapter files")
        if not path.exists():
            raise InvalidFile(path, "no such file")
    stored_names = [check_file_name(n) for n in file_names] if file_names else [tidy_file_name(p.name) for p in paths]
    if len(set(stored_names)) != len(stored_names):
        raise UsageError("two files of one version would have the same file name: " + ", ".join(stored_names))
    roles = name_files(stored_names, roles)
    facts = [probe_path(p, allow_pickle=allow_pickle).to_dict() for p in paths]
    kinds = {f.get("kind") or "lora" for f in facts}
    if not kind and len(kinds) > 1 and kinds != {"lora", "lycoris"}:
        raise InvalidFile(paths[1], f"holds a {facts[1].get('kind')}, {paths[0].name} a {facts[0].get('kind')}; "
                          "one version's files are of one kind", hint="add them as separate adapters")
    bases = {f.get("base") for f in facts} - {None, "unknown"}
    if not base and len(bases) > 1:
        raise InvalidFile(paths[1], f"is a {facts[1].get('base')} file, {paths[0].name} a "
                          f"{facts[0].get('base')} one; one version's files are of one base family",
                          hint="add them as separate adapters, or pass --base")
    primary = facts[0]
    op = AddVersion(
        name=name or default_name(paths[0]), version=version, bump=bump, sha256="", autov1=None,
        autov2="", autov3=None, size=0, file_format=primary.get("format") or "unknown",
        kind=kind or primary.get("kind") or "lora", base=base or next(iter(bases), "unknown"),
        file_name=stored_names[0], probe=primary, file_metadata=dict(primary.get("metadata") or {}),
        trigger_words=list(triggers) if triggers else list(primary.get("trigger_words") or []),
        message=message, description=description, tags=dict(tags or {}), extra=dict(extra or {}),
    )
    if user:
        op.user = user
    op.validate()
    stored_bytes, notes, linked = 0, [], False
    with catalog.blobs.writing():
        new_files = []
        for path, role, stored_name, probe in zip(paths, roles, stored_names, facts):
            stored = catalog.blobs.add_file(path, link=link, progress=progress)
            stored_bytes += 0 if stored.existed else stored.hashes.size
            linked = linked or stored.linked
            if stored.note:
                notes.append(stored.note)
            new_files.append((stored.hashes, NewFile(role, stored_name, stored.hashes.sha256, stored.hashes.size,
                                                     probe.get("format") or "unknown", probe)))
        if len({f.sha256 for _, f in new_files}) != len(new_files):
            raise UsageError("the same file (same bytes) is given twice for one version",
                             hint="give each of the version's files once")
        h = new_files[0][0]
        op.sha256, op.autov1, op.autov2, op.autov3, op.size = h.sha256, h.autov1, h.autov2, h.autov3, h.size

        def run(s):
            added = _apply_chain(s, catalog, [op], alias, lineage or [])
            files = record_files(s, added.id, [f for _, f in new_files])
            return dataclasses.replace(added, files=files)

        result = catalog.transact(run)
    return AddResult(result, stored_bytes, linked, "; ".join(dict.fromkeys(notes)))
