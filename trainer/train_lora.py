"""LoRA (and LoCon with ``conv_rank``) on the denoiser — the UNet, or the transformer of a DiT family
(Flux.1, SD 3.5) — optionally the text encoders, through peft.

The denoiser's adapter is attached with ``add_adapter(LoraConfig(...))`` (diffusers' peft
integration) on the objective's default targets (``train_objectives``); text encoders get theirs
from peft directly (``inject_adapter_in_model``), not through transformers' ``add_adapter``, whose
peft minimum (>= 0.22 in transformers 5.24) may be newer than the installed peft.

``format = "auto"`` (the default) writes the objective's own format: kohya for SD 1.x/2.x/XL (what
A1111 / ComfyUI load), diffusers keys (``transformer.…lora_A/B``) for Flux/SD3. ``kohya`` goes
through ``loradex.merge.conventions.convert``, which checks that every module survives the
renaming (Flux/SD3: native fused qkv / linear1 names, exact); ``diffusers`` keeps peft's keys.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .train_registry import Exported, TrainingMethod, register_method, unet_and_text_encoder_groups

ATTENTION_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
CONV_TARGETS = ["conv1", "conv2", "conv_shortcut"]          # ResNet convolutions (kohya LoCon)
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def unet_lora_config(config, default_targets=ATTENTION_TARGETS):
    """The denoiser's LoraConfig: ``target_modules`` if given, else ``default_targets``."""
    from peft import LoraConfig

    targets = list(config.target_modules or default_targets)
    rank_pattern, alpha_pattern = {}, {}
    if config.conv_rank:
        targets += [t for t in CONV_TARGETS if t not in targets]
        for t in CONV_TARGETS:
            rank_pattern[t] = config.conv_rank
            alpha_pattern[t] = config.conv_alpha
    return LoraConfig(r=config.rank, lora_alpha=config.alpha, init_lora_weights="gaussian",
                      target_modules=targets, rank_pattern=rank_pattern, alpha_pattern=alpha_pattern)


def text_encoder_lora_config(config):
    from peft import LoraConfig

    return LoraConfig(r=config.rank, lora_alpha=config.alpha, init_lora_weights="gaussian",
                      target_modules=TEXT_ENCODER_TARGETS)


class LoraAdapterMixin:
    """Attach, train and export a LoRA; shared by ``lora`` and ``dreambooth-lora``."""

    output_kind = "lora"
    denoisers = ("unet", "transformer")

    def setup(self, run) -> list:
        run.denoiser.add_adapter(unet_lora_config(run.config, run.objective.lora_targets))
        modules = [run.denoiser]
        if run.config.train_text_encoder:
            from peft import inject_adapter_in_model

            for _, _, encoder in run.text_encoders():
                # peft's own API (see the module docstring); it marks only the LoRA tensors
                # trainable and sets encoder.peft_config["default"] as add_adapter would
                inject_adapter_in_model(text_encoder_lora_config(run.config), encoder, adapter_name="default")
                modules.append(encoder)
        return modules

    def param_groups(self, run) -> list[dict]:
        return unet_and_text_encoder_groups(run)

    def diffusers_state_dict(self, run) -> tuple[dict, dict[str, str]]:
        """The adapter in diffusers keys (``unet.<path>.lora_A.weight``) + ``lora_adapter_metadata``
        giving every module's exact rank and alpha (peft's own config, prefixed per component)."""
        from peft.utils import get_peft_model_state_dict

        from loradex.merge.conventions.lora_conventions import LORA_ADAPTER_METADATA_KEY

        parts = [(run.denoiser_name, run.denoiser)]
        if run.config.train_text_encoder:
            parts += [(name, encoder) for name, _, encoder in run.text_encoders()]
        state, config = {}, {}
        for component, module in parts:
            sd = get_peft_model_state_dict(module)
            state.update({f"{component}.{k}": v.detach().float().cpu().contiguous() for k, v in sd.items()})
            peft_config = module.peft_config["default"]
            # exact per-module patterns, so readers need not re-implement peft's suffix matching
            ranks, alphas = {}, {}
            for key, tensor in sd.items():
                if key.endswith(".lora_A.weight"):
                    path = key[: -len(".lora_A.weight")]
                    conv = tensor.dim() == 4
                    ranks[path] = run.config.conv_rank if conv else run.config.rank
                    alphas[path] = run.config.conv_alpha if conv else run.config.alpha
            config.update({f"{component}.r": peft_config.r, f"{component}.lora_alpha": peft_config.lora_alpha,
                           f"{component}.rank_pattern": {"^" + re.escape(p): r for p, r in ranks.items()
                                                         if r != peft_config.r},
                           f"{component}.alpha_pattern": {"^" + re.escape(p): a for p, a in alphas.items()
                                                          if a != peft_config.lora_alpha},
                           f"{component}.target_modules": sorted(ranks),
                           f"{component}.use_dora": False, f"{component}.use_rslora": False})
        return state, {"format": "pt", LORA_ADAPTER_METADATA_KEY: json.dumps(config, sort_keys=True)}

    def export(self, run, dest_dir: Path, step: int) -> Exported:
        from safetensors.torch import save_file

        from loradex.merge.conventions.convert import convert_state_dict
        from loradex.registry.files.atomic_files import atomic_path

        from .registration import lora_training_metadata

        state, metadata = self.diffusers_state_dict(run)
        fmt = run.objective.lora_format if run.config.format == "auto" else run.config.format
        if fmt == "kohya":
            state, metadata, _ = convert_state_dict(state, to="kohya", metadata=metadata, base=run.family)
        training = lora_training_metadata(run, step)
        metadata = {**metadata, **training}
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / f"{run.config.output_name}.safetensors"
        with atomic_path(dest) as tmp:
            save_file(state, str(tmp), metadata=metadata)
        return Exported(dest, "lora", fmt, triggers=_triggers(training))


def _triggers(metadata: dict[str, str]) -> list[str]:
    from loradex.registry.probe.training_facts import trigger_words

    return trigger_words(metadata, [])


@register_method("lora")
class LoraMethod(LoraAdapterMixin, TrainingMethod):
    pass
