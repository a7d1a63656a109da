"""``loradex import DIR``: register every adapter in an A1111 / ComfyUI / InvokeAI models tree.

Each model file is probed (header only), then stored and hashed in one read pass, then registered
together with what its webui sidecars say:

| sidecar                        | written by                 | lands in                                  |
|--------------------------------|----------------------------|-------------------------------------------|
| ``<stem>.civitai.info``        | Civitai Helper (version JSON) | ``extra["civitai"]``, trigger words, base, description |
| ``<stem>.json``                | A1111 user metadata        | ``extra["webui"]``, trigger words (activation text) |
| ``<stem>.metadata.json``       | ComfyUI LoRA Manager       | ``extra["lora_manager"]``, its ``civitai`` info as above |
| ``<stem>.cm-info.json``        | Stability Matrix           | ``extra["stability_matrix"]``, Civitai ids, trigger words, base |
| ``<stem>.preview.png``/``.png``| A1111 / Civitai Helper     | a blob; ``extra["preview_sha256"]``       |

(one class per tool in ``sidecar_formats``). A Civitai version a sidecar names whose SHA256 is the
file's own becomes a ``pulled_from civitai:VERSION`` lineage edge; the family's variant its base
label names (``Illustrious``) is kept in the probe result when the header names none.

Re-running is cheap: every file seen is remembered in ``FileCacheRow`` keyed on (path, size,
mtime_ns, inode) with its sha256 and outcome, so an unchanged file is neither opened nor hashed
again. A file whose content is already in the catalog is skipped as a duplicate (naming the
existing ref); a file that cannot be registered (pickle without ``allow_pickle``, Git LFS pointer,
HTML page…) is refused with the reason.

Nothing in the tree is trusted: a file that cannot be read safely (a FIFO — never opened —, a
symlink loop, a dangling symlink, an over-long name) and a sidecar that is unreadable, over its
size cap (1 MiB of JSON, 16 MiB of preview) or not of its declared shape (JSON read through
``untrusted.parse_json`` and checked against its format's schema in ``sidecar_formats``)
is reported as ``skipped`` with the reason, and the import goes on.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sqlalchemy import select

from ..catalog.adding import default_name
from ..catalog.db_schema import AdapterRow, FileCacheRow, VersionRow
from ..errors import AlreadyExists, LoradexError, UnsafePickle, UntrustedData, UsageError
from ..catalog.operations import AddVersion, LinkLineage
from ..catalog.refs import NAME_RE
from .sidecar_formats import (  # noqa: F401  (the schemas and civitai_extra are imported from here too)
    A1111_SIDECAR_SCHEMA,
    CIVITAI_SIDECAR_SCHEMA,
    SIDECAR_FORMATS,
    SidecarClaims,
    SidecarFormat,
    civitai_extra,
)

MODEL_SUFFIXES = frozenset({".safetensors", ".pt", ".bin", ".ckpt", ".pth"})
# Folder names (lower-case) that hold adapters in the webuis' trees, and what they usually hold.
CATEGORY_FOLDERS = {
    "lora": "lora", "loras": "lora", "lycoris": "lora", "locon": "lora",  # A1111, ComfyUI, InvokeAI
    "embeddings": "embedding", "embedding": "embedding", "textual_inversion": "embedding",
    "stable-diffusion": "checkpoint", "checkpoints": "checkpoint", "main": "checkpoint",
}
_SKIP_DIRS = frozenset({"__pycache__", "node_modules", "venv", ".venv", ".git"})
PREVIEW_SUFFIXES = (".preview.png", ".png", ".preview.jpg", ".jpg", ".preview.jpeg", ".jpeg",
                    ".preview.webp", ".webp")
MAX_NAME_BYTES = 200  # a model file name (adapter names are capped at 200; sidecar names must fit 255)
MAX_PATH_BYTES = 4000  # below PATH_MAX
MAX_JSON_SIDECAR = 1 << 20  # a .civitai.info / .json sidecar over this is not read, nor stored
MAX_PREVIEW = 16 << 20  # a preview image over this is not stored
_IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg", b"RIFF": "webp"}

def base_from_label(label) -> str:
    """``"SD 1.5"`` → ``sd1``, ``"SDXL 1.0"``/``"Pony"`` → ``sdxl``, ``"Flux.1 D"`` → ``flux``, A1111's
    ``"SDXL"`` → ``sdxl`` (Civitai ``baseModel`` or A1111 ``sd version``, read by the families'
    vocabulary); ``unknown`` when no family is named."""
    from loradex.families.vocabulary import normalise

    text = str(label or "")
    found = normalise(text, "civitai") or normalise(text, "a1111")
    return found[0] if found else "unknown"


# --- what an import reports -------------------------------------------------------------------
@dataclass
class ImportItem:
    path: str  # relative to the imported folder
    status: str  # added | duplicate | refused | unchanged | skipped (not read: see reason)
    ref: str | None = None  # the new ref (added), the existing one (duplicate, unchanged)
    reason: str = ""  # why refused; notes otherwise
    kind: str | None = None
    cached: bool = False  # outcome taken from the file cache (file not opened)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ImportStats:
    model_files: int = 0
    cache_hits: int = 0
    files_read: int = 0
    bytes_hashed: int = 0  # bytes of model files read to hash/store them (0 on an unchanged tree)
    bytes_stored: int = 0  # new bytes written to the blob store
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ImportReport:
    root: str
    items: list[ImportItem] = field(default_factory=list)
    stats: ImportStats = field(default_factory=ImportStats)

    def by_status(self, status: str) -> list[ImportItem]:
        return [i for i in self.items if i.status == status]

    def counts(self) -> dict[str, int]:
        """Per status; ``skipped`` (files and sidecars not read) only when there are any."""
        counts = Counter(i.status for i in self.items)
        out = {s: counts.get(s, 0) for s in ("added", "duplicate", "refused", "unchanged")}
        if counts.get("skipped"):
            out["skipped"] = counts["skipped"]
        return out

    def to_dict(self) -> dict:
        return {"root": self.root, "counts": self.counts(), "stats": self.stats.to_dict(),
                "items": [i.to_dict() for i in self.items]}


# --- walking the tree ---------------------------------------------------------------------------
@dataclass
class _Found:
    path: Path
    rel: str
    folders: tuple[str, ...]  # parent folders relative to the root, outermost first
    category: str | None
    stat: os.stat_result | None = None
    probe: dict | None = None
    name: str | None = None
    previous: dict | None = None  # the cache row's outcome when the file changed since
    problem: str | None = None  # why it is skipped unread (a FIFO, a dangling symlink, …)
    skipped_sidecars: list = field(default_factory=list)  # (relative path, reason)


def _category(parts: tuple[str, ...]) -> str | None:
    for part in reversed(parts):
        if part.lower() in CATEGORY_FOLDERS:
            return CATEGORY_FOLDERS[part.lower()]
    return None


def walk_models_tree(root: Path) -> list[_Found]:
    """Model files under ``root``, sorted by relative path.

    Only files below a known model folder (``models/Lora``, ``embeddings``, …) count, so VAEs,
    upscalers and ControlNets in the same tree are left out; a folder with no such subfolder
    (``loradex import models/Lora``) counts whole. A file that cannot be read safely (a FIFO, a
    symlink loop, a dangling symlink, an over-long name) is listed with its ``problem`` and
    never opened; symlinked folders are not followed."""
    found: list[_Found] = []
    root_parts = (root.name,)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root)
        folders = tuple(rel_dir.parts)
        for fname in sorted(filenames):
            if fname.startswith(".") or Path(fname).suffix.lower() not in MODEL_SUFFIXES:
                continue
            rel = (rel_dir / fname).as_posix()
            item = _Found(Path(dirpath) / fname, rel, folders, _category(root_parts + folders))
            item.problem, item.stat = _file_problem(item.path)
            found.append(item)
    if any(f.category for f in found):
        found = [f for f in found if f.category]
    found.sort(key=lambda f: f.rel)
    return found


def _file_problem(path: Path) -> tuple[str | None, os.stat_result | None]:
    """(why ``path`` is not read, None) or (None, its stat): only regular files, by a name the
    file system and the catalog can hold, are read."""
    if len(os.fsencode(path.name)) > MAX_NAME_BYTES or len(os.fsencode(path)) > MAX_PATH_BYTES:
        return f"over-long name ({len(os.fsencode(path.name))} bytes; at most {MAX_NAME_BYTES})", None
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            try:
                st = os.stat(path)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    return "symlink loop", None
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    return f"dangling symlink (to {os.readlink(path)!r})", None
                raise
    except OSError as exc:
        return f"cannot read ({exc.strerror or exc})", None
    if not stat.S_ISREG(st.st_mode):
        return f"not a regular file ({_file_type(st.st_mode)})", None
    return None, st


def _file_type(mode: int) -> str:
    for test, label in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                        (stat.S_ISBLK, "a device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return label
    return "not a file"


# --- sidecars -------------------------------------------------------------------------------------
def sidecar_paths(model: Path) -> dict[str, Path]:
    """The sidecars next to ``model`` that exist (whatever they are: each is checked when read):
    one per registered sidecar format (``sidecar_formats.SIDECAR_FORMATS``) and ``preview``."""
    stem = model.name[: -len(model.suffix)] if model.suffix else model.name
    out = {}
    candidates = [(fmt.name, (fmt.suffix,)) for fmt in SIDECAR_FORMATS.values()] + [("preview", PREVIEW_SUFFIXES)]
    for key, suffixes in candidates:
        present = [c for c in (model.with_name(stem + suffix) for suffix in suffixes) if _lexists(c)]
        if present:  # the first regular file; else the first thing there (to say why it is skipped)
            out[key] = next((c for c in present if _is_regular(c)), present[0])
    return out


def _lexists(path: Path) -> bool:
    try:
        os.lstat(path)
    except OSError:  # missing, or a name too long to exist
        return False
    return True


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


class _SidecarProblem(Exception):
    """A sidecar not read: one line saying why."""


def _read_sidecar(path: Path, cap: int) -> bytes:
    """The bytes of a regular file of at most ``cap`` bytes. Opened non-blocking, so a FIFO
    never blocks the import; a symlink loop, a folder, a device or an unreadable file is a
    :class:`_SidecarProblem`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _SidecarProblem("symlink loop" if exc.errno == errno.ELOOP else
                              "dangling symlink" if exc.errno == errno.ENOENT else
                              f"cannot read ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _SidecarProblem(f"not a regular file ({_file_type(st.st_mode)})")
        if st.st_size > cap:
            raise _SidecarProblem(f"{st.st_size} bytes, over the {cap}-byte cap; not stored")
        os.set_blocking(fd, True)
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(cap + 1)
    except OSError as exc:
        raise _SidecarProblem(f"cannot read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(data) > cap:
        raise _SidecarProblem(f"over the {cap}-byte cap; not stored")
    return data


def _read_json_sidecar(path: Path, fmt: SidecarFormat) -> dict:
    """A JSON sidecar through the one validation layer (caps, then the format's schema)."""
    try:
        return fmt.parse(_read_sidecar(path, MAX_JSON_SIDECAR), path.name, MAX_JSON_SIDECAR)
    except UntrustedData as exc:
        raise _SidecarProblem(str(exc)[len(path.name) + 2:]) from None


def _image_type(data: bytes) -> str | None:
    for magic, kind in _IMAGE_MAGIC.items():
        if data.startswith(magic) and (kind != "webp" or data[8:12] == b"WEBP"):
            return kind
    return None


@dataclass
class SidecarFacts:
    extra: dict = field(default_factory=dict)
    triggers: list[str] = field(default_factory=list)
    description: str = ""
    base: str = "unknown"
    preview: bytes | None = None
    preview_type: str | None = None
    notes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (sidecar file name, why not read)
    variant: str | None = None  # the family's variant the sidecar's base label names (illustrious …)
    base_source: "SidecarClaims | None" = None  # the sidecar the base came from
    variant_source: "SidecarClaims | None" = None  # … and the variant
    claims: list = field(default_factory=list)  # every sidecar read (SidecarClaims)


def read_sidecars(model: Path) -> SidecarFacts:
    """What the sidecars next to ``model`` say, every registered format merged. A sidecar that
    cannot be read safely, or does not have its format's shape, is left out and named in
    ``facts.skipped`` (name, reason).

    Merging: trigger words are the union (typed ones — A1111's activation text — first); the base
    family, variant, description and Civitai ids come from the first tool-written sidecar that
    states them (Civitai Helper, LoRA Manager, Stability Matrix, then A1111), and a sidecar stating
    another base or Civitai version is noted (the model file's own header beats them all: see
    ``_store_one``)."""
    facts = SidecarFacts()
    paths = sidecar_paths(model)
    claims: list[SidecarClaims] = []
    for fmt in sorted(SIDECAR_FORMATS.values(), key=lambda f: f.user_typed):
        if fmt.name not in paths:
            continue
        data = _sidecar(paths[fmt.name], facts, fmt)
        if data is None:
            continue
        read = fmt.read(data, model.name, paths[fmt.name].name)
        claims.append(read)
        if read.extra:
            facts.extra[fmt.extra_key] = read.extra
        facts.notes += read.notes
    facts.claims = claims
    typed = [c for c in claims if SIDECAR_FORMATS[c.source].user_typed]
    for c in typed + [c for c in claims if c not in typed]:
        facts.triggers += [w for w in c.triggers if w not in facts.triggers]
    for c in claims:
        facts.description = facts.description or c.description
        if c.base:
            if facts.base == "unknown":
                facts.base, facts.base_source = c.base[0], c
            if c.base[0] != facts.base:
                facts.notes.append(f"{c.file} says base {c.base[0]} ({c.base_label}), "
                                   f"{facts.base_source.file} says {facts.base}; kept {facts.base}")
            elif c.base[1] and facts.variant is None:
                facts.variant, facts.variant_source = c.base[1], c
            elif c.base[1] and c.base[1] != facts.variant:
                facts.notes.append(f"{c.file} says {c.base_label}, {facts.variant_source.file} "
                                   f"{facts.variant_source.base_label}; kept {facts.variant}")
        if c.civitai and c.civitai.get("versionId") is not None:
            first = facts.extra.get("civitai")
            if first is None or not isinstance(first, dict) or first.get("versionId") is None:
                facts.extra["civitai"] = c.civitai
            elif str(first.get("versionId")) != str(c.civitai["versionId"]):
                facts.notes.append(f"{c.file} names Civitai version {c.civitai['versionId']}, another sidecar "
                                   f"{first.get('versionId')}; kept {first.get('versionId')}")
    if "preview" in paths:
        data = _sidecar(paths["preview"], facts, None)
        kind = _image_type(data) if data else None
        if kind:
            facts.preview, facts.preview_type = data, kind
        elif data is not None:
            facts.skipped.append((paths["preview"].name, "not a PNG/JPEG/WebP image"))
    return facts


def civitai_sources(facts: SidecarFacts, sha256: str) -> tuple[list[dict], list[str]]:
    """The ``pulled_from civitai:VERSION`` edges the sidecars vouch for, and notes: an edge only
    when the sidecar's SHA256 for the model is the file's own (a sidecar copied next to another
    file names a version this file is not)."""
    edges, notes, seen = [], [], set()
    for c in getattr(facts, "claims", []):
        civ = c.civitai or {}
        vid = civ.get("versionId")
        if vid is None or str(vid) in seen:
            continue
        if c.sha256 != sha256:
            notes.append(f"{c.file}: Civitai version {vid} not recorded as the source: "
                         + ("the sidecar states no SHA256" if c.sha256 is None else "its SHA256 is not the file's"))
            continue
        seen.add(str(vid))
        edges.append({"relation": "pulled_from", "external_parent": f"civitai:{vid}",
                      "recipe": {"via": f"{c.source} sidecar", "modelId": civ.get("modelId"),
                                 "fileId": civ.get("fileId"), "sha256": sha256}})
    return edges, notes


def _sidecar(path: Path, facts: SidecarFacts, fmt: SidecarFormat | None):
    """A JSON sidecar of format ``fmt`` or a preview's bytes (None); None when skipped."""
    try:
        if fmt is None:
            return _read_sidecar(path, MAX_PREVIEW)
        return _read_json_sidecar(path, fmt)
    except _SidecarProblem as exc:
        facts.skipped.append((path.name, str(exc)))
        return None


# --- naming ---------------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return default_name(Path(text.replace(".", "-")))


def name_candidates(rel: str) -> list[str]:
    """Names for the file at ``rel``, plainest first: the file name, then with its folders as a
    suffix (nearest folder first added), then the whole relative path."""
    path = Path(rel)
    base = default_name(path)
    folders = path.parent.parts
    out = [base]
    for k in range(1, len(folders) + 1):
        out.append(f"{base}-{_slug('-'.join(folders[-k:]))}")
    out.append(_slug(rel))
    return list(dict.fromkeys(out))


def assign_names(found: list[_Found], taken: dict[str, str]) -> None:
    """Give every file in ``found`` (sorted) a unique adapter name, deterministically.

    ``taken`` maps names already used (by this tree's earlier imports, or by catalog adapters a
    file cannot join) to who holds them. Colliding files all move one step down their candidate
    lists until each is unique; the last resort is a numeric suffix."""
    remaining = [f for f in found if f.name is None]
    level = 0
    while remaining:
        cands = {}
        for f in remaining:
            options = name_candidates(f.rel)
            cands[f.rel] = options[min(level, len(options) - 1)]
        counts = Counter(cands.values())
        exhausted = all(level >= len(name_candidates(f.rel)) - 1 for f in remaining)
        next_round = []
        for f in remaining:
            name = cands[f.rel]
            if counts[name] == 1 and taken.get(name, f.rel) == f.rel:
                f.name = name
                taken[name] = f.rel
            elif exhausted:
                n = 2
                while taken.get(f"{name}-{n}", f.rel) != f.rel:
                    n += 1
                f.name = f"{name}-{n}"
                taken[f.name] = f.rel
            else:
                next_round.append(f)
        remaining = next_round
        level += 1
    for f in found:
        if not NAME_RE.match(f.name or ""):  # default_name never gives one, but be sure
            f.name = "adapter-" + _slug(f.rel)


# --- the import -----------------------------------------------------------------------------------
def _stat_key(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ino


def import_tree(catalog, root, *, allow_pickle: bool = False, link: bool = False,
                progress: Progress | None = None, pickle_converter: Callable | None = None) -> ImportReport:
    """Import every adapter below ``root``; see the module docstring.

    ``pickle_converter(path, tmp_dir)`` (``loradex.merge.conventions.pickle_to_safetensors.convert_pickle_for_catalog``,
    what ``add --allow-pickle`` uses; registry/ does not import merge/): with ``allow_pickle``, each
    pickle is stored converted to safetensors with a ``converted_from`` edge, as ``add`` does;
    without a converter it is stored as it is."""
    from ..probe import probe_path

    started = time.perf_counter()
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder", hint="give the webui folder (or its models/ folder)")
    report = ImportReport(root=str(root))
    stats = report.stats
    found = walk_models_tree(root)
    for f in found:
        if f.problem:
            report.items.append(ImportItem(f.rel, "skipped", reason=f.problem))
    found = [f for f in found if not f.problem]
    stats.model_files = len(found)
    cache = _load_cache(catalog, root)

    todo: list[_Found] = []
    for f in found:
        row = cache.get(str(f.path))
        if row is not None and (row["size"], row["mtime_ns"], row["inode"]) == _stat_key(f.stat):
            outcome = row["outcome"]
            if not (outcome.get("status") == "refused" and outcome.get("needs_pickle") and allow_pickle):
                stats.cache_hits += 1
                report.items.append(_cached_item(f, outcome))
                continue
        f.previous = {**row["outcome"], "sha256": row["sha256"]} if row else None
        todo.append(f)

    refused: list[tuple[_Found, ImportItem, bool]] = []
    ready: list[_Found] = []
    for f in todo:
        try:
            f.probe = probe_path(f.path, allow_pickle=allow_pickle).to_dict()
        except LoradexError as exc:
            item = ImportItem(f.rel, "refused", reason=_reason(exc, f.path))
            # A pickle refused only for want of allow_pickle is retried by a run that allows it.
            refused.append((f, item, isinstance(exc, UnsafePickle) and not allow_pickle))
            report.items.append(item)
            continue
        except OSError as exc:  # gone, or no longer readable, since the walk
            report.items.append(ImportItem(f.rel, "skipped", reason=_os_reason(exc, f.path)))
            continue
        ready.append(f)

    _name_files(catalog, found, cache, ready)
    # Of two identical files the first one processed is added and the other is its duplicate:
    # take files with sidecars first, so the copy that carries the metadata is the one kept.
    ready.sort(key=lambda f: (not sidecar_paths(f.path), f.rel))
    total = len(ready)
    for n, f in enumerate(ready):
        if progress:
            progress(n, total, f.rel)
        try:
            report.items.append(_import_one(catalog, f, stats, link=link, pickle_converter=pickle_converter))
        except LoradexError as exc:  # a pickle whose content cannot be converted
            item = ImportItem(f.rel, "refused", reason=_reason(exc, f.path))
            refused.append((f, item, False))
            report.items.append(item)
        except OSError as exc:
            report.items.append(ImportItem(f.rel, "skipped", reason=_os_reason(exc, f.path)))
        folder = Path(f.rel).parent
        report.items += [ImportItem((folder / name).as_posix(), "skipped", reason=why)
                         for name, why in f.skipped_sidecars]
    if progress:
        progress(total, total, "done")
    if refused:
        catalog.transact(lambda s: [_save_cache(s, f, "", {
            "status": "refused", "reason": item.reason, "needs_pickle": needs_pickle})
            for f, item, needs_pickle in refused])
    report.items.sort(key=lambda i: i.path)
    stats.seconds = round(time.perf_counter() - started, 3)
    return report


def _os_reason(exc: OSError, path: Path) -> str:
    """Why a file could not be read (or stored): the other file named when it is not this one."""
    other = f" {exc.filename}" if exc.filename and str(exc.filename) != str(path) else ""
    return f"cannot read or store it ({exc.strerror or exc}{':' + other if other else ''})"


def _reason(exc: LoradexError, path: Path) -> str:
    text = str(exc)
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def _cached_item(f: _Found, outcome: dict) -> ImportItem:
    if outcome.get("status") == "refused":
        return ImportItem(f.rel, "refused", reason=outcome.get("reason", ""), cached=True)
    return ImportItem(f.rel, "unchanged", ref=outcome.get("ref"), kind=outcome.get("kind"),
                      reason=f"{outcome.get('status')} earlier", cached=True)


def _load_cache(catalog, root: Path) -> dict[str, dict]:
    prefix = str(root).rstrip(os.sep) + os.sep

    def run(s):
        rows = s.scalars(select(FileCacheRow).where(FileCacheRow.path.startswith(prefix, autoescape=True)))
        return {r.path: {"size": r.size, "mtime_ns": r.mtime_ns, "inode": r.inode, "sha256": r.sha256,
                         "outcome": dict(r.outcome or {})} for r in rows}

    return catalog.read(run)


def _name_files(catalog, found: list[_Found], cache: dict, ready: list[_Found]) -> None:
    """Names for the files about to be added. Files imported before keep the names they had
    (and reserve them); a catalog adapter of an incompatible kind reserves its name too."""
    taken: dict[str, str] = {}
    ready_set = {id(f) for f in ready}
    for f in found:
        outcome = (cache.get(str(f.path)) or {}).get("outcome") or {}
        if outcome.get("name"):
            taken.setdefault(outcome["name"], f.rel)
            if id(f) in ready_set:
                f.name = outcome["name"]  # a changed file becomes a new version of its adapter
    kinds = catalog.read(lambda s: dict(s.execute(select(AdapterRow.name, AdapterRow.kind)).all()))
    pending = [f for f in ready if f.name is None]
    for f in pending:
        kind = f.probe.get("kind") or "lora"
        for cand in name_candidates(f.rel):
            held = kinds.get(cand)
            if held and held != kind and {held, kind} != {"lora", "lycoris"}:
                taken.setdefault(cand, f"catalog adapter {cand} ({held})")
    assign_names(pending, taken)


def _import_one(catalog, f: _Found, stats: ImportStats, *, link: bool,
                pickle_converter: Callable | None = None) -> ImportItem:
    from ..files.file_sniff import PICKLE_KINDS, sniff

    if pickle_converter is None or sniff(f.path).kind not in PICKLE_KINDS:
        return _store_one(catalog, f, f.path, stats, link=link, edge=None, converted_extra={})
    from ..probe import probe_path

    with tempfile.TemporaryDirectory(prefix=".loradex-import-") as tmp:
        done = pickle_converter(f.path, tmp)
        f.probe = probe_path(done.path).to_dict()
        return _store_one(catalog, f, done.path, stats, link=link, edge=done.edge, converted_extra=done.extra)


def _store_one(catalog, f: _Found, source: Path, stats: ImportStats, *, link: bool, edge: dict | None,
               converted_extra: dict) -> ImportItem:
    """Store ``source`` (the file itself, or its safetensors conversion) and register it."""
    probe = f.probe
    side = read_sidecars(f.path)
    f.skipped_sidecars = side.skipped
    extra = {**side.extra, **converted_extra}
    extra["imported_from"] = {"path": str(f.path), "folder": f.category}
    probe_base = probe.get("base") or "unknown"
    base = probe_base if probe_base != "unknown" else side.base
    notes = list(side.notes)
    if side.base != "unknown" and probe_base != "unknown" and side.base != probe_base:
        # Shapes decide; what the sidecar claims is reported, not trusted.
        notes.append(f"sidecar says base {side.base}, the tensors say {probe_base}")
    elif side.variant and not probe.get("variant") and side.base == base:
        # The header names no variant (Pony, Illustrious …): the sidecar's base label does.
        probe = {**probe, "variant": side.variant,
                 "variant_evidence": f"{side.variant_source.file}: base {side.variant_source.base_label!r}"}
    triggers = list(dict.fromkeys(side.triggers + list(probe.get("trigger_words") or [])))
    kind = probe.get("kind") or "lora"
    op = AddVersion(
        name=f.name, sha256="", autov1=None, autov2="", autov3=None, size=0,
        file_format=probe.get("format") or "unknown", kind=kind, base=base, file_name=source.name,
        probe=probe, file_metadata=dict(probe.get("metadata") or {}), trigger_words=triggers,
        message=f"imported from {f.rel}", description=side.description, extra=extra,
    )
    op.validate()
    read_so_far = [0]

    def count(done: int, total: int, desc: str = "") -> None:
        read_so_far[0] = done

    with catalog.blobs.writing():
        stored = catalog.blobs.add_file(source, link=link and source == f.path, progress=count)
        stats.files_read += 1
        stats.bytes_hashed += read_so_far[0]
        h = stored.hashes
        op.sha256, op.autov1, op.autov2, op.autov3, op.size = h.sha256, h.autov1, h.autov2, h.autov3, h.size
        sources, source_notes = civitai_sources(side, h.sha256)
        notes += source_notes
        if side.preview is not None:
            op.extra["preview_sha256"] = catalog.blobs.add_bytes(side.preview).hashes.sha256
            op.extra["preview_type"] = side.preview_type

        def commit(s):
            prev = f.previous or {}
            if prev.get("sha256") == h.sha256 and prev.get("status") in ("added", "duplicate"):
                # Touched (new mtime) but the same bytes: nothing new.
                _save_cache(s, f, h.sha256, {k: v for k, v in prev.items() if k != "sha256"})
                return ImportItem(f.rel, "unchanged", ref=prev.get("ref"), kind=kind,
                                  reason="same content as before (re-hashed: its mtime changed)")
            existing = s.execute(
                select(AdapterRow.name, VersionRow.version)
                .join(AdapterRow, AdapterRow.id == VersionRow.adapter_id)
                .where(VersionRow.sha256 == h.sha256, VersionRow.deleted_at.is_(None))
                .order_by(VersionRow.id).limit(1)).first()
            if existing is not None:
                ref = f"{existing[0]}@{existing[1]}"
                _save_cache(s, f, h.sha256, {"status": "duplicate", "ref": ref, "kind": kind})
                return ImportItem(f.rel, "duplicate", ref=ref, kind=kind, reason="same sha256")
            version = op.apply(s, catalog)
            for one in ([edge] if edge is not None else []) + sources:
                lineage = LinkLineage(child=version.ref, **one)
                lineage.validate()
                lineage.apply(s, catalog)
            _save_cache(s, f, h.sha256, {"status": "added", "ref": version.ref, "name": f.name, "kind": kind})
            return ImportItem(f.rel, "added", ref=version.ref, kind=kind, reason="; ".join(notes))

        try:
            item = catalog.transact(commit)
        except AlreadyExists as exc:  # cannot happen after the sha check, but say so if it does
            item = ImportItem(f.rel, "duplicate", reason=str(exc), kind=kind)
    if item.status == "added" and not stored.existed:
        stats.bytes_stored += h.size
    return item


def _save_cache(s, f: _Found, sha256: str, outcome: dict) -> None:
    size, mtime_ns, inode = _stat_key(f.stat)
    row = s.get(FileCacheRow, str(f.path))
    if row is None:
        s.add(FileCacheRow(path=str(f.path), size=size, mtime_ns=mtime_ns, inode=inode, sha256=sha256,
                           outcome=outcome))
    else:
        row.size, row.mtime_ns, row.inode, row.sha256, row.outcome = size, mtime_ns, inode, sha256, outcome


__all__ = ["import_tree", "ImportReport", "ImportItem", "ImportStats", "walk_models_tree", "read_sidecars",
           "name_candidates", "assign_names", "base_from_label", "civitai_extra"]
