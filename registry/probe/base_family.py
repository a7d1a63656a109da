"""Base-model family from tensor shapes (trusted) and from metadata (reported, not trusted).

Shape evidence (FORMATS.md): UNet cross-attention width (the in-features of ``attn2`` to_k /
to_v) 768 → sd1, 1024 → sd2, 2048 → sdxl; text encoder width 768 → sd1 (also SDXL's first
encoder), 1024 → sd2, a second encoder of width 1280 → sdxl; 3072-wide transformer blocks →
flux, 1536/2432-wide joint blocks → sd3. Names are weaker evidence (kohya SDXL SGM names
``input_blocks_4_1``, ``lora_te1_``; Flux ``double_blocks``). Each piece of evidence has a
strength; the strongest wins.
"""

from __future__ import annotations

import re

from .facts import Module

CONTEXT_WIDTH = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
TEXT_WIDTH = {768: "sd1", 1024: "sd2", 1280: "sdxl"}
EMBED_WIDTH = {768: "sd1", 1024: "sd2", 4096: "flux"}
STRONG, NAMING, WEAK = 3, 2, 1

_SGM = re.compile(r"(^|[._])(input_blocks|middle_block|output_blocks)[._]")
_FLUX_NAMES = re.compile(r"(^|[._])(double_blocks|single_blocks|single_transformer_blocks)[._]")
_SD3_NAMES = re.compile(r"(^|[._])joint_blocks[._]")


def evidence_from_modules(modules: list[Module]) -> list[tuple[str, str, int]]:
    ev: list[tuple[str, str, int]] = []
    unet = [m for m in modules if m.component == "unet"]
    ctx = {m.in_features for m in unet if m.type in ("to_k", "to_v") and "attn2" in m.name}
    if not ctx and unet and all(m.type is None for m in unet):
        # modules named by index only (safeloras): any cross-attention width among in-features
        ctx = {m.in_features for m in unet if m.in_features in CONTEXT_WIDTH}
    for w in sorted(ctx & CONTEXT_WIDTH.keys()):
        ev.append((CONTEXT_WIDTH[w], f"UNet cross-attention width {w}", STRONG))
    if any(_SGM.search(m.name) for m in unet):
        ev.append(("sdxl", "kohya SDXL (SGM) UNet module names", NAMING))

    te2 = [m for m in modules if m.component == "text_encoder_2"]
    te1 = [m for m in modules if m.component == "text_encoder"]
    if te2:
        widths = {m.in_features for m in te2 if m.in_features}
        if 1280 in widths:
            ev.append(("sdxl", "second text encoder of width 1280", STRONG))
        else:
            ev.append(("sdxl", "a second text encoder", NAMING))
    if te1:
        w = min((m.in_features for m in te1 if m.in_features), default=None)
        if w == 1280:
            ev.append(("sdxl", "text encoder of width 1280 (OpenCLIP bigG)", STRONG))
        elif w == 1024:
            ev.append(("sd2", "text encoder width 1024 (OpenCLIP ViT-H)", STRONG))
        elif w == 768:
            ev.append(("sd1", "text encoder width 768 (CLIP ViT-L)", WEAK))

    tr = [m for m in modules if m.component == "transformer" or _FLUX_NAMES.search(m.name)
          or _SD3_NAMES.search(m.name)]
    if tr:
        widths = {m.in_features for m in tr} | {m.out_features for m in tr}
        if any(_SD3_NAMES.search(m.name) for m in tr):
            ev.append(("sd3", "MMDiT joint_blocks names", NAMING))
        if any(_FLUX_NAMES.search(m.name) for m in tr):
            ev.append(("flux", "Flux double/single block names", NAMING))
        if 3072 in widths:
            ev.append(("flux", "3072-wide transformer blocks", STRONG))
        elif widths & {1536, 2432}:
            ev.append(("sd3", "1536/2432-wide transformer blocks", STRONG))
    return ev


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
        return "sd2", "ss_v2=True"
    return None


def base_from_name_or_path(value: str | None) -> str | None:
    """The family a PEFT ``base_model_name_or_path`` (a Hub id or a local path) names."""
    from loradex.families.vocabulary import normalise

    found = normalise(value, "hub") if value else None
    return found[0] if found else None
