"""Helpers the families' ``identity`` aspects share: one spelling of a module name, block indices, widths.

An identity aspect answers ``evidence(modules) -> [(family, why, strength)]``. ``modules`` are
duck-typed (the registry's ``Module``: component, name, type, in_features, out_features, rank);
names come in every convention a writer uses — kohya ``lora_unet_double_blocks_0_img_attn_qkv``,
ComfyUI ``double_blocks.0.img_attn.qkv`` (``diffusion_model.`` already split off by the prober or
not), diffusers ``transformer_blocks.0.attn.to_q``, OneTrainer ``lora_transformer_…``, LyCORIS
``lycoris_…``. :func:`flat` folds them into one spelling (prefix off, dots → ``_``) so one
regular expression per rule reads them all.

Strengths (strongest wins, :mod:`loradex.families.spec`): ``MARKER`` is a name *and* a width
only one family has (a 3072-wide ``single_blocks_N_linear1`` of 7 × 3072 rows is Flux.1 and
nothing else); ``STRONG`` a width; ``NAMING`` names alone; ``WEAK`` a hint.

An aspect may also export ``notes(modules) -> [str]`` (read for the family that wins: what the
keys cannot tell, the model size …), ``EMBEDDING_WIDTHS`` ({width: why}: textual-inversion
vectors of that width belong to the family) and ``CHECKPOINT_MARKERS`` ([(key regex, why)]:
full-weight files whose keys match), and ``TRANSFORMER_ROOTS`` (top-level module names of its
denoiser when that is a transformer: probers file such modules under ``transformer``).
"""

from __future__ import annotations

import re
from functools import lru_cache

from .spec import NAMING, STRONG, WEAK  # noqa: F401  (re-exported for the aspects)

MARKER = STRONG + 1

_PREFIX = re.compile(r"^(lora_unet_|lora_transformer_|lycoris_|model\.diffusion_model\.|diffusion_model\.|"
                     r"base_model\.model\.|transformer\.|unet\.)")


@lru_cache(maxsize=65536)  # every family's rules read the same names
def flat(name: str) -> str:
    """``lora_unet_double_blocks_0_img_attn_qkv`` and ``diffusion_model.double_blocks.0.img_attn.qkv``
    → ``double_blocks_0_img_attn_qkv``."""
    return _PREFIX.sub("", name, count=1).replace(".", "_")


def matching(modules, pattern: str) -> list:
    """Modules whose :func:`flat` name matches ``pattern`` (anchored at the start)."""
    rx = _rx(pattern)
    return [m for m in modules if rx.match(flat(m.name))]


def any_name(modules, pattern: str) -> bool:
    rx = _rx(pattern)
    return any(rx.search(flat(m.name)) for m in modules)


@lru_cache(maxsize=512)
def _rx(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def max_index(modules, pattern: str) -> int | None:
    """The largest block index captured by ``pattern``'s first group, or None."""
    rx = _rx(pattern)
    found = [int(m.group(1)) for mod in modules if (m := rx.match(flat(mod.name)))]
    return max(found) if found else None


def in_widths(modules) -> set[int]:
    return {m.in_features for m in modules if m.in_features}


def out_widths(modules) -> set[int]:
    return {m.out_features for m in modules if m.out_features}


def width_of(modules, pattern: str) -> int | None:
    """The in-features shared by the modules ``pattern`` matches (the model width when the pattern
    names attention inputs), or None when none match or they disagree."""
    widths = in_widths(matching(modules, pattern))
    return widths.pop() if len(widths) == 1 else None


# --- SD UNets -------------------------------------------------------------------------------------
def unet_context_widths(modules, width: int) -> bool:
    """True when a UNet module's cross-attention (``attn2`` to_k / to_v) reads ``width``-wide
    context; for files naming modules by index only (safeloras), any in-feature of that width."""
    unet = [m for m in modules if m.component == "unet"]
    ctx = {m.in_features for m in unet if m.type in ("to_k", "to_v") and "attn2" in m.name}
    if not ctx and unet and all(m.type is None for m in unet):
        ctx = in_widths(unet)
    return width in ctx


def first_text_encoder_width(modules) -> int | None:
    return min(in_widths([m for m in modules if m.component == "text_encoder"]), default=None)
