"""Lumina Image 2.0 (and Neta Lumina): NextDiT with a Gemma text encoder."""

from ..spec import Family, register_family

FAMILY = register_family(Family(
    name="lumina2", title="Lumina Image 2.0", package="lumina2",
    components=("transformer", "text_encoder"), parent=None))
