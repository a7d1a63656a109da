"""A local read-through cache of remote blobs, for readers that need a file (safetensors mmap,
PIL, a symlink in an export): ``<home>/cache/blobs/ab/cdef…``.

- A fill downloads into a temp file in the cache folder, hashing as it goes; only bytes whose
  sha256 is the blob's name are renamed into place (atomic), read-only.
- Each entry has a stamp ``ab/cdef….stamp`` holding the entry's size and mtime at fill. A hit
  whose file no longer matches its stamp (edited, truncated, replaced) is dropped and fetched
  again; ``verify_entry`` re-hashes in full. The stamp's own mtime is the entry's last use.
- Size-capped LRU: after a fill, the least recently used entries go until the cache holds at
  most ``max_bytes`` (``LORADEX_BLOB_CACHE_BYTES``, default 10 GiB). The entry just filled always
  stays, even alone above the cap. Evicting a file another process has mapped is safe: the
  mapping keeps the inode.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Callable, Iterator

from .atomic_files import fsync_dir, locked_temp_file
from ..errors import CatalogError

DEFAULT_CACHE_BYTES = 10 << 30
Fetch = Callable[[str, "object"], None]  # (sha256, open binary file) → writes the blob into it


def cache_bytes_from_env() -> int:
    raw = os.environ.get("LORADEX_BLOB_CACHE_BYTES", "").strip()
    if not raw:
        return DEFAULT_CACHE_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise CatalogError(f"LORADEX_BLOB_CACHE_BYTES={raw[:40]!r} is not a whole number of bytes",
                           hint="e.g. LORADEX_BLOB_CACHE_BYTES=10737418240 (10 GiB)") from None
    if value < 0:
        raise CatalogError("LORADEX_BLOB_CACHE_BYTES must not be negative")
    return value


class BlobCache:
    def __init__(self, root: Path, max_bytes: int | None = None):
        self.root = Path(root)
        self.max_bytes = cache_bytes_from_env() if max_bytes is None else max_bytes

    def path_of(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:]

    def _stamp_of(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256[2:]}.stamp"

    # --- hits ---------------------------------------------------------------------------
    def lookup(self, sha256: str) -> Path | None:
        """The entry when present and unchanged since its fill (its use is recorded), else None
        (a changed entry is dropped)."""
        path, stamp = self.path_of(sha256), self._stamp_of(sha256)
        try:
            st = path.stat()
            recorded = stamp.read_text().split()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if recorded != [str(st.st_size), str(st.st_mtime_ns)]:
            self.drop(sha256)
            return None
        with contextlib.suppress(OSError):
            os.utime(stamp)  # last use, for the LRU order
        return path

    def verify_entry(self, sha256: str) -> bool:
        """Re-hash an entry in full; drop it when its bytes are not its name."""
        path = self.path_of(sha256)
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
        except FileNotFoundError:
            return False
        if digest.hexdigest() != sha256:
            self.drop(sha256)
            return False
        return True

    # --- fills --------------------------------------------------------------------------
    def fill(self, sha256: str, fetch: Fetch) -> Path:
        """Fetch the blob into the cache (verified), evict to the cap, return the entry."""
        folder = self.root / sha256[:2]
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = locked_temp_file(folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                sink = _HashingSink(fh)
                fetch(sha256, sink)
                fh.flush()
                os.fsync(fh.fileno())
            if sink.digest.hexdigest() != sha256:
                raise CatalogError(f"blob sha256:{sha256[:12]}… fetched for the cache hashes to "
                                   f"{sink.digest.hexdigest()[:12]}…: the stored object is corrupted",
                                   hint="run `loradex verify`")
            os.chmod(tmp, 0o444)
            final = self.path_of(sha256)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        st = final.stat()
        self._stamp_of(sha256).write_text(f"{st.st_size} {st.st_mtime_ns}\n")
        fsync_dir(folder)
        self.evict(keep=sha256)
        return final

    def drop(self, sha256: str) -> None:
        for path in (self.path_of(sha256), self._stamp_of(sha256)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def entries(self) -> Iterator[tuple[str, int, float]]:
        """(sha256, size, last use) of every entry."""
        if not self.root.is_dir():
            return
        for sub in self.root.iterdir():
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for stamp in sub.glob("*.stamp"):
                sha = sub.name + stamp.name[: -len(".stamp")]
                try:
                    yield sha, self.path_of(sha).stat().st_size, stamp.stat().st_mtime
                except FileNotFoundError:
                    continue

    def total_bytes(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def evict(self, keep: str | None = None) -> list[str]:
        """Drop least recently used entries until the cache fits ``max_bytes``."""
        entries = sorted(self.entries(), key=lambda e: e[2])
        total = sum(size for _, size, _ in entries)
        evicted = []
        for sha, size, _ in entries:
            if total <= self.max_bytes:
                break
            if sha == keep:
                continue
            self.drop(sha)
            total -= size
            evicted.append(sha)
        return evicted


class _HashingSink:
    def __init__(self, fh):
        self.fh, self.digest = fh, hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return self.fh.write(data)
