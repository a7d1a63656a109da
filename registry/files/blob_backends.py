"""The blob store interface and its backends, chosen by URL scheme.

A home's blobs live where ``LORADEX_BLOBS`` says (``s3://BUCKET[/PREFIX]``, or a folder), else
where ``<home>/blobs/location.json`` says (written by ``loradex blobs migrate``), else in the
home's own ``blobs/`` folder (the embedded default). ``open_blob_store`` looks the scheme up in
``BLOB_BACKENDS`` — a new backend registers a factory there, nothing else changes.

Every backend keeps the same content-addressed keys (``sha256/ab/cdef…``) and the same rules:
a blob is hashed (four hashes) in the same pass as it is written, nothing is ever visible under
its final key half-written, and the catalog row naming a blob is committed only after the blob
exists (callers wrap "store the blob, commit the row" in ``writing()``).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Protocol, runtime_checkable

from ..errors import CatalogError

Progress = Callable[[int, int, str], None]
LOCATION_FILE = ("blobs", "location.json")
MAX_LOCATION_CHARS = 2000


@dataclass(frozen=True)
class BlobEntry:
    """One stored blob as a listing sees it (``modified``: aware UTC datetime)."""
    sha256: str
    size: int
    modified: datetime


@dataclass(frozen=True)
class UploadRecord:
    """An upload in progress, as recorded in the database (see ``UploadLedger``)."""
    id: int
    sha256: str | None
    staging_key: str | None
    started_at: datetime


class UploadLedger(Protocol):
    """Where a shared backend records uploads in progress, so a concurrent ``gc`` (any replica)
    leaves their objects alone. The catalog provides it (table ``blob_uploads``)."""

    def begin(self, staging_key: str | None) -> int: ...

    def name(self, upload_id: int, sha256: str) -> None: ...

    def finish(self, upload_id: int) -> None: ...

    def active(self) -> list[UploadRecord]: ...

    def drop_older_than(self, cutoff: datetime) -> int: ...


@runtime_checkable
class BlobBackend(Protocol):
    """What the catalog (and everything that reads blobs through it) may ask of a blob store."""

    location: str  # where the blobs are, for messages and the home's location record
    shared: bool  # several processes/replicas may write at once (gc is mark-and-sweep)
    default_grace_seconds: int  # gc never deletes a blob younger than this

    def path_for(self, sha256: str) -> Path:
        """A local file holding the blob, for random access (mmap, PIL). Local: the blob
        itself; remote: a verified read-through cache entry. Not a file when the blob is
        missing."""

    def where(self, sha256: str) -> str:
        """The blob's file or object URL, for messages."""

    def exists(self, sha256: str) -> bool: ...

    def size_of(self, sha256: str) -> int | None: ...

    def open(self, sha256: str): ...

    def add_file(self, src, *, link: bool = False, move: bool = False,
                 progress: Progress | None = None): ...

    def add_bytes(self, data: bytes): ...

    def writing(self) -> ContextManager[None]:
        """Around "store blobs, commit the rows that name them"."""

    def collecting(self) -> ContextManager[None]:
        """Around a gc run."""

    def iter_entries(self) -> Iterator[BlobEntry]: ...

    def in_flight(self) -> set[str]:
        """sha256 of blobs named by uploads in progress (gc keeps them)."""

    def remove(self, sha256: str, *, older_than: datetime | None = None) -> int | None:
        """Delete a blob; with ``older_than``, only if it was last written before then.
        Returns the bytes freed, None when it kept the blob (or found none)."""

    def sweep_abandoned(self, cutoff: datetime, *, dry_run: bool = False) -> tuple[int, int]:
        """Remove what killed writers left (older than ``cutoff``): (count, bytes)."""

    def verify_blob(self, sha256: str) -> str | None: ...

    def shared_with(self, sha256: str) -> list[str]: ...


BlobFactory = Callable[[str, Path, "UploadLedger | None"], BlobBackend]
BLOB_BACKENDS: dict[str, BlobFactory] = {}


def register_blob_backend(scheme: str):
    def deco(factory: BlobFactory) -> BlobFactory:
        BLOB_BACKENDS[scheme] = factory
        return factory

    return deco


@register_blob_backend("file")
def _local_backend(location: str, home: Path, _ledger) -> BlobBackend:
    from .blob_store import BlobStore

    if location.startswith("file://"):
        location = location[len("file://"):]
    return BlobStore(home, blobs_dir=Path(location).expanduser() if location else None)


@register_blob_backend("s3")
def _s3_backend(location: str, home: Path, ledger) -> BlobBackend:
    from .s3_blob_store import S3BlobStore

    return S3BlobStore.from_url(location, home=home, ledger=ledger)


def scheme_of(location: str) -> str:
    head, sep, _ = location.partition("://")
    return head.lower() if sep else "file"


def configured_location(home: Path) -> str:
    """``LORADEX_BLOBS``, else the home's location record, else "" (the home's own folder)."""
    env = os.environ.get("LORADEX_BLOBS", "").strip()
    if env:
        return env
    record = Path(home).joinpath(*LOCATION_FILE)
    if not record.is_file():
        return ""
    from ..errors import UntrustedData
    from ..untrusted import check_schema, read_json_file

    schema = {"type": "object", "required": ["location"],
              "properties": {"location": {"type": "string", "maxLength": MAX_LOCATION_CHARS}}}
    try:
        return check_schema(read_json_file(record, max_bytes=64 << 10), schema, str(record))["location"]
    except UntrustedData as exc:
        raise CatalogError(f"{record} is damaged ({exc})",
                           hint="write it again with `loradex blobs migrate --to …`, or set LORADEX_BLOBS") from None


def record_location(home: Path, location: str) -> None:
    """Remember (atomically) where this home's blobs live from now on."""
    from .atomic_files import atomic_output

    path = Path(home).joinpath(*LOCATION_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, "w") as fh:
        fh.write(json.dumps({"format": 1, "location": location}, indent=1) + "\n")


def open_blob_store(home: Path, location: str | None = None, *, ledger: UploadLedger | None = None) -> BlobBackend:
    location = configured_location(home) if location is None else location
    scheme = scheme_of(location)
    factory = BLOB_BACKENDS.get(scheme)
    if factory is None:
        raise CatalogError(f"blob location {location[:200]!r}: no blob store backend for {scheme}://",
                           hint=f"use one of {', '.join(s + '://' for s in sorted(BLOB_BACKENDS))} or a folder")
    return factory(location, Path(home), ledger)


@contextlib.contextmanager
def nothing_to_hold() -> Iterator[None]:
    yield
