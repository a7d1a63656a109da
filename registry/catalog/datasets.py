"""Datasets: versioned sets of training images with captions, kept in the catalog.

A dataset version is a manifest (``schemas/dataset_manifest.schema.json``: each image by the
sha256 of its bytes, its caption, width/height/format, the file name it came from and where its
caption came from) plus the ``dataset check`` report made when it was added. Images are blobs in
the blob store, stored once whatever number of datasets and versions name them; ``gc`` keeps every
image a live dataset version names (the ``dataset_images`` referencer below). Versions are
immutable and semver-numbered, aliases move with a history, ``rm`` is soft — as for adapters,
in tables of their own (``datasets``, ``dataset_versions``, ``dataset_aliases``,
``dataset_alias_events``; migration 0010), so no adapter listing, search or push sees them.

Refs: ``dataset:NAME`` (its highest live version), ``dataset:NAME@1.2.0``, ``dataset:NAME@ALIAS``;
the ``dataset:`` prefix may be left out where only a dataset can be meant (``loradex dataset …``).

Training from a dataset version (``train … --data dataset:NAME@1.2.0``) records a ``trained_from``
lineage edge whose parent is the exact version, ``dataset:NAME@X.Y.Z`` (an alias is resolved when
the run starts), and whose recipe holds ``dataset_manifest_sha256`` (this version's
``manifest_sha256``) and ``manifest_sha256`` (the trainer's hash of the exported folder, equal to
the version's ``training_sha256``). Names never change and versions are never reused, so the ref
is a stable key; the hashes let anyone check that the data behind an edge is what it says.

A file name in a manifest is validated before it is used (``check_manifest``): a relative POSIX
path of safe parts with an image suffix, unique (case-insensitively) with unique caption files,
so ``export`` writes nothing outside the folder it was given.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, defer

from .dataset_captions import folder_caption_sources
from .dataset_check import (IMAGE_EXTS, MANIFEST_SCHEMA, NEAR_DUPLICATE_BITS, DatasetReport, check_items,
                            image_files, manifest_sha256, normal_caption, normal_caption_ext, read_caption)
from .db_schema import DatasetAliasEventRow, DatasetAliasRow, DatasetRow, DatasetVersionRow
from .maintenance import register_blob_referencer
from .refs import LATEST, Ref, check_alias, check_name, parse_ref, parse_version, sort_key
from .store import RetryTransaction
from ..errors import (AlreadyExists, Conflict, InvalidFile, InvalidName, InvalidRef, NotFound, UntrustedData,
                      UsageError)
from ..paths import current_user
from ..untrusted import check_schema, check_shape, inside, safe_relative_name

PREFIX = "dataset:"
MANIFEST_FORMAT = "loradex.dataset/1"
BUMPS = ("major", "minor", "patch")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands naive datetimes back
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


# --- entities -------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetImage:
    """One image of a dataset version (a manifest row)."""

    file: str
    sha256: str
    size: int
    width: int
    height: int
    format: str
    caption: str | None
    source: str = ""
    caption_source: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "size": self.size, "width": self.width,
                "height": self.height, "format": self.format, "caption": self.caption,
                "source": self.source, "caption_source": self.caption_source}

    @classmethod
    def from_dict(cls, row: dict) -> "DatasetImage":
        return cls(row["file"], row["sha256"], row["size"], row["width"], row["height"], row["format"],
                   row["caption"], row.get("source") or "", row.get("caption_source"))


@dataclass(frozen=True)
class DatasetVersion:
    id: int
    dataset: str
    version: str
    manifest_sha256: str
    training_sha256: str
    num_images: int
    total_bytes: int
    message: str
    created_at: datetime | None
    created_by: str
    deleted: bool
    report: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{PREFIX}{self.dataset}@{self.version}"

    @property
    def images(self) -> list[DatasetImage]:
        return [DatasetImage.from_dict(row) for row in self.manifest.get("images", [])]

    @property
    def warnings(self) -> list[str]:
        return list(self.report.get("warnings") or [])

    def to_dict(self, *, full: bool = False) -> dict[str, Any]:
        out = {"ref": self.ref, "dataset": self.dataset, "version": self.version,
               "manifest_sha256": self.manifest_sha256, "training_sha256": self.training_sha256,
               "num_images": self.num_images, "total_bytes": self.total_bytes, "message": self.message,
               "created_at": _iso(self.created_at), "created_by": self.created_by, "deleted": self.deleted,
               "warnings": self.warnings}
        if full:
            out["report"] = self.report
            out["manifest"] = self.manifest
        return out


@dataclass(frozen=True)
class DatasetSummary:
    name: str
    latest: str | None
    versions: int
    aliases: dict[str, str]
    num_images: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ref": f"{PREFIX}{self.name}", "latest": self.latest,
                "versions": self.versions, "aliases": self.aliases, "num_images": self.num_images}


@dataclass(frozen=True)
class DatasetAliasEvent:
    dataset: str
    alias: str
    action: str
    from_version: str | None
    to_version: str | None
    at: datetime | None
    by: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "alias": self.alias, "action": self.action,
                "from_version": self.from_version, "to_version": self.to_version, "at": _iso(self.at),
                "by": self.by, "reason": self.reason}


def _entity(row: DatasetVersionRow, name: str, *, full: bool = True) -> DatasetVersion:
    return DatasetVersion(row.id, name, row.version, row.manifest_sha256, row.training_sha256, row.num_images,
                          row.total_bytes, row.message, row.created_at, row.created_by,
                          row.deleted_at is not None, dict(row.report or {}),
                          dict(row.manifest or {}) if full else {})


# --- refs -----------------------------------------------------------------------------------

def is_dataset_ref(text: Any) -> bool:
    return isinstance(text, str) and text.strip().startswith(PREFIX)


def parse_dataset_ref(text: str) -> Ref:
    """``dataset:NAME[@VERSION|@ALIAS]`` (prefix optional) → ``Ref``; hash refs are for adapters."""
    body = (text or "").strip()
    body = body[len(PREFIX):] if body.startswith(PREFIX) else body
    ref = parse_ref(body) if body else None
    if ref is None or ref.is_hash:
        raise InvalidRef(f"{text!r} is not a dataset ref",
                         hint="use dataset:NAME, dataset:NAME@X.Y.Z or dataset:NAME@ALIAS")
    return ref


def _dataset_row(s: Session, name: str, *, lock: bool = False) -> DatasetRow:
    q = select(DatasetRow).where(DatasetRow.name == name)
    row = s.scalar(q.with_for_update() if lock else q)
    if row is None:
        raise NotFound(f"no dataset named {name!r}", hint="see `loradex dataset list`")
    return row


def resolve_dataset_in(s: Session, ref: Ref) -> tuple[DatasetRow, DatasetVersionRow]:
    dataset = _dataset_row(s, ref.name)
    live = (DatasetVersionRow.dataset_id == dataset.id) & DatasetVersionRow.deleted_at.is_(None)
    if ref.selector == LATEST:
        row = s.scalar(select(DatasetVersionRow).where(live).order_by(DatasetVersionRow.sort_key.desc()).limit(1))
        if row is None:
            raise NotFound(f"dataset {dataset.name} has no versions left", hint="add one with `loradex dataset add`")
        return dataset, row
    if ref.is_version:
        row = s.scalar(select(DatasetVersionRow).where(DatasetVersionRow.dataset_id == dataset.id,
                                                       DatasetVersionRow.version == ref.selector))
        if row is None:
            raise NotFound(f"dataset {dataset.name} has no version {ref.selector}",
                           hint=f"see `loradex dataset versions {dataset.name}`")
        if row.deleted_at is not None:
            raise NotFound(f"{PREFIX}{dataset.name}@{ref.selector} was removed")
        return dataset, row
    alias = s.scalar(select(DatasetAliasRow).where(DatasetAliasRow.dataset_id == dataset.id,
                                                   DatasetAliasRow.name == ref.selector))
    if alias is None:
        raise NotFound(f"dataset {dataset.name} has no alias {ref.selector!r}",
                       hint=f"see `loradex dataset show {dataset.name}`")
    return dataset, s.get(DatasetVersionRow, alias.version_id)


# --- the manifest ---------------------------------------------------------------------------

def _manifest_schema() -> dict:
    from loradex.schemas import load_schema

    return load_schema("dataset_manifest")


def check_manifest(manifest: Any, source: str) -> dict:
    """A manifest from anywhere (the database, a pulled file, a caller) checked before use:
    shape caps, the schema, and every file name (see the module docstring)."""
    check_shape(manifest, source)
    check_schema(manifest, _manifest_schema(), source)
    check_image_names([row["file"] for row in manifest["images"]], manifest["caption_ext"], source)
    return manifest


def check_image_names(files: list[str], caption_ext: str, source: str) -> None:
    """Every name a safe relative POSIX path with an image suffix and no hidden part (training
    skips those), unique case-insensitively together with the caption files beside them, and
    no name also used as a folder of another: an export then writes each file exactly once,
    inside its folder, on any file system."""
    taken: dict[str, str] = {}
    folders: set[str] = set()
    for file in files:
        safe_relative_name(file, source, field="image file name", allow_dirs=True)
        path = PurePosixPath(file)
        if any(part.startswith(".") for part in path.parts):
            raise UntrustedData(source, f"image file name {file!r} has a hidden (dot) part")
        if path.suffix.lower() not in IMAGE_EXTS:
            raise UntrustedData(source, f"image file name {file!r} does not end in an image suffix "
                                        f"({', '.join(IMAGE_EXTS)})")
        for name in (file, path.with_suffix(caption_ext).as_posix()):
            key = name.casefold()
            if key in taken:
                raise UntrustedData(source, f"{name!r} and {taken[key]!r} would be the same file "
                                            f"(image and caption names must be unique, ignoring case)")
            taken[key] = name
        folders |= {p.as_posix().casefold() for p in path.parents if p.as_posix() != "."}
    clash = sorted(folders & set(taken))
    if clash:
        raise UntrustedData(source, f"{taken[clash[0]]!r} is both a file and a folder of another image")


def training_manifest(manifest: dict) -> dict:
    """What the trainer's check of the exported folder hashes (``DatasetReport.manifest``)."""
    rows = [{"file": r["file"], "sha256": r["sha256"], "size": r["size"], "width": r["width"],
             "height": r["height"], "caption": r["caption"]} for r in manifest["images"]]
    return {"schema": MANIFEST_SCHEMA, "caption_ext": manifest["caption_ext"],
            "images": sorted(rows, key=lambda r: r["file"])}


def _build_manifest(report: DatasetReport, sources: dict[str, str], caption_sources: dict[str, dict | None]) -> dict:
    images = [{"file": e.file, "sha256": e.sha256, "size": e.size, "width": e.width, "height": e.height,
               "format": e.format, "caption": e.caption, "source": sources.get(e.file, e.file),
               "caption_source": caption_sources.get(e.file)}
              for e in sorted(report.images, key=lambda e: e.file)]
    return {"schema": MANIFEST_FORMAT, "caption_ext": report.caption_ext, "images": images}


# --- adding ---------------------------------------------------------------------------------

def add_dataset_version(catalog, folder_or_entries, *, name: str, version: str | None = None,
                        bump: str | None = None, message: str = "", captions: dict[str, str | None] | None = None,
                        caption_records: dict[str, dict] | None = None, caption_ext: str = ".txt",
                        resolution: int = 512, near_bits: int = NEAR_DUPLICATE_BITS, alias: str | None = None,
                        link: bool = False, user: str | None = None, progress=None) -> DatasetVersion:
    """Add a version of dataset ``name`` from a folder (images + sidecar captions) or from
    entries (``DatasetImage``s or manifest rows, e.g. ``dataset_entries`` of an earlier version
    with new captions: their images must already be blobs).

    ``captions``: file → caption (None: no caption), replacing what the folder or entries say;
    ``caption_records``: file → where that caption came from (``{"kind": "captioner", …}``),
    stored as the image's ``caption_source``. The ``dataset check`` runs over the images and is
    stored with the version; corrupt images are left out (named in a warning). Refused when
    this dataset already holds a live version with the same manifest."""
    check_dataset_name(name)
    if version is not None:
        parse_version(version)
        if bump:
            raise UsageError("give either --version or --bump, not both")
    if bump is not None and bump not in BUMPS:
        raise UsageError(f"--bump must be one of {', '.join(BUMPS)}")
    if alias is not None:
        check_alias(alias)
    captions = {k: (None if v is None else normal_caption(str(v))) for k, v in (captions or {}).items()}
    records = dict(caption_records or {})
    user = user or current_user()
    with catalog.blobs.writing():  # gc may not drop an image between "stored/read" and "row committed"
        if isinstance(folder_or_entries, (str, os.PathLike)):
            report, sources, caption_sources = _from_folder(catalog, Path(folder_or_entries), captions, records,
                                                            caption_ext, resolution, near_bits, link, progress)
        else:
            report, sources, caption_sources = _from_entries(catalog, list(folder_or_entries), captions, records,
                                                             caption_ext, resolution, near_bits, progress)
        if report.corrupt:
            names = ", ".join(f"{c['file']} ({c['error'][:80]})" for c in report.corrupt)
            report.warnings.insert(0, f"{len(report.corrupt)} corrupt or unreadable image(s) left out: {names}")
        if not report.images:
            raise UsageError(f"{report.folder}: no readable images ({', '.join(IMAGE_EXTS)})")
        manifest = check_manifest(_build_manifest(report, sources, caption_sources), report.folder)
        stored_report = report.to_dict()
        return catalog.transact(lambda s: _insert_version(s, name, version, bump, manifest, stored_report,
                                                          message, alias, user))


def check_dataset_name(name: str) -> str:
    try:
        return check_name(name)
    except InvalidName as exc:
        raise InvalidName(f"invalid dataset name {name!r}", hint=exc.hint) from None


def _from_folder(catalog, folder: Path, captions, records, caption_ext, resolution, near_bits, link, progress):
    if not folder.is_dir():
        raise UsageError(f"dataset folder {folder} does not exist or is not a folder")
    caption_ext = normal_caption_ext(caption_ext)
    files = image_files(folder)
    names = {p.relative_to(folder).as_posix(): p for p in files}
    _refuse_unknown(captions, records, names, str(folder))
    sidecar = {rel: read_caption(p, caption_ext) for rel, p in names.items()}
    captioned = folder_caption_sources(folder, sidecar, caption_ext)  # `dataset caption DIR`'s records, checked first

    def items():
        for rel, path in names.items():
            stored = catalog.blobs.add_file(path, link=link)  # hashed while copied; the check re-reads it
            with catalog.blobs.open(stored.hashes.sha256) as fh:
                data = fh.read()
            yield rel, data, captions.get(rel, sidecar[rel])

    report = check_items(items(), folder=str(folder), total=len(names), resolution=resolution,
                         caption_ext=caption_ext, near_bits=near_bits, progress=progress)
    caption_sources = {}
    for rel in names:
        if rel in records:
            caption_sources[rel] = records[rel]
        elif rel in captions:
            caption_sources[rel] = {"kind": "manual"} if captions[rel] is not None else None
        elif rel in captioned:
            caption_sources[rel] = captioned[rel]
        elif sidecar[rel] is not None:
            caption_sources[rel] = {"kind": "sidecar", "file": PurePosixPath(rel).with_suffix(caption_ext).as_posix()}
    return report, {rel: rel for rel in names}, caption_sources


def _from_entries(catalog, entries: list, captions, records, caption_ext, resolution, near_bits, progress):
    rows = [e.to_dict() if isinstance(e, DatasetImage) else dict(e) for e in entries]
    for row in rows:
        row.setdefault("source", row.get("file", ""))
        row.setdefault("caption_source", None)
    source = "dataset entries"
    check_manifest({"schema": MANIFEST_FORMAT, "caption_ext": normal_caption_ext(caption_ext), "images": rows}, source)
    by_file = {row["file"]: row for row in rows}
    _refuse_unknown(captions, records, by_file, source)

    def items():
        for row in rows:
            with catalog.blobs.open(row["sha256"]) as fh:
                data = fh.read()
            if hashlib.sha256(data).hexdigest() != row["sha256"]:
                raise Conflict(f"blob sha256:{row['sha256'][:12]} ({row['file']}) does not hash to its name",
                               hint="run `loradex verify`")
            yield row["file"], data, captions.get(row["file"], row["caption"])

    report = check_items(items(), folder=source, total=len(rows), resolution=resolution,
                         caption_ext=caption_ext, near_bits=near_bits, progress=progress)
    caption_sources = {}
    for file, row in by_file.items():
        if file in records:
            caption_sources[file] = records[file]
        elif file in captions:
            caption_sources[file] = {"kind": "manual"} if captions[file] is not None else None
        else:
            caption_sources[file] = row["caption_source"]
    return report, {f: row["source"] for f, row in by_file.items()}, caption_sources


def _refuse_unknown(captions: dict, records: dict, files, where: str) -> None:
    unknown = sorted((set(captions) | set(records)) - set(files))
    if unknown:
        raise UsageError(f"{where}: captions given for image(s) not in the dataset: {', '.join(unknown[:5])}"
                         + (" …" if len(unknown) > 5 else ""))


def _insert_version(s: Session, name: str, version: str | None, bump: str | None, manifest: dict,
                    report: dict, message: str, alias: str | None, user: str) -> DatasetVersion:
    dataset = s.scalar(select(DatasetRow).where(DatasetRow.name == name).with_for_update())
    if dataset is None:
        dataset = DatasetRow(name=name, description="", created_at=_now())
        s.add(dataset)
        s.flush()
    digest = manifest_sha256(manifest)
    same = s.scalar(select(DatasetVersionRow).where(DatasetVersionRow.dataset_id == dataset.id,
                                                    DatasetVersionRow.manifest_sha256 == digest,
                                                    DatasetVersionRow.deleted_at.is_(None)))
    if same is not None:
        raise AlreadyExists(f"this data is already {PREFIX}{name}@{same.version} (manifest sha256 {digest[:12]}…)")
    chosen = version or _next_version(s, dataset, bump)
    if s.scalar(select(DatasetVersionRow.id).where(DatasetVersionRow.dataset_id == dataset.id,
                                                   DatasetVersionRow.version == chosen)) is not None:
        if version is None:
            raise RetryTransaction(f"{name}@{chosen} was allocated concurrently")
        raise AlreadyExists(f"{PREFIX}{name}@{chosen} already exists; dataset versions are immutable",
                            hint="use --bump or another --version")
    row = DatasetVersionRow(dataset_id=dataset.id, version=chosen, sort_key=sort_key(chosen), manifest_sha256=digest,
                            training_sha256=manifest_sha256(training_manifest(manifest)), manifest=manifest,
                            report=report, num_images=len(manifest["images"]),
                            total_bytes=sum(r["size"] for r in manifest["images"]), message=message or "",
                            created_at=_now(), created_by=user)
    s.add(row)
    s.flush()
    if alias:
        _move_alias(s, dataset, row, alias, user, "set on add")
    return _entity(row, dataset.name)


def _next_version(s: Session, dataset: DatasetRow, bump: str | None) -> str:
    # from the highest version ever allocated, removed ones included: a number is never reused
    top = s.scalar(select(DatasetVersionRow.version).where(DatasetVersionRow.dataset_id == dataset.id)
                   .order_by(DatasetVersionRow.sort_key.desc()).limit(1))
    if top is None:
        return "1.0.0"
    current = parse_version(top)
    return str({"major": current.bump_major, "patch": current.bump_patch}.get(bump or "minor", current.bump_minor)())


# --- reads ----------------------------------------------------------------------------------

def get_dataset_version(catalog, ref: str) -> DatasetVersion:
    """The version ``ref`` names, its manifest checked (``check_manifest``) on the way out."""
    parsed = parse_dataset_ref(ref)

    def run(s: Session):
        dataset, row = resolve_dataset_in(s, parsed)
        return _entity(row, dataset.name)

    found = catalog.read(run)
    check_manifest(found.manifest, found.ref)
    return found


def dataset_entries(catalog, ref: str | DatasetVersion) -> list[DatasetImage]:
    """The images of a version (file, blob sha256, caption, facts), in file order."""
    found = ref if isinstance(ref, DatasetVersion) else get_dataset_version(catalog, ref)
    return found.images


def dataset_versions(catalog, name: str, *, include_deleted: bool = False) -> list[DatasetVersion]:
    parsed = parse_dataset_ref(name)

    def run(s: Session):
        dataset = _dataset_row(s, parsed.name)
        q = (select(DatasetVersionRow).options(defer(DatasetVersionRow.manifest))  # a listing needs no manifests
             .where(DatasetVersionRow.dataset_id == dataset.id))
        if not include_deleted:
            q = q.where(DatasetVersionRow.deleted_at.is_(None))
        return [_entity(r, dataset.name, full=False) for r in s.scalars(q.order_by(DatasetVersionRow.sort_key))]

    return catalog.read(run)


def dataset_aliases(catalog, name: str) -> dict[str, str]:
    parsed = parse_dataset_ref(name)

    def run(s: Session):
        dataset = _dataset_row(s, parsed.name)
        rows = s.execute(select(DatasetAliasRow.name, DatasetVersionRow.version)
                         .join(DatasetVersionRow, DatasetVersionRow.id == DatasetAliasRow.version_id)
                         .where(DatasetAliasRow.dataset_id == dataset.id).order_by(DatasetAliasRow.name)).all()
        return dict(rows)

    return catalog.read(run)


def list_datasets(catalog) -> list[DatasetSummary]:
    def run(s: Session):
        out = []
        aliases: dict[int, dict[str, str]] = {}
        for dataset_id, alias, version in s.execute(
                select(DatasetAliasRow.dataset_id, DatasetAliasRow.name, DatasetVersionRow.version)
                .join(DatasetVersionRow, DatasetVersionRow.id == DatasetAliasRow.version_id)):
            aliases.setdefault(dataset_id, {})[alias] = version
        counts = dict(s.execute(select(DatasetVersionRow.dataset_id, func.count(DatasetVersionRow.id))
                                .where(DatasetVersionRow.deleted_at.is_(None))
                                .group_by(DatasetVersionRow.dataset_id)).all())
        for dataset in s.scalars(select(DatasetRow).order_by(DatasetRow.name)):
            top = s.execute(select(DatasetVersionRow.version, DatasetVersionRow.num_images)
                            .where(DatasetVersionRow.dataset_id == dataset.id, DatasetVersionRow.deleted_at.is_(None))
                            .order_by(DatasetVersionRow.sort_key.desc()).limit(1)).first()
            out.append(DatasetSummary(dataset.name, top[0] if top else None, counts.get(dataset.id, 0),
                                      aliases.get(dataset.id, {}), top[1] if top else 0))
        return out

    return catalog.read(run)


def dataset_alias_history(catalog, name: str, alias: str) -> list[DatasetAliasEvent]:
    parsed = parse_dataset_ref(name)

    def run(s: Session):
        dataset = _dataset_row(s, parsed.name)
        events = s.scalars(select(DatasetAliasEventRow).where(DatasetAliasEventRow.dataset_id == dataset.id,
                                                              DatasetAliasEventRow.alias == alias)
                           .order_by(DatasetAliasEventRow.id)).all()
        ids = {e.from_version_id for e in events} | {e.to_version_id for e in events}
        names = dict(s.execute(select(DatasetVersionRow.id, DatasetVersionRow.version)
                               .where(DatasetVersionRow.id.in_({i for i in ids if i}))).all())
        return [DatasetAliasEvent(dataset.name, e.alias, e.action, names.get(e.from_version_id),
                                  names.get(e.to_version_id), e.at, e.by, e.reason) for e in events]

    return catalog.read(run)


# --- aliases and removal --------------------------------------------------------------------

def _move_alias(s: Session, dataset: DatasetRow, target: DatasetVersionRow, alias: str, user: str, reason: str) -> None:
    row = s.scalar(select(DatasetAliasRow).where(DatasetAliasRow.dataset_id == dataset.id,
                                                 DatasetAliasRow.name == alias).with_for_update())
    previous = row.version_id if row else None
    if row is None:
        s.add(DatasetAliasRow(dataset_id=dataset.id, name=alias, version_id=target.id))
    else:
        row.version_id = target.id
    s.add(DatasetAliasEventRow(dataset_id=dataset.id, alias=alias, action="set", from_version_id=previous,
                               to_version_id=target.id, at=_now(), by=user, reason=reason or ""))


def set_dataset_alias(catalog, ref: str, alias: str, *, reason: str = "", user: str | None = None) -> dict:
    """Point ALIAS of the dataset at the version ``ref`` names (creating it); recorded."""
    parsed = parse_dataset_ref(ref)
    check_alias(alias)

    def run(s: Session):
        dataset, target = resolve_dataset_in(s, parsed)
        _dataset_row(s, dataset.name, lock=True)  # serialise moves of this dataset's aliases
        _move_alias(s, dataset, target, alias, user or current_user(), reason)
        return {"dataset": dataset.name, "alias": alias, "version": target.version}

    return catalog.transact(run)


def remove_dataset_alias(catalog, name: str, alias: str, *, reason: str = "", user: str | None = None) -> None:
    parsed = parse_dataset_ref(name)

    def run(s: Session):
        dataset = _dataset_row(s, parsed.name, lock=True)
        row = s.scalar(select(DatasetAliasRow).where(DatasetAliasRow.dataset_id == dataset.id,
                                                     DatasetAliasRow.name == alias))
        if row is None:
            raise NotFound(f"dataset {dataset.name} has no alias {alias!r}")
        s.add(DatasetAliasEventRow(dataset_id=dataset.id, alias=alias, action="remove",
                                   from_version_id=row.version_id, to_version_id=None, at=_now(),
                                   by=user or current_user(), reason=reason or ""))
        s.delete(row)

    catalog.transact(run)


def remove_dataset_version(catalog, ref: str, *, force: bool = False, user: str | None = None) -> DatasetVersion:
    """Soft-delete a version (its row and history stay; ``gc`` may then free images no live
    version names). ``force`` also removes the aliases pointing at it, recording each."""
    parsed = parse_dataset_ref(ref)
    by = user or current_user()

    def run(s: Session):
        dataset, row = resolve_dataset_in(s, parsed)
        _dataset_row(s, dataset.name, lock=True)
        pointing = s.scalars(select(DatasetAliasRow).where(DatasetAliasRow.version_id == row.id)).all()
        if pointing and not force:
            names = ", ".join(a.name for a in pointing)
            raise Conflict(f"{PREFIX}{dataset.name}@{row.version} is the target of alias(es) {names}",
                           hint="move them first, or pass --force to remove them too")
        for alias in pointing:
            s.add(DatasetAliasEventRow(dataset_id=dataset.id, alias=alias.name, action="remove",
                                       from_version_id=row.id, to_version_id=None, at=_now(), by=by,
                                       reason=f"rm --force {PREFIX}{dataset.name}@{row.version}"))
            s.delete(alias)
        row.deleted_at = _now()
        row.deleted_by = by
        s.flush()
        return _entity(row, dataset.name, full=False)

    return catalog.transact(run)


# --- gc ---------------------------------------------------------------------------------------

@register_blob_referencer("dataset_images")
def _dataset_images(s: Session) -> set:
    """Every image a live dataset version names (a removed version's images go with gc)."""
    out: set = set()
    for manifest in s.scalars(select(DatasetVersionRow.manifest).where(DatasetVersionRow.deleted_at.is_(None))):
        out |= {row["sha256"] for row in (manifest or {}).get("images", ()) if isinstance(row, dict) and row.get("sha256")}
    return out


# --- diff and export ------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetDiff:
    a: str
    b: str
    added: list[DatasetImage]
    removed: list[DatasetImage]
    recaptioned: list[tuple[DatasetImage, DatasetImage]]  # (in a, in b): same image, another caption
    renamed: list[tuple[DatasetImage, DatasetImage]]      # same image, another file name

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b,
                "added": [i.to_dict() for i in self.added], "removed": [i.to_dict() for i in self.removed],
                "recaptioned": [{"sha256": x.sha256, "file": y.file, "before": x.caption, "after": y.caption}
                                for x, y in self.recaptioned],
                "renamed": [{"sha256": x.sha256, "before": x.file, "after": y.file} for x, y in self.renamed]}


def diff_datasets(catalog, a: str, b: str) -> DatasetDiff:
    """Images are matched by content (blob sha256): added, removed, re-captioned, renamed."""
    va, vb = get_dataset_version(catalog, a), get_dataset_version(catalog, b)

    def by_sha(images: list[DatasetImage]) -> dict[str, DatasetImage]:
        out: dict[str, DatasetImage] = {}
        for image in images:
            out.setdefault(image.sha256, image)  # an exact duplicate counts once
        return out

    ia, ib = by_sha(va.images), by_sha(vb.images)
    added = [ib[k] for k in sorted(ib.keys() - ia.keys(), key=lambda k: ib[k].file)]
    removed = [ia[k] for k in sorted(ia.keys() - ib.keys(), key=lambda k: ia[k].file)]
    both = sorted(ia.keys() & ib.keys(), key=lambda k: ib[k].file)
    recaptioned = [(ia[k], ib[k]) for k in both if ia[k].caption != ib[k].caption]
    renamed = [(ia[k], ib[k]) for k in both if ia[k].file != ib[k].file]
    return DatasetDiff(va.ref, vb.ref, added, removed, recaptioned, renamed)


@dataclass(frozen=True)
class ExportResult:
    ref: str
    folder: str
    images: int
    captions: int
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def export_dataset(catalog, ref: str | DatasetVersion, dest: str | os.PathLike) -> ExportResult:
    """Write the version as a kohya/diffusers training folder: each image under its manifest
    name (bytes identical to the blob, checked while copied) and its caption beside it
    (``name`` + caption suffix). ``dest`` must not exist or be empty; the folder is written
    under a temporary name beside it and renamed into place at the end."""
    found = ref if isinstance(ref, DatasetVersion) else get_dataset_version(catalog, ref)
    manifest = check_manifest(found.manifest, found.ref)
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"{dest} exists and is not an empty folder", hint="give a new or empty folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tmp-loradex-export-", dir=dest.parent))
    try:
        written = _write_folder(catalog, manifest, work, found.ref)
        if dest.exists():
            dest.rmdir()
        os.replace(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return ExportResult(found.ref, str(dest), *written)


def _write_folder(catalog, manifest: dict, root: Path, ref: str) -> tuple[int, int, int]:
    images = captions = total = 0
    for row in manifest["images"]:
        target = root.joinpath(*PurePosixPath(row["file"]).parts)
        inside(target, root)  # names were checked; this is the last guard before writing
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with catalog.blobs.open(row["sha256"]) as src, open(target, "xb") as out:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != row["sha256"]:
            raise InvalidFile(target, f"the stored image of {ref} does not match its sha256 (damaged blob)",
                              hint="run `loradex verify`")
        images += 1
        total += row["size"]
        if row["caption"] is not None:
            with open(target.with_suffix(manifest["caption_ext"]), "x", encoding="utf-8") as fh:
                fh.write(row["caption"])
            captions += 1
    return images, captions, total


# --- what trained a version -----------------------------------------------------------------

def trained_on(catalog, version_ref: str) -> list[dict[str, Any]]:
    """The dataset versions ``version_ref`` was trained from (its ``trained_from`` edges to
    ``dataset:…``): ``{"ref", "manifest_sha256", "version": DatasetVersion | None, "note"}``;
    ``version`` is None (with a note) when that dataset version was removed."""
    out = []
    child = catalog.resolve(version_ref).ref
    for edge in catalog.lineage(child):
        if edge.relation != "trained_from" or edge.child != child or not is_dataset_ref(edge.parent):
            continue
        recipe = (edge.recipe or {}).get("dataset") or {}
        entry = {"ref": edge.parent, "manifest_sha256": recipe.get("dataset_manifest_sha256"),
                 "version": None, "note": ""}
        try:
            entry["version"] = get_dataset_version(catalog, edge.parent)
        except (NotFound, UntrustedData) as exc:
            entry["note"] = str(exc)
        out.append(entry)
    return out


def trained_versions(catalog, ref: str | DatasetVersion) -> list[str]:
    """The adapter versions (``NAME@X.Y.Z``, live ones) trained from this dataset version."""
    from .db_schema import AdapterRow, LineageRow, VersionRow

    found = ref if isinstance(ref, DatasetVersion) else get_dataset_version(catalog, ref)

    def run(s: Session):
        rows = s.execute(select(AdapterRow.name, VersionRow.version)
                         .join(VersionRow, VersionRow.adapter_id == AdapterRow.id)
                         .join(LineageRow, LineageRow.child_version_id == VersionRow.id)
                         .where(LineageRow.parent_ref == found.ref, LineageRow.relation == "trained_from",
                                VersionRow.deleted_at.is_(None))
                         .order_by(AdapterRow.name, VersionRow.sort_key)).all()
        return [f"{name}@{version}" for name, version in rows]

    return catalog.read(run)
