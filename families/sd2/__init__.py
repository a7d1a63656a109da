"""Stable Diffusion 2.x (512 and 768-v)."""

from ..spec import END_TO_END, Family, register_family

FAMILY = register_family(Family(
    name="sd2", title="Stable Diffusion 2.x", package="sd2",
    components=("unet", "text_encoder"), operations=END_TO_END))
