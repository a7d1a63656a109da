"""SD 1.x by shape: 768-wide cross-attention context (CLIP ViT-L), a 768-wide text encoder."""

from __future__ import annotations

from ..identity_rules import STRONG, WEAK, first_text_encoder_width, unet_context_widths

CROSS_ATTENTION_WIDTH = 768
TEXT_ENCODER_WIDTH = 768
EMBEDDING_WIDTHS = {768: "embedding width 768"}
CHECKPOINT_CONTEXT_WIDTH = CROSS_ATTENTION_WIDTH


def evidence(modules) -> list[tuple[str, str, int]]:
    ev = []
    if unet_context_widths(modules, CROSS_ATTENTION_WIDTH):
        ev.append(("sd1", "UNet cross-attention width 768", STRONG))
    if first_text_encoder_width(modules) == TEXT_ENCODER_WIDTH:
        # CLIP ViT-L is also SDXL's, Flux's and SD3's first encoder: a hint only
        ev.append(("sd1", "text encoder width 768 (CLIP ViT-L)", WEAK))
    return ev
