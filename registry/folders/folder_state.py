"""What loradex wrote into a webui folder, and the checks before it touches a file there again.

``sync-folder`` keeps ``DIR/.loradex-sync.json`` and ``export`` keeps ``DIR/.loradex-export.json``:
relative path → the sha256 of the bytes loradex wrote there (plus size, mtime and the ref). Both
files live in a folder a user (or anyone with write access) can edit, so they are data from
outside:

- the file is read with a size cap and checked against :data:`STATE_SCHEMA`; a file that is not
  a state file at all is a one-line error;
- each entry's name must be a relative path inside the folder (``untrusted.safe_relative_name``
  with ``allow_dirs``: no ``..``, no absolute path); an entry that is not is dropped with a
  warning and never read, written or deleted;
- before every write or delete the path is resolved and must still lie inside the folder
  (:func:`checked_path`, ``untrusted.inside``): a symlinked subfolder or file leading out is
  left alone;
- a file is overwritten or deleted only when it is a regular file (not a symlink) inside the
  folder whose content, re-hashed now, still has the recorded sha256. Size and mtime are only a
  shortcut for "nothing to do", never for a delete or an overwrite.

Entries without a sha256 (hand-written, or from a tool that did not record one) are not ours:
their files are never deleted or overwritten; a file with exactly the target's bytes is adopted.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path
from typing import Iterator

from ..files.atomic_files import atomic_output
from ..errors import FolderError, InvalidFile, LoradexError, UntrustedData
from ..files.hashing import hash_file
from ..untrusted import check_schema, inside, read_json_file, safe_relative_name

STATE_FORMAT = 1
MAX_STATE_BYTES = 16 << 20
LOCK = ".loradex-sync.lock"

STATE_SCHEMA = {
    "type": "object",
    "required": ["files"],
    "properties": {
        "format": {"type": "integer", "minimum": 1},
        "tool": {"type": "string"},
        "layout": {"type": "string"},
        "alias": {"type": "string"},
        "files": {"type": "object"},
    },
}
ENTRY_SCHEMA = {
    "type": "object",
    "properties": {
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "size": {"type": "integer", "minimum": 0},
        "mtime_ns": {"type": "integer"},
        "ref": {"type": ["string", "null"], "maxLength": 400},
    },
}


@contextlib.contextmanager
def folder_errors(root: Path) -> Iterator[None]:
    """An OS error while writing into ``root`` becomes one line naming the file."""
    try:
        yield
    except LoradexError:
        raise
    except OSError as exc:
        where = exc.filename or root
        raise FolderError(f"{where}: {exc.strerror or exc}; the folder was left as it was up to this file",
                          hint=f"check that {root} is a writable folder") from None


def read_state(root: Path, name: str, warnings: list[str] | None = None) -> dict[str, dict]:
    """The validated entries of ``root/name`` ({} when there is none). Entries that name a path
    outside ``root`` or do not have the declared shape are left out, with a warning each."""
    path = root / name
    if not path.exists():
        return {}
    try:
        if not path.is_file():
            raise UntrustedData(str(path), "not a regular file")
        data = check_schema(read_json_file(path, max_bytes=MAX_STATE_BYTES), STATE_SCHEMA, str(path))
    except UntrustedData as exc:
        raise InvalidFile(path, f"is not a loradex sync manifest ({exc.message[len(str(path)) + 2:]})",
                          hint="restore it, or move it away to start over (files loradex wrote "
                               "there then count as not its own)") from None
    out: dict[str, dict] = {}
    for rel, entry in data["files"].items():
        try:
            _safe_entry_name(rel, str(path))
            check_schema(entry, ENTRY_SCHEMA, f"{path} entry {rel[:80]!r}")
        except UntrustedData as exc:
            if warnings is not None:
                warnings.append(f"{name}: entry {rel[:80]!r} ignored ({_short(exc)}); "
                                "nothing was read, written or removed for it")
            continue
        out[rel] = dict(entry)
    return out


def _safe_entry_name(rel, source: str) -> str:
    """A relative path inside the folder, with no hidden part: loradex writes adapter files only
    (names start with a letter or digit), never its own state, lock or temp files."""
    safe_relative_name(rel, source, field="entry", allow_dirs=True)
    if any(part.startswith(".") for part in rel.split("/")):
        raise UntrustedData(source, f"entry {rel[:80]!r} names a hidden file (never one loradex exports)")
    return rel


def write_state(root: Path, name: str, files: dict[str, dict], **header) -> None:
    body = {"format": STATE_FORMAT, "tool": "loradex", **header, "files": dict(sorted(files.items()))}
    with atomic_output(root / name, "w") as fh:
        fh.write(json.dumps(body, indent=2) + "\n")


def _short(exc: Exception) -> str:
    text = str(exc)
    return text.split(": ", 1)[1] if isinstance(exc, UntrustedData) and ": " in text else text


@contextlib.contextmanager
def folder_lock(root: Path) -> Iterator[None]:
    """Two writers of one folder at once would fight over its state file: serialise them."""
    import fcntl

    # never through a symlink (a dangling one would create a file outside the folder), never
    # blocking on a FIFO put there
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --- checks before a write or a delete -----------------------------------------------------------
def checked_path(root: Path, rel: str) -> Path | None:
    """``root/rel`` when ``rel`` is a safe relative name whose path stays inside ``root`` (no
    symlinked subfolder leading out); None otherwise."""
    try:
        _safe_entry_name(rel, str(root))
        inside(root / rel, root)
    except (UntrustedData, ValueError, OSError):
        return None
    return root / rel


def file_state(path: Path) -> str:
    """``missing``, ``regular`` or ``other`` (a symlink, a FIFO, a folder: never loradex's)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "other"
    return "regular" if stat.S_ISREG(st.st_mode) else "other"


def content_sha(path: Path) -> str | None:
    """sha256 of the regular file at ``path`` read now (None if it is not one or unreadable)."""
    if file_state(path) != "regular":
        return None
    try:
        return hash_file(path).sha256
    except OSError:
        return None


def quick_unchanged(path: Path, entry: dict | None) -> bool:
    """Size and mtime as recorded: good enough to do nothing, never to delete or overwrite."""
    if not entry or not entry.get("sha256"):
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns


def owned(path: Path, entry: dict | None) -> bool:
    """Is the file at ``path`` still exactly what loradex wrote there (``entry``)?"""
    return bool(entry and entry.get("sha256")) and content_sha(path) == entry["sha256"]


def entry_for(path: Path, sha256: str, ref: str | None) -> dict:
    st = os.lstat(path)
    return {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ref": ref}
