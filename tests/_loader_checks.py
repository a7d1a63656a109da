"""What the loaders people use make of a LoRA file, for tests/test_loader_conformance.py.

- ``comfyui_patches``: our own statement of the rule ComfyUI's ``comfy/lora.py`` follows for an
  SD 1.x model (``model_lora_keys_unet`` / ``model_lora_keys_clip`` build a map from LoRA key
  prefixes to model weights, ``load_lora`` picks the up/down pair and ``.alpha`` of each prefix and
  warns "lora key not loaded" for every other key, ``calculate_weight`` adds
  (alpha / rank or 1) · up.flatten(1) @ down.flatten(1), reshaped to the weight). Written from
  reading that code, not copied; only the plain-LoRA branches loradex writes are modelled.
- ``sd_scripts_modules`` / ``sd_scripts_load``: our own statement of how kohya sd-scripts'
  ``networks/lora.py`` loads a LoRA (``create_network_from_weights`` → ``LoRANetwork`` →
  ``LoRAModule``, then ``load_state_dict(weights, strict=False)`` and ``merge_to``), from reading it
  (kohya-ss/sd-scripts 48d368fa), not copied. See the section below for the rule.
- ``comfyui_dit_key_map`` / ``comfyui_dit_patches`` with ``comfyui_flux_diffusers_map`` /
  ``comfyui_sd3_diffusers_map``: the same ComfyUI rule for Flux.1 and SD3 models (native BFL/SAI
  weights, ``lora_unet_``/``diffusion_model.`` keys, diffusers keys with row offsets into fused
  weights and swapped modulation halves), from comfy/lora.py and comfy/utils.py.
- ``fused_weights``: diffusers' ``load_lora_weights`` + ``fuse_lora`` on the tiny SD1 pipeline;
  runs in-process (the installed, newest diffusers) or, through ``main``, in another interpreter
  (the oldest declared diffusers, see the Makefile's ``oldest-diffusers`` step).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

import torch

# The CLIP text-encoder leaves ComfyUI maps per layer (its LORA_CLIP_MAP): nothing else of CLIP.
COMFY_CLIP_LEAVES = ("mlp.fc1", "mlp.fc2", "self_attn.k_proj", "self_attn.q_proj", "self_attn.v_proj",
                     "self_attn.out_proj")
# (up, down) key suffixes of one module, in the order ComfyUI tries them.
COMFY_PAIRS = ((".lora_up.weight", ".lora_down.weight"), ("_lora.up.weight", "_lora.down.weight"),
               (".lora_B.weight", ".lora_A.weight"), (".lora.up.weight", ".lora.down.weight"),
               (".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight"))


def comfyui_key_map(unet_paths, te_layers: int) -> dict[str, str]:
    """LoRA key prefix → model weight (``unet.<path>`` / ``text_encoder.<path>``) for an SD1 model
    whose UNet modules have the diffusers paths ``unet_paths``."""
    key_map: dict[str, str] = {}
    for path in unet_paths:
        target = f"unet.{path}"
        key_map["lora_unet_" + path.replace(".", "_")] = target
        key_map["lycoris_" + path.replace(".", "_")] = target
        spelled = path.replace(".to_", ".processor.to_")  # diffusers' attention-processor spelling
        if spelled.endswith(".to_out.0"):
            spelled = spelled[: -len(".0")]
        key_map[spelled] = target
        key_map["unet." + spelled] = target
    for layer in range(te_layers):
        for leaf in COMFY_CLIP_LEAVES:
            target = f"text_encoder.text_model.encoder.layers.{layer}.{leaf}"
            under = leaf.replace(".", "_")
            key_map[f"lora_te_text_model_encoder_layers_{layer}_{under}"] = target
            key_map[f"lora_te1_text_model_encoder_layers_{layer}_{under}"] = target
            key_map[target] = target  # diffusers' text_encoder.text_model.… spelling
    return key_map


def comfyui_patches(sd: dict, key_map: dict[str, str], weight_shapes: dict[str, tuple]):
    """→ (target → ΔW as ComfyUI adds it (float64), keys ComfyUI would not load, targets whose ΔW
    does not fit the weight)."""
    patches, failed, loaded = {}, [], set()
    for prefix, target in key_map.items():
        alpha = sd.get(prefix + ".alpha")
        if alpha is not None:
            loaded.add(prefix + ".alpha")
        for up_sfx, down_sfx in COMFY_PAIRS:
            if prefix + up_sfx in sd:
                up, down = sd[prefix + up_sfx].double(), sd[prefix + down_sfx].double()
                loaded.update((prefix + up_sfx, prefix + down_sfx))
                scale = float(alpha) / down.shape[0] if alpha is not None else 1.0
                delta = up.flatten(1) @ down.flatten(1)
                shape = weight_shapes[target]
                if delta.numel() != torch.Size(shape).numel():
                    failed.append(target)
                else:
                    patches[target] = scale * delta.reshape(shape)
                break
    return patches, sorted(set(sd) - loaded), failed


def kohya_deltas(sd: dict, names: dict[str, str], weight_shapes: dict[str, tuple]) -> dict[str, torch.Tensor]:
    """target → alpha/r · up @ down (float64) of a kohya state dict, the closed form every loader
    must reproduce; ``names``: kohya module name → target."""
    out = {}
    for name, target in names.items():
        down, up = sd[f"{name}.lora_down.weight"].double(), sd[f"{name}.lora_up.weight"].double()
        alpha = float(sd[f"{name}.alpha"]) if f"{name}.alpha" in sd else down.shape[0]
        out[target] = (alpha / down.shape[0]) * (up.flatten(1) @ down.flatten(1)).reshape(weight_shapes[target])
    return out


# --- kohya sd-scripts (networks/lora.py) -----------------------------------------------------------
# create_network_from_weights reads, per key, the module name (the text before the first '.'), its
# dim (``lora_down``'s first size) and its alpha (a key containing "alpha"; absent → alpha = dim).
# LoRANetwork then walks the model: inside every module whose *class name* is one of the target
# classes, each descendant whose class name is exactly ``Linear`` or ``Conv2d`` becomes a LoRAModule
# named  prefix + "." + <path of the target module> + "." + <path inside it>  with every "." → "_",
# when that name has a dim in the file. Prefixes: ``lora_unet`` for the UNet, ``lora_te`` for the one
# SD1 text encoder (``lora_te1``/``lora_te2`` for SDXL's two). Target classes: Transformer2DModel in
# the UNet — plus ResnetBlock2D, Downsample2D, Upsample2D when loading from weights, as here —
# and CLIPAttention/CLIPSdpaAttention/CLIPMLP in a text encoder. sd-scripts' own SD 1.x UNet
# (library/original_unet.py) has diffusers' module names and classes, so the rule is applied to the
# diffusers model; its text encoder is transformers' CLIPTextModel, whose paths start "text_model.".
# A LoRAModule's parameters: Linear → lora_down [dim, in], lora_up [out, dim]; Conv2d → lora_down
# [dim, in, kh, kw] (the layer's own kernel), lora_up [out, dim, 1, 1]; buffer alpha (a scalar;
# 0 means dim). The weights are loaded with ``load_state_dict(strict=False)``: a key that names no
# parameter is silently not loaded, a shape mismatch is an error. merge_to adds
# (alpha / dim) · up @ down — for a k×k conv, the conv of down by the 1×1 up.
#
# SDXL: sd-scripts' SDXL UNet (library/sdxl_original_unet.py, SdxlUNet2DConditionModel) is the SAI
# layout: input_blocks / middle_block / output_blocks, resnets with in_layers.2 / emb_layers.1 /
# out_layers.3 / skip_connection, downsamplers' conv called ``op``. Its layers are diffusers' layers
# under other paths (``sdxl_sai_path``), so the SDXL rule walks a full-size diffusers SDXL UNet and
# names each layer by its SAI path. Before building the network, create_network_from_weights
# renames diffusers-named UNet keys to SAI names when any key contains "down_blocks" or
# "up_blocks" (convert_diffusers_to_sai_if_needed: the first block prefix of its table found as a
# substring of the module name is replaced; ``sd_scripts_sai_renamed``).
SD_SCRIPTS_UNET_CLASSES = ("Transformer2DModel", "ResnetBlock2D", "Downsample2D", "Upsample2D")
SD_SCRIPTS_TE_CLASSES = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")


@dataclass(frozen=True)
class SdScriptsModule:
    target: str                 # the weight it patches: unet.<path> / text_encoder[_2].text_model.<path>
    in_dim: int
    out_dim: int
    kernel: tuple[int, ...]     # () for a Linear, (kh, kw) for a Conv2d


@dataclass
class SdScriptsLoad:
    merged: dict                # target → (scale, up, down) as merge_to reads them (float64)
    not_loaded: list            # keys of the file no LoRAModule parameter takes
    mismatched: list            # keys whose shape load_state_dict refuses
    dims: dict = field(default_factory=dict)
    alphas: dict = field(default_factory=dict)

    def delta(self, target: str) -> torch.Tensor:
        """ΔW merge_to adds: scale · up @ down (Linear); for a conv, Σ_r up[o, r] · down[r, i, h, w]."""
        scale, up, down = self.merged[target]
        if down.dim() == 2:
            return scale * (up @ down)
        return scale * torch.einsum("or,rihw->oihw", up[:, :, 0, 0], down)

    @property
    def deltas(self) -> dict:
        return {t: self.delta(t) for t in self.merged}

    def probe(self, target: str, x: torch.Tensor) -> torch.Tensor:
        """ΔW (flattened to [out, in·kh·kw]) applied to ``x``, without forming ΔW (full-size SDXL)."""
        scale, up, down = self.merged[target]
        return scale * (up.flatten(1) @ (down.flatten(1) @ x))


_SAI_RESNET = {"conv1": "in_layers.2", "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1",
               "conv_shortcut": "skip_connection", "norm1": "in_layers.0", "norm2": "out_layers.0"}


def sdxl_sai_path(path: str) -> str:
    """The path in sd-scripts' SdxlUNet2DConditionModel of the diffusers SDXL UNet layer ``path``."""
    parts = path.split(".")
    if parts[0] in ("down_blocks", "up_blocks") and len(parts) > 4:
        i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
        down = parts[0] == "down_blocks"
        if kind == "resnets":
            block = f"input_blocks.{3 * i + j + 1}.0" if down else f"output_blocks.{3 * i + j}.0"
            return f"{block}.{_SAI_RESNET[rest[0]]}"
        if kind == "attentions":
            block = f"input_blocks.{3 * i + j + 1}.1" if down else f"output_blocks.{3 * i + j}.1"
            return ".".join([block, *rest])
        if kind == "downsamplers":
            return f"input_blocks.{3 * (i + 1)}.0.op"
        if kind == "upsamplers":  # after the resnet and the attention of output block 3i+2
            return f"output_blocks.{3 * i + 2}.2.conv"
    if parts[0] == "mid_block":
        if parts[1] == "resnets":
            return f"middle_block.{2 * int(parts[2])}.{_SAI_RESNET[parts[3]]}"
        if parts[1] == "attentions":
            return ".".join(["middle_block.1", *parts[3:]])
    raise ValueError(f"{path}: not a layer sd-scripts' SDXL UNet wraps")


def _sai_rename_table() -> list[tuple[str, str]]:
    """(diffusers prefix, SAI prefix) with "_" for ".", in the order sd-scripts searches: block
    level for attentions and samplers, layer level inside resnets."""
    blocks = []
    for i in range(3):
        blocks += [f"down_blocks.{i}.{kind}.{j}" for j in range(2) for kind in ("resnets", "attentions")]
        blocks += [f"up_blocks.{i}.{kind}.{j}" for j in range(3) for kind in ("resnets", "attentions")]
        blocks += [f"down_blocks.{i}.downsamplers.0.conv", f"up_blocks.{i}.upsamplers.0"]
    blocks += ["mid_block.attentions.0", "mid_block.resnets.0", "mid_block.resnets.1"]
    table = []
    for hf in blocks:
        if ".resnets." in hf:
            table += [(f"{hf}.{layer}", sdxl_sai_path(f"{hf}.{layer}")) for layer in _SAI_RESNET]
        elif hf.endswith(".upsamplers.0"):
            table.append((hf, sdxl_sai_path(f"{hf}.conv").removesuffix(".conv")))
        elif ".attentions." in hf:
            table.append((hf, sdxl_sai_path(f"{hf}.proj_in").removesuffix(".proj_in")))
        else:
            table.append((hf, sdxl_sai_path(hf)))
    return [(hf.replace(".", "_"), sai.replace(".", "_")) for hf, sai in table]


def sd_scripts_sai_renamed(sd: dict) -> dict:
    """``sd`` as create_network_from_weights sees it for an SDXL UNet: diffusers-named UNet keys
    renamed to SAI names when any key contains "down_blocks" or "up_blocks"."""
    if not any("down_blocks" in k or "up_blocks" in k for k in sd):
        return dict(sd)
    table = _sai_rename_table()
    out = {}
    for key, value in sd.items():
        if key.startswith("lora_unet_"):
            module = key[len("lora_unet_"):].split(".")[0]
            for hf, sai in table:
                if hf in module:
                    key = "lora_unet_" + module.replace(hf, sai) + key[len("lora_unet_") + len(module):]
                    break
        out[key] = value
    return out


def sdxl_meta_parts():
    """A full-size SDXL UNet and its two text encoders on the meta device (names and shapes only)."""
    from types import SimpleNamespace

    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.device("meta"):
        unet = UNet2DConditionModel(
            block_out_channels=(320, 640, 1280), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D",
                                                                   "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048, addition_embed_type="text_time",
            addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816, attention_head_dim=(5, 10, 20),
            use_linear_projection=True)
        te1 = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                           num_hidden_layers=12))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=1280, intermediate_size=5120,
                                                         num_attention_heads=20, num_hidden_layers=32,
                                                         projection_dim=1280))
    return SimpleNamespace(unet=unet, text_encoder=te1, text_encoder_2=te2)


def sd_scripts_modules(pipe) -> dict[str, SdScriptsModule]:
    """Every LoRAModule name sd-scripts' LoRANetwork can create for ``pipe`` (an SD 1.x or SDXL
    diffusers pipeline), with the layer it wraps."""
    encoders = [e for e in (getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)) if e is not None]
    roots = [("lora_unet", "unet", pipe.unet, SD_SCRIPTS_UNET_CLASSES)]
    for i, encoder in enumerate(encoders):
        prefix = "lora_te" if len(encoders) == 1 else f"lora_te{i + 1}"
        roots.append((prefix, "text_encoder" if i == 0 else "text_encoder_2", encoder, SD_SCRIPTS_TE_CLASSES))
    sdxl = len(encoders) == 2
    modules: dict[str, SdScriptsModule] = {}
    for prefix, component, root, classes in roots:
        for name, module in root.named_modules():
            if type(module).__name__ not in classes:
                continue
            if component.startswith("text_encoder") and not name.startswith("text_model."):
                name = "text_model." + name  # transformers 5 dropped the text_model level sd-scripts sees
            for child_name, child in module.named_modules():
                kind = type(child).__name__
                if kind not in ("Linear", "Conv2d"):
                    continue
                path = f"{name}.{child_name}"
                named = sdxl_sai_path(path) if sdxl and component == "unet" else path
                lora_name = f"{prefix}.{named}".replace(".", "_")
                assert lora_name not in modules, f"duplicated lora name: {lora_name}"  # sd-scripts asserts too
                if kind == "Linear":
                    modules[lora_name] = SdScriptsModule(f"{component}.{path}", child.in_features, child.out_features, ())
                else:
                    modules[lora_name] = SdScriptsModule(f"{component}.{path}", child.in_channels, child.out_channels,
                                                         tuple(child.kernel_size))
    return modules


def sd_scripts_load(sd: dict, modules: dict[str, SdScriptsModule], *, sdxl: bool = False) -> SdScriptsLoad:
    """What create_network_from_weights + load_state_dict(strict=False) + merge_to make of ``sd``
    (``sdxl``: for sd-scripts' SDXL UNet, whose loader renames diffusers-named keys first)."""
    if sdxl:
        sd = sd_scripts_sai_renamed(sd)
    dims, alphas = {}, {}
    for key, value in sd.items():
        if "." not in key:
            continue
        name = key.split(".")[0]
        if "alpha" in key:
            alphas[name] = value
        elif "lora_down" in key:
            dims[name] = int(value.shape[0])
    params: dict[str, tuple] = {}  # the network's state dict: key → shape
    for name, module in modules.items():
        if name not in dims:
            continue
        dim = dims[name]
        conv = bool(module.kernel)
        params[f"{name}.lora_down.weight"] = (dim, module.in_dim, *module.kernel)
        params[f"{name}.lora_up.weight"] = (module.out_dim, dim, *((1, 1) if conv else ()))
        params[f"{name}.alpha"] = ()
    not_loaded = sorted(k for k in sd if k not in params)
    mismatched = sorted(k for k, shape in params.items() if k in sd and not _loads_into(tuple(sd[k].shape), shape))
    merged = {}
    for name, dim in dims.items():
        module = modules.get(name)
        if module is None or any(k.startswith(name + ".") for k in mismatched):
            continue
        alpha = float(alphas[name]) if name in alphas else float(dim)
        scale = (alpha if alpha != 0 else dim) / dim
        merged[module.target] = (scale, sd[f"{name}.lora_up.weight"].double(), sd[f"{name}.lora_down.weight"].double())
    return SdScriptsLoad(merged, not_loaded, mismatched, dims, alphas)


def _loads_into(got: tuple, want: tuple) -> bool:
    # torch's load_state_dict also takes a 1-element 1-D tensor for a 0-dim buffer (old checkpoints)
    return got == want or (want == () and got == (1,))


# --- models --------------------------------------------------------------------------------------
def tiny_sd1_targets(pipe) -> dict[str, tuple]:
    """target → weight shape for every weight a LoRA may patch in the tiny SD1 pipeline."""
    shapes = {}
    for prefix, root in (("unet", pipe.unet), ("text_encoder", pipe.text_encoder)):
        for name, mod in root.named_modules():
            if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
                if prefix == "text_encoder" and not name.startswith("text_model."):
                    name = "text_model." + name  # transformers 5 flattened CLIPTextModel
                shapes[f"{prefix}.{name}"] = tuple(mod.weight.shape)
    return shapes


def sd1_meta_targets() -> dict[str, tuple]:
    """target → weight shape of a full-size SD 1.x UNet and CLIP-L (built on the meta device:
    names and shapes only, no memory)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(cross_attention_dim=768)
        te = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                          num_hidden_layers=12))
    shapes = {}
    for prefix, root in (("unet", unet), ("text_encoder", te)):
        for name, mod in root.named_modules():
            if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
                if prefix == "text_encoder" and not name.startswith("text_model."):
                    name = "text_model." + name
                shapes[f"{prefix}.{name}"] = tuple(mod.weight.shape)
    return shapes


def comfyui_map_for(targets: dict[str, tuple]) -> dict[str, str]:
    unet_paths = [t[len("unet."):] for t in targets if t.startswith("unet.")]
    layers = {int(t.split(".")[4]) for t in targets if t.startswith("text_encoder.text_model.encoder.layers.")}
    return comfyui_key_map(unet_paths, max(layers) + 1 if layers else 0)


# --- diffusers ---------------------------------------------------------------------------------------
def fused_weights(lora_path: str, targets: list[str]) -> dict[str, torch.Tensor]:
    """``before.<target>`` and ``after.<target>``: the tiny SD1 pipeline's weights before
    ``load_lora_weights(lora_path)`` and after ``fuse_lora()``."""
    from loradex.trainer.tiny_pipeline import build_tiny_sd1_pipeline

    pipe = build_tiny_sd1_pipeline(seed=0)

    def weight(target):
        component, _, path = target.partition(".")
        root = getattr(pipe, component)
        if component == "text_encoder" and not hasattr(root, "text_model"):
            path = path.removeprefix("text_model.")
        mod = root.get_submodule(path)
        return getattr(mod, "base_layer", mod).weight.detach().clone()

    out = {f"before.{t}": weight(t) for t in targets}
    pipe.load_lora_weights(lora_path, adapter_name="check")
    pipe.fuse_lora(lora_scale=1.0)
    out.update({f"after.{t}": weight(t) for t in targets})
    return out


# --- ComfyUI on Flux.1 (comfy/lora.py model_lora_keys_unet + comfy/utils.py flux_to_diffusers) -------
# Our statement of the rule, from reading ComfyUI (not copied). ComfyUI's Flux model holds BFL-named
# weights ``diffusion_model.<native>.weight``. model_lora_keys_unet maps, for every such weight,
# ``lora_unet_<native with _>`` and the bare ``diffusion_model.<native>`` to it; for a Flux model it
# also maps each diffusers weight of flux_to_diffusers — ``transformer.<diffusers path>``,
# ``lora_transformer_<diffusers path with _>`` (OneTrainer), ``lycoris_…`` — to its native weight,
# with a row offset into the fused ones: to_q/to_k/to_v (add_q/k/v_proj) of double block N are rows
# [0, h), [h, 2h), [2h, 3h) of ``img_attn.qkv`` (``txt_attn.qkv``); single block N's to_q/k/v and
# proj_mlp are rows [0, h) … [3h, 3h + 4h) of ``linear1`` (h = hidden size), and
# ``norm_out.linear`` is ``final_layer.adaLN_modulation.1`` with its two halves swapped
# (swap_scale_shift applied to the ΔW). load_lora takes per mapped key the first of the up/down pairs
# of COMFY_PAIRS plus ``.alpha``, warns "lora key not loaded" for every other key, and
# calculate_weight adds (alpha / rank or 1) · up @ down into the (narrowed) weight.
_FLUX_DOUBLE = {"attn.to_out.0": "img_attn.proj", "norm1.linear": "img_mod.lin", "norm1_context.linear": "txt_mod.lin",
                "attn.to_add_out": "txt_attn.proj", "ff.net.0.proj": "img_mlp.0", "ff.net.2": "img_mlp.2",
                "ff_context.net.0.proj": "txt_mlp.0", "ff_context.net.2": "txt_mlp.2"}
_FLUX_SINGLE = {"norm.linear": "modulation.lin", "proj_out": "linear2"}
_FLUX_BASIC = {"proj_out": "final_layer.linear", "x_embedder": "img_in", "context_embedder": "txt_in",
               "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
               "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
               "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
               "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
               "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
               "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer"}


@dataclass(frozen=True)
class ComfyTarget:
    weight: str                      # native weight name, without ``diffusion_model.`` / ``.weight``
    rows: tuple[int, int] | None     # (offset, length) into it, or None for the whole weight
    swap: bool = False               # swap_scale_shift on the ΔW


def comfyui_flux_diffusers_map(double: int, single: int, hidden: int) -> dict[str, ComfyTarget]:
    """flux_to_diffusers as ComfyUI states it: diffusers module path → native target."""
    out: dict[str, ComfyTarget] = {}
    for i in range(double):
        d, n = f"transformer_blocks.{i}", f"double_blocks.{i}"
        for j, (img, txt) in enumerate((("to_q", "add_q_proj"), ("to_k", "add_k_proj"), ("to_v", "add_v_proj"))):
            out[f"{d}.attn.{img}"] = ComfyTarget(f"{n}.img_attn.qkv", (j * hidden, hidden))
            out[f"{d}.attn.{txt}"] = ComfyTarget(f"{n}.txt_attn.qkv", (j * hidden, hidden))
        out.update({f"{d}.{k}": ComfyTarget(f"{n}.{v}", None) for k, v in _FLUX_DOUBLE.items()})
    for i in range(single):
        s, n = f"single_transformer_blocks.{i}", f"single_blocks.{i}"
        for j, proj in enumerate(("attn.to_q", "attn.to_k", "attn.to_v")):
            out[f"{s}.{proj}"] = ComfyTarget(f"{n}.linear1", (j * hidden, hidden))
        out[f"{s}.proj_mlp"] = ComfyTarget(f"{n}.linear1", (3 * hidden, 4 * hidden))
        out.update({f"{s}.{k}": ComfyTarget(f"{n}.{v}", None) for k, v in _FLUX_SINGLE.items()})
    out.update({k: ComfyTarget(v, None) for k, v in _FLUX_BASIC.items()})
    out["norm_out.linear"] = ComfyTarget("final_layer.adaLN_modulation.1", None, swap=True)
    return out


# SD3 (comfy/utils.py mmdit_to_diffusers): ComfyUI assumes the width is 64 × depth; to_q/k/v
# (add_q/k/v_proj) of block N are rows [0, w), [w, 2w), [2w, 3w) of ``x_block.attn.qkv``
# (``context_block.attn.qkv``); the last block's ``norm1_context.linear`` is its context
# ``adaLN_modulation.1`` with the halves swapped, as is ``norm_out.linear`` of
# ``final_layer.adaLN_modulation.1``. (The version read has no entry for SD3.5 medium's attn2.)
_SD3_BLOCK = {"norm1_context.linear": "context_block.adaLN_modulation.1", "attn.to_add_out": "context_block.attn.proj",
              "ff_context.net.0.proj": "context_block.mlp.fc1", "ff_context.net.2": "context_block.mlp.fc2",
              "norm1.linear": "x_block.adaLN_modulation.1", "attn.to_out.0": "x_block.attn.proj",
              "ff.net.0.proj": "x_block.mlp.fc1", "ff.net.2": "x_block.mlp.fc2"}
_SD3_BASIC = {"context_embedder": "context_embedder", "pos_embed.proj": "x_embedder.proj",
              "time_text_embed.timestep_embedder.linear_1": "t_embedder.mlp.0",
              "time_text_embed.timestep_embedder.linear_2": "t_embedder.mlp.2",
              "time_text_embed.text_embedder.linear_1": "y_embedder.mlp.0",
              "time_text_embed.text_embedder.linear_2": "y_embedder.mlp.2", "proj_out": "final_layer.linear"}


def comfyui_sd3_diffusers_map(depth: int) -> dict[str, ComfyTarget]:
    out: dict[str, ComfyTarget] = {}
    width = 64 * depth
    for i in range(depth):
        d, n = f"transformer_blocks.{i}", f"joint_blocks.{i}"
        for j, (x, c) in enumerate((("to_q", "add_q_proj"), ("to_k", "add_k_proj"), ("to_v", "add_v_proj"))):
            out[f"{d}.attn.{x}"] = ComfyTarget(f"{n}.x_block.attn.qkv", (j * width, width))
            out[f"{d}.attn.{c}"] = ComfyTarget(f"{n}.context_block.attn.qkv", (j * width, width))
        out.update({f"{d}.{k}": ComfyTarget(f"{n}.{v}", None) for k, v in _SD3_BLOCK.items()})
    out.update({k: ComfyTarget(v, None) for k, v in _SD3_BASIC.items()})
    out["norm_out.linear"] = ComfyTarget("final_layer.adaLN_modulation.1", None, swap=True)
    last = depth - 1
    out[f"transformer_blocks.{last}.norm1_context.linear"] = ComfyTarget(
        f"joint_blocks.{last}.context_block.adaLN_modulation.1", None, swap=True)
    return out


def comfyui_dit_key_map(native_weights, diffusers_map: dict[str, ComfyTarget] | None = None) -> dict[str, ComfyTarget]:
    """LoRA key prefix → target for a ComfyUI DiT model whose native weights are ``native_weights``
    (names without ``diffusion_model.``/``.weight``); ``diffusers_map``: the model's diffusers table
    (Flux: :func:`comfyui_flux_diffusers_map`)."""
    key_map = {}
    for native in native_weights:
        key_map["lora_unet_" + native.replace(".", "_")] = ComfyTarget(native, None)
        key_map["diffusion_model." + native] = ComfyTarget(native, None)
    for path, target in (diffusers_map or {}).items():
        if target.weight in native_weights:
            key_map["transformer." + path] = target
            key_map["lora_transformer_" + path.replace(".", "_")] = target
    return key_map


def comfyui_dit_patches(sd: dict, key_map: dict[str, ComfyTarget], weight_shapes: dict[str, tuple]):
    """→ (native weight → summed ΔW (float64), keys not loaded, targets whose ΔW does not fit)."""
    patches: dict[str, torch.Tensor] = {}
    failed, loaded = [], set()
    for prefix, target in key_map.items():
        alpha = sd.get(prefix + ".alpha")
        for up_sfx, down_sfx in COMFY_PAIRS:
            if prefix + up_sfx not in sd:
                continue
            if alpha is not None:
                loaded.add(prefix + ".alpha")
            up, down = sd[prefix + up_sfx].double(), sd[prefix + down_sfx].double()
            loaded.update((prefix + up_sfx, prefix + down_sfx))
            scale = float(alpha) / down.shape[0] if alpha is not None else 1.0
            delta = scale * (up.flatten(1) @ down.flatten(1))
            full = weight_shapes[target.weight]
            offset, length = target.rows or (0, full[0])
            if delta.shape != (length, *full[1:]):
                failed.append(prefix)
                break
            if target.swap:
                half = delta.shape[0] // 2
                delta = torch.cat([delta[half:], delta[:half]])
            acc = patches.setdefault(target.weight, torch.zeros(full, dtype=torch.float64))
            acc[offset:offset + length] += delta
            break
    return patches, sorted(set(sd) - loaded), failed


def main(argv: list[str]) -> None:
    """``python _loader_checks.py LORA TARGETS_JSON OUT``: ``fused_weights`` in this interpreter,
    written to OUT (safetensors), with the diffusers version in its metadata."""
    import diffusers
    from safetensors.torch import save_file

    lora, targets, out = argv
    weights = fused_weights(lora, json.loads(targets))
    save_file({k: v.contiguous() for k, v in weights.items()}, out, {"diffusers": diffusers.__version__})


if __name__ == "__main__":
    main(sys.argv[1:])
