"""Z-Image (S3-DiT, 3840 wide, 30 layers + noise / context refiners). Original names (ComfyUI's
NextDiT: ``layers.N.attention.qkv`` / ``.out``, ``feed_forward.w1/w2/w3``, ``adaLN_modulation.0``);
diffusers: ``layers.N.attention.to_q`` …, same feed-forward names. Lumina 2 shares the layout at 2304."""

from __future__ import annotations

from ..identity_rules import MARKER, matching, width_of

WIDTH = 3840
TRANSFORMER_ROOTS = ("layers", "noise_refiner", "context_refiner", "cap_embedder", "t_embedder", "x_embedder")

_NEXTDIT = r"(layers|noise_refiner|context_refiner)_(\d+)_(attention|attn|feed_forward|adaLN_modulation|norm1)"


def nextdit_width(modules) -> int | None:
    return (width_of(modules, r"(layers|noise_refiner|context_refiner)_\d+_(attention|attn)_(qkv|to_q)$")
            or width_of(modules, r"(layers|noise_refiner|context_refiner)_\d+_feed_forward_(w1|w3|linear_1|linear_3)$"))


def evidence(modules) -> list[tuple[str, str, int]]:
    if matching(modules, _NEXTDIT) and nextdit_width(modules) == WIDTH:
        return [("z-image", "3840-wide NextDiT layers (Z-Image)", MARKER)]
    return []
