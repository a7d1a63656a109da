"""Extract a LoRA from a fine-tuned model: truncated SVD of W_tuned − W_base per module.

Works one module at a time on any mappings (e.g. lazy safetensors readers), so memory stays at one
ΔW plus its SVD. Modules whose difference is below ``min_diff`` (typically a text encoder that was
not trained) are listed in the report's ``skipped`` with the measured difference, never dropped
silently. 3×3 conv layers are extracted only when ``conv_rank`` is given, as in kohya's
``extract_lora_from_models``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from .catalog_merge import check_families, lora_metadata, register_result, write_lora_file
from .conventions.encoding import torch_dtype
from .model_weights import _View, _check_model_hash, _lineage_parent, _model_input, open_model
from .math.lora_module import LoraModule, compute_dtype, lora_from_factors, matrix_shape
from .math.lowrank_svd import dense_svd, retained_fro_fraction, select_rank, split_factors, tail_norm
from .math.merge_report import AdapterReport, ModuleReport
from .recipes import loradex_version, register_recipe_op

Progress = Callable[[int, int, str], None]
DEFAULT_MIN_DIFF = 0.01  # kohya's default: max |ΔW| at or below this counts as "not trained"


def extract_module(
    base_weight: "object",
    tuned_weight: "object",
    rank: int | None = None,
    *,
    name: str = "",
    dynamic: tuple[str, float] | None = None,
    clamp_quantile: float | None = None,
) -> tuple[LoraModule, ModuleReport]:
    """Rank-k LoRA (α = k, scale 1) whose ΔW is the best approximation of tuned − base."""
    shape = tuple(int(s) for s in tuned_weight.shape)
    delta = (tuned_weight.to(compute_dtype()) - base_weight.to(compute_dtype())).reshape(matrix_shape(shape))
    svd = dense_svd(delta)
    k = select_rank(svd.S, rank, dynamic)
    up, down = split_factors(svd, k, clamp_quantile=clamp_quantile)
    k = int(down.shape[0])
    norm = svd.energy() ** 0.5
    residual = tail_norm(svd.S, k) if clamp_quantile is None else float((delta - up @ down).norm())
    report = ModuleReport(
        name=name,
        rank=k,
        residual=residual,
        relative_residual=residual / norm if norm > 0 else 0.0,
        retained_fro=retained_fro_fraction(svd.S, k),
    )
    return lora_from_factors(up, down, shape, alpha=float(k)), report


def _skip_reason(name: str, base, tuned, conv_rank: int | None) -> str | None:
    if base is None:
        return "not in the base model"
    if tuple(base.shape) != tuple(tuned.shape):
        return f"shape differs: base {tuple(base.shape)} vs tuned {tuple(tuned.shape)}"
    if tuned.dim() not in (2, 4):
        return f"not a linear or conv weight (shape {tuple(tuned.shape)})"
    if tuned.dim() == 4 and tuple(tuned.shape[2:]) != (1, 1) and conv_rank is None:
        return "k×k conv: give conv_rank to extract it"
    return None


def extract_lora(
    base_weights: Mapping[str, "object"],
    tuned_weights: Mapping[str, "object"],
    rank: int,
    *,
    conv_rank: int | None = None,
    min_diff: float = DEFAULT_MIN_DIFF,
    dynamic: tuple[str, float] | None = None,
    clamp_quantile: float | None = None,
    names: Iterable[str] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> tuple[dict[str, LoraModule], AdapterReport]:
    """LoRA modules for every (named) weight of ``tuned_weights`` that differs from the base.

    Keys are module names (the caller maps model paths to kohya names). ``skipped`` in the report
    gives each module left out and why, including those under ``min_diff``.
    """
    report = AdapterReport(
        operation="extract",
        params={"rank": rank, "conv_rank": conv_rank, "min_diff": min_diff, "clamp_quantile": clamp_quantile},
    )
    out: dict[str, LoraModule] = {}
    todo = list(names) if names is not None else list(tuned_weights)
    for done, name in enumerate(todo):
        tuned = tuned_weights[name]
        base = base_weights.get(name) if hasattr(base_weights, "get") else base_weights[name]
        reason = _skip_reason(name, base, tuned, conv_rank)
        if reason is None:
            max_diff = float((tuned.to(compute_dtype()) - base.to(compute_dtype())).abs().max())
            if max_diff <= min_diff:
                reason = f"max |ΔW| = {max_diff:.3g} ≤ min_diff {min_diff:g}"
        if reason is not None:
            report.skipped[name] = reason
        else:
            module_rank = conv_rank if (tuned.dim() == 4 and tuple(tuned.shape[2:]) != (1, 1)) else rank
            out[name], module_report = extract_module(
                base, tuned, module_rank, name=name, dynamic=dynamic, clamp_quantile=clamp_quantile
            )
            report.add(module_report)
        if progress is not None:
            progress(done + 1, len(todo), name)
    return out, report


# --- extract ------------------------------------------------------------------------------------


def extract_version(catalog, base: str, tuned: str, rank: int, *, name: str, conv_rank: int | None = None,
                    min_diff: float | None = None, version: str | None = None, dtype: str = "fp16",
                    message: str = "", progress: Progress | None = None):
    """A LoRA with the best rank-``rank`` approximation of tuned − base per target module, as a new
    version with ``extracted_from`` lineage. Modules left out (e.g. an untrained text encoder under
    ``min_diff``) are listed in ``version.extra["recipe_report"]["skipped"]``."""
    from loradex.families import require

    base_entry, base_weights = _model_input(base, "base", catalog)
    tuned_entry, tuned_weights = _model_input(tuned, "tuned", catalog)
    family = check_families({base: base_weights.family, tuned: tuned_weights.family})
    require(family, "extract")
    # a DiT transformer's LoRA is written as diffusers writes it (``transformer.<path>.lora_A/B``)
    output_format = "diffusers" if tuned_weights.has_component("transformer") else "kohya"
    recipe = {
        "op": "extract", "inputs": [base_entry, tuned_entry], "rank": int(rank),
        "options": {"conv_rank": conv_rank, "min_diff": DEFAULT_MIN_DIFF if min_diff is None else float(min_diff)},
        "seed": None, "base": family, "loradex_version": loradex_version(),
        "output": {"format": output_format, "dtype": dtype, "name": name},
    }
    return register_result(catalog, recipe, relation="extracted_from",
                           parents=[_lineage_parent(tuned_entry["ref"], catalog)], name=name, version=version,
                           bump=None, triggers=(), message=message, alias=None, progress=progress)


@register_recipe_op("extract")
def write_extract(catalog, recipe: dict, dest: Path, *, progress: Progress | None = None):
    base_entry, tuned_entry = recipe["inputs"]
    base_weights, tuned_weights = open_model(base_entry["ref"], catalog), open_model(tuned_entry["ref"], catalog)
    _check_model_hash(base_entry, base_weights)
    _check_model_hash(tuned_entry, tuned_weights)
    opts = recipe.get("options") or {}
    conv_rank = opts.get("conv_rank")
    names = tuned_weights.names(conv=conv_rank is not None)
    modules, report = extract_lora(_View(base_weights), _View(tuned_weights), recipe["rank"], conv_rank=conv_rank,
                                   min_diff=opts.get("min_diff", 0.01), names=names, progress=progress)
    if not modules:
        from loradex.registry.errors import UsageError

        raise UsageError("no module differs between base and tuned (above min_diff): nothing to extract",
                         hint="lower --min-diff, or check that the tuned model is the fine-tuned one")
    meta = lora_metadata(recipe, modules, triggers=())
    dtype = torch_dtype(recipe["output"]["dtype"])
    if recipe["output"]["format"] == "diffusers":
        write_diffusers_lora(modules, tuned_weights, dest, dtype=dtype, metadata=meta, base=recipe.get("base"))
    else:
        write_lora_file(modules, dest, dtype=dtype, metadata=meta)
    return report


def write_diffusers_lora(modules: dict[str, LoraModule], weights, dest: Path, *, dtype, metadata: dict[str, str],
                         base: str | None) -> str:
    """Write ``modules`` (kohya names of ``weights``' entries) in the diffusers/PEFT convention:
    ``<component>.<path>.lora_A/B.weight``, every module's rank and alpha in ``lora_adapter_metadata``
    (the convention's own writer, which reads its output back to check it). Returns AutoV3."""
    import torch

    from loradex.registry.files.safetensors_writer import save_safetensors

    from .conventions.convert import from_canonical
    from .conventions.lora_canonical import CanonicalLora, CanonicalModule
    from .conventions.modelspec import HASH_KEY

    lora = CanonicalLora(base=base)
    for module_name, module in sorted(modules.items()):
        entry = weights.entries[module_name]
        lora.add(entry.component, entry.path, CanonicalModule(
            module.down.to(dtype).contiguous(), module.up.to(dtype).contiguous(),
            torch.tensor(module.effective_alpha, dtype=torch.float32)))
    state_dict, own = from_canonical(lora, "diffusers", base=base)
    return save_safetensors(state_dict, dest, {**own, **metadata}, hash_key=HASH_KEY)
