"""Fixtures for the conversion tests: corpus paths and kohya LoRAs generated from real layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
CORPUS_FILES = CORPUS / "files"
LAYOUTS = CORPUS / "layouts"
SD15_LAYOUT = LAYOUTS / "kohya_sd15_lora_layout_shinkai.json"
SDXL_LAYOUT = LAYOUTS / "kohya_sdxl_lora_layout_AlienStyle.json"

# Alphas that differ from the rank and from each other, so alpha_pattern is exercised.
ALPHAS = (1.0, 0.5, 3.0, 2.0, 16.0, 0.25, 5.0)


def corpus_file(name: str) -> Path:
    path = CORPUS_FILES / name
    if not path.is_file():
        pytest.skip(f"corpus file {path} absent (the shared corpus is not part of a user's clone)")
    return path


def layout(path: Path) -> dict:
    if not path.is_file():
        pytest.skip(f"layout {path} absent (the shared corpus is not part of a user's clone)")
    return json.loads(path.read_text())


def kohya_from_layout(path: Path, rank: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random kohya LoRA with the layout's keys and dtypes, rank reduced to ``rank`` (every 7th
    module gets rank 1, so rank_pattern is exercised too) and varied alphas."""
    spec = layout(path)
    gen = torch.Generator().manual_seed(seed)
    names = sorted({k.split(".")[0] for k in spec})
    sd = {}
    for i, name in enumerate(names):
        r = 1 if i % 7 == 3 else rank
        down_spec = spec[f"{name}.lora_down.weight"]
        up_spec = spec[f"{name}.lora_up.weight"]
        dtype = getattr(torch, down_spec["dtype"].removeprefix("torch."))
        down_shape = [r, *down_spec["shape"][1:]]
        up_shape = [up_spec["shape"][0], r, *up_spec["shape"][2:]]
        sd[f"{name}.lora_down.weight"] = torch.randn(down_shape, generator=gen).to(dtype)
        sd[f"{name}.lora_up.weight"] = torch.randn(up_shape, generator=gen).to(dtype)
        alpha_dtype = getattr(torch, spec[f"{name}.alpha"]["dtype"].removeprefix("torch."))
        sd[f"{name}.alpha"] = torch.tensor(ALPHAS[i % len(ALPHAS)], dtype=alpha_dtype)
    return sd


def assert_same_state_dict(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert a[key].shape == b[key].shape, key
        assert torch.equal(a[key], b[key]), key
