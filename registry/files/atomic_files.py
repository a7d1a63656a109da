"""Writing files so that nothing is ever half-written under its final name.

A writer gets a temporary file in the destination's own directory (same file system, so the
final ``os.replace`` is atomic), fsyncs it, renames it into place and fsyncs the directory.
Temporary names start with ``.tmp-loradex-`` and each is flock'ed by its writer for as long as the
writer lives; the kernel drops the lock when the writer dies (even by ``kill -9``). So a temp file
nobody holds locked was left by a dead writer: the next writer into the same directory and
``loradex gc`` (over the whole home) delete those, and never a live writer's.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterator

TMP_PREFIX = ".tmp-loradex-"


def fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def locked_temp_file(directory: Path, suffix: str = "") -> tuple[int, Path]:
    """A new ``.tmp-loradex-*`` file in ``directory``, opened and exclusively flock'ed.

    A sweeper may delete a file in the instant between its creation and its lock; then the file
    we locked has no name any more (no links), and we make another."""
    while True:
        fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, dir=directory, suffix=suffix)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink > 0:
            return fd, Path(name)
        os.close(fd)


def remove_abandoned_temp_files(directory: Path, *, recursive: bool = False) -> tuple[int, int]:
    """Delete the ``.tmp-loradex-*`` files in ``directory`` (and below, if ``recursive``) that no
    live writer holds locked; returns (files removed, bytes freed). Temp *directories* are left
    alone."""
    removed = freed = 0
    if not directory.is_dir():
        return 0, 0
    pattern = f"{TMP_PREFIX}*"
    for path in directory.rglob(pattern) if recursive else directory.glob(pattern):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # gone already, a link, or unreadable: not ours to judge
            continue
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer holds it
            if info.st_nlink == 0:
                continue  # another sweeper got there first
            path.unlink(missing_ok=True)
            removed += 1
            freed += info.st_size
        finally:
            os.close(fd)
    return removed, freed


WORK_LOCK_SUFFIX = ".work-lock"


@contextlib.contextmanager
def held_work_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A temporary directory under ``parent`` (the home's ``tmp``, on the blob store's file
    system) holding a locked ``.tmp-loradex-*.work-lock`` file while in use, removed on exit.
    After a kill -9 the lock is free and ``remove_abandoned_work_dirs`` takes the whole folder —
    including a finished output that had not yet been moved into the store."""
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        fd, _ = locked_temp_file(path, suffix=WORK_LOCK_SUFFIX)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


def remove_abandoned_work_dirs(parent: Path) -> tuple[int, int]:
    """Delete the folders under ``parent`` made by ``held_work_dir`` whose lock no live process
    holds; returns (folders removed, bytes freed). Folders without a work lock (made by other
    code) are left alone."""
    removed = freed = 0
    if not parent.is_dir():
        return 0, 0
    for folder in parent.iterdir():
        if not folder.is_dir() or folder.is_symlink():
            continue
        locks = list(folder.glob(f"{TMP_PREFIX}*{WORK_LOCK_SUFFIX}"))
        if not locks or any(_is_held(lock) for lock in locks):
            continue
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
        freed += size
    return removed, freed


def _is_held(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


_SWEPT: set[Path] = set()


def _sweep_once(directory: Path) -> None:
    """Remove dead writers' temp files from ``directory`` on this process's first write there (a
    bulk export writes thousands of files into one folder: one listing, not one per file)."""
    if directory not in _SWEPT:
        remove_abandoned_temp_files(directory)
        _SWEPT.add(directory)


@contextlib.contextmanager
def atomic_output(dest: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Yield a file object; on clean exit its content appears at ``dest`` atomically."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(dest.parent)
    fd, tmp = locked_temp_file(dest.parent)
    try:
        with os.fdopen(fd, mode, closefd=False) as fh:  # fd (and its lock) stays open until the rename
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary *path* (for libraries that want a filename, e.g. safetensors'
    ``save_file``); on clean exit it is fsynced and renamed to ``dest``. The lock is held on the
    file the path names when it is made, so a library should write into it, not replace it."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(dest.parent)
    fd, tmp_path = locked_temp_file(dest.parent, suffix=dest.suffix)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, dest)
        fsync_dir(dest.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
    finally:
        os.close(fd)
