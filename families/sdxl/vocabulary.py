"""Stable Diffusion XL spellings and its key-identical sub-families.

Pony Diffusion V6, Illustrious-XL and NoobAI-XL are SDXL fine-tunes: their LoRAs have SDXL's
keys and widths, so only metadata tells them apart (Civitai lists each as its own base model, and
stacking LoRAs across them mostly fails). NoobAI ships an epsilon and a v-prediction model.
"""

from ..vocabulary import Variant, Vocabulary

VOCABULARIES = (Vocabulary(
    family="sdxl",
    civitai=("SDXL 1.0", "SDXL 0.9", "SDXL 1.0 LCM", "SDXL Lightning", "SDXL Hyper", "SDXL Turbo", "SDXL Distilled"),
    air="sdxl",
    kohya=("sdxl_base_v1-0", "sdxl_base_v0-9", "sdxl"),
    modelspec=("stable-diffusion-xl-v1-base", "stable-diffusion-xl-v1-refiner", "stable-diffusion-xl"),
    hub=("stabilityai/stable-diffusion-xl-base-1.0", "stabilityai/sdxl-turbo"),
    a1111="SDXL",
    hints=(r"sd[-_ ]?xl", r"stable[-_ ]?diffusion[-_ ]?xl", r"(?<![a-z])xl(?![a-z])"),
    words=("sdxl",),
    variants=(
        Variant("pony", "Pony Diffusion V6", civitai=("Pony",),
                hub=("LyliaEngine/Pony_Diffusion_V6_XL",),
                hints=(r"pony(?![-_ ]?(diffusion[-_ ]?)?v[-_ ]?7)",), words=("pony", "ponyxl")),
        Variant("illustrious", "Illustrious-XL", civitai=("Illustrious",),
                hub=("OnomaAIResearch/Illustrious-xl-early-release-v0",),
                hints=(r"illustrious", r"(?<![a-z])ilxl(?![a-z])"), words=("illustrious",)),
        Variant("noobai", "NoobAI-XL (epsilon)", civitai=("NoobAI",),
                hub=("Laxhar/noobai-XL-1.1",),
                hints=(r"noob[-_ ]?ai",), prediction="epsilon", line="noobai", words=("noobai", "noob")),
        Variant("noobai-vpred", "NoobAI-XL (v-prediction)",
                hub=("Laxhar/noobai-XL-Vpred-1.0",),
                hints=(r"noob[-_ ]?ai.{0,40}v[-_ ]?pred",), prediction="v", line="noobai",
                words=("noobai", "noob", "vpred")),
    ),
),)
