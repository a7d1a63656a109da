"""Qwen-Image (and Qwen-Image-Edit): a 60-block MMDiT, Qwen2.5-VL text encoder."""

from ..spec import Family, register_family

FAMILY = register_family(Family(
    name="qwen-image", title="Qwen-Image", package="qwen_image",
    components=("transformer", "text_encoder"), parent=None))
