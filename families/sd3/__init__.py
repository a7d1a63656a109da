"""Stable Diffusion 3 / 3.5 (medium, large): MMDiT, CLIP-L + CLIP-G + T5-XXL."""

from ..spec import END_TO_END, Family, register_family

FAMILY = register_family(Family(
    name="sd3", title="Stable Diffusion 3 / 3.5", package="sd3",
    components=("transformer", "text_encoder", "text_encoder_2", "text_encoder_3"), operations=END_TO_END))
