"""Tiny, random-initialised pipelines for tests, benches and the offline demo, one per family
whose pipeline aspect has a ``build_tiny(seed)`` (``loradex.families.<family>.pipeline``):
``tiny-sd1``, ``tiny-sdxl``, ``tiny-flux``, ``tiny-sd3``.

The recipes (config dicts), the byte-level tokenizers and the seeding live with each family
(``loradex.families.tiny_parts``); this module is the public face: build, save atomically, the
recipe string a tiny base's hash is taken over, and the LoRA module shapes of a live pipeline.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from loradex.families import aspects, find_family, tiny_parts
from loradex.families.tiny_parts import (  # noqa: F401  (public names kept for their callers)
    MAX_TOKENS,
    TOKENIZER_MERGES,
    build_clip_tokenizer as build_tiny_tokenizer,
    build_t5_tokenizer,
    write_clip_tokenizer_files as write_tiny_tokenizer_files,
)

TINY_PREFIX = "tiny-"


def tiny_kinds() -> tuple[str, ...]:
    """Families that build a tiny pipeline (registration order)."""
    return tuple(family.name for family, module in aspects("pipeline") if hasattr(module, "build_tiny"))


def tiny_names() -> tuple[str, ...]:
    return tuple(TINY_PREFIX + kind for kind in tiny_kinds())


def _tiny_aspect(kind: str):
    family = find_family(kind)
    module = family.aspect("pipeline") if family is not None else None
    if module is None or not hasattr(module, "build_tiny"):
        raise ValueError(f"unknown tiny pipeline kind {kind!r}; expected one of {list(tiny_kinds())}")
    return module


def recipe_string(kind: str) -> str:
    """Canonical text of a tiny pipeline's recipe (stable across runs: sorted JSON)."""
    return tiny_parts.recipe_string(kind, _tiny_aspect(kind).TINY_RECIPE)


def build_tiny_pipeline(kind: str, seed: int = 0):
    """The family's tiny pipeline (float32, CPU, eval mode, progress bar off); the same seed
    gives bit-identical weights."""
    return _tiny_aspect(kind).build_tiny(seed=seed)


def build_tiny_sd1_pipeline(seed: int = 0):
    """A ``StableDiffusionPipeline`` with random tiny components."""
    return build_tiny_pipeline("sd1", seed)


def build_tiny_sdxl_pipeline(seed: int = 0):
    """A ``StableDiffusionXLPipeline`` with random tiny components (two text encoders)."""
    return build_tiny_pipeline("sdxl", seed)


def _save_quietly(pipe, folder: Path) -> None:
    """save_pretrained without transformers' "Writing model shards" bars (one per component):
    a tiny base saved for bake/extract is plumbing, not progress a user waits for."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        pipe.save_pretrained(str(folder), safe_serialization=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def save_tiny_pipeline(kind: str, dest: str | os.PathLike, seed: int = 0) -> Path:
    """Write a diffusers folder (``model_index.json`` + components) at ``dest``, atomically:
    the folder is written beside ``dest`` under a temporary name and renamed into place.
    An existing ``dest`` is replaced."""
    from loradex.registry.files.atomic_files import TMP_PREFIX, fsync_dir

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    pipe = build_tiny_pipeline(kind, seed=seed)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=dest.parent))
    try:
        _save_quietly(pipe, tmp)
        if dest.exists():
            # rename the old folder away first so dest never holds a half-written mix
            old = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=dest.parent))
            os.replace(dest, old / "old")
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
        raise
    return dest


# --- LoRA module shapes of a live pipeline (for random adapters that always fit) -----------------

ATTENTION_LEAVES = ("to_q", "to_k", "to_v", "to_out.0")
CLIP_ATTENTION_LEAVES = ("q_proj", "k_proj", "v_proj", "out_proj")


def kohya_module_shapes(pipe, *, unet: bool = True, text_encoder: bool = True) -> dict[str, tuple[int, int]]:
    """kohya module name -> (in_features, out_features) of the UNet attention projections and
    the first text encoder's self-attention projections, read off the loaded modules."""
    import torch

    mods: dict[str, tuple[int, int]] = {}
    if unet:
        for name, module in pipe.unet.named_modules():
            if isinstance(module, torch.nn.Linear) and name.endswith(ATTENTION_LEAVES) and ".attn" in name:
                mods["lora_unet_" + name.replace(".", "_")] = (module.in_features, module.out_features)
    if text_encoder:
        for name, module in pipe.text_encoder.named_modules():
            if isinstance(module, torch.nn.Linear) and name.endswith(CLIP_ATTENTION_LEAVES):
                # kohya keeps the text_model level that transformers 5's CLIPTextModel drops
                path = name if name.startswith("text_model.") else "text_model." + name
                mods["lora_te_" + path.replace(".", "_")] = (module.in_features, module.out_features)
    return mods
