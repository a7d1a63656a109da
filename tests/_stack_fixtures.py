"""Random kohya LoRA files whose modules are read off a live tiny pipeline (so they always fit)."""

from __future__ import annotations

from pathlib import Path

import torch

ATTN_LEAVES = ("to_q", "to_k", "to_v", "to_out.0")
TE_LEAVES = ("q_proj", "k_proj", "v_proj", "out_proj")


def kohya_modules(pipe, *, unet: bool = True, text_encoder: bool = True) -> dict[str, tuple[int, int]]:
    """kohya module name -> (in_features, out_features) for the UNet attention projections and
    the CLIP self-attention projections of ``pipe``."""
    mods: dict[str, tuple[int, int]] = {}
    if unet:
        for name, module in pipe.unet.named_modules():
            if isinstance(module, torch.nn.Linear) and name.endswith(ATTN_LEAVES) and ".attn" in name:
                mods["lora_unet_" + name.replace(".", "_")] = (module.in_features, module.out_features)
    if text_encoder:
        for name, module in pipe.text_encoder.named_modules():
            if isinstance(module, torch.nn.Linear) and name.endswith(TE_LEAVES):
                # kohya keeps the text_model level that transformers 5 drops
                path = name if name.startswith("text_model.") else "text_model." + name
                mods["lora_te_" + path.replace(".", "_")] = (module.in_features, module.out_features)
    return mods


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
