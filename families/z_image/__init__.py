"""Z-Image (Turbo, Base): a single-stream S3-DiT, Qwen3 text encoder."""

from ..spec import Family, register_family

FAMILY = register_family(Family(
    name="z-image", title="Z-Image", package="z_image",
    components=("transformer", "text_encoder"), parent=None))
