"""HiDream-I1: 16 ``double_stream_blocks`` + 32 ``single_stream_blocks`` (``.block.attn1.to_q``,
``to_q_t``, mixture-of-experts ``ff_i.experts.N.w1``), 2560 wide. ComfyUI and the trainers use the
diffusers names."""

from __future__ import annotations

from ..identity_rules import MARKER, NAMING, matching, width_of

WIDTH = 2560
TRANSFORMER_ROOTS = ("double_stream_blocks", "single_stream_blocks", "caption_projection", "p_embedder", "t_embedder")

_BLOCKS = r"(double|single)_stream_blocks_\d+_block_"


def evidence(modules) -> list[tuple[str, str, int]]:
    if not matching(modules, _BLOCKS):
        return []
    attention = width_of(modules, r"(double|single)_stream_blocks_\d+_block_attn1_to_[qkv]$")
    experts = width_of(modules, r"(double|single)_stream_blocks_\d+_block_ff_i_(shared_experts|experts_\d+)_w1$")
    if WIDTH in (attention, experts):
        return [("hidream", "2560-wide double/single stream blocks (HiDream-I1)", MARKER)]
    return [("hidream", "HiDream double/single stream block names", NAMING)]
