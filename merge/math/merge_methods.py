"""Registry of merge methods by name, and the module-by-module driver they share.

A method registers a per-module function::

    @register_merge_method("svd")
    def merge_svd_module(name, modules, weights, *, rank=None, seed=None, **opts) -> (LoraModule | None, ModuleReport)

``modules`` holds one entry per input adapter (None where that adapter lacks the module). The
driver (``merge_stream``) asks a loader for one module group at a time, so callers can stream
modules from disk and never hold every ΔW at once; ``merge_adapters`` is the in-memory form.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from loradex.registry.errors import DecompositionFailed

from .lora_module import DenseDelta, LoraModule, ModuleLike
from .merge_report import AdapterReport, ModuleReport

ModuleMergeFn = Callable[..., "tuple[LoraModule | None, ModuleReport]"]
Progress = Callable[[int, int, str], None]

# modules whose import registers the built-in methods (imported on first look-up, not at
# package import, so `loradex --help` never pays for them)
_BUILTIN_METHOD_MODULES = ("concat_merge", "svd_merge", "ties_dare")


@dataclass(frozen=True)
class MergeMethod:
    name: str
    merge_module: ModuleMergeFn
    exact: bool  # result ΔW equals the weighted sum to float rounding
    accepts_dense: bool  # takes DenseDelta inputs (expanded LyCORIS)
    uses_seed: bool
    summary: str
    # the per-module function is pure (no global RNG, no shared state): modules may be merged
    # concurrently, each with single-threaded torch ops (see module_pool)
    parallel: bool = False

    def option_names(self) -> set[str]:
        params = inspect.signature(self.merge_module).parameters
        return {p.name for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def merge(
        self,
        adapters: Sequence[Mapping[str, ModuleLike]],
        weights: Sequence[float],
        *,
        rank: int | None = None,
        seed: int | None = None,
        progress: Progress | None = None,
        **opts,
    ) -> tuple[dict[str, LoraModule], AdapterReport]:
        return merge_adapters(self.name, adapters, weights, rank=rank, seed=seed, progress=progress, **opts)


_METHODS: dict[str, MergeMethod] = {}


def _canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def register_merge_method(name: str, *, exact: bool = False, accepts_dense: bool = True, uses_seed: bool = False,
                          parallel: bool = False):
    """Decorator: register a per-module merge function under ``name`` (``_`` and ``-`` are the same).

    ``parallel``: the function is pure, so ``merge_stream`` may run modules on worker threads.
    """

    def decorate(fn: ModuleMergeFn) -> ModuleMergeFn:
        key = _canonical(name)
        if key in _METHODS and _METHODS[key].merge_module is not fn:
            raise ValueError(f"merge method {key!r} is already registered")
        doc = (fn.__doc__ or "").strip().splitlines()
        _METHODS[key] = MergeMethod(key, fn, exact, accepts_dense, uses_seed, doc[0] if doc else "", parallel)
        return fn

    return decorate


def _load_builtin_methods() -> None:
    for module in _BUILTIN_METHOD_MODULES:
        importlib.import_module(f"{__package__}.{module}")


def available_merge_methods() -> list[str]:
    _load_builtin_methods()
    return sorted(_METHODS)


def get_merge_method(name: str) -> MergeMethod:
    from loradex.registry.errors import UsageError

    _load_builtin_methods()
    method = _METHODS.get(_canonical(name))
    if method is None:
        raise UsageError(f"unknown merge method {name!r}", hint=f"one of: {', '.join(sorted(_METHODS))}")
    return method


def _check_options(method: MergeMethod, opts: Mapping[str, object]) -> None:
    from loradex.registry.errors import UsageError

    unknown = sorted(set(opts) - method.option_names())
    if unknown:
        raise UsageError(
            f"merge method {method.name!r} does not take option(s) {', '.join(unknown)}",
            hint=f"it takes: {', '.join(sorted(method.option_names())) or 'none'}",
        )


MODULES_PER_TASK = 8


@contextmanager
def decomposition_guard(name: str):
    """Turn torch's LinAlgError on module ``name`` into a one-line error naming it."""
    import torch

    try:
        yield
    except torch.linalg.LinAlgError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DecompositionFailed(f"{name}: the decomposition failed ({first[:160]})",
                                  hint="NaN/Inf values cannot be factored; fix the input, or merge with "
                                       "--method concat, which needs no decomposition") from None


def merge_stream(
    method: str | MergeMethod,
    module_names: Iterable[str],
    load_group: Callable[[str], Sequence[ModuleLike | None]],
    weights: Sequence[float],
    *,
    rank: int | None = None,
    seed: int | None = None,
    progress: Progress | None = None,
    module_weights: Callable[[str], Sequence[float]] | None = None,
    workers: int | None = None,
    cast_to=None,
    **opts,
) -> Iterator[tuple[str, LoraModule | None, ModuleReport]]:
    """Merge one module at a time: ``load_group(name)`` returns that module from each input.

    Yields (name, merged module or None when nothing is left, report), in the order of
    ``module_names``. ``module_weights(name)``, if given, multiplies the adapter weights per module
    (block weights). ``cast_to``: the merged factors' dtype (the output file's), applied as each
    module is done — the values a later cast would give. A ``parallel`` method runs on
    ``workers`` threads (default: one per torch thread), each module loaded, merged and cast on its
    worker with single-threaded torch ops, so the bytes do not depend on the count.
    """
    from .module_pool import default_workers, ordered_map

    m = method if isinstance(method, MergeMethod) else get_merge_method(method)
    _check_options(m, opts)
    names = list(module_names)
    total = len(names)

    def merge_one(name: str):
        group, w = _module_inputs(m, name, load_group, weights, module_weights)
        with decomposition_guard(name):
            merged, report = m.merge_module(name, group, w, rank=rank, seed=seed, **opts)
        if merged is not None and cast_to is not None:
            merged = dataclasses.replace(merged, down=merged.down.to(cast_to), up=merged.up.to(cast_to))
        return merged, report

    if m.parallel:
        # a task is a run of modules: one hand-off between threads per run, not per module
        runs = [names[i:i + MODULES_PER_TASK] for i in range(0, len(names), MODULES_PER_TASK)]
        merged_runs = ordered_map(lambda run: [merge_one(name) for name in run], runs,
                                  default_workers() if workers is None else workers)
        results = (result for run in merged_runs for result in run)
    else:
        results = map(merge_one, names)
    for done, (name, (merged, report)) in enumerate(zip(names, results)):
        if progress is not None:
            progress(done + 1, total, name)
        yield name, merged, report


def _module_inputs(m: MergeMethod, name: str, load_group, weights, module_weights) -> tuple[list, list[float]]:
    """(one module per input, the weights for this module), checked."""
    from loradex.registry.errors import IncompatibleAdapters, UsageError

    group = list(load_group(name))
    if len(group) != len(weights):
        raise UsageError(f"{name}: {len(group)} inputs but {len(weights)} weights")
    if not m.accepts_dense and any(isinstance(g, DenseDelta) for g in group):
        raise IncompatibleAdapters(
            f"{name}: method {m.name!r} needs LoRA factors, but an input is a full ΔW (LyCORIS)",
            hint="use --method svd (or ties/dare) for LyCORIS inputs",
        )
    w = [float(x) for x in weights]
    if module_weights is not None:
        w = [a * float(b) for a, b in zip(w, module_weights(name), strict=True)]
    return group, w


def merge_adapters(
    method: str | MergeMethod,
    adapters: Sequence[Mapping[str, ModuleLike]],
    weights: Sequence[float],
    *,
    rank: int | None = None,
    seed: int | None = None,
    progress: Progress | None = None,
    module_weights: Callable[[str], Sequence[float]] | None = None,
    **opts,
) -> tuple[dict[str, LoraModule], AdapterReport]:
    """Merge in-memory adapters (dicts name → LoraModule / DenseDelta) with a registered method.

    Modules present in only some adapters are merged from those that have them.
    """
    from loradex.registry.errors import UsageError

    m = method if isinstance(method, MergeMethod) else get_merge_method(method)
    if len(adapters) != len(weights):
        raise UsageError(f"{len(adapters)} adapters but {len(weights)} weights")
    if not adapters:
        raise UsageError("nothing to merge")
    names: dict[str, None] = {}
    for adapter in adapters:
        names.update(dict.fromkeys(adapter))  # first-seen order, deterministic
    report = AdapterReport(
        operation=f"merge:{m.name}",
        params={"weights": [float(w) for w in weights], "rank": rank, "seed": seed, **opts},
    )
    stream = merge_stream(
        m,
        names,
        lambda n: [a.get(n) for a in adapters],
        weights,
        rank=rank,
        seed=seed,
        progress=progress,
        module_weights=module_weights,
        **opts,
    )
    return collect_stream(stream, report), report


def collect_stream(stream, report: AdapterReport) -> dict[str, LoraModule]:
    """Gather ``merge_stream``'s output: merged modules returned, skips and reports into ``report``."""
    merged: dict[str, LoraModule] = {}
    for name, module, module_report in stream:
        if module is None:
            report.skipped[name] = module_report.note or "no contribution"
        else:
            merged[name] = module
            report.add(module_report)
    return merged


def default_rank(modules: Sequence[ModuleLike | None], rank: int | None) -> int | None:
    """The requested rank, else the largest input rank of this module (None if all are dense)."""
    if rank is not None:
        return int(rank)
    ranks = [m.rank for m in modules if isinstance(m, LoraModule)]
    return max(ranks) if ranks else None
