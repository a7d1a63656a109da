"""LoRA conventions of the DiT families (Flux.1, SD 3/3.5): kohya native names with fused
projections, ComfyUI-native ``diffusion_model.`` files, OneTrainer ``lora_transformer_`` names.

The canonical form keeps the transformer under component ``transformer`` with diffusers module
paths, projections split (``transformer_blocks.0.attn.to_q``). A family's ``naming`` aspect
(``loradex.families.<family>.naming``: ``TABLE``, prefixes, ComfyUI text-encoder names) says how
its native modules map onto those paths; the tensor work is ``merge.math.fused_projections``:

- reading a fused native module (``double_blocks.0.img_attn.qkv``) splits it exactly (shared
  down, rows of up, same alpha);
- writing fuses the parts back: one rank-r module when their downs are bit-identical and alphas
  equal (so kohya → diffusers → kohya is bit-exact), else block-diagonal with rank Σr — the
  conversion notes say "rank grows"; a projection missing from a group gets zero rows (exact:
  its ΔW is 0) and the notes count them;
- ``final_layer.adaLN_modulation.1`` ↔ ``norm_out.linear`` (and SD3's pre-only last context
  modulation) swap the two halves of the up rows, a permutation, exact both ways.

Text encoders keep their transformers paths (CLIP ``text_model.encoder.layers.N…``, T5
``encoder.block.N.layer.M.SelfAttention.q``); kohya numbers them per family (Flux: CLIP
``lora_te1_``, T5 ``lora_te3_``), ComfyUI names them ``text_encoders.clip_l.transformer.…``.

ComfyUI files are written with ``lora_down``/``lora_up``/``alpha`` under ``diffusion_model.``:
ComfyUI loads that spelling and ``lora_A``/``lora_B`` alike, but diffusers' Flux loader
recognises ``diffusion_model.`` files only in the former. Both are read.
"""

from __future__ import annotations

import re
from collections import defaultdict
from types import ModuleType
from typing import Any

from loradex.merge.conventions.lora_canonical import (
    CanonicalLora,
    CanonicalModule,
    LoraConvention,
    ReadContext,
    ReadResult,
    WriteContext,
    pair_modules,
    register_convention,
)
from loradex.registry.errors import UnsupportedFormat

_SRC = "<state dict>"
_NATIVE = "\0native"  # staging component for native modules before they are split

KOHYA_PARTS = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha"}
COMFY_PARTS = {"lora_down.weight": "down", "lora_up.weight": "up", "lora_A.weight": "down",
               "lora_B.weight": "up", "alpha": "alpha"}
COMFY_MODEL_PREFIX = "diffusion_model."
COMFY_TEXT_PREFIX = "text_encoders."


# --- which family, which table ------------------------------------------------------------------
def family_naming(base: str | None) -> ModuleType | None:
    """The family's naming aspect when it maps a DiT transformer (has ``TABLE``), else None."""
    from loradex.families import find_family

    family = find_family(base)
    naming = family.aspect("naming") if family is not None else None
    return naming if naming is not None and hasattr(naming, "TABLE") else None


def dit_base_from_keys(keys) -> str | None:
    """The DiT family whose native block names (``lora_unet_double_blocks``,
    ``diffusion_model.joint_blocks``) or diffusers-only paths the keys carry, else None."""
    from loradex.families import aspects

    keys = list(keys)
    tables = [(f.name, n) for f, n in aspects("naming") if hasattr(n, "TABLE")]
    for name, naming in tables:
        heads = tuple(p + m for m in naming.NATIVE_MARKERS for p in ("lora_unet_", COMFY_MODEL_PREFIX))
        if any(k.startswith(heads) for k in keys):
            return name
    for name, naming in tables:
        dotted = re.compile(r"^(?:transformer\.|base_model\.model\.)(?:" + "|".join(naming.DIFFUSERS_MARKERS) + ")")
        under = re.compile(r"^lora_transformer_(?:" + "|".join(
            m.replace(r"\.", "_") for m in naming.DIFFUSERS_MARKERS) + ")")
        if any(dotted.match(k) or under.match(k) for k in keys):
            return name
    return None


_ATTENTION_DOWN = re.compile(r"^(?:(?:transformer\.|base_model\.model\.)transformer_blocks\.\d+\.attn\.to_q\.lora_A"
                             r"|lora_transformer_transformer_blocks_\d+_attn_to_q\.lora_down)\.weight$")


def dit_base_from_shapes(state_dict) -> str | None:
    """A diffusers-named DiT file's family from its attention width (Flux 3072, SD3 1536/2432) or,
    failing that, its text encoders (a CLIP ``text_encoder_2`` or a ``text_encoder_3``: SD3)."""
    from loradex.families import aspects

    widths = {int(t.shape[1]) for k, t in state_dict.items() if _ATTENTION_DOWN.match(k) and len(t.shape) == 2}
    for family, naming in aspects("naming"):
        if hasattr(naming, "TABLE") and widths & set(getattr(naming, "WIDTHS", ())):
            return family.name
    keys = list(state_dict)
    if any(k.startswith(("transformer.", "lora_transformer_")) for k in keys) and any(
            k.startswith(("text_encoder_3.", "text_encoder_2.text_model.", "lora_te2_")) for k in keys):
        return "sd3"
    return None


def _require_naming(base: str | None, what: str) -> ModuleType:
    naming = family_naming(base)
    if naming is None:
        raise UnsupportedFormat(_SRC, f"{what} needs the base family (flux or sd3), got {base or 'none'}",
                                hint="pass --base flux|sd3")
    return naming


# --- native ↔ canonical -------------------------------------------------------------------------
def split_native(naming: ModuleType, native: str, mod: CanonicalModule) -> list[tuple[str, CanonicalModule]] | None:
    """A native module → its canonical (diffusers-path) modules, exactly; None if not native."""
    from loradex.families.dit_naming import row_sizes, swaps_halves
    from loradex.merge.math.fused_projections import Factors, split_rows, swap_halves

    resolved = naming.TABLE.native(native)
    if resolved is None:
        return None
    out_rows, in_features = int(mod.up.shape[0]), int(mod.down.shape[1])
    up = swap_halves(mod.up) if swaps_halves(resolved, out_rows, in_features) else mod.up
    if not resolved.fused:
        return [(resolved.parts[0], CanonicalModule(mod.down, up, mod.alpha))]
    try:
        sizes = row_sizes(resolved, out_rows, in_features)
    except ValueError as exc:
        raise UnsupportedFormat(_SRC, str(exc)) from None
    parts = split_rows(Factors(mod.down, up, mod.alpha), sizes)
    return [(path, CanonicalModule(f.down, f.up, f.alpha)) for path, f in zip(resolved.parts, parts) if f is not None]


def _add_split(lora: CanonicalLora, naming: ModuleType, staged: dict[str, CanonicalModule]) -> None:
    for native, mod in staged.items():
        parts = split_native(naming, native, mod)
        for path, part in parts or ():
            lora.add("transformer", path, part)
        resolved = naming.TABLE.native(native)
        if resolved is not None and resolved.fused and len(parts or ()) != len(resolved.parts):
            lora.notes.append(f"{native}: block-form module, {len(resolved.parts) - len(parts or ())} "
                              f"projection(s) without rank columns left out")


def fuse_to_native(naming: ModuleType, mods: dict[str, CanonicalModule], ctx: WriteContext
                   ) -> dict[str, CanonicalModule]:
    """Canonical transformer modules → native modules, fusing split projections (see module doc);
    notes and the set of modules that will not read back bit-identical go to ``ctx``."""
    from loradex.families.dit_naming import part_sizes, swaps_halves
    from loradex.merge.math.fused_projections import Factors, fuse_rows, swap_halves

    groups: dict[str, tuple[Any, dict[int, tuple[str, CanonicalModule]]]] = {}
    unknown = []
    for path, mod in mods.items():
        owner = naming.TABLE.owner(path)
        if owner is None:
            unknown.append(path)
            continue
        resolved, index = owner
        groups.setdefault(resolved.native, (resolved, {}))[1][index] = (path, mod)
    if unknown:
        raise UnsupportedFormat(_SRC, f"{len(unknown)} transformer module(s) have no native name, e.g. "
                                      f"{unknown[0]}", hint="convert to diffusers or peft instead")
    out: dict[str, CanonicalModule] = {}
    grew: list[tuple[int, int]] = []
    missing = folded = 0
    for native, (resolved, got) in groups.items():
        if not resolved.fused:
            _, mod = got[0]
            up = mod.up
            if swaps_halves(resolved, int(up.shape[0]), int(mod.down.shape[1])):
                up = swap_halves(up)
            out[native] = CanonicalModule(mod.down, up, mod.alpha)
            continue
        in_features = int(next(iter(got.values()))[1].down.shape[1])
        try:
            sizes = part_sizes(resolved, {k: int(m.up.shape[0]) for k, (_, m) in got.items()}, in_features)
        except ValueError as exc:
            raise UnsupportedFormat(_SRC, str(exc), hint="convert to diffusers or peft instead") from None
        parts = [Factors(got[k][1].down, got[k][1].up, got[k][1].alpha) if k in got else None
                 for k in range(len(resolved.parts))]
        fused = fuse_rows(parts, sizes)
        out[native] = CanonicalModule(fused.factors.down, fused.factors.up, fused.factors.alpha)
        missing += fused.missing
        if fused.form == "block":  # read back: same ΔW, alphas recomputed (s · r_part)
            grew.append((max(p.rank for p in parts if p is not None), fused.factors.rank))
            folded += fused.folded
            ctx.regrouped.update(("transformer", path) for path, _ in got.values())
    if grew:
        low = min(a for a, _ in grew)
        high = max(b for _, b in grew)
        ctx.notes.append(f"rank grows {low} → {high} on {len(grew)} fused module(s): their projections have "
                         f"different downs or alphas, so they are stacked block-diagonally (exact)")
    if folded:
        ctx.notes.append(f"{folded} fused module(s) had projections with different alpha/rank: each scale is "
                         f"folded into its up block (one float rounding per element)")
    if missing:
        ctx.notes.append(f"{missing} projection(s) absent from their fused module are written as zero rows "
                         f"(exact: ΔW 0); split again, a shared-down module gives them back as zero LoRA "
                         f"modules")
    return out


def _text_path(naming: ModuleType, component: str, underscored: str) -> str | None:
    from loradex.families.dit_naming import t5_path_from_underscored
    from loradex.merge.conventions.kohya_names import resolve_kohya_module

    if component in naming.T5_COMPONENTS:
        return t5_path_from_underscored(underscored)
    return resolve_kohya_module(component, underscored, None).path


def _alpha_or_rank(mod: CanonicalModule):
    import torch

    return mod.alpha if mod.alpha is not None else torch.tensor(float(mod.rank), dtype=mod.down.dtype)


# --- kohya (sd-scripts lora_flux / lora_sd3; OneTrainer names read too) -------------------------
def read_kohya(state_dict, ctx: ReadContext, naming: ModuleType) -> ReadResult:
    lora = CanonicalLora(base=ctx.base)
    found: dict[tuple[str, str], dict[str, tuple[str, Any]]] = defaultdict(dict)
    prefixes = sorted(naming.KOHYA_PREFIXES, key=len, reverse=True)
    for key, tensor in state_dict.items():
        name, _, rest = key.partition(".")
        part = KOHYA_PARTS.get(rest)
        prefix = next((p for p in prefixes if name.startswith(p)), None)
        if part is None or prefix is None:
            continue
        component, underscored = naming.KOHYA_PREFIXES[prefix], name[len(prefix):]
        if component == "transformer" and prefix == "lora_unet_":
            resolved = naming.TABLE.native_from_underscored(underscored)
            slot = (_NATIVE, resolved.native) if resolved else None
        elif component == "transformer":
            path = naming.TABLE.diffusers_from_underscored(underscored)
            slot = ("transformer", path) if path else None
        else:
            path = _text_path(naming, component, underscored)
            slot = (component, path) if path else None
        if slot is not None:
            found[slot][part] = (key, tensor)
    consumed: set[str] = set()
    pair_modules(found, lora, consumed)
    _add_split(lora, naming, lora.components.pop(_NATIVE, {}))
    return ReadResult(lora, consumed)


def write_kohya(lora: CanonicalLora, ctx: WriteContext, naming: ModuleType):
    out = {}
    for component, mods in lora.components.items():
        prefix = naming.KOHYA_WRITE_PREFIXES.get(component)
        if prefix is None:
            raise UnsupportedFormat(_SRC, f"kohya has no name for {lora.base} component {component}")
        named = fuse_to_native(naming, mods, ctx) if component == "transformer" else mods
        for path, mod in named.items():
            name = prefix + path.replace(".", "_")
            out[f"{name}.lora_down.weight"] = mod.down
            out[f"{name}.lora_up.weight"] = mod.up
            out[f"{name}.alpha"] = _alpha_or_rank(mod)
    return out, {}


# --- ComfyUI native (diffusion_model.<native>, text_encoders.<clip_l|clip_g|t5xxl>.transformer.) --
def _comfy_split(key: str) -> tuple[str, str] | None:
    for suffix, part in COMFY_PARTS.items():
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], part
    return None


@register_convention("comfyui")
class ComfyUIConvention(LoraConvention):
    description = "ComfyUI / ai-toolkit native: diffusion_model.<BFL/SAI name>.lora_down.weight, .alpha (Flux, SD3)"

    def recognizes(self, key, metadata):
        return key.startswith((COMFY_MODEL_PREFIX, COMFY_TEXT_PREFIX)) and _comfy_split(key) is not None

    def read(self, state_dict, ctx: ReadContext) -> ReadResult:
        base = ctx.base if family_naming(ctx.base) else dit_base_from_keys(state_dict)
        naming = _require_naming(base, "reading a ComfyUI-native LoRA")
        text = {name: comp for comp, name in naming.COMFY_TEXT_ENCODERS.items()}
        lora = CanonicalLora(base=base)
        found: dict[tuple[str, str], dict[str, tuple[str, Any]]] = defaultdict(dict)
        for key, tensor in state_dict.items():
            split = _comfy_split(key)
            if split is None:
                continue
            stem, part = split
            if stem.startswith(COMFY_MODEL_PREFIX):
                native = stem[len(COMFY_MODEL_PREFIX):]
                if naming.TABLE.native(native) is None:
                    continue
                slot = (_NATIVE, native)
            elif stem.startswith(COMFY_TEXT_PREFIX):
                encoder, _, rest = stem[len(COMFY_TEXT_PREFIX):].partition(".transformer.")
                if encoder not in text or not rest:
                    continue
                slot = (text[encoder], rest)
            else:
                continue
            if part in found[slot]:  # lora_A and lora_down spellings of one module: leave the second unconsumed
                continue
            found[slot][part] = (key, tensor)
        consumed: set[str] = set()
        pair_modules(found, lora, consumed)
        _add_split(lora, naming, lora.components.pop(_NATIVE, {}))
        return ReadResult(lora, consumed)

    def write(self, lora, ctx: WriteContext):
        naming = _require_naming(lora.base, "writing a ComfyUI-native LoRA")
        out = {}
        for component, mods in lora.components.items():
            if component == "transformer":
                named = {COMFY_MODEL_PREFIX + n: m for n, m in fuse_to_native(naming, mods, ctx).items()}
            elif component in naming.COMFY_TEXT_ENCODERS:
                head = f"{COMFY_TEXT_PREFIX}{naming.COMFY_TEXT_ENCODERS[component]}.transformer."
                named = {head + p: m for p, m in mods.items()}
            else:
                raise UnsupportedFormat(_SRC, f"ComfyUI has no name for {lora.base} component {component}")
            for stem, mod in named.items():
                out[f"{stem}.lora_down.weight"] = mod.down
                out[f"{stem}.lora_up.weight"] = mod.up
                out[f"{stem}.alpha"] = _alpha_or_rank(mod)
        return out, {}


# --- XLabs (x-flux): double_blocks.N.processor.qkv_lora1.down.weight — read only ----------------
# Their attention processors carry a LoRA per stream: ``qkv_lora1`` / ``proj_lora1`` on the image
# stream (native img_attn.qkv / img_attn.proj), ``…_lora2`` on the text stream; single blocks'
# ``qkv_lora`` adapts the q, k, v rows of linear1 (its MLP rows untouched). No alpha: scale 1.
# Single blocks' ``proj_lora`` is an h → h LoRA that no Flux linear matches (linear2 takes the
# 5h-wide concatenation), so it is left unconsumed and named by the coverage check.
_XLABS = re.compile(r"^(?:diffusion_model\.)?(?P<kind>double|single)_blocks\.(?P<i>\d+)\.processor\."
                    r"(?P<what>qkv|proj)_lora(?P<stream>[12]?)\.(?P<part>down|up)\.weight$")
_XLABS_DOUBLE = {("qkv", "1"): "img_attn.qkv", ("proj", "1"): "img_attn.proj",
                 ("qkv", "2"): "txt_attn.qkv", ("proj", "2"): "txt_attn.proj"}


@register_convention("xlabs")
class XLabsConvention(LoraConvention):
    description = "XLabs x-flux (read only): double_blocks.N.processor.qkv_lora1.down.weight, scale 1"

    def recognizes(self, key, metadata):
        return _XLABS.match(key) is not None

    def read(self, state_dict, ctx: ReadContext) -> ReadResult:
        base = ctx.base if family_naming(ctx.base) else "flux"  # XLabs trained Flux.1 only
        naming = _require_naming(base, "reading an XLabs LoRA")
        lora = CanonicalLora(base=base)
        found: dict[tuple[str, str], dict[str, tuple[str, Any]]] = defaultdict(dict)
        single_qkv: dict[str, dict[str, tuple[str, Any]]] = defaultdict(dict)
        for key, tensor in state_dict.items():
            m = _XLABS.match(key)
            if m is None:
                continue
            if m["kind"] == "double" and (m["what"], m["stream"]) in _XLABS_DOUBLE:
                found[(_NATIVE, f"double_blocks.{m['i']}.{_XLABS_DOUBLE[m['what'], m['stream']]}")][m["part"]] = (key, tensor)
            elif m["kind"] == "single" and m["what"] == "qkv" and not m["stream"]:
                single_qkv[m["i"]][m["part"]] = (key, tensor)
        consumed: set[str] = set()
        pair_modules(found, lora, consumed)
        _add_split(lora, naming, lora.components.pop(_NATIVE, {}))
        for index, parts in single_qkv.items():
            if "down" not in parts or "up" not in parts:
                continue
            resolved = naming.TABLE.native(f"single_blocks.{index}.linear1")
            if resolved is None:
                continue
            from loradex.merge.math.fused_projections import Factors, split_rows

            up = parts["up"][1]
            pieces = split_rows(Factors(parts["down"][1], up, None), (up.shape[0] // 3,) * 3)
            for path, piece in zip(resolved.parts[:3], pieces):
                if piece is not None:
                    lora.add("transformer", path, CanonicalModule(piece.down, piece.up, None))
            consumed.update(key for key, _ in parts.values())
        return ReadResult(lora, consumed)

    def write(self, lora, ctx: WriteContext):
        raise UnsupportedFormat(_SRC, "XLabs files are read, not written",
                                hint="write kohya, comfyui or diffusers (each loads in ComfyUI and diffusers)")


# --- modules for merging: plain LoRA or LyCORIS, fused native modules split by rows ---------------
_LYCORIS_PARTS = re.compile(r"\.(hada_|lokr_|lora_mid\.|diff$|diff_b$|oft_|dora_scale$)")


def has_lycoris(keys) -> bool:
    return any(_LYCORIS_PARTS.search(k) for k in keys)


def _stem_and_suffix(key: str) -> tuple[str, str]:
    """``lora_unet_x.lokr_w1`` → (``lora_unet_x``, ``lokr_w1``); ``diffusion_model.a.b.lora_down.weight``
    → (``diffusion_model.a.b``, ``lora_down.weight``)."""
    stem, _, last = key.rpartition(".")
    if last == "weight":
        stem, _, prev = stem.rpartition(".")
        last = f"{prev}.weight"
    return stem, last


def _locate(naming: ModuleType, stem: str) -> tuple[str, str] | None:
    """A module stem of any DiT spelling → (component or _NATIVE, path or native name)."""
    if stem.startswith(COMFY_MODEL_PREFIX):
        native = stem[len(COMFY_MODEL_PREFIX):]
        return (_NATIVE, native) if naming.TABLE.native(native) else None
    if stem.startswith(COMFY_TEXT_PREFIX):
        encoder, _, rest = stem[len(COMFY_TEXT_PREFIX):].partition(".transformer.")
        component = {v: k for k, v in naming.COMFY_TEXT_ENCODERS.items()}.get(encoder)
        return (component, rest) if component and rest else None
    if stem.startswith("lycoris_"):  # SimpleTuner: diffusers path, underscored
        path = naming.TABLE.diffusers_from_underscored(stem[len("lycoris_"):])
        return ("transformer", path) if path else None
    prefix = next((p for p in sorted(naming.KOHYA_PREFIXES, key=len, reverse=True) if stem.startswith(p)), None)
    if prefix is None:
        return None
    component, under = naming.KOHYA_PREFIXES[prefix], stem[len(prefix):]
    if component == "transformer" and prefix == "lora_unet_":
        resolved = naming.TABLE.native_from_underscored(under)
        return (_NATIVE, resolved.native) if resolved else None
    if component == "transformer":
        path = naming.TABLE.diffusers_from_underscored(under)
        return ("transformer", path) if path else None
    path = _text_path(naming, component, under)
    return (component, path) if path else None


def merge_modules(state_dict, naming: ModuleType) -> tuple[dict[tuple[str, str], Any], dict[str, str]]:
    """Every module of a DiT file holding LyCORIS (or plain LoRA) modules, for merging:
    (component, canonical path) → ``LoraModule`` or ``DenseDelta``; a fused native module is split
    by rows (a LoRA as in conversion, an expanded ΔW by its rows — both exact). Also the keys no
    module took, with why."""
    import torch

    from loradex.families.dit_naming import row_sizes, swaps_halves
    from loradex.merge.conventions.adapter_io import module_from_group
    from loradex.merge.math.lora_module import DenseDelta, LoraModule

    groups: dict[str, dict[str, Any]] = defaultdict(dict)
    skipped: dict[str, str] = {}
    for key, tensor in state_dict.items():
        stem, suffix = _stem_and_suffix(key)
        groups[stem][suffix] = tensor
    out: dict[tuple[str, str], Any] = {}
    for stem, tensors in groups.items():
        where = _locate(naming, stem)
        if where is None:
            skipped.update({f"{stem}.{s}": "not a module of this family" for s in tensors})
            continue
        component, path = where
        module = module_from_group(stem, tensors)
        if component != _NATIVE:
            out[(component, path)] = module
            continue
        if isinstance(module, LoraModule):
            alpha = torch.tensor(module.alpha) if module.alpha is not None else None
            for part_path, part in split_native(naming, path, CanonicalModule(module.down, module.up, alpha)) or ():
                out[("transformer", part_path)] = part.to_lora_module()
            continue
        resolved = naming.TABLE.native(path)
        delta = module.delta
        out_rows, in_features = int(delta.shape[0]), int(delta.shape[1])
        if swaps_halves(resolved, out_rows, in_features):
            half = out_rows // 2
            delta = torch.cat([delta[half:], delta[:half]])
        try:
            sizes = row_sizes(resolved, out_rows, in_features)
        except ValueError as exc:
            raise UnsupportedFormat(stem, str(exc)) from None
        start = 0
        for part_path, size in zip(resolved.parts, sizes):
            out[("transformer", part_path)] = DenseDelta(delta[start:start + size].clone(), module.source)
            start += size
    return out, skipped


def native_kohya_state_dict(state_dict: dict, base: str | None) -> dict:
    """A kohya state dict with split (OneTrainer-spelled) DiT modules, as the merge operations
    build it, in sd-scripts' native fused layout; unchanged for a family without a naming table."""
    from loradex.merge.conventions.convert import convert_state_dict

    if family_naming(base) is None:
        return state_dict
    out, _, _ = convert_state_dict(state_dict, to="kohya", base=base, convention="kohya")
    return dict(sorted(out.items()))
