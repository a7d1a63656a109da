"""What the loaders people use make of a LoRA file, for tests/test_loader_conformance.py.

- ``comfyui_patches``: our own statement of the rule ComfyUI's ``comfy/lora.py`` follows for an
  SD 1.x model (``model_lora_keys_unet`` / ``model_lora_keys_clip`` build a map from LoRA key
  prefixes to model weights, ``load_lora`` picks the up/down pair and ``.alpha`` of each prefix and
  warns "lora key not loaded" for every other key, ``calculate_weight`` adds
  (alpha / rank or 1) · up.flatten(1) @ down.flatten(1), reshaped to the weight). Written from
  reading that code, not copied; only the plain-LoRA branches loradex writes are modelled.
- ``fused_weights``: diffusers' ``load_lora_weights`` + ``fuse_lora`` on the tiny SD1 pipeline;
  runs in-process (the installed, newest diffusers) or, through ``main``, in another interpreter
  (the oldest declared diffusers, see the Makefile's ``oldest-diffusers`` step).
"""

from __future__ import annotations

import json
import sys

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
