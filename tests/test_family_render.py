"""Flux.1 and SD3 end to end on their tiny pipelines: stacking diffusers-convention LoRAs (written
by peft on the tiny transformer / CLIP) against a hand-fused known answer, generate records with the
family's own fields, render --check bit-identical, save/reload, and the one-line refusal for a
family loradex only recognises."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from loradex.cli.app import app
from loradex.registry.catalog.records import get_record
from loradex.registry.catalog.store import Catalog
from loradex.schemas import validate
from loradex.trainer.stacking import AdapterStack, StackEntry
from loradex.trainer.tiny_pipeline import build_tiny_pipeline, save_tiny_pipeline

FAMILIES = ("flux", "sd3")
TRANSFORMER_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
CLIP_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
runner = CliRunner()


def _pixels(pipe, prompt="a red cat"):
    return pipe(prompt, num_inference_steps=2, guidance_scale=4.0, height=16, width=16,
                max_sequence_length=16, generator=torch.Generator("cpu").manual_seed(0),
                output_type="np").images[0]


def _random_lora(model, targets, seed, rank=2):
    """The state dict (peft names) of a peft LoRA with random A and B, alpha = rank (scale 1),
    injected into a copy of ``model``."""
    import copy

    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    model = inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets),
                                    copy.deepcopy(model), adapter_name="tmp")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_A." in name or ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    return {k: v.clone() for k, v in get_peft_model_state_dict(model, adapter_name="tmp").items()}


def _fuse_by_hand(pipe, component, state, weight):
    """Known answer: W += weight · B @ A on each module the LoRA names."""
    model = getattr(pipe, component)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for key, a in state.items():
            if key.endswith(".lora_A.weight"):
                path = key[: -len(".lora_A.weight")]
                b = state[path + ".lora_B.weight"]
                modules[path].weight += weight * (b @ a)


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    """Per family: files ``t1``, ``t2`` (transformer only) and ``both`` (t1's transformer part +
    a CLIP text-encoder part), in the diffusers convention diffusers' own save_lora_weights writes."""
    folder = tmp_path_factory.mktemp("family-loras")
    out = {}
    for family in FAMILIES:
        pipe = build_tiny_pipeline(family)
        t1 = _random_lora(pipe.transformer, TRANSFORMER_TARGETS, seed=1)
        t2 = _random_lora(pipe.transformer, TRANSFORMER_TARGETS, seed=2)
        te = _random_lora(pipe.text_encoder, CLIP_TARGETS, seed=3)
        save = type(pipe).save_lora_weights
        files = {}
        for tag, layers in (("t1", {"transformer_lora_layers": t1}), ("t2", {"transformer_lora_layers": t2}),
                            ("both", {"transformer_lora_layers": t1, "text_encoder_lora_layers": te})):
            save(str(folder), weight_name=f"{family}-{tag}.safetensors", **layers)
            files[tag] = folder / f"{family}-{tag}.safetensors"
        out[family] = {"files": files, "t1": t1, "t2": t2, "te": te, "base": _pixels(pipe)}
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_stack_matches_hand_fused_weights(family, loras, tmp_path):
    data = loras[family]
    pipe = build_tiny_pipeline(family)
    stack = AdapterStack(pipe, cache_dir=tmp_path)
    loaded = stack.apply([StackEntry("t1", data["files"]["t1"], 1.0, 0.7),
                          StackEntry("t2", data["files"]["t2"], 1.0, -0.4)])
    assert [a.components for a in loaded] == [("transformer",), ("transformer",)]
    assert all(a.coverage.dropped == [] and a.coverage.file_modules == a.coverage.injected_modules
               for a in loaded)
    stacked = _pixels(pipe)
    reference = build_tiny_pipeline(family)
    _fuse_by_hand(reference, "transformer", data["t1"], 0.7)
    _fuse_by_hand(reference, "transformer", data["t2"], -0.4)
    expected = _pixels(reference)
    assert np.abs(expected - data["base"]).max() > 1e-2  # the LoRAs move pixels
    np.testing.assert_allclose(stacked, expected, atol=1e-4)
    # weight 0 is the base, exactly; only set_adapters ran, nothing was reloaded
    calls = stack.load_calls
    stack.apply([StackEntry("t1", data["files"]["t1"], 1.0, 0.0)])
    np.testing.assert_array_equal(_pixels(pipe), data["base"])
    assert stack.load_calls == calls


@pytest.mark.parametrize("family", FAMILIES)
def test_kohya_and_comfyui_files_stack_like_the_diffusers_file(family, loras, tmp_path):
    """The same LoRA written in kohya's and ComfyUI's conventions (fused qkv / linear1 for Flux,
    joint_blocks for SD3) is converted before diffusers reads it, every module lands, and the
    pixels are those of the diffusers file."""
    from loradex.merge.conventions.convert import convert_file

    source = loras[family]["files"]["t1"]
    pipe = build_tiny_pipeline(family)
    stack = AdapterStack(pipe, cache_dir=tmp_path / "cache")
    stack.apply([StackEntry("diffusers", source, 1.0, 0.9)])
    expected = _pixels(pipe)
    for convention in ("kohya", "comfyui"):
        converted = convert_file(source, tmp_path / f"{convention}.safetensors", to=convention, base=family)
        assert converted.files
        (adapter,) = stack.apply([StackEntry(convention, tmp_path / f"{convention}.safetensors", 1.0, 0.9)])
        assert adapter.conversion["from"] == convention and adapter.coverage.dropped == []
        np.testing.assert_allclose(_pixels(pipe), expected, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_text_encoder_and_transformer_weights_apply_separately(family, loras, tmp_path):
    data = loras[family]
    pipe = build_tiny_pipeline(family)
    stack = AdapterStack(pipe, cache_dir=tmp_path)
    (both,) = stack.apply([StackEntry("both", data["files"]["both"], 0.0, 1.0)])
    assert set(both.components) == {"transformer", "text_encoder"} and both.coverage.dropped == []
    te_off = _pixels(pipe)
    stack.apply([StackEntry("both", data["files"]["both"], 0.5, 1.0)])
    te_half = _pixels(pipe)
    reference = build_tiny_pipeline(family)
    _fuse_by_hand(reference, "transformer", data["t1"], 1.0)
    np.testing.assert_allclose(te_off, _pixels(reference), atol=1e-4)  # te weight 0: no CLIP change
    _fuse_by_hand(reference, "text_encoder", data["te"], 0.5)
    np.testing.assert_allclose(te_half, _pixels(reference), atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_pipeline_reloads_to_identical_pixels(family, loras, tmp_path):
    from loradex.trainer.base_loader import load_base

    folder = save_tiny_pipeline(family, tmp_path / f"tiny-{family}", seed=0)
    pipe, info = load_base(folder)
    assert (info.family, info.source) == (family, "folder")
    np.testing.assert_array_equal(_pixels(pipe), loras[family]["base"])
    tokenizer = pipe.tokenizer_2 if family == "flux" else pipe.tokenizer_3
    fresh = build_tiny_pipeline(family)
    fresh_tok = fresh.tokenizer_2 if family == "flux" else fresh.tokenizer_3
    # seeded: the same seed gives bit-identical weights, another seed other weights
    same, other = build_tiny_pipeline(family, seed=0), build_tiny_pipeline(family, seed=1)
    for component in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        a, b, c = (getattr(p, component).state_dict() for p in (fresh, same, other))
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not all(torch.equal(a[k], c[k]) for k in a if a[k].numel() > 1)
    text = "ünïcode prompt, 猫 🐱"
    assert tokenizer(text).input_ids == fresh_tok(text).input_ids
    assert tokenizer(text).input_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.unk_token_id not in tokenizer(text).input_ids  # byte-level: nothing unknown


def _cli(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=True)


def _generate(*args):
    result = _cli("generate", *args, "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)["record"]


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_records_family_fields_and_rerenders_bit_identically(family, loras, tmp_path):
    files = loras[family]["files"]
    assert _cli("add", files["t1"], "--name", f"{family}-a").exit_code == 0
    assert _cli("add", files["t2"], "--name", f"{family}-b").exit_code == 0
    common = ["--base", f"tiny-{family}", "--size", "16x16", "--steps", "2", "--seed", "5",
              "--max-sequence-length", "16", "-o", tmp_path / "out.png"]
    plain = _generate("a red cat", *common)
    zero = _generate(f"a red cat <lora:{family}-a:0>", *common)
    one = _generate(f"a red cat <lora:{family}-a:0.8>", *common)
    two = _generate(f"a red cat <lora:{family}-a:0.8> <lora:{family}-b:0.5>", *common)
    assert zero["image_sha256"] == plain["image_sha256"]
    assert len({plain["image_sha256"], one["image_sha256"], two["image_sha256"]}) == 3
    for record in (plain, two):
        validate("prompt-record", record)
        assert record["base"]["family"] == family and record["steps"] == 2
    settings = two["family_settings"]
    if family == "flux":  # distilled guidance: Flux.1-dev's default 3.5, no shift to record
        assert settings == {"guidance": "distilled", "max_sequence_length": 16} and two["cfg"] == 3.5
    else:  # SD3: classifier-free guidance 7, the scheduler's own shift
        assert settings == {"guidance": "classifier-free", "max_sequence_length": 16, "shift": 3.0}
        assert two["cfg"] == 7.0 and two["scheduler"]["config"]["shift"] == 3.0
    assert [e["unet_weight"] for e in two["stack"]] == [0.8, 0.5]
    check = _cli("render", two["id"], "--check", "--json")
    assert check.exit_code == 0 and json.loads(check.stdout)["identical"] is True
    # the recorded family settings are what re-renders: another length gives other pixels
    catalog = Catalog()
    stored = get_record(catalog, two["id"]).record
    assert stored["family_settings"] == settings
    longer = _generate(f"a red cat <lora:{family}-a:0.8> <lora:{family}-b:0.5>",
                       *common[:-4], "--max-sequence-length", "24", "-o", tmp_path / "b.png")
    assert longer["image_sha256"] != two["image_sha256"]


def _refusal(*args):
    """(exit code, message) the console script gives for the error ``loradex ARGS`` raises."""
    from loradex.cli.main import describe_error

    result = _cli(*args)
    assert result.exception is not None, result.output
    return describe_error(result.exception)


def test_family_refusals_are_one_line(loras, tmp_path):
    flux = loras["flux"]["files"]
    render = ["--size", "16x16", "--steps", "1", "-o", tmp_path / "x.png"]
    # Flux.1's guidance is distilled: a negative prompt would be silently ignored, so it is refused
    code, line = _refusal("generate", "a cat", "--base", "tiny-flux", "--negative", "blurry", *render)
    assert code == 2 and line.startswith("flux renders take no negative prompt")
    code, line = _refusal("generate", "a cat", "--base", "tiny-flux", "--shift", "2", *render)
    assert code == 2 and line.startswith("flux renders take no shift (they take: max_sequence_length)")
    code, line = _refusal("generate", "a cat", "--base", "tiny-flux", "--max-sequence-length", "600", *render)
    assert code == 2 and line == "max_sequence_length must be at most 512 for flux, got 600"
    code, line = _refusal("generate", "a cat", "--base", "tiny-sd3", "--scheduler", "ddim", *render)
    assert code == 2 and line.startswith("scheduler 'ddim' is for noise-prediction models; sd3 is")
    # a family loradex only recognises: generate and stack say so in one line, exit 1
    assert _cli("add", flux["t2"], "--name", "wan-style", "--base", "wan-14b").exit_code == 0
    for args in (["a cat <lora:wan-style:1>", "--base", "tiny-flux"], ["a cat", "--base", "tiny-wan-14b"]):
        code, line = _refusal("generate", *args, *render)
        assert (code, "\n" in line) == (1, False)
        assert "for wan-14b is not supported yet; probe, catalog, search, push and pull are" in line


def test_textual_inversion_loads_on_flux_clip_and_is_refused_on_sd3(tmp_path):
    from safetensors.torch import save_file

    from loradex.registry.errors import IncompatibleAdapters

    save_file({"emb_params": torch.randn(1, 32, generator=torch.Generator().manual_seed(0))},
              str(tmp_path / "emb.safetensors"))
    entry = StackEntry("emb", tmp_path / "emb.safetensors", kind="embedding", token="<emb>")
    flux = build_tiny_pipeline("flux")
    before = len(flux.tokenizer)
    stack = AdapterStack(flux, cache_dir=tmp_path)
    (loaded,) = stack.apply([entry])
    assert loaded.tokens == ("<emb>",) and len(flux.tokenizer) == before + 1
    stack.clear()
    assert len(flux.tokenizer) == before
    with pytest.raises(IncompatibleAdapters, match="StableDiffusion3Pipeline base cannot load textual-inversion"):
        AdapterStack(build_tiny_pipeline("sd3"), cache_dir=tmp_path).apply([entry])
