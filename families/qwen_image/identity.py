"""Qwen-Image: 60 ``transformer_blocks``, 3072 wide, no single-stream blocks; per-stream leaves
``img_mod.1`` / ``txt_mod.1`` (6 × 3072) and ``img_mlp.net.0.proj`` / ``txt_mlp.net.…``. ComfyUI and
musubi-tuner use the diffusers names (``diffusion_model.`` / ``lora_unet_`` prefixes)."""

from __future__ import annotations

from ..identity_rules import MARKER, any_name, matching, max_index, width_of

WIDTH = 3072
TRANSFORMER_ROOTS = ("img_in", "txt_in")

_LEAVES = r"transformer_blocks_\d+_(img|txt)_(mod_1|mlp_net)"


def evidence(modules) -> list[tuple[str, str, int]]:
    w = width_of(modules, r"transformer_blocks_\d+_attn_(to_q|add_q_proj)") or \
        width_of(modules, r"transformer_blocks_\d+_(img|txt)_mlp_net_0_proj")
    if any_name(modules, "^" + _LEAVES) and w in (None, WIDTH):
        return [("qwen-image", "Qwen-Image per-stream leaves (img_mod.1 / img_mlp.net)", MARKER)]
    if w == WIDTH and not matching(modules, r"single_transformer_blocks_") and \
            (max_index(modules, r"transformer_blocks_(\d+)_") or 0) >= 20:
        return [("qwen-image", "3072-wide joint transformer blocks beyond 20, no single blocks (Qwen-Image: 60)",
                 MARKER)]
    return []
