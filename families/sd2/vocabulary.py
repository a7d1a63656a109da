"""Stable Diffusion 2.x spellings: the 512 (epsilon) and 768-v (v-prediction) models."""

from ..vocabulary import Variant, Vocabulary

# kohya's sd-scripts writes ``ss_v2: "True"`` into files trained on SD 2.x (and "False" elsewhere).
KOHYA_SS_V2 = True

VOCABULARIES = (Vocabulary(
    family="sd2",
    civitai=("SD 2.1", "SD 2.0", "SD 2.1 Unclip"),
    air="sd2",
    kohya=("sd_v2", "sd2", "sd2.1"),
    modelspec=("stable-diffusion-v2-512", "stable-diffusion-v2"),
    hub=("stabilityai/stable-diffusion-2-1", "stabilityai/stable-diffusion-2-1-base",
         "stabilityai/stable-diffusion-2"),
    a1111="SD2",
    hints=(r"(?<![a-z0-9])(sd|stable[-_ ]?diffusion)[-_ ]?v?2(?:[-_. ]?[01])?(?![0-9])", r"v2-[01](?![0-9])"),
    variants=(
        Variant("512", "Stable Diffusion 2.x 512 (epsilon)", modelspec=("stable-diffusion-v2-512",),
                hub=("stabilityai/stable-diffusion-2-1-base",), prediction="epsilon", line="sd2"),
        Variant("768-v", "Stable Diffusion 2.x 768 (v-prediction)", civitai=("SD 2.1 768", "SD 2.0 768"),
                modelspec=("stable-diffusion-v2-768-v",), hub=("stabilityai/stable-diffusion-2-1",),
                hints=(r"768[-_ ]?v(?![a-z])", r"v2[-_.]?[01][-_]768"), prediction="v", line="sd2"),
    ),
),)
