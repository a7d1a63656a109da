"""SD 2.x module names (the ``naming`` aspect; fields described in ``families/unet_naming.py``).

The UNet has SD 1.x's module tree (its ``proj_in`` / ``proj_out`` are Linear, same names); the
OpenCLIP-H text encoder is ``lora_te_`` in kohya files. The original single-file layout is not
written for 2.x (its text encoder has 24 layers where diffusers keeps 23): no LDM prefixes."""

from __future__ import annotations

from ..unet_naming import OPENCLIP_H, UNetLayout

UNET = UNetLayout("sd2", (320, 640, 1280, 1280), (True, True, True, False), (False, True, True, True),
                  (1, 1, 1, 1), 1)
TEXT_ENCODERS = {"text_encoder": OPENCLIP_H}
KOHYA_UNET_NAMES = "diffusers"
KOHYA_TEXT_ENCODER_PREFIXES = {"text_encoder": "lora_te_"}
KOHYA_MARKERS: tuple[str, ...] = ()
LDM_TEXT_ENCODER_PREFIXES: dict[str, str] = {}
CONV1X1_LEAVES = ("conv_shortcut",)
SAFELORAS_MODULE_ORDER = True
