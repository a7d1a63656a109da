"""AuraFlow (and Pony v7): MMDiT-style joint and single blocks, a UMT5 text encoder."""

from ..spec import Family, register_family

FAMILY = register_family(Family(
    name="auraflow", title="AuraFlow", package="auraflow",
    components=("transformer", "text_encoder"), parent=None))
