"""Read an adapter file into merge-math modules, whatever its key convention.

``open_adapter(path)`` returns an ``AdapterSource``: the module names (kohya naming, normalised so
that the SGM and diffusers spellings of one SDXL module become the same name) and ``load(name)``
giving one ``LoraModule`` — or a ``DenseDelta`` for a LyCORIS module (LoHa, LoKr, LoCon-Tucker,
full diff), expanded with ``lycoris_math.lycoris_delta``.

kohya-named files (plain LoRA and LyCORIS) are read lazily with ``safe_open``: only the module
asked for is read, so a merge holds one module group of each input at a time. Other conventions
(diffusers, PEFT, legacy, attention-processor, safeloras) go through ``convert.to_canonical``,
which needs the whole state dict; those files are read once into memory (their tensors are the
factors, not ΔW, so this is the file's own size). Flux / SD3 files (a family with a ``naming``
aspect) always take that road, whatever their convention: fused native modules (kohya
``img_attn.qkv``, ``linear1``) are split there, so every file names one module per projection
(``lora_transformer_<diffusers path>``); LyCORIS modules on them are expanded and split by rows
(``dit_conventions.merge_modules``).

Before anything is read, the header is held to ``registry.probe.tensor_rules`` (the rules ``add``
applies: dtypes, down/up pairs, rank ≥ 1, one-element alpha), so a blob stored before those rules
fails here in one line instead of inside the math. F8 factors are up-cast by the math (float32).
``nonfinite_modules()`` names the modules holding NaN/±Inf; ``merge``/``resize`` refuse them unless
``--allow-nonfinite`` (``catalog_merge.check_finite``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loradex.families import all_families
from loradex.families.vocabulary import kohya_base_model_version

from ..math.lora_module import DOWN_SUFFIX, PLAIN_LORA_SUFFIXES, UP_SUFFIX, DenseDelta, LoraModule, ModuleLike

# kohya's ss_base_model_version values per base family (what sd-scripts writes), from the
# families' vocabulary (``loradex.families.vocabulary.kohya_base_model_version``).
SS_BASE_MODEL_VERSION = {f.name: version for f in all_families()
                         if (version := kohya_base_model_version(f.name)) is not None}


def normalised_kohya_name(name: str, base: str | None) -> str:
    """One kohya spelling per module: resolve to the real module path and write it back.

    SDXL UNet modules use the SGM spelling (what sd-scripts writes); names that do not resolve
    are kept as they are.
    """
    from .kohya_names import kohya_module_name, resolve_kohya_module, split_kohya_name, writes_sgm_unet

    split = split_kohya_name(name)
    if split is None:
        return name
    component, underscored = split
    try:
        path = resolve_kohya_module(component, underscored, base).path
        return kohya_module_name(component, path, base, sgm_unet=writes_sgm_unet(base))
    except (KeyError, ValueError):
        return name


def kohya_name_for_path(component: str, path: str, base: str | None) -> str:
    """kohya module name of a model module path (``down_blocks.1.attentions.0…``).

    DiT families (a ``naming`` aspect with a table): the transformer keeps its split diffusers
    paths in OneTrainer's spelling (``lora_transformer_transformer_blocks_0_attn_to_q``), so files
    of every convention meet on one name per projection; text encoders take the family's kohya
    prefixes (Flux T5: ``lora_te3_``)."""
    from .dit_conventions import family_naming
    from .kohya_names import kohya_module_name, writes_sgm_unet

    naming = family_naming(base)
    if naming is not None:
        prefix = "lora_transformer_" if component == "transformer" else naming.KOHYA_WRITE_PREFIXES[component]
        return prefix + path.replace(".", "_")
    return kohya_module_name(component, path, base, sgm_unet=writes_sgm_unet(base))


@dataclass
class AdapterSource:
    """One adapter file opened for module-by-module reading."""

    path: Path
    base: str | None
    convention: str
    metadata: dict[str, str]
    # normalised kohya name → the file's keys for that module, grouped by suffix (lazy kohya files)
    _groups: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)
    # normalised kohya name → module already in memory (non-kohya conventions)
    _loaded: dict[str, ModuleLike] = field(default_factory=dict, repr=False)
    skipped: dict[str, str] = field(default_factory=dict)  # key → why it is not a module
    _handle: Any = field(default=None, repr=False)

    def names(self) -> list[str]:
        return sorted(set(self._groups) | set(self._loaded))

    def __contains__(self, name: str) -> bool:
        return name in self._groups or name in self._loaded

    def load(self, name: str) -> ModuleLike | None:
        """The module ``name`` (kohya naming), or None when this adapter does not touch it."""
        if name in self._loaded:
            return self._loaded[name]
        keys = self._groups.get(name)
        if keys is None:
            return None
        tensors = {suffix: upcast(self._handle.get_tensor(key)) for suffix, key in keys.items()}
        return module_from_group(name, tensors)

    def modules(self) -> Iterator[tuple[str, ModuleLike]]:
        for name in self.names():
            yield name, self.load(name)

    def nonfinite_modules(self) -> list[str]:
        """Names of the modules with a NaN or ±Inf in any tensor (alpha included); reads each once."""
        bad = []
        for name in self.names():
            if name in self._loaded:
                tensors = module_tensors(self._loaded[name])
            else:
                tensors = [self._handle.get_tensor(key) for key in self._groups[name].values()]
            if not all_finite(tensors):
                bad.append(name)
        return bad

    def load_all(self) -> dict[str, ModuleLike]:
        return dict(self.modules())

    def close(self) -> None:
        self._handle = None  # safe_open handles are released with the object

    def __enter__(self) -> "AdapterSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def upcast(tensor):
    """F8 tensors as float32: torch does no arithmetic (or promotion) on float8 types."""
    return tensor.float() if tensor.is_floating_point() and tensor.element_size() == 1 else tensor


def module_tensors(module: ModuleLike) -> list[Any]:
    """The tensors (and alpha, as a number) a module holds."""
    if isinstance(module, DenseDelta):
        return [module.delta]
    return [module.down, module.up] + ([module.alpha] if module.alpha is not None else [])


def all_finite(values) -> bool:
    """True when no tensor or number of ``values`` holds NaN or ±Inf (integer tensors always are)."""
    import math

    import torch

    for value in values:
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value.float()).all()):
                return False
        elif not math.isfinite(float(value)):
            return False
    return True


def _check_header(path: Path) -> dict:
    """The tensor rules ``add`` applies (``registry.probe.tensor_rules``: dtypes, and the pairs of
    every plain LoRA convention) → tensor name → TensorMeta."""
    from loradex.registry.probe.probing import check_tensor_rules

    return check_tensor_rules(path).tensors


def _check_groups(path: Path, groups: dict[str, dict[str, str]], tensors: dict) -> None:
    """Plain LoRA groups: both halves, rank ≥ 1, one-element alpha; every bad module named."""
    from loradex.registry.probe.tensor_rules import modules_problems, raise_for_modules

    parts = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha"}
    plain = {name: {parts[suffix]: tensors[key].shape for suffix, key in group.items()}
             for name, group in groups.items() if set(group) <= PLAIN_LORA_SUFFIXES}
    raise_for_modules(path, modules_problems(plain))


def module_from_group(name: str, tensors: dict[str, Any]) -> ModuleLike:
    """A kohya module group (suffix → tensor) as a LoraModule, or a LyCORIS one as its ΔW."""
    from ..math.lycoris_math import lycoris_delta, lycoris_kind

    if set(tensors) <= PLAIN_LORA_SUFFIXES and DOWN_SUFFIX in tensors and UP_SUFFIX in tensors:
        alpha = tensors.get("alpha")
        return LoraModule(
            down=tensors[DOWN_SUFFIX],
            up=tensors[UP_SUFFIX],
            alpha=float(alpha.float().item()) if alpha is not None else None,
        )
    from loradex.registry.errors import UnsupportedFormat

    try:
        delta = lycoris_delta(tensors, name=name)
    except (KeyError, IndexError, RuntimeError, ZeroDivisionError) as exc:  # factors that do not fit together
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UnsupportedFormat(name, f"LyCORIS factors {sorted(tensors)} do not fit together ({first})",
                                hint="the file is damaged or was written by a broken tool; re-export it") from None
    return DenseDelta(delta=delta, source=lycoris_kind(tensors))


def open_adapter(path: str | Path, *, base: str | None = None, check_suffix: bool = True) -> AdapterSource:
    """Open a LoRA / LyCORIS ``.safetensors`` file of any known convention.

    ``base`` is the family ("sd1", "sdxl"…) when the caller knows it (the catalog does); it
    decides how SDXL names are spelled.
    """
    from safetensors import safe_open

    from loradex.registry.errors import UnsupportedFormat

    from .convert import detect_convention
    from .kohya_names import split_kohya_name

    path = Path(path)
    if check_suffix and path.suffix != ".safetensors":
        raise UnsupportedFormat(path, "merging reads .safetensors adapters only",
                                hint="convert pickles first (`loradex add --allow-pickle` then `loradex convert`)")
    header_tensors = _check_header(path)
    handle = safe_open(str(path), framework="pt")
    metadata = dict(handle.metadata() or {})
    keys = list(handle.keys())
    base = base if base and base != "unknown" else None
    from .dit_conventions import dit_base_from_keys, family_naming, has_lycoris, merge_modules

    # DiT files (Flux, SD3) go through the canonical reader: fused projections are split there,
    # so kohya (fused) and diffusers (split) files name the same modules
    dit = family_naming(base) is not None or dit_base_from_keys(keys) is not None
    kohya_like = [k for k in keys if split_kohya_name(k.partition(".")[0]) is not None and "." in k]
    if keys and not dit and len(kohya_like) * 2 >= len(keys):
        source = AdapterSource(path, base, "kohya", metadata, _handle=handle)
        for key in keys:
            module, _, suffix = key.partition(".")
            if not suffix or split_kohya_name(module) is None:
                source.skipped[key] = "not a kohya module key (bundled embedding or extra tensor)"
                continue
            norm = normalised_kohya_name(module, base)
            group = source._groups.setdefault(norm, {})
            if suffix in group:
                raise UnsupportedFormat(path, f"module {norm} appears twice (as {module} and another spelling)")
            group[suffix] = key
        _check_groups(path, source._groups, header_tensors)
        return source
    # other conventions: the canonical reader needs every tensor
    from .convert import to_canonical

    state_dict = {k: upcast(handle.get_tensor(k)) for k in keys}
    if dit and has_lycoris(keys):  # LyCORIS on Flux/SD3: expanded per module, fused ones split by rows
        dit_base = base if family_naming(base) is not None else dit_base_from_keys(keys)
        modules, skipped = merge_modules(state_dict, family_naming(dit_base))
        source = AdapterSource(path, dit_base, "lycoris", metadata, skipped=skipped)
        for (component, module_path), module in modules.items():
            source._loaded[kohya_name_for_path(component, module_path, dit_base)] = module
        return source
    detect_convention(keys, metadata)  # clear UnsupportedFormat when nothing matches
    adapter_config = _adapter_config(path)
    lora = to_canonical(state_dict, metadata=metadata, base=base, adapter_config=adapter_config)
    source = AdapterSource(path, lora.base, lora.source_convention or "?", metadata)
    for component, mods in lora.components.items():
        for module_path, mod in mods.items():
            source._loaded[kohya_name_for_path(component, module_path, lora.base)] = mod.to_lora_module()
    for token in lora.embeddings:
        source.skipped[token] = "embedded token (not a LoRA module)"
    return source


def _adapter_config(path: Path) -> dict | None:
    from .convert import _read_adapter_config

    return _read_adapter_config(path)


def open_version(catalog, ref: str) -> tuple[Any, AdapterSource]:
    """(Version, AdapterSource) of a catalog ref, read from its blob."""
    version = catalog.resolve(ref)
    base = version_family(catalog, version)
    return version, open_adapter(blob_path(catalog, version), base=base, check_suffix=False)


def blob_path(catalog, version) -> Path:
    """The stored file of a version (blobs are named by their hash)."""
    from loradex.registry.errors import InvalidFile, UnsupportedFormat

    path = Path(catalog.blobs.path_for(version.sha256))
    if not path.exists():
        raise InvalidFile(path, f"blob of {version.ref} is missing", hint="run `loradex verify`")
    if version.probe.get("container") not in (None, "safetensors"):
        raise UnsupportedFormat(path, f"{version.ref} is a {version.probe.get('container')} file; "
                                "merging reads safetensors only", hint="convert it first")
    return path


def version_family(catalog, version) -> str | None:
    """Base family of a version: the adapter's recorded base, else the probe's."""
    base = None
    try:
        base = catalog.get_adapter(version.adapter).base
    except Exception:  # noqa: BLE001 - fall back to the probe when the adapter row cannot be read
        base = None
    if not base or base == "unknown":
        base = version.probe.get("base")
    return base if base and base != "unknown" else None
