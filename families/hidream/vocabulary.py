"""HiDream-I1 spellings: full, dev and fast share one layout."""

from ..vocabulary import Variant, Vocabulary

VOCABULARIES = (Vocabulary(
    family="hidream", civitai=("HiDream",), air="hidream", modelspec=("hidream-i1",),
    hub=("HiDream-ai/HiDream-I1-Full",), hints=(r"hi[-_ ]?dream",),
    variants=(
        Variant("full", "HiDream-I1 Full", hub=("HiDream-ai/HiDream-I1-Full",), hints=(r"hidream[-_ ]?i1[-_ ]?full",)),
        Variant("dev", "HiDream-I1 Dev", hub=("HiDream-ai/HiDream-I1-Dev",), hints=(r"hidream[-_ ]?i1[-_ ]?dev",)),
        Variant("fast", "HiDream-I1 Fast", hub=("HiDream-ai/HiDream-I1-Fast",), hints=(r"hidream[-_ ]?i1[-_ ]?fast",)),
    ),
),)
