"""Shared builders for the evidence tests (records, cards)."""

from __future__ import annotations

import copy
from datetime import datetime, timezone

from loradex.registry.catalog.records import RECORD_SCHEMA, new_record_id


def minimal_record(**overrides) -> dict:
    record = {
        "schema": RECORD_SCHEMA, "id": new_record_id(), "source": "generate",
        "prompt": "a red fox <lora:style@1.0.0:0.8>", "clean_prompt": "a red fox",
        "negative_prompt": "blurry", "seed": 7, "steps": 2, "cfg": 5.0, "width": 32, "height": 32,
        "scheduler": {"name": "DDIMScheduler", "config": {"num_train_timesteps": 1000}},
        "base": {"ref": "tiny-sd1", "family": "sd1", "sha256": "ab" * 32},
        "stack": [], "embeddings": [], "dtype": "float32", "device": "cpu",
        "libraries": {"torch": "2", "loradex": "0.1.0"}, "image_sha256": "cd" * 32,
        "created_at": datetime.now(timezone.utc).isoformat(), "created_by": "tester",
    }
    record.update(copy.deepcopy(overrides))
    return record


def block_pattern(seed: int, size: int = 32):
    """A 4×4 grid of random colours (seeded), ``size`` px square: a distinctive training image."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(np.repeat(np.repeat(cells, size // 4, 0), size // 4, 1))


def calibrated_tiny_base(dest):
    """The tiny SD1 pipeline saved as a diffusers folder, its VAE made to behave like a real one in the
    two ways memorization depends on: a narrow posterior (logvar −30: encode gives the mean, as a
    real VAE nearly does; the random one's std ≈ 0.97 drowns its mean ≈ 0.25) and a scaling factor
    of 1/std of the latents (real SD: 0.18215 for the same purpose), measured on 8 block patterns."""
    import numpy as np
    import torch

    from loradex.trainer.tiny_pipeline import build_tiny_sd1_pipeline

    pipe = build_tiny_sd1_pipeline()
    vae = pipe.vae
    channels = vae.config.latent_channels
    with torch.no_grad():
        vae.quant_conv.weight[channels:] = 0.0
        vae.quant_conv.bias[channels:] = -30.0
        x = torch.stack([torch.from_numpy(np.asarray(block_pattern(50 + i), dtype=np.float32) / 127.5 - 1)
                         .permute(2, 0, 1) for i in range(8)])
        std = float(vae.encode(x).latent_dist.mean.std())
    vae.register_to_config(scaling_factor=1.0 / std)
    pipe.save_pretrained(str(dest), safe_serialization=True)
    return dest
