"""SDXL module names (the ``naming`` aspect; fields described in ``families/unet_naming.py``).

kohya's sd-scripts writes the SDXL UNet in the original SGM numbering (``input_blocks_4_1_…``,
``middle_block``, ``output_blocks``) and numbers the two text encoders ``lora_te1_`` (CLIP-L) and
``lora_te2_`` (OpenCLIP-G); the original checkpoint stores them under
``conditioner.embedders.0.transformer.`` and ``conditioner.embedders.1.model.`` (open_clip names).
Pony, Illustrious and NoobAI share every name."""

from __future__ import annotations

from ..unet_naming import CLIP_L, OPENCLIP_G, UNetLayout

UNET = UNetLayout("sdxl", (320, 640, 1280), (False, True, True), (True, True, False),
                  (1, 2, 10), 10, has_add_embedding=True)
TEXT_ENCODERS = {"text_encoder": CLIP_L, "text_encoder_2": OPENCLIP_G}
KOHYA_UNET_NAMES = "sgm"
KOHYA_TEXT_ENCODER_PREFIXES = {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}
KOHYA_MARKERS = ("lora_te2_", "text_encoder_2.", "lora_unet_input_blocks", "lora_unet_output_blocks",
                 "lora_unet_middle_block")
LDM_TEXT_ENCODER_PREFIXES = {"text_encoder": "conditioner.embedders.0.transformer.",
                             "text_encoder_2": "conditioner.embedders.1.model."}
CONV1X1_LEAVES = ("conv_shortcut",)
SAFELORAS_MODULE_ORDER = False  # cloneofsimo's trainer predates SDXL
