"""Training methods by name (lora, ti, dreambooth, dreambooth-lora), registered by decorator.

A method decides what trains and what comes out; the engine (``train_loop``) owns everything
else: data order, noise, optimizer, schedules, checkpoints, samples. The hooks:

- ``setup(run)``: freeze the base, attach adapters / new token rows; returns the modules that
  train (the engine prepares them with accelerate and toggles train/eval);
- ``param_groups(run)``: optimizer parameter groups (learning rates per part);
- ``prompts(run, captions)``: the text each image is trained with;
- ``loss(run, index, gen)``: the loss of micro-batch ``index`` (default: the diffusion loss of
  the dataset's batch; DreamBooth adds the prior term);
- ``after_optimizer_step(run)``: e.g. textual inversion puts the frozen rows back;
- ``trainable_state(run)`` / ``load_trainable_state(run, sd)``: what a resumable checkpoint holds;
- ``export(run, dest_dir, step)``: write the output file(s) → ``Exported``;
- ``default_sample_prompts(run)``: what to render when the user gave no ``--sample-prompt``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loradex.registry.errors import UsageError

TRAINING_METHODS: dict[str, type["TrainingMethod"]] = {}
# modules whose import registers the methods (imported on first lookup: they pull in torch)
METHOD_MODULES = ("loradex.trainer.train_lora", "loradex.trainer.train_ti", "loradex.trainer.train_dreambooth")


def register_method(name: str):
    def deco(cls):
        cls.name = name
        TRAINING_METHODS[name] = cls
        return cls
    return deco


def method_names() -> list[str]:
    _import_methods()
    return sorted(TRAINING_METHODS)


def get_method(name: str) -> "TrainingMethod":
    _import_methods()
    try:
        return TRAINING_METHODS[name]()
    except KeyError:
        raise UsageError(f"unknown training method {name!r}; known: {', '.join(sorted(TRAINING_METHODS))}") from None


def _import_methods() -> None:
    for module in METHOD_MODULES:
        importlib.import_module(module)


@dataclass
class Exported:
    """One output file of a run, ready for ``add_file``."""
    path: Path
    kind: str                       # lora | embedding | checkpoint (catalog kind)
    file_format: str                # kohya | diffusers | a1111 | sdxl | diffusers-unet
    triggers: list[str] = field(default_factory=list)
    extra_paths: list[Path] = field(default_factory=list)  # e.g. a diffusers folder written beside it

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "kind": self.kind, "format": self.file_format,
                "triggers": self.triggers, "extra_paths": [str(p) for p in self.extra_paths]}


def unet_and_text_encoder_groups(run) -> list[dict]:
    """Optimizer groups for methods training denoiser (UNet / transformer) weights and, optionally,
    text encoders: the text encoders get ``text_encoder_lr`` when it is set."""
    c = run.config
    unet = [p for n, p in run.trainable if not n.startswith("text_encoder")]
    text = [p for n, p in run.trainable if n.startswith("text_encoder")]
    groups = [{"params": unet, "lr": c.lr}]
    if text:
        groups.append({"params": text, "lr": c.text_encoder_lr or c.lr})
    return groups


class TrainingMethod:
    name = ""
    output_kind = "lora"
    # the denoisers (train_loop objective components) this method is written for: the others'
    # families are refused in one line before anything trains
    denoisers: tuple[str, ...] = ("unet",)

    def setup(self, run) -> list:
        raise NotImplementedError

    def param_groups(self, run) -> list[dict]:
        return [{"params": [p for _, p in run.trainable], "lr": run.config.lr}]

    def prompts(self, run, captions: list[str | None]) -> list[str]:
        return [c or "" for c in captions]

    def loss(self, run, index: int, gen):
        pixels, captions = run.dataset.batch(run.config.seed, index)
        return run.diffusion_loss(pixels, self.prompts(run, captions), gen)

    def after_optimizer_step(self, run) -> None:
        pass

    def trainable_state(self, run) -> dict:
        return {name: p.detach().clone().contiguous() for name, p in run.trainable}

    def load_trainable_state(self, run, state: dict) -> None:
        import torch

        params = dict(run.trainable)
        missing = sorted(set(params) - set(state))
        if missing:
            raise UsageError(f"checkpoint does not match this run: {len(missing)} trainable tensors missing, "
                             f"e.g. {missing[0]}", hint="resume with the same method and settings")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state[name].to(p.device, p.dtype))

    def export(self, run, dest_dir: Path, step: int) -> Exported:
        raise NotImplementedError

    def default_sample_prompts(self, run) -> list[str]:
        first = next((c for c in run.dataset.captions if c), None)
        return [first or "a photo"]
