"""SD 3 / 3.5's pipeline aspect: diffusers' ``StableDiffusion3Pipeline``, a tiny random pipeline
built offline, the prompt-record fields an SD3 render takes, and which components a LoRA stacks onto.

Tiny sizes follow diffusers' own SD3 pipeline test (tests/pipelines/stable_diffusion_3/
test_pipeline_stable_diffusion_3.py): a one-joint-block MMDiT (4 heads × 8, RMS q/k norm as in
SD 3.5), a one-level VAE with 4 latent channels (scale factor 1), two 32-wide CLIP text encoders
with 32-wide projections (pooled 32 + 32 = pooled_projection_dim 64) and a 32-wide T5 v1.1
stand-in (joint_attention_dim 32; the pipeline cuts the concatenated 64-wide CLIP states to T5's
width). The scheduler is SD 3.5's: flow-matching Euler with a static shift of 3.
"""

from __future__ import annotations

from .. import tiny_parts

PIPELINE_CLASS = "StableDiffusion3Pipeline"
PIPELINE_CLASSES = ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline",
                    "StableDiffusion3InpaintPipeline")
DENOISER = "transformer"
OBJECTIVE = "flow_matching"
GUIDANCE = "classifier-free"
NEGATIVE_PROMPT = True
# diffusers' StableDiffusion3Pipeline defaults
DEFAULTS = {"steps": 28, "cfg": 7.0}
# record fields passed to the pipeline call under the same name, with their defaults
PROMPT_FIELDS = {"max_sequence_length": 256}
# upper bounds the pipeline enforces (diffusers: max_sequence_length ≤ 512, T5 positions)
FIELD_LIMITS = {"max_sequence_length": 512}
# record fields set on the scheduler's config for a render (the flow-matching timestep shift;
# the default is the base's own scheduler value, 3.0 for SD 3.5)
SCHEDULER_FIELDS = ("shift",)
# How ComfyUI loads an SD 3 / 3.5 base split into parts: the MMDiT from models/diffusion_models
# (UNETLoader), CLIP-L + CLIP-G + T5-XXL through TripleCLIPLoader, the VAE through VAELoader;
# classifier-free guidance stays on the sampler (the record's cfg)
COMFYUI_LOADERS = {"clip_loader": "TripleCLIPLoader",
                   "clip_files": ("clip_l.safetensors", "clip_g.safetensors", "t5xxl_fp16.safetensors"),
                   "clip_type": None, "vae_file": "sd3.5_vae.safetensors", "guidance_node": None,
                   "sampler_cfg": None}

TINY_RECIPE = {
    "transformer": dict(sample_size=32, patch_size=1, in_channels=4, num_layers=1,
                        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                        joint_attention_dim=32, pooled_projection_dim=64, out_channels=4,
                        qk_norm="rms_norm"),
    "vae": dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,),
                layers_per_block=1, latent_channels=4, norm_num_groups=1, use_quant_conv=False,
                use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035),
    "text_encoder": dict(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                         num_hidden_layers=2, layer_norm_eps=1e-5, hidden_act="gelu",
                         max_position_embeddings=tiny_parts.MAX_TOKENS, projection_dim=32),
    "text_encoder_3": dict(d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=2,
                           relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
                           dropout_rate=0.0, is_encoder_decoder=False, use_cache=False),
    "tokenizer_3": tiny_parts.T5_TOKENIZER_RECIPE,
    "scheduler": dict(cls="FlowMatchEulerDiscreteScheduler", num_train_timesteps=1000, shift=3.0),
}


def build_tiny(seed: int = 0):
    """A ``StableDiffusion3Pipeline`` with random tiny components (float32, CPU, eval mode); the
    same seed gives bit-identical weights."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection, T5EncoderModel

    recipe = TINY_RECIPE
    tokenizer = tiny_parts.build_clip_tokenizer()
    tokenizer_2 = tiny_parts.build_clip_tokenizer()
    tokenizer_3 = tiny_parts.build_t5_tokenizer()
    clip = recipe["text_encoder"]
    pipe = StableDiffusion3Pipeline(
        transformer=tiny_parts.seeded(seed, 0, lambda: SD3Transformer2DModel(**recipe["transformer"])),
        vae=tiny_parts.seeded(seed, 1, lambda: AutoencoderKL(**recipe["vae"])),
        text_encoder=tiny_parts.seeded(seed, 2, lambda: CLIPTextModelWithProjection(
            tiny_parts.clip_config(tokenizer, clip))),
        tokenizer=tokenizer,
        text_encoder_2=tiny_parts.seeded(seed, 3, lambda: CLIPTextModelWithProjection(
            tiny_parts.clip_config(tokenizer_2, clip))),
        tokenizer_2=tokenizer_2,
        text_encoder_3=tiny_parts.seeded(seed, 4, lambda: T5EncoderModel(
            tiny_parts.t5_config(tokenizer_3, recipe["text_encoder_3"]))),
        tokenizer_3=tokenizer_3,
        scheduler=tiny_parts.scheduler(recipe["scheduler"]),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
