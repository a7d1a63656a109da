"""Stacking LyCORIS (LoHa, LoKr) at inference: the file becomes a LoRA of the rank that keeps each
module's ΔW within the tolerance (exact here), the error is reported, and rendering equals a base
whose Linear weights got the closed-form ΔW added by hand; the record names the exact version."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from _stack_fixtures import kohya_linears, kohya_modules
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.store import Catalog
from loradex.trainer.generate import GenerateSettings, Generator
from loradex.trainer.stacking import LYCORIS_STACK_TOLERANCE, AdapterStack, StackEntry
from loradex.trainer.tiny_pipeline import build_tiny_sd1_pipeline


def _pixels(pipe, prompt="the cat"):
    return pipe(prompt, num_inference_steps=2, height=32, width=32, guidance_scale=5.0,
                generator=torch.Generator("cpu").manual_seed(0), output_type="np").images[0]


def _write_loha(path, modules, *, rank=2, alpha=1.0, seed=7):
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, (fan_in, fan_out) in sorted(modules.items()):
        sd[f"{name}.hada_w1_a"] = torch.randn(fan_out, rank, generator=gen) * 0.5
        sd[f"{name}.hada_w1_b"] = torch.randn(rank, fan_in, generator=gen) * 0.5
        sd[f"{name}.hada_w2_a"] = torch.randn(fan_out, rank, generator=gen) * 0.5
        sd[f"{name}.hada_w2_b"] = torch.randn(rank, fan_in, generator=gen) * 0.5
        sd[f"{name}.alpha"] = torch.tensor(float(alpha))
    save_file(sd, str(path), metadata={"ss_network_module": "lycoris.kohya",
                                       "ss_network_args": '{"algo": "loha"}'})
    return path


def _write_lokr(path, modules, *, rank=2, alpha=1.0, seed=8):
    """w1 full [4, 4] (or [4, 2]), w2 factored rank ``rank``: ΔW = kron(w1, w2a@w2b)·α/r."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, (fan_in, fan_out) in sorted(modules.items()):
        o1, i1 = 4, 4 if fan_in % 4 == 0 else 2
        sd[f"{name}.lokr_w1"] = torch.randn(o1, i1, generator=gen) * 0.5
        sd[f"{name}.lokr_w2_a"] = torch.randn(fan_out // o1, rank, generator=gen) * 0.3
        sd[f"{name}.lokr_w2_b"] = torch.randn(rank, fan_in // i1, generator=gen) * 0.3
        sd[f"{name}.alpha"] = torch.tensor(float(alpha))
    save_file(sd, str(path), metadata={"ss_network_module": "lycoris.kohya",
                                       "ss_network_args": '{"algo": "lokr"}'})
    return path


def _closed_form_delta(t: dict, name: str) -> torch.Tensor:
    alpha = float(t[f"{name}.alpha"])
    if f"{name}.hada_w1_a" in t:
        r = t[f"{name}.hada_w1_b"].shape[0]
        return (t[f"{name}.hada_w1_a"] @ t[f"{name}.hada_w1_b"]) * (t[f"{name}.hada_w2_a"] @ t[f"{name}.hada_w2_b"]) \
            * (alpha / r)
    r = t[f"{name}.lokr_w2_b"].shape[0]
    return torch.kron(t[f"{name}.lokr_w1"], t[f"{name}.lokr_w2_a"] @ t[f"{name}.lokr_w2_b"]) * (alpha / r)


def _baked_by_hand(files_weights):
    """Known answer: a fresh tiny pipeline whose Linear weights get Σ w·ΔW added."""
    pipe = build_tiny_sd1_pipeline(seed=0)
    linears = kohya_linears(pipe)
    with torch.no_grad():
        for path, weight in files_weights:
            t = load_file(str(path))
            for module in {k.split(".", 1)[0] for k in t}:
                linears[module].weight += weight * _closed_form_delta(t, module)
    return _pixels(pipe)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lycoris")
    mods = kohya_modules(build_tiny_sd1_pipeline(seed=0))
    return {"loha": _write_loha(d / "loha.safetensors", mods), "lokr": _write_lokr(d / "lokr.safetensors", mods),
            "base": _pixels(build_tiny_sd1_pipeline(seed=0)), "modules": len(mods)}


def test_stacked_loha_and_lokr_render_like_their_closed_form_delta(files, tmp_path):
    pipe = build_tiny_sd1_pipeline(seed=0)
    stack = AdapterStack(pipe, cache_dir=tmp_path / "cache")
    loha, lokr = stack.apply([StackEntry("loha", files["loha"], 0.7, 0.7), StackEntry("lokr", files["lokr"], -0.4, -0.4)])
    for loaded, kind in ((loha, "loha"), (lokr, "lokr")):
        assert loaded.coverage.dropped == [] and loaded.coverage.file_modules == files["modules"]
        assert loaded.conversion["from"] == "lycoris" and loaded.conversion["kinds"] == [kind]
        assert loaded.conversion["max_relative_error"] <= LYCORIS_STACK_TOLERANCE
    # LoHa rank 2 ⊙ rank 2 → rank ≤ 4; LoKr kron(full 4×4, rank 2) → rank ≤ 8
    assert max(loha.conversion["ranks"]) <= 4 and max(lokr.conversion["ranks"]) <= 8
    stacked = _pixels(pipe)
    assert np.abs(stacked - files["base"]).max() > 1e-2
    np.testing.assert_allclose(stacked, _baked_by_hand([(files["loha"], 0.7), (files["lokr"], -0.4)]), atol=1e-4)

    # a weight change is set_adapters only (no reload, no reconversion) and still exact
    stack.set_weights({"loha": (1.0, 1.0), "lokr": (0.0, 0.0)})
    assert stack.load_calls == 2
    np.testing.assert_allclose(_pixels(pipe), _baked_by_hand([(files["loha"], 1.0)]), atol=1e-4)

    # the converted copy is cached by file identity, report included
    again = AdapterStack(build_tiny_sd1_pipeline(seed=0), cache_dir=tmp_path / "cache")
    (cached,) = again.apply([StackEntry("loha", files["loha"], 0.7, 0.7)])
    assert cached.loaded_path == loha.loaded_path and cached.conversion == loha.conversion


def test_generate_with_a_loha_records_the_version_and_the_conversion(files, tmp_path):
    catalog = Catalog(tmp_path / "home")
    version = add_file(catalog, files["loha"], name="texture", base="sd1").version
    gen = Generator(catalog, "tiny-sd1:seed=0")
    result = gen.generate("the cat <lora:texture:0.7>",
                          GenerateSettings(seed=0, steps=2, cfg=5.0, width=32, height=32))
    (entry,) = result.record.record["stack"]
    assert entry["ref"] == version.ref == "texture@1.0.0" and entry["sha256"] == version.sha256
    assert entry["conversion"]["kinds"] == ["loha"]
    assert entry["conversion"]["max_relative_error"] <= LYCORIS_STACK_TOLERANCE
    img = np.asarray(result.image, dtype=np.float32) / 255
    np.testing.assert_allclose(img, _baked_by_hand([(files["loha"], 0.7)]), atol=1 / 255 + 1e-6)
