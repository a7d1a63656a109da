"""Z-Image spellings: Civitai lists Turbo and Base as two base models (two AIR ecosystems)."""

from ..vocabulary import Variant, Vocabulary

VOCABULARIES = (Vocabulary(
    family="z-image", civitai=("ZImageTurbo",), air="zimageturbo",
    modelspec=("z-image",), hub=("Tongyi-MAI/Z-Image-Turbo",), hints=(r"(?<![a-z])z[-_ ]?image",),
    variants=(
        Variant("turbo", "Z-Image Turbo", civitai=("ZImageTurbo",), air="zimageturbo",
                modelspec=("z-image-turbo",), hub=("Tongyi-MAI/Z-Image-Turbo",),
                hints=(r"z[-_ ]?image[-_ ]?turbo",)),
        Variant("base", "Z-Image Base", civitai=("ZImageBase",), air="zimagebase", modelspec=("z-image-base",),
                hub=("Tongyi-MAI/Z-Image",), hints=(r"z[-_ ]?image[-_ ]?base",)),
    ),
),)
