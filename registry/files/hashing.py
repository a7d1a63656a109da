"""The four hashes our users' tools use, computed in one read pass.

| name   | definition                                                              |
|--------|-------------------------------------------------------------------------|
| SHA256 | whole file (Civitai, HF LFS oid)                                        |
| AutoV2 | first 10 hex of SHA256 (A1111 short hash)                               |
| AutoV1 | sha256 of the 64 KiB at offset 1 MiB, first 8 hex (A1111 legacy)        |
| AutoV3 | sha256 of the bytes after the safetensors header (kohya sshs_model_hash) |

AutoV3 is only defined for safetensors files; for anything else it is ``None``.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass

AUTOV1_START = 0x100000
AUTOV1_END = 0x110000
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def is_sha256_hex(text: object) -> bool:
    """A lower-case 64-digit hex sha256: the only thing a blob's key, path or URL segment is made
    of (a value from outside is checked with this before it names an object or a file)."""
    return isinstance(text, str) and _SHA256_HEX.fullmatch(text) is not None


@dataclass(frozen=True)
class FileHashes:
    sha256: str
    autov1: str
    autov2: str
    autov3: str | None  # full hex; the 12-hex short form is autov3[:12]
    size: int

    def to_dict(self) -> dict:
        return {
            "sha256": self.sha256,
            "autov1": self.autov1,
            "autov2": self.autov2,
            "autov3": self.autov3,
            "size": self.size,
        }


class MultiHasher:
    """Feed consecutive chunks of a file; get all four hashes at the end.

    The safetensors header length is read from the first 8 bytes as they pass, so AutoV3 needs
    no second read. A file whose first 8 bytes give an impossible length gets ``autov3=None``.
    """

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._v1 = hashlib.sha256()
        self._v3 = hashlib.sha256()
        self._pos = 0
        self._head = b""
        self._data_start: int | None = None

    def update(self, chunk) -> None:
        """Single-threaded feeding (small data); files go through ``hash_file``/the blob store,
        which run the two SHA-256 streams in parallel."""
        view = memoryview(chunk)
        start = self._pos
        self.observe(view, start)
        self.update_main(view, start)
        self.update_autov3(view, start)

    # The three steps below let a reader feed the two SHA-256 streams from different threads:
    # ``observe`` (reader thread, in order) learns the header length and the size;
    # ``update_main`` (sha256 + AutoV1) and ``update_autov3`` may then run concurrently.
    def observe(self, view: memoryview, start: int) -> None:
        if len(self._head) < 8:
            self._head += bytes(view[: 8 - len(self._head)])
            if len(self._head) == 8:
                self._data_start = 8 + struct.unpack("<Q", self._head)[0]
        self._pos = start + len(view)

    def update_main(self, view: memoryview, start: int) -> None:
        self._sha.update(view)
        lo, hi = max(start, AUTOV1_START), min(start + len(view), AUTOV1_END)
        if lo < hi:
            self._v1.update(view[lo - start : hi - start])

    def update_autov3(self, view: memoryview, start: int) -> None:
        data_start = self._data_start
        if data_start is not None and start + len(view) > data_start:
            self._v3.update(view[max(data_start - start, 0) :])

    def result(self) -> FileHashes:
        sha = self._sha.hexdigest()
        size = self._pos
        autov3 = None
        if self._data_start is not None and self._data_start <= size:
            autov3 = self._v3.hexdigest()
        if size < AUTOV1_START:
            autov1 = EMPTY_SHA256[:8]
        else:
            autov1 = self._v1.hexdigest()[:8]
        return FileHashes(sha256=sha, autov1=autov1, autov2=sha[:10], autov3=autov3, size=size)


def hash_file(path, progress=None) -> FileHashes:
    """Hash a file on disk in one read pass, the two SHA-256 streams in parallel threads."""
    from .fanout_reader import read_fanout

    hasher = MultiHasher()
    with open(path, "rb", buffering=0) as fh:
        read_fanout(fh, [hasher.update_main, hasher.update_autov3], observe=hasher.observe, progress=progress)
    return hasher.result()


def is_bogus_model_hash(value: str | None) -> bool:
    """Some tools write sha256(b"") as ``sshs_model_hash``: treat it as absent."""
    return bool(value) and value.lower().startswith(EMPTY_SHA256[:12]) and (
        len(value) < 64 or value.lower() == EMPTY_SHA256
    )
