"""SD 3 / 3.5's training aspect: LoRA on the MMDiT's attention, trained with the flow-matching
objective (``families.flow_matching``), as diffusers' ``train_dreambooth_lora_sd3.py`` with its
plain velocity target (no output preconditioning).

The prompt goes through the three text encoders (the two CLIPs' pooled outputs side by side, CLIP
and T5 sequences joined), frozen; the transformer sees the scheduler's timestep (0…1000) of σ.
"""

from __future__ import annotations

from .. import flow_matching

DENOISER = "transformer"
PREDICTION_TYPE = flow_matching.PREDICTION_TYPE
# ``--format auto``: diffusers keys (split q/k/v, as trained); kohya's native names fuse q/k/v, and
# split LoRAs with different downs fuse only block-diagonally (rank ×3): asked for, not the default
LORA_FORMAT = "diffusers"
# peft target-module suffixes: joint attention, image and context streams (diffusers' default)
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
MAX_SEQUENCE_LENGTH = 256  # T5 tokens, as StableDiffusion3Pipeline encodes a prompt by default
KOHYA_METADATA = {**flow_matching.KOHYA_METADATA, "ss_model_prediction_type": "raw",
                  "ss_max_sequence_length": str(MAX_SEQUENCE_LENGTH)}
UNSUPPORTED_SETTINGS = {
    "train_text_encoder": "text-encoder LoRA training is not implemented for SD 3 (the transformer trains)",
    "snr_gamma": "Min-SNR weighting is defined for ε/v-prediction, not flow matching",
    "noise_offset": "noise offset is defined for ε/v-prediction, not flow matching",
    "conv_rank": "the SD 3 transformer has no convolutions for a LoCon rank",
}


def size_multiple(pipe) -> int:
    """Training images must be a multiple of this many pixels: the VAE's downsampling × the MMDiT's
    patch size (16 on SD 3.5's real VAE and transformer)."""
    return int(pipe.vae_scale_factor) * int(pipe.transformer.config.patch_size)


def loss(pipe, denoiser, pixels, prompts: list[str], gen, *, device, autocast):
    """Flow-matching MSE of one micro-batch (see ``families.flux.training.loss``)."""
    import torch

    x0 = flow_matching.encode_latents(pipe.vae, pixels, gen).to(device)
    noise = torch.randn(x0.shape, generator=gen).to(device, x0.dtype)
    sigmas, timesteps = flow_matching.noise_levels(pipe.scheduler.config, x0.shape[0], gen)
    noisy = flow_matching.noisy_latents(x0, noise, sigmas)
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=prompts, prompt_2=None, prompt_3=None, device=device, do_classifier_free_guidance=False,
            max_sequence_length=MAX_SEQUENCE_LENGTH)
    with autocast():
        pred = denoiser(hidden_states=noisy, timestep=timesteps.to(device), encoder_hidden_states=embeds,
                        pooled_projections=pooled, return_dict=False)[0]
    return flow_matching.mse(pred, flow_matching.velocity_target(x0, noise))
