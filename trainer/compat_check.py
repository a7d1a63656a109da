"""The compatibility check ``generate`` runs before rendering a stack (issue 4, "Stacking at
inference"):

- a base-family mismatch between the base and any adapter is an error naming the adapter and both
  families (adapters whose family is unknown are allowed);
- LoRA/LyCORIS adapters touching the same modules are reported with the cosine similarity of
  their weighted ΔW per block — ``merge.catalog_merge.compat`` computes it from the factors;
- adapters of different sub-families (Pony + Illustrious on SDXL) or prediction types (epsilon +
  v-prediction), as their metadata tells (``loradex.families.vocabulary.stored_traits``), are a
  warning, and so is an adapter whose prediction type is not the base's (as its name, a local
  folder's scheduler config or a checkpoint's ModelSpec header states it: ``base_prediction``);
- more than ``MAX_STRONG`` strong adapters (|weight| ≥ ``STRONG_WEIGHT``) is a warning, and so is a
  block where two adapters' ΔW are strongly aligned (they add up) or opposed (they cancel).

The result is the ``compat`` section of the prompt record; ``report_lines`` is what the CLI prints
on stderr, one line each. ``loradex compat REF…`` (merge_cmds) prints the same table on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from loradex.registry.errors import IncompatibleAdapters

# |cosine| of two adapters' ΔW in one block from which they visibly reinforce / cancel each other
ALIGNED_COSINE = 0.5


def adapter_family(catalog, version) -> str | None:
    """The version's base family (adapter row, else probe); None when unknown."""
    from loradex.merge.conventions.adapter_io import version_family

    return version_family(catalog, version)


def check_base_family(catalog, base_ref: str, base_family: str | None, versions: Sequence) -> None:
    """Error on the first adapter whose known family differs from the base's known family."""
    base_family = base_family if base_family and base_family != "unknown" else None
    if not base_family:
        return
    for version in versions:
        family = adapter_family(catalog, version)
        if family and family != base_family:
            raise IncompatibleAdapters(
                f"{version.ref} is a {family} adapter but base {base_ref} is {base_family}",
                hint=f"pick a {family} base, or {base_family} adapters")


def stack_weight(te_weight: float, unet_weight: float) -> float:
    """One weight per adapter for the check: the component weight of larger magnitude (the one
    that decides whether the adapter is 'strong'); ties go to the UNet."""
    return float(unet_weight if abs(unet_weight) >= abs(te_weight) else te_weight)


def stack_compat(catalog, base_ref: str, base_family: str | None, adapters: Sequence) -> dict:
    """The check for a resolved stack (``trainer.generate.ResolvedAdapter`` items): raises
    ``IncompatibleAdapters`` on a family mismatch, else returns the record's ``compat`` section."""
    from loradex.merge.catalog_merge import ADAPTER_KINDS, MAX_STRONG, STRONG_WEIGHT, compat

    check_base_family(catalog, base_ref, base_family, [a.version for a in adapters])
    loras = [a for a in adapters if a.kind != "embedding"
             and ((a.version.probe or {}).get("kind") or "lora") in ADAPTER_KINDS]
    entries = [{"ref": a.version.ref, "weight": stack_weight(a.te_weight, a.unet_weight)} for a in loras]
    family = base_family if base_family and base_family != "unknown" else None
    if len(entries) >= 2:
        table = compat(catalog, entries, base_family=family)
        pairs, strong, warnings = table["pairs"], table["strong"], list(table["warnings"])
        variants = {ref: t for ref, t in table["variants"].items() if t}
    else:  # nothing to compare; the strong count cannot pass MAX_STRONG either
        pairs, warnings, variants = [], [], {}
        strong = [e["ref"] for e in entries if abs(e["weight"]) >= STRONG_WEIGHT]
    warnings += _aligned_warnings(pairs)
    warnings += _base_variant_warnings(catalog, base_ref, family, loras, variants)
    skipped = [a.version.ref for a in adapters if a.kind != "embedding" and not any(a is b for b in loras)]
    out = {"base_family": family, "checked": [e["ref"] for e in entries],
           "weights": {e["ref"]: e["weight"] for e in entries}, "strong": strong,
           "max_strong": MAX_STRONG, "pairs": [_pair_entry(p) for p in pairs], "warnings": warnings}
    if variants:  # sub-family / prediction type each adapter's metadata told (compat warns on a mix)
        out["variants"] = variants
    if skipped:
        out["not_compared"] = skipped
    return out


def _base_variant_warnings(catalog, base_ref: str, family: str | None, loras: Sequence, known: dict) -> list[str]:
    """Adapters of another sub-family or prediction type than the base, as the base's name tells
    (a ``ponyDiffusionV6XL…`` checkpoint under an Illustrious LoRA)."""
    from loradex.families.vocabulary import base_mismatch_warnings, base_traits
    from loradex.merge.catalog_merge import version_traits

    base = base_traits(family, base_ref)
    if "prediction" not in base:
        stated = base_prediction(base_ref)
        if stated:
            base.update(prediction=stated[0], prediction_evidence=stated[1])
    if not base or not loras:
        return []
    traits = known or {ref: t for ref, t in version_traits(family, [a.version for a in loras]).items() if t}
    return base_mismatch_warnings(family, base_ref, base, traits)


MAX_SCHEDULER_CONFIG = 64 << 10


def base_prediction(base_ref) -> tuple[str, str] | None:
    """("v" | "epsilon", evidence) a local base states about itself when its name does not: a
    diffusers folder's ``scheduler/scheduler_config.json`` ``prediction_type``, a single-file
    checkpoint's ModelSpec ``prediction_type`` (``loradex.families.vocabulary.prediction_from_metadata``).
    None for a Hub id, an unreadable file, or a base that says nothing."""
    from pathlib import Path

    from loradex.families.vocabulary import prediction_from_metadata
    from loradex.registry.files.safetensors_header import read_header
    from loradex.registry.untrusted import read_json_file

    path = Path(str(base_ref)).expanduser()
    try:
        if path.is_dir():
            config = path / "scheduler" / "scheduler_config.json"
            data = read_json_file(config, max_bytes=MAX_SCHEDULER_CONFIG) if config.is_file() else {}
            value = data.get("prediction_type") if isinstance(data, dict) else None
            if value in ("v_prediction", "epsilon"):
                return ("v" if value == "v_prediction" else "epsilon"), f"scheduler_config.json prediction_type={value}"
            return None
        if path.is_file() and path.suffix.lower() == ".safetensors":
            return prediction_from_metadata(read_header(path).metadata)
    except (OSError, ValueError):  # unreadable or malformed: the base says nothing
        return None
    return None


def _pair_entry(p: dict) -> dict:
    return {"a": p["a"], "b": p["b"], "block": p["block"], "modules": int(p["modules"]),
            "cosine": round(float(p["cosine"]), 6)}


def _aligned_warnings(pairs: list[dict]) -> list[str]:
    """One warning per adapter pair with a block past ±ALIGNED_COSINE (the strongest block named)."""
    by_pair: dict[tuple[str, str], list[dict]] = {}
    for p in pairs:
        by_pair.setdefault((p["a"], p["b"]), []).append(p)
    out = []
    for (a, b), blocks in by_pair.items():
        worst = max(blocks, key=lambda p: abs(p["cosine"]))
        if abs(worst["cosine"]) >= ALIGNED_COSINE:
            effect = "reinforce each other" if worst["cosine"] > 0 else "cancel each other"
            out.append(f"{a} and {b}: ΔW cosine {worst['cosine']:+.3f} in block {worst['block']} "
                       f"({worst['modules']} shared modules) — they {effect} there")
    return out


def report_lines(section: dict) -> list[str]:
    """What ``generate`` prints on stderr: the warnings, then one overlap line per adapter pair."""
    by_pair: dict[tuple[str, str], list[dict]] = {}
    for p in section.get("pairs", []):
        by_pair.setdefault((p["a"], p["b"]), []).append(p)
    lines = [f"warning: {w}" for w in section.get("warnings", [])]
    for (a, b), blocks in by_pair.items():
        shared = sum(p["modules"] for p in blocks)
        cosines = " ".join(f"{p['block']} {p['cosine']:+.2f}" for p in blocks)
        lines.append(f"compat: {a} & {b} share {shared} modules; ΔW cosine per block: {cosines}")
    return lines
