"""The rectified-flow (flow-matching) training objective the DiT families share (Flux.1, SD 3.5).

As diffusers' ``train_dreambooth_lora_flux.py`` / ``_sd3.py`` train them: a clean latent x0, noise
ε and a noise level σ ∈ (0, 1) give x_σ = (1 − σ)·x0 + σ·ε; the transformer predicts the
velocity ε − x0 and the loss is the mean squared error against it. σ is drawn logit-normal
(u = sigmoid(N(mean, std))) and looked up in the family's own scheduler's sigma table (so a
static ``shift``, SD 3.5's 3.0, shifts it as the scheduler does; Flux.1's scheduler shifts by
resolution at sampling time only, so its table is the plain one, as in the diffusers script).

Every random number comes from the caller's ``torch.Generator``: the training run stays
reproducible and resumable bit-identically. Nothing here imports loradex; torch and diffusers are
imported inside the functions.
"""

from __future__ import annotations

LOGIT_MEAN = 0.0   # diffusers' scripts: --logit_mean 0, --logit_std 1 (weighting_scheme logit_normal)
LOGIT_STD = 1.0
PREDICTION_TYPE = "flow_matching"
# how sd-scripts' Flux/SD3 trainers record this objective in a LoRA's header
KOHYA_METADATA = {"ss_weighting_scheme": "logit_normal", "ss_logit_mean": str(LOGIT_MEAN),
                  "ss_logit_std": str(LOGIT_STD)}


def noise_levels(scheduler_config, batch: int, gen, *, mean: float = LOGIT_MEAN, std: float = LOGIT_STD):
    """(σ [batch], the scheduler's timesteps [batch] at those σ): logit-normal draws indexed into the
    training sigma table of a ``FlowMatchEulerDiscreteScheduler`` built from ``scheduler_config``."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)
    steps = int(scheduler.config.num_train_timesteps)
    u = torch.sigmoid(torch.randn(batch, generator=gen) * std + mean)
    indices = (u * steps).long().clamp(0, steps - 1)
    return scheduler.sigmas[indices].float(), scheduler.timesteps[indices].float()


def noisy_latents(x0, noise, sigmas):
    """x_σ = (1 − σ)·x0 + σ·ε, σ broadcast over every dimension but the batch."""
    s = sigmas.to(x0.device, x0.dtype).reshape(-1, *([1] * (x0.dim() - 1)))
    return (1.0 - s) * x0 + s * noise


def velocity_target(x0, noise):
    """What the transformer learns to predict: d x_σ / dσ = ε − x0."""
    return noise - x0


def encode_latents(vae, pixels, gen):
    """The VAE's latents of ``pixels`` ([-1, 1]) as the transformer sees them: sampled with ``gen``,
    shifted and scaled by the VAE's own factors."""
    import torch

    with torch.no_grad():
        latents = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.sample(generator=gen)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (latents - shift) * vae.config.scaling_factor


def mse(pred, target):
    """Mean over every element: the per-sample means averaged (equal-sized samples)."""
    import torch.nn.functional as F

    return F.mse_loss(pred.float(), target.float())
