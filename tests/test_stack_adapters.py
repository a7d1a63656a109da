"""AdapterStack on the tiny SD1 pipeline: weights by set_adapters, no reloads, coverage check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _stack_fixtures import kohya_linears, kohya_modules, write_kohya_lora
from loradex.registry.errors import CoverageError, UsageError
from loradex.trainer.stacking import AdapterStack, StackEntry, convert_for_diffusers
from loradex.trainer.tiny_pipeline import build_tiny_sd1_pipeline


def _pixels(pipe, prompt="the cat"):
    return pipe(prompt, num_inference_steps=2, height=32, width=32, guidance_scale=5.0,
                generator=torch.Generator("cpu").manual_seed(0), output_type="np").images[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("loras")
    probe = build_tiny_sd1_pipeline(seed=0)
    both = kohya_modules(probe)
    unet_only = {k: v for k, v in both.items() if k.startswith("lora_unet_")}
    te_only = {k: v for k, v in both.items() if k.startswith("lora_te_")}
    out = {
        "a": write_kohya_lora(d / "a.safetensors", both, rank=4, alpha=2, seed=1),
        "b": write_kohya_lora(d / "b.safetensors", both, rank=8, alpha=4, seed=2),
        # same random draws as "a" restricted to one component (sorted names: te draws differ,
        # so each restricted file is generated from "a"'s tensors instead)
    }
    from safetensors.torch import load_file, save_file

    sd_a = load_file(str(out["a"]))
    for tag, mods in (("a_unet", unet_only), ("a_te", te_only)):
        part = {k: v for k, v in sd_a.items() if k.rsplit(".", 2)[0] in mods or k.rsplit(".", 1)[0] in mods}
        save_file(part, str(d / f"{tag}.safetensors"))
        out[tag] = d / f"{tag}.safetensors"
    out["base"] = _pixels(probe)
    out["dir"] = d
    return out


def _fused_reference(files, weights):
    """Known answer: a fresh pipeline whose Linear weights get Σ w·(α/r)·up@down added."""
    from safetensors.torch import load_file

    pipe = build_tiny_sd1_pipeline(seed=0)
    linears = kohya_linears(pipe)
    with torch.no_grad():
        for key, w in weights.items():
            sd = load_file(str(files[key]))
            for k in sd:
                if not k.endswith(".lora_down.weight"):
                    continue
                mod = k[: -len(".lora_down.weight")]
                down, up, alpha = sd[k], sd[f"{mod}.lora_up.weight"], float(sd[f"{mod}.alpha"])
                linears[mod].weight += w * (alpha / down.shape[0]) * (up @ down)
    return _pixels(pipe)


def test_two_stacked_loras_match_fused_sum_and_zero_weights_give_base(files):
    pipe = build_tiny_sd1_pipeline(seed=0)
    stack = AdapterStack(pipe)
    loaded = stack.apply([StackEntry("style.v1", files["a"], 0.8, 0.8),
                          StackEntry("char", files["b"], -0.5, -0.5)])
    assert [a.coverage.dropped for a in loaded] == [[], []]
    assert [a.coverage.file_modules for a in loaded] == [40, 40]
    stacked = _pixels(pipe)
    assert np.abs(stacked - files["base"]).max() > 1e-2
    np.testing.assert_allclose(stacked, _fused_reference(files, {"a": 0.8, "b": -0.5}), atol=1e-4)

    layer = pipe.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q
    ids = (id(layer.lora_A["style_v1"]), id(layer.lora_A["char"]))
    stack.apply([StackEntry("style.v1", files["a"], 0.0, 0.0), StackEntry("char", files["b"], 0.0, 0.0)])
    np.testing.assert_allclose(_pixels(pipe), files["base"], atol=1e-5)
    stack.set_weights({"style.v1": (0.8, 0.8), "char": (-0.5, -0.5)})
    np.testing.assert_allclose(_pixels(pipe), stacked, atol=1e-6)
    # weight changes never reloaded: two loads in all, same peft layers
    assert stack.load_calls == 2
    assert (id(layer.lora_A["style_v1"]), id(layer.lora_A["char"])) == ids


def test_per_component_weights_equal_single_component_files(files):
    pipe = build_tiny_sd1_pipeline(seed=0)
    stack = AdapterStack(pipe)
    stack.apply([StackEntry("a", files["a"], te_weight=0.0, unet_weight=0.7)])
    unet_only = _pixels(pipe)
    stack.apply([StackEntry("a", files["a"], te_weight=1.3, unet_weight=0.0)])
    te_only = _pixels(pipe)
    assert stack.load_calls == 1

    ref = build_tiny_sd1_pipeline(seed=0)
    ref_stack = AdapterStack(ref)
    ref_stack.apply([StackEntry("u", files["a_unet"], 0.7, 0.7)])
    assert ref_stack.loaded["u"].components == ("unet",)
    np.testing.assert_allclose(unet_only, _pixels(ref), atol=1e-5)
    ref_stack.apply([StackEntry("t", files["a_te"], 1.3, 1.3)])  # replaces "u"
    assert list(ref_stack.loaded) == ["t"] and ref.get_list_adapters() == {"text_encoder": ["t"]}
    np.testing.assert_allclose(te_only, _pixels(ref), atol=1e-5)
    assert np.abs(unet_only - te_only).max() > 1e-3


def test_removed_adapters_are_unloaded_and_a_changed_file_reloads(files, tmp_path):
    pipe = build_tiny_sd1_pipeline(seed=0)
    stack = AdapterStack(pipe)
    stack.apply([StackEntry("a", files["a"], 0.8, 0.8), StackEntry("b", files["b"], -0.5, -0.5)])
    stack.apply([StackEntry("b", files["b"], -0.5, -0.5)])
    assert pipe.get_list_adapters() == {"unet": ["b"], "text_encoder": ["b"]}
    only_b = _pixels(pipe)
    fresh = build_tiny_sd1_pipeline(seed=0)
    AdapterStack(fresh).apply([StackEntry("b", files["b"], -0.5, -0.5)])
    np.testing.assert_allclose(only_b, _pixels(fresh), atol=1e-6)
    # the same name pointing at another file is a reload, not a weight change
    stack.apply([StackEntry("b", files["a"], -0.5, -0.5)])
    assert stack.load_calls == 3
    stack.apply([])
    assert pipe.get_list_adapters() == {}
    np.testing.assert_allclose(_pixels(pipe), files["base"], atol=1e-5)
    with pytest.raises(UsageError, match="named twice"):
        stack.apply([StackEntry("a", files["a"]), StackEntry("a", files["b"])])
    with pytest.raises(UsageError, match="not loaded"):
        stack.set_weights({"ghost": (1.0, 1.0)})


def test_coverage_error_lists_keys_diffusers_dropped(files, tmp_path):
    from safetensors.torch import load_file, save_file

    sd = load_file(str(files["a_unet"]))
    ghost = "lora_unet_down_blocks_7_attentions_0_transformer_blocks_0_attn1_to_q"
    sd[f"{ghost}.lora_down.weight"] = torch.randn(4, 64)
    sd[f"{ghost}.lora_up.weight"] = torch.randn(64, 4)
    sd[f"{ghost}.alpha"] = torch.tensor(4.0)
    save_file(sd, str(tmp_path / "partial.safetensors"))

    pipe = build_tiny_sd1_pipeline(seed=0)
    with pytest.raises(CoverageError) as info:
        AdapterStack(pipe).apply([StackEntry("p", tmp_path / "partial.safetensors")])
    assert info.value.dropped == sorted(f"{ghost}.{s}" for s in ("alpha", "lora_down.weight", "lora_up.weight"))
    assert pipe.get_list_adapters() == {}  # nothing half-loaded is left behind

    stack = AdapterStack(pipe, allow_partial=True)
    (loaded,) = stack.apply([StackEntry("p", tmp_path / "partial.safetensors", 0.7, 0.7)])
    assert loaded.coverage.file_modules == 33 and loaded.coverage.injected_modules == 32
    assert len(loaded.coverage.dropped) == 3


def test_embedding_token_loads_and_unloads(files, tmp_path):
    from safetensors.torch import save_file

    save_file({"emb_params": torch.randn(2, 32, generator=torch.Generator().manual_seed(5))},
              str(tmp_path / "style.safetensors"))
    pipe = build_tiny_sd1_pipeline(seed=0)
    n_tokens = len(pipe.tokenizer)
    stack = AdapterStack(pipe)
    (emb,) = stack.apply([StackEntry("my-style", tmp_path / "style.safetensors", kind="embedding")])
    assert emb.tokens[0] == "<my-style>" and len(pipe.tokenizer) == n_tokens + 2  # two vectors
    with_token = _pixels(pipe, "the cat <my-style>")
    assert np.abs(with_token - files["base"]).max() > 1e-3
    stack.apply([StackEntry("my-style", tmp_path / "style.safetensors", kind="embedding")])
    assert stack.load_calls == 1
    stack.apply([])
    assert len(pipe.tokenizer) == n_tokens


def test_convert_hook_passes_diffusers_readable_files_through(files, tmp_path):
    source = convert_for_diffusers(files["a"], tmp_path)
    assert source.path == files["a"] and source.conversion is None
