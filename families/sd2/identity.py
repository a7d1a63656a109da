"""SD 2.x by shape: 1024-wide cross-attention context and text encoder (OpenCLIP ViT-H)."""

from __future__ import annotations

from ..identity_rules import STRONG, first_text_encoder_width, unet_context_widths

CROSS_ATTENTION_WIDTH = 1024
TEXT_ENCODER_WIDTH = 1024
EMBEDDING_WIDTHS = {1024: "embedding width 1024"}
CHECKPOINT_CONTEXT_WIDTH = CROSS_ATTENTION_WIDTH


def evidence(modules) -> list[tuple[str, str, int]]:
    ev = []
    if unet_context_widths(modules, CROSS_ATTENTION_WIDTH):
        ev.append(("sd2", "UNet cross-attention width 1024", STRONG))
    if first_text_encoder_width(modules) == TEXT_ENCODER_WIDTH:
        ev.append(("sd2", "text encoder width 1024 (OpenCLIP ViT-H)", STRONG))
    return ev
