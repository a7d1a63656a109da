"""Deterministic rendering and an image hash that ignores file metadata.

``render`` seeds a CPU ``torch.Generator`` (the same noise whatever device the pipeline is on),
optionally swaps in a scheduler by name for this call only, and returns a PIL image.

``image_sha256(img)`` = sha256 of ``b"RGB <width>x<height>\\n"`` followed by the raw RGB pixel
bytes (row-major, 8 bits per channel, as ``img.convert("RGB").tobytes()``). PNG text chunks,
compression level or the file name do not change it; any pixel does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from loradex.registry.errors import UsageError


@dataclass(frozen=True)
class SchedulerSpec:
    class_name: str
    overrides: dict = field(default_factory=dict)
    needs: str | None = None  # an optional package the scheduler imports


SCHEDULERS: dict[str, SchedulerSpec] = {}


def register_scheduler(name: str, class_name: str, needs: str | None = None, **overrides) -> None:
    SCHEDULERS[name] = SchedulerSpec(class_name, overrides, needs)


# A1111 sampler names and their diffusers equivalents
register_scheduler("ddim", "DDIMScheduler")
register_scheduler("euler", "EulerDiscreteScheduler")
register_scheduler("euler_a", "EulerAncestralDiscreteScheduler")
register_scheduler("dpm++2m", "DPMSolverMultistepScheduler", algorithm_type="dpmsolver++", solver_order=2)
register_scheduler("dpm++2m_karras", "DPMSolverMultistepScheduler", algorithm_type="dpmsolver++",
                   solver_order=2, use_karras_sigmas=True)
register_scheduler("pndm", "PNDMScheduler", skip_prk_steps=True)  # as SD 1.x ships it
register_scheduler("lms", "LMSDiscreteScheduler", needs="scipy")


def make_scheduler(name: str, config):
    """A scheduler registered as ``name``, built from another scheduler's config (betas etc.)."""
    import importlib.util

    import diffusers

    spec = SCHEDULERS.get(name)
    if spec is None:
        raise UsageError(f"unknown scheduler {name!r}", hint="use one of " + ", ".join(sorted(SCHEDULERS)))
    if spec.needs and importlib.util.find_spec(spec.needs) is None:
        raise UsageError(f"scheduler {name!r} needs the {spec.needs!r} package, which is not installed",
                         hint=f"pip install {spec.needs}, or pick another scheduler")
    return getattr(diffusers, spec.class_name).from_config(config, **spec.overrides)


def render(pipe, prompt: str, *, negative: str | None = None, seed: int, steps: int, cfg: float,
           width: int, height: int, scheduler: str | None = None,
           progress: Callable[[int, int, str], None] | None = None):
    """Render one image; the same arguments give the same pixels on the same machine and
    library versions. ``scheduler`` replaces ``pipe.scheduler`` for this call only."""
    import torch

    if steps < 1:
        raise UsageError(f"steps must be at least 1, got {steps}")
    if width <= 0 or height <= 0:
        raise UsageError(f"size must be positive, got {width}x{height}")
    original = pipe.scheduler
    if scheduler is not None:
        pipe.scheduler = make_scheduler(scheduler, original.config)
    kwargs = {}
    if progress is not None:
        def on_step(_pipe, step, _timestep, callback_kwargs):
            progress(step + 1, steps, "denoising")
            return callback_kwargs
        kwargs["callback_on_step_end"] = on_step
    try:
        with torch.no_grad():
            out = pipe(prompt, negative_prompt=negative, num_inference_steps=steps, guidance_scale=cfg,
                       width=width, height=height, generator=torch.Generator("cpu").manual_seed(seed),
                       output_type="pil", **kwargs)
    finally:
        pipe.scheduler = original
    return out.images[0]


def image_sha256(img) -> str:
    """sha256 of the pixels (see module docstring), independent of file format and metadata:
    a record's ``image_sha256``, defined once in ``loradex.registry.catalog.records.pixel_sha256``."""
    from loradex.registry.catalog.records import pixel_sha256

    return pixel_sha256(img)
