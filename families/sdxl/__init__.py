"""Stable Diffusion XL and its key-identical sub-families (Pony, Illustrious, NoobAI)."""

from ..spec import END_TO_END, Family, register_family

FAMILY = register_family(Family(
    name="sdxl", title="Stable Diffusion XL", package="sdxl",
    components=("unet", "text_encoder", "text_encoder_2"), operations=END_TO_END))
