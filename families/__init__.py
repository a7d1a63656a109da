"""Base-model families, one folder each (see :mod:`loradex.families.spec`).

Importing this package registers every family (light: declarations only).
Public API: :class:`Family`, :func:`get_family`, :func:`find_family`, :func:`all_families`,
:func:`family_names`, :func:`require`, :func:`aspects`, :class:`FamilyNotSupported`.
"""

from __future__ import annotations

from .spec import (  # noqa: F401
    END_TO_END,
    NAMING,
    RECOGNISED,
    STRONG,
    UNKNOWN,
    WEAK,
    Family,
    FamilyNotSupported,
    aspects,
    all_families,
    family_names,
    find_family,
    get_family,
    register_family,
    require,
)

# Registration order is the order lists and facets show.
from . import sd1, sd2, sdxl, sd3, flux  # noqa: F401, E402, I001
# Recognised families: probe, catalog, search, push, pull (no end-to-end implementation yet).
from . import chroma, flux2, qwen_image, z_image, hidream, lumina2, auraflow, wan, hunyuan_video, ltx_video  # noqa: F401, E402, I001
