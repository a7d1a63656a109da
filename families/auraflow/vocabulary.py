"""AuraFlow spellings; Pony Diffusion V7 is an AuraFlow fine-tune (Civitai: "Pony V7")."""

from ..vocabulary import Variant, Vocabulary

VOCABULARIES = (Vocabulary(
    family="auraflow", civitai=("AuraFlow",), air="auraflow", modelspec=("auraflow",),
    hub=("fal/AuraFlow-v0.3",), hints=(r"aura[-_ ]?flow",),
    variants=(
        Variant("pony-v7", "Pony Diffusion V7", civitai=("Pony V7",), hub=("purplesmartai/pony-v7-base",),
                hints=(r"pony[-_ ]?(diffusion[-_ ]?)?v[-_ ]?7",), words=("pony",)),
    ),
),)
