"""SDXL's pipeline aspect: diffusers' ``StableDiffusionXLPipeline``, a tiny random pipeline built
offline (two CLIP text encoders), the prompt-record fields, which components a LoRA stacks onto."""

from __future__ import annotations

from .. import tiny_parts
from ..sd1 import pipeline as _sd1

PIPELINE_CLASS = "StableDiffusionXLPipeline"
PIPELINE_CLASSES = ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline",
                    "StableDiffusionXLInpaintPipeline")
DENOISER = "unet"
OBJECTIVE = "epsilon"
GUIDANCE = "classifier-free"
NEGATIVE_PROMPT = True
DEFAULTS = {"steps": 20, "cfg": 7.0}
PROMPT_FIELDS: dict = {}
SCHEDULER_FIELDS: tuple = ()
# a key prefix of the original single-file (ldm / sgm) layout that only this family has
SINGLE_FILE_MARKERS = ("conditioner.embedders.1.",)

TINY_RECIPE = {
    # cross_attention_dim 64 = the two text encoders' hidden states concatenated (32 + 32);
    # projection_class_embeddings_input_dim 80 = 6 time ids x 8 + pooled projection 32.
    "unet": dict(block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4,
                 out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                 use_linear_projection=True, addition_embed_type="text_time",
                 addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
                 projection_class_embeddings_input_dim=80, cross_attention_dim=64),
    "vae": _sd1.TINY_RECIPE["vae"],
    "text_encoder": _sd1.TINY_RECIPE["text_encoder"],
    "text_encoder_2": dict(_sd1.TINY_RECIPE["text_encoder"], projection_dim=32),
    "scheduler": dict(cls="EulerDiscreteScheduler", beta_start=0.00085, beta_end=0.012,
                      beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"),
}


def build_tiny(seed: int = 0):
    """A ``StableDiffusionXLPipeline`` with random tiny components (two text encoders)."""
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModelWithProjection

    parts = _sd1.unet_family_components(TINY_RECIPE, seed)
    tokenizer_2 = tiny_parts.build_clip_tokenizer()
    parts["text_encoder_2"] = tiny_parts.seeded(seed, 3, lambda: CLIPTextModelWithProjection(
        tiny_parts.clip_config(tokenizer_2, TINY_RECIPE["text_encoder_2"])))
    parts["tokenizer_2"] = tokenizer_2
    pipe = StableDiffusionXLPipeline(**parts, image_encoder=None, feature_extractor=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe
