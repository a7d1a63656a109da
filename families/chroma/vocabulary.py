"""Chroma spellings (sd-scripts writes ``chroma`` for both the version and the architecture)."""

from ..vocabulary import Vocabulary

VOCABULARIES = (Vocabulary(
    family="chroma", civitai=("Chroma",), air="chroma", kohya=("chroma",), modelspec=("chroma",),
    hub=("lodestones/Chroma1-HD", "lodestones/Chroma"), hints=(r"chroma(?![a-z])",),
),)
