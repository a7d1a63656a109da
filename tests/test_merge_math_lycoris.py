"""LyCORIS expansion (LoHa, LoKr, LoCon Tucker) against explicit loops / convolutions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from loradex.merge.math.lycoris_math import lycoris_delta, lycoris_kind, to_lora_via_svd
from loradex.merge.math.lora_module import delta_weight, split_kohya_state_dict
from loradex.registry.errors import UnsupportedFormat

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def g(seed):
    return torch.Generator().manual_seed(seed)


def test_loha_linear_against_loops():
    gen = g(1)
    out_f, in_f, r = 5, 4, 3
    t = {
        "hada_w1_a": torch.randn(out_f, r, generator=gen),
        "hada_w1_b": torch.randn(r, in_f, generator=gen),
        "hada_w2_a": torch.randn(out_f, r, generator=gen),
        "hada_w2_b": torch.randn(r, in_f, generator=gen),
    }
    got = lycoris_delta(t, alpha=1.5)
    assert lycoris_kind(t) == "loha"
    for o in range(out_f):
        for i in range(in_f):
            p1 = sum(float(t["hada_w1_a"][o, k] * t["hada_w1_b"][k, i]) for k in range(r))
            p2 = sum(float(t["hada_w2_a"][o, k] * t["hada_w2_b"][k, i]) for k in range(r))
            assert float(got[o, i]) == pytest.approx(p1 * p2 * 1.5 / r, rel=1e-5, abs=1e-6)


def test_loha_conv_flattened_and_tucker():
    gen = g(2)
    out_f, in_f, r, k = 4, 3, 2, 3
    flat = {
        "hada_w1_a": torch.randn(out_f, r, generator=gen),
        "hada_w1_b": torch.randn(r, in_f * k * k, generator=gen),
        "hada_w2_a": torch.randn(out_f, r, generator=gen),
        "hada_w2_b": torch.randn(r, in_f * k * k, generator=gen),
        "alpha": torch.tensor(1.0),
    }
    got = lycoris_delta(flat, shape=(out_f, in_f, k, k))
    want = ((flat["hada_w1_a"] @ flat["hada_w1_b"]) * (flat["hada_w2_a"] @ flat["hada_w2_b"]) / r).reshape(
        out_f, in_f, k, k
    )
    assert torch.allclose(got, want, atol=1e-6)
    # Tucker: w[p, q, h, w] = Σ_ij t[i, j, h, w]·a[i, p]·b[j, q], a [r, out], b [r, in]
    tk = {
        "hada_t1": torch.randn(r, r, k, k, generator=gen),
        "hada_w1_a": torch.randn(r, out_f, generator=gen),
        "hada_w1_b": torch.randn(r, in_f, generator=gen),
        "hada_t2": torch.randn(r, r, k, k, generator=gen),
        "hada_w2_a": torch.randn(r, out_f, generator=gen),
        "hada_w2_b": torch.randn(r, in_f, generator=gen),
    }
    got = lycoris_delta(tk, alpha=4.0)

    def rebuild(t, a, b):
        w = torch.zeros(out_f, in_f, k, k)
        for p in range(out_f):
            for q in range(in_f):
                for i in range(r):
                    for j in range(r):
                        w[p, q] += t[i, j] * a[i, p] * b[j, q]
        return w

    want = rebuild(tk["hada_t1"], tk["hada_w1_a"], tk["hada_w1_b"]) * rebuild(
        tk["hada_t2"], tk["hada_w2_a"], tk["hada_w2_b"]
    ) * (4.0 / r)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)


def test_lokr_block_structure_and_scale():
    gen = g(3)
    w1 = torch.randn(2, 3, generator=gen)
    w2 = torch.randn(4, 5, generator=gen)
    full = lycoris_delta({"lokr_w1": w1, "lokr_w2": w2}, alpha=7.0)  # both full: scale 1
    assert full.shape == (8, 15)
    for a in range(2):
        for c in range(3):
            for b in range(4):
                for d in range(5):
                    assert float(full[a * 4 + b, c * 5 + d]) == pytest.approx(float(w1[a, c] * w2[b, d]), rel=1e-6)
    # factored w2: scale α / r with r its inner dim
    w2a, w2b = torch.randn(4, 2, generator=gen), torch.randn(2, 5, generator=gen)
    fac = lycoris_delta({"lokr_w1": w1, "lokr_w2_a": w2a, "lokr_w2_b": w2b}, alpha=1.0)
    assert torch.allclose(fac, torch.kron(w1, w2a @ w2b) * 0.5, atol=1e-6)
    # both factored (the corpus file's layout): r from w1_b
    w1a, w1b = torch.randn(2, 3, generator=gen), torch.randn(3, 3, generator=gen)
    both = lycoris_delta({"lokr_w1_a": w1a, "lokr_w1_b": w1b, "lokr_w2_a": w2a, "lokr_w2_b": w2b}, alpha=1.5)
    assert torch.allclose(both, torch.kron(w1a @ w1b, w2a @ w2b) * 0.5, atol=1e-5)


def test_lokr_conv_kernel_broadcast():
    gen = g(4)
    w1 = torch.randn(2, 3, generator=gen)
    w2 = torch.randn(4, 5, 3, 3, generator=gen)
    got = lycoris_delta({"lokr_w1": w1, "lokr_w2": w2})
    assert got.shape == (8, 15, 3, 3)
    for a in range(2):
        for c in range(3):
            assert torch.allclose(got[a * 4 : a * 4 + 4, c * 5 : c * 5 + 5], w1[a, c] * w2)


def test_locon_tucker_is_three_convolutions():
    gen = g(5)
    r, in_f, out_f = 3, 4, 6
    t = {
        "lora_down.weight": torch.randn(r, in_f, 1, 1, generator=gen),
        "lora_mid.weight": torch.randn(r, r, 3, 3, generator=gen),
        "lora_up.weight": torch.randn(out_f, r, 1, 1, generator=gen),
    }
    x = torch.randn(1, in_f, 7, 7, generator=gen)
    chain = F.conv2d(F.conv2d(F.conv2d(x, t["lora_down.weight"]), t["lora_mid.weight"], padding=1), t["lora_up.weight"])
    got = lycoris_delta(t, alpha=1.5)
    assert got.shape == (out_f, in_f, 3, 3)
    assert torch.allclose(F.conv2d(x, got, padding=1), chain * 0.5, rtol=1e-4, atol=1e-4)


def test_not_additive_modules_are_refused():
    gen = g(6)
    t = {
        "lora_down.weight": torch.randn(2, 4, generator=gen),
        "lora_up.weight": torch.randn(3, 2, generator=gen),
        "dora_scale": torch.ones(1, 4),
    }
    with pytest.raises(UnsupportedFormat, match="not additive"):
        lycoris_delta(t, name="lora_unet_x")
    with pytest.raises(UnsupportedFormat):
        lycoris_delta({"oft_blocks": torch.zeros(2, 2, 2)})


def test_to_lora_via_svd_exact_at_true_rank_and_optimal_below():
    gen = g(7)
    w1 = torch.randn(2, 2, generator=gen)
    w2 = torch.randn(6, 2, generator=gen) @ torch.randn(2, 5, generator=gen)  # rank 2
    delta = lycoris_delta({"lokr_w1": w1, "lokr_w2": w2})  # rank(kron) = 2·2 = 4
    module, err = to_lora_via_svd(delta, 4)
    assert err < 1e-5 and torch.allclose(delta_weight(module), delta, atol=1e-5)
    module2, err2 = to_lora_via_svd(delta, 2)
    s = torch.linalg.svdvals(delta.double())
    assert err2 == pytest.approx(float(s[2:].norm() / s.norm()), rel=1e-4)
    conv = torch.randn(4, 3, 3, 3, generator=gen)
    cm, _ = to_lora_via_svd(conv, 27)
    assert cm.down.shape == (4, 3, 3, 3) and torch.allclose(delta_weight(cm), conv, atol=1e-5)


def test_corpus_lokr_expands_to_kron_rank():
    path = CORPUS / "files" / "lycoris_smart_falcon_4_lokr.safetensors"
    if not path.exists():
        pytest.skip(f"corpus file absent: {path}")
    from safetensors.torch import load_file

    plain, groups, loose = split_kohya_state_dict(load_file(str(path)))
    assert not plain and not loose and len(groups) == 350
    name = "lora_te_text_model_encoder_layers_0_mlp_fc1"
    delta = lycoris_delta(groups[name], name=name)
    assert delta.shape == (3072, 768)  # CLIP-L fc1
    # both sides are rank-4 products: the kron has rank ≤ 16, so rank 16 is exact
    module, err = to_lora_via_svd(delta, 16)
    assert err < 1e-4
    _, err8 = to_lora_via_svd(delta, 8)
    assert err8 > 1e-3
