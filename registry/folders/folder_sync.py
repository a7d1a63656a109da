"""``loradex sync-folder DIR --layout a1111|comfyui --alias production``: keep a webui folder
holding, for every adapter, the version its alias points at.

The manifest ``DIR/.loradex-sync.json`` records the files loradex manages (relative path →
sha256, plus size and mtime to skip re-hashing untouched files). A sync:

- writes missing files and replaces managed files whose target changed (alias moved or rolled
  back), each atomically (temp file + rename: a webui never sees half a file);
- removes managed files no alias needs any more;
- never touches a file it does not manage (one in the way of a target is reported; one with
  exactly the target's bytes is adopted, which is how a sync interrupted before saving its
  manifest recovers);
- leaves a managed file changed by hand alone and reports it, unless ``force``.

Model files are written in a format the webui loads, converted on the way when stored in
another one (``webui_export.webui_format``; ``format`` overrides it, ``as-is`` copies); an
adapter whose file cannot be converted is refused (one line, ``refused``), nothing of it copied
and its files from earlier syncs left as they are.

The manifest sits in a folder others can edit, so it is read as data from outside
(``folder_state``): names must stay inside the folder, and a file is replaced or removed only
when its content, re-hashed right before, still has the sha256 loradex recorded (size and mtime
only ever skip work). Entries without a hash are never removed (``kept-unverified``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LoradexError, NotFound, UsageError
from .folder_state import (
    checked_path,
    content_sha,
    entry_for,
    file_state,
    folder_errors,
    folder_lock,
    quick_unchanged,
    read_state,
    write_state,
)
from ..untrusted import inside
from .sidecar_formats import DEFAULT_WRITE
from .webui_export import (
    Converter,
    PlannedFile,
    converted_files,
    get_layout,
    plan_export,
    replan_sidecars,
    webui_format,
)

MANIFEST = ".loradex-sync.json"


@dataclass
class SyncAction:
    path: str
    action: str  # added | updated | unchanged | removed | adopted | kept-modified | kept-unverified
    # | blocked-unmanaged | blocked-outside | refused
    ref: str | None = None
    reason: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class SyncReport:
    root: str
    layout: str
    alias: str
    actions: list[SyncAction] = field(default_factory=list)
    bytes_written: int = 0
    warnings: list[str] = field(default_factory=list)  # one line each: what was left alone and why

    def add(self, action: SyncAction) -> None:
        """An action that leaves a file alone: also a warning line."""
        self.actions.append(action)
        self.warnings.append(f"{action.path}: {action.action}: {action.reason}")

    def count(self, action: str) -> int:
        return sum(a.action == action for a in self.actions)

    def changed(self) -> list[SyncAction]:
        return [a for a in self.actions if a.action != "unchanged"]

    def to_dict(self) -> dict:
        counts: dict[str, int] = {}
        for a in self.actions:
            counts[a.action] = counts.get(a.action, 0) + 1
        return {"root": self.root, "layout": self.layout, "alias": self.alias, "counts": counts,
                "bytes_written": self.bytes_written, "warnings": self.warnings, "actions": [a.to_dict() for a in self.actions]}


# --- manifest ---------------------------------------------------------------------------------------
def read_manifest(root: Path, warnings: list[str] | None = None) -> dict[str, dict]:
    """The validated manifest entries (see ``folder_state.read_state``)."""
    return read_state(Path(root), MANIFEST, warnings)


# --- the sync -------------------------------------------------------------------------------------------
@dataclass
class _Wanted:
    files: dict[str, tuple[PlannedFile, str]] = field(default_factory=dict)  # rel → (planned, ref)
    kept: set[str] = field(default_factory=set)  # files of refused adapters: left as they are


def desired_files(catalog, layout: str, alias: str, *, to_format: str | None = None,
                  converter: Converter | None = None, workdir: Path | None = None,
                  report: "SyncReport | None" = None, sidecars: tuple[str, ...] = DEFAULT_WRITE,
                  root: Path | None = None) -> _Wanted:
    """What the folder should hold: relative path → (planned file, ref) for every adapter that has
    ``alias``, model files the webui would not load converted into ``workdir``; the files of an
    adapter refused (and reported in ``report``) are ``kept`` as they are."""
    layout_obj = get_layout(layout)
    wanted = _Wanted()
    for n, summary in enumerate(catalog.list_adapters()):
        if alias not in summary.aliases:
            continue
        try:
            version = catalog.resolve(f"{summary.name}@{alias}")
        except NotFound:
            continue
        plan = plan_export(catalog, version, layout_obj, sidecars=sidecars, root=root)
        try:
            models = _model_files(catalog, version, layout_obj, plan[0], to_format, converter,
                                  None if workdir is None else workdir / str(n))
            if models[0] is not plan[0]:  # converted: the sidecars describe the file written
                plan[1:] = replan_sidecars(catalog, version, layout_obj, plan[1:], models[0], root)
            plan[:1] = models
        except LoradexError as exc:  # this adapter is refused; the others still sync
            wanted.kept.update(p.rel for p in plan)
            if report is not None:
                report.add(SyncAction(plan[0].rel, "refused", version.ref, str(exc).splitlines()[0]))
            continue
        for planned in plan:
            wanted.files[planned.rel] = (planned, version.ref)
    return wanted


def _model_files(catalog, version, layout, model: PlannedFile, to_format: str | None,
                 converter: Converter | None, workdir: Path | None) -> list[PlannedFile]:
    """The model file as planned, or the files its conversion to the webui's format writes."""
    target = webui_format(catalog, version, layout, to_format)
    if target is None:
        return [model]
    if workdir is None:
        raise UsageError(f"{version.ref} must be converted to {target} for a webui; no folder to convert in")
    return converted_files(catalog, version, layout, model, target, converter, workdir)[0]


def sync_folder(catalog, root, *, layout: str = "a1111", alias: str = "production",
                force: bool = False, dry_run: bool = False, to_format: str | None = None,
                converter: Converter | None = None, sidecars: tuple[str, ...] = DEFAULT_WRITE) -> SyncReport:
    """Make ``root`` hold the ``alias`` version of every adapter; see the module docstring.
    ``to_format``: the model files' format (``as-is``: as stored; None: one the layout loads),
    converted with ``converter`` (``merge.conventions.file_conversion.convert_path``); ``sidecars``:
    the sidecar formats written beside each model (``sidecar_formats``; a format dropped from the
    list has its earlier files removed like any file no longer wanted)."""
    get_layout(layout)
    root = Path(root).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} is not a folder")
    report = SyncReport(str(root), layout, alias)
    with folder_errors(root):
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="loradex-sync-") as work:
            _sync_locked(catalog, root, report, layout, alias, force=force, dry_run=dry_run,
                         to_format=to_format, converter=converter, workdir=Path(work), sidecars=sidecars)
    return report


def _sync_locked(catalog, root: Path, report: SyncReport, layout: str, alias: str, *, force: bool,
                 dry_run: bool, to_format: str | None, converter: Converter | None, workdir: Path,
                 sidecars: tuple[str, ...] = DEFAULT_WRITE) -> None:
    with folder_lock(root):
        manifest = read_manifest(root, report.warnings)
        wanted = desired_files(catalog, layout, alias, to_format=to_format, converter=converter,
                               workdir=workdir, report=report, sidecars=sidecars, root=root)
        new_manifest: dict[str, dict] = {}
        for rel, (planned, ref) in sorted(wanted.files.items()):
            _sync_one(catalog, root, rel, planned, ref, manifest.get(rel), new_manifest, report,
                      force=force, dry_run=dry_run)
        for rel in sorted(set(manifest) - set(wanted.files)):
            if rel in wanted.kept:  # a refused adapter's earlier files: neither replaced nor removed
                new_manifest[rel] = manifest[rel]
                continue
            _remove_one(root, rel, manifest[rel], new_manifest, report, force=force, dry_run=dry_run)
        if not dry_run:
            write_state(root, MANIFEST, new_manifest, layout=layout, alias=alias)


def _sync_one(catalog, root: Path, rel: str, planned: PlannedFile, ref: str, entry: dict | None,
              new_manifest: dict, report: SyncReport, *, force: bool, dry_run: bool) -> None:
    path = checked_path(root, rel)
    if path is None:  # a symlinked subfolder leading out of the folder, or a name that is not safe
        report.add(SyncAction(rel, "blocked-outside", ref, "the path leads outside the folder; nothing written"))
        return

    def write(action: str, reason: str = "") -> None:
        report.actions.append(SyncAction(rel, action, ref, reason))
        if dry_run:
            if entry is not None:
                new_manifest[rel] = entry
            return
        planned.write(catalog, root)
        report.bytes_written += path.stat().st_size
        new_manifest[rel] = entry_for(path, planned.sha256, ref)

    state = file_state(path)
    if state == "missing":
        write("added", "re-created (was deleted by hand)" if entry else "")
        return
    if state != "regular":
        report.add(SyncAction(rel, "blocked-unmanaged", ref,
                              "a symlink or special file is in the way; move or rename it"))
        return
    if entry is not None and entry.get("sha256") == planned.sha256 and quick_unchanged(path, entry):
        report.actions.append(SyncAction(rel, "unchanged", ref))
        new_manifest[rel] = entry
        return
    on_disk = content_sha(path)
    if entry is None or not entry.get("sha256"):
        if on_disk == planned.sha256:
            report.actions.append(SyncAction(rel, "adopted", ref, "same bytes as the target"))
            new_manifest[rel] = entry_for(path, on_disk, ref)
        else:
            # Not ours: never touched, not even with --force.
            report.add(SyncAction(rel, "blocked-unmanaged", ref,
                                  "a file loradex did not write is in the way; move or rename it"))
        return
    if on_disk != entry["sha256"] and not force:
        report.add(SyncAction(rel, "kept-modified", ref,
                              "changed by hand since the last sync; --force replaces it"))
        new_manifest[rel] = entry  # still ours; the next sync reports it again
        return
    if on_disk == planned.sha256:
        report.actions.append(SyncAction(rel, "unchanged", ref))
        new_manifest[rel] = entry_for(path, on_disk, ref)
        return
    reason = "replaced a hand-made change (--force)" if on_disk != entry["sha256"] else \
        f"{entry.get('ref') or 'previous'} → {ref}"
    write("updated", reason)


def _remove_one(root: Path, rel: str, entry: dict, new_manifest: dict, report: SyncReport, *,
                force: bool, dry_run: bool) -> None:
    path = checked_path(root, rel)
    if path is None:  # e.g. replaced by a symlink leading out: never followed
        report.add(SyncAction(rel, "blocked-outside", entry.get("ref"),
                              "the path leads outside the folder now; left alone"))
        return
    if file_state(path) == "missing":
        return  # already gone: drop it from the manifest
    if not entry.get("sha256"):
        report.add(SyncAction(rel, "kept-unverified", entry.get("ref"),
                              "the manifest records no hash for it, so it is not removed; "
                              "delete it by hand if it is not needed"))
        return
    if file_state(path) != "regular" or (content_sha(path) != entry["sha256"] and not force):
        report.add(SyncAction(rel, "kept-modified", entry.get("ref"),
                              "no longer wanted but changed by hand; --force removes it"))
        new_manifest[rel] = entry
        return
    report.actions.append(SyncAction(rel, "removed", entry.get("ref"), "no adapter has the alias now"))
    if dry_run:
        new_manifest[rel] = entry
        return
    inside(path, root)  # checked again right before the delete
    path.unlink()
