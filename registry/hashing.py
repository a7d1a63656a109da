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
import struct
from dataclasses import dataclass

AUTOV1_START = 0x100000
AUTOV1_END = 0x110000
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


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
        view = memoryview(chunk)
        n = len(view)
        if n == 0:
            return
        start = self._pos
        end = start + n
        self._sha.update(view)
        if len(self._head) < 8:
            self._head += bytes(view[: 8 - len(self._head)])
            if len(self._head) == 8:
                self._data_start = 8 + struct.unpack("<Q", self._head)[0]
        lo, hi = max(start, AUTOV1_START), min(end, AUTOV1_END)
        if lo < hi:
            self._v1.update(view[lo - start : hi - start])
        if self._data_start is not None and end > self._data_start:
            self._v3.update(view[max(self._data_start - start, 0) :])
        self._pos = end

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


CHUNK = 1 << 20


def hash_file(path) -> FileHashes:
    """Hash a file on disk in one pass (1 MiB ``readinto``)."""
    hasher = MultiHasher()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            hasher.update(view[:n])
    return hasher.result()


def is_bogus_model_hash(value: str | None) -> bool:
    """Some tools write sha256(b"") as ``sshs_model_hash``: treat it as absent."""
    return bool(value) and value.lower().startswith(EMPTY_SHA256[:12]) and (
        len(value) < 64 or value.lower() == EMPTY_SHA256
    )
