"""Real-width module layouts of every DiT family loradex recognises, and LoRA files built from them.

``real_linear_layout(model)`` instantiates the diffusers transformer of a model from its REAL
config (written down below; values from the public model repos' ``transformer/config.json``) on
the meta device — no weights, no download — and lists its ``nn.Linear`` modules by diffusers
name: ``{path: (out_features, in_features)}``.

``native_layout(model)`` gives the same layers under the names the original code uses (BFL Flux,
MMDiT SD3, Tencent HunyuanVideo, Wan …), which kohya / musubi / ComfyUI / ai-toolkit files carry.
It is derived from the diffusers layout through a documented mapping table (native ← diffusers
parts, fused projections stacked by rows), so every native width follows from the real model.

``write_lora(tmp, model, convention, rank=1)`` writes a valid safetensors LoRA at those widths in
one of the conventions the probe recognises (see ``CONVENTIONS``).
"""

from __future__ import annotations

import json
import re
import struct
from functools import lru_cache
from pathlib import Path

# --- real configs --------------------------------------------------------------------------------
# model → (family, diffusers class, config). Sources: the Hub repos' transformer/config.json.
MODELS: dict[str, tuple[str, str, dict]] = {
    # black-forest-labs/FLUX.1-dev (schnell: guidance_embeds false; Kontext / Krea: same keys)
    "flux1-dev": ("flux", "FluxTransformer2DModel", dict(
        patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
        axes_dims_rope=(16, 56, 56))),
    # stabilityai/stable-diffusion-3-medium-diffusers
    "sd3-medium": ("sd3", "SD3Transformer2DModel", dict(
        sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64, num_attention_heads=24,
        joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16,
        pos_embed_max_size=192)),
    # stabilityai/stable-diffusion-3.5-medium (MMDiT-X: dual attention in blocks 0-12)
    "sd3.5-medium": ("sd3", "SD3Transformer2DModel", dict(
        sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64, num_attention_heads=24,
        joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16,
        pos_embed_max_size=384, dual_attention_layers=tuple(range(13)), qk_norm="rms_norm")),
    # stabilityai/stable-diffusion-3.5-large
    "sd3.5-large": ("sd3", "SD3Transformer2DModel", dict(
        sample_size=128, patch_size=2, in_channels=16, num_layers=38, attention_head_dim=64, num_attention_heads=38,
        joint_attention_dim=4096, caption_projection_dim=2432, pooled_projection_dim=2048, out_channels=16,
        pos_embed_max_size=192, qk_norm="rms_norm")),
    # lodestones/Chroma1-HD
    "chroma": ("chroma", "ChromaTransformer2DModel", dict(
        patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=4096, axes_dims_rope=(16, 56, 56), approximator_num_channels=64,
        approximator_hidden_dim=5120, approximator_layers=5)),
    # black-forest-labs/FLUX.2-dev (Mistral Small 3 text encoder: 3 × 5120 hidden states)
    "flux2-dev": ("flux2", "Flux2Transformer2DModel", dict(
        patch_size=1, in_channels=128, num_layers=8, num_single_layers=48, attention_head_dim=128,
        num_attention_heads=48, joint_attention_dim=15360, timestep_guidance_channels=256, mlp_ratio=3.0,
        axes_dims_rope=(32, 32, 32, 32), rope_theta=2000, guidance_embeds=True)),
    # black-forest-labs/FLUX.2-klein-4B (Qwen3-4B: 3 × 2560 hidden states; distilled, no guidance embedder)
    "flux2-klein-4b": ("flux2", "Flux2Transformer2DModel", dict(
        patch_size=1, in_channels=128, num_layers=5, num_single_layers=20, attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=7680, timestep_guidance_channels=256, mlp_ratio=3.0,
        axes_dims_rope=(32, 32, 32, 32), rope_theta=2000, guidance_embeds=False)),
    # Qwen/Qwen-Image
    "qwen-image": ("qwen-image", "QwenImageTransformer2DModel", dict(
        patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128, num_attention_heads=24,
        joint_attention_dim=3584, guidance_embeds=False, axes_dims_rope=(16, 56, 56))),
    # Tongyi-MAI/Z-Image-Turbo
    "z-image-turbo": ("z-image", "ZImageTransformer2DModel", dict(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=3840, n_layers=30, n_refiner_layers=2,
        n_heads=30, n_kv_heads=30, norm_eps=1e-5, qk_norm=True, cap_feat_dim=2560, rope_theta=256.0, t_scale=1000.0,
        axes_dims=[32, 48, 48], axes_lens=[1536, 512, 512])),
    # HiDream-ai/HiDream-I1-Full (llama_layers: which Llama-3.1 hidden states feed which block)
    "hidream-i1": ("hidream", "HiDreamImageTransformer2DModel", dict(
        patch_size=2, in_channels=16, out_channels=16, num_layers=16, num_single_layers=32, attention_head_dim=128,
        num_attention_heads=20, caption_channels=[4096, 4096], text_emb_dim=2048, num_routed_experts=4,
        num_activated_experts=2, axes_dims_rope=(64, 32, 32), max_resolution=(128, 128),
        llama_layers=list(range(32)) + [31] * 16)),
    # Alpha-VLLM/Lumina-Image-2.0 (Gemma-2 2B captions: 2304)
    "lumina2": ("lumina2", "Lumina2Transformer2DModel", dict(
        sample_size=128, patch_size=2, in_channels=16, hidden_size=2304, num_layers=26, num_refiner_layers=2,
        num_attention_heads=24, num_kv_heads=8, multiple_of=256, norm_eps=1e-5, scaling_factor=1.0,
        axes_dim_rope=(32, 32, 32), axes_lens=(300, 512, 512), cap_feat_dim=2304)),
    # fal/AuraFlow-v0.3
    "auraflow": ("auraflow", "AuraFlowTransformer2DModel", dict(
        sample_size=64, patch_size=2, in_channels=4, num_mmdit_layers=4, num_single_dit_layers=32,
        attention_head_dim=256, num_attention_heads=12, joint_attention_dim=2048, caption_projection_dim=3072,
        out_channels=4, pos_embed_max_size=9216)),
    # Wan-AI/Wan2.1-T2V-1.3B-Diffusers
    "wan2.1-1.3b": ("wan-1.3b", "WanTransformer3DModel", dict(
        patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
        text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6)),
    # Wan-AI/Wan2.2-TI2V-5B-Diffusers
    "wan2.2-5b": ("wan-5b", "WanTransformer3DModel", dict(
        patch_size=(1, 2, 2), num_attention_heads=24, attention_head_dim=128, in_channels=48, out_channels=48,
        text_dim=4096, freq_dim=256, ffn_dim=14336, num_layers=30, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6)),
    # Wan-AI/Wan2.1-T2V-14B-Diffusers (Wan2.2-T2V-A14B's two experts have the same keys)
    "wan2.1-14b": ("wan-14b", "WanTransformer3DModel", dict(
        patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=16, out_channels=16,
        text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6)),
    # hunyuanvideo-community/HunyuanVideo
    "hunyuan-video": ("hunyuan-video", "HunyuanVideoTransformer3DModel", dict(
        in_channels=16, out_channels=16, num_attention_heads=24, attention_head_dim=128, num_layers=20,
        num_single_layers=40, num_refiner_layers=2, mlp_ratio=4.0, patch_size=2, patch_size_t=1, qk_norm="rms_norm",
        guidance_embeds=True, text_embed_dim=4096, pooled_projection_dim=768, rope_theta=256.0,
        rope_axes_dim=(16, 56, 56))),
    # Lightricks/LTX-Video (0.9.x 2B)
    "ltx-video": ("ltx-video", "LTXVideoTransformer3DModel", dict(
        in_channels=128, out_channels=128, patch_size=1, patch_size_t=1, num_attention_heads=32,
        attention_head_dim=64, cross_attention_dim=2048, num_layers=28, activation_fn="gelu-approximate",
        qk_norm="rms_norm_across_heads", norm_elementwise_affine=False, norm_eps=1e-6, caption_channels=4096,
        attention_bias=True, attention_out_bias=True)),
}
# The model each family's tests use.
FAMILY_MODEL = {"flux": "flux1-dev", "sd3": "sd3.5-large", "chroma": "chroma", "flux2": "flux2-klein-4b",
                "qwen-image": "qwen-image", "z-image": "z-image-turbo", "hidream": "hidream-i1",
                "lumina2": "lumina2", "auraflow": "auraflow", "wan-1.3b": "wan2.1-1.3b", "wan-5b": "wan2.2-5b",
                "wan-14b": "wan2.1-14b", "hunyuan-video": "hunyuan-video", "ltx-video": "ltx-video"}

# CLIP text encoders (openai/clip-vit-large-patch14, laion CLIP-ViT-bigG-14) for kohya lora_te1_/te2_.
CLIP_CONFIGS = {"clip-l": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12),
                "clip-g": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32)}


def _model(model: str) -> tuple[str, str, dict]:
    if model in FAMILY_MODEL:
        model = FAMILY_MODEL[model]
    return MODELS[model]


@lru_cache(maxsize=None)
def _linear_layout(model: str) -> tuple[tuple[str, tuple[int, int]], ...]:
    import diffusers
    import torch

    _, cls, config = _model(model)
    with torch.device("meta"):
        net = getattr(diffusers, cls)(**config)
    return tuple((name, (mod.out_features, mod.in_features)) for name, mod in net.named_modules()
                 if isinstance(mod, torch.nn.Linear))


def real_linear_layout(model: str) -> dict[str, tuple[int, int]]:
    """{diffusers module path: (out, in)} of every nn.Linear in ``model`` (a MODELS key or a family)."""
    return dict(_linear_layout(model))


def clip_layout(which: str) -> dict[str, tuple[int, int]]:
    """CLIP text-encoder linears (transformers names, ``text_model.…``): widths from the real config."""
    cfg = CLIP_CONFIGS[which]
    w, ff = cfg["hidden_size"], cfg["intermediate_size"]
    out = {}
    for i in range(cfg["num_hidden_layers"]):
        p = f"text_model.encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out[f"{p}.self_attn.{proj}"] = (w, w)
        out[f"{p}.mlp.fc1"] = (ff, w)
        out[f"{p}.mlp.fc2"] = (w, ff)
    return out


# --- native names -----------------------------------------------------------------------------------
# native template ← diffusers templates (rows stacked in this order when there are several).
# "{i}" is a block index. Only the blocks (what trainers adapt) are listed.
_FLUX_DOUBLE = [
    ("double_blocks.{i}.img_attn.qkv", ["transformer_blocks.{i}.attn.to_q", "transformer_blocks.{i}.attn.to_k",
                                        "transformer_blocks.{i}.attn.to_v"]),
    ("double_blocks.{i}.img_attn.proj", ["transformer_blocks.{i}.attn.to_out.0"]),
    ("double_blocks.{i}.txt_attn.qkv", ["transformer_blocks.{i}.attn.add_q_proj",
                                        "transformer_blocks.{i}.attn.add_k_proj",
                                        "transformer_blocks.{i}.attn.add_v_proj"]),
    ("double_blocks.{i}.txt_attn.proj", ["transformer_blocks.{i}.attn.to_add_out"]),
]
NATIVE_MAPS: dict[str, list[tuple[str, list[str]]]] = {
    "flux": _FLUX_DOUBLE + [
        ("double_blocks.{i}.img_mlp.0", ["transformer_blocks.{i}.ff.net.0.proj"]),
        ("double_blocks.{i}.img_mlp.2", ["transformer_blocks.{i}.ff.net.2"]),
        ("double_blocks.{i}.txt_mlp.0", ["transformer_blocks.{i}.ff_context.net.0.proj"]),
        ("double_blocks.{i}.txt_mlp.2", ["transformer_blocks.{i}.ff_context.net.2"]),
        ("double_blocks.{i}.img_mod.lin", ["transformer_blocks.{i}.norm1.linear"]),
        ("double_blocks.{i}.txt_mod.lin", ["transformer_blocks.{i}.norm1_context.linear"]),
        ("single_blocks.{i}.linear1", ["single_transformer_blocks.{i}.attn.to_q", "single_transformer_blocks.{i}.attn.to_k",
                                       "single_transformer_blocks.{i}.attn.to_v", "single_transformer_blocks.{i}.proj_mlp"]),
        ("single_blocks.{i}.linear2", ["single_transformer_blocks.{i}.proj_out"]),
        ("single_blocks.{i}.modulation.lin", ["single_transformer_blocks.{i}.norm.linear"]),
    ],
    "flux2": _FLUX_DOUBLE + [
        ("double_blocks.{i}.img_mlp.0", ["transformer_blocks.{i}.ff.linear_in"]),
        ("double_blocks.{i}.img_mlp.2", ["transformer_blocks.{i}.ff.linear_out"]),
        ("double_blocks.{i}.txt_mlp.0", ["transformer_blocks.{i}.ff_context.linear_in"]),
        ("double_blocks.{i}.txt_mlp.2", ["transformer_blocks.{i}.ff_context.linear_out"]),
        ("single_blocks.{i}.linear1", ["single_transformer_blocks.{i}.attn.to_qkv_mlp_proj"]),
        ("single_blocks.{i}.linear2", ["single_transformer_blocks.{i}.attn.to_out"]),
        ("double_stream_modulation_img.lin", ["double_stream_modulation_img.linear"]),
        ("double_stream_modulation_txt.lin", ["double_stream_modulation_txt.linear"]),
        ("single_stream_modulation.lin", ["single_stream_modulation.linear"]),
    ],
    "hunyuan-video": [
        ("double_blocks.{i}.img_attn_qkv", ["transformer_blocks.{i}.attn.to_q", "transformer_blocks.{i}.attn.to_k",
                                            "transformer_blocks.{i}.attn.to_v"]),
        ("double_blocks.{i}.img_attn_proj", ["transformer_blocks.{i}.attn.to_out.0"]),
        ("double_blocks.{i}.txt_attn_qkv", ["transformer_blocks.{i}.attn.add_q_proj",
                                            "transformer_blocks.{i}.attn.add_k_proj",
                                            "transformer_blocks.{i}.attn.add_v_proj"]),
        ("double_blocks.{i}.txt_attn_proj", ["transformer_blocks.{i}.attn.to_add_out"]),
        ("double_blocks.{i}.img_mlp.fc1", ["transformer_blocks.{i}.ff.net.0.proj"]),
        ("double_blocks.{i}.img_mlp.fc2", ["transformer_blocks.{i}.ff.net.2"]),
        ("double_blocks.{i}.txt_mlp.fc1", ["transformer_blocks.{i}.ff_context.net.0.proj"]),
        ("double_blocks.{i}.txt_mlp.fc2", ["transformer_blocks.{i}.ff_context.net.2"]),
        ("double_blocks.{i}.img_mod.linear", ["transformer_blocks.{i}.norm1.linear"]),
        ("double_blocks.{i}.txt_mod.linear", ["transformer_blocks.{i}.norm1_context.linear"]),
        ("single_blocks.{i}.linear1", ["single_transformer_blocks.{i}.attn.to_q", "single_transformer_blocks.{i}.attn.to_k",
                                       "single_transformer_blocks.{i}.attn.to_v", "single_transformer_blocks.{i}.proj_mlp"]),
        ("single_blocks.{i}.linear2", ["single_transformer_blocks.{i}.proj_out"]),
        ("single_blocks.{i}.modulation.linear", ["single_transformer_blocks.{i}.norm.linear"]),
        ("txt_in.individual_token_refiner.blocks.{i}.self_attn_qkv",
         ["context_embedder.token_refiner.refiner_blocks.{i}.attn.to_q",
          "context_embedder.token_refiner.refiner_blocks.{i}.attn.to_k",
          "context_embedder.token_refiner.refiner_blocks.{i}.attn.to_v"]),
        ("txt_in.individual_token_refiner.blocks.{i}.self_attn_proj",
         ["context_embedder.token_refiner.refiner_blocks.{i}.attn.to_out.0"]),
        ("txt_in.individual_token_refiner.blocks.{i}.mlp.fc1",
         ["context_embedder.token_refiner.refiner_blocks.{i}.ff.net.0.proj"]),
        ("txt_in.individual_token_refiner.blocks.{i}.mlp.fc2",
         ["context_embedder.token_refiner.refiner_blocks.{i}.ff.net.2"]),
    ],
    "sd3": [
        ("joint_blocks.{i}.x_block.attn.qkv", ["transformer_blocks.{i}.attn.to_q", "transformer_blocks.{i}.attn.to_k",
                                              "transformer_blocks.{i}.attn.to_v"]),
        ("joint_blocks.{i}.x_block.attn.proj", ["transformer_blocks.{i}.attn.to_out.0"]),
        ("joint_blocks.{i}.x_block.attn2.qkv", ["transformer_blocks.{i}.attn2.to_q", "transformer_blocks.{i}.attn2.to_k",
                                               "transformer_blocks.{i}.attn2.to_v"]),
        ("joint_blocks.{i}.x_block.attn2.proj", ["transformer_blocks.{i}.attn2.to_out.0"]),
        ("joint_blocks.{i}.x_block.mlp.fc1", ["transformer_blocks.{i}.ff.net.0.proj"]),
        ("joint_blocks.{i}.x_block.mlp.fc2", ["transformer_blocks.{i}.ff.net.2"]),
        ("joint_blocks.{i}.x_block.adaLN_modulation.1", ["transformer_blocks.{i}.norm1.linear"]),
        ("joint_blocks.{i}.context_block.attn.qkv", ["transformer_blocks.{i}.attn.add_q_proj",
                                                    "transformer_blocks.{i}.attn.add_k_proj",
                                                    "transformer_blocks.{i}.attn.add_v_proj"]),
        ("joint_blocks.{i}.context_block.attn.proj", ["transformer_blocks.{i}.attn.to_add_out"]),
        ("joint_blocks.{i}.context_block.mlp.fc1", ["transformer_blocks.{i}.ff_context.net.0.proj"]),
        ("joint_blocks.{i}.context_block.mlp.fc2", ["transformer_blocks.{i}.ff_context.net.2"]),
        ("joint_blocks.{i}.context_block.adaLN_modulation.1", ["transformer_blocks.{i}.norm1_context.linear"]),
    ],
    "wan": [
        ("blocks.{i}.self_attn.q", ["blocks.{i}.attn1.to_q"]), ("blocks.{i}.self_attn.k", ["blocks.{i}.attn1.to_k"]),
        ("blocks.{i}.self_attn.v", ["blocks.{i}.attn1.to_v"]), ("blocks.{i}.self_attn.o", ["blocks.{i}.attn1.to_out.0"]),
        ("blocks.{i}.cross_attn.q", ["blocks.{i}.attn2.to_q"]), ("blocks.{i}.cross_attn.k", ["blocks.{i}.attn2.to_k"]),
        ("blocks.{i}.cross_attn.v", ["blocks.{i}.attn2.to_v"]),
        ("blocks.{i}.cross_attn.o", ["blocks.{i}.attn2.to_out.0"]),
        ("blocks.{i}.ffn.0", ["blocks.{i}.ffn.net.0.proj"]), ("blocks.{i}.ffn.2", ["blocks.{i}.ffn.net.2"]),
    ],
    # Z-Image / Lumina 2 (NextDiT): fused qkv, attention.out, SwiGLU w1/w2/w3.
    "nextdit": [
        ("layers.{i}.attention.qkv", ["layers.{i}.attention.to_q", "layers.{i}.attention.to_k",
                                      "layers.{i}.attention.to_v"]),
        ("layers.{i}.attention.out", ["layers.{i}.attention.to_out.0"]),
        ("layers.{i}.feed_forward.w1", ["layers.{i}.feed_forward.w1"]),
        ("layers.{i}.feed_forward.w2", ["layers.{i}.feed_forward.w2"]),
        ("layers.{i}.feed_forward.w3", ["layers.{i}.feed_forward.w3"]),
    ],
    "lumina2": [
        ("layers.{i}.attention.qkv", ["layers.{i}.attn.to_q", "layers.{i}.attn.to_k", "layers.{i}.attn.to_v"]),
        ("layers.{i}.attention.out", ["layers.{i}.attn.to_out.0"]),
        ("layers.{i}.feed_forward.w1", ["layers.{i}.feed_forward.linear_1"]),
        ("layers.{i}.feed_forward.w2", ["layers.{i}.feed_forward.linear_2"]),
        ("layers.{i}.feed_forward.w3", ["layers.{i}.feed_forward.linear_3"]),
        ("layers.{i}.adaLN_modulation.1", ["layers.{i}.norm1.linear"]),
    ],
}
# Chroma: Flux.1's blocks (no modulation: diffusers has no norm1.linear there) + the guidance network.
NATIVE_MAPS["chroma"] = NATIVE_MAPS["flux"] + [
    ("distilled_guidance_layer.in_proj", ["distilled_guidance_layer.in_proj"]),
    ("distilled_guidance_layer.layers.{i}.in_layer", ["distilled_guidance_layer.layers.{i}.linear_1"]),
    ("distilled_guidance_layer.layers.{i}.out_layer", ["distilled_guidance_layer.layers.{i}.linear_2"]),
    ("distilled_guidance_layer.out_proj", ["distilled_guidance_layer.out_proj"]),
]
# AuraFlow's original names (as diffusers' single-file converter reads them).
_AURA_FF = [("c_fc1", "linear_1"), ("c_fc2", "linear_2"), ("c_proj", "out_projection")]
NATIVE_MAPS["auraflow"] = (
    [(f"double_layers.{{i}}.{mlp}.{o}", [f"joint_transformer_blocks.{{i}}.{ff}.{d}"])
     for mlp, ff in (("mlpX", "ff"), ("mlpC", "ff_context")) for o, d in _AURA_FF]
    + [("double_layers.{i}.modX.1", ["joint_transformer_blocks.{i}.norm1.linear"]),
       ("double_layers.{i}.modC.1", ["joint_transformer_blocks.{i}.norm1_context.linear"])]
    + [(f"double_layers.{{i}}.attn.{o}", [f"joint_transformer_blocks.{{i}}.attn.{d}"]) for o, d in (
        ("w2q", "to_q"), ("w2k", "to_k"), ("w2v", "to_v"), ("w2o", "to_out.0"),
        ("w1q", "add_q_proj"), ("w1k", "add_k_proj"), ("w1v", "add_v_proj"), ("w1o", "to_add_out"))]
    + [(f"single_layers.{{i}}.mlp.{o}", [f"single_transformer_blocks.{{i}}.ff.{d}"]) for o, d in _AURA_FF]
    + [("single_layers.{i}.modCX.1", ["single_transformer_blocks.{i}.norm1.linear"])]
    + [(f"single_layers.{{i}}.attn.{o}", [f"single_transformer_blocks.{{i}}.attn.{d}"]) for o, d in (
        ("w1q", "to_q"), ("w1k", "to_k"), ("w1v", "to_v"), ("w1o", "to_out.0"))])
_NATIVE_MAP_OF = {"auraflow": "auraflow", "flux": "flux", "chroma": "chroma", "flux2": "flux2", "hunyuan-video": "hunyuan-video",
                  "sd3": "sd3", "wan-1.3b": "wan", "wan-5b": "wan", "wan-14b": "wan", "z-image": "nextdit",
                  "lumina2": "lumina2"}
# Families whose native (ComfyUI / original) names are the diffusers names.
SAME_NAMES = ("qwen-image", "hidream", "ltx-video")


def native_layout(model: str) -> dict[str, tuple[int, int]]:
    """{native module path: (out, in)}; fused projections have the stacked rows of their parts."""
    family = _model(model)[0]
    diff = real_linear_layout(model)
    if family in SAME_NAMES:
        return diff
    table = NATIVE_MAPS[_NATIVE_MAP_OF[family]]
    out: dict[str, tuple[int, int]] = {}
    blocks = sorted({int(n) for path in diff for n in re.findall(r"\.(\d+)\.", path)} | {0})
    for native, parts in table:
        for i in (blocks if "{i}" in native else [None]):
            names = [p.format(i=i) for p in parts]
            if not all(n in diff for n in names):
                continue  # a pre-only last block, a block without attn2 …
            ins = {diff[n][1] for n in names}
            assert len(ins) == 1, f"{native}: parts with different in-features {ins}"
            out[native.format(i=i)] = (sum(diff[n][0] for n in names), ins.pop())
    return out


# --- LoRA files ---------------------------------------------------------------------------------------
# convention → how a file spells (component, module) and its down/up/alpha keys
CONVENTIONS = ("kohya", "comfy", "comfy-down-up", "diffusers", "onetrainer", "peft", "lycoris", "lycoris-comfy",
               "xlabs")


def _flat(name: str) -> str:
    return name.replace(".", "_")


def lora_tensors(model: str, convention: str, *, rank: int = 1, te: str | None = None,
                 limit: int | None = None, exclude: str | None = None) -> dict[str, tuple[tuple[int, ...], bool]]:
    """{key: (shape, is_alpha)} of a LoRA on every block linear of ``model`` in ``convention``.
    ``te`` adds a CLIP text encoder (kohya ``lora_te1_``); ``limit`` keeps the first N modules;
    ``exclude`` drops module paths matching that regular expression (searched)."""
    family = _model(model)[0]
    native = convention in ("kohya", "comfy", "comfy-down-up", "lycoris", "lycoris-comfy", "xlabs") and \
        family not in SAME_NAMES
    layout = native_layout(model) if native else {  # the blocks, as trainers adapt them
        k: v for k, v in real_linear_layout(model).items()
        if re.match(r"(transformer_blocks|single_transformer_blocks|blocks|layers|double_stream_blocks|"
                    r"single_stream_blocks|joint_transformer_blocks|context_embedder\.token_refiner|"
                    r"distilled_guidance_layer)\.", k)}
    items = sorted((k, v) for k, v in layout.items() if not (exclude and re.search(exclude, k)))
    items = items[:limit] if limit else items
    keys: dict[str, tuple[tuple[int, ...], bool]] = {}

    def pair(down_key, up_key, alpha_key, out, inp):
        keys[down_key] = ((rank, inp), False)
        keys[up_key] = ((out, rank), False)
        if alpha_key:
            keys[alpha_key] = ((), True)

    for path, (out, inp) in items:
        if convention == "kohya":
            stem = "lora_unet_" + _flat(path)
            pair(f"{stem}.lora_down.weight", f"{stem}.lora_up.weight", f"{stem}.alpha", out, inp)
        elif convention == "comfy":
            pair(f"diffusion_model.{path}.lora_A.weight", f"diffusion_model.{path}.lora_B.weight", None, out, inp)
        elif convention == "comfy-down-up":
            pair(f"diffusion_model.{path}.lora_down.weight", f"diffusion_model.{path}.lora_up.weight",
                 f"diffusion_model.{path}.alpha", out, inp)
        elif convention == "diffusers":
            pair(f"transformer.{path}.lora_A.weight", f"transformer.{path}.lora_B.weight", None, out, inp)
        elif convention == "onetrainer":
            stem = "lora_transformer_" + _flat(path)
            pair(f"{stem}.lora_down.weight", f"{stem}.lora_up.weight", f"{stem}.alpha", out, inp)
        elif convention == "peft":
            pair(f"base_model.model.{path}.lora_A.weight", f"base_model.model.{path}.lora_B.weight", None, out, inp)
        elif convention in ("lycoris", "lycoris-comfy"):  # LoKr, w1 a full (4, 4) factor, w2 low-rank
            stem = "lycoris_" + _flat(path) if convention == "lycoris" else f"diffusion_model.{path}"
            f = 4 if out % 4 == 0 and inp % 4 == 0 else 1
            keys[f"{stem}.lokr_w1"] = ((f, f), False)
            keys[f"{stem}.lokr_w2_a"] = ((out // f, rank), False)
            keys[f"{stem}.lokr_w2_b"] = ((rank, inp // f), False)
            keys[f"{stem}.alpha"] = ((), True)
        elif convention == "xlabs":
            m = re.match(r"double_blocks\.(\d+)\.(img|txt)_attn\.(qkv|proj)$", path)
            if not m:
                continue  # XLabs adapts the double blocks' attention only
            i, stream, proj = m.groups()
            which = "1" if stream == "img" else "2"
            stem = f"double_blocks.{i}.processor.{proj}_lora{which}"
            pair(f"{stem}.down.weight", f"{stem}.up.weight", None, out, inp)
        else:
            raise ValueError(f"unknown convention {convention!r}")
    if te:
        for path, (out, inp) in sorted(clip_layout(te).items()):
            stem = "lora_te1_" + _flat(path)
            pair(f"{stem}.lora_down.weight", f"{stem}.lora_up.weight", f"{stem}.alpha", out, inp)
    if family is None:  # pragma: no cover
        raise ValueError(model)
    return keys


def write_lora(tmp, model: str, convention: str, *, rank: int = 1, alpha: float | None = None,
               te: str | None = None, limit: int | None = None, exclude: str | None = None,
               metadata: dict | None = None, name: str | None = None) -> Path:
    """Write ``<tmp>/<name or model-convention>.safetensors``: BF16 zeros for the factors, F32
    alphas = ``alpha`` (default rank); diffusers files store alpha in ``lora_adapter_metadata``
    as diffusers' writers do. The bytes are laid out directly (no torch): fast at real widths."""
    tensors = lora_tensors(model, convention, rank=rank, te=te, limit=limit, exclude=exclude)
    a = float(alpha if alpha is not None else rank)
    md = dict(metadata or {})
    if convention == "diffusers":
        md.setdefault("lora_adapter_metadata", json.dumps({"transformer.r": rank, "transformer.lora_alpha": a}))
    header: dict = {"__metadata__": md} if md else {}
    pos, alphas = 0, []
    for key, (shape, is_alpha) in tensors.items():
        size = 4 if is_alpha else 2 * _prod(shape)
        header[key] = {"dtype": "F32" if is_alpha else "BF16", "shape": list(shape), "data_offsets": [pos, pos + size]}
        if is_alpha:
            alphas.append(pos)
        pos += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    data = bytearray(pos)
    for at in alphas:
        data[at:at + 4] = struct.pack("<f", a)
    path = Path(tmp) / f"{name or f'{model}-{convention}' + ('-te' if te else '')}.safetensors"
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + bytes(data))
    return path


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# --- kohya key layouts (tests/fixtures/layouts/*.json) -------------------------------------------------
def kohya_layout(model: str, *, rank: int = 16, te: tuple[str, ...] = ()) -> dict[str, dict]:
    """{kohya key: {"dtype", "shape"}} as sd-scripts writes a rank-``rank`` LoRA on every block linear
    (plus ``lora_te1_``/``lora_te2_`` CLIP encoders named in ``te``)."""
    out = {}
    for path, (o, i) in sorted(native_layout(model).items()):
        stem = "lora_unet_" + _flat(path)
        out[f"{stem}.alpha"] = {"dtype": "torch.bfloat16", "shape": []}
        out[f"{stem}.lora_down.weight"] = {"dtype": "torch.bfloat16", "shape": [rank, i]}
        out[f"{stem}.lora_up.weight"] = {"dtype": "torch.bfloat16", "shape": [o, rank]}
    for n, which in enumerate(te, start=1):
        for path, (o, i) in sorted(clip_layout(which).items()):
            stem = f"lora_te{n}_" + _flat(path)
            out[f"{stem}.alpha"] = {"dtype": "torch.bfloat16", "shape": []}
            out[f"{stem}.lora_down.weight"] = {"dtype": "torch.bfloat16", "shape": [rank, i]}
            out[f"{stem}.lora_up.weight"] = {"dtype": "torch.bfloat16", "shape": [o, rank]}
    return out
