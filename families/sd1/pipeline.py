"""SD 1.x's pipeline aspect: diffusers' ``StableDiffusionPipeline``, a tiny random pipeline built
offline, the prompt-record fields an SD render takes, and which components a LoRA stacks onto.

Tiny sizes follow diffusers' own pipeline tests (see NOTES-tiny-models.md): a ~1M-parameter UNet,
a two-block VAE (scale factor 2) and a 32-wide CLIP text encoder.
"""

from __future__ import annotations

from .. import tiny_parts

PIPELINE_CLASS = "StableDiffusionPipeline"
PIPELINE_CLASSES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline",
                    "StableDiffusionInpaintPipeline")
DENOISER = "unet"
OBJECTIVE = "epsilon"
GUIDANCE = "classifier-free"
NEGATIVE_PROMPT = True
DEFAULTS = {"steps": 20, "cfg": 7.0}
PROMPT_FIELDS: dict = {}      # nothing beyond prompt / negative / seed / steps / cfg / size
SCHEDULER_FIELDS: tuple = ()
# a key prefix of the original single-file (ldm / sgm) layout that only this family has
SINGLE_FILE_MARKERS = ("cond_stage_model.transformer.",)
OPENCLIP_H_WIDTH = 1024       # SD 2.x's text encoder; SD 1.x's CLIP-L is 768 wide


def matches(pipe) -> bool:
    """SD 2.x loads into the same pipeline class: tell them by the text encoder's width."""
    width = getattr(getattr(pipe.text_encoder, "config", None), "hidden_size", None)
    return width != OPENCLIP_H_WIDTH


TINY_RECIPE = {
    "unet": dict(block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4,
                 out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32),
    "vae": dict(block_out_channels=(32, 64), in_channels=3, out_channels=3,
                down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), latent_channels=4),
    "text_encoder": dict(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                         num_hidden_layers=2, layer_norm_eps=1e-5, hidden_act="gelu",
                         max_position_embeddings=tiny_parts.MAX_TOKENS),
    "scheduler": dict(cls="DDIMScheduler", beta_start=0.00085, beta_end=0.012,
                      beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                      steps_offset=1),
}


def unet_family_components(recipe: dict, seed: int) -> dict:
    """UNet, VAE, first CLIP text encoder + tokenizer, scheduler (SD1 and SDXL share this)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = tiny_parts.build_clip_tokenizer()
    return {
        "unet": tiny_parts.seeded(seed, 0, lambda: UNet2DConditionModel(**recipe["unet"])),
        "vae": tiny_parts.seeded(seed, 1, lambda: AutoencoderKL(**recipe["vae"])),
        "text_encoder": tiny_parts.seeded(seed, 2, lambda: CLIPTextModel(
            tiny_parts.clip_config(tokenizer, recipe["text_encoder"]))),
        "tokenizer": tokenizer,
        "scheduler": tiny_parts.scheduler(recipe["scheduler"]),
    }


def build_tiny(seed: int = 0):
    """A ``StableDiffusionPipeline`` with random tiny components (float32, CPU, eval mode)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**unet_family_components(TINY_RECIPE, seed), safety_checker=None,
                                   feature_extractor=None, image_encoder=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
