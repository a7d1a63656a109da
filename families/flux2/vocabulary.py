"""Flux.2 spellings: dev and the Klein 4B / 9B models (distilled and base)."""

from ..vocabulary import Variant, Vocabulary

VOCABULARIES = (Vocabulary(
    family="flux2",
    civitai=("Flux.2 D",),
    air="flux2",
    kohya=("flux2",),
    modelspec=("flux-2",),
    hub=("black-forest-labs/FLUX.2-dev",),
    hints=(r"flux[-_. ]?2",),
    variants=(
        Variant("dev", "Flux.2 dev", civitai=("Flux.2 D",), kohya=("flux2_dev",), modelspec=("flux-2-dev",),
                hub=("black-forest-labs/FLUX.2-dev",), hints=(r"flux[-_. ]?2[-_. ]?(dev|d)(?![a-z])",)),
        Variant("klein-9b", "Flux.2 Klein 9B", civitai=("Flux.2 Klein 9B",), kohya=("flux2_klein_9b", "flux2_klein"),
                hub=("black-forest-labs/FLUX.2-klein-9B",), hints=(r"klein[-_ ]?9b(?![-_ ]?base)",)),
        Variant("klein-9b-base", "Flux.2 Klein 9B base", civitai=("Flux.2 Klein 9B-base",),
                hub=("black-forest-labs/FLUX.2-klein-base-9B",),
                hints=(r"klein[-_ ]?9b[-_ ]?base", r"klein[-_ ]?base[-_ ]?9b")),
        Variant("klein-4b", "Flux.2 Klein 4B", civitai=("Flux.2 Klein 4B",), kohya=("flux2_klein_4b",),
                hub=("black-forest-labs/FLUX.2-klein-4B",), hints=(r"klein[-_ ]?4b(?![-_ ]?base)",)),
        Variant("klein-4b-base", "Flux.2 Klein 4B base", civitai=("Flux.2 Klein 4B-base",),
                hub=("black-forest-labs/FLUX.2-klein-base-4B",),
                hints=(r"klein[-_ ]?4b[-_ ]?base", r"klein[-_ ]?base[-_ ]?4b")),
    ),
),)
