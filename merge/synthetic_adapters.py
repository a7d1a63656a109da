"""Random adapters at known shapes, for the demo, tests and benchmarks.

``TINY_SD1_MODULES`` lists the attention projections of the tiny SD1 pipeline
(``loradex.trainer.tiny_pipeline``: UNet channels (32, 64), cross-attention 32, CLIP width 32,
2 layers) in kohya naming, so files written here load into it.
"""

from __future__ import annotations

import json
from pathlib import Path


def _tiny_sd1_modules() -> dict[str, tuple[int, int]]:
    mods: dict[str, tuple[int, int]] = {}
    blocks = ["down_blocks_1_attentions_0", "mid_block_attentions_0"]
    blocks += [f"up_blocks_0_attentions_{i}" for i in range(2)]  # layers_per_block 1 → 2 per up block
    for block in blocks:
        prefix = f"lora_unet_{block}_transformer_blocks_0"
        for proj in ("to_q", "to_k", "to_v", "to_out_0"):
            mods[f"{prefix}_attn1_{proj}"] = (64, 64)
        mods[f"{prefix}_attn2_to_q"] = (64, 64)
        mods[f"{prefix}_attn2_to_k"] = (32, 64)
        mods[f"{prefix}_attn2_to_v"] = (32, 64)
        mods[f"{prefix}_attn2_to_out_0"] = (64, 64)
    for layer in range(2):
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            mods[f"lora_te_text_model_encoder_layers_{layer}_self_attn_{proj}"] = (32, 32)
    return mods


TINY_SD1_MODULES = _tiny_sd1_modules()


def random_kohya_state_dict(modules: dict[str, tuple[int, int]], *, rank: int, alpha: float,
                            seed: int = 0, scale: float = 0.1, dtype=None) -> dict:
    """kohya-layout LoRA tensors: ``<module>.lora_down.weight`` [rank, in],
    ``.lora_up.weight`` [out, rank], ``.alpha`` (0-dim)."""
    import torch

    dtype = dtype or torch.float32
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, (fan_in, fan_out) in sorted(modules.items()):
        sd[f"{name}.lora_down.weight"] = (torch.randn(rank, fan_in, generator=gen) * scale).to(dtype)
        sd[f"{name}.lora_up.weight"] = (torch.randn(fan_out, rank, generator=gen) * scale).to(dtype)
        sd[f"{name}.alpha"] = torch.tensor(float(alpha)).to(dtype)
    return sd


def write_random_kohya_lora(path: str | Path, *, modules: dict[str, tuple[int, int]] | None = None,
                            rank: int = 4, alpha: float = 2.0, seed: int = 0,
                            base_version: str = "sd_v1", trigger: str | None = None,
                            output_name: str | None = None) -> Path:
    """Write a kohya LoRA with plausible ``ss_*`` metadata (tag frequency gives the trigger)."""
    from loradex.registry.files.safetensors_writer import save_safetensors

    path = Path(path)
    modules = modules or TINY_SD1_MODULES
    sd = random_kohya_state_dict(modules, rank=rank, alpha=alpha, seed=seed)
    metadata = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        "ss_base_model_version": base_version,
        "ss_output_name": output_name or path.stem,
        "ss_seed": str(seed),
    }
    if trigger:
        metadata["ss_tag_frequency"] = json.dumps({"1_data": {trigger: 10, "1girl": 3}})
    save_safetensors(sd, path, metadata)
    return path


def write_random_embedding(path: str | Path, *, n_vectors: int = 2, dim: int = 32, seed: int = 0) -> Path:
    """An A1111/kohya-style embedding: ``{"emb_params": [n_vectors, dim]}``."""
    import torch

    from loradex.registry.files.safetensors_writer import save_safetensors

    gen = torch.Generator().manual_seed(seed)
    save_safetensors({"emb_params": torch.randn(n_vectors, dim, generator=gen) * 0.1}, path)
    return Path(path)
