"""``loradex export REF DEST --layout a1111|comfyui``: put a catalog version where a webui finds it.

The model file goes to the layout's folder for its kind, named after the adapter, next to the
sidecars other tools read, one per format ``sidecars`` names (``sidecar_formats``; default
``a1111`` and ``civitai-helper``, what export always wrote):

- ``a1111`` — ``<name>.json``, A1111 user metadata: ``description``, ``sd version``, ``activation
  text``, ``preferred weight``, ``notes``;
- ``civitai-helper`` — ``<name>.civitai.info``, the Civitai version JSON, when the catalog knows
  the Civitai ids;
- ``lora-manager`` — ``<name>.metadata.json``, ComfyUI LoRA Manager's record (sha256 and size of
  the file as written, Civitai base model name, the Civitai JSON with the trigger words, usage tips);
- ``stability-matrix`` — ``<name>.cm-info.json``, Stability Matrix's ConnectedModelInfo;
- ``<name>.preview.<png|jpeg|webp>`` — the version's preview image, when it has one and a chosen
  format shows previews.

Sidecar contents and names come from the catalog only; ``import`` reads them back to the same facts.

Every file is written atomically, and only over a file an earlier export wrote and nobody has
changed since (``DEST/.loradex-export.json``, read and checked like ``sync-folder``'s manifest:
see ``folder_state``); any other file in the way is left alone and reported (``--force``
overwrites it).

The model file is one the webui loads: a LoRA in kohya's naming, a LyCORIS file, an A1111 or SDXL
(``clip_l``/``clip_g``) embedding are written as stored; any other format (diffusers, diffusers-legacy,
PEFT, safeloras, a diffusers embedding…) is converted on the way (``webui_format``) — kohya for
LoRA, A1111 for embeddings (SDXL for two-encoder ones) — and what cannot be converted is refused
with one line, never copied for the webui to apply in part. ``--format FMT`` picks the target
instead, ``--format as-is`` copies the stored bytes whatever they are. Conversions go through a
converter the caller passes (``loradex.merge.conventions.file_conversion.convert_path``: LoRA
conventions, LyCORIS, embedding layouts; registry/ does not import merge/).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..files.atomic_files import atomic_output
from .sidecar_formats import (  # noqa: F401  (a1111_metadata / civitai_info were defined here)
    DEFAULT_WRITE,
    SIDECAR_FORMATS,
    ExportView,
    a1111_metadata,
    civitai_info,
    sidecar_format,
)
from ..errors import UnsupportedFormat, UsageError

# --- layouts ---------------------------------------------------------------------------------------
LAYOUTS: dict[str, "WebuiLayout"] = {}


AS_IS = "as-is"  # ``--format as-is``: the stored bytes, whatever their format
# What A1111 and ComfyUI load as they are (probed formats), per kind; kinds not listed (checkpoints)
# are always written as stored.
_WEBUI_LOADS = {"lora": {"kohya"}, "lycoris": {"lycoris"},
                "embedding": {"a1111-embedding", "a1111-embedding-pt", "sdxl-embedding"}}
# ComfyUI also maps diffusers' ``transformer.`` names of DiT models (Flux, SD3) itself.
_COMFYUI_LOADS = {**_WEBUI_LOADS, "lora": {"kohya", "diffusers:flux", "diffusers:sd3"}}
# kind → the format everything else of that kind is converted to.
_WEBUI_TARGETS = {"lora": "kohya", "embedding": "a1111"}
SDXL_EMBEDDING_KEYS = {"clip_l", "clip_g"}
PEFT_CONFIG_METADATA = "loradex.peft_adapter_config"  # merge.conventions.lora_conventions.PEFT_CONFIG_KEY


@dataclass(frozen=True)
class WebuiLayout:
    name: str
    folders: dict  # adapter kind → folder relative to the webui root
    loads: dict = field(default_factory=lambda: dict(_WEBUI_LOADS))  # kind → formats read as they are
    targets: dict = field(default_factory=lambda: dict(_WEBUI_TARGETS))  # kind → what the rest becomes

    def loads_as_is(self, kind: str, fmt: str, base: str | None) -> bool:
        formats = self.loads.get(kind)
        return formats is None or fmt in formats or f"{fmt}:{base}" in formats

    def folder_for(self, kind: str) -> str:
        try:
            return self.folders[kind]
        except KeyError:
            raise UsageError(f"the {self.name} layout has no folder for {kind} files",
                             hint=f"it holds: {', '.join(sorted(self.folders))}") from None


def register_layout(layout: WebuiLayout) -> WebuiLayout:
    LAYOUTS[layout.name] = layout
    return layout


def get_layout(name: str) -> WebuiLayout:
    if name not in LAYOUTS:
        raise UsageError(f"unknown layout {name!r}", hint=f"use one of {', '.join(sorted(LAYOUTS))}")
    return LAYOUTS[name]


# A1111 ≥ 1.5 loads LyCORIS files from models/Lora too.
register_layout(WebuiLayout("a1111", {"lora": "models/Lora", "lycoris": "models/Lora",
                                      "embedding": "embeddings", "checkpoint": "models/Stable-diffusion"}))
register_layout(WebuiLayout("comfyui", {"lora": "models/loras", "lycoris": "models/loras",
                                        "embedding": "models/embeddings", "checkpoint": "models/checkpoints"},
                            loads=dict(_COMFYUI_LOADS)))



# --- what gets written ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PlannedFile:
    """One file of an export: its path under the webui root and where its bytes come from."""

    rel: str
    sha256: str
    blob: str | None = None  # copy this blob …
    data: bytes | None = None  # … or write these bytes …
    source: str | None = None  # … or copy this (converted) file
    role: str = "model"  # model | converted | preview | a sidecar format's name (a1111, lora-manager …)

    def write(self, catalog, root: Path) -> Path:
        dest = root / self.rel
        with atomic_output(dest) as out:
            if self.data is not None:
                out.write(self.data)
            else:
                with (open(self.source, "rb") if self.source else catalog.blobs.open(self.blob)) as src:
                    shutil.copyfileobj(src, out, 4 << 20)
        return dest


def _bytes_file(rel: str, data: bytes, role: str) -> PlannedFile:
    return PlannedFile(rel, hashlib.sha256(data).hexdigest(), data=data, role=role)


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=4, ensure_ascii=False) + "\n").encode("utf-8")


def plan_export(catalog, version, layout: str | WebuiLayout, *, stem: str | None = None,
                model_sha256: str | None = None, model_suffix: str | None = None,
                sidecars: tuple[str, ...] = DEFAULT_WRITE, root: Path | None = None,
                written: PlannedFile | None = None) -> list[PlannedFile]:
    """The files exporting ``version`` writes (model first), without writing anything: the model,
    then one file per sidecar format in ``sidecars`` (``sidecar_formats``) that has something to
    say, then the preview when one of them shows it. ``root``: the folder's absolute path, for
    the sidecars that record where the model lies (LoRA Manager's ``file_path``); ``written``: the
    model file as converted for the webui, whose name, sha256 and size those sidecars state then."""
    from loradex.families.vocabulary import stored_variant

    layout = get_layout(layout) if isinstance(layout, str) else layout
    adapter = catalog.get_adapter(version.adapter)
    kind = version.probe.get("kind") or adapter.kind
    folder = layout.folder_for(kind)
    stem = stem or version.adapter
    suffix = model_suffix or Path(version.file_name).suffix or ".safetensors"
    sha = model_sha256 or version.sha256
    files = [PlannedFile(f"{folder}/{stem}{suffix}", sha, blob=sha, role="model")]
    if version.files and model_sha256 is None:  # every file of a multi-file version, under its own name
        from ..catalog.version_files import check_file_name

        files = [PlannedFile(f"{folder}/{check_file_name(f.file_name)}", f.sha256, blob=f.sha256, role="model")
                 for f in version.files]
    formats = [sidecar_format(name) for name in sidecars]
    preview = version.extra.get("preview_sha256")
    preview_file = None
    if preview and catalog.blobs.exists(preview) and any(f.writes_preview for f in formats):
        ext = {"jpeg": "jpg"}.get(version.extra.get("preview_type"), version.extra.get("preview_type") or "png")
        preview_file = PlannedFile(f"{folder}/{stem}.preview.{ext}", preview, blob=preview, role="preview")
    family = version.probe.get("base") if version.probe.get("base") not in (None, "unknown") else adapter.base
    found = stored_variant(family, probe=version.probe, metadata=version.file_metadata, extra=version.extra)
    model = written or files[0]
    view = ExportView(version, adapter, family, found[0] if found else None, stem, model.rel,
                      preview_file.rel if preview_file else None, str(root) if root else None,
                      model_sha256=model.sha256,
                      model_size=os.path.getsize(model.source) if model.source else version.size)
    for fmt in formats:
        body = fmt.render(view)
        if body is not None:
            files.append(_bytes_file(f"{folder}/{stem}{fmt.suffix}", _json_bytes(body), fmt.name))
    if preview_file is not None:
        files.append(preview_file)
    return files


# --- the format a webui reads ----------------------------------------------------------------------
def _stored_header(catalog, version):
    """The stored file's safetensors header (None when it is not a readable safetensors file)."""
    from ..files.safetensors_header import read_header

    try:
        return read_header(catalog.blobs.path_for(version.sha256))
    except (OSError, ValueError):
        return None


def _peft_alpha_known(catalog, version) -> bool:
    """A PEFT file's alphas live in its adapter_config.json (kept by the probe) or, written by
    loradex, in its header; without either nobody can say its scale."""
    if isinstance((version.probe.get("training") or {}).get("adapter_config"), dict):
        return True
    header = _stored_header(catalog, version)
    return header is not None and PEFT_CONFIG_METADATA in header.metadata


def webui_format(catalog, version, layout: "WebuiLayout", requested: str | None = None) -> str | None:
    """See ``_webui_format``; a multi-file version (a Wan 2.2 high/low-noise pair) is written as
    stored or not at all: its files convert as one or not, and no converter pairs them."""
    target = _webui_format(catalog, version, layout, requested)
    if target is not None and version.files:
        raise UnsupportedFormat(version.ref, f"holds {len(version.files)} files; exporting it converts "
                                             f"none of them (to {target})", hint=f"`--format {AS_IS}` copies them")
    return target


def _webui_format(catalog, version, layout: "WebuiLayout", requested: str | None = None) -> str | None:
    """The format ``version`` is written in for ``layout``: None for its stored bytes as they are,
    else the ``convert`` target. ``requested``: what the user asked for (``--format``; ``as-is``
    copies whatever is stored). Raises UnsupportedFormat (one line) for a file the webui would not
    load and loradex cannot convert to one it does."""
    if requested == AS_IS:
        return None
    if requested:
        return None if requested == version.file_format else requested
    adapter = catalog.get_adapter(version.adapter)
    kind = version.probe.get("kind") or adapter.kind
    fmt = version.file_format
    base = version.probe.get("base") or adapter.base
    if layout.loads_as_is(kind, fmt, base):
        header = _stored_header(catalog, version) if fmt == "sdxl-embedding" else None
        if header is None or set(header.tensors) == SDXL_EMBEDDING_KEYS:
            return None
        return "sdxl"  # two encoders' vectors under other names: the webuis look for clip_l / clip_g
    target = layout.targets.get(kind)
    if fmt == "peft" and not _peft_alpha_known(catalog, version):
        raise UnsupportedFormat(version.ref, "a PEFT LoRA stored without its adapter_config.json: its alpha, "
                                             "so its strength, is unknown and no webui file can state it",
                                hint=f"add it again with adapter_config.json beside it, or `--format {AS_IS}`")
    if target is None:
        raise UnsupportedFormat(version.ref, f"a {fmt} {kind} file, which {layout.name} does not load and "
                                             "loradex cannot convert",
                                hint=f"`--format {AS_IS}` copies it anyway")
    if kind == "embedding" and len(version.probe.get("components") or []) == 2:
        return "sdxl"  # one vector set per SDXL text encoder
    return target


# --- export ------------------------------------------------------------------------------------------
Converter = Callable[..., object]  # convert_path(src, dest, to, *, base=None, allow_partial=False) → dict
EXPORT_STATE = ".loradex-export.json"


@dataclass
class ExportResult:
    ref: str
    layout: str
    root: str
    files: list[str] = field(default_factory=list)
    converted_to: str | None = None
    conversion: dict | None = None
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}: files left alone
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def export_version(catalog, ref: str, dest, *, layout: str = "a1111", to_format: str | None = None,
                   converter: Converter | None = None, allow_partial: bool = False,
                   force: bool = False, sidecars: tuple[str, ...] = DEFAULT_WRITE) -> ExportResult:
    """Write ``ref`` and its sidecars under the webui root ``dest``; see the module docstring.
    ``to_format``: the format to write (``as-is``: the stored bytes); None: one the layout loads.
    ``sidecars``: the sidecar formats written beside it (``sidecar_formats``; default A1111's
    ``.json`` and Civitai Helper's ``.civitai.info`` + preview).

    A file already there is overwritten only when it is what an earlier export wrote (its sha256,
    re-hashed now, as recorded in ``dest/.loradex-export.json``) or, with ``force``, any regular
    file inside ``dest``; anything else is left alone and listed in ``skipped``."""
    from .folder_state import folder_errors

    layout_obj = get_layout(layout)
    version = catalog.resolve(ref)
    root = Path(dest).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} is not a folder")
    result = ExportResult(version.ref, layout_obj.name, str(root))
    to_format = webui_format(catalog, version, layout_obj, to_format)  # refused here: nothing written
    plan = plan_export(catalog, version, layout_obj, sidecars=sidecars, root=root)
    with folder_errors(root):
        root.mkdir(parents=True, exist_ok=True)
        _export_locked(catalog, version, layout_obj, root, plan, result, to_format, converter, allow_partial, force)
    return result


def _export_locked(catalog, version, layout: WebuiLayout, root: Path, plan: list[PlannedFile],
                   result: ExportResult, to_format: str | None, converter: Converter | None,
                   allow_partial: bool, force: bool) -> None:
    from .folder_state import folder_lock, read_state, write_state

    model, sidecars = plan[0], plan[1:]
    with folder_lock(root), tempfile.TemporaryDirectory(prefix=".tmp-loradex-export-") as work:
        state = read_state(root, EXPORT_STATE, result.warnings)
        models = [model]
        if to_format:
            models, result.conversion = converted_files(catalog, version, layout, model, to_format, converter,
                                                        Path(work), allow_partial=allow_partial)
            sidecars = replan_sidecars(catalog, version, layout, sidecars, models[0], root)
            result.converted_to = to_format
            result.conversion["files"] = [str(root / planned.rel) for planned in models]
        for planned in [*models, *sidecars]:
            _write_planned(catalog, root, planned, state, result, force)
        write_state(root, EXPORT_STATE, state)


def replan_sidecars(catalog, version, layout: WebuiLayout, planned: list[PlannedFile], model: PlannedFile,
                    root: Path) -> list[PlannedFile]:
    """The sidecars of ``planned`` again, describing the converted ``model`` (its sha256 and size)."""
    names = tuple(p.role for p in planned if p.role in SIDECAR_FORMATS)
    if not names:
        return planned
    again = plan_export(catalog, version, layout, sidecars=names, root=root, written=model)[1:]
    return [p for p in again if p.role in SIDECAR_FORMATS] + [p for p in planned if p.role not in SIDECAR_FORMATS]


def converted_files(catalog, version, layout: WebuiLayout, model: PlannedFile, to_format: str,
                    converter: Converter | None, workdir: Path, *,
                    allow_partial: bool = False) -> tuple[list[PlannedFile], dict]:
    """Convert the stored model to ``to_format`` in ``workdir``: the files written, planned for the
    webui (the model where ``model`` was, as ``.safetensors``; a PEFT sidecar next to it; tokens
    split out of a safeloras LoRA in the layout's embedding folder), and the converter's report.
    Raises what the converter raises (nothing is planned then)."""
    from .folder_state import content_sha

    if converter is None:
        raise UsageError(f"writing {version.ref} as {to_format} needs a converter",
                         hint="call through `loradex export` or `loradex sync-folder`")
    folder, _, name = model.rel.rpartition("/")
    workdir.mkdir(parents=True, exist_ok=True)
    dest = workdir / (Path(name).stem + ".safetensors")
    report = dict(convert_blob(catalog, version, dest, to_format, converter, allow_partial) or {})
    planned = []
    for path in [Path(f) for f in report.get("files") or [dest]]:
        where = folder
        if path != dest and path.suffix == ".safetensors" and version.probe.get("kind") != "embedding":
            where = layout.folder_for("embedding")  # an embedding that rode along in the LoRA file
        planned.append(PlannedFile(f"{where}/{path.name}", content_sha(path), source=str(path),
                                   role="model" if path == dest else "converted"))
    return planned, report


def _may_write(root: Path, rel: str, sha256: str | None, state: dict, result: ExportResult,
               force: bool) -> bool:
    """May ``root/rel`` be (over)written? False (and the file listed as skipped) when it leads
    outside ``root``, is not a regular file, or holds bytes loradex did not write there."""
    from .folder_state import checked_path, content_sha, file_state, owned

    path = checked_path(root, rel)
    reason = None
    if path is None:
        reason = "the path leads outside the folder"
    elif file_state(path) == "missing":
        return True
    elif file_state(path) != "regular":
        reason = "a symlink or special file is in the way"
    elif sha256 is not None and content_sha(path) == sha256:
        return True  # the same bytes: rewriting them changes nothing
    elif not (force or owned(path, state.get(rel))):
        reason = "a file loradex did not write (or one changed by hand) is in the way; move it or pass --force"
    if reason is None:
        return True
    result.skipped.append({"path": rel, "reason": reason})
    result.warnings.append(f"{rel}: left alone: {reason}")
    return False


def _write_planned(catalog, root: Path, planned: PlannedFile, state: dict, result: ExportResult,
                   force: bool) -> None:
    from .folder_state import entry_for

    if not _may_write(root, planned.rel, planned.sha256, state, result, force):
        return
    dest = planned.write(catalog, root)
    state[planned.rel] = entry_for(dest, planned.sha256, result.ref)
    result.files.append(str(dest))


def convert_blob(catalog, version, dest: Path, to_format: str, converter: Converter,
                 allow_partial: bool) -> dict | None:
    """Run the converter on the stored blob (seen through a ``.safetensors``-named symlink: blob
    names carry no suffix)."""
    if Path(version.file_name).suffix.lower() != ".safetensors":
        raise UsageError(f"{version.ref} is a {Path(version.file_name).suffix or 'suffix-less'} file; "
                         "only .safetensors files are converted on export")
    base = version.probe.get("base")
    with tempfile.TemporaryDirectory(prefix=".tmp-loradex-export-") as tmp:
        # named like the stored file: converters default names (an embedding's token) to its stem
        src = Path(tmp) / (Path(version.file_name).stem + ".safetensors")
        os.symlink(catalog.blobs.path_for(version.sha256), src)
        config = (version.probe.get("training") or {}).get("adapter_config")
        if isinstance(config, dict):  # a PEFT file's alphas live in the adapter_config.json it came with
            src.with_name(src.stem + ".adapter_config.json").write_text(json.dumps(config))
        report = converter(src, dest, to_format, base=None if base in (None, "unknown") else base,
                           allow_partial=allow_partial)
    return report if isinstance(report, dict) else report.to_dict() if hasattr(report, "to_dict") else None
