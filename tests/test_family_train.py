"""train lora on the tiny Flux.1 and SD 3.5 pipelines (flow matching on the transformer): a catalog
version of the family with finite losses, kohya/ModelSpec metadata naming the family, lineage to
the base, a file diffusers' own loader takes whole and whose adapter moves the output, sample
records that re-render bit-identically, a resume that continues bit-identically; one-line
refusals for what is not implemented."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from _train_fixtures import make_dataset
from loradex.cli.app import app
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import UsageError

FAMILIES = ("flux", "sd3")
EXPECTED = {"flux": ("flux1", "flux-1-dev/lora"), "sd3": ("sd3", "stable-diffusion-3/lora")}
STEPS = 2


def train_config(family: str, data, out, **kw):
    from loradex.trainer.train_config import resolve_config

    values = dict(base=f"tiny-{family}", data=str(data), output_dir=str(out), resolution=32, batch_size=2,
                  steps=STEPS, sample_steps=2, lr=1e-2, seed=3, save_every=1,
                  sample_prompts=["sks, red square"], name=f"{family}-style")
    values.update(kw)
    return resolve_config("lora", overrides=values)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("family-train") / "shapes", n=4, size=32)


@pytest.fixture(scope="module", params=FAMILIES)
def trained(request, data, tmp_path_factory):
    """(family, home, TrainResult, [AddResult]) of one registered run."""
    from loradex.trainer.registration import train_and_register

    family = request.param
    root = tmp_path_factory.mktemp(f"train-{family}")
    home = root / "home"
    result, added = train_and_register(train_config(family, data, root / "out"), catalog=Catalog(home))
    return family, home, result, added


def render(pipe) -> np.ndarray:  # the pipelines' defaults: T5 max_sequence_length etc.
    gen = torch.Generator("cpu").manual_seed(0)
    return pipe("sks, red square", num_inference_steps=2, height=32, width=32, generator=gen, output_type="np",
                guidance_scale=3.5).images[0]


def test_trained_version_evidence_and_loading(trained):
    from loradex.trainer.base_loader import load_base, tiny_hash

    family, home, result, added = trained
    assert len(result.losses) == STEPS and all(math.isfinite(x) for x in result.losses)
    assert math.isfinite(result.eval_loss_before) and math.isfinite(result.eval_loss_after)
    assert result.prediction_type == "flow_matching"

    catalog = Catalog(home)
    version = added[-1].version
    assert version.version == "1.0.0" and catalog.get_adapter(f"{family}-style").base == family
    assert version.probe["kind"] == "lora" and version.probe["base"] == family
    (edge,) = [e for e in catalog.lineage(version.ref) if e.relation == "trained_from"]
    assert edge.parent == f"base:tiny-{family}@{tiny_hash(family, 0)}"
    assert edge.recipe["prediction_type"] == "flow_matching" and edge.recipe["loss"]["steps"] == STEPS

    # diffusers keys (the default for a DiT family) and the kohya / ModelSpec facts naming the family
    with safe_open(str(result.output.path), "pt") as fh:
        keys, meta = list(fh.keys()), fh.metadata()
    assert keys and all(k.startswith("transformer.") for k in keys)
    kohya_version, architecture = EXPECTED[family]
    assert meta["ss_base_model_version"] == kohya_version and meta["modelspec.architecture"] == architecture
    assert "modelspec.prediction_type" not in meta  # ModelSpec has no word for flow matching
    assert meta["ss_steps"] == str(STEPS) and meta["ss_new_sd_model_hash"] == tiny_hash(family, 0)
    assert meta["ss_weighting_scheme"] == "logit_normal" and meta["ss_model_prediction_type"] == "raw"

    # diffusers' own loader takes every module, and the adapter moves the output
    pipe, _ = load_base(f"tiny-{family}")
    before = render(pipe)
    pipe.load_lora_weights(str(result.output.path), adapter_name="trained")
    wrapped = {n for n, m in pipe.transformer.named_modules() if hasattr(m, "lora_A") and "trained" in m.lora_A}
    assert wrapped == {k.removeprefix("transformer.").removesuffix(".lora_A.weight")
                       for k in keys if k.endswith(".lora_A.weight")}
    assert np.abs(render(pipe) - before).max() > 1e-4


def test_sample_record_re_renders_bit_identically(trained):
    from loradex.registry.catalog.records import list_records

    family, home, result, added = trained
    version = added[-1].version
    records = list_records(Catalog(home), version.ref)
    assert [r.record["prompt"] for r in records] == ["sks, red square"]
    (record,) = records
    assert record.record["source"] == "train-sample" and record.record["base"]["family"] == family
    assert version.extra["training"]["sample_records"] == [record.id]
    settings = record.record["family_settings"]  # rendered as generate renders the family
    assert settings["guidance"] == {"flux": "distilled", "sd3": "classifier-free"}[family]
    assert settings["max_sequence_length"] == {"flux": 512, "sd3": 256}[family]
    res = CliRunner().invoke(app, ["render", record.id, "--check", "--json", "--home", str(home)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["identical"] is True


@pytest.mark.parametrize("trained", ["flux"], indirect=True)  # resume is family-agnostic; Flux's fused kohya names
def test_resume_continues_bit_identically_and_exports_kohya(trained, data, tmp_path):
    """Resumed from step 1 (written as kohya this time: the format only changes the export), step 2
    repeats the uninterrupted run's loss and weights exactly, and the kohya file (native fused qkv /
    linear1 names) holds the same ΔW per module as the diffusers-keyed one. (diffusers' kohya-Flux
    reader splits linear1 at Flux.1's real widths, so it cannot read a tiny model's file.)"""
    from loradex.merge.conventions.adapter_io import open_adapter
    from loradex.merge.math.lora_module import delta_weight
    from loradex.trainer.train_loop import train

    family, _, result, _ = trained
    checkpoint = result.checkpoints[0]["path"]
    resumed = train(train_config(family, data, tmp_path / "resumed", resume=checkpoint, register=False,
                                 format="kohya", sample_prompts=[]))
    assert resumed.losses == result.losses  # step 1 from the checkpoint, step 2 recomputed
    keys = load_file(str(resumed.output.path)).keys()
    assert any(k.startswith("lora_unet_double_blocks_0_img_attn_qkv.") for k in keys)
    assert any(k.startswith("lora_unet_single_blocks_0_linear1.") for k in keys)
    trained_split = open_adapter(result.output.path, base=family)
    fused = open_adapter(resumed.output.path, base=family)
    assert set(trained_split.names()) <= set(fused.names())
    for name in fused.names():
        delta = delta_weight(fused.load(name))
        if name in trained_split:
            assert torch.equal(delta, delta_weight(trained_split.load(name))) or \
                torch.allclose(delta, delta_weight(trained_split.load(name)), atol=1e-7, rtol=0), name
        else:  # a projection of a fused module that did not train (e.g. proj_mlp): zero rows
            assert not delta.any(), name


def test_what_is_not_implemented_is_refused_in_one_line(data, tmp_path):
    from loradex.families import FamilyNotSupported
    from loradex.trainer.train_config import resolve_config
    from loradex.trainer.train_loop import train

    with pytest.raises(UsageError, match=r"^ti on a flux base \(transformer\) is not implemented; "
                                         r"dreambooth-lora and lora are$"):
        train(resolve_config("ti", overrides=dict(base="tiny-flux", data=str(data), output_dir=str(tmp_path / "ti"),
                                                  resolution=32, steps=1, token="<sks>", register=False)))
    with pytest.raises(UsageError, match="--snr-gamma is not available: Min-SNR weighting"):
        train(train_config("sd3", data, tmp_path / "snr", snr_gamma=5.0, register=False))
    # a real Flux.1 / SD 3.5 VAE downsamples by 8, then 2×2 patches: images in steps of 16
    from types import SimpleNamespace

    from loradex.families import get_family
    from loradex.trainer.train_objectives import FamilyObjective, refuse_unsupported_settings

    real_like = SimpleNamespace(vae_scale_factor=8, transformer=SimpleNamespace(config=SimpleNamespace(patch_size=2)))
    for family in FAMILIES:
        objective = FamilyObjective(get_family(family).aspect("training"))
        assert objective.size_multiple(real_like) == 16
        with pytest.raises(UsageError, match="--resolution 40 is not a multiple of 16"):
            refuse_unsupported_settings(train_config(family, data, tmp_path / "res", resolution=40), family,
                                        objective, real_like)
        refuse_unsupported_settings(train_config(family, data, tmp_path / "res", resolution=48), family,
                                    objective, real_like)
    with pytest.raises(FamilyNotSupported, match="^training for wan-14b is not supported yet"):
        train(train_config("wan-14b", data, tmp_path / "wan", register=False))


def test_flow_matching_objective_in_closed_form():
    """x_σ runs from x0 (σ=0) to ε (σ=1) with velocity ε − x0 (the target); σ is drawn from the
    scheduler's own table: a static shift s maps the unshifted draw σ to s·σ / (1 + (s − 1)·σ)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from loradex.families import flow_matching as fm

    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 2, 2, generator=gen, dtype=torch.float64), torch.randn(3, 4, 2, 2, generator=gen,
                                                                                         dtype=torch.float64)
    assert torch.equal(fm.noisy_latents(x0, noise, torch.zeros(3)), x0)
    assert torch.equal(fm.noisy_latents(x0, noise, torch.ones(3)), noise)
    sigma, h = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64), 1e-6
    slope = (fm.noisy_latents(x0, noise, sigma + h) - fm.noisy_latents(x0, noise, sigma)) / h
    assert torch.allclose(slope, fm.velocity_target(x0, noise), atol=1e-6)

    plain = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True).config
    shifted = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0).config  # SD 3.5's
    s0, t0 = fm.noise_levels(plain, 64, torch.Generator().manual_seed(5))
    s1, t1 = fm.noise_levels(shifted, 64, torch.Generator().manual_seed(5))  # the same draws
    assert torch.allclose(s1, 3 * s0 / (1 + 2 * s0), atol=1e-6) and torch.allclose(t1, s1 * 1000, atol=1e-3)
    assert bool(((s0 > 0) & (s0 <= 1)).all()) and 0.35 < float(s0.mean()) < 0.65  # logit-normal: centred on 1/2
