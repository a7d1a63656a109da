"""Flux.2 dev and Klein: double/single stream blocks with shared modulation, a Mistral / Qwen3 text encoder."""

from ..spec import Family, register_family

FAMILY = register_family(Family(
    name="flux2", title="Flux.2 (dev, Klein)", package="flux2",
    components=("transformer", "text_encoder"), parent=None))
