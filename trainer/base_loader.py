"""Loading a base model for rendering, stacking or training, offline.

``load_base(ref_or_path)`` accepts, tried in this order:

- ``tiny-sd1`` / ``tiny-sdxl`` / ``tiny-flux`` / ``tiny-sd3``: built in-process
  (``loradex.trainer.tiny_pipeline``, from each family's pipeline aspect);
- a local diffusers folder (has ``model_index.json``);
- a single-file checkpoint (``.safetensors``; ``.ckpt``/``.pt`` only with ``allow_pickle=True``,
  and even then diffusers reads it with ``torch.load(weights_only=True)``);
- a Hugging Face hub id (``owner/name``) already in the local HF cache (never downloads).

Registered checkpoints in the catalog are resolved to a file by the caller, then passed here.

``BaseInfo.hash`` identifies the weights, not where they lie:
- folder / hub snapshot: sha256 of the sorted lines ``<relative path>\\0<file sha256>\\n`` over
  weight and config files (hub blobs named by their sha256, i.e. LFS files, are not re-read);
- single file: the file's sha256;
- tiny: sha256 of ``<recipe string>\\0seed=<seed>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from loradex.registry.errors import NotFound, UnsafePickle, UnsupportedFormat, UsageError

TINY_PREFIX = "tiny-"
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
HASHED_SUFFIXES = {".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".json", ".txt", ".model",
                   ".yaml", ".yml", ".msgpack", ".onnx", ".gguf"}
SINGLE_FILE_SAFE = {".safetensors"}
SINGLE_FILE_PICKLE = {".ckpt", ".pt", ".pth", ".bin"}
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class BaseInfo:
    ref: str          # what the user gave (path as given, hub id, or tiny-sd1)
    family: str       # sd1 | sd2 | sdxl | sd3 | flux | unknown
    hash: str         # hex sha256 (see module docstring)
    source: str = ""  # tiny | folder | single_file | hub
    path: str | None = None

    def to_dict(self) -> dict:
        return {"ref": self.ref, "family": self.family, "hash": self.hash, "source": self.source,
                "path": self.path}


# --- family from a loaded pipeline (each family's pipeline aspect names its classes) ---------------

def pipeline_family(pipe) -> str:
    """The family whose pipeline aspect claims ``pipe``'s class (and, where two families share
    a class, whose ``matches(pipe)`` says yes: SD 1.x vs 2.x by text-encoder width)."""
    from loradex.families import UNKNOWN, aspects

    name = type(pipe).__name__
    for family, module in aspects("pipeline"):
        if name in module.PIPELINE_CLASSES and getattr(module, "matches", lambda _pipe: True)(pipe):
            return family.name
    return UNKNOWN


def pipeline_aspect(family: str):
    """The pipeline aspect of ``family``; ``FamilyNotSupported`` (one line) when loradex has no
    pipeline for it, e.g. a family it only recognises."""
    from loradex.families import FamilyNotSupported, find_family

    found = find_family(family)
    module = found.aspect("pipeline") if found is not None else None
    if module is None:
        raise FamilyNotSupported(family, "render")
    return module


# --- single-file checkpoints: which pipeline class -------------------------------------------------

def _family_from_single_file_keys(path: Path) -> str | None:
    """The family whose ``SINGLE_FILE_MARKERS`` (key prefixes of its original ldm / sgm layout)
    occur in the file's header."""
    if path.suffix.lower() != ".safetensors":
        return None
    from safetensors import safe_open

    from loradex.families import aspects

    with safe_open(str(path), framework="pt") as fh:  # header only
        keys = list(fh.keys())
    for family, module in aspects("pipeline"):
        markers = getattr(module, "SINGLE_FILE_MARKERS", ())
        if markers and any(k.startswith(markers) for k in keys):
            return family.name
    return None


def _single_file_families() -> list[str]:
    from loradex.families import aspects

    return [f.name for f, m in aspects("pipeline") if getattr(m, "SINGLE_FILE_MARKERS", ())]


# --- hashing ---------------------------------------------------------------------------------------

def _file_sha256(path: Path) -> str:
    # HF cache snapshots are symlinks to blobs named by their sha256 (LFS files): trust the name
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if SHA256_HEX.match(target.name):
            return target.name
    from loradex.registry.files.hashing import hash_file

    return hash_file(path).sha256


def folder_hash(folder: Path) -> str:
    lines = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if not path.is_file() or path.suffix.lower() not in HASHED_SUFFIXES:
            continue
        if any(part.startswith(".") for part in Path(rel).parts):
            continue  # .cache/, .git/, temp files
        lines.append(f"{rel}\0{_file_sha256(path)}\n")
    if not lines:
        raise UnsupportedFormat(folder, "no weight or config files to hash")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def tiny_hash(kind: str, seed: int) -> str:
    from loradex.trainer.tiny_pipeline import recipe_string

    return hashlib.sha256(f"{recipe_string(kind)}\0seed={seed}".encode()).hexdigest()


# --- loading -------------------------------------------------------------------------------------

def load_base(ref_or_path: str | os.PathLike, *, kind_hint: str | None = None, dtype=None,
              allow_pickle: bool = False, config: str | None = None, seed: int = 0):
    """Load a base pipeline offline; returns ``(pipeline, BaseInfo)``.

    ``kind_hint`` (sd1 | sd2 | sdxl) picks the pipeline class for a single-file checkpoint whose
    keys do not tell; ``config`` is a local diffusers folder giving component configs for
    ``from_single_file`` (otherwise it needs the default config repo in the HF cache); ``seed``
    seeds the tiny pipelines. ``dtype`` defaults to ``torch.float32``.
    """
    import torch

    dtype = dtype or torch.float32
    text = str(ref_or_path)
    if text.startswith(TINY_PREFIX) and not Path(text).exists():
        return _load_tiny(text, dtype, seed)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise UnsupportedFormat(path, "folder has no model_index.json, so it is not a diffusers "
                                          "pipeline folder")
        return _load_folder(path, text, dtype, source="folder")
    if path.is_file():
        return _load_single_file(path, text, dtype, kind_hint=kind_hint, allow_pickle=allow_pickle,
                                 config=config)
    if HUB_ID_RE.match(text) and not text.startswith((".", "/", "~")):
        return _load_hub_cached(text, dtype)
    from loradex.trainer.tiny_pipeline import tiny_names

    raise NotFound(f"base {text!r} is not a file, a folder, a hub id (owner/name) or one of "
                   + ", ".join(tiny_names()))


def _load_tiny(name: str, dtype, seed: int):
    from loradex.families import find_family
    from loradex.trainer.tiny_pipeline import build_tiny_pipeline, tiny_kinds, tiny_names

    kind = name[len(TINY_PREFIX):]
    if kind not in tiny_kinds():
        if find_family(kind) is not None:
            pipeline_aspect(kind)  # a family loradex only recognises: FamilyNotSupported, one line
        raise NotFound(f"unknown tiny base {name!r}", hint="use one of " + ", ".join(tiny_names()))
    pipe = build_tiny_pipeline(kind, seed=seed)  # float32
    if dtype != pipe.dtype:
        pipe = pipe.to(dtype=dtype)
    info = BaseInfo(ref=name if seed == 0 else f"{name}:seed={seed}", family=pipeline_family(pipe),
                    hash=tiny_hash(kind, seed), source="tiny")
    return pipe, info


def _dtype_kwargs(dtype) -> dict:
    # diffusers renamed torch_dtype to dtype (the old name warns on every load); ask the loader
    import inspect

    from diffusers import DiffusionPipeline

    takes_dtype = 'kwargs.pop("dtype"' in inspect.getsource(DiffusionPipeline.from_pretrained)
    return {"dtype" if takes_dtype else "torch_dtype": dtype}


def _load_folder(folder: Path, ref: str, dtype, *, source: str):
    from diffusers import DiffusionPipeline

    index = json.loads((folder / "model_index.json").read_text())
    extra = {}
    # pipelines saved without a safety checker must not try to fetch one
    if "safety_checker" in index:
        extra = {"safety_checker": None, "requires_safety_checker": False}
    pipe = DiffusionPipeline.from_pretrained(str(folder), local_files_only=True, **_dtype_kwargs(dtype),
                                             **extra)
    pipe.set_progress_bar_config(disable=True)
    info = BaseInfo(ref=ref, family=pipeline_family(pipe), hash=folder_hash(folder), source=source,
                    path=str(folder.resolve()))
    return pipe, info


def _load_single_file(path: Path, ref: str, dtype, *, kind_hint, allow_pickle, config):
    import diffusers

    from loradex.registry.files.hashing import hash_file

    suffix = path.suffix.lower()
    if suffix in SINGLE_FILE_PICKLE and not allow_pickle:
        raise UnsafePickle(path, "a pickled checkpoint is refused by default",
                           hint="convert it to .safetensors, or pass allow_pickle=True "
                                "(it is then read with torch.load(weights_only=True))")
    if suffix not in SINGLE_FILE_SAFE | SINGLE_FILE_PICKLE:
        raise UnsupportedFormat(path, f"unknown checkpoint extension {suffix!r}",
                                hint="expected .safetensors (or .ckpt with allow_pickle)")
    family = _family_from_single_file_keys(path) or kind_hint
    loadable = _single_file_families()
    if family not in loadable:
        raise UsageError(f"{path}: cannot tell which model family this checkpoint is",
                         hint="pass kind_hint as one of " + ", ".join(loadable)
                              + " (other families load from a diffusers folder)")
    cls = getattr(diffusers, pipeline_aspect(family).PIPELINE_CLASS)
    kwargs = {"local_files_only": True, **_dtype_kwargs(dtype)}
    if config:
        kwargs["config"] = str(config)
    try:
        pipe = cls.from_single_file(str(path), **kwargs)
    except (OSError, ValueError) as exc:
        if "local" in str(exc).lower() or "cache" in str(exc).lower() or "connect" in str(exc).lower():
            raise NotFound(f"{path}: diffusers needs the component configs of a {family} pipeline, "
                           "which are not in the local Hugging Face cache",
                           hint="pass config=<a local diffusers folder of the same family> or "
                                "download the default config repo first with `hf download …`") from exc
        raise
    pipe.set_progress_bar_config(disable=True)
    info = BaseInfo(ref=ref, family=pipeline_family(pipe),
                    hash=hash_file(path).sha256, source="single_file", path=str(path.resolve()))
    return pipe, info


def _load_hub_cached(repo_id: str, dtype):
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as exc:
        raise NotFound(f"{repo_id!r} is not in the local Hugging Face cache; download it first "
                       f"with `hf download {repo_id}`") from exc
    if not (folder / "model_index.json").is_file():
        raise UnsupportedFormat(folder, f"cached {repo_id!r} is not a diffusers pipeline "
                                        "(no model_index.json)")
    return _load_folder(folder, repo_id, dtype, source="hub")


# --- catalog versions (and everything above) ---------------------------------------------------

TINY_SEED_RE = re.compile(r"^(tiny-[a-z0-9]+):seed=(\d+)$")


def load_any_base(ref: str, catalog=None, *, dtype=None):
    """The one loader behind generate, eval, train and the pipeline side of bake/extract:
    ``(pipe, BaseInfo, catalog ref or None)``.

    Besides what ``load_base`` reads (and ``tiny-sd1:seed=N``), ``ref`` may be a catalog version of
    kind ``checkpoint``. A loradex DreamBooth output (``extra.training.weights == "state_dict"``)
    loads its recorded base and puts its weights in (``apply_state_dict_checkpoint``), so it needs
    no config download and reads the original-layout files as well as the older diffusers-keyed
    ones; any other checkpoint is read from its blob by ``load_base``.
    """
    text = str(ref)
    seeded = TINY_SEED_RE.match(text)
    if seeded:
        pipe, info = load_base(seeded.group(1), dtype=dtype, seed=int(seeded.group(2)))
        return pipe, info, None
    looks_like_path = text.startswith(TINY_PREFIX) or Path(text).expanduser().exists() or (
        "/" in text and "@" not in text)
    if catalog is None or looks_like_path:
        pipe, info = load_base(text, dtype=dtype)
        return pipe, info, None
    try:
        version = catalog.resolve(text)
        kind = catalog.get_adapter(version.adapter).kind
    except (NotFound, ValueError) as exc:
        raise NotFound(f"base {text!r} is not a file, folder, cached hub id, tiny base or catalog version") from exc
    if kind != "checkpoint":
        raise UsageError(f"base {text} is a {kind}, not a checkpoint",
                         hint="give a checkpoint: a diffusers folder, a .safetensors file or a checkpoint ref")
    trained = (version.extra or {}).get("training") or {}
    if trained.get("weights") == "state_dict" and trained.get("base"):
        pipe, _, _ = load_any_base(trained["base"]["ref"], catalog, dtype=dtype)
        apply_state_dict_checkpoint(pipe, catalog.blobs.path_for(version.sha256))
        family = trained["base"].get("family") or pipeline_family(pipe)
    else:
        from loradex.trainer.generate import blob_as_file

        pipe, loaded = load_base(blob_as_file(catalog, version), dtype=dtype)
        family = loaded.family
    return pipe, BaseInfo(ref=version.ref, family=family, hash=version.sha256, source="catalog"), version.ref


def apply_state_dict_checkpoint(pipe, path) -> None:
    """Put a loradex DreamBooth file into ``pipe`` (its base); every key must land. Two layouts:
    the original single-file one (``model.diffusion_model.*`` …, ``merge.checkpoint_layout``) and
    the older diffusers-keyed one (UNet keys bare, text encoders under ``text_encoder.`` /
    ``text_encoder_2.``)."""
    from safetensors.torch import load_file

    from loradex.merge.conventions.checkpoint_layout import is_ldm_checkpoint, ldm_to_components
    from loradex.registry.errors import CoverageError

    state = load_file(str(path))
    if is_ldm_checkpoint(state):
        try:
            parts = ldm_to_components(state, pipe)
        except UnsupportedFormat as exc:
            raise UnsupportedFormat(path, f"does not fit its base: {exc}") from exc
    else:
        parts = {"unet": {}}
        for key, tensor in state.items():
            head, _, rest = key.partition(".")
            if head in ("text_encoder", "text_encoder_2"):
                parts.setdefault(head, {})[rest] = tensor
            else:
                parts["unet"][key] = tensor
    for component, sd in parts.items():
        module = getattr(pipe, component, None)
        if module is None:
            raise CoverageError(f"{path}: the base has no {component}", sorted(sd)[:5])
        result = module.load_state_dict(sd, strict=False)
        if result.unexpected_keys:
            raise CoverageError(f"{path}: keys {component} does not have", result.unexpected_keys)
