"""Training objectives: what a step's loss is, per base family.

A family with a ``training`` aspect in ``loradex.families`` (Flux.1, SD 3.5: flow matching on the
transformer) brings its own (:class:`FamilyObjective`); every other one gets
:class:`NoisePredictionObjective` — ε / v-prediction MSE on the UNet with optional Min-SNR
weighting and noise offset. An objective names the component that denoises, its default LoRA
targets and output format, the settings it has no meaning for, the image-size step its latents
need, extra kohya ``ss_*`` facts, and computes ``loss(run, pixels, prompts, gen)`` with every random
number from ``gen`` (so runs resume bit-identically).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loradex.registry.errors import UsageError

if TYPE_CHECKING:
    from .train_config import TrainConfig
    from .train_loop import Run


class NoisePredictionObjective:
    """The ε / v-prediction objective on a UNet (SD 1.x, 2.x, XL): the default for a family with
    no ``training`` aspect. A family's aspect supplies the same things: the component that
    denoises, its default LoRA targets, the settings it refuses, and ``loss``."""

    denoiser = "unet"
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0")
    lora_format = "kohya"  # what A1111 / ComfyUI / kohya's tools read for these bases
    unsupported_settings: dict[str, str] = {}
    kohya_metadata: dict[str, str] = {}  # the common ss_* facts say it all (noise offset, Min-SNR …)

    def size_multiple(self, pipe) -> int:
        return 8  # train_config already asks for a multiple of 8 (the VAE's downsampling)

    def __init__(self, pipe):
        from diffusers import DDPMScheduler

        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.prediction_type = self.noise_scheduler.config.prediction_type

    def loss(self, run: "Run", pixels, prompts: list[str], gen):
        """Mean (Min-SNR weighted) MSE between the UNet's prediction and its target."""
        import torch
        import torch.nn.functional as F

        vae = run.pipe.vae
        with torch.no_grad():
            dist = vae.encode(pixels.to(run.device, vae.dtype)).latent_dist
            latents = dist.sample(generator=gen)
            shift = getattr(vae.config, "shift_factor", None) or 0.0
            latents = ((latents - shift) * vae.config.scaling_factor).to(run.weight_dtype)
        b = latents.shape[0]
        noise = torch.randn(latents.shape, generator=gen).to(run.device, latents.dtype)
        if run.config.noise_offset:
            offset = torch.randn((b, latents.shape[1], 1, 1), generator=gen).to(run.device, latents.dtype)
            noise = noise + run.config.noise_offset * offset
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (b,),
                                  generator=gen).to(run.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        if self.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        elif self.prediction_type == "epsilon":
            target = noise
        else:
            raise UsageError(f"unsupported prediction type {self.prediction_type!r} in the base's scheduler")
        cond = run.encode_prompts(prompts, pixels.shape[-2], pixels.shape[-1])
        with run.accelerator.autocast():
            pred = run.forward_module("unet")(noisy, timesteps, **cond).sample
        per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if run.config.snr_gamma:
            per_sample = per_sample * self._min_snr_weights(run, timesteps)
        return per_sample.mean()

    def _min_snr_weights(self, run: "Run", timesteps):
        # Hang et al. 2023: weight = min(SNR, γ) / SNR for ε; / (SNR + 1) for v-prediction
        import torch

        alphas = self.noise_scheduler.alphas_cumprod.to(run.device)[timesteps].float()
        snr = alphas / (1 - alphas)
        clipped = torch.minimum(snr, torch.full_like(snr, run.config.snr_gamma))
        return clipped / (snr + 1) if self.prediction_type == "v_prediction" else clipped / snr


class FamilyObjective:
    """A family's ``training`` aspect (module) seen as an objective."""

    def __init__(self, aspect):
        self.aspect = aspect
        self.denoiser = aspect.DENOISER
        self.lora_targets = tuple(aspect.LORA_TARGETS)
        self.unsupported_settings = dict(getattr(aspect, "UNSUPPORTED_SETTINGS", {}))
        self.lora_format = getattr(aspect, "LORA_FORMAT", "diffusers")
        self.kohya_metadata = dict(getattr(aspect, "KOHYA_METADATA", {}))
        self.prediction_type = aspect.PREDICTION_TYPE

    def size_multiple(self, pipe) -> int:
        multiple = getattr(self.aspect, "size_multiple", None)
        return multiple(pipe) if multiple is not None else 8

    def loss(self, run: "Run", pixels, prompts: list[str], gen):
        return self.aspect.loss(run.pipe, run.forward_module(self.denoiser), pixels.to(run.device, run.pipe.vae.dtype),
                                prompts, gen, device=run.device, autocast=run.accelerator.autocast)


def objective_for(family: str | None, pipe):
    """The training objective of ``family`` (its ``training`` aspect), else ε / v-prediction."""
    from loradex.families import find_family

    found = find_family(family)
    aspect = found.aspect("training") if found is not None else None
    return FamilyObjective(aspect) if aspect is not None else NoisePredictionObjective(pipe)


def refuse_unsupported_settings(config: TrainConfig, family: str, objective, pipe) -> None:
    """One line for a setting the family's objective has no meaning for (rather than ignore it),
    or a resolution its latents cannot take."""
    given = [(name, why) for name, why in objective.unsupported_settings.items() if getattr(config, name, None)]
    if given:
        name, why = given[0]
        raise UsageError(f"{config.method} on a {family} base: --{name.replace('_', '-')} is not available: {why}",
                         hint="leave it out")
    multiple = objective.size_multiple(pipe)
    if config.resolution % multiple:
        raise UsageError(f"{config.method} on a {family} base: --resolution {config.resolution} is not a multiple "
                         f"of {multiple} (the VAE's downsampling × the transformer's patches)",
                         hint=f"use e.g. {max(multiple, config.resolution // multiple * multiple)}")
