"""Chroma: Flux.1-schnell's blocks without their modulation layers, plus a distilled guidance
network (``distilled_guidance_layer``: in_proj 64 → 5120, 5 × linear_1/linear_2, out_proj → 3072).

Keys tell Chroma only when that network (or nothing else) is trained; a file adapting the
attention and MLP layers alone is key-identical to a Flux.1 file that skips modulation — then
Flux.1's rule wins and metadata decides (Chroma's parent is flux)."""

from __future__ import annotations

from ..identity_rules import MARKER, NAMING, matching, out_widths

TRANSFORMER_ROOTS = ("distilled_guidance_layer",)
CHECKPOINT_MARKERS = [(r"^(model\.diffusion_model\.)?distilled_guidance_layer\.", "Chroma's distilled guidance layer")]


def evidence(modules) -> list[tuple[str, str, int]]:
    guidance = matching(modules, r"distilled_guidance_layer_")
    if not guidance:
        return []
    if 3072 in out_widths(matching(modules, r"distilled_guidance_layer_out_proj")) or \
            5120 in out_widths(guidance):
        return [("chroma", "distilled_guidance_layer (5120 wide, into 3072)", MARKER)]
    return [("chroma", "distilled_guidance_layer names", NAMING)]


def compatible(modules) -> bool:
    """Keys a Chroma file can have: no per-block modulation (Chroma has none)."""
    from ..flux.identity import MODULATION
    from ..identity_rules import any_name

    return not any_name(modules, MODULATION)
