"""Lumina Image 2.0 (NextDiT, 2304 wide, 26 layers, grouped-query attention: k / v 768 rows).
Original names ``layers.N.attention.qkv`` (2304 + 2 × 768 rows), ``feed_forward.w1/w2/w3``;
diffusers ``layers.N.attn.to_q``, ``feed_forward.linear_1/2/3``, ``norm1.linear``."""

from __future__ import annotations

from ..identity_rules import MARKER, matching
from ..z_image.identity import _NEXTDIT, nextdit_width

WIDTH = 2304
TRANSFORMER_ROOTS = ("layers", "noise_refiner", "context_refiner", "time_caption_embed")


def evidence(modules) -> list[tuple[str, str, int]]:
    if matching(modules, _NEXTDIT) and nextdit_width(modules) == WIDTH:
        return [("lumina2", "2304-wide NextDiT layers (Lumina 2)", MARKER)]
    return []
