"""A1111 LoRA Block Weight (LBW) vectors: which UNet block a kohya module belongs to.

Block names follow the original SD UNet (SGM) numbering: BASE (text encoders), IN00–IN11, MID,
OUT00–OUT11 (SDXL: IN00–IN08, OUT00–OUT08). diffusers-style kohya names map onto them:
``down_blocks_i_{resnets|attentions}_j`` → IN(1 + 3i + j), ``down_blocks_i_downsamplers`` →
IN(3i + 3), ``up_blocks_i_{resnets|attentions}_j`` → OUT(3i + j), ``up_blocks_i_upsamplers`` →
OUT(3i + 2), ``mid_block`` → MID; SGM names (``input_blocks_N``, ``middle_block``,
``output_blocks_N``) map directly.

Vector lengths: 17 (SD1 LoRA), 26 (SD1 LyCORIS: every block), 12 (SDXL LoRA), 20 (SDXL LyCORIS).
A short vector leaves out the blocks plain attention LoRAs do not touch; a module in such a block
is an error (use the full-length vector) rather than a guessed weight.

Which block names a vector's numbers stand for, per length, and the family's presets, are the
family's declarations (``loradex/families/<f>/blocks.py``: ``LAYOUTS``, ``PRESETS``); the caller
passes them in a :class:`BlockMap` (``merge.conventions.lbw_blocks.block_map``): this module
knows no family.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BlockMap:
    """One family's LBW declarations: vector length → block names, preset name → vector;
    ``preset_owners`` (preset name → the families defining it) only words a refusal."""

    family: str
    layouts: Mapping[int, Sequence[str]] = field(default_factory=dict)
    presets: Mapping[str, Sequence[float]] = field(default_factory=dict)
    preset_owners: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def __post_init__(self):
        for name, values in self.presets.items():
            if len(values) not in self.layouts:
                raise ValueError(f"preset {name}: {len(values)} values fit no {self.family} block layout")

_PATTERNS: list[tuple[re.Pattern, Callable[[re.Match], str]]] = [
    (re.compile(r"^lora_te\d?_"), lambda m: "BASE"),
    (re.compile(r"^lora_unet_down_blocks_(\d+)_(?:resnets|attentions)_(\d+)_"),
     lambda m: f"IN{1 + 3 * int(m[1]) + int(m[2]):02d}"),
    (re.compile(r"^lora_unet_down_blocks_(\d+)_downsamplers_"), lambda m: f"IN{3 * int(m[1]) + 3:02d}"),
    (re.compile(r"^lora_unet_up_blocks_(\d+)_(?:resnets|attentions)_(\d+)_"),
     lambda m: f"OUT{3 * int(m[1]) + int(m[2]):02d}"),
    (re.compile(r"^lora_unet_up_blocks_(\d+)_upsamplers_"), lambda m: f"OUT{3 * int(m[1]) + 2:02d}"),
    (re.compile(r"^lora_unet_(?:mid_block|middle_block)_"), lambda m: "MID"),
    (re.compile(r"^lora_unet_input_blocks_(\d+)_"), lambda m: f"IN{int(m[1]):02d}"),
    (re.compile(r"^lora_unet_output_blocks_(\d+)_"), lambda m: f"OUT{int(m[1]):02d}"),
    (re.compile(r"^lora_unet_conv_in"), lambda m: "IN00"),
]


def block_name(module_name: str) -> str | None:
    """'BASE', 'INnn', 'MID' or 'OUTnn' for a kohya module name; None if it is in no block
    (``conv_out``, ``time_embedding``…)."""
    for pattern, name in _PATTERNS:
        match = pattern.match(module_name)
        if match:
            return name(match)
    return None


def block_multiplier(module_name: str, vector: Sequence[float], blocks: BlockMap) -> float:
    """The LBW multiplier of one module for a vector of one of ``blocks``' lengths (sd1 17/26,
    sdxl 12/20)."""
    from loradex.registry.errors import UsageError

    family = blocks.family
    layout = blocks.layouts.get(len(vector))
    if layout is None:
        lengths = sorted(blocks.layouts)
        raise UsageError(
            f"a block-weight vector for {family} needs {' or '.join(map(str, lengths)) or 'a known family'} "
            f"numbers, got {len(vector)}"
        )
    block = block_name(module_name)
    if block is None:
        return 1.0  # outside every block (conv_out, time embedding): LBW leaves it alone
    if block not in layout:
        raise UsageError(
            f"{module_name} is in block {block}, which a {len(vector)}-number vector does not cover",
            hint=f"give the {max(blocks.layouts)}-number vector for this adapter",
        )
    return float(vector[list(layout).index(block)])


def module_weights_from_vectors(
    vectors: Sequence[Sequence[float] | None], blocks: BlockMap
) -> Callable[[str], list[float]]:
    """A ``module_weights`` callback for ``merge_adapters``/``merge_stream``: one vector (or None
    for "all 1") per input adapter."""

    def weights(module_name: str) -> list[float]:
        return [1.0 if v is None else block_multiplier(module_name, v, blocks) for v in vectors]

    return weights


def resolve_block_weights(spec: str | Sequence[float], blocks: BlockMap) -> list[float]:
    """An LBW vector from a preset name (``INALL``), comma-separated numbers or a sequence of
    numbers. The length is checked against the family's layouts when the merge applies it."""
    from loradex.registry.errors import UsageError

    family = blocks.family
    if not isinstance(spec, str):
        return [float(v) for v in spec]
    text = spec.strip()
    preset = blocks.presets.get(text.upper())
    if preset is not None:
        return [float(v) for v in preset]
    owners = blocks.preset_owners.get(text.upper())
    if owners:
        raise UsageError(
            f"block-weight preset {text} is defined for {', '.join(sorted(owners))} only, not {family}",
            hint=(f"give the {min(blocks.layouts)} numbers instead" if blocks.layouts
                  else f"{family} has no LoRA block-weight layout"))
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        names = ", ".join(blocks.presets)
        raise UsageError(f"block weights {text!r}: neither comma-separated numbers nor a {family} preset",
                         hint=f"presets: {names or 'none'}") from None
