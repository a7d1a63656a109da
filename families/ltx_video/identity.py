"""LTX-Video: ``transformer_blocks.N.attn1`` (self) / ``attn2`` (cross, from a 2048-wide projected
T5 caption) and ``ff.net.0.proj``, directly under the transformer (no UNet ``down_blocks``): 2048
wide, 28 blocks (2B) or 4096 wide, 48 blocks (13B). The original code, ComfyUI
(``diffusion_model.``) and the trainers use the same names."""

from __future__ import annotations

from ..identity_rules import MARKER, matching, width_of

WIDTHS = {2048: "LTX-Video 2B (2048 wide, 28 blocks)", 4096: "LTX-Video 13B (4096 wide, 48 blocks)"}
TRANSFORMER_ROOTS = ("transformer_blocks", "caption_projection", "adaln_single", "patchify_proj", "proj_in")

_BLOCKS = r"transformer_blocks_\d+_(attn1|attn2|ff_net)_"


def _width(modules) -> int | None:
    return width_of(modules, r"transformer_blocks_\d+_(attn1_to_[qkv]|attn2_to_q)$") or \
        width_of(modules, r"transformer_blocks_\d+_ff_net_0_proj$")


def evidence(modules) -> list[tuple[str, str, int]]:
    blocks = [m for m in matching(modules, _BLOCKS) if m.component != "unet"]
    if blocks and _width(blocks) in WIDTHS and not matching(modules, r"transformer_blocks_\d+_attn_"):
        return [("ltx-video", f"{_width(blocks)}-wide video transformer blocks with attn1/attn2 (LTX-Video)",
                 MARKER)]
    return []


def notes(modules) -> list[str]:
    w = _width([m for m in matching(modules, _BLOCKS) if m.component != "unet"])
    return [f"size: {WIDTHS[w]}"] if w in WIDTHS else []
