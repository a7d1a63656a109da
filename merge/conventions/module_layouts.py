"""Module-name tables of the models LoRA files target, generated from their block structure.

A LoRA key names a module of the base model. Conversions need the *real* module paths
(kohya replaces every "." with "_", so "to_out.0" and "ff.net.0.proj" cannot be recovered by a
plain replace), and SDXL files name the UNet in the original SGM layout
(``input_blocks.4.1…``) instead of diffusers' (``down_blocks.1.attentions.0…``).

Everything here is derived from a small structural description (``UNetLayout``, ``TextEncoderLayout``,
declared by each UNet family in ``loradex/families/<f>/naming.py``: ``UNET``, ``TEXT_ENCODERS``)
the way diffusers' ``UNet2DConditionModel`` and transformers' ``CLIPTextModel`` build themselves,
so the tables cannot drift from hand-typed lists. Only LoRA-able modules (Linear / Conv) are listed.
The tests check these tables against diffusers' own UNet built on the meta device.
"""

from __future__ import annotations

from functools import lru_cache
from types import ModuleType

from loradex.families import aspects, find_family
from loradex.families.unet_naming import TextEncoderLayout, UNetLayout

UNET_LAYOUTS: dict[str, UNetLayout] = {}
TEXT_ENCODER_LAYOUTS: dict[str, TextEncoderLayout] = {}
# Which layouts serve which component, per base family: {"sdxl": {"unet": "sdxl", "text_encoder": "clip-l", …}}
BASE_COMPONENTS: dict[str, dict[str, str]] = {}


def register_unet_layout(layout: UNetLayout) -> UNetLayout:
    UNET_LAYOUTS[layout.name] = layout
    return layout


def register_text_encoder_layout(layout: TextEncoderLayout) -> TextEncoderLayout:
    TEXT_ENCODER_LAYOUTS[layout.name] = layout
    return layout


def unet_naming(base: str | None) -> ModuleType | None:
    """The UNet family's ``naming`` aspect (declares ``UNET``), or None for other/unknown bases."""
    family = find_family(base)
    naming = family.aspect("naming") if family is not None else None
    return naming if naming is not None and hasattr(naming, "UNET") else None


def unet_namings() -> list[tuple[str, ModuleType]]:
    """(family name, naming aspect) of every UNet family, registration order."""
    return [(family.name, naming) for family, naming in aspects("naming") if hasattr(naming, "UNET")]


# The tables every UNet family declares in its folder (loradex/families/<f>/naming.py).
for _family, _naming in unet_namings():
    register_unet_layout(_naming.UNET)
    for _te in _naming.TEXT_ENCODERS.values():
        register_text_encoder_layout(_te)
    BASE_COMPONENTS[_family] = {"unet": _naming.UNET.name,
                                **{c: te.name for c, te in _naming.TEXT_ENCODERS.items()}}

ATTENTION_LINEARS = ("to_q", "to_k", "to_v", "to_out.0")


# --- diffusers UNet ---------------------------------------------------------------------------
def _resnet(prefix: str, has_shortcut: bool) -> list[str]:
    names = [f"{prefix}.conv1", f"{prefix}.time_emb_proj", f"{prefix}.conv2"]
    if has_shortcut:
        names.append(f"{prefix}.conv_shortcut")
    return names


def _transformer(prefix: str, layers: int) -> list[str]:
    names = [f"{prefix}.proj_in"]
    for t in range(layers):
        block = f"{prefix}.transformer_blocks.{t}"
        for attn in ("attn1", "attn2"):
            names += [f"{block}.{attn}.{lin}" for lin in ATTENTION_LINEARS]
        names += [f"{block}.ff.net.0.proj", f"{block}.ff.net.2"]
    names.append(f"{prefix}.proj_out")
    return names


@lru_cache(maxsize=None)
def unet_module_paths(layout: UNetLayout) -> tuple[str, ...]:
    """Every Linear/Conv module path of the UNet, diffusers spelling."""
    ch = layout.block_out_channels
    n = len(ch)
    lpb = layout.layers_per_block
    names = ["conv_in", "time_embedding.linear_1", "time_embedding.linear_2"]
    if layout.has_add_embedding:
        names += ["add_embedding.linear_1", "add_embedding.linear_2"]
    out_ch = ch[0]
    for b in range(n):
        in_ch, out_ch = out_ch, ch[b]
        for j in range(lpb):
            res_in = in_ch if j == 0 else out_ch
            names += _resnet(f"down_blocks.{b}.resnets.{j}", res_in != out_ch)
            if layout.down_has_attention[b]:
                names += _transformer(f"down_blocks.{b}.attentions.{j}", layout.transformer_layers[b])
        if b < n - 1:
            names.append(f"down_blocks.{b}.downsamplers.0.conv")
    rev = tuple(reversed(ch))
    prev_out = rev[0]
    for b in range(n):
        out_c = rev[b]
        in_c = rev[min(b + 1, n - 1)]
        for j in range(lpb + 1):
            skip = in_c if j == lpb else out_c
            res_in = prev_out if j == 0 else out_c
            names += _resnet(f"up_blocks.{b}.resnets.{j}", res_in + skip != out_c)
            if layout.up_has_attention[b]:
                names += _transformer(f"up_blocks.{b}.attentions.{j}", layout.up_transformer_layers[b])
        if b < n - 1:
            names.append(f"up_blocks.{b}.upsamplers.0.conv")
        prev_out = out_c
    names += _resnet("mid_block.resnets.0", False)
    names += _transformer("mid_block.attentions.0", layout.mid_transformer_layers)
    names += _resnet("mid_block.resnets.1", False)
    names.append("conv_out")
    return tuple(names)


# --- SGM (original Stability) spelling ------------------------------------------------------
_SGM_RESNET = {"in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
               "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}


def _sgm_resnet_pairs(sgm: str, diff: str, has_shortcut: bool) -> list[tuple[str, str]]:
    pairs = [(f"{sgm}.{k}", f"{diff}.{v}") for k, v in _SGM_RESNET.items() if k != "skip_connection"]
    if has_shortcut:
        pairs.append((f"{sgm}.skip_connection", f"{diff}.conv_shortcut"))
    return pairs


def _transformer_suffixes(layers: int) -> list[str]:
    return [p[len("x."):] for p in _transformer("x", layers)]


@lru_cache(maxsize=None)
def sgm_to_diffusers(layout: UNetLayout) -> dict[str, str]:
    """Map SGM module paths (``input_blocks.4.1.proj_in``) to diffusers paths
    (``down_blocks.1.attentions.0.proj_in``), derived the same way as diffusers'
    ``_maybe_map_sgm_blocks_to_diffusers``: input block i>0 is down block (i-1)//(L+1), layer
    (i-1)%(L+1) (layer L is the downsampler ``op``); output block i is up block i//(L+1), layer
    i%(L+1); the middle block is resnet, attention, resnet."""
    diffusers = set(unet_module_paths(layout))
    lpb = layout.layers_per_block
    pairs: list[tuple[str, str]] = [
        ("input_blocks.0.0", "conv_in"), ("out.2", "conv_out"),
        ("time_embed.0", "time_embedding.linear_1"), ("time_embed.2", "time_embedding.linear_2"),
        ("label_emb.0.0", "add_embedding.linear_1"), ("label_emb.0.2", "add_embedding.linear_2"),
    ]
    n = len(layout.block_out_channels)
    i = 1
    for b in range(n):
        for j in range(lpb):
            diff_res = f"down_blocks.{b}.resnets.{j}"
            pairs += _sgm_resnet_pairs(f"input_blocks.{i}.0", diff_res,
                                       f"{diff_res}.conv_shortcut" in diffusers)
            if layout.down_has_attention[b]:
                for suffix in _transformer_suffixes(layout.transformer_layers[b]):
                    pairs.append((f"input_blocks.{i}.1.{suffix}", f"down_blocks.{b}.attentions.{j}.{suffix}"))
            i += 1
        if b < n - 1:
            pairs.append((f"input_blocks.{i}.0.op", f"down_blocks.{b}.downsamplers.0.conv"))
            i += 1
    pairs += _sgm_resnet_pairs("middle_block.0", "mid_block.resnets.0", False)
    for suffix in _transformer_suffixes(layout.mid_transformer_layers):
        pairs.append((f"middle_block.1.{suffix}", f"mid_block.attentions.0.{suffix}"))
    pairs += _sgm_resnet_pairs("middle_block.2", "mid_block.resnets.1", False)
    i = 0
    for b in range(n):
        for j in range(lpb + 1):
            diff_res = f"up_blocks.{b}.resnets.{j}"
            pairs += _sgm_resnet_pairs(f"output_blocks.{i}.0", diff_res,
                                       f"{diff_res}.conv_shortcut" in diffusers)
            sub = 1
            if layout.up_has_attention[b]:
                for suffix in _transformer_suffixes(layout.up_transformer_layers[b]):
                    pairs.append((f"output_blocks.{i}.1.{suffix}", f"up_blocks.{b}.attentions.{j}.{suffix}"))
                sub = 2
            if j == lpb and b < n - 1:
                pairs.append((f"output_blocks.{i}.{sub}.conv", f"up_blocks.{b}.upsamplers.0.conv"))
            i += 1
    return {sgm: diff for sgm, diff in pairs if diff in diffusers}


@lru_cache(maxsize=None)
def diffusers_to_sgm(layout: UNetLayout) -> dict[str, str]:
    return {diff: sgm for sgm, diff in sgm_to_diffusers(layout).items()}


# --- CLIP text encoders -----------------------------------------------------------------------
@lru_cache(maxsize=None)
def text_encoder_module_paths(layout: TextEncoderLayout) -> tuple[str, ...]:
    names = []
    for i in range(layout.num_layers):
        layer = f"text_model.encoder.layers.{i}"
        names += [f"{layer}.self_attn.{p}" for p in ("k_proj", "v_proj", "q_proj", "out_proj")]
        names += [f"{layer}.mlp.fc1", f"{layer}.mlp.fc2"]
    if layout.has_projection:
        names.append("text_projection")
    return tuple(names)
