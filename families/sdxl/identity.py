"""SDXL by shape: 2048-wide cross-attention context, a second (1280-wide OpenCLIP bigG) text
encoder; by name: kohya's SGM UNet names (``input_blocks_4_1``) and ``lora_te1_`` / ``lora_te2_``.
Pony, Illustrious and NoobAI are key-identical to SDXL (their variants come from metadata)."""

from __future__ import annotations

import re

from ..identity_rules import NAMING, STRONG, first_text_encoder_width, in_widths, unet_context_widths

CROSS_ATTENTION_WIDTH = 2048
TEXT_ENCODER_WIDTH = 1280
EMBEDDING_PAIR = (768, 1280)  # clip_l + clip_g vectors
CHECKPOINT_CONTEXT_WIDTH = CROSS_ATTENTION_WIDTH
CHECKPOINT_MARKERS = [(r"^conditioner\.embedders\.1\.", "second text encoder (conditioner.embedders.1)")]

_SGM = re.compile(r"(^|[._])(input_blocks|middle_block|output_blocks)[._]")


def evidence(modules) -> list[tuple[str, str, int]]:
    ev = []
    if unet_context_widths(modules, CROSS_ATTENTION_WIDTH):
        ev.append(("sdxl", "UNet cross-attention width 2048", STRONG))
    if any(_SGM.search(m.name) for m in modules if m.component == "unet"):
        ev.append(("sdxl", "kohya SDXL (SGM) UNet module names", NAMING))
    te2 = [m for m in modules if m.component == "text_encoder_2"]
    third = any(m.component == "text_encoder_3" for m in modules)  # SD3 has CLIP-G and a T5 beside it
    if te2 and not third:
        if TEXT_ENCODER_WIDTH in in_widths(te2):
            ev.append(("sdxl", "second text encoder of width 1280", STRONG))
        else:
            ev.append(("sdxl", "a second text encoder", NAMING))
    if first_text_encoder_width(modules) == TEXT_ENCODER_WIDTH:
        ev.append(("sdxl", "text encoder of width 1280 (OpenCLIP bigG)", STRONG))
    if not third and any(m.component == "text_encoder" and m.name.startswith("lora_te1_") for m in modules):
        ev.append(("sdxl", "kohya lora_te1_/lora_te2_ prefixes (SDXL)", NAMING))
    return ev
