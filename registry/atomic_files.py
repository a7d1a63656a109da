"""Writing files so that nothing is ever half-written under its final name.

A writer gets a temporary file in the destination's own directory (same file system, so the
final ``os.replace`` is atomic), fsyncs it, renames it into place and fsyncs the directory.
Temporary names start with ``.tmp-loradex-`` so ``gc`` and the next writer can clean up after a
killed process.
"""

from __future__ import annotations

import contextlib
import os
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


@contextlib.contextmanager
def atomic_output(dest: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Yield a file object; on clean exit its content appears at ``dest`` atomically."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=dest.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary *path* (for libraries that want a filename, e.g. safetensors'
    ``save_file``); on clean exit it is fsynced and renamed to ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=dest.parent, suffix=dest.suffix)
    os.close(fd)
    tmp_path = Path(tmp)
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


def stale_temp_files(directory: Path, older_than_s: float = 3600.0) -> list[Path]:
    """Temp files left by killed writers (older than ``older_than_s``)."""
    import time

    now = time.time()
    found = []
    for path in directory.rglob(f"{TMP_PREFIX}*"):
        try:
            if now - path.stat().st_mtime >= older_than_s:
                found.append(path)
        except FileNotFoundError:
            continue
    return found
