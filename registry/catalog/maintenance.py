"""``gc`` and ``verify``: keep the blob store and the catalog in step."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..files.atomic_files import remove_abandoned_temp_files, remove_abandoned_work_dirs
from ..crashpoints import crashpoint
from .db_schema import AdapterRow, PromptRecordRow, VersionFileRow, VersionRow

# Each function returns the sha256 of every blob some live row needs. Later features (records,
# previews, cards) register theirs here; gc keeps anything any of them names.
BlobReferencer = Callable[[Session], set]
BLOB_REFERENCERS: dict[str, BlobReferencer] = {}


def register_blob_referencer(name: str):
    def deco(fn: BlobReferencer) -> BlobReferencer:
        BLOB_REFERENCERS[name] = fn
        return fn

    return deco


@register_blob_referencer("versions")
def _live_versions(s: Session) -> set:
    return set(s.scalars(select(VersionRow.sha256).where(VersionRow.deleted_at.is_(None))))


@register_blob_referencer("version_files")
def _live_version_files(s: Session) -> set:
    """Every file of a live multi-file version (the primary is also the version row's blob)."""
    return set(s.scalars(select(VersionFileRow.sha256).join(VersionRow, VersionRow.id == VersionFileRow.version_id)
                         .where(VersionRow.deleted_at.is_(None))))


@register_blob_referencer("previews")
def _previews(s: Session) -> set:
    rows = s.scalars(select(VersionRow.extra).where(VersionRow.deleted_at.is_(None)))
    return {extra["preview_sha256"] for extra in rows if extra and extra.get("preview_sha256")}


@register_blob_referencer("prompt_record_images")
def _record_images(s: Session) -> set:
    return set(s.scalars(select(PromptRecordRow.image_sha256).where(PromptRecordRow.image_sha256.is_not(None))))


@register_blob_referencer("prompt_record_references")
def _record_references(s: Session) -> set:
    """Reference images named by records (``generate --reference``)."""
    return {ref["sha256"] for record in s.scalars(select(PromptRecordRow.record))
            for ref in (record or {}).get("references", []) if ref.get("sha256")}


def referenced_blobs(s: Session) -> set:
    from . import datasets  # noqa: F401 - registers "dataset_images" (datasets imports this module)

    out: set = set()
    for fn in BLOB_REFERENCERS.values():
        out |= fn(s)
    return out


@dataclass
class GcReport:
    removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    temp_files_removed: int = 0
    temp_bytes_freed: int = 0
    work_dirs_removed: int = 0

    def to_dict(self) -> dict:
        return {"removed": self.removed, "blobs_removed": len(self.removed),
                "bytes_freed": self.bytes_freed, "temp_files_removed": self.temp_files_removed,
                "temp_bytes_freed": self.temp_bytes_freed, "work_dirs_removed": self.work_dirs_removed}


def gc(catalog, *, dry_run: bool = False, grace_seconds: int | None = None) -> GcReport:
    """Remove blobs no live row references, the work folders of killed merges/resizes/extracts
    under ``<home>/tmp`` (their lock free), and temp files left by killed writers anywhere in the
    home (``.tmp-loradex-*`` files no live writer holds locked: blob copies and ``atomic_output``
    files alike). Each step is idempotent, so a gc killed half-way is finished by the next one.

    Mark and sweep: the store is listed first, then (one database snapshot) every row's blobs and
    every upload in progress are marked; a listed blob neither marked nor written within the
    grace period (``grace_seconds``; the backend's default: 0 for the local store, whose writers
    hold the store lock gc takes exclusive; ``LORADEX_GC_GRACE_SECONDS``, 1 h by default, for a
    shared store) is deleted — and on a shared store the delete itself re-checks its age (even
    with no grace period: an object rewritten after gc's snapshot, by a writer about to name
    bytes already stored, stays)."""
    report = GcReport()
    grace = catalog.blobs.default_grace_seconds if grace_seconds is None else grace_seconds
    with catalog.blobs.collecting():
        listed = list(catalog.blobs.iter_entries())
        keep = catalog.read(_marked_blobs)
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=grace)
        for entry in listed:
            if entry.sha256 in keep or (grace and entry.modified >= cutoff):
                continue
            freed = entry.size if dry_run else catalog.blobs.remove(
                entry.sha256, older_than=cutoff if catalog.blobs.shared else None)
            if freed is not None:
                report.removed.append(entry.sha256)
                report.bytes_freed += freed
            crashpoint("gc-blob-removed")
        if not dry_run:
            crashpoint("gc-before-temp-sweep")
            report.work_dirs_removed, work_bytes = remove_abandoned_work_dirs(catalog.home / "tmp")
            report.temp_files_removed, report.temp_bytes_freed = remove_abandoned_temp_files(
                catalog.home, recursive=True)
            report.temp_bytes_freed += work_bytes
        swept, swept_bytes = catalog.blobs.sweep_abandoned(cutoff, dry_run=dry_run)
        report.temp_files_removed += swept
        report.temp_bytes_freed += swept_bytes
    return report


def _marked_blobs(s: Session) -> set:
    """Every blob an upload in progress names plus every blob a row names. The uploads are read
    first: where each statement sees its own snapshot (PostgreSQL's read committed), a writer
    that drops its upload record after committing its row is then seen in one or the other."""
    from .blob_uploads import active_uploads

    in_flight = {rec.sha256 for rec in active_uploads(s) if rec.sha256}
    return in_flight | referenced_blobs(s)


@dataclass
class VerifyReport:
    checked_blobs: int = 0
    problems: list[dict] = field(default_factory=list)
    unreferenced: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checked_blobs": self.checked_blobs, "problems": self.problems,
                "unreferenced_blobs": self.unreferenced}


def verify(catalog, progress=None) -> VerifyReport:
    """Re-hash every blob; check every live row has its blob and every blob is named right.

    Unreferenced blobs are listed but are not problems (a killed ``add`` leaves one; gc frees it).
    """
    report = VerifyReport()

    def rows(s: Session):
        versions = s.execute(
            select(AdapterRow.name, VersionRow.version, VersionRow.sha256)
            .join(AdapterRow, AdapterRow.id == VersionRow.adapter_id)
            .where(VersionRow.deleted_at.is_(None))
        ).all()
        files = s.execute(  # the other files of multi-file versions
            select(AdapterRow.name, VersionRow.version, VersionFileRow.sha256)
            .join(VersionRow, VersionRow.id == VersionFileRow.version_id)
            .join(AdapterRow, AdapterRow.id == VersionRow.adapter_id)
            .where(VersionRow.deleted_at.is_(None), VersionFileRow.position > 0)
        ).all()
        return [*versions, *files]

    live = catalog.read(rows)
    needed = catalog.read(referenced_blobs)
    present = {entry.sha256: entry for entry in catalog.blobs.iter_entries()}
    total = len(present)
    for i, sha in enumerate(sorted(present)):
        problem = catalog.blobs.verify_blob(sha)
        report.checked_blobs += 1
        if problem:
            entry = {"blob": sha, "path": catalog.blobs.where(sha), "problem": problem}
            shared = catalog.blobs.shared_with(sha)
            if shared:  # stored with --link: the outside file that shares it is named
                entry["shared_with"] = shared
            report.problems.append(entry)
        elif sha not in needed:
            report.unreferenced.append(sha)
        if progress:
            progress(i + 1, total, "verify")
    for name, version, sha in live:
        if sha not in present:
            report.problems.append({"ref": f"{name}@{version}", "blob": sha, "problem": "blob missing"})
    for sha in sorted(needed - set(present) - {sha for _, _, sha in live}):
        report.problems.append({"blob": sha, "problem": "blob missing (referenced by a record or preview)"})
    return report

