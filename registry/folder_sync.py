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
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .atomic_files import atomic_output
from .errors import InvalidFile, NotFound, UsageError
from .hashing import hash_file
from .webui_export import PlannedFile, get_layout, plan_export

MANIFEST = ".loradex-sync.json"
LOCK = ".loradex-sync.lock"
MANIFEST_FORMAT = 1


@dataclass
class SyncAction:
    path: str
    action: str  # added | updated | unchanged | removed | adopted | kept-modified | blocked-unmanaged
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

    def count(self, action: str) -> int:
        return sum(a.action == action for a in self.actions)

    def changed(self) -> list[SyncAction]:
        return [a for a in self.actions if a.action != "unchanged"]

    def to_dict(self) -> dict:
        counts: dict[str, int] = {}
        for a in self.actions:
            counts[a.action] = counts.get(a.action, 0) + 1
        return {"root": self.root, "layout": self.layout, "alias": self.alias, "counts": counts,
                "bytes_written": self.bytes_written, "actions": [a.to_dict() for a in self.actions]}


# --- manifest ---------------------------------------------------------------------------------------
def read_manifest(root: Path) -> dict[str, dict]:
    path = root / MANIFEST
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        files = data["files"]
        if not isinstance(files, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidFile(path, f"is not a loradex sync manifest ({exc.__class__.__name__})",
                          hint="restore it, or move it away to let sync-folder start over "
                               "(files it managed then count as unmanaged)") from None
    return {rel: dict(entry) for rel, entry in files.items()}


def _write_manifest(root: Path, layout: str, alias: str, files: dict[str, dict]) -> None:
    body = {"format": MANIFEST_FORMAT, "tool": "loradex", "layout": layout, "alias": alias,
            "files": dict(sorted(files.items()))}
    with atomic_output(root / MANIFEST, "w") as fh:
        fh.write(json.dumps(body, indent=2) + "\n")


@contextlib.contextmanager
def _folder_lock(root: Path) -> Iterator[None]:
    """Two syncs of one folder at once would fight over the manifest: serialise them."""
    import fcntl

    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _disk_sha(path: Path, entry: dict | None) -> str:
    """sha256 of the file on disk; trusted from the manifest while size and mtime are unchanged."""
    st = path.stat()
    if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
        return entry["sha256"]
    return hash_file(path).sha256


def _entry(path: Path, sha256: str, ref: str) -> dict:
    st = path.stat()
    return {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ref": ref}


# --- the sync -------------------------------------------------------------------------------------------
def desired_files(catalog, layout: str, alias: str) -> dict[str, tuple[PlannedFile, str]]:
    """Relative path → (planned file, ref) for every adapter that has ``alias``."""
    wanted: dict[str, tuple[PlannedFile, str]] = {}
    for summary in catalog.list_adapters():
        if alias not in summary.aliases:
            continue
        try:
            version = catalog.resolve(f"{summary.name}@{alias}")
        except NotFound:
            continue
        for planned in plan_export(catalog, version, layout):
            wanted[planned.rel] = (planned, version.ref)
    return wanted


def sync_folder(catalog, root, *, layout: str = "a1111", alias: str = "production",
                force: bool = False, dry_run: bool = False) -> SyncReport:
    """Make ``root`` hold the ``alias`` version of every adapter; see the module docstring."""
    get_layout(layout)
    root = Path(root).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} is not a folder")
    root.mkdir(parents=True, exist_ok=True)
    report = SyncReport(str(root), layout, alias)
    with _folder_lock(root):
        manifest = read_manifest(root)
        wanted = desired_files(catalog, layout, alias)
        new_manifest: dict[str, dict] = {}
        for rel, (planned, ref) in sorted(wanted.items()):
            _sync_one(catalog, root, rel, planned, ref, manifest.get(rel), new_manifest, report,
                      force=force, dry_run=dry_run)
        for rel in sorted(set(manifest) - set(wanted)):
            _remove_one(root, rel, manifest[rel], new_manifest, report, force=force, dry_run=dry_run)
        if not dry_run:
            _write_manifest(root, layout, alias, new_manifest)
    return report


def _sync_one(catalog, root: Path, rel: str, planned: PlannedFile, ref: str, entry: dict | None,
              new_manifest: dict, report: SyncReport, *, force: bool, dry_run: bool) -> None:
    path = root / rel

    def write(action: str, reason: str = "") -> None:
        report.actions.append(SyncAction(rel, action, ref, reason))
        if dry_run:
            if entry is not None:
                new_manifest[rel] = entry
            return
        planned.write(catalog, root)
        report.bytes_written += path.stat().st_size
        new_manifest[rel] = _entry(path, planned.sha256, ref)

    if not path.exists():
        write("added", "re-created (was deleted by hand)" if entry else "")
        return
    on_disk = _disk_sha(path, entry)
    if entry is None:
        if on_disk == planned.sha256:
            report.actions.append(SyncAction(rel, "adopted", ref, "same bytes as the target"))
            new_manifest[rel] = _entry(path, on_disk, ref)
        else:
            # Not ours: never touched, not even with --force.
            report.actions.append(SyncAction(rel, "blocked-unmanaged", ref,
                                             "an unmanaged file is in the way; move or rename it"))
        return
    if on_disk != entry["sha256"] and not force:
        report.actions.append(SyncAction(rel, "kept-modified", ref,
                                         "changed by hand since the last sync; --force replaces it"))
        new_manifest[rel] = entry  # still ours; the next sync reports it again
        return
    if on_disk == planned.sha256:
        report.actions.append(SyncAction(rel, "unchanged", ref))
        new_manifest[rel] = _entry(path, on_disk, ref) if on_disk != entry["sha256"] else entry
        return
    reason = "replaced a hand-made change (--force)" if on_disk != entry["sha256"] else \
        f"{entry.get('ref') or 'previous'} → {ref}"
    write("updated", reason)


def _remove_one(root: Path, rel: str, entry: dict, new_manifest: dict, report: SyncReport, *,
                force: bool, dry_run: bool) -> None:
    path = root / rel
    if not path.exists():
        return  # already gone; drop it from the manifest
    if _disk_sha(path, entry) != entry["sha256"] and not force:
        report.actions.append(SyncAction(rel, "kept-modified", entry.get("ref"),
                                         "no longer wanted but changed by hand; --force removes it"))
        new_manifest[rel] = entry
        return
    report.actions.append(SyncAction(rel, "removed", entry.get("ref"), "no adapter has the alias now"))
    if dry_run:
        new_manifest[rel] = entry
        return
    path.unlink()
