"""Remotes: where versions come from and go to (Civitai, the Hugging Face Hub, a loradex mirror).

Two registries live here:

* **kinds by ref scheme** — ``register_remote(prefix, puller=..., pusher=None, kind=...)``. A
  ``pull`` ref is dispatched to the puller whose prefix (or ``match`` callable) fits it:
  ``civitai:123``, ``civitai:hash:ABC…``, ``https://civitai.com/models/…``, ``hf://…``,
  ``mirror://…``. Feature modules register themselves when imported; the modules to import are
  listed in ``REMOTE_MODULES`` (append yours).
* **remote records** (``RemoteRow``): ``add_remote(catalog, name, url, kind)``, ``list_remotes``,
  ``get_remote``. A ref ``NAME:REST`` where NAME is a recorded remote goes to that remote's
  kind, with ``endpoint=`` the remote's URL and ``remote=`` its record. Records hold no tokens:
  tokens come from the environment at the moment of use and are never written anywhere.

Pullers: ``puller(catalog, ref, *, endpoint=None, progress=None, remote=None, **opts)`` return
whatever result object the kind defines (with ``to_dict()``). Pushers:
``pusher(catalog, ref, remote: RemoteRecord, *, progress=None, **opts)``.
"""

from __future__ import annotations

import importlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from datetime import datetime, timezone
from typing import Callable
from urllib.parse import urlsplit

from sqlalchemy import select

from ..errors import AlreadyExists, NotFound, UsageError
from .hub_manifest import check_push_formats
from ..catalog.refs import check_name
from ..untrusted import inside

# Modules that register remote kinds when imported (the Hub helper appends its module here).
REMOTE_MODULES = ["loradex.registry.remotes.civitai", "loradex.registry.remotes.hub"]


@dataclass(frozen=True)
class RemoteKind:
    prefix: str
    kind: str
    puller: Callable
    pusher: Callable | None = None
    match: Callable[[str], bool] | None = None  # for refs a prefix cannot describe (URLs)
    hosts: tuple[str, ...] = ()  # hosts whose URLs default to this kind in ``remote add``

    def matches(self, ref: str) -> bool:
        return self.match(ref) if self.match else ref.startswith(self.prefix)


@dataclass(frozen=True)
class RemoteRecord:
    id: int
    name: str
    kind: str
    url: str
    settings: dict = field(default_factory=dict)
    created_at: datetime | None = None

    def to_dict(self) -> dict:
        created = self.created_at
        if created is not None and created.tzinfo is None:
            created = created.replace(tzinfo=timezone.utc)
        return {"name": self.name, "kind": self.kind, "url": self.url, "settings": dict(self.settings),
                "created_at": created.isoformat() if created else None}


_KINDS: list[RemoteKind] = []  # registration order: the first entry of a kind is its canonical one
_loaded = False


def register_remote(prefix: str, *, puller: Callable, pusher: Callable | None = None,
                    kind: str | None = None, match: Callable[[str], bool] | None = None,
                    hosts: tuple[str, ...] = ()) -> RemoteKind:
    """Register a ref scheme. ``kind`` defaults to the prefix without ``:`` / ``://``."""
    kind = kind or prefix.split(":", 1)[0]
    entry = RemoteKind(prefix, kind, puller, pusher, match, tuple(hosts))
    # Re-registering the same prefix (module reloaded in tests) replaces the old entry.
    _KINDS[:] = [k for k in _KINDS if not (k.prefix == prefix and k.kind == kind)]
    _KINDS.append(entry)
    return entry


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in REMOTE_MODULES:
            importlib.import_module(module)


def remote_kinds() -> list[RemoteKind]:
    _load_builtin()
    return list(_KINDS)


def kind_names() -> list[str]:
    return sorted({k.kind for k in remote_kinds()})


def _canonical(kind: str) -> RemoteKind:
    for entry in remote_kinds():
        if entry.kind == kind:
            return entry
    raise UsageError(f"no remote kind {kind!r} is available",
                     hint=f"known kinds: {', '.join(kind_names()) or 'none'}")


def _dispatch(catalog, ref: str) -> tuple[RemoteKind, str, RemoteRecord | None]:
    ref = ref.strip()
    head, sep, rest = ref.partition(":")
    # A recorded remote's name wins over a scheme of the same name, so `remote add civitai URL`
    # points every `civitai:…` pull at that endpoint.
    if sep and not rest.startswith("//") and _is_name(head):
        record = _find_remote(catalog, head)
        if record is not None:
            entry = _canonical(record.kind)
            return entry, entry.prefix + rest, record
    for entry in remote_kinds():
        if entry.matches(ref):
            return entry, ref, None
    raise UsageError(f"don't know how to pull {ref!r}",
                     hint="use civitai:VERSION_ID, civitai:hash:HASH, a civitai.com model URL, "
                          "or REMOTE:… for a remote added with `loradex remote add`")


def pull(catalog, ref: str, **opts):
    """Pull a remote ref into the catalog through the kind registered for it."""
    entry, ref, record = _dispatch(catalog, ref)
    if record is not None:
        opts.setdefault("endpoint", record.url)
        opts["remote"] = record
    return entry.puller(catalog, ref, **opts)


def push(catalog, ref: str, remote: str, **opts):
    """Push catalog version REF to the recorded remote named REMOTE (its kind's pusher)."""
    record = get_remote(catalog, remote)
    entry = _canonical(record.kind)
    pusher = next((k.pusher for k in remote_kinds() if k.kind == record.kind and k.pusher), None)
    if pusher is None:
        raise UsageError(f"remote {record.name!r} is of kind {entry.kind}, which cannot be pushed to")
    return pusher(catalog, ref, record, **opts)


# --- remote records --------------------------------------------------------------------------
def _is_name(text: str) -> bool:
    try:
        check_name(text)
        return True
    except Exception:  # noqa: BLE001 - any invalid name is simply "not a remote name"
        return False


def _record(row) -> RemoteRecord:
    return RemoteRecord(row.id, row.name, row.kind, row.url, dict(row.settings or {}), row.created_at)


def guess_kind(url: str) -> str | None:
    host = (urlsplit(url).hostname or "").lower()
    for entry in remote_kinds():
        if any(host == h or host.endswith("." + h) for h in entry.hosts):
            return entry.kind
    return None


def add_remote(catalog, name: str, url: str, kind: str | None = None,
               settings: dict | None = None) -> RemoteRecord:
    from ..catalog.db_schema import RemoteRow

    check_name(name)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"remote URL must be http(s)://HOST[:PORT][/PATH], got {url!r}")
    if parts.username or parts.password or "token=" in (parts.query or ""):
        raise UsageError("don't put credentials in a remote URL; they would be stored",
                         hint="set CIVITAI_TOKEN / HF_TOKEN in the environment instead")
    kind = kind or guess_kind(url)
    if kind is None:
        raise UsageError(f"cannot tell the kind of remote {url!r}",
                         hint=f"pass --kind ({', '.join(kind_names())})")
    _canonical(kind)  # the kind must be available
    url = url.rstrip("/")
    formats = (settings or {}).get("formats")
    if formats is not None:
        check_push_formats(formats)

    def run(s):
        if s.scalar(select(RemoteRow).where(RemoteRow.name == name)) is not None:
            raise AlreadyExists(f"a remote named {name!r} already exists")
        row = RemoteRow(name=name, kind=kind, url=url, settings=dict(settings or {}),
                        created_at=datetime.now(timezone.utc))
        s.add(row)
        s.flush()
        return _record(row)

    return catalog.transact(run)


def list_remotes(catalog) -> list[RemoteRecord]:
    from ..catalog.db_schema import RemoteRow

    return catalog.read(lambda s: [_record(r) for r in s.scalars(select(RemoteRow).order_by(RemoteRow.name))])


def _find_remote(catalog, name: str) -> RemoteRecord | None:
    from ..catalog.db_schema import RemoteRow

    def run(s):
        row = s.scalar(select(RemoteRow).where(RemoteRow.name == name))
        return _record(row) if row is not None else None

    return catalog.read(run)


def get_remote(catalog, name: str) -> RemoteRecord:
    record = _find_remote(catalog, name)
    if record is None:
        raise NotFound(f"no remote named {name!r}", hint="see `loradex remote list`")
    return record


def remove_remote(catalog, name: str) -> RemoteRecord:
    from ..catalog.db_schema import RemoteRow, SyncStateRow

    def run(s):
        row = s.scalar(select(RemoteRow).where(RemoteRow.name == name))
        if row is None:
            raise NotFound(f"no remote named {name!r}", hint="see `loradex remote list`")
        record = _record(row)
        for state in s.scalars(select(SyncStateRow).where(SyncStateRow.remote_id == row.id)):
            s.delete(state)
        s.delete(row)
        return record

    return catalog.transact(run)


# --- download folders ----------------------------------------------------------------------------
def discard_download(path: Path, home: Path) -> None:
    """Remove a download folder a puller made under ``home/downloads``. The path is resolved and
    checked to lie inside that folder before anything is removed; anything else is left alone."""
    try:
        path = inside(path, Path(home) / "downloads")
    except ValueError:
        return
    shutil.rmtree(path, ignore_errors=True)
