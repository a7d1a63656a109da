"""HunyuanVideo: 20 double + 40 single stream blocks (Flux-like names, different leaves)."""

from ..spec import Family, register_family

FAMILY = register_family(Family(
    name="hunyuan-video", title="HunyuanVideo", package="hunyuan_video",
    components=("transformer", "text_encoder", "text_encoder_2"), parent=None))
