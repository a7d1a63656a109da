"""Deterministic rendering and an image hash that ignores file metadata.

``render`` seeds a CPU ``torch.Generator`` (the same noise whatever device the pipeline is on),
optionally swaps in a scheduler by name for this call only, and returns a PIL image.

What a render takes besides prompt / seed / steps / guidance / size depends on the base's family
(its pipeline aspect, ``loradex.families.<family>.pipeline``): ``RenderProfile`` holds it — the
denoiser component, whether guidance is classifier-free or distilled (Flux.1: no negative
prompt), the defaults, the extra fields passed to the pipeline call (``max_sequence_length``)
and those set on the scheduler (the flow-matching ``shift``).

``image_sha256(img)`` = sha256 of ``b"RGB <width>x<height>\\n"`` followed by the raw RGB pixel
bytes (row-major, 8 bits per channel, as ``img.convert("RGB").tobytes()``). PNG text chunks,
compression level or the file name do not change it; any pixel does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from loradex.registry.errors import UsageError


@dataclass(frozen=True)
class RenderProfile:
    """How one family's pipeline renders (read off its pipeline aspect)."""

    family: str
    denoiser: str = "unet"
    objective: str = "epsilon"              # or "flow_matching" (Flux.1, SD3)
    guidance: str = "classifier-free"       # or "distilled" (an input of the model, no CFG)
    negative_prompt: bool = True
    defaults: dict = field(default_factory=lambda: {"steps": 20, "cfg": 7.0})
    prompt_fields: dict = field(default_factory=dict)  # name -> default, passed to the call
    scheduler_fields: tuple = ()                       # names set on the scheduler's config
    field_limits: dict = field(default_factory=dict)   # name -> the largest value the pipeline takes

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(self.prompt_fields) + tuple(self.scheduler_fields)

    def check_fields(self, fields: dict) -> None:
        unknown = sorted(set(fields) - set(self.field_names))
        if unknown:
            takes = ", ".join(self.field_names) or "none"
            raise UsageError(f"{self.family} renders take no {', '.join(unknown)} (they take: {takes})")

    def resolve_fields(self, fields: dict, scheduler) -> dict:
        """Every field this family takes, given ones first, then the defaults (a scheduler
        field's default is the base scheduler's own value)."""
        self.check_fields(fields)
        out = {name: fields[name] if fields.get(name) is not None else default
               for name, default in self.prompt_fields.items()}
        for name in self.scheduler_fields:
            out[name] = fields[name] if fields.get(name) is not None else scheduler.config.get(name)
        for name, value in out.items():  # every family field is a positive count or factor
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or value <= 0):
                raise UsageError(f"{name} must be a positive number, got {value!r}")
            limit = self.field_limits.get(name)
            if value is not None and limit is not None and value > limit:
                raise UsageError(f"{name} must be at most {limit} for {self.family}, got {value!r}")
        return out

    def record_fields(self, fields: dict) -> dict | None:
        """The record's ``family_settings`` (None for families with nothing beyond the common
        fields, so SD 1.x/XL records stay as they were)."""
        if not self.field_names and self.guidance == "classifier-free":
            return None
        return {"guidance": self.guidance,
                **{k: fields[k] for k in self.field_names if fields.get(k) is not None}}


def render_profile(family: str | None) -> RenderProfile:
    """The family's profile; the SD defaults for a base of unknown family; ``FamilyNotSupported``
    (one line) for a family loradex only recognises."""
    from loradex.families import UNKNOWN, find_family, require

    if not family or family == UNKNOWN or find_family(family) is None:
        return RenderProfile(family or UNKNOWN)
    require(family, "render")
    module = find_family(family).aspect("pipeline")
    if module is None:
        from loradex.families import FamilyNotSupported

        raise FamilyNotSupported(family, "render")
    return RenderProfile(family, denoiser=module.DENOISER, objective=module.OBJECTIVE,
                         guidance=module.GUIDANCE,
                         negative_prompt=module.NEGATIVE_PROMPT, defaults=dict(module.DEFAULTS),
                         prompt_fields=dict(module.PROMPT_FIELDS),
                         scheduler_fields=tuple(module.SCHEDULER_FIELDS),
                         field_limits=dict(getattr(module, "FIELD_LIMITS", {})))


@dataclass(frozen=True)
class SchedulerSpec:
    class_name: str
    overrides: dict = field(default_factory=dict)
    needs: str | None = None  # an optional package the scheduler imports
    objectives: tuple = ("epsilon",)  # training objectives of the models it can sample


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


def scheduler_for(pipe, name: str | None, fields: dict, profile: RenderProfile):
    """The scheduler a render uses: ``pipe.scheduler``, or one built from its config with another
    class (``name``) and/or the profile's scheduler fields changed (e.g. ``shift``)."""
    original = pipe.scheduler
    if name is not None and name in SCHEDULERS and profile.objective not in SCHEDULERS[name].objectives:
        raise UsageError(f"scheduler {name!r} is for noise-prediction models; {profile.family} is "
                         f"trained with {profile.objective.replace('_', ' ')}",
                         hint="leave out --scheduler to use the base's own")
    changed = {k: fields[k] for k in profile.scheduler_fields
               if fields.get(k) is not None and fields[k] != original.config.get(k)}
    if name is not None:
        sched = make_scheduler(name, original.config)
        return type(sched).from_config(sched.config, **changed) if changed else sched
    return type(original).from_config(original.config, **changed) if changed else original


def render(pipe, prompt: str, *, negative: str | None = None, seed: int, steps: int, cfg: float,
           width: int, height: int, scheduler: str | None = None,
           progress: Callable[[int, int, str], None] | None = None, fields: dict | None = None,
           profile: RenderProfile | None = None):
    """Render one image; the same arguments give the same pixels on the same machine and
    library versions. ``scheduler`` replaces ``pipe.scheduler`` for this call only; ``fields``
    are the family's extra settings (see ``RenderProfile``; missing ones take its defaults)."""
    import torch

    from loradex.trainer.base_loader import pipeline_family

    profile = profile or render_profile(pipeline_family(pipe))
    if steps < 1:
        raise UsageError(f"steps must be at least 1, got {steps}")
    if width <= 0 or height <= 0:
        raise UsageError(f"size must be positive, got {width}x{height}")
    if negative and not profile.negative_prompt:
        raise UsageError(f"{profile.family} renders take no negative prompt (its guidance is "
                         f"{profile.guidance})", hint="leave out --negative")
    fields = profile.resolve_fields(dict(fields or {}), pipe.scheduler)
    kwargs = {name: fields[name] for name in profile.prompt_fields}
    if profile.negative_prompt:
        kwargs["negative_prompt"] = negative
    if progress is not None:
        def on_step(_pipe, step, _timestep, callback_kwargs):
            progress(step + 1, steps, "denoising")
            return callback_kwargs
        kwargs["callback_on_step_end"] = on_step
    original = pipe.scheduler
    pipe.scheduler = scheduler_for(pipe, scheduler, fields, profile)
    try:
        with torch.no_grad():
            out = pipe(prompt, num_inference_steps=steps, guidance_scale=cfg, width=width,
                       height=height, generator=torch.Generator("cpu").manual_seed(seed),
                       output_type="pil", **kwargs)
    finally:
        pipe.scheduler = original
    return out.images[0]


def image_sha256(img) -> str:
    """sha256 of the pixels (see module docstring), independent of file format and metadata:
    a record's ``image_sha256``, defined once in ``loradex.registry.catalog.records.pixel_sha256``."""
    from loradex.registry.catalog.records import pixel_sha256

    return pixel_sha256(img)
