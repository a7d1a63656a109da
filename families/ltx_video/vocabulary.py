"""LTX-Video spellings (Civitai "LTXV"; LTX-2, an audio-video model of another layout, is not this family)."""

from ..vocabulary import Vocabulary

VOCABULARIES = (Vocabulary(
    family="ltx-video", civitai=("LTXV",), air="ltxv", modelspec=("ltx-video",),
    hub=("Lightricks/LTX-Video",), hints=(r"ltx[-_ ]?v(ideo)?(?![-_ .]?2)(?![a-z0-9])",),
),)
