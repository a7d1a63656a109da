"""Random kohya LoRA files whose modules are read off a live tiny pipeline (so they always fit)."""

from __future__ import annotations

from pathlib import Path

import torch

from loradex.trainer.tiny_pipeline import kohya_module_shapes as kohya_modules  # noqa: F401


def write_kohya_lora(path: Path, modules: dict[str, tuple[int, int]], *, rank: int, alpha: float,
                     seed: int, scale: float = 0.3) -> Path:
    """Random kohya file: down ~ N(0, 1/in), up ~ N(0, scale²/r) — large enough to move pixels."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, (fan_in, fan_out) in sorted(modules.items()):
        sd[f"{name}.lora_down.weight"] = torch.randn(rank, fan_in, generator=gen) / fan_in ** 0.5
        sd[f"{name}.lora_up.weight"] = torch.randn(fan_out, rank, generator=gen) * scale / rank ** 0.5
        sd[f"{name}.alpha"] = torch.tensor(float(alpha))
    save_file(sd, str(path), metadata={"ss_network_module": "networks.lora"})
    return path


def kohya_linears(pipe) -> dict:
    """The tiny SD1 pipeline's Linear layers by kohya module name (``lora_unet_…``, ``lora_te_…``):
    where a known-answer test adds ΔW by hand."""
    linears = {}
    for prefix, model in (("lora_unet_", pipe.unet), ("lora_te_text_model_", pipe.text_encoder)):
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear):
                linears[prefix + name.replace(".", "_")] = module
    return linears
