"""factored_svd against a dense SVD of the materialised product, on the stacks a merge meets:
well conditioned, the same adapter twice (rank-deficient), geometric spectra down to 1e-8, zero
factors, one input's factors scaled 10⁻⁶ / 10⁶, more stacked rank than the matrix has."""

import math

import pytest
import torch

from loradex.merge.math.lowrank_svd import factored_svd, split_factors, tail_norm


def _orthonormal(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=gen, dtype=torch.float64))
    return q


def _stacks():
    gen = torch.Generator().manual_seed(7)
    m, n = 96, 80
    a, b = torch.randn(m, 8, generator=gen), torch.randn(8, n, generator=gen)
    spectrum = torch.logspace(0, -8, 24, dtype=torch.float64)
    yield "random", torch.randn(m, 24, generator=gen), torch.randn(24, n, generator=gen)
    # one adapter three times with different weights: the stacked up has rank 8 of 24 columns
    yield "duplicate", torch.cat([a, -0.5 * a, 1.2 * a], 1), torch.cat([b, b, b], 0)
    yield "geometric", (_orthonormal(m, 24, gen) * spectrum).float(), (_orthonormal(n, 24, gen) * spectrum).T.float()
    yield "zero-up", torch.zeros(m, 24), torch.randn(24, n, generator=gen)
    yield "zero-down", torch.randn(m, 24, generator=gen), torch.zeros(24, n)
    # one input stored as (up/10⁶, down·10⁶): the same ΔW, a 10¹² imbalance in the factors
    ups = [torch.randn(m, 8, generator=gen, dtype=torch.float64) for _ in range(3)]
    downs = [torch.randn(8, n, generator=gen, dtype=torch.float64) for _ in range(3)]
    ups[1], downs[1] = ups[1] / 1e6, downs[1] * 1e6
    yield "imbalanced", torch.cat(ups, 1).float(), torch.cat(downs, 0).float()
    # stacked rank 24 on a 12×10 matrix: at most 10 singular values
    yield "wide-stack", torch.randn(12, 24, generator=gen), torch.randn(24, 10, generator=gen)


@pytest.mark.parametrize("label,up,down", list(_stacks()), ids=[s[0] for s in _stacks()])
def test_factored_svd_matches_the_dense_svd(label, up, down):
    product = up.double() @ down.double()
    dense = torch.linalg.svdvals(product)
    svd = factored_svd(up, down)
    p = int(svd.S.shape[0])
    assert 1 <= p <= min(up.shape[1], down.shape[1])
    top = max(float(dense[0]), 1e-30)
    assert float((svd.S.double() - dense[:p]).abs().max()) <= 1e-6 * top
    assert all(float(v) <= 1e-6 * top for v in dense[p:])  # nothing non-zero was dropped
    norm = float(product.norm())
    for k in (1, 4, p):
        up_k, down_k = split_factors(svd, k)
        k = int(down_k.shape[0])
        optimal = math.sqrt(float(dense[k:].pow(2).sum()))
        residual = float((product - up_k.double() @ down_k.double()).norm())
        assert residual - optimal <= 1e-5 * max(norm, 1e-30)
        assert abs(tail_norm(svd.S, k) - optimal) <= 1e-6 * max(norm, 1e-30)


def test_singular_vectors_are_orthonormal_and_reproduce_the_product():
    gen = torch.Generator().manual_seed(3)
    up, down = torch.randn(64, 20, generator=gen), torch.randn(20, 48, generator=gen)
    svd = factored_svd(up, down)
    eye = torch.eye(20, dtype=torch.float64)
    assert torch.allclose(svd.U.double().T @ svd.U.double(), eye, atol=1e-5)
    assert torch.allclose(svd.Vh.double() @ svd.Vh.double().T, eye, atol=1e-5)
    rebuilt = (svd.U.double() * svd.S.double()) @ svd.Vh.double()
    assert torch.allclose(rebuilt, up.double() @ down.double(), atol=1e-4)
