"""SDXL LoRA Block Weight (LBW) map: BASE (both text encoders), IN00–IN08, MID, OUT00–OUT08 in the
SGM numbering. 12 numbers (plain LoRA), 20 (LyCORIS: every block).

The sd-webui-lora-block-weight extension ships no SDXL presets; only the uniform ones (NONE, ALL,
ALL0.5) mean the same for any layout, so only they exist here — the others are refused, not guessed.
"""

from __future__ import annotations

ALL_BLOCKS = ("BASE", *[f"IN{i:02d}" for i in range(9)], "MID", *[f"OUT{i:02d}" for i in range(9)])
LAYOUTS = {
    12: ("BASE", "IN04", "IN05", "IN07", "IN08", "MID", "OUT00", "OUT01", "OUT02", "OUT03", "OUT04", "OUT05"),
    20: ALL_BLOCKS,
}
PRESETS = {name: (value,) * 12 for name, value in (("NONE", 0.0), ("ALL", 1.0), ("ALL0.5", 0.5))}
