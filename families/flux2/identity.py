"""Flux.2 (dev 6144 wide, 8 double + 48 single blocks; Klein 4B 3072 wide, 5 + 20; Klein 9B 4096
wide, 8 + 24). BFL names like Flux.1 (``double_blocks.N.img_attn.qkv``, ``single_blocks.N.linear1``)
but the blocks share their modulation (``double_stream_modulation_img/txt``,
``single_stream_modulation``) and the MLPs are SwiGLU at ratio 3: ``img_mlp.0`` has 6 × width rows,
``linear1`` 9 × width (q, k, v + gate and up), ``linear2`` reads 4 × width. diffusers names:
``ff.linear_in`` / ``linear_out``, ``attn.to_qkv_mlp_proj``."""

from __future__ import annotations

from ..identity_rules import MARKER, any_name, in_widths, matching, out_widths, width_of

WIDTHS = {6144: "Flux.2 dev (6144 wide)", 4096: "Flux.2 Klein 9B (4096 wide)", 3072: "Flux.2 Klein 4B (3072 wide)"}
TRANSFORMER_ROOTS = ("double_stream_modulation_img", "double_stream_modulation_txt", "single_stream_modulation")
CHECKPOINT_MARKERS = [(r"^(model\.diffusion_model\.)?(double|single)_stream_modulation", "Flux.2 shared modulation")]

_NAMES = r"(double_stream_modulation|single_stream_modulation|.*to_qkv_mlp_proj|.*ff(_context)?_linear_(in|out))"


def _width(modules) -> int | None:
    return (width_of(modules, r"(double_blocks|transformer_blocks)_\d+_(img_attn_qkv|attn_to_q)")
            or width_of(modules, r"(single_blocks_\d+_linear1|single_transformer_blocks_\d+_attn_to_qkv_mlp_proj)")
            or min(in_widths(matching(modules, r"(double|single)_stream_modulation")), default=None))


def evidence(modules) -> list[tuple[str, str, int]]:
    w = _width(modules)
    if any_name(modules, "^" + _NAMES):
        return [("flux2", "Flux.2 shared stream modulation / SwiGLU MLP names", MARKER)]
    if w not in WIDTHS:
        return []
    mlp = out_widths(matching(modules, r"double_blocks_\d+_(img|txt)_mlp_0"))
    linear1 = out_widths(matching(modules, r"single_blocks_\d+_linear1"))
    linear2 = in_widths(matching(modules, r"single_blocks_\d+_linear2"))
    if 6 * w in mlp or 9 * w in linear1 or 4 * w in linear2:
        return [("flux2", f"{w}-wide BFL blocks with Flux.2's SwiGLU MLP shapes", MARKER)]
    return []


def notes(modules) -> list[str]:
    w = _width(modules)
    return [f"size: {WIDTHS[w]}"] if w in WIDTHS else []
