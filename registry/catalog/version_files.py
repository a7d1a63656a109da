"""Versions that hold several named files (migration 0009).

A Wan 2.2 A14B LoRA comes as two files, one per expert of the model: ``…_high_noise.safetensors``
(the early, high-noise steps) and ``…_low_noise.safetensors``. Neither is useful alone, so the
catalog holds the pair as ONE version with two named files. Each file is a blob of its own
(content-addressed, deduplicated, probed and hashed); the version row names the primary one
(the first given), so everything that reads one file of a version (merge, render, the Civitai
mirror's hashes) keeps working on it. ``version_files`` lists every file, primary first;
a single-file version has no rows there.

Names: ``name`` is the file's role (``high_noise``, ``low_noise`` or the file's stem) and
``file_name`` what it is exported and pushed as. Both match ``[A-Za-z0-9][A-Za-z0-9._-]*``: a name
never becomes a path outside the folder it is written to. A name from outside (a Hub repo, a
mirror, Civitai) that does not match is refused; a local file's name is tidied instead.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import entities as E
from .db_schema import VersionFileRow
from ..errors import InvalidFile, UsageError

MAX_FILES = 16  # a version is a handful of files (Wan 2.2: two), never a folder
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_ROLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# The roles of a Wan 2.2 A14B pair as their writers spell them in file names: ``high_noise``,
# ``HighNoise``, ``high-noise``, or a bare ``_high`` / ``_HN`` word in the stem.
_ROLE_PATTERNS = (
    ("high_noise", re.compile(r"high[_-]?noise|(?:^|[_.\s-])(?:high|hn)(?:$|[_.\s-])", re.IGNORECASE)),
    ("low_noise", re.compile(r"low[_-]?noise|(?:^|[_.\s-])(?:low|ln)(?:$|[_.\s-])", re.IGNORECASE)),
)

ROLE_ORDER = tuple(role for role, _ in _ROLE_PATTERNS)  # a recognised pair's primary first


def check_file_name(name: str, *, where: str = "file name") -> str:
    """``name`` if it is a plain file name (``[A-Za-z0-9][A-Za-z0-9._-]*``, ≤ 200 characters), else
    InvalidFile: no separator, no ``..``, no hidden file, nothing a path could be built from."""
    if not isinstance(name, str) or not _FILE_NAME.fullmatch(name):
        raise InvalidFile(f"{where} {str(name)[:80]!r}", "is not a plain file name ([A-Za-z0-9._-], "
                          "not starting with '.', '-' or '_')", hint="rename the file; loradex writes no other names")
    return name


def check_role(name: str) -> str:
    if not isinstance(name, str) or not _ROLE.fullmatch(name):
        raise UsageError(f"file role {str(name)[:80]!r} is not a plain name ([A-Za-z0-9._-], ≤ 100 characters)",
                         hint="e.g. --file high_noise=A.safetensors")
    return name


def tidy_file_name(name: str) -> str:
    """A local file's name made plain: runs of other characters become ``_``."""
    tidy = re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip("._-")[:200]
    return check_file_name(tidy or "file.safetensors")


def role_for(file_name: str) -> str | None:
    """``high_noise`` / ``low_noise`` when the file's name says which expert it is for (exactly one)."""
    stem = file_name.rsplit(".", 1)[0] if "." in file_name else file_name
    found = [role for role, pattern in _ROLE_PATTERNS if pattern.search(stem)]
    return found[0] if len(found) == 1 else None


def _stem_role(file_name: str) -> str:
    stem = Path(file_name).stem or file_name
    return check_role(re.sub(r"[^A-Za-z0-9._-]+", "_", stem).lstrip("._-")[:100] or "file")


def name_files(file_names: list[str], declared: list[str | None] | None = None) -> list[str]:
    """The role of each file: the declared one, else the one its name says (``role_for``) when no
    other file has it, else its stem. Roles must differ (UsageError naming ``--file ROLE=PATH``)."""
    if len(file_names) > MAX_FILES:
        raise UsageError(f"a version holds at most {MAX_FILES} files ({len(file_names)} given)")
    declared = list(declared or [None] * len(file_names))
    recognised = [role_for(n) for n in file_names]
    roles = []
    for file_name, given, said in zip(file_names, declared, recognised):
        if given:
            roles.append(check_role(given))
        elif said and recognised.count(said) == 1 and said not in declared:
            roles.append(said)
        else:
            roles.append(_stem_role(file_name))
    if len(set(roles)) != len(roles):
        raise UsageError("two files would get the same name in one version: " + ", ".join(roles),
                         hint="name them with --file ROLE=PATH")
    return roles


@dataclass(frozen=True)
class NewFile:
    """A file about to join a version: its role, its file name and what the blob store said."""

    name: str
    file_name: str
    sha256: str
    size: int
    file_format: str
    probe: dict


def record_files(s: Session, version_id: int, files: list[NewFile]) -> tuple[E.VersionFile, ...]:
    """Insert the version's file rows (primary first); the caller commits."""
    for position, f in enumerate(files):
        s.add(VersionFileRow(version_id=version_id, position=position, name=f.name, file_name=f.file_name,
                             sha256=f.sha256, size=f.size, file_format=f.file_format, probe=f.probe))
    s.flush()
    return tuple(E.VersionFile(f.name, f.file_name, f.sha256, f.size, f.file_format, dict(f.probe))
                 for f in files)


def files_by_version(s: Session, version_ids) -> dict[int, tuple[E.VersionFile, ...]]:
    ids = sorted({i for i in version_ids if i is not None})
    out: dict[int, list] = {}
    for chunk in range(0, len(ids), 500):
        rows = s.scalars(select(VersionFileRow).where(VersionFileRow.version_id.in_(ids[chunk:chunk + 500]))
                         .order_by(VersionFileRow.version_id, VersionFileRow.position))
        for row in rows:
            out.setdefault(row.version_id, []).append(row.to_entity())
    return {vid: tuple(files) for vid, files in out.items()}


def with_files(s: Session, version: E.Version) -> E.Version:
    files = files_by_version(s, [version.id]).get(version.id)
    return dataclasses.replace(version, files=files) if files else version


def files_of(version: E.Version) -> tuple[E.VersionFile, ...]:
    """Every file of ``version``, primary first: its named files, or its one file."""
    if version.files:
        return version.files
    return (E.VersionFile("model", version.file_name or f"{version.adapter}.safetensors", version.sha256,
                          version.size, version.file_format, dict(version.probe)),)
