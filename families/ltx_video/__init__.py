"""LTX-Video: a 28-block video DiT with a T5 text encoder."""

from ..spec import Family, register_family

FAMILY = register_family(Family(
    name="ltx-video", title="LTX-Video", package="ltx_video",
    components=("transformer", "text_encoder"), parent=None))
