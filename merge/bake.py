"""Bake: fuse LoRAs into a base checkpoint (W + Σ w·ΔW) in the base's own layout or, through
``bake_layouts``, the other one (sd1 / sdxl); registered as the recipe op ``bake``.

Flux.1 / SD 3 bases bake in their own layout: a diffusers folder (the transformer's files
rewritten) or an original BFL / SAI single file (each fused qkv / linear1 weight gets its parts'
ΔW in their rows)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .catalog_merge import _input_entry, _open_checked, _resolve_inputs, check_families
from .conventions.adapter_io import version_family
from .model_weights import _check_model_hash, _fused_file, _model_input, fuse_targets, open_model, replace_folder
from .recipes import loradex_version, register_recipe_op

Progress = Callable[[int, int, str], None]

BAKE_FORMATS = ("diffusers", "single-file")


def bake(catalog, base: str, refs_with_weights: Sequence[Any], out: str | os.PathLike, *,
         format: str | None = None, name: str | None = None, version: str | None = None,
         allow_missing: bool = False, config: str | os.PathLike | None = None,
         progress: Progress | None = None) -> dict:
    """Fuse adapters into a base (W + Σ w·α/r·up@down) and write a checkpoint at ``out``.

    Every weight keeps its dtype. In the base's own layout (``format`` None or that layout) the
    base's files are rewritten with the fused weights; in the other one (sd1/sdxl,
    ``merge.bake_layouts``) the fused weights are renamed: a diffusers folder becomes an
    original-layout single file, and a single file becomes a diffusers folder built on ``config`` (a
    diffusers folder of the same family: its configs, tokenizers and scheduler are copied, its
    weights replaced). Adapter modules the base lacks are an error
    unless ``allow_missing`` (then listed in ``missing``). With ``name`` a single-file result is
    registered as a version of kind ``checkpoint`` (``merged_from`` each adapter, with the recipe).
    Returns {out, format, sha256, fused, missing, version?}.
    """
    from loradex.families import require
    from loradex.registry.errors import UsageError

    from .bake_layouts import check_layout_change
    from .recipes import sha256_of, write_recipe_output

    if format not in (None, *BAKE_FORMATS):
        raise UsageError(f"--format {format}: expected diffusers or single-file")
    base_entry, weights = _model_input(base, "base", catalog)
    target = format or weights.layout
    if name is not None and target != "single-file":
        raise UsageError(f"--name {name}: the catalog stores single files (one blob per version), not a "
                         "diffusers folder", hint="add --format single-file to register the result, or leave --name out")
    options: dict[str, Any] = {"allow_missing": bool(allow_missing)}
    if target != weights.layout:
        options.update(check_layout_change(base, weights, target, config))
    entries = [_input_entry(r) for r in refs_with_weights]
    versions = _resolve_inputs(catalog, entries)
    families = {v.ref: version_family(catalog, v) for v in versions}
    for adapter_family in (*families.values(), weights.family):  # a recognised-only family: one line, first
        require(adapter_family, "bake")
    family = check_families(families, base_family=weights.family)
    for entry, v in zip(entries, versions):
        entry.update(ref=v.ref, sha256=v.sha256, role="adapter")
    recipe = {"op": "bake", "inputs": [base_entry, *entries], "options": options, "seed": None, "base": family,
              "loradex_version": loradex_version(), "output": {"format": target, "dtype": "keep", "name": name}}
    out = Path(out)
    fused, missing = write_recipe_output(catalog, recipe, out, progress=progress)
    result = {"out": str(out), "format": target, "sha256": sha256_of(out), "fused": fused, "missing": missing}
    if name is not None:
        from loradex.registry.catalog.adding import add_file

        added = add_file(catalog, out, name=name, version=version, kind="checkpoint", base=family,
                         message="bake", lineage=[{"relation": "merged_from", "parent": v.ref, "recipe": recipe}
                                                  for v in versions])
        result["version"] = added.version.to_dict()
    return result


def _refuse_nonfinite(entries, adapters) -> None:
    """A NaN/Inf in an adapter would become NaN weights in the checkpoint: named per module, refused."""
    from .catalog_merge import check_finite
    from .math.merge_report import AdapterReport

    for entry, adapter in zip(entries, adapters):
        check_finite(AdapterReport("bake"), entry["ref"], adapter.nonfinite_modules(), allow=False,
                     hint="baking it would write NaN/Inf weights into the checkpoint; fix or re-export the adapter")


@register_recipe_op("bake")
def write_bake(catalog, recipe: dict, dest: Path, *, progress: Progress | None = None) -> tuple[int, list[str]]:
    from loradex.registry.files.atomic_files import atomic_output
    from loradex.registry.errors import CoverageError

    base_entry, *entries = recipe["inputs"]
    weights = open_model(base_entry["ref"], catalog)
    _check_model_hash(base_entry, weights)
    adapters = [_open_checked(catalog, e)[1] for e in entries]
    _refuse_nonfinite(entries, adapters)
    missing = sorted({n for a in adapters for n in a.names()} - set(weights.entries))
    if missing and not (recipe.get("options") or {}).get("allow_missing"):
        raise CoverageError("adapter modules with no matching weight in the base", missing,
                            hint="the adapters target modules this base does not have; "
                                 "--allow-missing bakes the rest and lists these")
    dest = Path(dest)
    by_file = fuse_targets(weights, {n for a in adapters for n in a.names()})
    if recipe["output"]["format"] != weights.layout:
        from .bake_layouts import LAYOUT_CHANGES

        fused = LAYOUT_CHANGES[weights.layout](weights, by_file, adapters, entries, recipe, dest, progress)
        return fused, missing
    if weights.layout == "single-file":
        blob, fused = _fused_file(weights.files[0], by_file.get(str(weights.files[0]), {}), adapters, entries, progress)
        with atomic_output(dest) as fh:
            fh.write(blob)
        return fused, missing
    src, fused = Path(weights.source), 0

    def fill(staged: Path) -> None:
        nonlocal fused
        shutil.copytree(src, staged)
        for file, targets in sorted(by_file.items()):
            blob, count = _fused_file(Path(file), targets, adapters, entries, progress)
            fused += count
            (staged / Path(file).relative_to(src)).write_bytes(blob)

    replace_folder(dest, fill)
    return fused, missing
