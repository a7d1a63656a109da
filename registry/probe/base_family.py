"""Base-model family from tensor shapes (trusted) and from metadata (reported, not trusted).

Shape evidence is declared by each family's ``identity`` aspect (``loradex/families/<f>/identity.py``:
``evidence(modules)``, FORMATS.md): UNet cross-attention widths for SD 1.x / 2.x / XL, text
encoder widths, transformer block names and widths for the DiT families (Flux.1 3072-wide
double/single blocks, SD3 1536/2432-wide joint blocks, Wan 1536/3072/5120 …). Each piece of
evidence has a strength (MARKER > STRONG > NAMING > WEAK); the strongest wins and same-strength
disagreement is reported. Nothing here names a family: this module loops over the aspects.
"""

from __future__ import annotations

import re
from functools import lru_cache

from loradex.families import STRONG, aspects, find_family

from .facts import Module


@lru_cache(maxsize=1)
def _identity_modules() -> tuple:
    """(family name, identity module) in registration order, one entry per module (Wan's one module
    serves three families and answers for them itself)."""
    seen, out = set(), []
    for family, module in aspects("identity"):
        if id(module) not in seen:
            seen.add(id(module))
            out.append((family.name, module))
    return tuple(out)


def _declared(attr: str) -> dict:
    """{key: family} from every identity module's ``attr`` dict or value (first family wins)."""
    out: dict = {}
    for name, module in _identity_modules():
        value = getattr(module, attr, None)
        keys = value if isinstance(value, dict) else ([value] if value is not None else [])
        for key in keys:
            out.setdefault(key, name)
    return out


CONTEXT_WIDTH = _declared("CHECKPOINT_CONTEXT_WIDTH")  # {768: "sd1", 1024: "sd2", 2048: "sdxl"}
TEXT_WIDTH = _declared("TEXT_ENCODER_WIDTH")  # {768: "sd1", 1024: "sd2", 1280: "sdxl"}
EMBED_WIDTH = _declared("EMBEDDING_WIDTHS")  # {768: "sd1", 1024: "sd2", 4096: "flux"}


def embedding_evidence(width: int) -> list[tuple[str, str, int]]:
    """A textual-inversion vector's width, as the family that declares it reads it."""
    for name, module in _identity_modules():
        why = (getattr(module, "EMBEDDING_WIDTHS", None) or {}).get(width)
        if why:
            return [(name, why, STRONG)]
    return []


def embedding_pair_evidence(widths: tuple[int, int]) -> list[tuple[str, str, int]]:
    """A two-encoder embedding (clip_l + clip_g) whose widths a family declares (``EMBEDDING_PAIR``)."""
    for name, module in _identity_modules():
        if tuple(getattr(module, "EMBEDDING_PAIR", ())) == tuple(widths):
            return [(name, f"clip_l width {widths[0]} + clip_g width {widths[1]}", STRONG)]
    return []


@lru_cache(maxsize=1)
def _checkpoint_markers() -> tuple:
    return tuple((name, re.compile(rx), why) for name, module in _identity_modules()
                 for rx, why in getattr(module, "CHECKPOINT_MARKERS", ()))


def checkpoint_evidence(keys) -> list[tuple[str, str, int]]:
    """Full-weight key names a family declares (``CHECKPOINT_MARKERS``): one piece of evidence each."""
    out = []
    for name, rx, why in _checkpoint_markers():
        if any(rx.search(k) for k in keys):
            out.append((name, why, STRONG))
    return out


@lru_cache(maxsize=1)
def transformer_roots() -> frozenset[str]:
    """Top-level module names of the families' transformers (``TRANSFORMER_ROOTS``): a kohya
    ``lora_unet_<root>_…`` or PEFT ``<root>.…`` module belongs to the transformer, not a UNet."""
    return frozenset(r for _, module in _identity_modules() for r in getattr(module, "TRANSFORMER_ROOTS", ()))


def evidence_from_modules(modules: list[Module]) -> list[tuple[str, str, int]]:
    ev: list[tuple[str, str, int]] = []
    for _, module in _identity_modules():
        ev.extend(module.evidence(modules))
    return ev


def key_identical_child(child: str | None, parent: str, modules: list[Module]) -> bool:
    """True when ``child`` is declared with ``parent`` as its parent (same architecture: Chroma →
    flux) and its identity does not rule these modules out (``compatible(modules)``)."""
    fam = find_family(child)
    if fam is None or fam.parent != parent:
        return False
    module = fam.aspect("identity")
    compatible = getattr(module, "compatible", None)
    return bool(compatible(modules)) if compatible else True


def component_aliases(family: str) -> dict[str, str]:
    """{component a prober names: the family's own name for it} (``COMPONENT_ALIASES``)."""
    fam = find_family(family)
    module = fam.aspect("identity") if fam else None
    return dict(getattr(module, "COMPONENT_ALIASES", {}))


def family_notes(family: str, modules: list[Module]) -> list[str]:
    """What the winning family's identity says about these modules (size, what keys cannot tell)."""
    fam = find_family(family)
    module = fam.aspect("identity") if fam else None
    notes = getattr(module, "notes", None)
    return list(notes(modules)) if notes and modules else []


def decide(evidence: list[tuple[str, str, int]]) -> tuple[str, str, list[str]]:
    """(base, reason, notes) from evidence; notes list conflicting evidence that lost."""
    if not evidence:
        return "unknown", "no shape or name tells the base model", []
    best = max(s for _, _, s in evidence)
    top = [e for e in evidence if e[2] == best]
    base, why, _ = top[0]
    notes = [f"conflicting evidence ignored: {w} suggests {b}" for b, w, s in evidence
             if b != base and s == best]
    return base, why, notes


# --- metadata ------------------------------------------------------------------------------------
# Spellings are read through the families' one normaliser (loradex.families.vocabulary).
def _family_from_text(text: str) -> str | None:
    from loradex.families.vocabulary import family_from_text

    return family_from_text(text)


def base_from_metadata(md: dict[str, str]) -> tuple[str, str] | None:
    """(family, "key=value") from the first metadata key that names a base model."""
    from loradex.families.vocabulary import normalise

    for key, source in (("modelspec.architecture", "modelspec"), ("ss_base_model_version", "kohya")):
        value = md.get(key)
        if isinstance(value, str) and value:
            found = normalise(value, source)
            if found:
                return found[0], f"{key}={value}"
    if md.get("ss_v2") == "True":
        v2 = [family.name for family, vocab in aspects("vocabulary") if getattr(vocab, "KOHYA_SS_V2", False)]
        if v2:
            return v2[0], "ss_v2=True"
    return None


def base_from_name_or_path(value: str | None) -> str | None:
    """The family a PEFT ``base_model_name_or_path`` (a Hub id or a local path) names."""
    from loradex.families.vocabulary import normalise

    found = normalise(value, "hub") if value else None
    return found[0] if found else None
