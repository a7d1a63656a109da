"""LyCORIS → plain LoRA by SVD: closed-form checks against lycoris_delta and torch.linalg.svd."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from loradex.cli.app import app
from loradex.merge.math.lora_module import delta_weight, split_kohya_state_dict
from loradex.merge.math.lycoris_math import lycoris_delta
from loradex.merge.conventions.lycoris_to_lora import lycoris_to_lora
from loradex.registry.errors import CoverageError, UnsupportedFormat, UsageError
from loradex.registry.probe import probe_path
from loradex.registry.files.safetensors_writer import save_safetensors

CORPUS_FILES = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "files"
LOKR = CORPUS_FILES / "lycoris_smart_falcon_4_lokr.safetensors"
runner = CliRunner()

TE = "lora_te_text_model_encoder_layers_0_"
UNET = "lora_unet_down_blocks_0_"


def _rand(gen, *shape):
    return torch.randn(*shape, generator=gen)


def synthetic_groups(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """module → {suffix: tensor}: every LyCORIS kind with known factors, plus one plain LoRA."""
    g = torch.Generator().manual_seed(seed)
    return {
        # LoHa, linear: ΔW = (w1a w1b) ⊙ (w2a w2b) · α/r, rank ≤ r² = 9
        TE + "self_attn_q_proj": {"hada_w1_a": _rand(g, 12, 3), "hada_w1_b": _rand(g, 3, 10),
                                  "hada_w2_a": _rand(g, 12, 3), "hada_w2_b": _rand(g, 3, 10),
                                  "alpha": torch.tensor(2.0)},
        # LoHa on a 3×3 conv, factors flattened as LyCORIS stores them ([r, in·9])
        UNET + "resnets_0_conv1": {"hada_w1_a": _rand(g, 6, 2), "hada_w1_b": _rand(g, 2, 4 * 9),
                                   "hada_w2_a": _rand(g, 6, 2), "hada_w2_b": _rand(g, 2, 4 * 9),
                                   "alpha": torch.tensor(1.0)},
        # LoKr, w1 full, w2 factored: ΔW = kron(w1, w2a w2b) · α/r
        TE + "self_attn_k_proj": {"lokr_w1": _rand(g, 3, 2), "lokr_w2_a": _rand(g, 4, 2),
                                  "lokr_w2_b": _rand(g, 2, 5), "alpha": torch.tensor(3.0)},
        # LoKr, both sides factored, on a 3×3 conv with w2 flattened
        UNET + "resnets_0_conv2": {"lokr_w1_a": _rand(g, 2, 2), "lokr_w1_b": _rand(g, 2, 2),
                                   "lokr_w2_a": _rand(g, 3, 2), "lokr_w2_b": _rand(g, 2, 2 * 9),
                                   "alpha": torch.tensor(1.0)},
        # LoKr, both full (scale 1), w2 a real 4-D kernel
        UNET + "downsamplers_0_conv": {"lokr_w1": _rand(g, 2, 2), "lokr_w2": _rand(g, 3, 2, 3, 3)},
        # LoCon with a Tucker core
        UNET + "resnets_1_conv1": {"lora_down.weight": _rand(g, 3, 4, 1, 1), "lora_mid.weight": _rand(g, 3, 3, 3, 3),
                                   "lora_up.weight": _rand(g, 6, 3, 1, 1), "alpha": torch.tensor(1.0)},
        # LoHa with Tucker cores (dense path)
        UNET + "resnets_1_conv2": {"hada_t1": _rand(g, 2, 2, 3, 3), "hada_w1_a": _rand(g, 2, 5), "hada_w1_b": _rand(g, 2, 4),
                                   "hada_t2": _rand(g, 2, 2, 3, 3), "hada_w2_a": _rand(g, 2, 5), "hada_w2_b": _rand(g, 2, 4),
                                   "alpha": torch.tensor(2.0)},
        # full diff
        TE + "mlp_fc1": {"diff": _rand(g, 7, 5)},
        # already plain LoRA, fp16: must be copied exactly
        TE + "self_attn_v_proj": {"lora_down.weight": _rand(g, 2, 10).half(), "lora_up.weight": _rand(g, 12, 2).half(),
                                  "alpha": torch.tensor(1.0, dtype=torch.float16)},
    }


def write_groups(path: Path, groups) -> Path:
    save_safetensors({f"{m}.{s}": t for m, group in groups.items() for s, t in group.items()}, path,
                     {"ss_network_module": "lycoris.kohya", "ss_network_args": '{"algo": "loha"}'})
    return path


def expected_delta(name: str, group: dict, written_shape) -> torch.Tensor:
    return lycoris_delta(group, name=name).reshape(written_shape).double()


def written_modules(path: Path):
    plain, other, loose = split_kohya_state_dict(load_file(str(path)))
    assert not other and not loose
    return plain


def test_full_rank_reproduces_lycoris_delta(tmp_path):
    groups = synthetic_groups()
    src = write_groups(tmp_path / "lyco.safetensors", groups)
    dest = tmp_path / "lora.safetensors"
    report = lycoris_to_lora(src, dest, rank=64, dtype="fp32")
    assert report.max_relative_error() <= 1e-5
    data = report.to_dict()
    assert data["converted"] == 8 and data["copied"] == 1 and not data["dropped"]
    methods = {n: m.method for n, m in report.modules.items()}
    assert methods[TE + "self_attn_k_proj"] == "kron-svd" and methods[TE + "self_attn_q_proj"] == "factored-svd"
    assert methods[UNET + "resnets_1_conv2"] == "dense-svd" and methods[TE + "self_attn_v_proj"] == "copied"
    modules = written_modules(dest)
    for name, group in groups.items():
        if name == TE + "self_attn_v_proj":
            continue
        mod = modules[name]
        got = delta_weight(mod).double()
        want = expected_delta(name, group, got.shape)
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max())), name
    # flattened conv factors come out as real 3×3 conv LoRA (kohya layout)
    assert tuple(modules[UNET + "resnets_0_conv1"].down.shape[1:]) == (4, 3, 3)
    assert tuple(modules[UNET + "resnets_0_conv2"].down.shape[1:]) == (4, 3, 3)
    assert tuple(modules[UNET + "resnets_0_conv1"].up.shape[2:]) == (1, 1)
    # the plain LoRA module: the very same tensors, dtype included
    raw = load_file(str(dest))
    for suffix, t in groups[TE + "self_attn_v_proj"].items():
        got = raw[f"{TE}self_attn_v_proj.{suffix}"]
        assert got.dtype == t.dtype and torch.equal(got, t)
    facts = probe_path(dest)
    assert (facts.kind, facts.format) == ("lora", "kohya")


def test_lower_rank_error_is_the_optimal_truncation_error(tmp_path):
    groups = synthetic_groups(seed=1)
    src = write_groups(tmp_path / "lyco.safetensors", groups)
    dest = tmp_path / "lora.safetensors"
    k = 2
    report = lycoris_to_lora(src, dest, rank=k, dtype="fp32")
    modules = written_modules(dest)
    errors = []
    for name, group in groups.items():
        result = report.modules[name]
        if result.kind == "lora":
            continue
        mod = modules[name]
        assert mod.rank == k and mod.alpha == k
        delta = lycoris_delta(group, name=name).double()
        s = torch.linalg.svd(delta.reshape(delta.shape[0], -1)).S
        optimal = math.sqrt(float(s[k:].pow(2).sum()) / float(s.pow(2).sum()))
        assert result.relative_error == pytest.approx(optimal, rel=1e-4, abs=1e-6), name
        assert optimal > 1e-3, name  # a real truncation, not a trivially exact case
        # and the written factors achieve it
        got = delta_weight(mod).double().reshape(delta.shape[0], -1)
        actual = float((got - delta.reshape(delta.shape[0], -1)).norm() / delta.norm())
        assert actual == pytest.approx(optimal, rel=1e-3, abs=1e-5), name
        errors.append(optimal)
    assert report.max_relative_error() == pytest.approx(max(errors), rel=1e-4)
    assert report.mean_relative_error() == pytest.approx(sum(errors) / len(errors), rel=1e-4)


def test_unreadable_keys_and_dora_refused(tmp_path):
    groups = synthetic_groups()
    groups[TE + "mlp_fc1"]["diff_b"] = torch.zeros(7)  # a bias diff: no LoRA form
    src = write_groups(tmp_path / "lyco.safetensors", groups)
    with pytest.raises(CoverageError) as exc:
        lycoris_to_lora(src, tmp_path / "x.safetensors", rank=4)
    assert exc.value.dropped == [TE + "mlp_fc1.diff_b"]
    report = lycoris_to_lora(src, tmp_path / "x.safetensors", rank=4, allow_partial=True)
    assert report.dropped == [TE + "mlp_fc1.diff_b"]
    dora = {TE + "self_attn_q_proj": {"lora_down.weight": torch.ones(2, 4), "lora_up.weight": torch.ones(3, 2),
                                      "dora_scale": torch.ones(3, 1)}}
    with pytest.raises(UnsupportedFormat, match="dora_scale"):
        lycoris_to_lora(write_groups(tmp_path / "dora.safetensors", dora), tmp_path / "y.safetensors", rank=2)
    with pytest.raises(UsageError, match="rank"):
        lycoris_to_lora(src, tmp_path / "z.safetensors", rank=0)


def test_cli_needs_rank_for_lycoris(tmp_path):
    src = write_groups(tmp_path / "lyco.safetensors", synthetic_groups())
    out = tmp_path / "out.safetensors"
    result = runner.invoke(app, ["convert", str(src), "--to", "kohya", "-o", str(out)])
    assert result.exit_code != 0 and isinstance(result.exception, UsageError)
    assert "--rank" in str(result.exception) and not out.exists()
    result = runner.invoke(app, ["convert", str(src), "--to", "diffusers", "--rank", "4", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["target_convention"] == "diffusers" and data["files"] == [str(out)]
    assert probe_path(out).format == "diffusers"


@pytest.mark.skipif(not LOKR.is_file(), reason="../shared/corpus/files absent (a user's clone)")
def test_corpus_lokr_converts_with_reported_error(tmp_path):
    out = tmp_path / "lokr_as_lora.safetensors"
    result = runner.invoke(app, ["convert", str(LOKR), "--to", "kohya", "--rank", "4", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["converted"] == 350 and data["copied"] == 0 and data["kinds"] == ["lokr"]
    assert 0 < data["mean_relative_error"] <= data["max_relative_error"] < 1
    facts = probe_path(out)
    assert (facts.kind, facts.format, facts.base, facts.ranks, facts.module_count) == ("lora", "kohya", "sd1", (4,), 350)
    # spot-check two modules (a linear and a flattened 3×3 conv) against a dense SVD of lycoris_delta
    src = load_file(str(LOKR))
    written = written_modules(out)
    for name in ("lora_te_text_model_encoder_layers_0_self_attn_q_proj", "lora_unet_down_blocks_0_resnets_1_conv1"):
        group = {k.split(".", 1)[1]: v for k, v in src.items() if k.startswith(name + ".")}
        delta = lycoris_delta(group, name=name).double()
        s = torch.linalg.svdvals(delta.float()).double()
        optimal = math.sqrt(float(s[4:].pow(2).sum()) / float(s.pow(2).sum()))
        assert data["modules"][name]["relative_error"] == pytest.approx(optimal, rel=1e-3)
        got = delta_weight(written[name]).double().reshape(delta.shape)
        actual = float((got - delta).norm() / delta.norm())
        assert actual == pytest.approx(optimal, rel=2e-2)  # fp16 factors: a little above the optimum
    assert tuple(written["lora_unet_down_blocks_0_resnets_1_conv1"].down.shape) == (4, 320, 3, 3)
    # an untrained module (its lokr_w2_a is all zeros) converts to a zero LoRA with error 0
    assert data["modules"]["lora_unet_down_blocks_0_resnets_0_conv1"]["relative_error"] == 0.0
    assert float(delta_weight(written["lora_unet_down_blocks_0_resnets_0_conv1"]).abs().max()) == 0.0
