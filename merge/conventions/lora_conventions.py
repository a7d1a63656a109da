"""LoRA key conventions: kohya/A1111, diffusers/PEFT (current), PEFT saved adapters, legacy
diffusers (``.lora.down``) and attention-processor era files.

Each convention reads a state dict into a ``CanonicalLora`` (reporting which keys it consumed)
and writes one back. Alpha is carried exactly:

- kohya stores it per module as a 0-dim tensor ``<name>.alpha``;
- diffusers stores no alpha tensors; its loader builds a peft ``LoraConfig`` from the header's
  ``lora_adapter_metadata`` (``"unet.r"``, ``"unet.lora_alpha"``, ``"unet.alpha_pattern"``…,
  see diffusers ``loaders/peft.py`` ``load_lora_adapter`` and ``_create_lora_config``), and the
  scale is ``lora_alpha / r`` per module. So kohya → diffusers writes the alphas there and
  leaves the weights untouched (never folds the scale into them); ``loradex.alpha_dtypes``
  records the alpha tensor dtype where it differs from the weights so the way back is
  bit-exact;
- PEFT adapters carry the same numbers in ``adapter_config.json``;
- legacy diffusers / attention-processor files have no alpha: scale 1 (alpha = rank). Writing a
  module with another scale to them is refused rather than approximated.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from typing import Any

from loradex.merge.conventions.kohya_names import kohya_module_name, resolve_kohya_module, split_kohya_name, writes_sgm_unet
from loradex.merge.conventions.lora_canonical import (
    COMPONENTS,
    CanonicalLora,
    LoraConvention,
    ReadContext,
    ReadResult,
    WriteContext,
    canonical_text_encoder_path,
    dtype_from_name,
    dtype_name,
    pair_modules,
    PeftPatterns,
    register_convention,
    text_encoder_model_names,
)
from loradex.registry.errors import UnsupportedFormat

LORA_ADAPTER_METADATA_KEY = "lora_adapter_metadata"  # diffusers loaders/lora_base.py
ALPHA_DTYPES_KEY = "loradex.alpha_dtypes"
PEFT_CONFIG_KEY = "loradex.peft_adapter_config"

_SRC = "<state dict>"

# --- the JSON a LoRA file (or its adapter_config.json) brings: declared shapes ----------------
# Only the fields the readers use are constrained; anything else may be there.
_NUMBERS = {"type": "object", "additionalProperties": {"type": "number"}}
_RANKS = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}}
_PEFT_FIELDS = {"r": {"type": "integer", "minimum": 1}, "lora_alpha": {"type": "number"},
                "alpha_pattern": _NUMBERS, "rank_pattern": _RANKS,
                "use_rslora": {"type": "boolean"}, "use_dora": {"type": "boolean"}}
PEFT_CONFIG_SCHEMA = {"type": "object", "properties": _PEFT_FIELDS}
# diffusers' lora_adapter_metadata: the same fields, each under "<component>.".
LORA_ADAPTER_METADATA_SCHEMA = {"type": "object", "patternProperties": {
    rf"\.{name}$": schema for name, schema in _PEFT_FIELDS.items()}}
ALPHA_DTYPES_SCHEMA = {"type": "object", "additionalProperties": {
    "type": "object", "additionalProperties": {"enum": ["float16", "bfloat16", "float32", "float64"]}}}


def header_json(raw, source: str, schema: dict) -> Any:
    """JSON from a file's header or sidecar, parsed with caps and checked against ``schema``:
    one-line ``UntrustedData`` (exit 1) for anything malformed."""
    from loradex.registry.untrusted import check_schema, parse_json

    return check_schema(parse_json(raw, source) if isinstance(raw, (str, bytes)) else raw, schema, source)


def _alpha_tensor(value: float, dtype):
    import torch

    return torch.tensor(value, dtype=dtype)


def _is_text_encoder(component: str) -> bool:
    return component.startswith("text_encoder")


def _split_component(key: str) -> tuple[str, str] | None:
    head, _, rest = key.partition(".")
    return (head, rest) if head in COMPONENTS and rest else None


# --- kohya / A1111 ----------------------------------------------------------------------------
_KOHYA_PARTS = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha"}


@register_convention("kohya")
class KohyaConvention(LoraConvention):
    description = "kohya-ss / A1111: lora_unet_<path_with_underscores>.lora_down.weight, .alpha"

    def recognizes(self, key, metadata):
        name, _, rest = key.partition(".")
        return rest in _KOHYA_PARTS and split_kohya_name(name) is not None

    def read(self, state_dict, ctx: ReadContext) -> ReadResult:
        from loradex.merge.conventions import dit_conventions

        naming = dit_conventions.family_naming(ctx.base)
        if naming is not None:  # DiT families: native names, fused projections (dit_conventions)
            return dit_conventions.read_kohya(state_dict, ctx, naming)
        lora = CanonicalLora(base=ctx.base)
        found: dict[tuple[str, str], dict[str, tuple[str, Any]]] = defaultdict(dict)
        owner: dict[tuple[str, str], str] = {}
        fallback: set[str] = set()
        for key, tensor in state_dict.items():
            name, _, rest = key.partition(".")
            part = _KOHYA_PARTS.get(rest)
            split = split_kohya_name(name)
            if part is None or split is None:
                continue
            component, underscored = split
            resolved = resolve_kohya_module(component, underscored, ctx.base)
            slot = (component, resolved.path)
            # Two spellings of one module (diffusers + SGM) would collide: keep the first,
            # leave the other unconsumed so the coverage check names it.
            if owner.setdefault(slot, name) != name:
                continue
            found[slot][part] = (key, tensor)
            if resolved.by_fallback:
                fallback.add(f"{name} → {component}.{resolved.path}")
        consumed: set[str] = set()
        pair_modules(found, lora, consumed)
        lora.notes += [f"resolved by token split (not in the known-module tables): {n}" for n in sorted(fallback)]
        return ReadResult(lora, consumed)

    def write(self, lora, ctx: WriteContext):
        from loradex.merge.conventions import dit_conventions

        naming = dit_conventions.family_naming(lora.base)
        if naming is not None:
            return dit_conventions.write_kohya(lora, ctx, naming)
        sgm = writes_sgm_unet(lora.base) and ctx.options.get("sdxl_unet_names", "sgm") == "sgm"
        out = {}
        for component, mods in lora.components.items():
            if component == "transformer":
                raise UnsupportedFormat(_SRC, f"kohya names for `transformer.` modules of {lora.base or 'an unknown'} "
                                              f"base are not known", hint="pass --base flux|sd3, or convert to diffusers or peft")
            for path, mod in mods.items():
                name = kohya_module_name(component, path, lora.base, sgm_unet=sgm)
                out[f"{name}.lora_down.weight"] = mod.down
                out[f"{name}.lora_up.weight"] = mod.up
                # kohya always stores alpha; a convention without one means alpha = rank.
                out[f"{name}.alpha"] = mod.alpha if mod.alpha is not None else _alpha_tensor(mod.rank, mod.down.dtype)
        return out, {}


# --- diffusers / PEFT current -----------------------------------------------------------------
_DIFFUSERS_PARTS = {"lora_A.weight": "down", "lora_B.weight": "up"}


def _alpha_dtypes(metadata: dict[str, str]) -> dict[str, dict[str, str]]:
    return header_json(metadata.get(ALPHA_DTYPES_KEY, "{}"), f"metadata {ALPHA_DTYPES_KEY}", ALPHA_DTYPES_SCHEMA)


def _peft_alpha_config(config: dict[str, Any]) -> tuple[float, dict]:
    if config.get("use_rslora"):
        raise UnsupportedFormat(_SRC, "rsLoRA scaling (alpha/sqrt(r)) cannot be expressed exactly as alpha/rank")
    if config.get("use_dora"):
        raise UnsupportedFormat(_SRC, "DoRA adapters are not supported by the LoRA converter")
    # peft's LoraConfig defaults: lora_alpha 8
    return float(config.get("lora_alpha", 8)), dict(config.get("alpha_pattern") or {})


def _apply_config_alphas(lora: CanonicalLora, component: str, config: dict[str, Any],
                         alpha_dtypes: dict[str, dict[str, str]]) -> None:
    """Give each module of ``component`` the alpha peft would use for it under ``config``."""
    default_alpha, pattern = _peft_alpha_config(config)
    patterns = PeftPatterns(pattern)
    for path, mod in lora.components.get(component, {}).items():
        names = text_encoder_model_names(path) if _is_text_encoder(component) else [path]
        value = patterns.value(names)
        alpha = float(value) if value is not None else default_alpha
        dtype_label = alpha_dtypes.get(component, {}).get(path)
        dtype = dtype_from_name(dtype_label) if dtype_label else mod.down.dtype
        mod.alpha = _alpha_tensor(alpha, dtype)


def _peft_config_for(component: str, mods: dict[str, Any]) -> dict[str, Any]:
    """A peft LoraConfig (as a dict) reproducing every module's rank and alpha exactly."""
    ranks = {p: m.rank for p, m in mods.items()}
    alphas = {p: m.alpha_value for p, m in mods.items()}
    r = Counter(ranks.values()).most_common(1)[0][0]
    lora_alpha = Counter(alphas.values()).most_common(1)[0][0]

    def model_name(path: str) -> str:
        # text encoders: match with or without transformers 4.x's `text_model.` level
        return path.removeprefix("text_model.") if _is_text_encoder(component) else path

    def pattern(path: str) -> str:
        escaped = re.escape(model_name(path))
        return escaped if _is_text_encoder(component) else "^" + escaped

    return {
        "r": r,
        "lora_alpha": lora_alpha,
        "rank_pattern": {pattern(p): v for p, v in ranks.items() if v != r},
        "alpha_pattern": {pattern(p): v for p, v in alphas.items() if v != lora_alpha},
        "target_modules": sorted(model_name(p) for p in mods),
        "use_dora": False,
        "use_rslora": False,
        "lora_bias": False,
    }


def _alpha_dtype_exceptions(lora: CanonicalLora) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for component, mods in lora.components.items():
        for path, mod in mods.items():
            if mod.alpha is not None and mod.alpha.dtype != mod.down.dtype:
                out.setdefault(component, {})[path] = dtype_name(mod.alpha.dtype)
    return out


@register_convention("diffusers")
class DiffusersConvention(LoraConvention):
    description = "diffusers / PEFT: unet.<path>.lora_A.weight, alphas in lora_adapter_metadata"

    def recognizes(self, key, metadata):
        split = _split_component(key)
        if split is None:
            return False
        rest = split[1]
        return rest.endswith((".lora_A.weight", ".lora_B.weight")) or (
            rest.endswith(".alpha") and LORA_ADAPTER_METADATA_KEY not in metadata)

    def read(self, state_dict, ctx: ReadContext) -> ReadResult:
        lora = CanonicalLora(base=ctx.base)
        found: dict[tuple[str, str], dict[str, tuple[str, Any]]] = defaultdict(dict)
        for key, tensor in state_dict.items():
            split = _split_component(key)
            if split is None:
                continue
            component, rest = split
            path, _, tail = rest.rpartition(".lora_")
            part = _DIFFUSERS_PARTS.get("lora_" + tail) if path else None
            if part is None and rest.endswith(".alpha"):  # diffusers' network_alphas spelling
                path, part = rest[: -len(".alpha")], "alpha"
            if part is None:
                continue
            if _is_text_encoder(component):
                path = canonical_text_encoder_path(path)
            found[(component, path)][part] = (key, tensor)
        consumed: set[str] = set()
        pair_modules(found, lora, consumed)
        raw = ctx.metadata.get(LORA_ADAPTER_METADATA_KEY)
        if raw:
            config = header_json(raw, f"metadata {LORA_ADAPTER_METADATA_KEY}", LORA_ADAPTER_METADATA_SCHEMA)
            alpha_dtypes = _alpha_dtypes(ctx.metadata)
            for component in lora.components:
                comp_cfg = {k[len(component) + 1:]: v for k, v in config.items() if k.startswith(component + ".")}
                if comp_cfg:
                    _apply_config_alphas(lora, component, comp_cfg, alpha_dtypes)
        return ReadResult(lora, consumed)

    def write(self, lora, ctx: WriteContext):
        out = {}
        config: dict[str, Any] = {}
        for component, mods in lora.components.items():
            for path, mod in mods.items():
                out[f"{component}.{path}.lora_A.weight"] = mod.down
                out[f"{component}.{path}.lora_B.weight"] = mod.up
            for k, v in _peft_config_for(component, mods).items():
                config[f"{component}.{k}"] = v
        metadata = {"format": "pt", LORA_ADAPTER_METADATA_KEY: json.dumps(config, indent=2, sort_keys=True)}
        exceptions = _alpha_dtype_exceptions(lora)
        if exceptions:
            metadata[ALPHA_DTYPES_KEY] = json.dumps(exceptions, sort_keys=True)
        return out, metadata


# --- PEFT saved adapter (base_model.model.) ---------------------------------------------------
_PEFT_PREFIX = "base_model.model."


def _component_of_model_path(path: str) -> str:
    if path.startswith(("text_model.", "encoder.layers.", "text_projection")):
        return "text_encoder"
    if path.startswith(("transformer_blocks.", "single_transformer_blocks.", "x_embedder", "context_embedder")):
        return "transformer"
    return "unet"


@register_convention("peft")
class PeftConvention(LoraConvention):
    description = "PEFT saved adapter: base_model.model.<path>.lora_A.weight + adapter_config.json"

    def recognizes(self, key, metadata):
        return key.startswith(_PEFT_PREFIX) and key.endswith((".lora_A.weight", ".lora_B.weight"))

    def read(self, state_dict, ctx: ReadContext) -> ReadResult:
        from loradex.merge.conventions.dit_conventions import family_naming

        dit = family_naming(ctx.base) is not None
        lora = CanonicalLora(base=ctx.base)
        found: dict[tuple[str, str], dict[str, tuple[str, Any]]] = defaultdict(dict)
        for key, tensor in state_dict.items():
            if not self.recognizes(key, ctx.metadata):
                continue
            path, _, tail = key[len(_PEFT_PREFIX):].rpartition(".lora_")
            component = ctx.metadata.get("loradex.peft_component") or _component_of_model_path(path)
            if component == "unet" and dit:  # Flux/SD3: norm_out.linear, proj_out … are transformer modules
                component = "transformer"
            if _is_text_encoder(component):
                path = canonical_text_encoder_path(path)
            found[(component, path)][_DIFFUSERS_PARTS["lora_" + tail]] = (key, tensor)
        consumed: set[str] = set()
        pair_modules(found, lora, consumed)
        config = ctx.adapter_config
        if config is None and PEFT_CONFIG_KEY in ctx.metadata:
            config = ctx.metadata[PEFT_CONFIG_KEY]
        if config is None:
            lora.notes.append("no adapter_config.json: alpha taken as rank (scale 1)")
        else:
            config = header_json(config, "adapter_config.json", PEFT_CONFIG_SCHEMA)
            alpha_dtypes = _alpha_dtypes(ctx.metadata)
            for component in lora.components:
                _apply_config_alphas(lora, component, config, alpha_dtypes)
        return ReadResult(lora, consumed)

    def write(self, lora, ctx: WriteContext):
        if len(lora.components) != 1:
            raise UnsupportedFormat(
                _SRC, f"a PEFT adapter holds one model, this LoRA has {sorted(lora.components)}",
                hint="convert to diffusers (one file for all components) instead")
        (component, mods), = lora.components.items()
        out = {}
        for path, mod in mods.items():
            model_path = path.removeprefix("text_model.") if ctx.options.get("flat_text_encoder") else path
            out[f"{_PEFT_PREFIX}{model_path}.lora_A.weight"] = mod.down
            out[f"{_PEFT_PREFIX}{model_path}.lora_B.weight"] = mod.up
        config = {"peft_type": "LORA", "bias": "none", "lora_dropout": 0.0, "fan_in_fan_out": False,
                  "init_lora_weights": True, "inference_mode": True,
                  "base_model_name_or_path": ctx.options.get("base_model_name_or_path"),
                  **_peft_config_for(component, mods)}
        metadata = {"format": "pt", PEFT_CONFIG_KEY: json.dumps(config, sort_keys=True),
                    "loradex.peft_component": component}
        exceptions = _alpha_dtype_exceptions(lora)
        if exceptions:
            metadata[ALPHA_DTYPES_KEY] = json.dumps(exceptions, sort_keys=True)
        return out, metadata


# --- legacy diffusers and attention processors --------------------------------------------------
# Attention-processor LoRA layers are named after the projection they wrap.
_UNET_PROC = {"to_q_lora": "to_q", "to_k_lora": "to_k", "to_v_lora": "to_v", "to_out_lora": "to_out.0"}
_TEXT_PROC = {"to_q_lora": "q_proj", "to_k_lora": "k_proj", "to_v_lora": "v_proj", "to_out_lora": "out_proj"}
_LEGACY_RE = re.compile(r"^(?P<path>.+?)\.(?:(?P<proc>to_(?:q|k|v|out)_lora)|lora|lora_linear_layer)"
                        r"\.(?P<part>down|up)\.weight$")


def _parse_legacy(key: str, default_component: str | None) -> tuple[str, str, str] | None:
    """→ (component, canonical path, "down"|"up"|"alpha"), or None."""
    split = _split_component(key)
    component, rest = split if split else (default_component, key)
    if component is None:
        return None
    if rest.endswith(".alpha"):
        path = rest[: -len(".alpha")].replace(".processor", "")
        part = "alpha"
    else:
        m = _LEGACY_RE.match(rest)
        if m is None:
            return None
        path = m["path"].removesuffix(".processor")
        proc = m["proc"]
        if proc:
            table = _TEXT_PROC if _is_text_encoder(component) else _UNET_PROC
            path = f"{path}.{table[proc]}"
        part = m["part"]
    if _is_text_encoder(component):
        path = canonical_text_encoder_path(path)
    return component, path, part


def _read_legacy(state_dict, ctx: ReadContext, default_component: str | None) -> ReadResult:
    lora = CanonicalLora(base=ctx.base)
    found: dict[tuple[str, str], dict[str, tuple[str, Any]]] = defaultdict(dict)
    for key, tensor in state_dict.items():
        parsed = _parse_legacy(key, default_component)
        if parsed is None:
            continue
        component, path, part = parsed
        found[(component, path)][part] = (key, tensor)
    consumed: set[str] = set()
    pair_modules(found, lora, consumed)
    return ReadResult(lora, consumed)


def _refuse_scaled(lora: CanonicalLora, convention: str) -> None:
    scaled = [f"{c}.{p} (scale {m.scale:g})" for c, mods in lora.components.items()
              for p, m in mods.items() if m.scale != 1.0]
    if scaled:
        raise UnsupportedFormat(
            _SRC, f"{convention} files store no alpha (scale 1); {len(scaled)} module(s) have another scale, "
                  f"e.g. {scaled[0]}", hint="convert to kohya, diffusers or peft, which keep alpha exactly")


@register_convention("diffusers-legacy")
class LegacyDiffusersConvention(LoraConvention):
    description = "older diffusers: unet.<path>.lora.down.weight / .lora.up.weight (scale 1)"

    def recognizes(self, key, metadata):
        split = _split_component(key)
        return split is not None and ".processor." not in key and _parse_legacy(key, None) is not None \
            and not key.endswith(".alpha")

    def read(self, state_dict, ctx):
        return _read_legacy(state_dict, ctx, None)

    def write(self, lora, ctx: WriteContext):
        _refuse_scaled(lora, self.name)
        out = {}
        for component, mods in lora.components.items():
            infix = "lora_linear_layer" if _is_text_encoder(component) else "lora"
            for path, mod in mods.items():
                out[f"{component}.{path}.{infix}.down.weight"] = mod.down
                out[f"{component}.{path}.{infix}.up.weight"] = mod.up
        return out, {"format": "pt"}


@register_convention("diffusers-attn-proc")
class AttnProcConvention(LoraConvention):
    description = "attention-processor era: <path>.processor.to_q_lora.down.weight, no unet. prefix"

    def recognizes(self, key, metadata):
        return _split_component(key) is None and ".processor." in key and _parse_legacy(key, "unet") is not None

    def read(self, state_dict, ctx):
        return _read_legacy(state_dict, ctx, "unet")

    def write(self, lora, ctx: WriteContext):
        _refuse_scaled(lora, self.name)
        reverse = {v: k for k, v in _UNET_PROC.items()}
        out = {}
        for component, mods in lora.components.items():
            if component != "unet":
                raise UnsupportedFormat(_SRC, "attention-processor files hold UNet attention layers only",
                                        hint=f"this LoRA also has {component}")
            for path, mod in mods.items():
                attn, _, proj = path.rpartition(".to_")
                proj = "to_" + proj
                if proj not in reverse or not attn:
                    raise UnsupportedFormat(_SRC, f"attention-processor files cannot hold {path}")
                out[f"{attn}.processor.{reverse[proj]}.down.weight"] = mod.down
                out[f"{attn}.processor.{reverse[proj]}.up.weight"] = mod.up
        return out, {"format": "pt"}
