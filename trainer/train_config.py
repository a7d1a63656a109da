"""The training configuration: one dataclass, read from a TOML file and overridden by flags.

    config = resolve_config("lora", toml_path="run.toml", overrides={"steps": 200})

Precedence: dataclass defaults < the method's own defaults (``METHOD_DEFAULTS``) < the TOML file
< flags. Keys may be written with ``-`` or ``_``. Unknown keys are refused (a typo in a config
file must not silently train something else). ``config_to_toml`` prints the resolved config so
``--print-config`` output can be saved and fed back with ``--config``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loradex.registry.errors import UsageError

METHODS = ("lora", "ti", "dreambooth", "dreambooth-lora")


@dataclass
class TrainConfig:
    method: str = "lora"
    # --- inputs / outputs
    base: str | None = None            # diffusers folder, single file, cached hub id, catalog ref, tiny-sd1
    data: str | None = None            # folder of images + sidecar captions
    caption_ext: str = ".txt"
    output_dir: str | None = None      # default: ./loradex-train/<output_name>
    output_name: str | None = None     # default: <data folder name>-<method>
    format: str = "auto"               # lora: auto|kohya|diffusers (auto: the family's own, kohya for SD, diffusers for
                                       # Flux/SD3); ti: a1111|diffusers|sdxl; dreambooth: safetensors|diffusers
    # --- registration
    register: bool = True
    name: str | None = None            # catalog adapter name (default: output_name)
    version: str | None = None
    bump: str | None = None
    message: str = ""
    register_checkpoints: bool = False
    # --- optimisation
    resolution: int = 512
    batch_size: int = 1
    grad_accum: int = 1
    steps: int | None = None           # optimizer steps; default from epochs, else 500
    epochs: int | None = None
    lr: float | None = None            # default per method
    text_encoder_lr: float | None = None
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float | None = None  # default per method
    max_grad_norm: float = 1.0
    seed: int = 0
    mixed_precision: str = "no"        # no | fp16 | bf16
    gradient_checkpointing: bool = False
    snr_gamma: float | None = None     # Min-SNR weighting (5.0 is the paper's value)
    noise_offset: float = 0.0
    # --- checkpoints, samples, resume
    save_every: int = 0
    sample_every: int = 0
    sample_prompts: list[str] = field(default_factory=list)
    sample_seed: int = 0
    sample_steps: int = 20
    resume: str | None = None          # a checkpoint folder, or "latest" (newest under output_dir)
    # --- LoRA / DreamBooth-LoRA
    rank: int = 4
    alpha: float | None = None         # default: rank (scale 1)
    conv_rank: int = 0                 # > 0: LoCon, the ResNet convolutions get a LoRA too
    conv_alpha: float | None = None
    target_modules: list[str] = field(default_factory=list)  # default: attention projections
    train_text_encoder: bool = False
    # --- textual inversion
    token: str | None = None
    init_token: str = "*"
    num_vectors: int = 1
    # --- DreamBooth
    instance_prompt: str | None = None
    class_prompt: str | None = None
    prior_preservation: bool = False
    num_class_images: int = 100
    prior_loss_weight: float = 1.0
    class_data: str | None = None      # default: <output_dir>/class-images

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Per method: what changes from the dataclass defaults (learning rates as the seeds' guides use).
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "lora": {"lr": 1e-4, "weight_decay": 1e-2, "format": "auto"},
    "ti": {"lr": 5e-3, "weight_decay": 0.0, "format": "auto"},
    "dreambooth": {"lr": 5e-6, "weight_decay": 1e-2, "format": "safetensors"},
    "dreambooth-lora": {"lr": 1e-4, "weight_decay": 1e-2, "format": "auto"},
}
FORMATS = {"lora": ("auto", "kohya", "diffusers"), "ti": ("auto", "a1111", "diffusers", "sdxl"),
           "dreambooth": ("safetensors", "diffusers"), "dreambooth-lora": ("auto", "kohya", "diffusers")}
MIXED_PRECISION = ("no", "fp16", "bf16")
_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _normalise_keys(data: dict, source: str) -> dict:
    out = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in _FIELDS:
            raise UsageError(f"{source}: unknown setting {key!r}",
                             hint="see `loradex train lora --print-config` for every setting")
        out[name] = value
    return out


def _coerce(name: str, value: Any, source: str) -> Any:
    """TOML and flags give the right types mostly; accept ints for floats and a lone string for lists."""
    if value is None:
        return None
    default = _FIELDS[name].default
    kind = _FIELDS[name].type
    if "list" in str(kind):
        if isinstance(value, str):
            return [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{source}: {name} must be a list of strings")
        return list(value)
    if "bool" in str(kind):
        if not isinstance(value, bool):
            raise UsageError(f"{source}: {name} must be true or false")
        return value
    if "float" in str(kind):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{source}: {name} must be a number")
        return float(value)
    if "int" in str(kind):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{source}: {name} must be an integer")
        return value
    if isinstance(default, str) or "str" in str(kind):
        if not isinstance(value, str):
            raise UsageError(f"{source}: {name} must be a string")
    return value


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    import tomllib

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    # a [train] table is accepted as well as top-level keys
    if set(data) == {"train"} and isinstance(data["train"], dict):
        data = data["train"]
    return _normalise_keys(data, str(path))


def resolve_config(method: str, *, toml_path: str | os.PathLike | None = None,
                   overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults < method defaults < TOML file < overrides (``None`` values in overrides are
    ignored: they are flags the user did not give)."""
    if method not in METHODS:
        raise UsageError(f"unknown training method {method!r}; known: {', '.join(METHODS)}")
    values: dict[str, Any] = dict(METHOD_DEFAULTS[method])
    if toml_path is not None:
        file_values = read_toml(toml_path)
        if file_values.get("method", method) != method:
            raise UsageError(f"{toml_path} is a {file_values['method']!r} config, not {method!r}")
        values.update({k: _coerce(k, v, str(toml_path)) for k, v in file_values.items()})
    flags = _normalise_keys({k: v for k, v in (overrides or {}).items() if v is not None}, "flags")
    values.update({k: _coerce(k, v, "flags") for k, v in flags.items()})
    values["method"] = method
    config = TrainConfig(**values)
    _fill_derived(config)
    validate_config(config)
    return config


def _fill_derived(c: TrainConfig) -> None:
    if c.output_name is None:
        from .dataset import data_stem

        stem = data_stem(c.data)  # a folder's name, or a dataset ref's dataset name
        c.output_name = f"{stem}-{c.method}"
    if c.output_dir is None:
        c.output_dir = str(Path("loradex-train") / c.output_name)
    if c.name is None:
        import re

        c.name = re.sub(r"[^a-z0-9._-]+", "-", c.output_name.lower()).strip("-._") or "trained"
    if c.alpha is None:
        c.alpha = float(c.rank)
    if c.conv_rank and c.conv_alpha is None:
        c.conv_alpha = float(c.conv_rank)
    if c.steps is None and c.epochs is None:
        c.steps = 500


def validate_config(c: TrainConfig) -> None:
    problems = []
    if not c.base:
        problems.append("--base is required (a diffusers folder, a .safetensors checkpoint, a cached hub id, "
                        "a catalog ref or tiny-sd1)")
    if not c.data:
        problems.append("--data is required (a folder of images with .txt captions)")
    for name in ("resolution", "batch_size", "grad_accum", "rank", "num_vectors"):
        if getattr(c, name) < 1:
            problems.append(f"{name} must be at least 1")
    if c.steps is not None and c.steps < 1:
        problems.append("steps must be at least 1")
    if c.epochs is not None and c.epochs < 1:
        problems.append("epochs must be at least 1")
    if c.resolution % 8:
        problems.append("resolution must be a multiple of 8 (the VAE downsamples by 8 on real bases)")
    if c.mixed_precision not in MIXED_PRECISION:
        problems.append(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}")
    if c.format not in FORMATS[c.method]:
        problems.append(f"format for {c.method} must be one of {', '.join(FORMATS[c.method])}")
    from diffusers.optimization import SchedulerType

    schedulers = [s.value for s in SchedulerType]
    if c.lr_scheduler not in schedulers:
        problems.append(f"lr_scheduler must be one of {', '.join(schedulers)}")
    if c.method == "ti" and not c.token:
        problems.append('textual inversion needs --token (e.g. "<my-style>")')
    if c.method in ("dreambooth", "dreambooth-lora"):
        if not c.instance_prompt:
            problems.append('DreamBooth needs --instance-prompt (e.g. "a photo of sks dog")')
        if c.prior_preservation and not c.class_prompt:
            problems.append("--prior-preservation needs --class-prompt (e.g. \"a photo of a dog\")")
    if c.sample_every and not c.sample_prompts:
        problems.append("--sample-every needs at least one --sample-prompt")
    if problems:
        raise UsageError("invalid training config: " + "; ".join(problems))


def config_to_toml(config: TrainConfig) -> str:
    """TOML text of a resolved config (unset values become comments: TOML has no null)."""
    lines = []
    for name, value in config.to_dict().items():
        if value is None:
            lines.append(f"# {name} = (unset)")
        else:
            lines.append(f"{name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")
