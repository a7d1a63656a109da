"""HiDream-I1 (full, dev, fast): double/single stream blocks with MoE feed-forwards."""

from ..spec import Family, register_family

FAMILY = register_family(Family(
    name="hidream", title="HiDream-I1", package="hidream",
    components=("transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "text_encoder_4"), parent=None))
