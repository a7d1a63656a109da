"""TIES, DARE, magnitude prune and task arithmetic on ΔW, then SVD back to a LoRA.

The element-wise combinations are peft's own (``peft.utils.merge_utils``), applied to each
adapter's full ΔW = α/r·up@down (zeros where an adapter lacks the module) with the adapter weights
as peft's ``weights`` tensor. The combined ΔW is not low-rank any more, so it is truncated to the
requested rank (default: the largest input rank) by a full SVD — the optimal rank-k approximation
of what peft produced.

DARE draws random masks: each module gets its own seed derived from (seed, module name), so the
result does not depend on the order modules are streamed in, and the global torch RNG is left as it
was (``torch.random.fork_rng``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from .lora_module import ModuleLike, common_weight_shape, compute_dtype, delta_weight, matrix_shape
from .lowrank_svd import dense_svd, select_rank
from .merge_methods import default_rank, register_merge_method
from .svd_merge import lowrank_result

DEFAULT_SEED = 0


@dataclass(frozen=True)
class PeftCombination:
    peft_function: str  # name in peft.utils.merge_utils
    needs_density: bool
    random: bool
    takes_sign_method: bool


PEFT_COMBINATIONS: dict[str, PeftCombination] = {
    "task-arithmetic": PeftCombination("task_arithmetic", needs_density=False, random=False, takes_sign_method=False),
    "magnitude-prune": PeftCombination("magnitude_prune", needs_density=True, random=False, takes_sign_method=False),
    "ties": PeftCombination("ties", needs_density=True, random=False, takes_sign_method=True),
    "dare-linear": PeftCombination("dare_linear", needs_density=True, random=True, takes_sign_method=False),
    "dare-ties": PeftCombination("dare_ties", needs_density=True, random=True, takes_sign_method=True),
}


def module_seed(seed: int, module_name: str) -> int:
    """Per-module seed: stable across runs, platforms and streaming order."""
    digest = hashlib.sha256(f"{int(seed)}:{module_name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def combine_deltas(
    method: str,
    deltas: Sequence["object"],
    weights: Sequence[float],
    *,
    density: float | None = None,
    majority_sign_method: str = "total",
    seed: int | None = None,
) -> "object":
    """peft's combination of per-adapter ΔW tensors (same shapes) under ``torch.manual_seed(seed)``."""
    import torch
    from peft.utils import merge_utils

    from loradex.registry.errors import UsageError

    spec = PEFT_COMBINATIONS[method]
    if spec.needs_density and density is None:
        raise UsageError(f"method {method!r} needs a density (fraction of values kept, 0..1)")
    fn = getattr(merge_utils, spec.peft_function)
    w = torch.tensor([float(x) for x in weights], dtype=compute_dtype())
    args: list = [list(deltas), w]
    if spec.needs_density:
        args.append(float(density))
    if spec.takes_sign_method:
        args.append(majority_sign_method)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(int(seed))
        return fn(*args)


def combined_module_delta(
    method: str,
    name: str,
    modules: Sequence[ModuleLike | None],
    weights: Sequence[float],
    *,
    density: float | None = None,
    majority_sign_method: str = "total",
    seed: int | None = None,
) -> "object":
    """The combined ΔW of one module, before the SVD step, as an [out, in(, kh, kw)] tensor."""
    import torch

    shape = common_weight_shape(name, [m for m in modules if m is not None])
    deltas = [
        delta_weight(m).reshape(shape) if m is not None else torch.zeros(shape, dtype=compute_dtype())
        for m in modules
    ]
    spec = PEFT_COMBINATIONS[method]
    mseed = module_seed(DEFAULT_SEED if seed is None else seed, name) if spec.random else None
    return combine_deltas(
        method, deltas, weights, density=density, majority_sign_method=majority_sign_method, seed=mseed
    )


def _register(method: str) -> None:
    spec = PEFT_COMBINATIONS[method]

    def merge_module(
        name: str,
        modules: Sequence[ModuleLike | None],
        weights: Sequence[float],
        *,
        rank: int | None = None,
        seed: int | None = None,
        density: float | None = None,
        majority_sign_method: str = "total",
        conv_rank: int | None = None,
        clamp_quantile: float | None = None,
    ):
        from loradex.registry.errors import UsageError

        input_ranks = [m.rank if m is not None else None for m in modules]
        shape = common_weight_shape(name, [m for m in modules if m is not None])
        target_rank = default_rank(modules, conv_rank if (len(shape) == 4 and conv_rank) else rank)
        if target_rank is None:
            raise UsageError(f"{name}: only full ΔW inputs here; give a rank")
        combined = combined_module_delta(
            method, name, modules, weights, density=density, majority_sign_method=majority_sign_method, seed=seed
        ).reshape(matrix_shape(shape))
        svd = dense_svd(combined)
        k = select_rank(svd.S, target_rank)
        note = f"{method} then svd"
        if spec.random and seed is None:
            note += f" (seed {DEFAULT_SEED}, the default)"
        return lowrank_result(
            name,
            svd,
            shape,
            k,
            clamp_quantile=clamp_quantile,
            input_ranks=input_ranks,
            target_dense=combined,
            note=note,
        )

    merge_module.__name__ = f"merge_{method.replace('-', '_')}_module"
    merge_module.__doc__ = f"peft's {spec.peft_function} on each adapter's ΔW, then the optimal rank-R SVD."
    register_merge_method(method, uses_seed=spec.random)(merge_module)


for _method in PEFT_COMBINATIONS:
    _register(_method)
