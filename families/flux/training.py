"""Flux.1's training aspect: LoRA on the transformer's attention, trained with the flow-matching
objective (``families.flow_matching``) on packed latents, as diffusers' ``train_dreambooth_lora_flux.py``.

The VAE latents [b, c, h, w] are packed into 2×2 patches ([b, h/2·w/2, 4c]) with their image
position ids; the prompt goes through both text encoders (CLIP-L pooled, T5 sequence + text ids),
frozen; the transformer sees ``timestep = t / 1000`` and, on guidance-distilled bases (dev), the
guidance value of the family's defaults. The target is packed the same way, so pred and target
are compared patch by patch without unpacking.
"""

from __future__ import annotations

from .. import flow_matching

DENOISER = "transformer"
PREDICTION_TYPE = flow_matching.PREDICTION_TYPE
# ``--format auto``: diffusers keys (split q/k/v, as trained); kohya's native names fuse q/k/v, and
# split LoRAs with different downs fuse only block-diagonally (rank ×3): asked for, not the default
LORA_FORMAT = "diffusers"
# peft target-module suffixes: attention of the double blocks (image and text streams) and of the
# single blocks (to_q/k/v; their output is the shared proj_out), as diffusers' script's default
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
TRAIN_GUIDANCE = 3.5  # the guidance-distilled embedding's input in training (diffusers' script default)
MAX_SEQUENCE_LENGTH = 512  # T5 tokens, as FluxPipeline encodes a prompt by default
# the objective in sd-scripts' words (flux_train_network: sigmoid(N(0, 1)) timesteps, the raw velocity)
KOHYA_METADATA = {**flow_matching.KOHYA_METADATA, "ss_timestep_sampling": "sigmoid", "ss_sigmoid_scale": "1.0",
                  "ss_model_prediction_type": "raw", "ss_guidance_scale": str(TRAIN_GUIDANCE),
                  "ss_max_sequence_length": str(MAX_SEQUENCE_LENGTH)}
# settings of the ε/v trainers this objective has no meaning for: refused before a run starts
UNSUPPORTED_SETTINGS = {
    "train_text_encoder": "text-encoder LoRA training is not implemented for Flux.1 (the transformer trains)",
    "snr_gamma": "Min-SNR weighting is defined for ε/v-prediction, not flow matching",
    "noise_offset": "noise offset is defined for ε/v-prediction, not flow matching",
    "conv_rank": "the Flux.1 transformer has no convolutions for a LoCon rank",
}


def size_multiple(pipe) -> int:
    """Training images must be a multiple of this many pixels: the VAE's downsampling × the 2×2
    latent packing (16 on Flux.1's real VAE)."""
    return int(pipe.vae_scale_factor) * 2


def loss(pipe, denoiser, pixels, prompts: list[str], gen, *, device, autocast):
    """Flow-matching MSE of one micro-batch; ``denoiser`` is the transformer as the optimizer
    sees it (possibly DDP-wrapped), ``autocast`` a context-manager factory."""
    import torch

    x0 = flow_matching.encode_latents(pipe.vae, pixels, gen).to(device)
    b, c, h, w = x0.shape
    noise = torch.randn(x0.shape, generator=gen).to(device, x0.dtype)
    sigmas, timesteps = flow_matching.noise_levels(pipe.scheduler.config, b, gen)
    noisy = flow_matching.noisy_latents(x0, noise, sigmas)
    with torch.no_grad():
        embeds, pooled, text_ids = pipe.encode_prompt(
            prompt=prompts, prompt_2=None, device=device,
            max_sequence_length=MAX_SEQUENCE_LENGTH)
    image_ids = pipe._prepare_latent_image_ids(b, h // 2, w // 2, device, x0.dtype)
    guidance = None
    if pipe.transformer.config.guidance_embeds:
        guidance = torch.full((b,), TRAIN_GUIDANCE, device=device, dtype=torch.float32)
    with autocast():
        pred = denoiser(hidden_states=pipe._pack_latents(noisy, b, c, h, w), timestep=timesteps.to(device) / 1000,
                        guidance=guidance, pooled_projections=pooled, encoder_hidden_states=embeds,
                        txt_ids=text_ids, img_ids=image_ids, return_dict=False)[0]
    target = pipe._pack_latents(flow_matching.velocity_target(x0, noise), b, c, h, w)
    return flow_matching.mse(pred, target)
