"""The family a file is read as when nothing in it names one — the one place these defaults live.

Conversions and merges sometimes must pick a layout for a file without family evidence (a UNet
LoRA whose widths every SD UNet shares, a bare ``transformer.`` LoRA). Code elsewhere reads these
names instead of writing its own ``family or "sd1"``.
"""

from __future__ import annotations

# A UNet LoRA with no sign of a later family: SD 1.x, the first and still the commonest UNet base
# (safeloras module order, LBW block layout, kohya text-encoder prefix ``lora_te_``).
UNET_LORA = "sd1"
# A diffusers/OneTrainer ``transformer.`` LoRA without another DiT family's markers: Flux.1, the
# common one.
DIT_TRANSFORMER = "flux"
