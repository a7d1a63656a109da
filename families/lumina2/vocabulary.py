"""Lumina Image 2.0 spellings (sd-scripts: ``lumina2`` / ``lumina-2``); Neta Lumina is a fine-tune."""

from ..vocabulary import Variant, Vocabulary

VOCABULARIES = (Vocabulary(
    family="lumina2", civitai=("Lumina",), air="lumina", kohya=("lumina2", "lumina"),
    modelspec=("lumina-2", "lumina"), hub=("Alpha-VLLM/Lumina-Image-2.0",),
    hints=(r"lumina[-_ ]?(image[-_ ]?)?2", r"lumina"),
    variants=(
        Variant("neta", "Neta Lumina", hub=("neta-art/Neta-Lumina",), hints=(r"neta[-_ ]?lumina",)),
    ),
),)
