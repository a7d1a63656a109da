"""DreamBooth outputs usable everywhere: the registered file is the whole model in the original
single-file layout (what A1111, ComfyUI and diffusers' ``from_single_file`` read), and the catalog
version works as ``--base`` of generate and as ``--tuned`` of extract.

The layout writer is checked against diffusers' own single-file loader on tiny pipelines (their
block counts differ from real SD, so the ``input_blocks.N`` numbering must come from the config)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from _train_fixtures import make_dataset

torch = pytest.importorskip("torch")

PROMPT = "a photo of sks shape, red square"
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cli(*args, home):
    from loradex.cli.app import app

    argv = [str(a) for a in args] + ["--home", str(home)]
    result = runner.invoke(app, argv, catch_exceptions=True)
    assert result.exit_code == 0, f"loradex {' '.join(argv)}: {result.output} {result.exception!r}"
    return result


def render_np(pipe, prompt=PROMPT):
    gen = torch.Generator("cpu").manual_seed(0)
    return pipe(prompt, num_inference_steps=2, height=32, width=32, generator=gen, output_type="np").images[0]


def same_weights(a, b) -> list[str]:
    """Names of ``a``'s weights that ``b`` lacks or holds differently (1×1 conv ≡ linear)."""
    sa, sb = a.state_dict(), b.state_dict()
    return [k for k in sa if k not in sb or not torch.equal(sa[k], sb[k].reshape(sa[k].shape))]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    from loradex.trainer.tiny_pipeline import save_tiny_pipeline

    return save_tiny_pipeline("sd1", tmp_path_factory.mktemp("tiny") / "tiny-sd1")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_folder):
    """DreamBooth (UNet + text encoder), 2 steps on the tiny folder, registered as ``db@1.0.0``."""
    from loradex.registry.catalog.store import Catalog
    from loradex.trainer.registration import train_and_register
    from loradex.trainer.train_config import resolve_config

    root = tmp_path_factory.mktemp("db")
    data = make_dataset(root / "data")
    home = root / "home"
    cfg = resolve_config("dreambooth", overrides=dict(
        base=str(tiny_folder), data=str(data), output_dir=str(root / "out"), resolution=32, batch_size=2,
        steps=2, sample_steps=2, lr=1e-2, instance_prompt="a photo of sks shape", train_text_encoder=True,
        name="db", format="diffusers"))
    result, added = train_and_register(cfg, catalog=Catalog(home))
    return home, result, added[-1].version


# --- the layout writer against diffusers' single-file loader -----------------------------------------

def test_tiny_sd1_in_ldm_layout_loads_with_from_single_file(tmp_path, tiny_folder):
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    from loradex.merge.conventions.checkpoint_layout import ldm_to_components, pipeline_to_ldm
    from loradex.trainer.base_loader import load_base

    pipe, _ = load_base(tiny_folder)
    state = pipeline_to_ldm(pipe, "sd1")
    prefixes = {k.split(".")[0] for k in state}
    assert prefixes == {"model", "first_stage_model", "cond_stage_model"}
    # layers_per_block 1: the downsampler of down block 0 is input_blocks.2, not real SD's input_blocks.3
    assert "model.diffusion_model.input_blocks.2.0.op.weight" in state
    path = tmp_path / "tiny.safetensors"
    save_file(state, str(path))
    loaded = StableDiffusionPipeline.from_single_file(str(path), config=str(tiny_folder), local_files_only=True,
                                                      safety_checker=None, requires_safety_checker=False)
    loaded.set_progress_bar_config(disable=True)
    for component in ("unet", "vae", "text_encoder"):
        assert same_weights(getattr(pipe, component), getattr(loaded, component)) == [], component
    assert np.array_equal(render_np(pipe), render_np(loaded))
    # and back: every weight returns to its own name
    for component, sd in ldm_to_components(state, pipe).items():
        own = getattr(pipe, component).state_dict()
        assert sd.keys() == own.keys() and all(torch.equal(own[k], sd[k]) for k in own), component


def test_tiny_sdxl_in_sgm_layout(tmp_path):
    """UNet, VAE and CLIP-L through ``from_single_file``; the OpenCLIP-G encoder through diffusers'
    own converter (its loader tells the two encoders apart by width, which the tiny ones share)."""
    from diffusers import StableDiffusionXLPipeline
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from safetensors.torch import save_file

    from loradex.merge.conventions.checkpoint_layout import ldm_family, ldm_to_components, pipeline_to_ldm
    from loradex.trainer.tiny_pipeline import save_tiny_pipeline

    folder = save_tiny_pipeline("sdxl", tmp_path / "tiny-sdxl")
    pipe = StableDiffusionXLPipeline.from_pretrained(str(folder))
    state = pipeline_to_ldm(pipe, "sdxl")
    assert ldm_family(state) == "sdxl"
    path = tmp_path / "tiny-sdxl.safetensors"
    save_file(state, str(path))
    loaded = StableDiffusionXLPipeline.from_single_file(str(path), config=str(folder), local_files_only=True)
    for component in ("unet", "vae", "text_encoder"):
        assert same_weights(getattr(pipe, component), getattr(loaded, component)) == [], component
    te2 = convert_open_clip_checkpoint(pipe.text_encoder_2, state, prefix="conditioner.embedders.1.model.")
    own = pipe.text_encoder_2.state_dict()
    assert te2.keys() == {k for k in own if not k.endswith("position_ids")}
    assert all(torch.equal(own[k], te2[k]) for k in te2)
    for component, sd in ldm_to_components(state, pipe).items():
        own = getattr(pipe, component).state_dict()
        assert all(torch.equal(own[k], sd[k]) for k in sd) and set(own) - set(sd) <= {
            k for k in own if k.endswith("position_ids")}, component


# --- DreamBooth outputs ----------------------------------------------------------------------------

def test_dreambooth_registers_an_original_layout_checkpoint(trained, tiny_folder):
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    from loradex.registry.catalog.store import Catalog
    from loradex.trainer.base_loader import load_any_base, load_base

    home, result, version = trained
    catalog = Catalog(home)
    assert version.probe["kind"] == "checkpoint" and version.probe["format"] == "checkpoint"
    assert catalog.get_adapter(version.adapter).base == "sd1"
    assert result.output.extra_paths and (result.output.extra_paths[0] / "model_index.json").is_file()
    blob = catalog.blobs.path_for(version.sha256)
    with safe_open(str(blob), framework="pt") as fh:
        assert {k.split(".")[0] for k in fh.keys()} == {"model", "first_stage_model", "cond_stage_model"}
        assert fh.metadata()["loradex.layout"] == "ldm"

    tuned, info, ref = load_any_base(version.ref, catalog)
    assert (ref, info.hash, info.family) == (version.ref, version.sha256, "sd1")
    base, _ = load_base(tiny_folder)
    assert same_weights(base.unet, tuned.unet) != []  # trained: not the base any more
    assert same_weights(base.text_encoder, tuned.text_encoder) != []  # the text encoder trained too
    # what A1111-style loaders see: the stored file alone, through diffusers' single-file reader
    link = Path(str(blob) + ".safetensors")
    link.symlink_to(blob)
    try:
        single = StableDiffusionPipeline.from_single_file(str(link), config=str(tiny_folder), local_files_only=True,
                                                          safety_checker=None, requires_safety_checker=False)
    finally:
        link.unlink()
    single.set_progress_bar_config(disable=True)
    for component in ("unet", "vae", "text_encoder"):
        assert same_weights(getattr(tuned, component), getattr(single, component)) == [], component
    assert np.array_equal(render_np(tuned), render_np(single))
    # the diffusers folder written beside it is the same model
    folder = StableDiffusionPipeline.from_pretrained(str(result.output.extra_paths[0]), safety_checker=None,
                                                     requires_safety_checker=False)
    assert same_weights(tuned.unet, folder.unet) == []


def test_generate_with_a_dreambooth_version_as_base(trained, tmp_path):
    from PIL import Image

    from loradex.registry.catalog.store import Catalog
    from loradex.trainer.base_loader import load_any_base
    from loradex.trainer.render import render

    home, _, version = trained
    out = tmp_path / "db.png"
    result = cli("generate", PROMPT, "--base", version.ref, "--size", "32x32", "--steps", "2", "-o", out, "--json",
                 home=home)
    record = json.loads(result.stdout)["record"]
    assert record["base"] == {"ref": version.ref, "family": "sd1", "sha256": version.sha256}
    pipe, _, _ = load_any_base(version.ref, Catalog(home))
    expected = render(pipe, PROMPT, seed=0, steps=2, cfg=7.0, width=32, height=32)
    assert np.array_equal(np.asarray(Image.open(out).convert("RGB")), np.asarray(expected.convert("RGB")))


def test_extract_from_a_dreambooth_version_is_the_truncated_svd(trained, tiny_folder):
    from safetensors.torch import load_file

    from loradex.registry.catalog.store import Catalog
    from loradex.trainer.base_loader import load_any_base, load_base

    home, _, version = trained
    rank = 2
    cli("extract", "--base", tiny_folder, "--tuned", version.ref, "--rank", rank, "--name", "db-lora",
        "--min-diff", "0", "--dtype", "fp32", home=home)
    catalog = Catalog(home)
    extracted = catalog.resolve("db-lora")
    lora = load_file(str(catalog.blobs.path_for(extracted.sha256)))
    tuned, _, _ = load_any_base(version.ref, catalog)
    base, _ = load_base(tiny_folder)
    modules = {
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q": "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
        "lora_unet_up_blocks_0_attentions_1_proj_out": "up_blocks.0.attentions.1.proj_out",
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_2": "mid_block.attentions.0.transformer_blocks.0.ff.net.2",
    }
    for kohya, path in modules.items():
        w_tuned = tuned.unet.get_submodule(path).weight.detach().double()
        w_base = base.unet.get_submodule(path).weight.detach().double()
        u, s, vh = torch.linalg.svd((w_tuned - w_base).reshape(w_tuned.shape[0], -1), full_matrices=False)
        direct = (u[:, :rank] * s[:rank]) @ vh[:rank]
        up, down = lora[f"{kohya}.lora_up.weight"].double(), lora[f"{kohya}.lora_down.weight"].double()
        scale = float(lora[f"{kohya}.alpha"]) / down.shape[0]
        got = scale * up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)
        assert down.shape[0] == rank
        assert torch.allclose(got, direct, rtol=0, atol=1e-5 * float(direct.abs().max())), kohya
    assert sum(k.endswith(".lora_down.weight") and k.startswith("lora_te_") for k in lora) > 0


def test_older_diffusers_keyed_dreambooth_files_still_load(tmp_path, tiny_folder):
    """A DreamBooth file from before the original layout (UNet keys bare): generate's loader and
    extract's reader still take it."""
    from safetensors.torch import save_file

    from loradex.merge.model_weights import open_model
    from loradex.registry.catalog.adding import add_file
    from loradex.registry.catalog.store import Catalog
    from loradex.trainer.base_loader import load_any_base, load_base

    pipe, info = load_base(tiny_folder)
    module = pipe.unet.get_submodule("down_blocks.1.attentions.0.proj_in")
    with torch.no_grad():
        module.weight.add_(0.5)
    path = tmp_path / "old.safetensors"
    save_file({k: v.contiguous() for k, v in pipe.unet.state_dict().items()}, str(path))
    catalog = Catalog(tmp_path / "home")
    training = {"method": "dreambooth", "weights": "state_dict", "base": {**info.to_dict(), "family": "sd1"}}
    version = add_file(catalog, path, name="old-db", version="1.0.0", kind="checkpoint", base="sd1",
                       extra={"training": training}).version
    assert version.probe["format"] == "diffusers-unet"
    loaded, _, _ = load_any_base(version.ref, catalog)
    assert same_weights(pipe.unet, loaded.unet) == []
    weights = open_model(version.ref, catalog)
    name = "lora_unet_down_blocks_1_attentions_0_proj_in"
    assert weights.family == "sd1" and torch.equal(weights.tensor(name), module.weight.detach())
