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


@register_merge_method("concat", exact=True, accepts_dense=False)
def merge_concat_module(
    name: str,
    modules: Sequence[ModuleLike | None],
    weights: Sequence[float],
    *,
    rank: int | None = None,
    seed: int | None = None,
) -> tuple[LoraModule | None, ModuleReport]:
    """Exact: stack factors with √|w·α/r| folded into each side; rank = Σ input ranks."""
    import torch

    from loradex.registry.errors import UsageError

    present = [(m, w) for m, w in zip(modules, weights) if m is not None]
    shape = common_weight_shape(name, [m for m, _ in present])
    ups, downs = [], []
    for module, w in present:
        coef = float(w) * module.scale
        if coef == 0.0:
            continue  # contributes nothing; keeping it would only add zero rank
        root = math.sqrt(abs(coef))
        ups.append(module.up_matrix() * (math.copysign(root, coef)))
        downs.append(module.down_matrix() * root)
    input_ranks = [m.rank if m is not None else None for m in modules]
    if not ups:
        return None, ModuleReport(name=name, rank=0, input_ranks=input_ranks, note="all weights are zero")
    up = torch.cat(ups, dim=1).to(compute_dtype())
    down = torch.cat(downs, dim=0).to(compute_dtype())
    new_rank = int(down.shape[0])
    if rank is not None and int(rank) != new_rank:
        # concat cannot reach another rank and stay exact: refuse rather than truncate silently
        raise UsageError(
            f"{name}: concat gives rank {new_rank} (the sum of the input ranks), not {rank}",
            hint="leave --rank out for concat, or use --method svd to re-rank",
        )
    merged = lora_from_factors(up, down, shape, alpha=float(new_rank))
    return merged, ModuleReport(name=name, rank=new_rank, input_ranks=input_ranks, note="exact")
