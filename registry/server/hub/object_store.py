"""Content-addressed object store of the Hub server: ``<hub>/objects/sha256/ab/cdef…``.

Kept minimal and separate from the catalog's ``BlobStore`` (same layout idea) because the server
must ingest a *streamed* HTTP body and check it against the oid the client announced before the
object gets its final name. Everything lands through ``atomic_output``: a killed server leaves at
most a ``.tmp-loradex-*`` file, never a wrong object under a final name.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import AsyncIterator, BinaryIO, Iterator

from ...files.atomic_files import atomic_output
from .protocol_errors import TooLarge, UnprocessableUpload

SHA256_RE = re.compile(r"[0-9a-f]{64}")
READ_CHUNK = 1 << 20


class ObjectStore:
    def __init__(self, hub_root: Path):
        self.root = Path(hub_root) / "objects" / "sha256"

    def path_for(self, sha256: str) -> Path:
        if not SHA256_RE.fullmatch(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:]

    def size_of(self, sha256: str) -> int | None:
        try:
            return self.path_for(sha256).stat().st_size
        except (FileNotFoundError, ValueError):
            return None

    def has(self, sha256: str, size: int | None = None) -> bool:
        actual = self.size_of(sha256)
        return actual is not None and (size is None or actual == size)

    def open(self, sha256: str) -> BinaryIO:
        return open(self.path_for(sha256), "rb")

    def iter_range(self, sha256: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start..end`` inclusive, in chunks (for HTTP Range answers)."""
        with self.open(sha256) as fh:
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
            with atomic_output(self.path_for(sha256)) as fh:
                fh.write(data)
        return sha256

    async def put_stream(self, chunks: AsyncIterator[bytes], oid: str, size: int,
                         on_bytes=None) -> None:
        """Store a streamed body that must hash to ``oid`` and be ``size`` bytes long.

        ``on_bytes(n)`` is called for every chunk received (the server's transfer counter).
        A mismatch raises ``UnprocessableUpload`` and nothing is published."""
        hasher = hashlib.sha256()
        received = 0
        with atomic_output(self.path_for(oid)) as fh:
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
