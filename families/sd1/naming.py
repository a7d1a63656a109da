"""SD 1.x module names (the ``naming`` aspect; fields described in ``families/unet_naming.py``).

kohya's sd-scripts names the SD 1.x UNet in diffusers' spelling (``lora_unet_down_blocks_0_…``)
and its one CLIP-L text encoder ``lora_te_``; the original checkpoint stores CLIP-L under
``cond_stage_model.transformer.``. SD 1.x's transformer ``proj_in`` / ``proj_out`` are 1×1
convolutions (2.x made them Linear)."""

from __future__ import annotations

from ..unet_naming import CLIP_L, UNetLayout

UNET = UNetLayout("sd1", (320, 640, 1280, 1280), (True, True, True, False), (False, True, True, True),
                  (1, 1, 1, 1), 1)
TEXT_ENCODERS = {"text_encoder": CLIP_L}
KOHYA_UNET_NAMES = "diffusers"
KOHYA_TEXT_ENCODER_PREFIXES = {"text_encoder": "lora_te_"}
KOHYA_MARKERS: tuple[str, ...] = ()
LDM_TEXT_ENCODER_PREFIXES = {"text_encoder": "cond_stage_model.transformer."}
CONV1X1_LEAVES = ("conv_shortcut", "proj_in", "proj_out")
SAFELORAS_MODULE_ORDER = True
