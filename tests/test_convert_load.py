"""A kohya LoRA and its diffusers conversion load into diffusers with the same scale: same image,
different from the base image, and every layer equals W + alpha/r · up @ down.

diffusers 0.42's own kohya loader builds a wrong ``alpha_pattern`` when alphas differ between
modules (its keys keep ``processor.to_q_lora.down.weight`` / drop the projection name, and peft
ignores them with a warning), so the kohya-vs-diffusers image comparison uses one alpha for all
modules; per-module alphas are checked against a hand-merged model instead."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from loradex.merge.conventions.convert import convert_file

pytestmark = pytest.mark.slow

RANK = 4
MIXED_ALPHAS = (3.0, 6.0, 1.5)  # none equals the rank: a loader ignoring alpha gives another image


def _kohya_for(pipe, alphas, seed=0) -> dict[str, torch.Tensor]:
    """Random kohya LoRA over every attention/ff/proj Linear of the tiny UNet, one LoCon conv,
    and every Linear of the text encoder, with alphas ≠ rank."""
    gen = torch.Generator().manual_seed(seed)
    targets = []
    for name, mod in pipe.unet.named_modules():
        if isinstance(mod, torch.nn.Linear) and ("attentions" in name):
            targets.append(("lora_unet_", name, mod))
    targets.append(("lora_unet_", "down_blocks.0.resnets.0.conv1", pipe.unet.down_blocks[0].resnets[0].conv1))
    for name, mod in pipe.text_encoder.named_modules():
        if isinstance(mod, torch.nn.Linear):
            # transformers 5 flattened CLIPTextModel; kohya names keep the text_model level
            targets.append(("lora_te_", "text_model." + name, mod))
    sd = {}
    for i, (prefix, path, mod) in enumerate(targets):
        key = prefix + path.replace(".", "_")
        if isinstance(mod, torch.nn.Conv2d):
            down = torch.randn(RANK, mod.in_channels, *mod.kernel_size, generator=gen) * 0.2
            up = torch.randn(mod.out_channels, RANK, 1, 1, generator=gen) * 0.2
        else:
            down = torch.randn(RANK, mod.in_features, generator=gen) * 0.2
            up = torch.randn(mod.out_features, RANK, generator=gen) * 0.2
        sd[f"{key}.lora_down.weight"] = down
        sd[f"{key}.lora_up.weight"] = up
        sd[f"{key}.alpha"] = torch.tensor(alphas[i % len(alphas)])
    return sd


def _render(pipe) -> np.ndarray:
    return pipe("the cat", num_inference_steps=2, height=32, width=32, output_type="np",
                generator=torch.Generator().manual_seed(0)).images[0]


def test_kohya_and_converted_diffusers_give_the_same_image(tmp_path):
    from loradex.trainer.tiny_pipeline import build_tiny_sd1_pipeline

    base_pipe = build_tiny_sd1_pipeline(seed=0)
    kohya = _kohya_for(base_pipe, alphas=(3.0,))
    kohya_path = tmp_path / "k.safetensors"
    save_file(kohya, str(kohya_path))
    diff_path = tmp_path / "d.safetensors"
    report = convert_file(kohya_path, diff_path, "diffusers", base="sd1")
    assert report.unconsumed == [] and report.tensors_out == len(kohya) * 2 // 3
    back_path = tmp_path / "k2.safetensors"
    convert_file(diff_path, back_path, "kohya", base="sd1")
    back = load_file(str(back_path))
    assert sorted(back) == sorted(kohya) and all(torch.equal(back[k], kohya[k]) for k in kohya)

    reference = _render(base_pipe)
    images = {}
    for label, path in (("kohya", kohya_path), ("diffusers", diff_path)):
        pipe = build_tiny_sd1_pipeline(seed=0)
        pipe.load_lora_weights(str(path), adapter_name=label)
        images[label] = _render(pipe)
        if label == "diffusers":
            _check_one_layer(pipe, kohya)
    np.testing.assert_allclose(images["kohya"], images["diffusers"], atol=1e-5, rtol=0)
    assert np.abs(images["diffusers"] - reference).max() > 1e-3  # the LoRA did change the image


def _check_one_layer(pipe, kohya) -> None:
    """The loaded layer computes x @ (W + alpha/r · up @ down)ᵀ + b, with kohya's alpha."""
    path = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v"
    key = "lora_unet_" + path.replace(".", "_")
    layer = pipe.unet.get_submodule(path)
    alpha = float(kohya[f"{key}.alpha"])
    assert alpha != RANK
    assert layer.scaling["diffusers"] == alpha / RANK
    base = layer.base_layer
    expected_w = base.weight + (alpha / RANK) * kohya[f"{key}.lora_up.weight"] @ kohya[f"{key}.lora_down.weight"]
    x = torch.randn(3, base.in_features, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = layer(x)
        want = torch.nn.functional.linear(x, expected_w, base.bias)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def _hand_merged(kohya):
    """A fresh pipeline with W += alpha/r · up @ down written into every targeted weight."""
    from loradex.trainer.tiny_pipeline import build_tiny_sd1_pipeline

    pipe = build_tiny_sd1_pipeline(seed=0)
    roots = {"lora_unet_": pipe.unet, "lora_te_": pipe.text_encoder}
    names = {prefix: {n.replace(".", "_"): m for n, m in root.named_modules()} for prefix, root in roots.items()}
    with torch.no_grad():
        for key in [k for k in kohya if k.endswith(".lora_down.weight")]:
            stem = key[: -len(".lora_down.weight")]
            prefix = next(p for p in roots if stem.startswith(p))
            under = stem[len(prefix):].removeprefix("text_model_")
            mod = names[prefix][under]
            down, up = kohya[key], kohya[f"{stem}.lora_up.weight"]
            scale = float(kohya[f"{stem}.alpha"]) / down.shape[0]
            delta = (up.flatten(1) @ down.flatten(1)).reshape(mod.weight.shape)
            mod.weight += scale * delta
    return pipe


def test_per_module_alphas_load_exactly_from_converted_diffusers_file(tmp_path):
    from loradex.trainer.tiny_pipeline import build_tiny_sd1_pipeline

    kohya = _kohya_for(build_tiny_sd1_pipeline(seed=0), alphas=MIXED_ALPHAS)
    kohya_path, diff_path = tmp_path / "k.safetensors", tmp_path / "d.safetensors"
    save_file(kohya, str(kohya_path))
    convert_file(kohya_path, diff_path, "diffusers", base="sd1")
    pipe = build_tiny_sd1_pipeline(seed=0)
    pipe.load_lora_weights(str(diff_path), adapter_name="diffusers")
    # every LoRA layer got its own module's alpha / rank
    checked = 0
    for prefix, root in (("lora_unet_", pipe.unet), ("lora_te_", pipe.text_encoder)):
        for name, mod in root.named_modules():
            if hasattr(mod, "scaling") and "diffusers" in getattr(mod, "scaling", {}):
                key = prefix + ("text_model." + name if prefix == "lora_te_" else name).replace(".", "_")
                assert mod.scaling["diffusers"] == float(kohya[f"{key}.alpha"]) / RANK, name
                checked += 1
    assert checked == len(kohya) // 3
    _check_one_layer(pipe, kohya)
    np.testing.assert_allclose(_render(pipe), _render(_hand_merged(kohya)), atol=1e-4, rtol=0)
