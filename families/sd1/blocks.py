"""SD 1.x LoRA Block Weight (LBW) map: the block names a vector's numbers stand for, per vector
length, and the sd-webui-lora-block-weight extension's presets.

Block names follow the original UNet (SGM) numbering: BASE (text encoder), IN00–IN11, MID,
OUT00–OUT11. 17 numbers (plain LoRA: the blocks attention LoRAs touch), 26 (LyCORIS: every block).
"""

from __future__ import annotations

ALL_BLOCKS = ("BASE", *[f"IN{i:02d}" for i in range(12)], "MID", *[f"OUT{i:02d}" for i in range(12)])
LAYOUTS = {
    17: ("BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "MID",
         "OUT03", "OUT04", "OUT05", "OUT06", "OUT07", "OUT08", "OUT09", "OUT10", "OUT11"),
    26: ALL_BLOCKS,
}

# The default preset list of the sd-webui-lora-block-weight extension (hako-mikan, DEF_WEIGHT_PRESET
# in scripts/lora_block_weight.py), 17 values each: BASE, IN01…IN08, MID, OUT03…OUT11.
_LBW_DEFAULT_PRESETS = """\
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
PRESETS = {name: tuple(float(v) for v in values.split(","))
           for name, _, values in (line.partition(":") for line in _LBW_DEFAULT_PRESETS.splitlines())}
