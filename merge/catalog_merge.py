"""Merge, resize and compare catalog versions; every result is a new version with its recipe.

The tensor math is in the merge modules (``merge_methods``, ``resize``…); this module opens the
inputs (``adapter_io``), streams modules through the math one at a time (never every ΔW at once:
only the merged factors, the output file's own size, are kept), writes a deterministic kohya
safetensors file and registers it with lineage edges carrying the recipe.

Written files are deterministic: tensors in sorted key order with a fixed dtype, metadata without
timestamps, and ``modelspec.hash_sha256`` = "0x" + sha256 of the tensor data section (the AutoV3 /
kohya "addnet" hash, computed before the metadata is added, so it equals the file's AutoV3).

Non-finite values: a NaN or ±Inf in an input module, or in a result module (an fp16 overflow),
refuses the merge / resize with every such module named (``NonFiniteValues``, exit 1), unless
the recipe's ``options.allow_nonfinite`` (``--allow-nonfinite``) is set; then they are listed in
the report (``nonfinite``) and kept, never silently.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loradex.registry.errors import NonFiniteValues
from loradex.registry.files.safetensors_writer import save_safetensors

from .conventions.adapter_io import (
    SS_BASE_MODEL_VERSION,
    AdapterSource,
    all_finite,
    module_tensors,
    open_version,
    version_family,
)
from .math.lora_module import DenseDelta, LoraModule, ModuleLike, kohya_state_dict_from_modules
from .math.merge_report import AdapterReport
from .conventions.modelspec import HASH_KEY, modelspec_metadata
from .conventions.encoding import canonical_json, torch_dtype
from .recipes import (
    loradex_version,
    register_recipe_op,
    validate_recipe,
    write_recipe_output,
)

Progress = Callable[[int, int, str], None]
ADAPTER_KINDS = ("lora", "lycoris", "locon", "loha", "lokr", "dora")
STRONG_WEIGHT = 0.5  # |weight| at or above which a stacked adapter counts as "strong"
MAX_STRONG = 3  # users report that more than ~3 strong adapters fight each other


# --- inputs -------------------------------------------------------------------------------------


def parse_weighted_ref(text: str) -> tuple[str, float]:
    """``name@1.2.0:0.7`` → ("name@1.2.0", 0.7); no ``:W`` → weight 1."""
    from loradex.registry.errors import UsageError

    ref, sep, weight = text.rpartition(":")
    if not sep:
        return text, 1.0
    try:
        return ref, float(weight)
    except ValueError:
        raise UsageError(f"{text!r}: the weight after ':' is not a number", hint="REF[:WEIGHT], e.g. style@1.0.0:0.7") from None


def _input_entry(item: Any) -> dict:
    """(ref, w) / (ref, w, te, unet) / {"ref":…} → a recipe input dict (exact ref added later)."""
    if isinstance(item, dict):
        entry = dict(item)
    elif isinstance(item, str):
        ref, w = parse_weighted_ref(item)
        entry = {"ref": ref, "weight": w}
    else:
        ref, w, *rest = item
        entry = {"ref": ref, "weight": float(w)}
        if rest:
            entry["te_weight"] = rest[0]
        if len(rest) > 1:
            entry["unet_weight"] = rest[1]
    entry.setdefault("weight", 1.0)
    entry["weight"] = float(entry["weight"])
    return entry


def check_families(named_families: dict[str, str | None], *, base_family: str | None = None) -> str | None:
    """The one base family of the inputs; different families are an error (None if unknown)."""
    from loradex.registry.errors import IncompatibleAdapters

    known = {ref: fam for ref, fam in named_families.items() if fam}
    families = set(known.values()) | ({base_family} if base_family else set())
    if len(families) > 1:
        listed = ", ".join(f"{ref} is {fam}" for ref, fam in known.items())
        if base_family:
            listed += f"; the base is {base_family}"
        raise IncompatibleAdapters(
            f"adapters for different base families cannot be combined: {listed}",
            hint="merge or stack adapters trained for the same base model only",
        )
    return next(iter(families)) if families else None


def _resolve_inputs(catalog, entries: list[dict]) -> list:
    from loradex.registry.errors import UsageError

    versions = []
    for entry in entries:
        version = catalog.resolve(entry["ref"])
        kind = (version.probe or {}).get("kind") or "lora"
        if kind not in ADAPTER_KINDS:
            raise UsageError(f"{version.ref} is a {kind}, not a LoRA/LyCORIS adapter")
        versions.append(version)
    return versions


def _open_checked(catalog, entry: dict) -> tuple[Any, AdapterSource]:
    """Open a recipe input; its stored sha256 must still be the recipe's."""
    from loradex.registry.errors import IncompatibleAdapters

    version, source = open_version(catalog, entry["ref"])
    if entry.get("sha256") and entry["sha256"] != version.sha256:
        raise IncompatibleAdapters(
            f"{entry['ref']} now has sha256 {version.sha256[:12]}…, the recipe says {entry['sha256'][:12]}…",
            hint="the recipe was made from other bytes; it cannot be replayed exactly",
        )
    return version, source


def component_weight(module_name: str, entry: dict) -> float:
    """The weight an input applies to one module: te_weight / unet_weight where given."""
    if module_name.startswith("lora_te") and entry.get("te_weight") is not None:
        return float(entry["te_weight"])
    # the denoiser: a UNet (lora_unet_…) or a DiT transformer (lora_transformer_… for Flux/SD3)
    if module_name.startswith(("lora_unet", "lora_transformer")) and entry.get("unet_weight") is not None:
        return float(entry["unet_weight"])
    return float(entry["weight"])


# --- non-finite values --------------------------------------------------------------------------


def _shown(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" … (+{len(names) - 5} more)" if len(names) > 5 else "")


def check_finite(report: AdapterReport, where: str, names: list[str], *, allow: bool, hint: str = "") -> None:
    """Refuse (or, with ``allow``, record in ``report.nonfinite``) the modules ``names`` of ``where``."""
    if not names:
        return
    if not allow:
        raise NonFiniteValues(f"{where}: NaN or Inf in {len(names)} module(s): {_shown(names)}",
                              hint=hint or "fix or re-export the input; --allow-nonfinite keeps them anyway")
    report.nonfinite += [f"{where}: {n}" for n in names]


def check_inputs_finite(report: AdapterReport, versions, sources, *, allow: bool) -> None:
    for version, source in zip(versions, sources):
        check_finite(report, version.ref, source.nonfinite_modules(), allow=allow)


def check_result_finite(report: AdapterReport, modules: dict, dtype_name: str, *, allow: bool) -> None:
    bad = [n for n, m in sorted(modules.items()) if not all_finite(module_tensors(m))]
    hint = ("values past the fp16 range overflow: try --dtype fp32 or bf16; " if dtype_name == "fp16" else "")
    check_finite(report, "result", bad, allow=allow, hint=hint + "--allow-nonfinite writes it anyway")


# --- writing ------------------------------------------------------------------------------------


def write_lora_file(modules: dict[str, LoraModule], dest: Path, *, dtype, metadata: dict[str, str],
                    base: str | None = None) -> str:
    """Write kohya safetensors (sorted keys, ``dtype`` factors, float32 alphas); returns AutoV3.

    Flux / SD3 (``base`` with a naming aspect): the modules arrive split, one per projection; they
    are written under sd-scripts' native names with the projections fused again (exact; one
    rank-r module where the parts share their down, as a concat merge leaves them, else
    block-diagonal) — the layout ComfyUI and diffusers both read, which OneTrainer's split names
    are not for diffusers beyond attention."""
    from .conventions.dit_conventions import native_kohya_state_dict

    sd = kohya_state_dict_from_modules(dict(sorted(modules.items())), dtype=dtype)
    sd = native_kohya_state_dict(sd, base)
    return save_safetensors(sd, dest, metadata, hash_key=HASH_KEY)


def lora_metadata(recipe: dict, modules: dict[str, LoraModule], *, triggers: Sequence[str],
                  carried: dict[str, str] | None = None) -> dict[str, str]:
    """kohya ``ss_*`` + ModelSpec keys for a result, and the recipe itself (``loradex.recipe``)."""
    name = recipe["output"].get("name") or "loradex"
    base = recipe.get("base")
    ranks = sorted({m.rank for m in modules.values()})
    alphas = sorted({m.effective_alpha for m in modules.values()})
    meta = dict(carried or {})
    meta.update({
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(ranks[-1]) if len(ranks) == 1 else "Dynamic",
        "ss_network_alpha": f"{alphas[0]:g}" if len(alphas) == 1 else "Dynamic",
        "ss_output_name": name,
        "loradex.recipe": canonical_json(recipe),
        **modelspec_metadata(carried or {}, base=base, title=name, triggers=triggers),
    })
    if base in SS_BASE_MODEL_VERSION:
        meta["ss_base_model_version"] = SS_BASE_MODEL_VERSION[base]
    parents = [i["ref"] for i in recipe["inputs"] if i.get("role", "adapter") == "adapter"]
    if recipe["op"] == "merge":
        meta["modelspec.merged_from"] = ", ".join(parents)
    return meta


def union_triggers(versions) -> list[str]:
    seen: dict[str, None] = {}
    for v in versions:
        seen.update(dict.fromkeys(v.trigger_words))
    return list(seen)


def report_summary(report: AdapterReport) -> dict:
    """What goes into ``version.extra``: totals plus per-module rank / retained energy."""
    return {
        "operation": report.operation,
        "max_relative_residual": report.max_relative_residual(),
        "total_residual": report.total_residual(),
        "skipped": dict(report.skipped),
        **({"nonfinite": list(report.nonfinite)} if report.nonfinite else {}),
        "modules": {n: {"rank": m.rank, "retained_fro": m.retained_fro, "relative_residual": m.relative_residual}
                    for n, m in sorted(report.modules.items())},
    }


@dataclass
class ReplayMatch:
    """A replayed recipe whose output is, byte for byte, a version its name already has: nothing
    is registered, the existing version is the answer."""

    version: Any  # registry Version
    sha256: str

    def to_dict(self) -> dict:
        return {**self.version.to_dict(), "identical_to": self.version.ref, "registered": False}


def _same_recipe(a: dict, b: dict) -> bool:
    """Equal apart from the loradex version that wrote them."""
    def strip(recipe: dict) -> str:
        return canonical_json({k: v for k, v in recipe.items() if k != "loradex_version"})

    return strip(a) == strip(b)


def match_existing(catalog, name: str, recipe: dict, out: Path) -> ReplayMatch | None:
    """A replay written at ``out`` into ``name``, which may already hold versions: the same bytes
    as one of them → that version; the same recipe as one of them but other bytes → Conflict
    showing both hashes; otherwise None (a new version)."""
    from loradex.registry.errors import Conflict, NotFound

    from .recipes import sha256_of, version_recipe

    try:
        existing = catalog.versions(name)
    except NotFound:
        return None
    sha = sha256_of(out)
    for v in existing:
        if v.sha256 == sha:
            return ReplayMatch(v, sha)
    for v in existing:
        try:
            stored = version_recipe(catalog, v.ref)
        except NotFound:
            continue
        if _same_recipe(stored, recipe):
            raise Conflict(f"replaying the recipe of {v.ref} gives sha256 {sha}, but {v.ref} has sha256 {v.sha256}",
                           hint=f"the bytes changed (loradex {stored.get('loradex_version')} wrote {v.ref}, this is "
                                f"{recipe.get('loradex_version')}); pass another --name to register the replay beside it")
    return None


def register_result(catalog, recipe: dict, *, relation: str, parents: Sequence[str | dict], name: str,
                    version: str | None, bump: str | None, triggers: Sequence[str], message: str,
                    alias: str | None, progress: Progress | None, kind: str = "lora", replay: bool = False):
    """Write the recipe's output to a temp file and add it as a version with lineage edges.
    ``replay``: a recipe run again under ``name`` — see ``match_existing``."""
    from loradex.registry.catalog.adding import add_file
    from loradex.registry.files.atomic_files import held_work_dir

    validate_recipe(recipe)
    # under the home (the store's file system): the output is moved into the store, not copied;
    # `loradex gc` removes the folder if this process is killed
    with held_work_dir(catalog.home / "tmp", prefix=f"{recipe['op']}-") as tmp:
        out = Path(tmp) / f"{name}.safetensors"
        report = write_recipe_output(catalog, recipe, out, progress=progress)
        if replay:
            match = match_existing(catalog, name, recipe, out)
            if match is not None:
                return match
        extra = {"recipe_report": report_summary(report)} if isinstance(report, AdapterReport) else {}
        # a parent is a catalog ref, or {"external_parent": "file:…"} for bases outside the catalog
        lineage = [{"relation": relation, "recipe": recipe,
                    **(parent if isinstance(parent, dict) else {"parent": parent})} for parent in parents]
        return add_file(catalog, out, name=name, version=version, bump=bump, kind=kind,
                        base=recipe.get("base") or None, triggers=list(triggers) or None,
                        message=message or f"{recipe['op']} ({recipe.get('method') or ''})".strip(),
                        extra=extra, alias=alias, lineage=lineage, move=True)


# --- merge --------------------------------------------------------------------------------------


def merge_recipe(catalog, inputs: Sequence[Any], method: str, *, rank: int | None = None, name: str,
                 seed: int | None = None, dtype: str = "fp16", options: dict | None = None) -> dict:
    """The recipe of a merge: inputs pinned to exact versions and hashes, checked for one family."""
    from .math.merge_methods import get_merge_method

    m = get_merge_method(method)  # unknown method: clear error before anything is read
    entries = [_input_entry(i) for i in inputs]
    versions = _resolve_inputs(catalog, entries)
    family = check_families({v.ref: version_family(catalog, v) for v in versions})
    for entry, version in zip(entries, versions):
        entry["ref"], entry["sha256"], entry["role"] = version.ref, version.sha256, "adapter"
        _pin_block_weights(entry, family)
    return {
        "op": "merge", "inputs": entries, "method": m.name, "rank": rank, "options": dict(options or {}),
        "seed": seed, "base": family, "loradex_version": loradex_version(),
        "output": {"format": "kohya", "dtype": dtype, "name": name},
    }


def _pin_block_weights(entry: dict, family: str | None) -> None:
    """A preset name (``INALL``) or "1,0,…" text becomes the numbers in the recipe (the name is
    kept beside them), so a replay never depends on the preset table."""
    from .conventions.lbw_blocks import block_map, preset_names
    from .math.block_weights import resolve_block_weights

    spec = entry.get("block_weights")
    if spec is None:
        return
    if isinstance(spec, str) and spec.strip().upper() in preset_names():
        entry["block_weights_preset"] = spec.strip().upper()
    entry["block_weights"] = resolve_block_weights(spec, block_map(family))


def merge_versions(catalog, inputs: Sequence[Any], method: str, rank: int | None = None, *, name: str,
                   version: str | None = None, seed: int | None = None, dtype: str = "fp16",
                   options: dict | None = None, message: str = "", alias: str | None = None,
                   progress: Progress | None = None, replay: bool = False):
    """Merge catalog versions into a new version ``name`` → ``AddResult`` (with ``replay``, a
    ``ReplayMatch`` when ``name`` already has a version with exactly these bytes; see
    ``match_existing``).

    ``inputs``: (ref, weight), (ref, weight, te_weight, unet_weight), "ref:weight" or dicts with
    ``ref``, ``weight``, ``te_weight``, ``unet_weight``, ``block_weights`` (an LBW vector, its
    "n,n,…" text or an LBW preset name such as ``INALL``).
    ``options`` go to the method (``density``, ``clamp_quantile``, ``conv_rank``…).
    """
    recipe = merge_recipe(catalog, inputs, method, rank=rank, name=name, seed=seed, dtype=dtype, options=options)
    versions = [catalog.resolve(i["ref"]) for i in recipe["inputs"]]
    return register_result(catalog, recipe, relation="merged_from", parents=[v.ref for v in versions], name=name,
                           version=version, bump=None, triggers=union_triggers(versions), message=message,
                           alias=alias, progress=progress, replay=replay)


def _module_weight_fn(entries: list[dict], family: str | None):
    from .conventions.lbw_blocks import block_map
    from .math.block_weights import module_weights_from_vectors

    vectors = [e.get("block_weights") for e in entries]
    blocks = module_weights_from_vectors(vectors, block_map(family)) if any(vectors) else None

    def weights(module_name: str) -> list[float]:
        w = [component_weight(module_name, e) for e in entries]
        if blocks is not None:
            w = [a * b for a, b in zip(w, blocks(module_name))]
        return w

    return weights


@register_recipe_op("merge")
def write_merge(catalog, recipe: dict, dest: Path, *, progress: Progress | None = None) -> AdapterReport:
    from .math.merge_methods import collect_stream, get_merge_method, merge_stream

    entries = recipe["inputs"]
    opened = [_open_checked(catalog, e) for e in entries]
    versions = [v for v, _ in opened]
    sources = [s for _, s in opened]
    check_families({v.ref: version_family(catalog, v) for v in versions})
    method = get_merge_method(recipe["method"])
    opts = dict(recipe.get("options") or {})
    allow_nonfinite = bool(opts.pop("allow_nonfinite", False))
    if "dynamic" in opts and opts["dynamic"] is not None:
        opts["dynamic"] = tuple(opts["dynamic"])
    out_dtype = torch_dtype(recipe["output"]["dtype"])
    if "dtype" in method.option_names():
        opts["dtype"] = out_dtype
    names = sorted(set().union(*(s.names() for s in sources)))
    report = AdapterReport(operation=f"merge:{method.name}",
                           params={"weights": [e["weight"] for e in entries], "rank": recipe.get("rank")})
    for source, version in zip(sources, versions):
        for key, why in source.skipped.items():
            report.skipped[f"{version.ref}:{key}"] = why
    check_inputs_finite(report, versions, sources, allow=allow_nonfinite)
    stream = merge_stream(method, names, lambda n: [s.load(n) for s in sources], [1.0] * len(entries),
                          rank=recipe.get("rank"), seed=recipe.get("seed"), progress=progress,
                          module_weights=_module_weight_fn(entries, recipe.get("base")), cast_to=out_dtype, **opts)
    merged = collect_stream(stream, report)
    check_result_finite(report, merged, recipe["output"]["dtype"], allow=allow_nonfinite)
    meta = lora_metadata(recipe, merged, triggers=union_triggers(versions))
    write_lora_file(merged, dest, dtype=out_dtype, metadata=meta, base=recipe.get("base"))
    return report


# --- resize -------------------------------------------------------------------------------------

_CARRY_SKIP = ("ss_network_dim", "ss_network_alpha", "sshs_", "modelspec.hash", "modelspec.title",
               "ss_output_name", "loradex.", "modelspec.merged_from")


def _carried(metadata: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in metadata.items()
            if (k.startswith(("ss_", "modelspec.")) and not k.startswith(_CARRY_SKIP))}


def resize_version(catalog, ref: str, *, rank: int | None = None, dynamic: tuple[str, float] | None = None,
                   name: str | None = None, version: str | None = None, dtype: str = "fp16",
                   message: str = "", progress: Progress | None = None, allow_nonfinite: bool = False):
    """A re-ranked copy of ``ref`` (α/r kept) as a new version of the same adapter (or ``name``)."""
    from loradex.registry.errors import UsageError

    if rank is None and dynamic is None:
        raise UsageError("resize needs --rank or --dynamic sv_ratio:P|sv_cumulative:P|sv_fro:P")
    source = catalog.resolve(ref)
    target = name or source.adapter
    recipe = {
        "op": "resize", "inputs": [{"ref": source.ref, "sha256": source.sha256, "role": "adapter"}],
        "rank": rank, "dynamic": list(dynamic) if dynamic else None,
        "options": {"allow_nonfinite": True} if allow_nonfinite else {}, "seed": None,
        "base": version_family(catalog, source), "loradex_version": loradex_version(),
        "output": {"format": "kohya", "dtype": dtype, "name": target},
    }
    return register_result(catalog, recipe, relation="resized_from", parents=[source.ref], name=target,
                           version=version, bump=None, triggers=list(source.trigger_words), message=message,
                           alias=None, progress=progress)


@register_recipe_op("resize")
def write_resize(catalog, recipe: dict, dest: Path, *, progress: Progress | None = None) -> AdapterReport:
    from .math.merge_methods import decomposition_guard

    version, source = _open_checked(catalog, recipe["inputs"][0])
    allow_nonfinite = bool((recipe.get("options") or {}).get("allow_nonfinite"))
    rank, dynamic = recipe.get("rank"), tuple(recipe["dynamic"]) if recipe.get("dynamic") else None
    report = AdapterReport(operation="resize", params={"rank": rank, "dynamic": recipe.get("dynamic")})
    check_inputs_finite(report, [version], [source], allow=allow_nonfinite)
    out: dict[str, LoraModule] = {}
    names = source.names()
    for done, module_name in enumerate(names):
        with decomposition_guard(module_name):
            out[module_name], module_report = _resize_one(module_name, source.load(module_name), rank, dynamic)
        report.add(module_report)
        if progress is not None:
            progress(done + 1, len(names), module_name)
    check_result_finite(report, out, recipe["output"]["dtype"], allow=allow_nonfinite)
    meta = lora_metadata(recipe, out, triggers=list(version.trigger_words), carried=_carried(source.metadata))
    write_lora_file(out, dest, dtype=torch_dtype(recipe["output"]["dtype"]), metadata=meta, base=recipe.get("base"))
    return report


def _resize_one(module_name: str, module: ModuleLike, rank, dynamic):
    from loradex.registry.errors import UsageError

    from .math.lycoris_math import to_lora_via_svd
    from .math.merge_report import ModuleReport
    from .math.resize import resize_module

    if isinstance(module, DenseDelta):
        if rank is None:
            raise UsageError(f"{module_name}: a LyCORIS ({module.source}) module needs a fixed --rank")
        lora, rel = to_lora_via_svd(module.delta, rank)
        return lora, ModuleReport(module_name, lora.rank, relative_residual=rel,
                                  note=f"{module.source} expanded, then svd")
    return resize_module(module, rank=rank, dynamic=dynamic, name=module_name)


# --- compatibility ------------------------------------------------------------------------------


def _inner_and_norms(a: ModuleLike, wa: float, b: ModuleLike, wb: float) -> tuple[float, float, float]:
    """(<ΔW_a, ΔW_b>_F, ‖ΔW_a‖², ‖ΔW_b‖²) from the factors when both are LoRAs:
    <U_a D_a, U_b D_b> = Σ (U_aᵀU_b) ⊙ (D_a D_bᵀ), never forming out×in."""
    from .math.lora_module import delta_weight

    if isinstance(a, LoraModule) and isinstance(b, LoraModule) and a.weight_shape == b.weight_shape:
        ua, da = a.up_matrix() * (wa * a.scale), a.down_matrix()
        ub, db = b.up_matrix() * (wb * b.scale), b.down_matrix()
        inner = float(((ua.T @ ub) * (da @ db.T)).sum())
        na = float(((ua.T @ ua) * (da @ da.T)).sum())
        nb = float(((ub.T @ ub) * (db @ db.T)).sum())
        return inner, na, nb
    da_, db_ = delta_weight(a, wa).flatten(), delta_weight(b, wb).flatten()
    if da_.numel() != db_.numel():
        return 0.0, float(da_ @ da_), float(db_ @ db_)
    return float(da_ @ db_), float(da_ @ da_), float(db_ @ db_)


def compat(catalog, refs: Sequence[Any], *, base_family: str | None = None) -> dict:
    """Can these adapters be stacked? Base family check (error on mismatch), then, for each pair
    touching the same modules, the cosine similarity of their ΔW per block (BASE/INnn/MID/OUTnn),
    a warning when they come from different sub-families of the family (Pony + Illustrious) or
    prediction types (epsilon + v-prediction), and one past ``MAX_STRONG`` strong adapters
    (|weight| ≥ ``STRONG_WEIGHT``)."""
    from loradex.families.vocabulary import stack_warnings

    from .math.block_weights import block_name

    entries = [_input_entry(r) for r in refs]
    versions = _resolve_inputs(catalog, entries)
    families = {v.ref: version_family(catalog, v) for v in versions}
    family = check_families(families, base_family=base_family)
    sources = [open_version(catalog, v.ref)[1] for v in versions]
    pairs = []
    for i in range(len(sources)):
        for j in range(i + 1, len(sources)):
            shared = sorted(set(sources[i].names()) & set(sources[j].names()))
            blocks: dict[str, list[float]] = {}
            for module_name in shared:
                inner, na, nb = _inner_and_norms(sources[i].load(module_name), entries[i]["weight"],
                                                 sources[j].load(module_name), entries[j]["weight"])
                acc = blocks.setdefault(block_name(module_name) or "other", [0.0, 0.0, 0.0, 0])
                acc[0] += inner
                acc[1] += na
                acc[2] += nb
                acc[3] += 1
            for block, (inner, na, nb, count) in sorted(blocks.items()):
                denom = (na * nb) ** 0.5
                pairs.append({"a": versions[i].ref, "b": versions[j].ref, "block": block, "modules": int(count),
                              "cosine": inner / denom if denom > 0 else 0.0})
    strong = [v.ref for v, e in zip(versions, entries) if abs(e["weight"]) >= STRONG_WEIGHT]
    traits = version_traits(family, versions)
    warnings = stack_warnings(family, traits)
    if len(strong) > MAX_STRONG:
        warnings.append(f"{len(strong)} strong adapters (|weight| ≥ {STRONG_WEIGHT}) stacked; "
                        f"more than {MAX_STRONG} usually fight each other — lower some weights or merge first")
    return {"family": family, "families": families, "weights": {v.ref: e["weight"] for v, e in zip(versions, entries)},
            "variants": traits, "pairs": pairs, "strong": strong, "warnings": warnings}


def version_traits(family: str | None, versions: Sequence) -> dict[str, dict]:
    """ref → the sub-family (variant) and prediction type each version's stored probe result,
    header metadata and Civitai info tell (``loradex.families.vocabulary.stored_traits``)."""
    from loradex.families.vocabulary import stored_traits

    return {v.ref: stored_traits(family, probe=v.probe, metadata=v.file_metadata, extra=v.extra)
            for v in versions}


def recipe_json(recipe: dict) -> str:
    return json.dumps(recipe, indent=2, sort_keys=True)
