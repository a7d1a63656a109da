"""Full model weights: SD single-file checkpoints and diffusers UNet / transformer state dicts."""

from __future__ import annotations

import re

from .base_family import CONTEXT_WIDTH, STRONG, checkpoint_evidence, evidence_from_modules, transformer_roots
from .facts import HeaderView, Module, ProbeFacts, Verdict, module_type, no, register_prober

_LORA_HINT = re.compile(r"lora|hada_|lokr_|\.alpha$")
_SINGLE_FILE = ("model.diffusion_model.",)  # DiT originals: a root some family declares (below)
_DIFFUSERS_UNET = ("down_blocks.", "up_blocks.", "mid_block.", "conv_in.", "time_embedding.")
_DIFFUSERS_DIT = ("transformer_blocks.", "single_transformer_blocks.", "x_embedder.", "context_embedder.")
_DIFFUSERS_ROOTS = frozenset(p.rstrip(".") for p in _DIFFUSERS_DIT) | {"layers"}  # Z-Image/Lumina 2 share these
_CROSS_K = re.compile(r"attn2\.to_k\.weight$")


@register_prober("checkpoint")
def probe_checkpoint(view: HeaderView) -> Verdict:
    name = "checkpoint"
    keys = list(view.tensors)
    if not keys:
        return no(name, "no tensors")
    lora = [k for k in keys if _LORA_HINT.search(k)]
    if lora:
        return no(name, f"adapter keys present, e.g. {lora[0]}")
    # the original layout of a DiT (BFL double_blocks, Wan blocks …: a root some family declares)
    native_roots = transformer_roots() - _DIFFUSERS_ROOTS
    single = [k for k in keys if k.startswith(_SINGLE_FILE) or k.split(".", 1)[0] in native_roots]
    unet = [k for k in keys if k.startswith(_DIFFUSERS_UNET)]
    dit = [k for k in keys if k.startswith(_DIFFUSERS_DIT)]
    if single and len(single) > len(dit):  # (a diffusers transformer has a few native-looking roots: pos_embed …)
        fmt, explained = "checkpoint", keys
    elif len(unet) >= len(keys) // 2 and unet:
        fmt, explained = "diffusers-unet", keys
    elif len(dit) >= len(keys) // 2 and dit:
        fmt, explained = "diffusers-transformer", keys
    else:
        return no(name, "no model.diffusion_model.* / UNet / transformer weight names")
    facts = ProbeFacts(kind="checkpoint", format=fmt, explained=len(explained))
    comps = []
    is_dit = bool(dit) or any(k.removeprefix("model.diffusion_model.").split(".", 1)[0] in native_roots
                              for k in single)
    if (single or unet) and not is_dit:
        comps.append("unet")
    if any(k.startswith(("cond_stage_model.", "conditioner.embedders.0")) for k in keys):
        comps.append("text_encoder")
    if any(k.startswith("conditioner.embedders.1") for k in keys):
        comps.append("text_encoder_2")
    if any(k.startswith("first_stage_model.") for k in keys):
        comps.append("vae")
    for k in keys:
        if _CROSS_K.search(k) and len(view.tensors[k].shape) == 2:
            w = view.tensors[k].shape[1]
            if w in CONTEXT_WIDTH:
                facts.base_evidence.append((CONTEXT_WIDTH[w], f"UNet cross-attention width {w}", STRONG))
            break
    facts.base_evidence += checkpoint_evidence(keys)  # the families' declared key markers
    if is_dit:
        comps.append("transformer")
        # every 2-D weight of the denoiser read as a module: the families' LoRA identity rules apply
        modules = [Module("transformer", path, module_type(path), shape[1], shape[0], None)
                   for k in single + dit if k.endswith(".weight") and len(shape := view.tensors[k].shape) == 2
                   for path in [k.removesuffix(".weight")]]
        facts.base_evidence += evidence_from_modules(modules)
    facts.components = comps
    return Verdict(name, True, f"{len(keys)} full weight tensors ({fmt})", facts)
