"""Flux.1 module names in every convention its writers use (the ``naming`` aspect).

- canonical (loradex) and diffusers/PEFT: ``transformer.<diffusers path>``, split projections
  (``transformer_blocks.N.attn.to_q``, ``single_transformer_blocks.N.proj_mlp``);
- BFL native, as kohya sd-scripts (``lora_unet_<native with _>``) and ComfyUI / ai-toolkit
  (``diffusion_model.<native>``) name them: fused ``img_attn.qkv`` (= to_q, to_k, to_v),
  ``txt_attn.qkv`` (= add_q_proj, add_k_proj, add_v_proj) and single-block ``linear1``
  (= to_q, to_k, to_v of the model width, then proj_mlp: 3072, 3072, 3072, 12288 rows at real
  size); ``final_layer.adaLN_modulation.1`` stores (shift, scale) where diffusers' ``norm_out.linear``
  stores (scale, shift) — the up rows are swapped exactly;
- OneTrainer: ``lora_transformer_<diffusers path with _>``;
- text encoders: CLIP-L is ``text_encoder`` (kohya ``lora_te1_``, ComfyUI ``clip_l``), T5-XXL
  ``text_encoder_2`` (kohya ``lora_te3_`` — sd-scripts' lora_flux numbers T5 after SD3's two
  CLIPs —, ComfyUI ``t5xxl``).

Read from diffusers ``loaders/lora_conversion_utils.py`` (``_convert_kohya_flux_lora_to_diffusers``)
and ComfyUI ``comfy/utils.py`` (``flux_to_diffusers``); written here, not copied.
"""

from __future__ import annotations

from ..dit_naming import ATTENTION_THEN_REST, EQUAL, SWAP_WHEN_2X, NamingTable, NativeModule

_D = "transformer_blocks.{i}"
_S = "single_transformer_blocks.{i}"

TABLE = NamingTable((
    NativeModule("double_blocks.{i}.img_attn.qkv", (f"{_D}.attn.to_q", f"{_D}.attn.to_k", f"{_D}.attn.to_v"), EQUAL),
    NativeModule("double_blocks.{i}.img_attn.proj", (f"{_D}.attn.to_out.0",)),
    NativeModule("double_blocks.{i}.img_mlp.0", (f"{_D}.ff.net.0.proj",)),
    NativeModule("double_blocks.{i}.img_mlp.2", (f"{_D}.ff.net.2",)),
    NativeModule("double_blocks.{i}.img_mod.lin", (f"{_D}.norm1.linear",)),
    NativeModule("double_blocks.{i}.txt_attn.qkv",
                 (f"{_D}.attn.add_q_proj", f"{_D}.attn.add_k_proj", f"{_D}.attn.add_v_proj"), EQUAL),
    NativeModule("double_blocks.{i}.txt_attn.proj", (f"{_D}.attn.to_add_out",)),
    NativeModule("double_blocks.{i}.txt_mlp.0", (f"{_D}.ff_context.net.0.proj",)),
    NativeModule("double_blocks.{i}.txt_mlp.2", (f"{_D}.ff_context.net.2",)),
    NativeModule("double_blocks.{i}.txt_mod.lin", (f"{_D}.norm1_context.linear",)),
    NativeModule("single_blocks.{i}.linear1",
                 (f"{_S}.attn.to_q", f"{_S}.attn.to_k", f"{_S}.attn.to_v", f"{_S}.proj_mlp"), ATTENTION_THEN_REST,
                 rest_ratio=4),
    NativeModule("single_blocks.{i}.linear2", (f"{_S}.proj_out",)),
    NativeModule("single_blocks.{i}.modulation.lin", (f"{_S}.norm.linear",)),
    NativeModule("img_in", ("x_embedder",)),
    NativeModule("txt_in", ("context_embedder",)),
    NativeModule("time_in.in_layer", ("time_text_embed.timestep_embedder.linear_1",)),
    NativeModule("time_in.out_layer", ("time_text_embed.timestep_embedder.linear_2",)),
    NativeModule("vector_in.in_layer", ("time_text_embed.text_embedder.linear_1",)),
    NativeModule("vector_in.out_layer", ("time_text_embed.text_embedder.linear_2",)),
    NativeModule("guidance_in.in_layer", ("time_text_embed.guidance_embedder.linear_1",)),
    NativeModule("guidance_in.out_layer", ("time_text_embed.guidance_embedder.linear_2",)),
    NativeModule("final_layer.linear", ("proj_out",)),
    NativeModule("final_layer.adaLN_modulation.1", ("norm_out.linear",), swap=SWAP_WHEN_2X),
))

# kohya-style prefixes → component (longest first). ``lora_unet_`` carries native names,
# ``lora_transformer_`` (OneTrainer) diffusers paths.
KOHYA_PREFIXES = {"lora_transformer_": "transformer", "lora_unet_": "transformer",
                  "lora_te1_": "text_encoder", "lora_te3_": "text_encoder_2"}
# what loradex writes per component (kohya convention)
KOHYA_WRITE_PREFIXES = {"transformer": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te3_"}
# ComfyUI's text-encoder names (``text_encoders.<name>.transformer.<path>``)
COMFY_TEXT_ENCODERS = {"text_encoder": "clip_l", "text_encoder_2": "t5xxl"}
T5_COMPONENTS = frozenset({"text_encoder_2"})
# native block names only this family's files carry (convention readers use them to tell the family)
# (img_in, txt_in, vector_in … also name Qwen-Image / HunyuanVideo modules: not markers)
NATIVE_MARKERS = ("double_blocks", "single_blocks")
# model widths (the attention's input) of the real checkpoints: tell a diffusers file's family
WIDTHS = (3072,)
# regexes on a top-level diffusers transformer path that only this family has
DIFFUSERS_MARKERS = (r"single_transformer_blocks\.\d+\.",)
