"""Stable Diffusion 3 / 3.5 spellings: 3 medium, 3.5 medium and 3.5 large (and Large Turbo) share
the MMDiT key layout at different widths/depths; sd-scripts writes ``stable-diffusion-3-<type>``."""

from ..vocabulary import Variant, Vocabulary

VOCABULARIES = (Vocabulary(
    family="sd3",
    civitai=("SD 3.5", "SD 3"),
    air="sd3",
    kohya=("sd3", "sd3.5"),
    modelspec=("stable-diffusion-3", "stable-diffusion-v3"),
    hub=("stabilityai/stable-diffusion-3-medium-diffusers",),
    hints=(r"(?<![a-z0-9])(sd|stable[-_ ]?diffusion)[-_ ]?v?3(?![0-9])", r"(?<![a-z0-9])sd3"),
    variants=(
        Variant("3-medium", "Stable Diffusion 3 Medium", civitai=("SD 3",),
                modelspec=("stable-diffusion-3-medium", "stable-diffusion-v3-medium", "stable-diffusion-3-m"),
                hub=("stabilityai/stable-diffusion-3-medium-diffusers", "stabilityai/stable-diffusion-3-medium"),
                hints=(r"(sd|diffusion)[-_ ]?v?3[-_ ](medium|m)(?![a-z])",)),
        Variant("3.5-medium", "Stable Diffusion 3.5 Medium", civitai=("SD 3.5 Medium",),
                modelspec=("stable-diffusion-3-5-medium", "stable-diffusion-v3-5-medium", "stable-diffusion-3-5-m"),
                hub=("stabilityai/stable-diffusion-3.5-medium",),
                hints=(r"3[-_. ]?5[-_ ]?(medium|m)(?![a-z])",)),
        Variant("3.5-large", "Stable Diffusion 3.5 Large", civitai=("SD 3.5 Large", "SD 3.5 Large Turbo"),
                modelspec=("stable-diffusion-3-5-large", "stable-diffusion-v3-5-large", "stable-diffusion-3-5-l"),
                hub=("stabilityai/stable-diffusion-3.5-large", "stabilityai/stable-diffusion-3.5-large-turbo"),
                hints=(r"3[-_. ]?5[-_ ]?(large|l)(?![a-z])",)),
    ),
),)
