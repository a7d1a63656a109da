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

Presets (``BLOCK_PRESETS``, ``resolve_block_weights``): the sd-webui-lora-block-weight extension's
default list for 17-number SD1 vectors (NONE, ALL, INS, IND, INALL, MIDD, OUTD, OUTS, OUTALL,
ALL0.5). The extension ships no SDXL presets, so for SDXL only the uniform ones (NONE, ALL,
ALL0.5) exist; the others are refused there rather than guessed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

_SD1_ALL = ["BASE", *[f"IN{i:02d}" for i in range(12)], "MID", *[f"OUT{i:02d}" for i in range(12)]]
_SDXL_ALL = ["BASE", *[f"IN{i:02d}" for i in range(9)], "MID", *[f"OUT{i:02d}" for i in range(9)]]

BLOCK_LAYOUTS: dict[tuple[str, int], list[str]] = {
    ("sd1", 17): ["BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "MID",
                  "OUT03", "OUT04", "OUT05", "OUT06", "OUT07", "OUT08", "OUT09", "OUT10", "OUT11"],
    ("sd1", 26): _SD1_ALL,
    ("sdxl", 12): ["BASE", "IN04", "IN05", "IN07", "IN08", "MID",
                   "OUT00", "OUT01", "OUT02", "OUT03", "OUT04", "OUT05"],
    ("sdxl", 20): _SDXL_ALL,
}

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


def block_multiplier(module_name: str, vector: Sequence[float], family: str) -> float:
    """The LBW multiplier of one module for a vector of 17/26 (sd1) or 12/20 (sdxl) numbers."""
    from loradex.registry.errors import UsageError

    layout = BLOCK_LAYOUTS.get((family, len(vector)))
    if layout is None:
        lengths = sorted(n for f, n in BLOCK_LAYOUTS if f == family)
        raise UsageError(
            f"a block-weight vector for {family} needs {' or '.join(map(str, lengths)) or 'a known family'} "
            f"numbers, got {len(vector)}"
        )
    block = block_name(module_name)
    if block is None:
        return 1.0  # outside every block (conv_out, time embedding): LBW leaves it alone
    if block not in layout:
        full = max(n for f, n in BLOCK_LAYOUTS if f == family)
        raise UsageError(
            f"{module_name} is in block {block}, which a {len(vector)}-number vector does not cover",
            hint=f"give the {full}-number vector for this adapter",
        )
    return float(vector[layout.index(block)])


def module_weights_from_vectors(
    vectors: Sequence[Sequence[float] | None], family: str
) -> Callable[[str], list[float]]:
    """A ``module_weights`` callback for ``merge_adapters``/``merge_stream``: one vector (or None
    for "all 1") per input adapter."""

    def weights(module_name: str) -> list[float]:
        return [1.0 if v is None else block_multiplier(module_name, v, family) for v in vectors]

    return weights


# --- presets ------------------------------------------------------------------------------------
# The default preset list of the sd-webui-lora-block-weight extension (hako-mikan, DEF_WEIGHT_PRESET
# in scripts/lora_block_weight.py), 17 values each: BASE, IN01…IN08, MID, OUT03…OUT11.
_LBW_DEFAULT_PRESETS_SD1 = """\
NONE:0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0
ALL:1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1
INS:1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0
IND:1,0,0,0,1,1,1,0,0,0,0,0,0,0,0,0,0
INALL:1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0
MIDD:1,0,0,0,1,1,1,1,1,1,1,1,0,0,0,0,0
OUTD:1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0
OUTS:1,0,0,0,0,0,0,0,0,0,0,0,1,1,1,1,1
OUTALL:1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1
ALL0.5:0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5
"""
# The extension ships no SDXL (12-value) presets; the uniform ones mean the same for any layout.
_UNIFORM = {"NONE": 0.0, "ALL": 1.0, "ALL0.5": 0.5}

BLOCK_PRESETS: dict[str, dict[str, tuple[float, ...]]] = {}  # NAME → family → vector


def register_block_preset(name: str, family: str, values: Sequence[float]) -> None:
    if (family, len(values)) not in BLOCK_LAYOUTS:
        raise ValueError(f"preset {name}: {len(values)} values fit no {family} block layout")
    BLOCK_PRESETS.setdefault(name.upper(), {})[family] = tuple(float(v) for v in values)


for _line in _LBW_DEFAULT_PRESETS_SD1.splitlines():
    _name, _, _values = _line.partition(":")
    register_block_preset(_name, "sd1", [float(v) for v in _values.split(",")])
for _name, _value in _UNIFORM.items():
    register_block_preset(_name, "sdxl", [_value] * 12)


def resolve_block_weights(spec: str | Sequence[float], family: str) -> list[float]:
    """An LBW vector from a preset name (``INALL``), comma-separated numbers or a sequence of
    numbers. The length is checked against the family's layouts when the merge applies it."""
    from loradex.registry.errors import UsageError

    if not isinstance(spec, str):
        return [float(v) for v in spec]
    text = spec.strip()
    preset = BLOCK_PRESETS.get(text.upper())
    if preset is not None:
        if family not in preset:
            raise UsageError(
                f"block-weight preset {text} is defined for {', '.join(sorted(preset))} only, not {family}",
                hint=f"give the {min(n for f, n in BLOCK_LAYOUTS if f == family)} numbers instead")
        return list(preset[family])
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        names = ", ".join(n for n, fams in BLOCK_PRESETS.items() if family in fams)
        raise UsageError(f"block weights {text!r}: neither comma-separated numbers nor a {family} preset",
                         hint=f"presets: {names}") from None
