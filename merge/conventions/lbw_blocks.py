"""A family's LoRA Block Weight map (``merge.math.block_weights.BlockMap``) from its ``blocks``
aspect (``loradex/families/<f>/blocks.py``: ``LAYOUTS``, ``PRESETS``); the math takes it as an
argument and knows no family."""

from __future__ import annotations

from functools import lru_cache

from loradex.families import aspects, assumed, find_family

from ..math.block_weights import BlockMap


@lru_cache(maxsize=None)
def _preset_owners() -> dict[str, tuple[str, ...]]:
    owners: dict[str, list[str]] = {}
    for family, blocks in aspects("blocks"):
        for name in getattr(blocks, "PRESETS", {}):
            owners.setdefault(name.upper(), []).append(family.name)
    return {name: tuple(families) for name, families in owners.items()}


def preset_names() -> frozenset[str]:
    """Every preset name some family declares (upper case)."""
    return frozenset(_preset_owners())


@lru_cache(maxsize=None)
def block_map(family: str | None) -> BlockMap:
    """The family's block map; an unknown family (None) reads as ``assumed.UNET_LORA``; a family
    without a ``blocks`` aspect gets an empty map (every vector and preset refused in one line)."""
    name = family or assumed.UNET_LORA
    known = find_family(name)
    blocks = known.aspect("blocks") if known is not None else None
    layouts = {n: tuple(names) for n, names in getattr(blocks, "LAYOUTS", {}).items()}
    presets = {k.upper(): tuple(float(v) for v in vals) for k, vals in getattr(blocks, "PRESETS", {}).items()}
    return BlockMap(name, layouts, presets, _preset_owners())
