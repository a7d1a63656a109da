"""Change a LoRA's rank while keeping its scale.

The SVD of up@down comes from the factors (``lowrank_svd.factored_svd``, no out×in matrix). The new factors keep
α/r: α_new = α_old / r_old · r_new, so the runtime strength of the adapter is unchanged and at
full rank the result reproduces ΔW. Ranks are fixed or chosen per module by kohya's dynamic
rules (``sv_ratio``, ``sv_cumulative``, ``sv_fro``), with ``rank`` as the cap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .lora_module import LoraModule, lora_from_factors
from .lowrank_svd import factored_svd, retained_fro_fraction, select_rank, split_factors, tail_norm
from .merge_report import AdapterReport, ModuleReport


def resize_module(
    module: LoraModule,
    *,
    rank: int | None = None,
    dynamic: tuple[str, float] | None = None,
    name: str = "",
) -> tuple[LoraModule, ModuleReport]:
    """The best rank-k version of one module (k fixed, or by a dynamic rule capped at ``rank``)."""
    from loradex.registry.errors import UsageError

    if rank is None and dynamic is None:
        raise UsageError("resize needs a rank or a dynamic rule (sv_ratio / sv_cumulative / sv_fro)")
    svd = factored_svd(module.up_matrix(), module.down_matrix())
    k = select_rank(svd.S, rank, dynamic)
    up, down = split_factors(svd, k)
    k = int(down.shape[0])
    scale = module.scale
    resized = lora_from_factors(up, down, module.weight_shape, alpha=scale * k)
    norm = svd.energy() ** 0.5
    residual = tail_norm(svd.S, k) * abs(scale)
    report = ModuleReport(
        name=name,
        rank=k,
        input_ranks=[module.rank],
        residual=residual,
        relative_residual=residual / (norm * abs(scale)) if norm > 0 and scale != 0 else 0.0,
        retained_fro=retained_fro_fraction(svd.S, k),
    )
    return resized, report


def resize_adapter(
    adapter: Mapping[str, LoraModule],
    *,
    rank: int | None = None,
    dynamic: tuple[str, float] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> tuple[dict[str, LoraModule], AdapterReport]:
    """Resize every module; the report lists kept rank and retained Frobenius fraction per module."""
    report = AdapterReport(operation="resize", params={"rank": rank, "dynamic": list(dynamic) if dynamic else None})
    out: dict[str, LoraModule] = {}
    total = len(adapter)
    for done, (name, module) in enumerate(adapter.items()):
        out[name], module_report = resize_module(module, rank=rank, dynamic=dynamic, name=name)
        report.add(module_report)
        if progress is not None:
            progress(done + 1, total, name)
    return out, report


def resize(
    target: LoraModule | Mapping[str, LoraModule],
    *,
    rank: int | None = None,
    dynamic: tuple[str, float] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
):
    """``resize_module`` for one LoraModule, ``resize_adapter`` for a dict of them."""
    if isinstance(target, LoraModule):
        return resize_module(target, rank=rank, dynamic=dynamic)
    return resize_adapter(target, rank=rank, dynamic=dynamic, progress=progress)
