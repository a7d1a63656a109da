"""Optimal rank-k merge: the truncated SVD of Σ w_i·ΔW_i, computed from the factors.

For LoRA inputs the m×n sum is never built: U = [up_i] (m×R), D = [down_i] (R×n) and the column
scale c_i = w_i·α_i/r_i; the Gram matrices of both give the R×R core whose eigendecomposition is
the SVD of the sum (see ``lowrank_svd.factored_svd``). By Eckart–Young the truncation is the
best rank-k approximation in Frobenius norm, and its residual is the norm of the dropped singular
values. When an input is a full ΔW (expanded LyCORIS) the sum is materialised for
that module only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .lora_module import (
    DenseDelta,
    LoraModule,
    ModuleLike,
    common_weight_shape,
    compute_dtype,
    delta_weight,
    lora_from_factors,
    matrix_shape,
)
from .lowrank_svd import (
    FactoredSVD,
    ThinSVD,
    dense_svd,
    factored_svd,
    lowrank_sum_norm,
    retained_fro_fraction,
    select_rank,
    split_factors,
    tail_norm,
)
from .merge_methods import default_rank, register_merge_method
from .merge_report import ModuleReport


def weighted_factors(
    modules: Sequence[LoraModule | None], weights: Sequence[float]
) -> tuple["object", "object", list[float]] | None:
    """(U [m, R], D [R, n], c [R]) with U·diag(c)·D = Σ w_i·α_i/r_i·up_i@down_i: the factors as
    stored (conv kernels flattened, not yet scaled or cast), each input's coefficient per column."""
    import torch

    ups, downs, scale = [], [], []
    for module, w in zip(modules, weights):
        if module is None:
            continue
        coef = float(w) * module.scale
        if coef == 0.0:
            continue
        ups.append(module.up.reshape(module.up.shape[0], module.rank))
        downs.append(module.down.reshape(module.rank, -1))
        scale.extend([coef] * module.rank)
    if not ups:
        return None
    return torch.cat(ups, dim=1), torch.cat(downs, dim=0), scale


def weighted_dense_sum(modules: Sequence[ModuleLike | None], weights: Sequence[float], shape) -> "object":
    """Σ w_i·ΔW_i as an [out, in·kh·kw] float32 matrix."""
    import torch

    rows, cols = matrix_shape(shape)
    total = torch.zeros(rows, cols, dtype=compute_dtype())
    for module, w in zip(modules, weights):
        if module is not None and float(w) != 0.0:
            total += delta_weight(module, w).reshape(rows, cols)
    return total


def lowrank_result(
    name: str,
    svd: ThinSVD | FactoredSVD,
    shape: tuple[int, ...],
    k: int,
    *,
    clamp_quantile: float | None,
    input_ranks: list[int | None],
    target_terms: list | None = None,
    target_dense=None,
    note: str = "",
) -> tuple[LoraModule, ModuleReport]:
    """Build the rank-k module from an SVD of the target and report its residual.

    Without clamping the residual is exact from the dropped singular values; with clamping it is
    measured against the target (``target_terms`` as factor pairs, or ``target_dense``).
    """
    up, down = split_factors(svd, k, clamp_quantile=clamp_quantile)
    k = int(down.shape[0])
    energy = svd.energy()
    if clamp_quantile is None:
        residual = tail_norm(svd.S, k)
    elif target_terms is not None:
        residual = lowrank_sum_norm([*target_terms, (-up, down)])
    else:
        residual = float((target_dense - up @ down).norm())
    norm = math.sqrt(energy)
    module = lora_from_factors(up, down, shape, alpha=float(k))
    report = ModuleReport(
        name=name,
        rank=k,
        input_ranks=input_ranks,
        residual=residual,
        relative_residual=residual / norm if norm > 0 else 0.0,
        retained_fro=retained_fro_fraction(svd.S, k),
        note=note,
    )
    return module, report


@register_merge_method("svd", parallel=True)
def merge_svd_module(
    name: str,
    modules: Sequence[ModuleLike | None],
    weights: Sequence[float],
    *,
    rank: int | None = None,
    seed: int | None = None,
    conv_rank: int | None = None,
    clamp_quantile: float | None = None,
    dynamic: tuple[str, float] | None = None,
) -> tuple[LoraModule | None, ModuleReport]:
    """Optimal rank-R approximation of the weighted sum (from the stacked factors' Gram matrices)."""
    from loradex.registry.errors import UsageError

    input_ranks = [m.rank if m is not None else None for m in modules]
    present = [m for m in modules if m is not None]
    shape = common_weight_shape(name, present)
    target_rank = default_rank(modules, conv_rank if (len(shape) == 4 and conv_rank) else rank)
    if target_rank is None and dynamic is None:
        raise UsageError(f"{name}: only full ΔW inputs here; give a rank")
    dense = any(isinstance(m, DenseDelta) for m in present)
    if not dense:
        factors = weighted_factors(modules, weights)
        if factors is None:
            return None, ModuleReport(name=name, rank=0, input_ranks=input_ranks, note="all weights are zero")
        up, down, scale = factors
        svd = factored_svd(up, down, scale)
        k = select_rank(svd.S, target_rank, dynamic)
        return lowrank_result(
            name, svd, shape, k, clamp_quantile=clamp_quantile, input_ranks=input_ranks,
            target_terms=[(svd.up * svd.up.new_tensor(scale), svd.down)] if clamp_quantile is not None else None,
        )
    total = weighted_dense_sum(modules, weights, shape)
    svd = dense_svd(total)
    k = select_rank(svd.S, target_rank, dynamic)
    return lowrank_result(
        name,
        svd,
        shape,
        k,
        clamp_quantile=clamp_quantile,
        input_ranks=input_ranks,
        target_dense=total,
        note="materialised: a full-ΔW input",
    )
