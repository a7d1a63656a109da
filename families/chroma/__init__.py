"""Chroma (Flux.1-schnell derived, T5 only; no modulation layers: a distilled guidance network)."""

from ..spec import Family, register_family

FAMILY = register_family(Family(
    name="chroma", title="Chroma", package="chroma",
    components=("transformer", "text_encoder"), parent="flux"))
