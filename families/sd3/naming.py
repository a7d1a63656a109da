"""Stable Diffusion 3 / 3.5 module names in every convention its writers use (``naming`` aspect).

- canonical (loradex) and diffusers/PEFT: ``transformer.<diffusers path>``, split projections;
- SAI native, as kohya sd-scripts (``lora_unet_joint_blocks_…``) and ComfyUI
  (``diffusion_model.joint_blocks…``) name them: ``joint_blocks.N.x_block.attn.qkv`` (= to_q,
  to_k, to_v), ``context_block.attn.qkv`` (= add_q_proj, add_k_proj, add_v_proj), 3.5 medium's
  ``x_block.attn2.qkv`` (= attn2.to_q/k/v), ``mlp.fc1/fc2``, ``adaLN_modulation.1``. The last
  joint block's context half is pre-only: its ``adaLN_modulation.1`` has 2·width rows stored
  (shift, scale), diffusers' ``norm1_context.linear`` there is (scale, shift) — swapped exactly,
  told by shape, as is ``final_layer.adaLN_modulation.1`` ↔ ``norm_out.linear``;
- OneTrainer: ``lora_transformer_<diffusers path with _>``;
- text encoders: CLIP-L ``text_encoder`` (kohya ``lora_te1_``, ComfyUI ``clip_l``), CLIP-G
  ``text_encoder_2`` (``lora_te2_``, ``clip_g``), T5-XXL ``text_encoder_3`` (``lora_te3_``, ``t5xxl``).

Read from diffusers ``single_file_utils.convert_sd3_transformer_checkpoint_to_diffusers`` and
ComfyUI ``comfy/utils.py`` (``mmdit_to_diffusers``); written here, not copied.
"""

from __future__ import annotations

from ..dit_naming import EQUAL, SWAP_WHEN_2X, NamingTable, NativeModule

_J = "joint_blocks.{i}"
_D = "transformer_blocks.{i}"

TABLE = NamingTable((
    NativeModule(f"{_J}.x_block.attn.qkv", (f"{_D}.attn.to_q", f"{_D}.attn.to_k", f"{_D}.attn.to_v"), EQUAL),
    NativeModule(f"{_J}.x_block.attn.proj", (f"{_D}.attn.to_out.0",)),
    NativeModule(f"{_J}.x_block.attn2.qkv", (f"{_D}.attn2.to_q", f"{_D}.attn2.to_k", f"{_D}.attn2.to_v"), EQUAL),
    NativeModule(f"{_J}.x_block.attn2.proj", (f"{_D}.attn2.to_out.0",)),
    NativeModule(f"{_J}.x_block.mlp.fc1", (f"{_D}.ff.net.0.proj",)),
    NativeModule(f"{_J}.x_block.mlp.fc2", (f"{_D}.ff.net.2",)),
    NativeModule(f"{_J}.x_block.adaLN_modulation.1", (f"{_D}.norm1.linear",)),
    NativeModule(f"{_J}.context_block.attn.qkv",
                 (f"{_D}.attn.add_q_proj", f"{_D}.attn.add_k_proj", f"{_D}.attn.add_v_proj"), EQUAL),
    NativeModule(f"{_J}.context_block.attn.proj", (f"{_D}.attn.to_add_out",)),
    NativeModule(f"{_J}.context_block.mlp.fc1", (f"{_D}.ff_context.net.0.proj",)),
    NativeModule(f"{_J}.context_block.mlp.fc2", (f"{_D}.ff_context.net.2",)),
    NativeModule(f"{_J}.context_block.adaLN_modulation.1", (f"{_D}.norm1_context.linear",), swap=SWAP_WHEN_2X),
    NativeModule("x_embedder.proj", ("pos_embed.proj",)),
    NativeModule("context_embedder", ("context_embedder",)),
    NativeModule("t_embedder.mlp.0", ("time_text_embed.timestep_embedder.linear_1",)),
    NativeModule("t_embedder.mlp.2", ("time_text_embed.timestep_embedder.linear_2",)),
    NativeModule("y_embedder.mlp.0", ("time_text_embed.text_embedder.linear_1",)),
    NativeModule("y_embedder.mlp.2", ("time_text_embed.text_embedder.linear_2",)),
    NativeModule("final_layer.linear", ("proj_out",)),
    NativeModule("final_layer.adaLN_modulation.1", ("norm_out.linear",), swap=SWAP_WHEN_2X),
))

KOHYA_PREFIXES = {"lora_transformer_": "transformer", "lora_unet_": "transformer", "lora_te1_": "text_encoder",
                  "lora_te2_": "text_encoder_2", "lora_te3_": "text_encoder_3"}
KOHYA_WRITE_PREFIXES = {"transformer": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_",
                        "text_encoder_3": "lora_te3_"}
COMFY_TEXT_ENCODERS = {"text_encoder": "clip_l", "text_encoder_2": "clip_g", "text_encoder_3": "t5xxl"}
T5_COMPONENTS = frozenset({"text_encoder_3"})
NATIVE_MARKERS = ("joint_blocks",)  # (t_embedder, x_embedder … also name other DiTs' modules)
WIDTHS = (1536, 2432)  # SD3 / SD3.5 medium, SD3.5 large
# regexes on a top-level diffusers transformer path that only this family has (3.5 medium's attn2,
# the patch embedding)
DIFFUSERS_MARKERS = (r"transformer_blocks\.\d+\.attn2\.", r"pos_embed\.proj\.")
