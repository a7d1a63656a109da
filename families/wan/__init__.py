"""Wan 2.1 / 2.2 video models: one folder, three widths (1.3B: 1536, 5B: 3072, 14B: 5120)."""

from ..spec import Family, register_family

FAMILY = register_family(Family(
    name="wan-1.3b", title="Wan 2.1 1.3B", package="wan",
    components=("transformer",), parent=None))

register_family(Family(
    name="wan-5b", title="Wan 2.2 5B (TI2V)", package="wan",
    components=("transformer",), parent=None))

register_family(Family(
    name="wan-14b", title="Wan 2.1 / 2.2 14B", package="wan",
    components=("transformer",), parent=None))
