"""The training engine shared by every method, on ``accelerate.Accelerator``.

    result = train(resolve_config("lora", overrides={...}), progress=cb)

One optimizer step = ``grad_accum`` micro-batches (× processes). Everything random in a step
(VAE sampling, noise, noise offset, timesteps) comes from one CPU ``torch.Generator`` seeded
from ``seed`` and saved in checkpoints; the data order is a pure function of (seed, micro-batch
index) — so ``--resume`` from a checkpoint continues bit-identically on CPU.

Checkpoints are folders ``<output_dir>/checkpoints/step-NNNNNN/`` written atomically, pickle-free:
``trainable.safetensors`` (the trained tensors), ``optimizer.safetensors`` + ``state.json``
(optimizer param groups, LR-scheduler state, step, losses, config, samples so far) and
``rng.safetensors``.
Ctrl-C (KeyboardInterrupt) writes one at the last completed optimizer step, then re-raises.

Loss: the base family's training objective — its ``training`` aspect in ``loradex.families``
(Flux.1 / SD 3.5: flow matching on the transformer), else ``train_objectives.NoisePredictionObjective``:
noise-prediction MSE on the UNet (or v-prediction when the base's scheduler says so), optional
Min-SNR weighting (``snr_gamma``) and noise offset.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from loradex.registry.errors import NotFound, UsageError

from .base_loader import load_any_base
from .dataset import DatasetReport, ImageCaptionDataset, load_training_data
from .generate import library_versions
from .train_config import TrainConfig
from .train_objectives import objective_for, refuse_unsupported_settings
from .train_registry import Exported, TrainingMethod, get_method, method_names

CHECKPOINTS = "checkpoints"
# the versions a training result records (render --check compares generate.LIBRARIES, a subset)
TRAIN_LIBRARIES = ("torch", "diffusers", "peft", "transformers", "accelerate", "safetensors", "loradex")
TRAINABLE_COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2")
FROZEN_COMPONENTS = ("unet", "transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")
SAMPLE_CFG = 7.5
EVAL_SEED_OFFSET = 7_777_777  # the fixed-batch loss uses its own noise, never the training stream
# settings a resumed run may change; any other difference means a different run
RESUMABLE_CHANGES = {"resume", "steps", "epochs", "save_every", "sample_every", "sample_prompts", "sample_seed",
                     "sample_steps", "register", "register_checkpoints", "name", "version", "bump", "message",
                     "output_dir", "format"}  # format: how the same weights are written

Progress = Callable[[int, int, dict], None]


@dataclass
class Sample:
    step: int
    prompt: str
    seed: int
    path: str
    width: int
    height: int
    steps: int
    cfg: float
    # the family's own render settings, as ``trainer.render`` resolved them (Flux/SD3:
    # max_sequence_length, the scheduler's shift); the record's ``family_settings`` come from them
    fields: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class TrainResult:
    config: TrainConfig
    base: Any                       # BaseInfo
    base_catalog_ref: str | None    # NAME@X.Y.Z when the base is a catalog version
    dataset: DatasetReport
    output: Exported | None         # None on the processes other than the main one (nothing exported)
    steps: int
    losses: list[float]             # one per optimizer step (mean over its micro-batches)
    eval_loss_before: float         # on micro-batch 0 with fixed noise and timesteps
    eval_loss_after: float
    samples: list[Sample] = field(default_factory=list)           # final samples
    intermediate_samples: list[Sample] = field(default_factory=list)  # --sample-every, in step order
    checkpoints: list[dict] = field(default_factory=list)         # {step, path, export}
    started_at: str = ""
    finished_at: str = ""
    seconds: float = 0.0
    scheduler: dict = field(default_factory=dict)                 # {name, config} of the base's sampler
    prediction_type: str = "epsilon"
    libraries: dict = field(default_factory=dict)
    main_process: bool = True       # False: another process of a multi-process run exported the output

    def loss_summary(self) -> dict[str, Any]:
        return loss_summary(self.losses, self.eval_loss_before, self.eval_loss_after)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.config.method, "output": self.output.to_dict() if self.output else None,
                "steps": self.steps,
                "base": self.base.to_dict(), "base_catalog_ref": self.base_catalog_ref,
                "dataset_manifest_sha256": self.dataset.manifest_sha256(),
                "num_images": len(self.dataset.images), "loss": self.loss_summary(),
                "samples": [s.to_dict() for s in self.samples],
                "intermediate_samples": [s.to_dict() for s in self.intermediate_samples],
                "checkpoints": self.checkpoints,
                "seconds": round(self.seconds, 3), "libraries": self.libraries}


def loss_summary(losses: list[float], before: float | None, after: float | None, points: int = 20) -> dict:
    """First/last/min plus a down-sampled curve (means of equal chunks) small enough for a recipe."""
    if not losses:
        return {"steps": 0, "eval_before": before, "eval_after": after}
    chunk = max(1, math.ceil(len(losses) / points))
    curve = [sum(losses[i:i + chunk]) / len(losses[i:i + chunk]) for i in range(0, len(losses), chunk)]
    tail = losses[-max(1, len(losses) // 10):]
    return {"steps": len(losses), "first": losses[0], "last": losses[-1], "min": min(losses),
            "mean_last_10pct": sum(tail) / len(tail), "curve_every": chunk, "curve": curve,
            "eval_before": before, "eval_after": after}


# --- the run ---------------------------------------------------------------------------------

class Run:
    """Everything a method needs during one training run."""

    def __init__(self, config: TrainConfig, pipe, base, accelerator, dataset: ImageCaptionDataset,
                 report: DatasetReport, method: TrainingMethod):
        import torch

        from .base_loader import pipeline_family

        self.config, self.pipe, self.base, self.accelerator = config, pipe, base, accelerator
        self.dataset, self.report, self.method = dataset, report, method
        self.family = pipeline_family(pipe)
        self.objective = objective_for(self.family, pipe)
        # two CLIP encoders conditioning a UNet (a DiT's text_encoder_2 is T5, encoded by its objective)
        self.is_sdxl = self.objective.denoiser == "unet" and getattr(pipe, "text_encoder_2", None) is not None
        self.device = accelerator.device
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision,
                                                                                 torch.float32)
        self.prediction_type = self.objective.prediction_type
        self.trainable: list[tuple[str, Any]] = []  # (name, parameter), filled by the engine after setup
        self.modules: list = []                     # the trained modules, as the method set them up
        self.prepared: dict[str, Any] = {}          # component → the same module after accelerator.prepare
        self.extra: dict[str, Any] = {}             # method-private state

    @property
    def unet(self):
        return self.pipe.unet

    @property
    def denoiser_name(self) -> str:
        """The component the objective trains: ``unet``, or ``transformer`` for the DiT families."""
        return self.objective.denoiser

    @property
    def denoiser(self):
        return getattr(self.pipe, self.objective.denoiser)

    def use_prepared(self, prepared: list) -> None:
        """Record what ``accelerator.prepare(*self.modules)`` returned (DDP wrappers across
        processes, the modules themselves in one process): the loss calls these, so gradients
        are all-reduced; the pipeline keeps the bare modules for export and sampling."""
        names = {id(getattr(self.pipe, part, None)): part for part in TRAINABLE_COMPONENTS}
        for module, wrapped in zip(self.modules, prepared, strict=True):
            if id(module) not in names:
                raise UsageError(f"{self.config.method}: setup returned a module that is not one of "
                                 f"{', '.join(TRAINABLE_COMPONENTS)}")
            self.prepared[names[id(module)]] = wrapped

    def forward_module(self, component: str):
        """``component`` as the loss must call it: the prepared module when it trains."""
        return self.prepared.get(component, getattr(self.pipe, component))

    def text_encoders(self) -> list[tuple[str, Any, Any]]:
        """[(component name, tokenizer, text encoder)] — one for SD1/2, two for SDXL."""
        out = [("text_encoder", self.pipe.tokenizer, self.pipe.text_encoder)]
        if self.is_sdxl:
            out.append(("text_encoder_2", self.pipe.tokenizer_2, self.pipe.text_encoder_2))
        return out

    def encode_prompts(self, prompts: list[str], height: int, width: int) -> dict[str, Any]:
        """UNet conditioning kwargs for ``prompts`` (gradients flow when a text encoder trains).

        What the pipelines' ``encode_prompt`` computes (multi-vector TI expansion, one
        tokenization; SDXL: both encoders' penultimate hidden states side by side, the pooled
        output of the one with a projection), calling the prepared text encoders."""
        import torch

        if self.is_sdxl:
            hidden, pooled = [], None
            for component, tokenizer, _ in self.text_encoders():
                out = self.forward_module(component)(self._token_ids(prompts, tokenizer), output_hidden_states=True)
                if pooled is None and out[0].ndim == 2:
                    pooled = out[0]
                hidden.append(out.hidden_states[-2])
            embeds = torch.cat(hidden, dim=-1).to(dtype=self.pipe.text_encoder_2.dtype)
            time_ids = self.pipe._get_add_time_ids(
                (height, width), (0, 0), (height, width), dtype=embeds.dtype,
                text_encoder_projection_dim=self.pipe.text_encoder_2.config.projection_dim)
            time_ids = time_ids.to(self.device).repeat(len(prompts), 1)
            return {"encoder_hidden_states": embeds,
                    "added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}
        # SD1/2: the last hidden state
        tokenizer = self.pipe.tokenizer
        ids = self._token_ids(prompts, tokenizer)
        mask = None
        if getattr(self.pipe.text_encoder.config, "use_attention_mask", False):
            mask = (ids != tokenizer.pad_token_id).long()
        return {"encoder_hidden_states": self.forward_module("text_encoder")(ids, attention_mask=mask)[0]}

    def _token_ids(self, prompts: list[str], tokenizer):
        prompts = self.pipe.maybe_convert_prompt(prompts, tokenizer)
        return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids.to(self.device)

    def diffusion_loss(self, pixels, prompts: list[str], gen):
        """The loss of the base family's objective on one micro-batch."""
        return self.objective.loss(self, pixels, prompts, gen)

    def set_training(self, on: bool) -> None:
        for module in self.modules:
            module.train(on)


# --- checkpoints ---------------------------------------------------------------------------

def checkpoint_dir(config: TrainConfig, step: int) -> Path:
    return Path(config.output_dir) / CHECKPOINTS / f"step-{step:06d}"


def find_checkpoint(config: TrainConfig) -> Path:
    if config.resume != "latest":
        path = Path(config.resume)
        if not (path / "state.json").is_file():
            raise NotFound(f"{path} is not a loradex training checkpoint (no state.json)")
        return path
    found = sorted((Path(config.output_dir) / CHECKPOINTS).glob("step-*/state.json"))
    if not found:
        raise NotFound(f"no checkpoint under {Path(config.output_dir) / CHECKPOINTS}",
                       hint="train with --save-every N, or stop a run with Ctrl-C, to get one")
    return found[-1].parent


def _flatten_optimizer(state: dict) -> tuple[dict, dict]:
    import torch

    tensors, scalars = {}, {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict[int, dict] = {}
    for flat, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, _, key = flat.partition(".")
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(run: Run, optimizer, lr_scheduler, gen, *, step: int, losses: list[float],
                    checkpoints: list[dict], samples: list[Sample], export: bool = False) -> Path:
    """Write the resumable state at ``step`` into a temp folder, then rename it into place.
    With ``export``, the method's output file goes under ``export/`` in it and ``checkpoints``
    gets an entry ``{step, path, export}``."""
    import torch
    from safetensors.torch import save_file

    from loradex.registry.files.atomic_files import TMP_PREFIX

    dest = checkpoint_dir(run.config, step)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=dest.parent))
    try:
        if export:
            exported = run.method.export(run, tmp / "export", step)
            exported.path = dest / "export" / exported.path.name
            exported.extra_paths = [dest / "export" / p.name for p in exported.extra_paths]
            checkpoints.append({"step": step, "path": str(dest), "export": exported.to_dict()})
        save_file({k: v.cpu() for k, v in run.method.trainable_state(run).items()},
                  str(tmp / "trainable.safetensors"))
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        save_file({"torch": torch.get_rng_state(), "generator": gen.get_state()}, str(tmp / "rng.safetensors"))
        state = {"step": step, "losses": losses, "optimizer": opt_meta,
                 "lr_scheduler": lr_scheduler.state_dict(), "config": run.config.to_dict(),
                 "checkpoints": checkpoints, "samples": [s.to_dict() for s in samples],
                 "base_hash": run.base.hash,
                 "eval_before": run.extra.get("eval_before")}
        (tmp / "state.json").write_text(json.dumps(state, indent=1, default=float))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def load_checkpoint(run: Run, path: Path, optimizer, lr_scheduler, gen) -> dict:
    import torch
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text())
    saved = state["config"]
    current = run.config.to_dict()
    changed = sorted(k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k])
    if changed:
        raise UsageError(f"{path} was written by a run with different settings: {', '.join(changed)}",
                         hint="resume with the checkpoint's settings (see its state.json)")
    if state["base_hash"] != run.base.hash:
        raise UsageError(f"{path} was trained on another base (hash {state['base_hash'][:12]}…)")
    run.method.load_trainable_state(run, load_file(str(path / "trainable.safetensors")))
    optimizer.load_state_dict(_unflatten_optimizer(load_file(str(path / "optimizer.safetensors")),
                                                   state["optimizer"]))
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    rng = load_file(str(path / "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    gen.set_state(rng["generator"])
    return state


# --- samples -------------------------------------------------------------------------------

def render_samples(run: Run, step: int, dest: Path) -> list[Sample]:
    """Render every sample prompt at a fixed seed each (sample_seed + i); PNGs under ``dest``.
    Rendered as ``generate`` renders (``trainer.render`` with the family's profile and its default
    settings), so ``render --check`` re-renders the record bit-identically."""
    import torch

    from .render import render, render_profile

    profile = render_profile(run.family)
    fields = profile.resolve_fields({}, run.pipe.scheduler)
    config = run.config
    prompts = config.sample_prompts or run.method.default_sample_prompts(run)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    run.set_training(False)
    try:
        with torch.no_grad(), run.accelerator.autocast():
            for i, prompt in enumerate(prompts):
                seed = config.sample_seed + i
                image = render(run.pipe, prompt, seed=seed, steps=config.sample_steps, cfg=SAMPLE_CFG,
                               width=config.resolution, height=config.resolution, fields=fields, profile=profile)
                path = dest / f"{i:02d}-seed{seed}.png"
                image.save(path)
                out.append(Sample(step, prompt, seed, str(path), image.width, image.height,
                                  config.sample_steps, SAMPLE_CFG, dict(fields)))
    finally:
        run.set_training(True)
    return out


# --- the loop ------------------------------------------------------------------------------

def total_steps(config: TrainConfig, dataset: ImageCaptionDataset, processes: int) -> int:
    if config.steps is not None:
        return config.steps
    per_step = config.grad_accum * processes
    return config.epochs * max(1, math.ceil(dataset.batches_per_epoch / per_step))


def fixed_batch_loss(run: Run) -> float:
    """Loss on micro-batch 0 with a fixed noise/timestep stream: comparable across the run."""
    import torch

    gen = torch.Generator("cpu").manual_seed(run.config.seed + EVAL_SEED_OFFSET)
    run.set_training(False)
    try:
        with torch.no_grad():
            return float(run.method.loss(run, 0, gen).item())
    finally:
        run.set_training(True)


def new_accelerator(config: TrainConfig):
    """An Accelerator for this run. accelerate keeps one process-wide state whose mixed precision
    cannot change; several runs in one process (library use, tests, the demo) may differ, so
    that part is reset — the distributed part (PartialState) is kept as launched.

    Trained text encoders may leave parameters without a gradient (SDXL conditions on
    ``text_encoder``'s penultimate layer), which DDP must be told about."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs

    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != config.mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    ddp = DistributedDataParallelKwargs(find_unused_parameters=bool(config.train_text_encoder))
    return Accelerator(mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.grad_accum,
                       kwargs_handlers=[ddp])


def prepare_run(config: TrainConfig, *, catalog=None, log: Callable[[str], None] | None = None):
    """Check the data, load the base, set the method up: (run, report)."""
    import torch
    from accelerate.utils import set_seed

    from loradex.families import FamilyNotSupported, require

    log = log or (lambda message: None)
    # a folder, or a catalog dataset version (dataset:NAME@X.Y.Z) exported for the run
    report, dataset = load_training_data(config.data, resolution=config.resolution, caption_ext=config.caption_ext,
                                         batch_size=config.batch_size, catalog=catalog)
    for warning in report.warnings:
        log(f"dataset: {warning}")
    accelerator = new_accelerator(config)
    set_seed(config.seed)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision, torch.float32)
    try:
        pipe, base, base_ref = load_any_base(config.base, catalog, dtype=weight_dtype)
    except FamilyNotSupported as exc:  # said as what was asked: training (the loader says rendering)
        raise FamilyNotSupported(exc.family, "train") from None
    pipe.to(accelerator.device)
    pipe.set_progress_bar_config(disable=True)
    method = get_method(config.method)
    run = Run(config, pipe, base, accelerator, dataset, report, method)
    run.extra["base_catalog_ref"] = base_ref
    require(run.family, "train")  # a recognised-only family: one line
    if run.denoiser_name not in method.denoisers:
        able = [m for m in method_names() if run.denoiser_name in get_method(m).denoisers]
        raise UsageError(f"{config.method} on a {run.family} base ({run.denoiser_name}) is not implemented; "
                         f"{' and '.join(able)} are")
    refuse_unsupported_settings(config, run.family, run.objective, pipe)
    for part in FROZEN_COMPONENTS:
        module = getattr(pipe, part, None)
        if module is not None:
            module.requires_grad_(False)
    torch.manual_seed(config.seed)  # adapters initialise from the global RNG: same seed, same init
    run.modules = method.setup(run)
    from diffusers.training_utils import cast_training_params

    cast_training_params(run.modules, dtype=torch.float32)  # trained tensors stay fp32 under AMP
    if config.gradient_checkpointing:
        for module in run.modules:
            if hasattr(module, "enable_gradient_checkpointing"):
                module.enable_gradient_checkpointing()
            elif hasattr(module, "activation_checkpointing_enable"):  # transformers ≥ 5 name
                module.activation_checkpointing_enable()
            elif hasattr(module, "gradient_checkpointing_enable"):
                module.gradient_checkpointing_enable()
    run.trainable = _named_trainable(pipe)
    if not run.trainable:
        raise UsageError(f"{config.method}: nothing to train")
    return run


def _named_trainable(pipe) -> list[tuple[str, Any]]:
    out = []
    for part in TRAINABLE_COMPONENTS:
        module = getattr(pipe, part, None)
        if module is not None:
            out += [(f"{part}.{n}", p) for n, p in module.named_parameters() if p.requires_grad]
    return out


def train(config: TrainConfig, *, catalog=None, progress: Progress | None = None,
          log: Callable[[str], None] | None = None) -> TrainResult:
    """Run one training (``catalog`` resolves a base given as a catalog ref). Registering the
    outcome is ``registration.register_run`` (or ``registration.train_and_register``)."""
    import torch
    from diffusers.optimization import get_scheduler

    log = log or (lambda message: None)
    started = time.perf_counter()
    started_at = _now_iso()
    run = prepare_run(config, catalog=catalog, log=log)
    acc = run.accelerator
    nproc = acc.num_processes
    total = total_steps(config, run.dataset, nproc)
    optimizer = torch.optim.AdamW(run.method.param_groups(run), lr=config.lr,
                                  betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon,
                                  weight_decay=config.weight_decay)
    # accelerate steps a prepared scheduler once per process: scale its horizon the same way
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=config.lr_warmup_steps * nproc,
                                 num_training_steps=total * nproc)
    *prepared, optimizer, lr_scheduler = acc.prepare(*run.modules, optimizer, lr_scheduler)
    run.use_prepared(prepared)
    gen = torch.Generator("cpu").manual_seed(config.seed * 1_000_003 + acc.process_index)
    eval_before = fixed_batch_loss(run)

    step, losses, checkpoints, samples = 0, [], [], []
    if config.resume:
        path = find_checkpoint(config)
        state = load_checkpoint(run, path, optimizer, lr_scheduler, gen)
        step, losses, checkpoints = state["step"], list(state["losses"]), list(state["checkpoints"])
        samples = [Sample(**s) for s in state.get("samples", [])]
        eval_before = state.get("eval_before", eval_before)
        log(f"resumed from {path} at step {step}")
    if step >= total:
        log(f"already at step {step} of {total}")
    run.extra["eval_before"] = eval_before
    params = [p for _, p in run.trainable]
    run.set_training(True)
    try:
        while step < total:
            micro_losses = []
            for micro in range(config.grad_accum):
                index = (step * config.grad_accum + micro) * nproc + acc.process_index
                with acc.accumulate(*prepared):
                    loss = run.method.loss(run, index, gen)
                    acc.backward(loss)
                    if acc.sync_gradients and config.max_grad_norm:
                        acc.clip_grad_norm_(params, config.max_grad_norm)
                    optimizer.step()
                    lr_scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                micro_losses.append(float(loss.detach().item()))
            run.method.after_optimizer_step(run)
            step += 1
            losses.append(sum(micro_losses) / len(micro_losses))
            if progress:
                progress(step, total, {"loss": losses[-1], "lr": lr_scheduler.get_last_lr()[0],
                                       "epoch": (step * config.grad_accum * nproc) // run.dataset.batches_per_epoch})
            if config.sample_every and step % config.sample_every == 0 and step < total and acc.is_main_process:
                samples += render_samples(run, step, Path(config.output_dir) / "samples" / f"step-{step:06d}")
            if config.save_every and step % config.save_every == 0 and step < total and acc.is_main_process:
                ckpt = save_checkpoint(run, optimizer, lr_scheduler, gen, step=step, losses=losses,
                                       checkpoints=checkpoints, samples=samples, export=True)
                log(f"checkpoint {ckpt}")
            acc.wait_for_everyone()
    except KeyboardInterrupt:
        if acc.is_main_process:
            ckpt = save_checkpoint(run, optimizer, lr_scheduler, gen, step=step, losses=losses,
                                   checkpoints=checkpoints, samples=samples)
            log(f"interrupted at step {step}; resumable checkpoint: {ckpt} (continue with --resume latest)")
        raise
    eval_after = fixed_batch_loss(run)
    acc.wait_for_everyone()
    scheduler = {"name": type(run.pipe.scheduler).__name__, "config": dict(run.pipe.scheduler.config)}
    result = TrainResult(config=config, base=run.base, base_catalog_ref=run.extra.get("base_catalog_ref"),
                         dataset=run.report, output=None, steps=step, losses=losses,
                         eval_loss_before=eval_before, eval_loss_after=eval_after,
                         intermediate_samples=samples, checkpoints=checkpoints, started_at=started_at, finished_at=_now_iso(),
                         seconds=time.perf_counter() - started, scheduler=_jsonable(scheduler),
                         prediction_type=run.prediction_type, libraries=library_versions(TRAIN_LIBRARIES),
                         main_process=acc.is_main_process)
    if acc.is_main_process:  # the others hold the same weights (gradients are all-reduced)
        out_dir = Path(config.output_dir)
        result.output = run.method.export(run, out_dir, step)
        result.samples = render_samples(run, step, out_dir / "samples" / "final")
        result.finished_at, result.seconds = _now_iso(), time.perf_counter() - started
        (out_dir / "train-result.json").write_text(json.dumps(result.to_dict(), indent=1, default=str))
    acc.wait_for_everyone()  # every process returns once the output exists
    return result


def _now_iso() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat()


def _jsonable(value):
    return json.loads(json.dumps(value, default=lambda o: list(o) if isinstance(o, (tuple, set)) else str(o)))
