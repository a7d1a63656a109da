"""Flux.1 spellings: dev, schnell and the same-architecture Kontext (editing) and Krea (dev fine-tune)."""

from ..vocabulary import Variant, Vocabulary

VOCABULARIES = (Vocabulary(
    family="flux",
    civitai=("Flux.1 D",),
    air="flux1",
    kohya=("flux1", "flux", "flux.1"),
    modelspec=("flux-1-dev", "flux-1", "flux.1"),
    hub=("black-forest-labs/FLUX.1-dev",),
    hints=(r"flux(?![-_. ]?2)(?![a-z])", r"flux[-_. ]?1"),
    variants=(
        Variant("dev", "Flux.1 dev", civitai=("Flux.1 D",), modelspec=("flux-1-dev",),
                hub=("black-forest-labs/FLUX.1-dev",), hints=(r"flux[-_. ]?1?[-_. ]?(dev|d)(?![a-z])",)),
        Variant("schnell", "Flux.1 schnell", civitai=("Flux.1 S",), modelspec=("flux-1-schnell",),
                hub=("black-forest-labs/FLUX.1-schnell",), hints=(r"schnell",)),
        Variant("kontext", "Flux.1 Kontext", civitai=("Flux.1 Kontext",), air="flux1kontext",
                modelspec=("flux-1-kontext-dev", "flux-1-kontext"),
                hub=("black-forest-labs/FLUX.1-Kontext-dev",), hints=(r"kontext",)),
        Variant("krea", "Flux.1 Krea", civitai=("Flux.1 Krea",), air="fluxkrea", modelspec=("flux-1-krea-dev",),
                hub=("black-forest-labs/FLUX.1-Krea-dev",), hints=(r"(?<![a-z])krea(?![a-z])",)),
    ),
),)
