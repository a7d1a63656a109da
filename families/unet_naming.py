"""Shared pieces of the UNet families' ``naming`` aspects (SD 1.x, 2.x, XL): the structure that
names a diffusers ``UNet2DConditionModel`` and a CLIP text encoder, and the text encoders the
families share.

Each UNet family's ``naming.py`` declares (plain data, read by ``merge.conventions``):

- ``UNET``: its :class:`UNetLayout` (block channels, which blocks have attention, transformer
  depth) — the module tables (diffusers and SGM spellings) are generated from it;
- ``TEXT_ENCODERS``: component → :class:`TextEncoderLayout`;
- ``KOHYA_UNET_NAMES``: ``"sgm"`` when kohya's sd-scripts writes the UNet in the original SGM
  numbering (``input_blocks_4_1_…``), ``"diffusers"`` otherwise;
- ``KOHYA_TEXT_ENCODER_PREFIXES``: component → the kohya prefix written for it (``lora_te_`` for
  one encoder, ``lora_te1_`` / ``lora_te2_`` for two);
- ``KOHYA_MARKERS``: key prefixes only this family's LoRA files carry (SGM names, a second encoder);
- ``LDM_TEXT_ENCODER_PREFIXES``: component → its prefix in the original single-file checkpoint,
  for the families loradex reads and writes in that layout;
- ``CONV1X1_LEAVES``: module leaves that are 1×1 convolutions in this UNet (SD 1.x's
  ``proj_in`` / ``proj_out``; SD 2.x and XL made them Linear);
- ``SAFELORAS_MODULE_ORDER``: True when cloneofsimo's safeloras files (numbered modules) follow
  this UNet's module order.

Nothing here imports torch or another loradex package.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UNetLayout:
    """Structure of a diffusers ``UNet2DConditionModel`` (enough to name its modules)."""

    name: str
    block_out_channels: tuple[int, ...]
    down_has_attention: tuple[bool, ...]
    up_has_attention: tuple[bool, ...]
    transformer_layers: tuple[int, ...]  # per down block; up blocks use the reverse
    mid_transformer_layers: int
    layers_per_block: int = 2
    has_add_embedding: bool = False  # SDXL's text_time conditioning MLP

    @property
    def up_transformer_layers(self) -> tuple[int, ...]:
        return tuple(reversed(self.transformer_layers))


@dataclass(frozen=True)
class TextEncoderLayout:
    """Structure of a CLIP text encoder, with module paths under ``text_model.`` (kohya's and
    transformers 4.x spelling; transformers 5.x CLIPTextModel drops that level)."""

    name: str
    num_layers: int
    has_projection: bool = False


CLIP_L = TextEncoderLayout("clip-l", 12)                               # SD1, SDXL te1
OPENCLIP_H = TextEncoderLayout("openclip-h", 23)                       # SD2 (diffusers keeps 23)
OPENCLIP_G = TextEncoderLayout("openclip-g", 32, has_projection=True)  # SDXL te2
