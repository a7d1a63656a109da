"""Flux.1 (dev, schnell, and the same-architecture Kontext / Krea files): CLIP-L + T5-XXL."""

from ..spec import END_TO_END, Family, register_family

FAMILY = register_family(Family(
    name="flux", title="Flux.1", package="flux",
    components=("transformer", "text_encoder", "text_encoder_2"), operations=END_TO_END))
