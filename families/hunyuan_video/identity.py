"""HunyuanVideo: 20 double + 40 single blocks, 3072 wide — Flux-like, with its own leaves.

Native names (musubi-tuner / kohya ``lora_unet_``, ComfyUI ``diffusion_model.``):
``double_blocks.N.img_attn_qkv``, ``img_mlp.fc1`` / ``fc2``, ``img_mod.linear``,
``single_blocks.N.linear1`` / ``modulation.linear``, and the text token refiner
``txt_in.individual_token_refiner``. diffusers names are Flux.1's exactly, so there the block
count tells (index 19 of ``transformer_blocks``, 38-39 of ``single_transformer_blocks``) or the
``context_embedder.token_refiner``."""

from __future__ import annotations

from ..identity_rules import MARKER, any_name, max_index, width_of

WIDTH = 3072
TRANSFORMER_ROOTS = ("txt_in", "context_embedder")
CHECKPOINT_MARKERS = [(r"^(model\.diffusion_model\.)?txt_in\.individual_token_refiner\.", "HunyuanVideo token refiner")]

_LEAVES = (r"(double_blocks_\d+_(img|txt)_(mlp_fc[12]|mod_linear)|single_blocks_\d+_modulation_linear|"
           r"txt_in_individual_token_refiner|context_embedder_token_refiner)")


def evidence(modules) -> list[tuple[str, str, int]]:
    if any_name(modules, "^" + _LEAVES):
        return [("hunyuan-video", "HunyuanVideo leaves (img_mlp.fc1 / img_mod.linear / token refiner)", MARKER)]
    w = (width_of(modules, r"(double_blocks_\d+_img_attn_qkv|transformer_blocks_\d+_attn_to_q)")
         or width_of(modules, r"(single_blocks_\d+_linear1|single_transformer_blocks_\d+_attn_to_q)"))
    if w != WIDTH or any_name(modules, r"^(.*stream_modulation|distilled_guidance_layer|.*img_mlp_net)"):
        return []
    double = max(max_index(modules, r"double_blocks_(\d+)_") or -1,
                 max_index(modules, r"transformer_blocks_(\d+)_") or -1)
    single = max(max_index(modules, r"single_blocks_(\d+)_") or -1,
                 max_index(modules, r"single_transformer_blocks_(\d+)_") or -1)
    if double == 19 or single in (38, 39):
        return [("hunyuan-video", "3072-wide double/single blocks, 20 + 40 of them (HunyuanVideo)", MARKER)]
    return []
