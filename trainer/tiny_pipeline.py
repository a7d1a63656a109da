"""Tiny, random-initialised SD1 / SDXL pipelines for tests, benches and the offline demo.

Sizes follow diffusers' own pipeline tests (see ../shared/NOTES-tiny-models.md): a ~1M-parameter
UNet, a two-block VAE (scale factor 2) and a 32-wide CLIP text encoder. Every component is built
right after ``torch.manual_seed(seed + offset)``, so the same seed gives bit-identical weights
whatever was built before.

The tokenizer is the trap: transformers 5.x ignores ``vocab_file=`` in ``CLIPTokenizer(...)``
and silently yields a 3-token vocabulary, so we write ``vocab.json`` + ``merges.txt`` into a
folder and load it with ``from_pretrained(folder, model_max_length=77)``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

# --- the build recipe (also what BaseInfo hashes for the special names tiny-sd1 / tiny-sdxl) ---

# A handful of merges so the BPE actually merges something; every merged token is in the vocab.
TOKENIZER_MERGES = ("t h", "th e</w>", "a n", "i n", "e r</w>", "o n</w>")
MAX_TOKENS = 77

SD1_RECIPE = {
    "unet": dict(block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4,
                 out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32),
    "vae": dict(block_out_channels=(32, 64), in_channels=3, out_channels=3,
                down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), latent_channels=4),
    "text_encoder": dict(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                         num_hidden_layers=2, layer_norm_eps=1e-5, hidden_act="gelu",
                         max_position_embeddings=MAX_TOKENS),
    "scheduler": dict(cls="DDIMScheduler", beta_start=0.00085, beta_end=0.012,
                      beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                      steps_offset=1),
}

SDXL_RECIPE = {
    # cross_attention_dim 64 = the two text encoders' hidden states concatenated (32 + 32);
    # projection_class_embeddings_input_dim 80 = 6 time ids x 8 + pooled projection 32.
    "unet": dict(block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4,
                 out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                 use_linear_projection=True, addition_embed_type="text_time",
                 addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
                 projection_class_embeddings_input_dim=80, cross_attention_dim=64),
    "vae": SD1_RECIPE["vae"],
    "text_encoder": SD1_RECIPE["text_encoder"],
    "text_encoder_2": dict(SD1_RECIPE["text_encoder"], projection_dim=32),
    "scheduler": dict(cls="EulerDiscreteScheduler", beta_start=0.00085, beta_end=0.012,
                      beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"),
}

RECIPES = {"sd1": SD1_RECIPE, "sdxl": SDXL_RECIPE}


def recipe_string(kind: str) -> str:
    """Canonical text of a tiny pipeline's recipe (stable across runs: sorted JSON)."""
    if kind not in RECIPES:
        raise ValueError(f"unknown tiny pipeline kind {kind!r}; expected one of {sorted(RECIPES)}")
    recipe = {"kind": kind, "components": RECIPES[kind], "merges": TOKENIZER_MERGES,
              "max_tokens": MAX_TOKENS}
    return json.dumps(recipe, sort_keys=True, separators=(",", ":"))


# --- tokenizer ------------------------------------------------------------------------------

def _bytes_to_unicode() -> list[str]:
    """GPT-2's reversible byte -> printable character table (256 entries, byte order)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    table = dict(zip(printable, codes))
    return [chr(table[b]) for b in range(256)]


def write_tiny_tokenizer_files(folder: Path) -> Path:
    """Write ``vocab.json`` + ``merges.txt`` of a complete byte-level CLIP vocabulary (~520 ids)."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars]
    for merge in TOKENIZER_MERGES:
        merged = merge.replace(" ", "")
        if merged not in tokens:
            tokens.append(merged)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    # CLIP's merges reader skips the first line (a "#version" header)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(TOKENIZER_MERGES) + "\n",
                                       encoding="utf-8")
    return folder


def build_tiny_tokenizer():
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory(prefix="loradex-tiny-tok-") as tmp:
        folder = write_tiny_tokenizer_files(Path(tmp))
        return CLIPTokenizer.from_pretrained(str(folder), model_max_length=MAX_TOKENS)


# --- components ------------------------------------------------------------------------------

def _seeded(seed: int, offset: int, make: Callable):
    import torch

    torch.manual_seed(seed + offset)
    return make()


def _text_encoder_config(tokenizer, params: dict):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                          **params)


def _scheduler(params: dict):
    import diffusers

    params = dict(params)
    cls = getattr(diffusers, params.pop("cls"))
    return cls(**params)


def _common_components(recipe: dict, seed: int) -> dict:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = build_tiny_tokenizer()
    return {
        "unet": _seeded(seed, 0, lambda: UNet2DConditionModel(**recipe["unet"])),
        "vae": _seeded(seed, 1, lambda: AutoencoderKL(**recipe["vae"])),
        "text_encoder": _seeded(
            seed, 2, lambda: CLIPTextModel(_text_encoder_config(tokenizer, recipe["text_encoder"]))),
        "tokenizer": tokenizer,
        "scheduler": _scheduler(recipe["scheduler"]),
    }


def build_tiny_sd1_pipeline(seed: int = 0):
    """A ``StableDiffusionPipeline`` with random tiny components (float32, CPU, eval mode)."""
    from diffusers import StableDiffusionPipeline

    parts = _common_components(SD1_RECIPE, seed)
    pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                   image_encoder=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_sdxl_pipeline(seed: int = 0):
    """A ``StableDiffusionXLPipeline`` with random tiny components (two text encoders)."""
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModelWithProjection

    parts = _common_components(SDXL_RECIPE, seed)
    tokenizer_2 = build_tiny_tokenizer()
    parts["text_encoder_2"] = _seeded(
        seed, 3, lambda: CLIPTextModelWithProjection(
            _text_encoder_config(tokenizer_2, SDXL_RECIPE["text_encoder_2"])))
    parts["tokenizer_2"] = tokenizer_2
    pipe = StableDiffusionXLPipeline(**parts, image_encoder=None, feature_extractor=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


TINY_BUILDERS: dict[str, Callable] = {"sd1": build_tiny_sd1_pipeline, "sdxl": build_tiny_sdxl_pipeline}


def build_tiny_pipeline(kind: str, seed: int = 0):
    try:
        builder = TINY_BUILDERS[kind]
    except KeyError:
        raise ValueError(f"unknown tiny pipeline kind {kind!r}; expected one of {sorted(TINY_BUILDERS)}") from None
    return builder(seed=seed)


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
        pipe.save_pretrained(str(tmp), safe_serialization=True)
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
