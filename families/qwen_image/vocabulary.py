"""Qwen-Image spellings (musubi-tuner writes ``Qwen-Image`` / ``Qwen-Image-Edit`` architectures)."""

from ..vocabulary import Variant, Vocabulary

VOCABULARIES = (Vocabulary(
    family="qwen-image", civitai=("Qwen",), air="qwen",
    modelspec=("qwen-image",), hub=("Qwen/Qwen-Image",), hints=(r"qwen[-_ ]?image",),
    variants=(
        Variant("edit", "Qwen-Image-Edit", modelspec=("qwen-image-edit",),
                hub=("Qwen/Qwen-Image-Edit", "Qwen/Qwen-Image-Edit-2509"), hints=(r"qwen[-_ ]?image[-_ ]?edit",)),
    ),
),)
