"""Wan 2.1 / 2.2 by width: ``blocks.N.{self_attn,cross_attn}.{q,k,v,o}``, ``ffn.0`` / ``ffn.2`` in the
original (musubi-tuner ``lora_unet_blocks_…``, ComfyUI ``diffusion_model.blocks…``), diffusers
``blocks.N.attn1/attn2.to_q``, ``ffn.net.0.proj``. 1536 wide → 1.3B (30 blocks), 3072 → 2.2 TI2V 5B
(30 blocks), 5120 → 14B (40 blocks; Wan 2.1 14B and both Wan 2.2 A14B experts are key-identical).
One module serves the three families (registry order: wan-1.3b, wan-5b, wan-14b)."""

from __future__ import annotations

from ..identity_rules import MARKER, NAMING, any_name, matching, width_of

BY_WIDTH = {1536: "wan-1.3b", 3072: "wan-5b", 5120: "wan-14b"}
SIZES = {"wan-1.3b": "Wan 2.1 1.3B (1536 wide, 30 blocks)", "wan-5b": "Wan 2.2 TI2V 5B (3072 wide, 30 blocks)",
         "wan-14b": "Wan 14B (5120 wide, 40 blocks)"}
# (not time_embedding: SD UNets have a top-level one too)
TRANSFORMER_ROOTS = ("blocks", "text_embedding", "time_projection", "condition_embedder")
CHECKPOINT_MARKERS = [(r"^(model\.diffusion_model\.)?blocks\.\d+\.(self_attn|cross_attn)\.", "Wan blocks")]

_BLOCKS = r"blocks_(\d+)_(self_attn|cross_attn|attn1|attn2|ffn)_"


def _width(modules) -> int | None:
    return width_of(modules, r"blocks_\d+_(self_attn_[qkv]|cross_attn_q|attn1_to_[qkv]|attn2_to_q)$") or \
        width_of(modules, r"blocks_\d+_ffn_(0|net_0_proj)$")


def evidence(modules) -> list[tuple[str, str, int]]:
    if not matching(modules, _BLOCKS):
        return []
    family = BY_WIDTH.get(_width(modules))
    if family is None:
        return [("wan-14b", "Wan block names (width not one Wan has)", NAMING)]
    return [(family, f"{_width(modules)}-wide Wan blocks", MARKER)]


def notes(modules) -> list[str]:
    family = BY_WIDTH.get(_width(modules))
    out = [f"size: {SIZES[family]}"] if family else []
    if family == "wan-14b":
        out.append("Wan 2.1 14B and Wan 2.2 A14B (high-noise and low-noise experts) are key-identical: "
                   "metadata or the file name tells them")
    if any_name(modules, r"blocks_\d+_(cross_attn_[kv]_img|attn2_add_[kv]_proj)"):
        out.append("image-to-video cross-attention (k_img / v_img) adapted: an I2V model")
    return out
