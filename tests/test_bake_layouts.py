"""bake across layouts on the tiny SD1 pipeline: folder → original-layout single file (renders like
the LoRA fused by diffusers itself, registers, replays bit-exact), single file → diffusers folder on
a --config folder (baking the negated weight returns the base), and the SD 2.x refusal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from _stack_fixtures import kohya_modules, write_kohya_lora
from test_catalog import run_loradex
from loradex.cli.app import app
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import UsageError

WEIGHT = 0.7


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(tiny SD1 folder, random LoRA file over its UNet attention and CLIP self-attention)."""
    from loradex.trainer.base_loader import load_base
    from loradex.trainer.tiny_pipeline import save_tiny_pipeline

    root = tmp_path_factory.mktemp("bake-layouts")
    folder = save_tiny_pipeline("sd1", root / "tiny-sd1", seed=0)
    pipe, _ = load_base(folder)
    lora = write_kohya_lora(root / "style.safetensors", kohya_modules(pipe), rank=4, alpha=2.0, seed=7)
    return folder, lora


@pytest.fixture
def home(tmp_path, tiny):
    home = tmp_path / "home"
    add_file(Catalog(home), tiny[1], name="style")
    return home


def render(pipe) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    gen = torch.Generator("cpu").manual_seed(0)
    return pipe("a photo", num_inference_steps=2, height=32, width=32, generator=gen, output_type="np",
                guidance_scale=1.0).images[0]


def test_folder_to_single_file_renders_like_the_fused_lora_registers_and_replays(tmp_path, tiny, home):
    from diffusers import StableDiffusionPipeline

    from loradex.merge.recipes import replay_version, version_recipe
    from loradex.trainer.base_loader import load_base

    folder, lora = tiny
    out = tmp_path / "baked.safetensors"
    res = CliRunner().invoke(app, ["bake", "tiny-sd1", f"style:{WEIGHT}", "-o", str(out), "--format", "single-file",
                                   "--name", "baked", "--home", str(home), "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["format"] == "single-file" and result["missing"] == []
    assert result["fused"] == len(load_file(str(lora))) // 3  # every module of the LoRA, once

    # diffusers' own single-file loader reads it; it renders like diffusers fusing the LoRA itself
    loaded = StableDiffusionPipeline.from_single_file(str(out), config=str(folder), local_files_only=True,
                                                      safety_checker=None, requires_safety_checker=False)
    expected, _ = load_base(folder)
    base_image = render(expected)
    expected.load_lora_weights(str(lora), adapter_name="style")
    expected.set_adapters(["style"], [WEIGHT])
    expected.fuse_lora()
    baked_image, fused_image = render(loaded), render(expected)
    assert np.abs(fused_image - base_image).max() > 1e-3  # the LoRA moves pixels at all
    assert np.abs(baked_image - fused_image).max() < 1e-4

    with safe_open(str(out), framework="pt") as fh:
        meta = fh.metadata()
        dtypes = {fh.get_slice(k).get_dtype() for k in fh.keys()}
    assert dtypes == {"F32"}  # the tiny folder stores fp32
    assert meta["modelspec.architecture"] == "stable-diffusion-v1" and meta["modelspec.title"] == "baked"
    assert meta["modelspec.merged_from"] == "style@1.0.0" and meta["modelspec.hash_sha256"].startswith("0x")

    cat = Catalog(home)
    version = cat.resolve("baked")
    assert cat.get_adapter("baked").kind == "checkpoint" and version.sha256 == result["sha256"]
    assert [(e.relation, e.parent) for e in cat.lineage("baked@1.0.0")] == [("merged_from", "style@1.0.0")]
    recipe = version_recipe(cat, "baked@1.0.0")
    assert json.loads(meta["loradex.recipe"]) == recipe
    assert recipe["output"] == {"format": "single-file", "dtype": "keep", "name": "baked"}
    replay = replay_version(cat, "baked@1.0.0")  # a fresh load, fuse and write: the same bytes
    assert replay["match"] and replay["replayed_sha256"] == result["sha256"]


def test_single_file_to_diffusers_folder_undoes_with_the_negated_weight(tmp_path, tiny, home):
    from loradex.merge.bake import bake
    from loradex.trainer.base_loader import load_base

    folder, _ = tiny
    cat = Catalog(home)
    single = tmp_path / "baked.safetensors"
    bake(cat, str(folder), [("style", WEIGHT)], single, format="single-file")
    with pytest.raises(UsageError, match="stores single files"):
        bake(cat, str(single), [("style", -WEIGHT)], tmp_path / "refused", format="diffusers", name="x",
             config=str(folder))
    with pytest.raises(UsageError, match="add --config FOLDER"):  # configs, tokenizer, scheduler
        bake(cat, str(single), [("style", -WEIGHT)], tmp_path / "refused", format="diffusers")
    assert not (tmp_path / "refused").exists()

    back = tmp_path / "back"
    result = bake(cat, str(single), [("style", -WEIGHT)], back, format="diffusers", config=str(folder))
    assert result["format"] == "diffusers" and (back / "model_index.json").is_file()
    for rel in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        base, undone = load_file(str(folder / rel)), load_file(str(back / rel))
        assert base.keys() == undone.keys(), rel
        moved = max(float((undone[k] - base[k]).abs().max()) for k in base)
        assert moved < 1e-5, rel  # + w·ΔW then − w·ΔW, in fp32
    pipe, _ = load_base(back)
    assert np.abs(render(pipe) - render(load_base(folder)[0])).max() < 1e-4


def test_sd2_base_to_single_file_is_refused_in_one_line(tmp_path, tiny, home):
    folder, _ = tiny
    sd2 = tmp_path / "sd2-like"
    shutil.copytree(folder, sd2)
    config = sd2 / "text_encoder" / "config.json"  # an OpenCLIP-H-wide text encoder: SD 2.x
    config.write_text(json.dumps({**json.loads(config.read_text()), "hidden_size": 1024}))
    out = tmp_path / "sd2.safetensors"
    proc = run_loradex("bake", str(sd2), "style", "-o", str(out), "--format", "single-file", home=home)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(sd2) in lines[0] and "written for sd1 and sdxl only, and this base is sd2" in lines[0]
    assert not out.exists()
