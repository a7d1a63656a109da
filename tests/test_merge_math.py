"""Merge / resize / extract math against closed-form answers (tiny shapes, float32)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from loradex.merge.extract import extract_lora, extract_module
from loradex.merge.math.lora_module import (
    DenseDelta,
    LoraModule,
    delta_weight,
    kohya_state_dict_from_modules,
    modules_from_kohya_state_dict,
    split_kohya_state_dict,
)
from loradex.merge.math.merge_methods import available_merge_methods, get_merge_method, merge_adapters, merge_stream
from loradex.merge.math.resize import resize, resize_adapter
from loradex.merge.math.ties_dare import PEFT_COMBINATIONS, combined_module_delta, module_seed
from loradex.registry.errors import CoverageError, IncompatibleAdapters, UsageError

LIN = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
CONV = "lora_unet_down_blocks_0_resnets_0_conv1"
TE = "lora_te_text_model_encoder_layers_0_mlp_fc1"


def rand_lora(gen, rank, out_f=24, in_f=20, kernel=None, alpha=None) -> LoraModule:
    if kernel:
        down = torch.randn(rank, in_f, kernel, kernel, generator=gen) * 0.3
        up = torch.randn(out_f, rank, 1, 1, generator=gen) * 0.3
    else:
        down = torch.randn(rank, in_f, generator=gen) * 0.3
        up = torch.randn(out_f, rank, generator=gen) * 0.3
    return LoraModule(down=down, up=up, alpha=alpha)


def three_adapters(seed=0):
    """Ranks 4, 8, 16 with alphas 2, None (= rank), 4; linear + conv + a module only two have."""
    gen = torch.Generator().manual_seed(seed)
    adapters = []
    for rank, alpha in ((4, 2.0), (8, None), (16, 4.0)):
        adapters.append(
            {
                LIN: rand_lora(gen, rank, alpha=alpha),
                CONV: rand_lora(gen, rank, out_f=10, in_f=6, kernel=3, alpha=alpha),
            }
        )
    adapters[0][TE] = rand_lora(gen, 4, out_f=12, in_f=8, alpha=1.0)
    adapters[2][TE] = rand_lora(gen, 16, out_f=12, in_f=8, alpha=16.0)
    return adapters


WEIGHTS = [0.8, -0.5, 1.2]


def explicit_sum(adapters, weights, name) -> torch.Tensor:
    """Σ w·α/r·up@down written out from the definition, in float64."""
    total = None
    for adapter, w in zip(adapters, weights):
        m = adapter.get(name)
        if m is None:
            continue
        alpha = m.alpha if m.alpha else m.rank
        up = m.up.double().reshape(m.up.shape[0], m.rank)
        down = m.down.double().reshape(m.rank, -1)
        term = (w * alpha / m.rank * (up @ down)).reshape(m.weight_shape)
        total = term if total is None else total + term
    return total


def rel(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


# --- ΔW and kohya state dicts ------------------------------------------------------------------


def test_conv_delta_is_the_kernel_of_down_then_up():
    gen = torch.Generator().manual_seed(1)
    m = rand_lora(gen, 5, out_f=7, in_f=3, kernel=3, alpha=2.0)
    x = torch.randn(2, 3, 9, 9, generator=gen)
    two_convs = F.conv2d(F.conv2d(x, m.down, padding=1), m.up) * m.scale
    one_conv = F.conv2d(x, delta_weight(m), padding=1)
    assert rel(one_conv, two_convs) < 1e-5


def test_alpha_none_or_zero_means_rank():
    gen = torch.Generator().manual_seed(2)
    m = rand_lora(gen, 4)
    for alpha in (None, 0, 0.0):
        assert LoraModule(m.down, m.up, alpha).scale == 1.0
    assert LoraModule(m.down, m.up, 2.0).scale == 0.5


def test_kohya_state_dict_round_trip_and_coverage():
    adapters = three_adapters()
    sd = kohya_state_dict_from_modules(adapters[0], dtype=torch.float16)
    assert sd[f"{LIN}.lora_down.weight"].dtype == torch.float16
    assert sd[f"{LIN}.alpha"].dtype == torch.float32 and float(sd[f"{LIN}.alpha"]) == 2.0
    back = modules_from_kohya_state_dict(sd)
    assert set(back) == set(adapters[0])
    assert torch.equal(back[CONV].down, adapters[0][CONV].down.half())
    assert back[LIN].alpha == 2.0
    sd["lora_unet_x.hada_w1_a"] = torch.zeros(2, 2)
    sd["bundle_emb.foo.string_to_param.*"] = torch.zeros(1, 4)
    with pytest.raises(CoverageError) as err:
        modules_from_kohya_state_dict(sd)
    assert "lora_unet_x.hada_w1_a" in err.value.dropped
    plain, other, loose = split_kohya_state_dict(sd)
    assert set(plain) == set(adapters[0]) and set(other) == {"lora_unet_x"} and set(loose) == {
        "bundle_emb.foo.string_to_param.*"
    }


# --- concat ------------------------------------------------------------------------------------


def test_concat_equals_runtime_sum_for_mixed_ranks_alphas_and_signs():
    adapters = three_adapters()
    merged, report = merge_adapters("concat", adapters, WEIGHTS)
    for name in (LIN, CONV, TE):
        assert rel(delta_weight(merged[name]), explicit_sum(adapters, WEIGHTS, name)) < 1e-5
    assert merged[LIN].rank == 28 and merged[LIN].alpha == 28.0
    assert merged[TE].rank == 20  # only two adapters have it
    assert merged[CONV].down.shape == (28, 6, 3, 3) and merged[CONV].up.shape == (10, 28, 1, 1)
    assert report.modules[LIN].input_ranks == [4, 8, 16]


def test_concat_in_half_precision_equals_float32_math_rounded_once():
    adapters = [{n: LoraModule(m.down.half(), m.up.half(), m.alpha) for n, m in a.items()} for a in three_adapters()]
    f32, _ = merge_adapters("concat", adapters, WEIGHTS)
    f16, _ = merge_adapters("concat", adapters, WEIGHTS, dtype=torch.float16)
    for name in (LIN, CONV, TE):
        assert f16[name].up.dtype == torch.float16
        assert torch.equal(f16[name].up, f32[name].up.half()) and torch.equal(f16[name].down, f32[name].down.half())


def test_concat_linear_and_1x1_conv_of_the_same_layer():
    gen = torch.Generator().manual_seed(3)
    a = rand_lora(gen, 4, out_f=8, in_f=6)
    b4 = rand_lora(gen, 2, out_f=8, in_f=6, kernel=1)
    merged, _ = merge_adapters("concat", [{LIN: a}, {LIN: b4}], [1.0, 0.5])
    want = delta_weight(a).reshape(8, 6, 1, 1) + delta_weight(b4, 0.5)
    assert merged[LIN].is_conv and rel(delta_weight(merged[LIN]), want) < 1e-5


def test_concat_refuses_full_delta_and_other_ranks():
    gen = torch.Generator().manual_seed(4)
    a = rand_lora(gen, 4)
    with pytest.raises(IncompatibleAdapters):
        merge_adapters("concat", [{LIN: a}, {LIN: DenseDelta(torch.randn(24, 20))}], [1, 1])
    with pytest.raises(UsageError):
        merge_adapters("concat", [{LIN: a}, {LIN: a}], [1, 1], rank=3)
    with pytest.raises(IncompatibleAdapters):
        merge_adapters("concat", [{LIN: a}, {LIN: rand_lora(gen, 4, out_f=25)}], [1, 1])


def test_zero_weight_everywhere_is_reported_not_silent():
    adapters = three_adapters()
    merged, report = merge_adapters("concat", [adapters[1]], [0.0])
    assert merged == {} and set(report.skipped) == {LIN, CONV}


# --- svd ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [LIN, CONV])
@pytest.mark.parametrize("rank", [3, 10])
def test_svd_merge_is_the_optimal_truncation(name, rank):
    adapters = three_adapters()
    merged, report = merge_adapters("svd", adapters, WEIGHTS, rank=rank)
    target = explicit_sum(adapters, WEIGHTS, name)
    mat = target.reshape(target.shape[0], -1)
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    optimal = math.sqrt(float(s[rank:].pow(2).sum()))
    got = delta_weight(merged[name]).double()
    residual = float((target - got).norm())
    norm = float(target.norm())
    assert abs(residual - optimal) / norm < 1e-4
    best = (u[:, :rank] * s[:rank]) @ vh[:rank]
    assert rel(got.reshape(mat.shape), best) < 1e-4  # the same matrix, not just the same error
    r = report.modules[name]
    assert r.rank == rank and merged[name].rank == rank and merged[name].scale == 1.0
    assert abs(r.residual - optimal) / norm < 1e-4
    assert abs(r.retained_fro - math.sqrt(float(s[:rank].pow(2).sum())) / norm) < 1e-5


def test_svd_default_rank_is_the_largest_input_rank_and_full_rank_is_exact():
    adapters = three_adapters()
    merged, report = merge_adapters("svd", adapters, WEIGHTS)
    assert merged[LIN].rank == 16 and merged[TE].rank == 8  # TE is 12×8: capped by min(out, in)
    # rank ≥ true rank of the sum (28, but capped by min(out, in) = 20): exact
    full, _ = merge_adapters("svd", adapters, WEIGHTS, rank=28)
    assert rel(delta_weight(full[LIN]), explicit_sum(adapters, WEIGHTS, LIN)) < 1e-5


def test_svd_clamp_reports_the_measured_residual():
    adapters = three_adapters()
    merged, report = merge_adapters("svd", adapters, WEIGHTS, rank=8, clamp_quantile=0.9)
    target = explicit_sum(adapters, WEIGHTS, LIN)
    measured = float((target - delta_weight(merged[LIN]).double()).norm())
    assert abs(report.modules[LIN].residual - measured) / measured < 1e-4
    unclamped, ref = merge_adapters("svd", adapters, WEIGHTS, rank=8)
    assert measured > ref.modules[LIN].residual  # clamping costs accuracy


def test_svd_accepts_full_delta_inputs():
    adapters = three_adapters()
    dense = DenseDelta(delta_weight(adapters[1][LIN]))
    merged, report = merge_adapters("svd", [{LIN: adapters[0][LIN]}, {LIN: dense}], [0.8, -0.5], rank=4)
    target = explicit_sum([adapters[0], adapters[1]], [0.8, -0.5], LIN)
    s = torch.linalg.svdvals(target)
    assert abs(float((target - delta_weight(merged[LIN]).double()).norm()) - float(s[4:].norm())) / float(
        target.norm()
    ) < 1e-4
    assert "materialised" in report.modules[LIN].note


def test_merge_stream_matches_in_memory_and_reports_progress():
    adapters = three_adapters()
    seen = []
    stream = merge_stream(
        "svd", [LIN, CONV], lambda n: [a.get(n) for a in adapters], WEIGHTS, rank=5,
        progress=lambda d, t, desc: seen.append((d, t, desc)),
    )
    streamed = {n: m for n, m, _ in stream}
    merged, _ = merge_adapters("svd", adapters, WEIGHTS, rank=5)
    for n in (LIN, CONV):
        assert torch.equal(streamed[n].up, merged[n].up) and torch.equal(streamed[n].down, merged[n].down)
    assert seen == [(1, 2, LIN), (2, 2, CONV)]


def test_block_weights_multiply_per_module():
    adapters = three_adapters()
    per_module = {LIN: [1.0, 0.0, 2.0], CONV: [0.5, 1.0, 1.0], TE: [1.0, 1.0, 1.0]}
    merged, _ = merge_adapters("concat", adapters, WEIGHTS, module_weights=per_module.__getitem__)
    for n in (LIN, CONV):
        w = [a * b for a, b in zip(WEIGHTS, per_module[n])]
        assert rel(delta_weight(merged[n]), explicit_sum(adapters, w, n)) < 1e-5


# --- registry ----------------------------------------------------------------------------------


def test_registry_names_and_errors():
    names = available_merge_methods()
    for n in ("concat", "svd", "ties", "dare-linear", "dare-ties", "magnitude-prune", "task-arithmetic"):
        assert n in names
    assert get_merge_method("dare_linear").name == "dare-linear"
    assert get_merge_method("concat").exact and not get_merge_method("svd").exact
    with pytest.raises(UsageError):
        get_merge_method("average")
    with pytest.raises(UsageError, match="density"):
        merge_adapters("svd", three_adapters(), WEIGHTS, density=0.5)
    with pytest.raises(UsageError):
        merge_adapters("svd", three_adapters(), [1.0])


# --- TIES / DARE / magnitude prune / task arithmetic -------------------------------------------


@pytest.mark.parametrize("method", sorted(PEFT_COMBINATIONS))
@pytest.mark.parametrize("name", [LIN, CONV, TE])
def test_peft_combinations_match_peft_then_optimal_svd(method, name):
    from peft.utils import merge_utils

    adapters = three_adapters()
    modules = [a.get(name) for a in adapters]
    spec = PEFT_COMBINATIONS[method]
    density = 0.4 if spec.needs_density else None
    got = combined_module_delta(method, name, modules, WEIGHTS, density=density, seed=7)

    shape = next(m for m in modules if m is not None).weight_shape
    deltas = [delta_weight(m) if m is not None else torch.zeros(shape) for m in modules]
    args = [deltas, torch.tensor(WEIGHTS)] + ([density] if spec.needs_density else [])
    if spec.random:
        torch.manual_seed(module_seed(7, name))
    want = getattr(merge_utils, spec.peft_function)(*args)
    assert torch.equal(got, want)

    rng_before = torch.random.get_rng_state()
    merged, report = merge_adapters(method, adapters, WEIGHTS, rank=6, density=density, seed=7)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # global RNG untouched
    mat = want.reshape(want.shape[0], -1).double()
    s = torch.linalg.svdvals(mat)
    optimal = float(s[6:].norm())
    residual = float((mat - delta_weight(merged[name]).double().reshape(mat.shape)).norm())
    assert abs(residual - optimal) / float(mat.norm()) < 1e-4
    assert abs(report.modules[name].residual - optimal) / float(mat.norm()) < 1e-4


def test_dare_seed_is_reproducible_and_matters():
    adapters = three_adapters()
    a, _ = merge_adapters("dare-linear", adapters, WEIGHTS, rank=6, density=0.5, seed=1)
    b, _ = merge_adapters("dare-linear", adapters, WEIGHTS, rank=6, density=0.5, seed=1)
    c, _ = merge_adapters("dare-linear", adapters, WEIGHTS, rank=6, density=0.5, seed=2)
    assert torch.equal(a[LIN].up, b[LIN].up) and torch.equal(a[LIN].down, b[LIN].down)
    assert not torch.equal(delta_weight(a[LIN]), delta_weight(c[LIN]))


def test_task_arithmetic_at_full_rank_equals_the_weighted_sum():
    adapters = three_adapters()
    merged, _ = merge_adapters("task-arithmetic", adapters, WEIGHTS, rank=20)
    assert rel(delta_weight(merged[LIN]), explicit_sum(adapters, WEIGHTS, LIN)) < 1e-5


# --- resize ------------------------------------------------------------------------------------


def known_spectrum_module(singular_values, out_f=12, in_f=10, alpha=None) -> LoraModule:
    """up @ down has exactly these singular values (orthonormal factors)."""
    gen = torch.Generator().manual_seed(5)
    r = len(singular_values)
    q1, _ = torch.linalg.qr(torch.randn(out_f, r, generator=gen))
    q2, _ = torch.linalg.qr(torch.randn(in_f, r, generator=gen))
    up = q1 * torch.tensor(singular_values)
    return LoraModule(down=q2.T.contiguous(), up=up.contiguous(), alpha=alpha)


def test_resize_full_rank_reproduces_and_lower_rank_is_optimal():
    gen = torch.Generator().manual_seed(6)
    for kernel in (None, 3):
        m = rand_lora(gen, 8, out_f=14, in_f=10, kernel=kernel, alpha=3.0)
        full, rep = resize(m, rank=8)
        assert rel(delta_weight(full), delta_weight(m)) < 1e-5
        assert abs(full.scale - m.scale) < 1e-12 and full.alpha == pytest.approx(3.0)
        low, rep = resize(m, rank=3)
        target = delta_weight(m).double().reshape(14, -1)
        s = torch.linalg.svdvals(target)
        residual = float((target - delta_weight(low).double().reshape(14, -1)).norm())
        assert abs(residual - float(s[3:].norm())) / float(target.norm()) < 1e-4
        assert low.rank == 3 and low.alpha == pytest.approx(3.0 / 8 * 3) and low.scale == pytest.approx(m.scale)
        assert rep.residual == pytest.approx(float(s[3:].norm()), rel=1e-4)


@pytest.mark.parametrize(
    "dynamic, want",
    [
        (("sv_ratio", 5.0), 3),  # keep S > 8/5 = 1.6: 8, 4, 2
        (("sv_cumulative", 0.9), 3),  # 8+4+2 = 14 ≥ 0.9·15.5 = 13.95
        (("sv_fro", 0.95), 2),  # 64+16 = 80 ≥ 0.9025·85.25 = 76.9
        (("sv_fro", 0.99), 3),  # 84 ≥ 0.9801·85.25 = 83.55
    ],
)
def test_resize_dynamic_rules(dynamic, want):
    m = known_spectrum_module([8.0, 4.0, 2.0, 1.0, 0.5], alpha=2.5)
    resized, report = resize_adapter({LIN: m}, dynamic=dynamic)
    r = report.modules[LIN]
    assert r.rank == want and resized[LIN].rank == want
    assert r.retained_fro == pytest.approx(math.sqrt(sum([64, 16, 4, 1, 0.25][:want]) / 85.25), rel=1e-5)
    assert resized[LIN].scale == pytest.approx(m.scale)
    # the dynamic rank is capped by rank
    capped, _ = resize_adapter({LIN: m}, dynamic=dynamic, rank=1)
    assert capped[LIN].rank == 1


# --- extract -----------------------------------------------------------------------------------


def test_extract_recovers_a_known_low_rank_delta():
    gen = torch.Generator().manual_seed(8)
    base_lin = torch.randn(32, 24, generator=gen)
    true_lin = torch.randn(32, 3, generator=gen) @ torch.randn(3, 24, generator=gen) * 0.1
    base_conv = torch.randn(16, 8, 3, 3, generator=gen)
    true_conv = rand_lora(gen, 2, out_f=16, in_f=8, kernel=3)
    base = {
        LIN: base_lin,
        CONV: base_conv,
        TE: torch.randn(12, 8, generator=gen),
        "lora_unet_conv_in": torch.randn(4, 4, 3, 3, generator=gen),
        "lora_unet_norm": torch.randn(8, generator=gen),
    }
    tuned = {
        LIN: base_lin + true_lin,
        CONV: base_conv + delta_weight(true_conv),
        TE: base[TE] + 1e-4,  # "untrained" text encoder
        "lora_unet_conv_in": base["lora_unet_conv_in"] + 1.0,
        "lora_unet_norm": base["lora_unet_norm"] + 1.0,
    }
    out, report = extract_lora(base, tuned, rank=3)
    assert set(out) == {LIN}
    assert rel(delta_weight(out[LIN]), true_lin) < 1e-4
    assert set(report.skipped) == {CONV, TE, "lora_unet_conv_in", "lora_unet_norm"}
    assert "min_diff" in report.skipped[TE] and "conv_rank" in report.skipped[CONV]
    out, report = extract_lora(base, tuned, rank=3, conv_rank=2)
    assert rel(delta_weight(out[CONV]), delta_weight(true_conv)) < 1e-4
    assert out[CONV].down.shape == (2, 8, 3, 3) and report.modules[CONV].relative_residual < 1e-4


def test_extract_module_at_lower_rank_is_optimal():
    gen = torch.Generator().manual_seed(9)
    base = torch.randn(20, 16, generator=gen)
    tuned = base + torch.randn(20, 16, generator=gen)
    m, rep = extract_module(base, tuned, 4)
    diff = (tuned - base).double()
    s = torch.linalg.svdvals(diff)
    assert float((diff - delta_weight(m).double()).norm()) == pytest.approx(float(s[4:].norm()), rel=1e-4)
    assert rep.rank == 4 and m.scale == 1.0
