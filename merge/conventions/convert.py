"""Move LoRA state dicts between key conventions without losing a tensor.

    sd2, meta, report = convert_state_dict(sd, to="diffusers", metadata=meta)

Every input key must end up in the output: a key no convention reader consumed raises
``CoverageError`` naming it (diffusers itself drops such keys with a warning), unless
``allow_partial=True``, in which case the report lists them. Tensors are moved, never
recomputed, so conversions are bit-exact; alpha travels as described in ``lora_conventions``.
Flux / SD3 files (``dit_conventions``) split fused projections on read and fuse them on write:
exact, and bit-exact back when the parts share their down (the report's notes say otherwise).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loradex.families import assumed, get_family

# Importing the convention modules registers them.
from loradex.merge.conventions import lora_conventions as _kohya_diffusers_peft  # noqa: F401
from loradex.merge.conventions import safeloras_convention as _safeloras  # noqa: F401
from loradex.merge.conventions import dit_conventions as _dit  # noqa: F401
from loradex.merge.conventions.lora_canonical import CONVENTIONS, CanonicalLora, ReadContext, WriteContext
from loradex.merge.conventions.lora_conventions import ALPHA_DTYPES_KEY, LORA_ADAPTER_METADATA_KEY, PEFT_CONFIG_KEY
from loradex.merge.conventions.modelspec import HASH_KEY, modelspec_metadata, source_title, source_triggers
from loradex.merge.conventions.module_layouts import unet_namings
from loradex.registry.errors import CoverageError, UnsupportedFormat, UsageError

if TYPE_CHECKING:
    import torch

_SRC = "<state dict>"

# Hashes of the old byte layout: wrong once tensors are renamed and re-serialised.
_STALE_METADATA = ("sshs_model_hash", "sshs_legacy_hash", HASH_KEY)
_SAFELORAS_INTERNAL = re.compile(r"^[a-z_0-9]+:\d+:rank$")


@dataclass
class ConversionReport:
    source_convention: str
    target_convention: str
    base: str | None
    modules: dict[str, int]                # component → module count
    tensors_in: int
    tensors_out: int
    unconsumed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    embeddings: dict[str, list[int]] = field(default_factory=dict)  # split-out token → shape
    dropped_metadata: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    # token → tensor, for targets that cannot hold embeddings (all but safeloras)
    split_embeddings: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "split_embeddings"}


# --- detection --------------------------------------------------------------------------------
def detect_convention(keys, metadata: dict[str, str] | None = None) -> str:
    """The registered convention that recognises the most keys."""
    metadata = metadata or {}
    keys = list(keys)
    scores = {name: sum(conv.recognizes(k, metadata) for k in keys) for name, conv in CONVENTIONS.items()}
    best = max(scores, key=scores.get, default=None)
    if best is None or scores[best] == 0:
        raise UnsupportedFormat(_SRC, "no known LoRA key convention matches these keys",
                                hint=f"known: {', '.join(CONVENTIONS)}; first key: {keys[:1]}")
    return best


def _down_in_dims(state_dict) -> set[int]:
    """Input widths of the down projections: [r, in] with r < in (up is [out, r])."""
    dims = set()
    for tensor in state_dict.values():
        shape = tuple(tensor.shape)
        if len(shape) == 2 and shape[0] < shape[1]:
            dims.add(shape[1])
    return dims


def detect_base(state_dict, metadata: dict[str, str] | None = None) -> str | None:
    """Base family from key names and shapes (never from metadata, which can lie):
    cross-attention / text widths 768 → sd1, 1024 → sd2, 2048 or te1/te2/SGM names → sdxl,
    ``transformer.`` / Flux block names → flux. (3072 alone proves nothing: CLIP-L's fc2 is 3072 wide.)"""
    keys = list(state_dict)
    # native block names first (SD3 files also carry lora_te2_), then a diffusers file's widths
    dit = _dit.dit_base_from_keys(keys) or _dit.dit_base_from_shapes(state_dict)
    if dit is not None:
        return dit
    if any(k.startswith(("transformer.", "lora_transformer_")) for k in keys):
        return assumed.DIT_TRANSFORMER  # a DiT transformer without another family's markers
    unet_families = unet_namings()
    for family, naming in unet_families:
        if naming.KOHYA_MARKERS and any(k.startswith(naming.KOHYA_MARKERS) for k in keys):
            return family  # SDXL: te2 / SGM names
    dims = _down_in_dims(state_dict)
    # the widest cross-attention context first: the narrower ones (CLIP-L's 768) occur in every family
    by_width = sorted(((get_family(f).aspect("identity").CROSS_ATTENTION_WIDTH, f) for f, _ in unet_families),
                      reverse=True)
    for width, family in by_width:
        if width in dims:
            return family
    if any(naming.UNET.block_out_channels[0] in dims for _, naming in unet_families):
        return assumed.UNET_LORA  # a UNet LoRA (320-wide first blocks) with no later family's sign
    return None


# --- canonical form ---------------------------------------------------------------------------
def to_canonical(state_dict: dict[str, "torch.Tensor"], *, metadata: dict[str, str] | None = None,
                 base: str | None = None, convention: str | None = None,
                 adapter_config: dict[str, Any] | None = None, allow_partial: bool = False) -> CanonicalLora:
    """Read a LoRA state dict into the neutral form. Keys that no module took are listed in
    ``unconsumed``; unless ``allow_partial``, any such key raises ``CoverageError``."""
    metadata = dict(metadata or {})
    name = convention or detect_convention(state_dict, metadata)
    if name not in CONVENTIONS:
        raise UsageError(f"unknown convention {name!r}; known: {', '.join(CONVENTIONS)}")
    base = base or detect_base(state_dict, metadata)
    result = CONVENTIONS[name].read(state_dict, ReadContext(metadata, base, adapter_config))
    lora = result.lora
    lora.base = base or lora.base  # a reader may know the family from its own names (XLabs: Flux)
    lora.source_convention = name
    lora.metadata = metadata
    lora.unconsumed = [k for k in state_dict if k not in result.consumed]
    if lora.unconsumed and not allow_partial:
        lycoris = any(re.search(r"\.(hada_|lokr_|lora_mid|oft_|diff$|dora_scale)", k) for k in lora.unconsumed)
        hint = ("LyCORIS/DoRA tensors: expand them to ΔW (loradex.merge.math.lycoris_math) instead" if lycoris
                else "unknown or incomplete LoRA keys; pass allow_partial to convert the rest")
        raise CoverageError(f"reading as {name}", lora.unconsumed, hint=hint)
    return lora


def carried_metadata(lora: CanonicalLora) -> tuple[dict[str, str], list[str]]:
    """Source metadata worth keeping (kohya ``ss_*``, ``modelspec.*``, free-form keys), minus
    the keys that only described the source convention's own layout and stale hashes."""
    kept, dropped = {}, []
    internal_components = set(lora.components)
    for key, value in lora.metadata.items():
        internal = (key in ("format", LORA_ADAPTER_METADATA_KEY, ALPHA_DTYPES_KEY, PEFT_CONFIG_KEY)
                    or key.startswith("loradex.")
                    or key in lora.embeddings
                    or (lora.source_convention == "safeloras"
                        and (_SAFELORAS_INTERNAL.match(key) or key in internal_components)))
        if internal:
            continue
        if key in _STALE_METADATA:
            dropped.append(key)
            continue
        kept[key] = value
    return kept, dropped


def converted_modelspec(lora: CanonicalLora, title: str | None = None) -> dict[str, str]:
    """ModelSpec keys of the converted file: architecture from the base family, title (the
    source's, else ``title``), trigger phrase from the source metadata and embedded tokens."""
    meta = lora.metadata
    return modelspec_metadata(meta, base=lora.base, title=source_title(meta, title or ""),
                              triggers=source_triggers(meta, list(lora.embeddings)))


def from_canonical(lora: CanonicalLora, convention: str, *, base: str | None = None, title: str | None = None,
                   **options: Any) -> tuple[dict[str, "torch.Tensor"], dict[str, str]]:
    """Write the neutral form in ``convention``. Embeddings split out of safeloras files are
    not written here unless the target holds them (safeloras); see ``convert_state_dict``.
    ``title``: the ModelSpec title when the source metadata has none.
    Options: ``sdxl_unet_names="sgm"|"diffusers"`` (kohya), ``base_model_name_or_path`` (peft)."""
    if convention not in CONVENTIONS:
        raise UsageError(f"unknown convention {convention!r}; known: {', '.join(CONVENTIONS)}")
    if base is not None:
        lora.base = base
    ctx = WriteContext(lora.base, options)
    state_dict, own_metadata = CONVENTIONS[convention].write(lora, ctx)
    _check_written(lora, convention, state_dict, own_metadata, ctx.regrouped)
    lora.notes.extend(n for n in ctx.notes if n not in lora.notes)
    carried, _ = carried_metadata(lora)
    return state_dict, {**carried, **converted_modelspec(lora, title), **own_metadata}


def _same_tensor(a, b) -> bool:
    import torch

    return a is b or (a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b))


def _same_delta(a, b) -> bool:
    """Same ΔW = (α/r)·up@down within float rounding (for modules a writer had to recompute),
    compared in factored form: ‖ΔA − ΔB‖²_F from r×r Gram products, O((out + in)·r²) — never the
    out×in matrices (a fused Flux linear1 is 21504×3072; building it per module made a merge's
    read-back check cost more than the merge)."""
    ua, da = a.up.double().flatten(1), a.down.double().flatten(1)
    ub, db = b.up.double().flatten(1), b.down.double().flatten(1)
    if ua.shape[0] != ub.shape[0] or da.shape[1] != db.shape[1]:
        return False
    sa, sb = a.scale, b.scale
    aa = sa * sa * float(((ua.T @ ua) * (da @ da.T)).sum())   # ‖ΔA‖² = tr(UᵀU · DDᵀ)
    bb = sb * sb * float(((ub.T @ ub) * (db @ db.T)).sum())
    ab = sa * sb * float(((ua.T @ ub) * (da @ db.T)).sum())   # ⟨ΔA, ΔB⟩ = tr(UaᵀUb · DbDaᵀ)
    diff = max(aa + bb - 2.0 * ab, 0.0) ** 0.5
    return diff <= 1e-5 * max(aa, bb) ** 0.5 + 1e-12


def _check_written(lora: CanonicalLora, convention: str, state_dict, metadata, regrouped=frozenset()) -> None:
    """Read the output back with the target's own reader: every module must come back with
    the very same tensors and scale (the same ΔW for the modules in ``regrouped``, whose factors
    a writer had to recompute), and no output key may be left over."""
    back = CONVENTIONS[convention].read(state_dict, ReadContext(metadata, lora.base))
    leftover = [k for k in state_dict if k not in back.consumed]
    missing = []
    for component, mods in lora.components.items():
        got = back.lora.components.get(component, {})
        for path, mod in mods.items():
            other = got.get(path)
            if other is None:
                missing.append(f"{component}.{path}")
            elif (component, path) in regrouped:
                if not _same_delta(mod, other):
                    missing.append(f"{component}.{path}")
            elif not (_same_tensor(other.down, mod.down) and _same_tensor(other.up, mod.up)
                      and abs(other.scale - mod.scale) <= 1e-12 * abs(mod.scale)):
                missing.append(f"{component}.{path}")
    if leftover or missing:
        raise CoverageError(f"writing {convention} would not preserve every module", missing + leftover)


# --- whole conversions ------------------------------------------------------------------------
def convert_state_dict(state_dict: dict[str, "torch.Tensor"], *, to: str, metadata: dict[str, str] | None = None,
                       base: str | None = None, allow_partial: bool = False, convention: str | None = None,
                       adapter_config: dict[str, Any] | None = None, title: str | None = None, **options: Any):
    """→ (state_dict, metadata, report). Embedded tokens of safeloras files come back in
    ``report.split_embeddings`` (token → tensor) when the target cannot hold them."""
    lora = to_canonical(state_dict, metadata=metadata, base=base, convention=convention,
                        adapter_config=adapter_config, allow_partial=allow_partial)
    out, out_meta = from_canonical(lora, to, title=title, **options)
    _, dropped_meta = carried_metadata(lora)
    report = ConversionReport(
        source_convention=lora.source_convention, target_convention=to, base=lora.base,
        modules={c: len(m) for c, m in lora.components.items()},
        tensors_in=len(state_dict), tensors_out=len(out), unconsumed=list(lora.unconsumed),
        notes=list(lora.notes), embeddings={t: list(v.shape) for t, v in lora.embeddings.items()},
        dropped_metadata=dropped_meta,
        split_embeddings={} if to == "safeloras" else dict(lora.embeddings))
    return out, out_meta, report


def _read_adapter_config(src: Path) -> dict[str, Any] | None:
    """The PEFT ``adapter_config.json`` next to ``src``, parsed with caps and checked
    (``lora_conventions.PEFT_CONFIG_SCHEMA``)."""
    from loradex.merge.conventions.lora_conventions import PEFT_CONFIG_SCHEMA, header_json
    from loradex.registry.untrusted import read_json_file

    for candidate in (src.with_name(src.stem + ".adapter_config.json"), src.with_name("adapter_config.json")):
        if candidate.is_file():
            return header_json(read_json_file(candidate), str(candidate), PEFT_CONFIG_SCHEMA)
    return None


def _adapter_config_path(dest: Path) -> Path:
    if dest.name == "adapter_model.safetensors":
        return dest.with_name("adapter_config.json")
    return dest.with_name(dest.stem + ".adapter_config.json")


def _safe_token(token: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", token).strip("_") or "token"


def convert_file(src, dest, to: str, *, base: str | None = None, allow_partial: bool = False,
                 title: str | None = None, **options: Any) -> ConversionReport:
    """Read a ``.safetensors`` LoRA, convert it, write ``dest`` atomically (plus a PEFT
    ``adapter_config.json`` sidecar, and one diffusers embedding file per token split out of a
    safeloras file). The written file's ModelSpec keys (architecture, title — ``title`` or the
    source file's stem when the source has none —, trigger phrase, hash_sha256) are those of
    ``merge.modelspec``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from loradex.registry.files.atomic_files import atomic_output
    from loradex.registry.files.safetensors_writer import save_safetensors

    src, dest = Path(src), Path(dest)
    if src.suffix != ".safetensors":
        raise UnsupportedFormat(src, "only .safetensors files are converted here",
                                hint="pickles are loaded (and converted) by `add --allow-pickle`")
    with safe_open(str(src), framework="pt") as fh:
        metadata = dict(fh.metadata() or {})
    state_dict = load_file(str(src))
    out, out_meta, report = convert_state_dict(
        state_dict, to=to, metadata=metadata, base=base, allow_partial=allow_partial,
        adapter_config=_read_adapter_config(src), title=title or src.stem.split(".")[0],
        **options)
    save_safetensors(out, dest, out_meta, hash_key=HASH_KEY)
    report.files.append(str(dest))
    if PEFT_CONFIG_KEY in out_meta:
        side = _adapter_config_path(dest)
        with atomic_output(side, "w") as fh:
            fh.write(json.dumps(json.loads(out_meta[PEFT_CONFIG_KEY]), indent=2, sort_keys=True))
        report.files.append(str(side))
    for token, tensor in report.split_embeddings.items():
        emb_dest = dest.with_name(f"{dest.stem}.{_safe_token(token)}.safetensors")
        save_safetensors({token: tensor}, emb_dest, {"format": "pt"})
        report.files.append(str(emb_dest))
    return report
