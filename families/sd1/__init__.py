"""Stable Diffusion 1.x (v1-4, v1-5 and their fine-tunes)."""

from ..spec import END_TO_END, Family, register_family

FAMILY = register_family(Family(
    name="sd1", title="Stable Diffusion 1.x", package="sd1",
    components=("unet", "text_encoder"), operations=END_TO_END))
