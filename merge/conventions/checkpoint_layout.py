"""The original single-file checkpoint layout (CompVis ldm / Stability SGM) ↔ diffusers component
state dicts, for whole models: what A1111, ComfyUI and diffusers' ``from_single_file`` read.

=============  ===============================  ==========================================
component      SD 1.x                           SDXL
=============  ===============================  ==========================================
UNet           ``model.diffusion_model.*``      ``model.diffusion_model.*``
VAE            ``first_stage_model.*``          ``first_stage_model.*``
text encoder   ``cond_stage_model.transformer.  ``conditioner.embedders.0.transformer.
               text_model.*`` (CLIP-L)          text_model.*`` (CLIP-L)
text enc. 2    —                                ``conditioner.embedders.1.model.*`` (OpenCLIP-G)
=============  ===============================  ==========================================

The UNet numbering (``input_blocks.N.M``) depends on the block structure, so it is derived from
a ``module_layouts.UNetLayout`` built from the model's own config (or, when reading, from the
checkpoint's own keys) — never from the real SD block counts, so tiny test models map as well.
Block-level pairs come from ``module_layouts.sgm_to_diffusers`` (the same derivation LoRA names
use); the parameters inside a block are renamed with the small tables below. SD 2.x (OpenCLIP-H
text encoder) is not written: its text encoder has 24 layers where diffusers keeps 23.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from loradex.registry.errors import UnsupportedFormat

from .lora_canonical import canonical_text_encoder_path
from .module_layouts import _SGM_RESNET, UNetLayout, sgm_to_diffusers, unet_namings

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
# family → component → prefix, as each family's naming aspect declares it (sd1, sdxl)
TEXT_ENCODER_PREFIXES = {family: dict(naming.LDM_TEXT_ENCODER_PREFIXES)
                         for family, naming in unet_namings() if naming.LDM_TEXT_ENCODER_PREFIXES}
OPEN_CLIP_COMPONENTS = {"text_encoder_2"}  # stored in open_clip's own names
LDM_FAMILIES = tuple(TEXT_ENCODER_PREFIXES)

# inside a resnet: the two GroupNorms besides module_layouts' Linear/Conv names
_RESNET_PARTS = {**_SGM_RESNET, "in_layers.0": "norm1", "out_layers.0": "norm2"}
_UNET_TOP = {"out.0": "conv_norm_out"}


# --- UNet -----------------------------------------------------------------------------------------

def unet_layout_from_config(config: Mapping) -> UNetLayout:
    """The ``UNetLayout`` of a diffusers ``UNet2DConditionModel`` config."""
    lpb = config["layers_per_block"]
    if not isinstance(lpb, int):
        raise UnsupportedFormat("unet config", f"layers_per_block {lpb!r} differs per block",
                                hint="only UNets with one layers_per_block map to the ldm layout")
    down = tuple(config["down_block_types"])
    layers = config.get("transformer_layers_per_block", 1)
    layers = tuple(layers) if isinstance(layers, (list, tuple)) else (int(layers),) * len(down)
    return UNetLayout(
        "from-config", tuple(config["block_out_channels"]),
        tuple("CrossAttn" in t for t in down), tuple("CrossAttn" in t for t in config["up_block_types"]),
        layers, layers[-1], lpb, config.get("addition_embed_type") == "text_time")


def unet_layout_from_ldm_keys(shapes: Mapping[str, tuple]) -> UNetLayout:
    """The ``UNetLayout`` of an ldm UNet state dict (keys without ``model.diffusion_model.``):
    down blocks end at each ``input_blocks.N.0.op``; channels from each block's first resnet."""
    inputs = sorted({int(k.split(".")[1]) for k in shapes if k.startswith("input_blocks.")})
    blocks: list[list[int]] = [[]]
    for i in inputs[1:]:
        if f"input_blocks.{i}.0.op.weight" in shapes:
            blocks.append([])
        else:
            blocks[-1].append(i)
    sizes = {len(b) for b in blocks}
    if len(sizes) != 1 or not blocks[0]:
        raise UnsupportedFormat("ldm unet", f"down blocks of {sorted(sizes)} layers: not a UNet this "
                                            "layout describes")

    def depth(prefix: str) -> int:
        found = {k[len(prefix):].split(".")[0] for k in shapes if k.startswith(prefix)}
        return max(len(found), 1)

    down_attn = tuple(f"input_blocks.{b[0]}.1.proj_in.weight" in shapes for b in blocks)
    lpb = sizes.pop()
    up_attn = tuple(f"output_blocks.{b * (lpb + 1)}.1.proj_in.weight" in shapes for b in range(len(blocks)))
    return UNetLayout(
        "from-ldm", tuple(int(shapes[f"input_blocks.{b[0]}.0.out_layers.3.weight"][0]) for b in blocks),
        down_attn, up_attn,
        tuple(depth(f"input_blocks.{b[0]}.1.transformer_blocks.") for b in blocks),
        depth("middle_block.1.transformer_blocks."), lpb, any(k.startswith("label_emb.") for k in shapes))


@lru_cache(maxsize=None)
def unet_prefix_pairs(layout: UNetLayout) -> tuple[tuple[str, str], ...]:
    """(diffusers module prefix, ldm module prefix) for every module of the UNet: attention
    blocks as a whole (their insides are named alike), resnet parts one by one."""
    pairs: dict[str, str] = dict((d, s) for s, d in _UNET_TOP.items())
    for sgm, diff in sgm_to_diffusers(layout).items():
        s, d = sgm.split("."), diff.split(".")
        if ".attentions." in f".{diff}":
            while s[-1] == d[-1]:
                s.pop()
                d.pop()
            pairs[".".join(d)] = ".".join(s)
        elif ".resnets." in diff and d[-1] == "conv1":
            resnet_sgm, resnet_diff = sgm.removesuffix(".in_layers.2"), diff.removesuffix(".conv1")
            for sgm_part, diff_part in _RESNET_PARTS.items():
                pairs[f"{resnet_diff}.{diff_part}"] = f"{resnet_sgm}.{sgm_part}"
        elif ".resnets." not in diff:
            pairs[diff] = sgm
    return tuple(pairs.items())


def rename_by_prefix(key: str, table: Mapping[str, str]) -> str | None:
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        if head in table:
            return table[head] + "." + ".".join(parts[cut:])
    return None


def unet_to_ldm(state: Mapping, layout: UNetLayout) -> dict:
    table = dict(unet_prefix_pairs(layout))
    return _renamed(state, table, UNET_PREFIX, "UNet")


def unet_from_ldm(state: Mapping, layout: UNetLayout) -> dict:
    """``state``: ldm UNet keys without the ``model.diffusion_model.`` prefix."""
    table = {s: d for d, s in unet_prefix_pairs(layout)}
    return _renamed(state, table, "", "UNet")


def _renamed(state: Mapping, table: Mapping[str, str], prefix: str, what: str) -> dict:
    out, unknown = {}, []
    for key, tensor in state.items():
        new = rename_by_prefix(key, table)
        if new is None:
            unknown.append(key)
        else:
            out[prefix + new] = tensor
    if unknown:
        raise UnsupportedFormat(what, f"{len(unknown)} weights have no ldm counterpart, e.g. {unknown[0]}",
                                hint="the model's structure is not one the ldm layout describes")
    return out


# --- VAE (AutoencoderKL) --------------------------------------------------------------------------

_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_ldm_key(key: str, num_up_blocks: int) -> str:
    rules = [
        (r"^(encoder|decoder)\.mid_block\.resnets\.(\d)\.", lambda m: f"{m[1]}.mid.block_{int(m[2]) + 1}."),
        (r"^(encoder|decoder)\.mid_block\.attentions\.0\.", lambda m: f"{m[1]}.mid.attn_1."),
        (r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", lambda m: f"encoder.down.{m[1]}.block.{m[2]}."),
        (r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", lambda m: f"encoder.down.{m[1]}.downsample."),
        (r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.",
         lambda m: f"decoder.up.{num_up_blocks - 1 - int(m[1])}.block.{m[2]}."),
        (r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
         lambda m: f"decoder.up.{num_up_blocks - 1 - int(m[1])}.upsample."),
        (r"^(encoder|decoder)\.conv_norm_out\.", lambda m: f"{m[1]}.norm_out."),
    ]
    for pattern, repl in rules:
        new, n = re.subn(pattern, repl, key)
        if n:
            key = new
            break
    inner = _VAE_ATTENTION if ".attn_1." in key else _VAE_RESNET
    for diff, ldm in inner.items():
        key = key.replace(f".{diff}.", f".{ldm}.")
    return key


def vae_to_ldm(state: Mapping, num_up_blocks: int) -> dict:
    """Attention projections are Linear in diffusers, 1×1 convs in ldm."""
    out = {}
    for key, tensor in state.items():
        new = vae_to_ldm_key(key, num_up_blocks)
        if ".attn_1." in new and new.endswith(".weight") and tensor.dim() == 2:
            tensor = tensor[:, :, None, None]
        out[VAE_PREFIX + new] = tensor
    return out


def vae_from_ldm(state: Mapping, num_up_blocks: int, own_keys) -> dict:
    """``state``: ldm VAE keys without ``first_stage_model.``; ``own_keys``: the diffusers VAE's."""
    by_ldm = {vae_to_ldm_key(k, num_up_blocks): k for k in own_keys}
    out, unknown = {}, []
    for key, tensor in state.items():
        if key not in by_ldm:
            unknown.append(key)
            continue
        if ".attn_1." in key and key.endswith(".weight") and tensor.dim() == 4:
            tensor = tensor[:, :, 0, 0]
        out[by_ldm[key]] = tensor
    if unknown:
        raise UnsupportedFormat("VAE", f"{len(unknown)} weights the base VAE does not have, e.g. {unknown[0]}")
    return out


# --- CLIP text encoders ---------------------------------------------------------------------------

_OPEN_CLIP_LAYER = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
                    "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
_OPEN_CLIP_TOP = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
                  "text_model.embeddings.position_embedding.weight": "positional_embedding",
                  "text_model.final_layer_norm.weight": "ln_final.weight",
                  "text_model.final_layer_norm.bias": "ln_final.bias"}
_LAYER = re.compile(r"^text_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")


def clip_to_open_clip(state: Mapping) -> dict:
    """transformers CLIPTextModelWithProjection → open_clip names: q/k/v fused into ``in_proj``,
    ``text_projection`` transposed (open_clip multiplies ``x @ P``)."""
    import torch

    out, qkv = {}, {}
    for key, tensor in state.items():
        key = canonical_text_encoder_path(key)
        if key in _OPEN_CLIP_TOP:
            out[_OPEN_CLIP_TOP[key]] = tensor
        elif key == "text_projection.weight":
            out["text_projection"] = tensor.t().contiguous()
        elif key.endswith("position_ids"):
            continue
        elif (m := _LAYER.match(key)) is None:
            raise UnsupportedFormat("text_encoder_2", f"no open_clip name for {key}")
        elif m[2] in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            qkv.setdefault((m[1], m[3]), {})[m[2][10]] = tensor
        else:
            out[f"transformer.resblocks.{m[1]}.{_OPEN_CLIP_LAYER[m[2]]}.{m[3]}"] = tensor
    for (layer, kind), parts in qkv.items():
        out[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat([parts[c] for c in "qkv"])
    return out


def open_clip_to_clip(state: Mapping) -> dict:
    """The inverse of ``clip_to_open_clip`` (keys with the ``text_model.`` level)."""
    top = {v: k for k, v in _OPEN_CLIP_TOP.items()}
    layer_names = {v: k for k, v in _OPEN_CLIP_LAYER.items()}
    out = {}
    for key, tensor in state.items():
        if key in top:
            out[top[key]] = tensor
        elif key == "text_projection":
            out["text_projection.weight"] = tensor.t().contiguous()
        elif (m := re.match(r"^transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)$", key.replace("in_proj_", "in_proj."))):
            layer, name, kind = m[1], m[2], m[3]
            prefix = f"text_model.encoder.layers.{layer}"
            if name == "attn.in_proj":
                for part, chunk in zip("qkv", tensor.chunk(3)):
                    out[f"{prefix}.self_attn.{part}_proj.{kind}"] = chunk
            elif name in layer_names:
                out[f"{prefix}.{layer_names[name]}.{kind}"] = tensor
            else:
                raise UnsupportedFormat("text_encoder_2", f"unknown open_clip weight {key}")
        elif key != "logit_scale":
            raise UnsupportedFormat("text_encoder_2", f"unknown open_clip weight {key}")
    return out


def text_encoder_to_ldm(component: str, state: Mapping, family: str) -> dict:
    prefix = TEXT_ENCODER_PREFIXES[family][component]
    if component in OPEN_CLIP_COMPONENTS:
        return {prefix + k: v for k, v in clip_to_open_clip(state).items()}
    return {prefix + canonical_text_encoder_path(k): v for k, v in state.items()}


def text_encoder_from_ldm(component: str, state: Mapping, own_keys) -> dict:
    """``state`` without the component prefix → the loaded encoder's own key spelling (transformers
    5 drops the ``text_model.`` level of CLIPTextModel)."""
    if component in OPEN_CLIP_COMPONENTS:
        state = open_clip_to_clip(state)
    own = set(own_keys)
    out = {}
    for key, tensor in state.items():
        bare = key.removeprefix("text_model.")
        if key in own:
            out[key] = tensor
        elif bare in own:
            out[bare] = tensor
        elif not key.endswith("position_ids"):
            raise UnsupportedFormat(component, f"the base {component} has no weight {key}")
    return out


# --- whole pipelines ------------------------------------------------------------------------------

def ldm_family(keys) -> str | None:
    """sd1 | sdxl for an ldm checkpoint this module reads, from its text-encoder prefixes."""
    for family in TEXT_ENCODER_PREFIXES:  # the families' prefixes are disjoint: order is free
        if any(k.startswith(tuple(TEXT_ENCODER_PREFIXES[family].values())) for k in keys):
            return family
    return None


def is_ldm_checkpoint(keys) -> bool:
    return any(k.startswith(UNET_PREFIX) for k in keys)


def _check_ldm_family(family: str) -> None:
    if family not in TEXT_ENCODER_PREFIXES:
        raise UnsupportedFormat(family, "the original checkpoint layout is written for "
                                        f"{' and '.join(TEXT_ENCODER_PREFIXES)} only",
                                hint="use --format diffusers for this base")


def pipeline_to_ldm(pipe, family: str) -> dict:
    """Every weight of ``pipe`` (UNet, VAE, text encoders) in the ldm layout, as float32 CPU tensors."""
    _check_ldm_family(family)

    def plain(module) -> dict:
        return {k: v.detach().float().cpu().contiguous() for k, v in module.state_dict().items()}

    components = ("unet", "vae", *TEXT_ENCODER_PREFIXES[family])
    return components_to_ldm({c: plain(getattr(pipe, c)) for c in components}, pipe.unet.config,
                             pipe.vae.config, family)


def components_to_ldm(states: Mapping[str, Mapping], unet_config: Mapping, vae_config: Mapping,
                      family: str) -> dict:
    """Component state dicts (``unet``, ``vae``, text encoders; as loaded or as saved in a diffusers
    folder) and the UNet / VAE configs → one ldm state dict, tensors as given."""
    _check_ldm_family(family)
    state = unet_to_ldm(states["unet"], unet_layout_from_config(unet_config))
    state.update(vae_to_ldm(states["vae"], len(vae_config["up_block_types"])))
    for component in TEXT_ENCODER_PREFIXES[family]:
        state.update(text_encoder_to_ldm(component, states[component], family))
    return state


def ldm_to_components(state: Mapping, pipe) -> dict[str, dict]:
    """An ldm checkpoint's weights as state dicts for ``pipe``'s components (named as they load)."""
    own = {c: getattr(pipe, c).state_dict().keys()
           for c in ("vae", *TEXT_ENCODER_PREFIXES.get(ldm_family(state), {})) if getattr(pipe, c, None) is not None}
    return ldm_to_component_states(state, pipe.unet.config, pipe.vae.config, own)


def ldm_to_component_states(state: Mapping, unet_config: Mapping, vae_config: Mapping,
                            own_keys: Mapping[str, Any]) -> dict[str, dict]:
    """An ldm checkpoint's weights as component state dicts, given the UNet / VAE configs and the
    key names each other component (``vae``, text encoders) loads with."""
    family = ldm_family(state)
    parts: dict[str, dict] = {"unet": {}, "vae": {}}
    prefixes = {UNET_PREFIX: "unet", VAE_PREFIX: "vae",
                **{p: c for c, p in TEXT_ENCODER_PREFIXES.get(family, {}).items()}}
    unknown = []
    for key, tensor in state.items():
        for prefix, component in prefixes.items():
            if key.startswith(prefix):
                parts.setdefault(component, {})[key[len(prefix):]] = tensor
                break
        else:
            unknown.append(key)
    if unknown:
        raise UnsupportedFormat("checkpoint", f"{len(unknown)} weights outside the UNet, VAE and text "
                                              f"encoders, e.g. {unknown[0]}")
    out = {"unet": unet_from_ldm(parts.pop("unet"), unet_layout_from_config(unet_config))}
    vae = parts.pop("vae")
    if vae:
        out["vae"] = vae_from_ldm(vae, len(vae_config["up_block_types"]), own_keys["vae"])
    for component, sd in parts.items():
        out[component] = text_encoder_from_ldm(component, sd, own_keys[component])
    return out
