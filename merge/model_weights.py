"""Full models read lazily by kohya module name: the plumbing that extract and bake share.

Models are read lazily with ``safe_open`` (one tensor at a time) from either

- a diffusers folder (``unet/diffusion_pytorch_model.safetensors`` or, for the DiT families (Flux,
  SD3), ``transformer/diffusion_pytorch_model.safetensors`` — sharded with its ``.index.json`` as real
  Flux folders are — ``text_encoder/model.safetensors``, ``text_encoder_2/model.safetensors``), e.g.
  one written by ``trainer.tiny_pipeline.save_tiny_pipeline``;
- an original-layout single-file ``.safetensors`` checkpoint (``model.diffusion_model.*`` in SGM
  numbering, ``cond_stage_model.transformer.*`` / ``conditioner.embedders.0.transformer.*``), or a
  Flux.1 / SD 3 transformer in its original BFL / SAI layout (fused ``qkv`` / ``linear1`` weights:
  one entry per diffusers module, naming its rows — the family's naming table splits them);
- a catalog ref of kind ``checkpoint`` (its stored single file).

Every weight is named by its kohya module name, so adapters and models meet on one naming. LoRA
target modules follow kohya's defaults: UNet transformer blocks (attention, feed-forward,
proj_in/out) and, with a conv rank, resnets / down- and upsamplers; text encoder attention and MLP.
A DiT transformer's targets are the linears of its blocks (attention, feed-forward, modulation,
single-block projections); its other linears (embedders, ``norm_out``, ``proj_out``) are weights a
LoRA may still touch, so bake fuses them, but extract leaves them out (``WeightEntry.block``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from loradex.registry.files.safetensors_writer import deterministic_safetensors
from loradex.registry.untrusted import read_json_file

from .catalog_merge import component_weight
from .conventions.adapter_io import kohya_name_for_path
from .conventions.modelspec import HASH_KEY
from .math.lora_module import delta_weight

Progress = Callable[[int, int, str], None]

DIFFUSERS_COMPONENT_FILES = {
    "unet": "unet/diffusion_pytorch_model.safetensors",
    "transformer": "transformer/diffusion_pytorch_model.safetensors",
    "text_encoder": "text_encoder/model.safetensors",
    "text_encoder_2": "text_encoder_2/model.safetensors",
}
SINGLE_FILE_PREFIXES = {  # prefix → component; SDXL's OpenCLIP-G (embedders.1) uses other names
    "model.diffusion_model.": "unet",
    "cond_stage_model.transformer.": "text_encoder",
    "conditioner.embedders.0.transformer.": "text_encoder",
}
_UNET_ATTENTION = (".attentions.",)
_UNET_CONV_BLOCKS = (".resnets.", ".downsamplers.", ".upsamplers.")
_TEXT_TARGETS = (".self_attn.", ".mlp.")
_DIT_BLOCKS = ("transformer_blocks.", "single_transformer_blocks.")  # diffusers' DiT block lists
SHARD_INDEX_SUFFIX = ".index.json"
MAX_SHARDS = 1024
SHARD_INDEX_SCHEMA = {  # diffusers / transformers ``save_pretrained(max_shard_size=…)`` index
    "type": "object", "required": ["weight_map"],
    "properties": {"metadata": {"type": "object"},
                   "weight_map": {"type": "object", "maxProperties": 1_000_000,
                                  "additionalProperties": {"type": "string", "maxLength": 255}}},
}


@dataclass
class WeightEntry:
    file: str  # path of the safetensors file holding it
    key: str  # tensor key in that file
    component: str
    conv_block: bool  # in a resnet / sampler (a LoRA target only with a conv rank)
    block: bool = True  # False: a DiT linear outside the blocks (baked when an adapter has it, never extracted)
    path: str = ""  # the module's dotted path in its component (diffusers / transformers naming)
    shape: tuple = ()
    # a part of a fused native (BFL / SAI) weight: its output rows in the stored tensor, and whether
    # the stored halves are (shift, scale) where diffusers has (scale, shift)
    rows: tuple[int, int] | None = None
    swap_halves: bool = False

    def view(self, tensor):
        """This module's weight out of the stored ``tensor`` (rows taken, halves put in diffusers order)."""
        if self.rows is not None:
            tensor = tensor[self.rows[0]:self.rows[1]]
        return _swapped(tensor) if self.swap_halves else tensor


@dataclass
class ModelWeights:
    """A model's LoRA-target weights by kohya module name, read lazily."""

    source: str
    layout: str  # "diffusers" | "single-file"
    family: str | None
    entries: dict[str, WeightEntry] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)  # weight keys with no kohya name
    _handles: dict[str, Any] = field(default_factory=dict, repr=False)

    def tensor(self, name: str):
        entry = self.entries[name]
        handle = self._handles.get(entry.file)
        if handle is None:
            from safetensors import safe_open

            handle = self._handles[entry.file] = safe_open(entry.file, framework="pt")
        return entry.view(handle.get_tensor(entry.key))

    def names(self, *, conv: bool) -> list[str]:
        """The modules extract looks at: LoRA targets (k×k convs only with ``conv``)."""
        return sorted(n for n, e in self.entries.items() if e.block and (conv or not e.conv_block))

    def has_component(self, component: str) -> bool:
        return any(e.component == component for e in self.entries.values())

    def content_hash(self) -> str:
        """sha256 of the single file, or of ``<relative path>\\0<sha256>\\n`` lines of the weight files."""
        from .recipes import sha256_of

        if self.layout == "single-file":
            return sha256_of(self.files[0])
        root = Path(self.source)
        lines = "".join(f"{p.relative_to(root).as_posix()}\0{sha256_of(p)}\n" for p in sorted(self.files))
        return hashlib.sha256(lines.encode("utf-8")).hexdigest()


class _View:
    """A Mapping-like view (what ``extract_lora`` reads) over ModelWeights."""

    def __init__(self, weights: ModelWeights):
        self.weights = weights

    def __getitem__(self, name):
        return self.weights.tensor(name)

    def get(self, name, default=None):
        return self.weights.tensor(name) if name in self.weights.entries else default

    def __iter__(self):
        return iter(self.weights.entries)


def _is_target(component: str, path: str) -> tuple[bool, bool]:
    """(is a LoRA target, only with a conv rank)."""
    if component == "transformer":  # every linear weight: see _in_dit_block for which extract reads
        return True, False
    if component == "unet":
        if any(t in path for t in _UNET_ATTENTION):
            return True, False
        return any(t in path for t in _UNET_CONV_BLOCKS), True
    return any(t in path for t in _TEXT_TARGETS), False


def _in_dit_block(component: str, path: str) -> bool:
    return component != "transformer" or path.startswith(_DIT_BLOCKS)


def _family_from_folder(folder: Path) -> str | None:
    """The family of a diffusers folder: the one whose pipeline aspect names the folder's pipeline
    class (SD 1.x and 2.x share one class: told apart by the text encoder's width)."""
    from loradex.families import aspects, find_family

    index = read_json_file(folder / "model_index.json", max_bytes=1 << 20)
    cls = index.get("_class_name", "") if isinstance(index, dict) else ""
    declared = [family.name for family, pipeline in aspects("pipeline")
                if cls and cls in _pipeline_classes(pipeline)]
    if len(declared) <= 1:
        return declared[0] if declared else None
    # one pipeline class, several families (SD 1.x / 2.x): each aspect's ``matches(pipe)`` tells by
    # the text encoder's width, which the folder's config gives without loading a model
    config = folder / "text_encoder" / "config.json"
    width = read_json_file(config, max_bytes=1 << 20).get("hidden_size") if config.is_file() else None
    stub = SimpleNamespace(text_encoder=SimpleNamespace(config=SimpleNamespace(hidden_size=width)))
    matching = [name for name in declared
                if getattr(find_family(name).aspect("pipeline"), "matches", lambda pipe: True)(stub)]
    return matching[0] if len(matching) == 1 else declared[0]


def _family_from_transformer(weights: ModelWeights) -> str | None:
    """The family a folder's transformer tells by its linears' names and widths (the families'
    identity evidence, as ``inspect`` reads an adapter), for a pipeline class no family declares."""
    from loradex.families import find_family
    from loradex.registry.probe.base_family import decide, evidence_from_modules
    from loradex.registry.probe.facts import Module

    modules = [Module("transformer", e.path, e.path.rpartition(".")[2], e.shape[1], e.shape[0], None)
               for e in weights.entries.values() if e.component == "transformer" and len(e.shape) == 2]
    family, _, _ = decide(evidence_from_modules(modules))
    return find_family(family).name if find_family(family) else None


def _pipeline_classes(pipeline) -> tuple[str, ...]:
    """The diffusers pipeline class names a family's pipeline aspect declares."""
    names = getattr(pipeline, "PIPELINE_CLASSES", None) or getattr(pipeline, "PIPELINE_CLASS", None) or ()
    return (names,) if isinstance(names, str) else tuple(names)


def target_name(component: str, path: str, ndim: int, family: str | None) -> tuple[str, bool] | None:
    """(kohya name, in a conv block) of a LoRA-target weight of ``ndim`` dims at module ``path``; else None."""
    target, conv_block = _is_target(component, path)
    if not target or ndim not in ((2,) if component == "transformer" else (2, 4)):
        return None
    return kohya_name_for_path(component, path, family), conv_block


def _add_weights(weights: ModelWeights, file: Path, mapper: Callable[[str], tuple[str, str] | None]) -> None:
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as fh:
        for key in fh.keys():
            if not key.endswith(".weight"):
                continue
            mapped = mapper(key[: -len(".weight")])
            if mapped is None:
                weights.unmapped.append(key)
                continue
            component, path = mapped
            shape = tuple(fh.get_slice(key).get_shape())
            named = target_name(component, path, len(shape), weights.family)
            if named is not None:
                weights.entries[named[0]] = WeightEntry(str(file), key, component, named[1],
                                                        block=_in_dit_block(component, path), path=path,
                                                        shape=shape)
    weights.files.append(file)


def component_weight_files(folder: Path, rel: str) -> list[Path]:
    """The safetensors file(s) holding one component of a diffusers folder: ``rel`` itself, or the
    shards its ``rel.index.json`` lists (each a plain name beside it, checked before use)."""
    from loradex.registry.errors import InvalidFile
    from loradex.registry.untrusted import check_schema, safe_relative_name

    single = folder / rel
    if single.is_file():
        return [single]
    index_path = folder / (rel + SHARD_INDEX_SUFFIX)
    if not index_path.is_file():
        return []
    index = check_schema(read_json_file(index_path), SHARD_INDEX_SCHEMA, str(index_path))
    names = sorted(set(index["weight_map"].values()))
    if len(names) > MAX_SHARDS:
        raise InvalidFile(index_path, f"{len(names)} shards listed, over the {MAX_SHARDS} cap")
    shards = [single.parent / safe_relative_name(n, str(index_path), field="shard name") for n in names]
    lacking = [p.name for p in shards if not p.is_file()]
    if lacking:
        raise InvalidFile(index_path, f"shard {lacking[0]} is listed but missing",
                          hint="re-download or re-save the model folder")
    return shards


def open_model(spec: str | os.PathLike, catalog=None) -> ModelWeights:
    """Open a diffusers folder, a single-file checkpoint or a catalog checkpoint ref."""
    from loradex.registry.errors import InvalidFile, UnsupportedFormat

    from .conventions.lora_canonical import canonical_text_encoder_path

    path = Path(spec)
    if not path.exists() and catalog is not None:
        version = catalog.resolve(str(spec))
        if (version.probe or {}).get("kind") != "checkpoint":
            raise UnsupportedFormat(str(spec), f"{version.ref} is not a checkpoint")
        path = Path(catalog.blobs.path_for(version.sha256))
        return open_catalog_checkpoint(version, path, str(spec))  # DreamBooth outputs
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise InvalidFile(path, "not a diffusers folder (no model_index.json)")
        weights = ModelWeights(str(path), "diffusers", _family_from_folder(path))
        for component, rel in DIFFUSERS_COMPONENT_FILES.items():
            for weights_file in component_weight_files(path, rel):
                # transformers 5 saves CLIP without the ``text_model.`` level; kohya names keep it
                _add_weights(weights, weights_file, lambda p, c=component: (
                    c, canonical_text_encoder_path(p) if c.startswith("text_encoder") else p))
        if not weights.files:
            raise InvalidFile(path, "no safetensors component weights found",
                              hint="expected unet/ or transformer/diffusion_pytorch_model.safetensors")
        if weights.family is None and weights.has_component("transformer"):
            weights.family = _family_from_transformer(weights)
        return weights
    if path.is_file():
        return _open_single_file(path, str(spec))
    raise InvalidFile(path, "no such file or folder",
                      hint="give a diffusers folder, a .safetensors checkpoint or a checkpoint ref")


def _single_file_family(keys: list[str], fh) -> str | None:
    """The UNet family of an ldm single file: a key only its checkpoints carry (SDXL's second text
    encoder, ``CHECKPOINT_MARKERS``), else the width of the UNet's cross-attention context."""
    import re

    from loradex.families import get_family

    from .conventions.module_layouts import unet_namings

    identities = [(family, get_family(family).aspect("identity")) for family, _ in unet_namings()]
    for family, identity in identities:
        markers = [re.compile(rx) for rx, _ in getattr(identity, "CHECKPOINT_MARKERS", ())]
        if markers and any(rx.search(k) for k in keys for rx in markers):
            return family
    for key in keys:
        if key.startswith("model.diffusion_model.") and key.endswith("attn2.to_k.weight"):
            width = fh.get_slice(key).get_shape()[1]
            return {identity.CROSS_ATTENTION_WIDTH: family for family, identity in identities}.get(width)
    return None


def _open_single_file(path: Path, source: str) -> ModelWeights:
    from safetensors import safe_open

    from loradex.registry.errors import UnsupportedFormat

    from .conventions.checkpoint_layout import LDM_FAMILIES, UNET_PREFIX, ldm_family, unet_layout_from_ldm_keys
    from .conventions.lora_canonical import canonical_text_encoder_path
    from .conventions.module_layouts import UNET_LAYOUTS, sgm_to_diffusers

    with safe_open(str(path), framework="pt") as fh:
        keys = list(fh.keys())
        family = _single_file_family(keys, fh)
        layout = UNET_LAYOUTS.get(family)
        if layout is None and (ldm := ldm_family(keys)) in LDM_FAMILIES:
            # widths of no real model (e.g. a tiny test model baked to this layout): the UNet's
            # block structure is read from its own keys, the family from its text-encoder prefixes
            family = ldm
            layout = unet_layout_from_ldm_keys({k[len(UNET_PREFIX):]: tuple(fh.get_slice(k).get_shape())
                                                for k in keys if k.startswith(UNET_PREFIX)})
    if layout is None:
        with safe_open(str(path), framework="pt") as fh:
            native = _open_native_dit(path, source, {k: tuple(fh.get_slice(k).get_shape()) for k in keys})
        if native is not None:
            return native
        raise UnsupportedFormat(path, "neither an SD1/SD2/SDXL single-file checkpoint nor a Flux.1 / SD 3 "
                                      "transformer in its original layout (family unknown)",
                                hint="give a diffusers folder (model_index.json + unet/ or transformer/)")
    unet_map = sgm_to_diffusers(layout)

    def mapper(module: str) -> tuple[str, str] | None:
        for prefix, component in SINGLE_FILE_PREFIXES.items():
            if module.startswith(prefix):
                rest = module[len(prefix):]
                if component == "unet":
                    return (component, unet_map[rest]) if rest in unet_map else None
                return component, canonical_text_encoder_path(rest)
        return None

    weights = ModelWeights(source, "single-file", family)
    _add_weights(weights, path, mapper)
    return weights


# --- original-layout (BFL / SAI) DiT single files ------------------------------------------------
NATIVE_PREFIXES = ("model.diffusion_model.", "diffusion_model.")


def _swapped(tensor):
    """Rows (a, b) → (b, a): the final modulation's (shift, scale) ↔ diffusers' (scale, shift)."""
    import torch

    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def _native_module(key: str) -> str:
    for prefix in NATIVE_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    return key.removesuffix(".weight")


def _native_family(shapes: dict[str, tuple]) -> tuple[str, Any] | None:
    """(family, naming table) of the DiT family whose native names cover the most linear weights."""
    from loradex.families import aspects

    counts = []
    for family, naming in aspects("naming"):
        table = getattr(naming, "TABLE", None)
        if table is None:
            continue
        found = sum(1 for k, s in shapes.items() if len(s) == 2 and k.endswith(".weight")
                    and table.native(_native_module(k)) is not None)
        if found:
            counts.append((found, family.name, table))
    if not counts:
        return None
    counts.sort(key=lambda c: -c[0])
    if len(counts) > 1 and counts[1][0] == counts[0][0]:
        return None  # two families spell these keys alike: nothing to tell them apart by
    return counts[0][1], counts[0][2]


def _open_native_dit(path: Path, source: str, shapes: dict[str, tuple]) -> ModelWeights | None:
    """A DiT transformer in its original single-file layout (BFL Flux ``double_blocks.N.img_attn.qkv``,
    SAI SD3 ``joint_blocks.N.x_block.attn.qkv``, with or without ``model.diffusion_model.``): each
    fused linear becomes one entry per diffusers module, naming its rows (the family's naming table
    splits them by the module's own shape)."""
    from loradex.families.dit_naming import row_sizes, swaps_halves

    found = _native_family(shapes)
    if found is None:
        return None
    family, table = found
    weights = ModelWeights(source, "single-file", family)
    for key, shape in shapes.items():
        resolved = table.native(_native_module(key)) if key.endswith(".weight") and len(shape) == 2 else None
        if resolved is None:
            weights.unmapped.append(key)
            continue
        sizes = row_sizes(resolved, shape[0], shape[1])
        start = 0
        for part, rows in zip(resolved.parts, sizes):
            name = kohya_name_for_path("transformer", part, family)
            weights.entries[name] = WeightEntry(
                str(path), key, "transformer", False, block=_in_dit_block("transformer", part), path=part,
                shape=(rows, shape[1]), rows=(start, start + rows) if resolved.fused else None,
                swap_halves=swaps_halves(resolved, shape[0], shape[1]))
            start += rows
    weights.files.append(path)
    return weights


def _model_input(spec: str, role: str, catalog) -> tuple[dict, ModelWeights]:
    weights = open_model(spec, catalog)
    ref = spec if not Path(spec).exists() else str(Path(spec).resolve())
    return {"ref": ref, "role": role, "sha256": weights.content_hash()}, weights


def _check_model_hash(entry: dict, weights: ModelWeights) -> None:
    from loradex.registry.errors import IncompatibleAdapters

    if entry.get("sha256") and weights.content_hash() != entry["sha256"]:
        raise IncompatibleAdapters(f"{entry['ref']}: its weights changed since the recipe was made",
                                   hint="the recipe cannot be replayed on other bytes")


def _lineage_parent(ref: str, catalog) -> dict | str:
    if Path(ref).exists():
        return {"external_parent": f"file:{ref}"}
    return catalog.resolve(ref).ref


def fused_tensor(tensor, target, adapters, entries) -> tuple[Any, int]:
    """``tensor`` + Σ w·ΔW over the adapters holding the target module(s) (summed in fp32, returned in
    ``tensor``'s dtype, ``tensor`` itself untouched) and how many module updates there were.

    ``target`` is a kohya module name, or [(name, WeightEntry)] for the parts of a fused native
    weight (each ΔW goes to its rows, halves swapped back where the entry says)."""
    import torch

    parts = [(target, None)] if isinstance(target, str) else target
    total, count = tensor.to(torch.float32, copy=True), 0
    for module_name, weight_entry in parts:
        rows = weight_entry.rows if weight_entry is not None else None
        region = total[rows[0]:rows[1]] if rows is not None else total
        for source, entry in zip(adapters, entries):
            module = source.load(module_name)
            if module is not None:
                delta = delta_weight(module, component_weight(module_name, entry)).reshape(region.shape)
                region += _swapped(delta) if weight_entry is not None and weight_entry.swap_halves else delta
                count += 1
    return total.to(tensor.dtype), count


def fuse_targets(weights: ModelWeights, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """file → {tensor key → kohya name, or [(name, WeightEntry)] for a fused native weight's parts}."""
    by_file: dict[str, dict[str, Any]] = {}
    for module_name, entry in weights.entries.items():
        if module_name not in wanted:
            continue
        targets = by_file.setdefault(entry.file, {})
        if entry.rows is None and not entry.swap_halves:
            targets[entry.key] = module_name
        else:
            targets.setdefault(entry.key, []).append((module_name, entry))
    return by_file


def _fused_file(file: Path, targets: dict[str, Any], adapters, entries, progress) -> tuple[bytes, int]:
    """The bytes of ``file`` with every target weight (key → kohya name(s)) fused; its metadata kept."""
    tensors, metadata, count = fused_state(file, targets, adapters, entries, progress)
    blob, _ = deterministic_safetensors(tensors, metadata, hash_key=HASH_KEY)
    return blob, count


def fused_state(file: Path, targets: dict[str, Any], adapters, entries,
                progress: Progress | None = None) -> tuple[dict, dict[str, str], int]:
    """(every tensor of ``file``, target weights (key → kohya name) fused; its metadata; module updates)."""
    from safetensors import safe_open

    tensors, count = {}, 0
    with safe_open(str(file), framework="pt") as fh:
        metadata = dict(fh.metadata() or {})
        keys = sorted(fh.keys())
        for done, key in enumerate(keys):
            tensor = fh.get_tensor(key)
            module_name = targets.get(key)
            if module_name is not None:
                tensor, n = fused_tensor(tensor, module_name, adapters, entries)
                count += n
            tensors[key] = tensor.contiguous()
            if progress is not None:
                progress(done + 1, len(keys), key)
    return tensors, metadata, count


def replace_folder(dest: Path, fill: Callable[[Path], None]) -> None:
    """Build a folder with ``fill(staged)`` beside ``dest``, then move it to ``dest`` (replacing it)."""
    from loradex.registry.files.atomic_files import TMP_PREFIX

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=dest.parent))
    try:
        staged = tmp / "model"
        fill(staged)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staged, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- catalog checkpoints: loradex DreamBooth outputs ----------------------------------------------

def open_catalog_checkpoint(version, path, source: str):
    """The LoRA-target weights (``ModelWeights``) of a catalog checkpoint, read lazily.

    A loradex DreamBooth output names its family in its training record, and its UNet numbering
    is read from its own keys (``checkpoint_layout.unet_layout_from_ldm_keys``), so fine-tunes of
    any block structure (tiny models too) map; older DreamBooth files are diffusers-keyed (UNet
    keys bare, text encoders under ``text_encoder.``). Any other checkpoint is an ordinary single
    file (``_open_single_file``).
    """
    from safetensors import safe_open

    from .conventions.checkpoint_layout import (
        TEXT_ENCODER_PREFIXES,
        UNET_PREFIX,
        is_ldm_checkpoint,
        rename_by_prefix,
        unet_layout_from_ldm_keys,
        unet_prefix_pairs,
    )
    from .conventions.lora_canonical import canonical_text_encoder_path

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
