"""Content-addressed object store of the Hub server, on the blob store interface
(``registry.files.blob_backends``).

- Local (default): ``<hub>/objects/sha256/ab/cdef…`` through the local ``BlobStore`` — the same
  layout and the same single write as before: a streamed body lands through ``atomic_output``
  (a killed server leaves at most a ``.tmp-loradex-*`` file, never a wrong object under a final
  name).
- S3 (``LORADEX_BLOBS=s3://BUCKET[/PREFIX]``): the objects live under ``PREFIX/hub/sha256/…``,
  a prefix of their own beside the catalog's ``PREFIX/sha256/…``: the catalog's ``gc`` lists only
  its own prefix, so it can never sweep an object a Hub repository's commit names (the Hub keeps
  every object its history names, and has no gc). A streamed body is received into a temp file
  under ``<hub>/incoming/`` (hashed and checked against the announced oid and size), then
  uploaded by the backend, which publishes it atomically.

The server must check a *streamed* HTTP body against the oid the client announced before the
object gets its final name; that check stays here, in front of the backend.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import AsyncIterator, BinaryIO, Iterator

from ...files.atomic_files import atomic_output, fsync_dir, locked_temp_file
from ...files.blob_backends import BlobBackend, configured_location, open_blob_store, scheme_of
from ...files.blob_store import BlobStore
from ...files.hashing import is_sha256_hex
from .protocol_errors import TooLarge, UnprocessableUpload

READ_CHUNK = 1 << 20
HUB_PREFIX = "hub"


def hub_backend(hub_root: Path) -> BlobBackend:
    """The Hub's objects: ``<hub>/objects`` locally, or ``…/hub`` under ``LORADEX_BLOBS``'s bucket."""
    location = configured_location(Path(hub_root).parent)
    if location and scheme_of(location) != "file":
        return open_blob_store(Path(hub_root).parent, f"{location.rstrip('/')}/{HUB_PREFIX}")
    return BlobStore(hub_root, blobs_dir=Path(hub_root) / "objects")


class ObjectStore:
    def __init__(self, hub_root: Path, backend: BlobBackend | None = None):
        self.hub_root = Path(hub_root)
        self.backend = backend or BlobStore(hub_root, blobs_dir=self.hub_root / "objects")
        self.root = self.backend.root if isinstance(self.backend, BlobStore) else None

    @classmethod
    def for_hub(cls, hub_root: Path) -> "ObjectStore":
        return cls(hub_root, hub_backend(hub_root))

    @staticmethod
    def _checked(sha256: str) -> str:
        if not is_sha256_hex(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return sha256

    def path_for(self, sha256: str) -> Path:
        """A local file of the object (remote backends: the verified read-through cache)."""
        return self.backend.path_for(self._checked(sha256))

    def size_of(self, sha256: str) -> int | None:
        try:
            return self.backend.size_of(self._checked(sha256))
        except ValueError:
            return None

    def has(self, sha256: str, size: int | None = None) -> bool:
        actual = self.size_of(sha256)
        return actual is not None and (size is None or actual == size)

    def open(self, sha256: str) -> BinaryIO:
        return self.backend.open(self._checked(sha256))

    def iter_range(self, sha256: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start..end`` inclusive, in chunks (for HTTP Range answers)."""
        with open(self.path_for(sha256), "rb") as fh:
            fh.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = fh.read(min(READ_CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

    def put_bytes(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.has(sha256, len(data)):
            if self.root is not None:
                with atomic_output(self.root / sha256[:2] / sha256[2:]) as fh:
                    fh.write(data)
            else:
                with self.backend.writing():
                    self.backend.add_bytes(data)
        return sha256

    def publish_file(self, path: Path, sha256: str, size: int) -> None:
        """Give a checked file (a commit's staged content) to the store under ``sha256``,
        unless an object of that size is there already. Locally it is renamed into place."""
        if self.has(sha256, size):
            return
        if self.root is not None:
            dest = self.root / sha256[:2] / sha256[2:]
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)
            fsync_dir(dest.parent)
            return
        with self.backend.writing():
            stored = self.backend.add_file(path, move=True)
        if stored.hashes.sha256 != sha256:  # never: the caller hashed it; but never publish a lie
            raise UnprocessableUpload(f"staged file hashes to {stored.hashes.sha256[:12]}…, not {sha256[:12]}…")

    async def put_stream(self, chunks: AsyncIterator[bytes], oid: str, size: int,
                         on_bytes=None) -> None:
        """Store a streamed body that must hash to ``oid`` and be ``size`` bytes long.

        ``on_bytes(n)`` is called for every chunk received (the server's transfer counter).
        A mismatch raises ``UnprocessableUpload`` and nothing is published."""
        self._checked(oid)
        if self.root is not None:
            with atomic_output(self.root / oid[:2] / oid[2:]) as fh:
                await _receive(chunks, fh, oid, size, on_bytes)
            return
        incoming = self.hub_root / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        fd, tmp = locked_temp_file(incoming)
        try:
            with os.fdopen(fd, "wb") as fh:
                await _receive(chunks, fh, oid, size, on_bytes)
            self.publish_file(tmp, oid, size)
        finally:
            tmp.unlink(missing_ok=True)


async def _receive(chunks: AsyncIterator[bytes], fh, oid: str, size: int, on_bytes) -> None:
    hasher = hashlib.sha256()
    received = 0
    async for chunk in chunks:
        if not chunk:
            continue
        received += len(chunk)
        if on_bytes:
            on_bytes(len(chunk))
        if received > size:
            raise TooLarge(f"upload of {oid[:12]}… is larger than the announced {size} bytes")
        hasher.update(chunk)
        fh.write(chunk)
    if received != size:
        raise UnprocessableUpload(f"upload of {oid[:12]}… has {received} bytes, announced {size}")
    if hasher.hexdigest() != oid:
        raise UnprocessableUpload(
            f"uploaded bytes hash to sha256 {hasher.hexdigest()[:12]}…, not the announced oid {oid[:12]}…")
