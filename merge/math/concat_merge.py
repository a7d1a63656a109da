"""Exact merge by concatenating factors.

Σ_i c_i · up_i @ down_i (c_i = w_i · α_i / r_i) equals [s_i·sign(c_i)·up_i]_i @ [s_i·down_i]_i with
s_i = √|c_i|: stacking the scaled ``up`` columns and ``down`` rows gives a module of rank Σ r_i
whose product is the runtime sum, with α = new rank (scale 1). Conv modules stack the same way
(the k×k kernel stays on ``down``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .lora_module import LoraModule, ModuleLike, common_weight_shape, compute_dtype, lora_from_factors
from .merge_methods import register_merge_method
from .merge_report import ModuleReport


@register_merge_method("concat", exact=True, accepts_dense=False, parallel=True)
def merge_concat_module(
    name: str,
    modules: Sequence[ModuleLike | None],
    weights: Sequence[float],
    *,
    rank: int | None = None,
    seed: int | None = None,
    dtype=None,
) -> tuple[LoraModule | None, ModuleReport]:
    """Exact: stack factors with √|w·α/r| folded into each side; rank = Σ input ranks.

    ``dtype`` is the factors' dtype in the result (None: float32). A factor already in that dtype
    is scaled in place of a float32 round trip: torch multiplies half/bfloat16 tensors by a scalar
    in float32 and rounds once, so the bits equal float32 math cast to ``dtype`` — at a fraction of
    the memory traffic (concat is bound by reading and writing).
    """
    import torch

    from loradex.registry.errors import UsageError

    present = [(m, w) for m, w in zip(modules, weights) if m is not None]
    shape = common_weight_shape(name, [m for m, _ in present])
    out_dtype = dtype or compute_dtype()

    def scaled(factor, factor_scale):
        matrix = factor.reshape(factor.shape[0], -1)  # up → [out, r], down → [r, in·kh·kw]
        if matrix.dtype != out_dtype:
            matrix = matrix.to(compute_dtype())
        return (matrix * factor_scale).to(out_dtype)

    ups, downs = [], []
    for module, w in present:
        coef = float(w) * module.scale
        if coef == 0.0:
            continue  # contributes nothing; keeping it would only add zero rank
        root = math.sqrt(abs(coef))
        ups.append(scaled(module.up, math.copysign(root, coef)))
        downs.append(scaled(module.down, root))
    input_ranks = [m.rank if m is not None else None for m in modules]
    if not ups:
        return None, ModuleReport(name=name, rank=0, input_ranks=input_ranks, note="all weights are zero")
    up = torch.cat(ups, dim=1)
    down = torch.cat(downs, dim=0)
    new_rank = int(down.shape[0])
    if rank is not None and int(rank) != new_rank:
        # concat cannot reach another rank and stay exact: refuse rather than truncate silently
        raise UsageError(
            f"{name}: concat gives rank {new_rank} (the sum of the input ranks), not {rank}",
            hint="leave --rank out for concat, or use --method svd to re-rank",
        )
    merged = lora_from_factors(up, down, shape, alpha=float(new_rank))
    return merged, ModuleReport(name=name, rank=new_rank, input_ranks=input_ranks, note="exact")
