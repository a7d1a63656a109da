"""Textual-inversion embeddings (FORMATS.md, "Textual-inversion embeddings").

A1111 and kohya name no token inside the file: the file name is the token, so ``tokens`` is the
file stem. diffusers files map the token itself to the vectors.
"""

from __future__ import annotations

from .base_family import embedding_evidence, embedding_pair_evidence
from .facts import HeaderView, ProbeFacts, Verdict, no, register_prober

RESERVED = {"emb_params", "clip_l", "clip_g", "t5xxl"}
KNOWN_WIDTHS = {768, 1024, 1280, 4096}


def _rows(shape) -> int:
    return shape[0] if len(shape) == 2 else 1


def _embedding(view, fmt, tokens, n_vectors, widths: dict[str, int], explained) -> ProbeFacts:
    facts = ProbeFacts(kind="embedding", format=fmt, tokens=tokens, n_vectors=n_vectors, embedding_widths=widths,
                       explained=len(explained), unexplained=sorted(set(view.tensors) - set(explained)))
    facts.components = ["text_encoder"]
    for width in sorted(set(widths.values())):
        facts.base_evidence += embedding_evidence(width)  # the widths families declare
    return facts


def _stem_token(view: HeaderView) -> list[str]:
    return [view.stem] if view.stem else []


@register_prober("a1111-embedding")
def probe_a1111(view: HeaderView) -> Verdict:
    name = "a1111-embedding"
    t = view.tensors.get("emb_params")
    if t is None:
        return no(name, "no emb_params tensor")
    if len(t.shape) not in (1, 2):
        return no(name, f"emb_params has shape {t.shape}, expected [n, width]")
    if set(view.tensors) != {"emb_params"}:
        return no(name, "other tensors besides emb_params")
    facts = _embedding(view, "a1111-embedding", _stem_token(view), _rows(t.shape), {"emb_params": t.shape[-1]},
                       ["emb_params"])
    return Verdict(name, True, f"emb_params {list(t.shape)}: {facts.n_vectors} vector(s) of width {t.shape[-1]}",
                   facts)


@register_prober("a1111-embedding-pt")
def probe_a1111_pt(view: HeaderView) -> Verdict:
    """A1111 .pt: {"string_to_token": {...}, "string_to_param": {"*": T[n, dim]}, "name", "step", ...}."""
    name = "a1111-embedding-pt"
    params = {k: v for k, v in view.tensors.items() if k.startswith("string_to_param.")}
    if not params:
        return no(name, "no string_to_param.* tensors")
    if len(params) != len(view.tensors):
        return no(name, "tensors outside string_to_param")
    n = sum(_rows(v.shape) for v in params.values())
    widths = {k: v.shape[-1] for k, v in params.items()}
    facts = _embedding(view, "a1111-embedding-pt", _stem_token(view), n, widths, list(params))
    facts.training = {k: view.extras[k] for k in ("name", "step", "sd_checkpoint", "sd_checkpoint_name")
                      if k in view.extras}
    return Verdict(name, True, f"string_to_param with {n} vector(s)", facts)


SDXL_WIDTHS = {768: "clip_l", 1280: "clip_g"}  # CLIP-L (text_encoder) and OpenCLIP-G (text_encoder_2)


def sdxl_pair(tensors: dict) -> dict[str, str] | None:
    """``{key: "clip_l" | "clip_g"}`` when ``tensors`` (name → anything with ``.shape``) are exactly
    one 768-wide and one 1280-wide embedding, whatever their names: an SDXL embedding; else None."""
    if len(tensors) != 2 or any(k in RESERVED - {"clip_l", "clip_g"} or k.startswith("string_to_param.")
                                for k in tensors):
        return None
    if any(len(t.shape) not in (1, 2) for t in tensors.values()):
        return None
    by_width = {SDXL_WIDTHS.get(int(t.shape[-1])): k for k, t in tensors.items()}
    if set(by_width) != {"clip_l", "clip_g"}:
        return None
    pair = {k: role for role, k in by_width.items()}
    if any(k in ("clip_l", "clip_g") and pair[k] != k for k in pair):
        return None  # clip_l / clip_g named the other way round: not a layout anyone writes
    return pair


@register_prober("sdxl-embedding")
def probe_sdxl(view: HeaderView) -> Verdict:
    """``clip_l`` [n, 768] + ``clip_g`` [n, 1280] — or any two tensors of those widths, whatever
    their names (one vector set per SDXL text encoder, never two SD1 tokens)."""
    name = "sdxl-embedding"
    pair = sdxl_pair(view.tensors)
    if pair is None:
        return no(name, "needs exactly one 768-wide (clip_l) and one 1280-wide (clip_g) tensor")
    keys = {role: k for k, role in pair.items()}
    l, g = view.tensors[keys["clip_l"]], view.tensors[keys["clip_g"]]
    facts = _embedding(view, "sdxl-embedding", _stem_token(view), _rows(g.shape),
                       {keys["clip_l"]: l.shape[-1], keys["clip_g"]: g.shape[-1]}, list(pair))
    facts.base_evidence = embedding_pair_evidence((l.shape[-1], g.shape[-1]))
    facts.components = ["text_encoder", "text_encoder_2"]
    if _rows(l.shape) != _rows(g.shape):
        facts.notes.append(f"clip_l has {_rows(l.shape)} vectors but clip_g {_rows(g.shape)}")
    if set(pair) != {"clip_l", "clip_g"}:
        facts.notes.append(f"{keys['clip_l']!r} read as clip_l and {keys['clip_g']!r} as clip_g by their widths; "
                           "A1111 and ComfyUI look for the names clip_l / clip_g (`loradex convert --to sdxl` renames them)")
    return Verdict(name, True, f"{keys['clip_l']} {list(l.shape)} + {keys['clip_g']} {list(g.shape)}", facts)


@register_prober("t5-embedding")
def probe_t5(view: HeaderView) -> Verdict:
    name = "t5-embedding"
    t = view.tensors.get("t5xxl")
    if t is None:
        return no(name, "no t5xxl tensor")
    if not set(view.tensors) <= {"t5xxl", "clip_l"}:
        return no(name, "other tensors besides t5xxl/clip_l")
    widths = {k: view.tensors[k].shape[-1] for k in view.tensors}
    facts = _embedding(view, "t5-embedding", _stem_token(view), _rows(t.shape), widths, list(view.tensors))
    facts.base_evidence = embedding_evidence(t.shape[-1])
    facts.components = ["text_encoder", "t5"] if "clip_l" in view.tensors else ["t5"]
    facts.notes.append("T5-XXL embedding (t5): for Flux or SD3's T5 encoder; not usable with SD1/SDXL")
    return Verdict(name, True, f"t5xxl {list(t.shape)}", facts)


@register_prober("diffusers-embedding")
def probe_diffusers_embedding(view: HeaderView) -> Verdict:
    """diffusers ``learned_embeds``: {token: T[width] or T[n, width]}."""
    name = "diffusers-embedding"
    keys = list(view.tensors)
    if not keys:
        return no(name, "no tensors")
    if len(keys) > 64:
        return no(name, f"{len(keys)} tensors: too many for a token dict")
    for k in keys:
        shape = view.tensors[k].shape
        if k in RESERVED or k.startswith("string_to_param.") or k.endswith((".weight", ".bias", ".alpha")):
            return no(name, f"key {k!r} is not a token")
        if len(shape) not in (1, 2) or shape[-1] not in KNOWN_WIDTHS:
            return no(name, f"{k!r} has shape {list(shape)}, not [width] or [n, width] of a text encoder")
    n = sum(_rows(view.tensors[k].shape) for k in keys)
    facts = _embedding(view, "diffusers-embedding", keys, n, {k: view.tensors[k].shape[-1] for k in keys}, keys)
    return Verdict(name, True, f"{len(keys)} token(s) {keys[:3]} with {n} vector(s)", facts)
