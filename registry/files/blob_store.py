"""Content-addressed blob store: ``<home>/blobs/sha256/ab/cdef…``.

A blob is written to a temporary file in ``blobs/sha256/`` (same file system as its final place),
hashed in the same pass as it is copied, fsynced, then renamed into place. A final name therefore
always holds exactly the bytes its name says. Reading and writing overlap (a writer thread), so an
add costs about one read pass. ``--link`` hardlinks the source instead of copying when it can.

A hardlinked blob shares its bytes with a file outside the home, so, as DVC does with its
hardlinked cache, the shared inode is made read-only (``chmod a-w``) before it is published: an
edit in place then fails instead of silently changing a stored version. The outside path is
recorded in ``blobs/links/ab/cdef….json`` (with its device, inode and original mode), so
``verify`` can name it if the blob changes anyway, and ``remove`` (gc) gives the file its
write permission back when the store lets go of the inode.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .atomic_files import TMP_PREFIX, fsync_dir, locked_temp_file
from ..crashpoints import crashpoint
from ..errors import CatalogError, InvalidFile, NotFound
from .hashing import FileHashes, MultiHasher, hash_file

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class StoredBlob:
    hashes: FileHashes
    path: Path
    linked: bool  # stored as a hardlink of the source
    existed: bool  # the blob was already in the store (nothing written)
    note: str = ""  # e.g. why --link fell back to a copy


class BlobStore:
    """The local backend (``BlobBackend`` in ``blob_backends``): one machine's file system.
    ``blobs_dir``: a folder outside the home (``LORADEX_BLOBS=/path``); default ``<home>/blobs``."""

    shared = False  # one machine: writers and gc are serialised by ``store_lock``
    default_grace_seconds = 0  # the lock already keeps gc away from blobs about to be named

    def __init__(self, home: Path, blobs_dir: Path | None = None):
        base = Path(blobs_dir) if blobs_dir else Path(home) / "blobs"
        self.root = base / "sha256"
        self.links_root = base / "links"
        self.lock_home = Path(blobs_dir) if blobs_dir else Path(home)
        self.location = str(blobs_dir) if blobs_dir else ""

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:]

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def where(self, sha256: str) -> str:
        return str(self.path_for(sha256))

    def size_of(self, sha256: str) -> int | None:
        try:
            return self.path_for(sha256).stat().st_size
        except OSError:
            return None

    def writing(self):
        """Writers hold the store lock shared from "blob written" to "row committed"."""
        return store_lock(self.lock_home, exclusive=False)

    def collecting(self):
        """gc holds it exclusive: no blob about to be named can be deleted."""
        return store_lock(self.lock_home, exclusive=True)

    def in_flight(self) -> set[str]:
        return set()  # writers in flight hold the lock: gc cannot run meanwhile

    def open(self, sha256: str):
        path = self.path_for(sha256)
        if not path.is_file():
            raise NotFound(f"blob sha256:{sha256[:12]} is missing from the store",
                           hint="run `loradex verify` to list problems")
        return open(path, "rb")

    # --- writing ------------------------------------------------------------------------
    def add_file(self, src: str | os.PathLike, *, link: bool = False, move: bool = False,
                 progress: Progress | None = None) -> StoredBlob:
        """Store ``src``'s bytes. ``link``: hardlink instead of copying when possible. ``move``:
        the caller gives ``src`` up (a file it wrote for the store, e.g. a merge's output under
        the home): it is renamed into place, or deleted when the blob already exists."""
        src = Path(src)
        if not src.is_file():
            raise InvalidFile(src, "not a regular file", hint="give the path of an adapter file")
        self.root.mkdir(parents=True, exist_ok=True)
        if move:
            return self._add_by_move(src, progress)
        if link:
            linked = self._add_by_link(src, progress)
            if linked.linked or linked.existed:
                return linked
            return self._add_by_copy(src, progress, note=linked.note)
        return self._add_by_copy(src, progress)

    def add_bytes(self, data: bytes) -> StoredBlob:
        self.root.mkdir(parents=True, exist_ok=True)
        hasher = MultiHasher()
        hasher.update(data)
        hashes = hasher.result()
        final = self.path_for(hashes.sha256)
        if final.is_file():
            return StoredBlob(hashes, final, linked=False, existed=True)
        fd, tmp = locked_temp_file(self.root)
        try:
            with self._out_of_space_is_typed(f"{len(data)} bytes"), os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self._publish(tmp, hashes)

    @contextlib.contextmanager
    def _out_of_space_is_typed(self, what: str) -> Iterator[None]:
        """A full disk (or quota) while writing a blob becomes one actionable line."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise CatalogError(f"no space left on the device holding {self.root} "
                               f"({errno.errorcode[exc.errno]}) while storing {what}; nothing was added",
                               hint="free space there (`loradex gc` frees unreferenced blobs) or set "
                                    "LORADEX_HOME to a bigger disk") from None

    def _publish(self, tmp: Path, hashes: FileHashes, *, linked: bool = False, note: str = "") -> StoredBlob:
        crashpoint("blob-temp-written")
        final = self.path_for(hashes.sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.is_file():
            tmp.unlink(missing_ok=True)
            return StoredBlob(hashes, final, linked=False, existed=True, note=note)
        if not linked:
            os.chmod(tmp, 0o444)
        os.replace(tmp, final)
        fsync_dir(final.parent)
        crashpoint("blob-published")
        return StoredBlob(hashes, final, linked=linked, existed=False, note=note)

    def _add_by_copy(self, src: Path, progress: Progress | None, note: str = "") -> StoredBlob:
        fd, tmp = locked_temp_file(self.root)
        try:
            with self._out_of_space_is_typed(f"{src} ({src.stat().st_size} bytes)"), \
                    os.fdopen(fd, "wb", buffering=0) as fout:
                hashes = _copy_hashing(src, fout, progress)
                return self._publish(tmp, hashes, note=note)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _add_by_move(self, src: Path, progress: Progress | None) -> StoredBlob:
        """Hash ``src`` where it lies and rename it into place: no second copy of the bytes on
        disk. On another file system it is copied like any file (and left for the caller)."""
        from .safetensors_writer import hashes_of_written

        if os.stat(src).st_dev != os.stat(self.root).st_dev:
            return self._add_by_copy(src, progress)
        # a file this process has just written knows its hashes already
        hashes = hashes_of_written(src) or hash_file(src)
        if progress:
            progress(hashes.size, hashes.size, "hashed")
        with open(src, "rb") as fh:  # durable before it is published (a no-op if the writer synced)
            os.fsync(fh.fileno())
        if os.stat(src).st_size != hashes.size:
            raise InvalidFile(src, "changed while being added", hint="try again")
        os.chmod(src, 0o444)
        return self._publish(src, hashes)

    def _add_by_link(self, src: Path, progress: Progress | None) -> StoredBlob:
        hashes = hash_file(src)
        if progress:
            progress(hashes.size, hashes.size, "hashed")
        final = self.path_for(hashes.sha256)
        if final.is_file():
            return StoredBlob(hashes, final, linked=False, existed=True)
        tmp = self.root / f"{TMP_PREFIX}link-{os.getpid()}-{threading.get_ident()}"
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                return StoredBlob(hashes, final, linked=False, existed=False,
                                  note=f"--link not possible ({os.strerror(exc.errno)}): copied instead")
            raise
        # The source may have changed between hashing and linking: check the linked bytes' size.
        st = tmp.stat()
        if st.st_size != hashes.size:
            tmp.unlink(missing_ok=True)
            raise InvalidFile(src, "changed while being added", hint="try again")
        try:
            os.chmod(tmp, stat.S_IMODE(st.st_mode) & ~0o222)  # the outside file too: same inode
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            return StoredBlob(hashes, final, linked=False, existed=False,
                              note=f"--link not possible (cannot make it read-only: {exc.strerror}): copied instead")
        try:
            self._record_link(hashes.sha256, src, st)
        except OSError:
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
            tmp.unlink(missing_ok=True)
            raise
        stored = self._publish(tmp, hashes, linked=True,
                               note=f"{src} is now read-only: it shares its bytes with the store "
                                    "(copy it to edit it)")
        if stored.existed:  # another writer stored these bytes first: our link was dropped
            with contextlib.suppress(OSError):
                os.chmod(src, stat.S_IMODE(st.st_mode))
            return dataclasses.replace(stored, note="")
        return stored

    # --- the outside paths of linked blobs ---------------------------------------------
    _LINKS_SCHEMA = {
        "type": "object", "required": ["links"],
        "properties": {"links": {"type": "array", "maxItems": 1000, "items": {
            "type": "object", "required": ["path", "dev", "ino", "mode"],
            "properties": {"path": {"type": "string", "maxLength": 8192},
                           "dev": {"type": "integer"}, "ino": {"type": "integer"},
                           "mode": {"type": "integer", "minimum": 0, "maximum": 0o7777}}}}},
    }

    def _links_file(self, sha256: str) -> Path:
        return self.links_root / sha256[:2] / f"{sha256[2:]}.json"

    def _record_link(self, sha256: str, src: Path, st: os.stat_result) -> None:
        """Remember (atomically) that ``src`` shares the blob's inode, before it is published."""
        from .atomic_files import atomic_output

        links = [entry for entry in self.link_records(sha256) if entry["path"] != str(src.absolute())]
        links.append({"path": str(src.absolute()), "dev": st.st_dev, "ino": st.st_ino,
                      "mode": stat.S_IMODE(st.st_mode)})
        path = self._links_file(sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path, "w") as fh:
            fh.write(json.dumps({"format": 1, "sha256": sha256, "links": links}, indent=1) + "\n")

    def link_records(self, sha256: str) -> list[dict]:
        """The recorded outside paths of a linked blob ([] when none, or the record is damaged:
        it lives in the home but is read like any file from outside)."""
        from ..errors import UntrustedData
        from ..untrusted import check_schema, read_json_file

        path = self._links_file(sha256)
        if not path.is_file():
            return []
        try:
            data = check_schema(read_json_file(path, max_bytes=1 << 20), self._LINKS_SCHEMA, str(path))
        except UntrustedData:
            return []
        return data["links"]

    def shared_with(self, sha256: str) -> list[str]:
        """Outside paths that still share the blob's inode (a hardlink made by ``--link``)."""
        try:
            blob = os.stat(self.path_for(sha256))
        except OSError:
            return []
        out = []
        for entry in self.link_records(sha256):
            try:
                st = os.stat(entry["path"])
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (blob.st_dev, blob.st_ino):
                out.append(entry["path"])
        return out

    # --- maintenance --------------------------------------------------------------------
    def iter_blobs(self) -> Iterator[tuple[str, Path]]:
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for path in sorted(sub.iterdir()):
                if path.name.startswith(TMP_PREFIX):
                    continue
                yield sub.name + path.name, path

    def iter_entries(self):
        from datetime import datetime, timezone

        from .blob_backends import BlobEntry

        for sha, path in self.iter_blobs():
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            yield BlobEntry(sha, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def sweep_abandoned(self, cutoff, *, dry_run: bool = False) -> tuple[int, int]:
        """Link records of blobs that never got published (temp files are swept home-wide by gc)."""
        if dry_run:
            return 0, 0
        return self.remove_orphan_link_records(), 0

    def remove(self, sha256: str, *, older_than=None) -> int | None:
        """Delete a blob (and its link record). A blob still shared with an outside file by
        ``--link`` gets that file's original mode back first: the store no longer holds it."""
        path = self.path_for(sha256)
        if older_than is not None:
            try:
                if path.stat().st_mtime >= older_than.timestamp():
                    return None  # written (again) during the grace period: kept
            except FileNotFoundError:
                return None
        try:
            st = path.stat()
            modes = [entry["mode"] for entry in self.link_records(sha256)
                     if (entry["dev"], entry["ino"]) == (st.st_dev, st.st_ino)]
            if modes and st.st_nlink > 1:
                with contextlib.suppress(OSError):
                    os.chmod(path, modes[-1])  # the blob's own path: the inode is the same
            path.unlink()
        except FileNotFoundError:
            return 0
        finally:
            self._links_file(sha256).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only succeeds when empty
        return st.st_size

    def remove_orphan_link_records(self) -> int:
        """Link records whose blob is gone (an add killed between the record and the publish)."""
        removed = 0
        if not self.links_root.is_dir():
            return 0
        for sub in self.links_root.iterdir():
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for record in sub.glob("*.json"):
                if not self.path_for(sub.name + record.name[: -len(".json")]).is_file():
                    record.unlink(missing_ok=True)
                    removed += 1
        return removed

    def verify_blob(self, sha256: str) -> str | None:
        """None when healthy, otherwise what is wrong."""
        path = self.path_for(sha256)
        if not path.is_file():
            return "missing"
        actual = hash_file(path).sha256
        if actual != sha256:
            shared = self.shared_with(sha256)
            if shared:
                return (f"content hash is {actual[:12]}… (corrupted): the blob is a hardlink shared with "
                        f"{', '.join(shared)} (stored with --link), which was changed in place")
            return f"content hash is {actual[:12]}… (corrupted)"
        return None


@contextlib.contextmanager
def store_lock(home: Path, *, exclusive: bool) -> Iterator[None]:
    """Writers (blob written → row committed) hold it shared; ``gc`` holds it exclusive, so gc
    never deletes a blob whose row is about to be committed. The kernel releases it on kill -9."""
    import fcntl

    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / ".store.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def _copy_hashing(src: Path, fout, progress: Progress | None) -> FileHashes:
    """Copy ``src`` into the open file ``fout`` while hashing it four ways: one read pass, with
    the write and the two SHA-256 streams in parallel threads (see ``fanout_reader``)."""
    from .fanout_reader import read_fanout

    hasher = MultiHasher()
    total = src.stat().st_size
    with open(src, "rb", buffering=0) as fin:
        read_fanout(fin, [hasher.update_main, hasher.update_autov3, _SyncingWriter(fout)],
                    observe=hasher.observe, total=total,
                    progress=(lambda done, _t, _d: progress(done, total, "copy")) if progress else None)
    os.fsync(fout.fileno())
    hashes = hasher.result()
    written = os.fstat(fout.fileno()).st_size
    if written != hashes.size:  # never publish fewer bytes than were hashed
        raise CatalogError(f"{src}: the blob store kept only {written} of {hashes.size} bytes; nothing was added",
                           hint="check the disk under LORADEX_HOME, then try again")
    return hashes


class _SyncingWriter:
    """The copy's sink: writes every chunk in full and, every ``SYNC_EVERY`` bytes, flushes what
    it has written so far (fdatasync). The disk then works while the hashes are still being
    computed, and the fsync before the rename has little left to do; with one fsync at the end
    the whole file's writeback would start only after the last byte was hashed."""

    SYNC_EVERY = 64 << 20

    def __init__(self, fout):
        self.fout, self.unsynced = fout, 0

    def __call__(self, view: memoryview, _offset: int) -> None:
        _write_all(self.fout, view)
        self.unsynced += len(view)
        if self.unsynced >= self.SYNC_EVERY:
            os.fdatasync(self.fout.fileno())
            self.unsynced = 0


def _write_all(fout, view: memoryview) -> None:
    """An unbuffered write may take only part of the chunk (e.g. the last bytes before the disk
    is full) and say so only in its return value: write the rest, so a full disk raises ENOSPC."""
    while view:
        view = view[fout.write(view):]
