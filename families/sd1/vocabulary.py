"""Stable Diffusion 1.x spellings (no variants: v1-4, v1-5 and their LCM/Hyper fine-tunes share one layout)."""

from ..vocabulary import Vocabulary

VOCABULARIES = (Vocabulary(
    family="sd1",
    civitai=("SD 1.5", "SD 1.4", "SD 1.5 LCM", "SD 1.5 Hyper"),
    air="sd1",
    kohya=("sd_v1", "sd1", "sd1.5", "sd15"),
    modelspec=("stable-diffusion-v1",),
    hub=("stable-diffusion-v1-5/stable-diffusion-v1-5", "runwayml/stable-diffusion-v1-5",
         "CompVis/stable-diffusion-v1-4"),
    a1111="SD1",
    hints=(r"(?<![a-z0-9])(sd|stable[-_ ]?diffusion)[-_ ]?v?1(?:[-_. ]?[45])?(?![0-9])", r"v1-[45](?![0-9])",
           r"(?<![a-z0-9])sd[-_ ]?15(?![0-9])"),
    words=("sd15",),
),)
