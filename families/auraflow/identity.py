"""AuraFlow (v0.1-v0.3): 4 MMDiT + 32 single DiT blocks, 3072 wide, 8192-row SwiGLU MLPs.
diffusers names ``joint_transformer_blocks.N.attn.to_q``, ``ff.linear_1`` / ``out_projection``,
``single_transformer_blocks.N.ff.out_projection``; original (ComfyUI) ``double_layers.N.attn.w2q``,
``mlpX.c_fc1``, ``single_layers.N.attn.w1q``."""

from __future__ import annotations

from ..identity_rules import MARKER, NAMING, any_name, matching, width_of

WIDTH = 3072
TRANSFORMER_ROOTS = ("joint_transformer_blocks", "double_layers", "single_layers")

_NAMES = (r"(joint_transformer_blocks_\d+_|single_transformer_blocks_\d+_ff_out_projection|"
          r"(double|single)_layers_\d+_(attn_w[12][qkvo]|mlp[CX]?_c_|mod[CX]?))")


def evidence(modules) -> list[tuple[str, str, int]]:
    if not any_name(modules, "^" + _NAMES):
        return []
    w = width_of(modules, r"(joint_transformer_blocks_\d+_attn_to_q|(double|single)_layers_\d+_attn_w[12]q)$")
    if w == WIDTH or 8192 in {m.in_features for m in matching(modules, _NAMES)}:
        return [("auraflow", "3072-wide AuraFlow MMDiT / single DiT blocks", MARKER)]
    return [("auraflow", "AuraFlow block names", NAMING)]
