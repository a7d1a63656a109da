"""kohya / A1111 module names ("." replaced by "_") ↔ real dotted module paths.

kohya writes ``lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0``; the
module is ``down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0``. The underscores that
belong to names (``to_out``, ``transformer_blocks``) are indistinguishable from the separators, so
the mapping back needs the real names:

1. exact lookup in tables generated from the known model layouts (``module_layouts``), including
   the SGM spelling of the SDXL UNet, which is translated to diffusers paths;
2. otherwise a greedy longest-match split on the name tokens that occur in those layouts (every
   dotted-path segment that itself contains "_"), so unseen block counts or tiny test models
   still resolve. Results from step 2 are flagged so reports can say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from loradex.merge.conventions.module_layouts import (
    BASE_COMPONENTS,
    TEXT_ENCODER_LAYOUTS,
    UNET_LAYOUTS,
    diffusers_to_sgm,
    sgm_to_diffusers,
    text_encoder_module_paths,
    unet_module_paths,
    unet_naming,
    unet_namings,
)

# Longest first: "lora_te1_" must win over "lora_te_" style partial matches.
KOHYA_PREFIXES: dict[str, str] = {
    "lora_unet_": "unet",
    "lora_te1_": "text_encoder",
    "lora_te2_": "text_encoder_2",
    "lora_te3_": "text_encoder_3",
    "lora_te_": "text_encoder",
    "lora_transformer_": "transformer",
}

# Segments of other architectures' module names that the generated tables do not contain.
_EXTRA_TOKENS = (
    "single_transformer_blocks", "double_blocks", "single_blocks", "img_attn", "txt_attn",
    "img_mlp", "txt_mlp", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out", "proj_mlp",
    "norm_out", "conv_norm_out", "final_layer_norm", "layer_norm1", "layer_norm2",
    "token_embedding", "position_embedding", "x_embedder", "context_embedder",
)

SGM_ROOTS = ("input_blocks", "middle_block", "output_blocks", "time_embed", "label_emb", "out")


def kohya_prefix(component: str, base: str | None) -> str:
    """The kohya prefix for a component: the family's own (SDXL numbers its two text encoders
    te1/te2); a base without a UNet naming aspect writes ``lora_te_`` for its one encoder."""
    naming = unet_naming(base)
    own = naming.KOHYA_TEXT_ENCODER_PREFIXES if naming is not None else {}
    if component in own:
        return own[component]
    if component == "text_encoder":
        return "lora_te_"
    for prefix, comp in KOHYA_PREFIXES.items():
        if comp == component:
            return prefix
    raise KeyError(component)


def split_kohya_name(lora_name: str) -> tuple[str, str] | None:
    """``lora_unet_down_blocks_0…`` → (component, ``down_blocks_0…``), or None."""
    for prefix, component in KOHYA_PREFIXES.items():
        if lora_name.startswith(prefix):
            return component, lora_name[len(prefix):]
    return None


@lru_cache(maxsize=None)
def _name_tokens() -> frozenset[str]:
    paths: list[str] = []
    for layout in UNET_LAYOUTS.values():
        paths += unet_module_paths(layout)
        paths += sgm_to_diffusers(layout).keys()
    for te in TEXT_ENCODER_LAYOUTS.values():
        paths += text_encoder_module_paths(te)
    tokens = {seg for p in paths for seg in p.split(".") if "_" in seg}
    return frozenset(tokens | set(_EXTRA_TOKENS))


def greedy_dotted(underscored: str) -> str:
    """Split an underscored name on known multi-word tokens, longest match first."""
    tokens = _name_tokens()
    longest = max(t.count("_") for t in tokens) + 1
    parts = underscored.split("_")
    out: list[str] = []
    i = 0
    while i < len(parts):
        for span in range(min(longest, len(parts) - i), 0, -1):
            candidate = "_".join(parts[i:i + span])
            if span == 1 or candidate in tokens:
                out.append(candidate)
                i += span
                break
    return ".".join(out)


@dataclass(frozen=True)
class ResolvedName:
    path: str          # diffusers-style dotted module path (canonical)
    by_fallback: bool  # True when the greedy split was used


def _unet_layout(base: str | None):
    return UNET_LAYOUTS.get(BASE_COMPONENTS.get(base or "", {}).get("unet", ""))


def writes_sgm_unet(base: str | None) -> bool:
    """Whether kohya's sd-scripts names this family's UNet in the SGM numbering (SDXL)."""
    naming = unet_naming(base)
    return naming is not None and naming.KOHYA_UNET_NAMES == "sgm"


@lru_cache(maxsize=None)
def _sgm_layout(base: str | None):
    """The layout SGM names are read with: the base's own, or, unknown, the one family whose kohya
    files carry SGM names."""
    own = _unet_layout(base)
    if own is not None:
        return own
    sgm = [naming.UNET for _, naming in unet_namings() if naming.KOHYA_UNET_NAMES == "sgm"]
    return sgm[0]


@lru_cache(maxsize=None)
def _unet_table(base: str | None) -> dict[str, str]:
    """underscored → canonical path, for every UNet layout (the base's own layout last, so it
    wins where SGM spellings of different layouts collide)."""
    table: dict[str, str] = {}
    own = _unet_layout(base)
    layouts = [lay for lay in UNET_LAYOUTS.values() if lay != own] + ([own] if own else [])
    for layout in layouts:
        for path in unet_module_paths(layout):
            table[path.replace(".", "_")] = path
    # SGM names: only the base's layout, or SDXL's when unknown (kohya uses SGM names for SDXL).
    sgm_layout = _sgm_layout(base)
    for sgm, diff in sgm_to_diffusers(sgm_layout).items():
        table[sgm.replace(".", "_")] = diff
    return table


@lru_cache(maxsize=None)
def _text_encoder_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for layout in TEXT_ENCODER_LAYOUTS.values():
        for path in text_encoder_module_paths(layout):
            table[path.replace(".", "_")] = path
    return table


def resolve_kohya_module(component: str, underscored: str, base: str | None = None) -> ResolvedName:
    """Map the part after the kohya prefix to the canonical dotted module path."""
    table = _unet_table(base) if component == "unet" else _text_encoder_table()
    if underscored in table:
        return ResolvedName(table[underscored], False)
    dotted = greedy_dotted(underscored)
    if component == "unet" and dotted.split(".")[0] in SGM_ROOTS:
        sgm_layout = _sgm_layout(base)
        dotted = sgm_to_diffusers(sgm_layout).get(dotted, dotted)
    return ResolvedName(dotted, True)


def kohya_module_name(component: str, path: str, base: str | None, *, sgm_unet: bool) -> str:
    """Canonical path → kohya name (with prefix). ``sgm_unet`` writes SDXL UNet names in the
    SGM layout, as kohya's sd-scripts does; paths the SGM table lacks keep diffusers spelling."""
    if component == "unet" and sgm_unet:
        layout = _sgm_layout(base)
        path = diffusers_to_sgm(layout).get(path, path)
    return kohya_prefix(component, base) + path.replace(".", "_")
