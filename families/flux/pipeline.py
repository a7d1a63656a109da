"""Flux.1's pipeline aspect: diffusers' ``FluxPipeline``, a tiny random pipeline built offline,
the prompt-record fields a Flux render takes, and which components a LoRA stacks onto.

Tiny sizes follow diffusers' own Flux pipeline test (tests/pipelines/flux/test_pipeline_flux.py):
a one double-block + one single-block transformer (2 heads × 16, RoPE axes 4+4+8), a one-level VAE
with one latent channel (so the packed 2×2 latent has 4 channels = the transformer's in_channels,
and the VAE scale factor is 1: images are multiples of 2 pixels), a 32-wide CLIP-L stand-in
(pooled output 32 = pooled_projection_dim) and a 32-wide T5 v1.1 stand-in (gated-GELU, d_model 32
= joint_attention_dim). Flux.1-dev's scheduler: flow-matching Euler with resolution-dependent
(dynamic) shift.
"""

from __future__ import annotations

from .. import tiny_parts

PIPELINE_CLASS = "FluxPipeline"
# diffusers pipelines whose loaded components make a Flux.1 base (same transformer and encoders)
PIPELINE_CLASSES = ("FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline",
                    "FluxKontextPipeline")
DENOISER = "transformer"
OBJECTIVE = "flow_matching"
# Flux.1-dev is guidance-distilled: the guidance scale is an input of the transformer (no
# classifier-free guidance, so no negative prompt)
GUIDANCE = "distilled"
NEGATIVE_PROMPT = False
# diffusers' FluxPipeline defaults for Flux.1-dev
DEFAULTS = {"steps": 28, "cfg": 3.5}
# record fields passed to the pipeline call under the same name, with their defaults
PROMPT_FIELDS = {"max_sequence_length": 512}
# upper bounds the pipeline enforces (diffusers: max_sequence_length ≤ 512, T5 positions)
FIELD_LIMITS = {"max_sequence_length": 512}
# Flux.1's scheduler shifts by image size (use_dynamic_shifting): no fixed shift to record
SCHEDULER_FIELDS: tuple = ()
# How ComfyUI loads a Flux.1 base (its own Flux example workflows): the transformer alone from
# models/diffusion_models (UNETLoader), CLIP-L + T5-XXL through DualCLIPLoader type "flux", the
# 16-channel VAE ("ae") through VAELoader; the distilled guidance goes on the positive conditioning
# (FluxGuidance) and the sampler runs without classifier-free guidance (cfg 1.0)
COMFYUI_LOADERS = {"clip_loader": "DualCLIPLoader", "clip_files": ("clip_l.safetensors", "t5xxl_fp16.safetensors"),
                   "clip_type": "flux", "vae_file": "ae.safetensors", "guidance_node": "FluxGuidance",
                   "sampler_cfg": 1.0}

TINY_RECIPE = {
    "transformer": dict(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                        pooled_projection_dim=32, axes_dims_rope=(4, 4, 8), guidance_embeds=True),
    "vae": dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,),
                layers_per_block=1, latent_channels=1, norm_num_groups=1, use_quant_conv=False,
                use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035),
    "text_encoder": dict(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                         num_hidden_layers=2, layer_norm_eps=1e-5, hidden_act="gelu",
                         max_position_embeddings=tiny_parts.MAX_TOKENS),
    "text_encoder_2": dict(d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=2,
                           relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
                           dropout_rate=0.0, is_encoder_decoder=False, use_cache=False),
    "tokenizer_2": tiny_parts.T5_TOKENIZER_RECIPE,
    "scheduler": dict(cls="FlowMatchEulerDiscreteScheduler", num_train_timesteps=1000, shift=3.0,
                      use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                      base_image_seq_len=256, max_image_seq_len=4096),
}


def build_tiny(seed: int = 0):
    """A ``FluxPipeline`` with random tiny components (float32, CPU, eval mode); the same seed
    gives bit-identical weights."""
    from diffusers import AutoencoderKL, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5EncoderModel

    recipe = TINY_RECIPE
    tokenizer = tiny_parts.build_clip_tokenizer()
    tokenizer_2 = tiny_parts.build_t5_tokenizer()
    pipe = FluxPipeline(
        transformer=tiny_parts.seeded(seed, 0, lambda: FluxTransformer2DModel(**recipe["transformer"])),
        vae=tiny_parts.seeded(seed, 1, lambda: AutoencoderKL(**recipe["vae"])),
        text_encoder=tiny_parts.seeded(seed, 2, lambda: CLIPTextModel(
            tiny_parts.clip_config(tokenizer, recipe["text_encoder"]))),
        tokenizer=tokenizer,
        text_encoder_2=tiny_parts.seeded(seed, 3, lambda: T5EncoderModel(
            tiny_parts.t5_config(tokenizer_2, recipe["text_encoder_2"]))),
        tokenizer_2=tokenizer_2,
        scheduler=tiny_parts.scheduler(recipe["scheduler"]),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
