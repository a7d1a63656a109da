"""Full model weights: SD single-file checkpoints and diffusers UNet / transformer state dicts."""

from __future__ import annotations

import re

from .base_family import CONTEXT_WIDTH, STRONG
from .facts import HeaderView, ProbeFacts, Verdict, no, register_prober

_LORA_HINT = re.compile(r"lora|hada_|lokr_|\.alpha$")
_SINGLE_FILE = ("model.diffusion_model.", "double_blocks.", "single_blocks.", "joint_blocks.")
_DIFFUSERS_UNET = ("down_blocks.", "up_blocks.", "mid_block.", "conv_in.", "time_embedding.")
_DIFFUSERS_DIT = ("transformer_blocks.", "single_transformer_blocks.", "x_embedder.", "context_embedder.")
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
    single = [k for k in keys if k.startswith(_SINGLE_FILE)]
    unet = [k for k in keys if k.startswith(_DIFFUSERS_UNET)]
    dit = [k for k in keys if k.startswith(_DIFFUSERS_DIT)]
    if single:
        fmt, explained = "checkpoint", keys
    elif len(unet) >= len(keys) // 2 and unet:
        fmt, explained = "diffusers-unet", keys
    elif len(dit) >= len(keys) // 2 and dit:
        fmt, explained = "diffusers-transformer", keys
    else:
        return no(name, "no model.diffusion_model.* / UNet / transformer weight names")
    facts = ProbeFacts(kind="checkpoint", format=fmt, explained=len(explained))
    comps = []
    if single or unet:
        comps.append("unet")
    if any(k.startswith(("cond_stage_model.", "conditioner.embedders.0")) for k in keys):
        comps.append("text_encoder")
    if any(k.startswith("conditioner.embedders.1") for k in keys):
        comps.append("text_encoder_2")
        facts.base_evidence.append(("sdxl", "second text encoder (conditioner.embedders.1)", STRONG))
    if any(k.startswith("first_stage_model.") for k in keys):
        comps.append("vae")
    for k in keys:
        if _CROSS_K.search(k) and len(view.tensors[k].shape) == 2:
            w = view.tensors[k].shape[1]
            if w in CONTEXT_WIDTH:
                facts.base_evidence.append((CONTEXT_WIDTH[w], f"UNet cross-attention width {w}", STRONG))
            break
    if any(k.startswith(("double_blocks.", "model.diffusion_model.double_blocks.")) for k in keys) or \
            any(k.startswith("single_transformer_blocks.") for k in keys):
        comps.append("transformer")
        facts.base_evidence.append(("flux", "Flux double/single blocks", STRONG))
    elif any("joint_blocks." in k for k in keys):
        comps.append("transformer")
        facts.base_evidence.append(("sd3", "MMDiT joint_blocks", STRONG))
    elif dit:
        comps.append("transformer")
    facts.components = comps
    return Verdict(name, True, f"{len(keys)} full weight tensors ({fmt})", facts)
