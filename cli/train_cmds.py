"""train lora|ti|dreambooth|dreambooth-lora (``dataset check`` is in dataset_cmds)."""

from __future__ import annotations

import inspect
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Iterator, List, Optional

import typer

from .options import HomeOpt, JsonOpt, open_catalog
from .output import Output

ALL = ("lora", "ti", "dreambooth", "dreambooth-lora")
LORA = ("lora", "dreambooth-lora")
DREAMBOOTH = ("dreambooth", "dreambooth-lora")

# (config field, type, flag, help, methods). Every flag defaults to None = "not given", so the
# TOML file's value (or the default) stands unless the flag is on the command line.
OPTIONS: list[tuple[str, Any, str, str, tuple[str, ...]]] = [
    ("base", Optional[str], "--base", "Base model: diffusers folder, .safetensors, cached hub id, catalog ref, tiny-sd1.", ALL),
    ("data", Optional[str], "--data", "Folder of images with sidecar captions, or a catalog dataset dataset:NAME[@X.Y.Z|@ALIAS].", ALL),
    ("caption_ext", Optional[str], "--caption-ext", "Caption file extension (default .txt).", ALL),
    ("output_dir", Optional[str], "--output-dir", "Where outputs, samples and checkpoints go.", ALL),
    ("output_name", Optional[str], "--output-name", "File name stem of the output.", ALL),
    ("format", Optional[str], "--format", "lora: auto|kohya|diffusers (auto: kohya for SD, diffusers for Flux/SD3); ti: auto|a1111|diffusers|sdxl; dreambooth: safetensors|diffusers.", ALL),
    ("name", Optional[str], "--name", "Catalog adapter name to register under (default: output name).", ALL),
    ("version", Optional[str], "--version", "Exact version to register (default: bump).", ALL),
    ("bump", Optional[str], "--bump", "major|minor|patch (default minor).", ALL),
    ("message", Optional[str], "--message", "Version message.", ALL),
    ("register", Optional[bool], "--register/--no-register", "Register the result in the catalog (default yes).", ALL),
    ("register_checkpoints", Optional[bool], "--register-checkpoints/--no-register-checkpoints",
     "Also register --save-every checkpoints as pre-releases X.Y.Z-step.N.", ALL),
    ("resolution", Optional[int], "--resolution", "Training resolution (bucket area).", ALL),
    ("batch_size", Optional[int], "--batch-size", "Images per micro-batch.", ALL),
    ("grad_accum", Optional[int], "--grad-accum", "Micro-batches per optimizer step.", ALL),
    ("steps", Optional[int], "--steps", "Optimizer steps.", ALL),
    ("epochs", Optional[int], "--epochs", "Epochs (when --steps is not given).", ALL),
    ("lr", Optional[float], "--lr", "Learning rate.", ALL),
    ("text_encoder_lr", Optional[float], "--text-encoder-lr", "Learning rate of the text encoder(s).", ("lora", "dreambooth", "dreambooth-lora")),
    ("lr_scheduler", Optional[str], "--lr-scheduler", "constant, linear, cosine, … (diffusers.optimization).", ALL),
    ("lr_warmup_steps", Optional[int], "--lr-warmup-steps", "Warm-up steps.", ALL),
    ("weight_decay", Optional[float], "--weight-decay", "AdamW weight decay.", ALL),
    ("max_grad_norm", Optional[float], "--max-grad-norm", "Gradient clipping (0: off).", ALL),
    ("seed", Optional[int], "--seed", "Seed of everything random in the run.", ALL),
    ("mixed_precision", Optional[str], "--mixed-precision", "no|fp16|bf16.", ALL),
    ("gradient_checkpointing", Optional[bool], "--gradient-checkpointing/--no-gradient-checkpointing",
     "Trade compute for memory.", ALL),
    ("snr_gamma", Optional[float], "--snr-gamma", "Min-SNR loss weighting γ (5 is usual).", ALL),
    ("noise_offset", Optional[float], "--noise-offset", "Noise offset (e.g. 0.05).", ALL),
    ("save_every", Optional[int], "--save-every", "Write a resumable checkpoint every N steps.", ALL),
    ("sample_every", Optional[int], "--sample-every", "Render the sample prompts every N steps.", ALL),
    ("sample_prompts", Optional[List[str]], "--sample-prompt", "A sample prompt (repeatable; fixed seeds).", ALL),
    ("sample_seed", Optional[int], "--sample-seed", "Seed of the first sample prompt (+1 per prompt).", ALL),
    ("sample_steps", Optional[int], "--sample-steps", "Inference steps per sample.", ALL),
    ("resume", Optional[str], "--resume", "Continue from a checkpoint folder, or 'latest'.", ALL),
    ("rank", Optional[int], "--rank", "LoRA rank.", LORA),
    ("alpha", Optional[float], "--alpha", "LoRA alpha (default: rank).", LORA),
    ("conv_rank", Optional[int], "--conv-rank", "LoCon: rank of the ResNet convolutions' LoRA (0: none).", LORA),
    ("conv_alpha", Optional[float], "--conv-alpha", "LoCon alpha (default: conv rank).", LORA),
    ("target_modules", Optional[List[str]], "--target-module", "LoRA target module (repeatable; default attention).", LORA),
    ("train_text_encoder", Optional[bool], "--train-text-encoder/--no-train-text-encoder",
     "Train the text encoder(s) too.", ("lora", "dreambooth", "dreambooth-lora")),
    ("token", Optional[str], "--token", 'The new token, e.g. "<my-style>".', ("ti",)),
    ("init_token", Optional[str], "--init-token", "Word whose embedding starts the new vectors.", ("ti",)),
    ("num_vectors", Optional[int], "--num-vectors", "Vectors per token.", ("ti",)),
    ("instance_prompt", Optional[str], "--instance-prompt", '"a photo of sks dog".', DREAMBOOTH),
    ("class_prompt", Optional[str], "--class-prompt", '"a photo of a dog".', DREAMBOOTH),
    ("prior_preservation", Optional[bool], "--prior-preservation/--no-prior-preservation",
     "Add the class-image prior loss.", DREAMBOOTH),
    ("num_class_images", Optional[int], "--num-class-images", "Class images (generated with the base when missing).", DREAMBOOTH),
    ("prior_loss_weight", Optional[float], "--prior-loss-weight", "Weight of the prior loss.", DREAMBOOTH),
    ("class_data", Optional[str], "--class-data", "Folder of class images (cache).", DREAMBOOTH),
]

HELP = {
    "lora": "Train a LoRA (LoCon with --conv-rank) and register it (kohya format for SD, diffusers for Flux/SD3, by default).",
    "ti": "Train a textual-inversion embedding for --token and register it.",
    "dreambooth": "DreamBooth full fine-tune of the UNet (+ text encoder); registered as a checkpoint.",
    "dreambooth-lora": "DreamBooth objective (instance prompt, prior preservation) with a LoRA.",
}


@contextmanager
def train_progress(out: Output) -> Iterator:
    """``progress(step, total, info)`` drawing step, loss, lr, it/s and ETA (rich, on a TTY)."""
    if out.quiet or out.json_mode or not sys.stderr.isatty():
        yield lambda step, total, info: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    columns = [TextColumn("train"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  {task.fields[speed]:.2f} it/s"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("train", total=None, loss=float("nan"), lr=0.0, speed=0.0)

        def update(step: int, total: int, info: dict) -> None:
            speed = bar.tasks[0].speed or 0.0
            bar.update(task, completed=step, total=total, loss=info.get("loss", float("nan")),
                       lr=info.get("lr", 0.0), speed=speed)

        yield update


def _make_train_command(method: str):
    def command(**kwargs) -> None:
        from loradex.trainer.registration import train_and_register
        from loradex.trainer.train_config import config_to_toml, resolve_config

        config_file, print_config = kwargs.pop("config_file"), kwargs.pop("print_config")
        home, json_mode = kwargs.pop("home"), kwargs.pop("json")
        out = Output(json_mode=json_mode)
        config = resolve_config(method, toml_path=config_file, overrides=kwargs)
        if print_config:
            sys.stdout.write(config_to_toml(config))
            return
        catalog = open_catalog(home)
        with train_progress(out) as progress:
            result, added = train_and_register(config, catalog=catalog, progress=progress, log=out.info)
        if not result.main_process:  # `accelerate launch`: the main process reports (and registered)
            return
        data = {**result.to_dict(), "versions": [a.to_dict() for a in added]}

        def human(c) -> None:
            loss = result.loss_summary()
            c.print(f"trained {method}: {result.steps} steps, fixed-batch loss "
                    f"{result.eval_loss_before:.4f} → {result.eval_loss_after:.4f} ({result.seconds:.1f} s)")
            c.print(f"output: {result.output.path}" + (f" (last step loss {loss['last']:.4f})" if "last" in loss else ""))
            for a in added:
                c.print(f"registered {a.version.ref}")

        out.result(data, human)

    params = [
        inspect.Parameter("config_file", inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation=Annotated[Optional[Path], typer.Option("--config", help="TOML config file (flags override it).")]),
        inspect.Parameter("print_config", inspect.Parameter.KEYWORD_ONLY, default=False,
                          annotation=Annotated[bool, typer.Option("--print-config", help="Print the resolved config as TOML and exit.")]),
    ]
    for field, kind, flag, help_text, methods in OPTIONS:
        if method in methods:
            params.append(inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, default=None,
                                            annotation=Annotated[kind, typer.Option(*flag.split(" "), help=help_text)]))
    params += [inspect.Parameter("home", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=HomeOpt),
               inspect.Parameter("json", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=JsonOpt)]
    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = HELP[method]
    command.__name__ = method.replace("-", "_")
    return command


def register(app: typer.Typer) -> None:
    train_app = typer.Typer(help="Train an adapter and register it with its evidence.", no_args_is_help=True)
    for method in ALL:
        train_app.command(name=method)(_make_train_command(method))
    app.add_typer(train_app, name="train")
