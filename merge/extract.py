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

from .lora_module import LoraModule, compute_dtype, lora_from_factors, matrix_shape
from .lowrank_svd import dense_svd, retained_fro_fraction, select_rank, split_factors, tail_norm
from .merge_report import AdapterReport, ModuleReport

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


# --- catalog checkpoints: loradex DreamBooth outputs ----------------------------------------------

def open_catalog_checkpoint(version, path, source: str):
    """The LoRA-target weights (``plumbing.ModelWeights``) of a catalog checkpoint, read lazily.

    A loradex DreamBooth output names its family in its training record, and its UNet numbering
    is read from its own keys (``checkpoint_layout.unet_layout_from_ldm_keys``), so fine-tunes of
    any block structure (tiny models too) map; older DreamBooth files are diffusers-keyed (UNet
    keys bare, text encoders under ``text_encoder.``). Any other checkpoint is an ordinary single
    file (``plumbing._open_single_file``).
    """
    from safetensors import safe_open

    from .checkpoint_layout import (
        TEXT_ENCODER_PREFIXES,
        UNET_PREFIX,
        is_ldm_checkpoint,
        rename_by_prefix,
        unet_layout_from_ldm_keys,
        unet_prefix_pairs,
    )
    from .lora_canonical import canonical_text_encoder_path
    from .plumbing import ModelWeights, _add_weights, _open_single_file

    trained = (version.extra or {}).get("training") or {}
    if trained.get("weights") != "state_dict":
        return _open_single_file(path, source)
    family = (trained.get("base") or {}).get("family") or (version.probe or {}).get("base")
    with safe_open(str(path), framework="pt") as fh:
        shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    if is_ldm_checkpoint(shapes):
        layout = unet_layout_from_ldm_keys({k[len(UNET_PREFIX):]: s for k, s in shapes.items()
                                            if k.startswith(UNET_PREFIX)})
        unet_table = {ldm: diff for diff, ldm in unet_prefix_pairs(layout)}
        # open_clip's fused q/k/v (SDXL's second encoder) has no per-module weights to diff
        text_prefixes = {p: c for c, p in TEXT_ENCODER_PREFIXES.get(family, {}).items() if c == "text_encoder"}

        def mapper(module: str) -> tuple[str, str] | None:
            if module.startswith(UNET_PREFIX):
                renamed = rename_by_prefix(module[len(UNET_PREFIX):] + ".weight", unet_table)
                return ("unet", renamed.removesuffix(".weight")) if renamed else None
            for prefix, component in text_prefixes.items():
                if module.startswith(prefix):
                    return component, canonical_text_encoder_path(module[len(prefix):])
            return None
    else:
        def mapper(module: str) -> tuple[str, str] | None:
            head, _, rest = module.partition(".")
            if head in ("text_encoder", "text_encoder_2"):
                return head, canonical_text_encoder_path(rest)
            return "unet", module

    weights = ModelWeights(source, "single-file", family)
    _add_weights(weights, Path(path), mapper)
    return weights
