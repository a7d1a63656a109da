"""Opted-in pickles (.pt / .bin / .ckpt) → safetensors of the matching convention, and ``add`` through it.

A pickle is loaded only through ``registry.pickle_scan.safe_load_pickle`` (static scan of its
globals, then ``torch.load(weights_only=True)``); what comes out is a Python object, which a
*pickle layout* turns into ``{key: tensor}`` plus string metadata:

- ``a1111-embedding``: ``{"string_to_param": {"*": T[n, dim]}, "name", "step", "sd_checkpoint", …}``
  → ``{"emb_params": T[n, dim]}`` (the A1111 / kohya safetensors form); name, step and checkpoint
  fields go to the metadata; ``string_to_token`` (A1111's placeholder token ids, which A1111
  itself ignores when loading) is dropped and reported.
- ``checkpoint``: a Lightning-style ``{"state_dict": {...}, "global_step": …}`` → the state dict's
  tensors; scalar fields become ``checkpoint.<field>`` metadata, training state (optimizer states,
  callbacks) is dropped and reported.
- ``tensor-dict``: anything else that is a dict of tensors (kohya / diffusers LoRA state dicts,
  diffusers ``{token: T}`` embeddings, SDXL ``clip_l``/``clip_g``) → the same keys (nested dicts
  flattened with ``.``, as the prober sees them).

A non-tensor value where a tensor belongs is refused, naming every such key. Tensors are moved to
the CPU, detached and made contiguous, never recomputed (same dtype, same values); the file is
written with ``save_safetensors`` so the same pickle always gives the same bytes (same sha256).

``add_pickle_converted`` adds the converted file as the version, with a ``converted_from`` edge
to ``sha256:<original file's sha256>`` and the recipe (source name, hash, scanned globals).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loradex.registry.errors import UnsupportedFormat

if TYPE_CHECKING:
    import torch

RECIPE_OP = "pickle-to-safetensors"
SCALARS = (str, int, float, bool)


@dataclass
class Converted:
    tensors: dict[str, "torch.Tensor"]
    metadata: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)  # key → why it is not carried over


@dataclass(frozen=True)
class PickleLayout:
    name: str
    matches: Callable[[Any], bool]
    convert: Callable[[Any, Path], Converted]


PICKLE_LAYOUTS: dict[str, PickleLayout] = {}  # tried in registration order; the first match wins


def register_pickle_layout(name: str, matches: Callable[[Any], bool]):
    def decorate(fn: Callable[[Any, Path], Converted]):
        PICKLE_LAYOUTS[name] = PickleLayout(name, matches, fn)
        return fn

    return decorate


def _plain_tensor(t: "torch.Tensor") -> "torch.Tensor":
    """A CPU, contiguous tensor owning its memory (pickles may share storages between tensors,
    which safetensors refuses); values and dtype unchanged."""
    import torch

    return t.detach().to("cpu").clone(memory_format=torch.contiguous_format)


def _flatten(node, prefix: str, out: dict, junk: list[str], depth: int = 0) -> None:
    import torch

    if isinstance(node, torch.Tensor):
        out[prefix] = _plain_tensor(node)
    elif hasattr(node, "items") and depth < 6:
        for k, v in node.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out, junk, depth + 1)
    else:
        junk.append(f"{prefix or '<top level>'} ({type(node).__name__})")


def _tensors_only(node, path: Path, what: str) -> dict[str, "torch.Tensor"]:
    out: dict[str, "torch.Tensor"] = {}
    junk: list[str] = []
    _flatten(node, "", out, junk)
    if junk:
        shown = ", ".join(junk[:8]) + (f" … (+{len(junk) - 8} more)" if len(junk) > 8 else "")
        raise UnsupportedFormat(path, f"{what} holds non-tensor values where tensors belong: {shown}",
                                hint="only tensors can go into a safetensors file; use --keep-pickle to store it as-is")
    if not out:
        raise UnsupportedFormat(path, f"{what} contains no tensors", hint="nothing to convert")
    return out


# --- layouts --------------------------------------------------------------------------------------
@register_pickle_layout("a1111-embedding", lambda obj: isinstance(obj, dict) and "string_to_param" in obj)
def _a1111(obj: dict, path: Path) -> Converted:
    from .embedding_convert import from_embedding, to_embedding

    params = obj["string_to_param"]
    params = getattr(params, "_parameters", params)  # old files: a torch.nn.ParameterDict
    if not hasattr(params, "items") or len(params) != 1:
        raise UnsupportedFormat(path, f"A1111 embedding with {len(params) if hasattr(params, '__len__') else '?'} "
                                      "entries in string_to_param (A1111 loads exactly one)")
    tensors = _tensors_only(dict(params), path, "string_to_param")
    meta, dropped, junk = {}, {}, []
    for key, value in obj.items():
        if key == "string_to_param":
            continue
        if key == "string_to_token":
            dropped[key] = "A1111's placeholder token ids; A1111 names the embedding by its file and ignores them"
        elif isinstance(value, SCALARS):
            meta[str(key)] = str(value)
        elif value is not None:
            junk.append(f"{key} ({type(value).__name__})")
    if junk:
        raise UnsupportedFormat(path, f"A1111 embedding with unexpected non-scalar fields: {', '.join(junk)}",
                                hint="use --keep-pickle to store it as-is")
    emb = to_embedding({"string_to_param": tensors})
    return Converted(from_embedding(emb, "a1111"), {"format": "pt", **meta}, dropped)


def _is_checkpoint(obj) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict)


@register_pickle_layout("checkpoint", _is_checkpoint)
def _checkpoint(obj: dict, path: Path) -> Converted:
    tensors = _tensors_only(obj["state_dict"], path, "state_dict")
    meta, dropped = {}, {}
    for key, value in obj.items():
        if key == "state_dict":
            continue
        if isinstance(value, SCALARS):
            meta[f"checkpoint.{key}"] = str(value)
        elif value is not None:
            dropped[str(key)] = f"training state ({type(value).__name__}), not model weights"
    return Converted(tensors, {"format": "pt", **meta}, dropped)


@register_pickle_layout("tensor-dict", lambda obj: hasattr(obj, "items"))
def _tensor_dict(obj, path: Path) -> Converted:
    return Converted(_tensors_only(obj, path, "the pickled dict"), {"format": "pt"})


def _convention_of(tensors: dict) -> str:
    """What the tensors are, for the report: an embedding layout, a LoRA convention or plain tensors."""
    from .convert import detect_convention
    from .embedding_convert import detect_embedding_format

    for detect, prefix in ((detect_embedding_format, "embedding:"), (lambda sd: detect_convention(list(sd)), "lora:")):
        try:
            return prefix + detect(tensors)
        except UnsupportedFormat:
            continue
    return "tensors"


# --- API ------------------------------------------------------------------------------------------
def pickle_to_safetensors(path, dest_dir, *, extra_allowed=()) -> tuple[Path, dict]:
    """Safe-load the pickle at ``path`` and write ``<dest_dir>/<stem>.safetensors``.

    Returns (written path, report): source, source_sha256, container, scan_globals, layout,
    convention, tensor_count, metadata, dropped (key → why), dest, autov3. Raises UnsafePickle
    for a pickle that imports anything beyond torch's tensor allow-list (it is never loaded),
    UnsupportedFormat for a pickle holding non-tensor values where tensors belong.
    """
    from loradex.registry.files.hashing import hash_file
    from loradex.registry.files.pickle_scan import safe_load_pickle, scan_pickle
    from loradex.registry.files.safetensors_writer import save_safetensors

    path = Path(path)
    scan = scan_pickle(path)
    obj = safe_load_pickle(path, extra_allowed=extra_allowed)
    layout = next((lay for lay in PICKLE_LAYOUTS.values() if lay.matches(obj)), None)
    if layout is None:
        raise UnsupportedFormat(path, f"the pickle holds a {type(obj).__name__}, not a dict of tensors",
                                hint="use --keep-pickle to store it as-is")
    converted = layout.convert(obj, path)
    dest = Path(dest_dir) / f"{path.stem}.safetensors"
    autov3 = save_safetensors(converted.tensors, dest, converted.metadata)
    report = {
        "source": path.name, "source_sha256": hash_file(path).sha256, "container": scan.container,
        "scan_globals": list(scan.globals), "layout": layout.name, "convention": _convention_of(converted.tensors),
        "tensor_count": len(converted.tensors), "metadata": dict(converted.metadata),
        "dropped": dict(converted.dropped), "dest": str(dest), "autov3": autov3,
    }
    return dest, report


def conversion_recipe(report: dict) -> dict:
    """The lineage recipe of a pickle conversion (what a reader needs to redo or audit it)."""
    return {"op": RECIPE_OP, "source_file": report["source"], "source_sha256": report["source_sha256"],
            "container": report["container"], "scan_globals": report["scan_globals"], "layout": report["layout"],
            "dropped": sorted(report["dropped"])}


def add_pickle_converted(catalog, path, *, extra_allowed=(), lineage: list | None = None,
                         extra: dict | None = None, **add_kwargs):
    """Convert an opted-in pickle and add the safetensors result as the version (``AddResult``).

    ``add_kwargs`` go to ``registry.adding.add_file`` (name, version, bump, kind, base, triggers,
    message, tags, description, link, alias, progress). The version's default name comes from
    the pickle's file name, as it would for the pickle itself.
    """
    from loradex.registry.catalog.adding import add_file, default_name

    add_kwargs.pop("allow_pickle", None)
    path = Path(path)
    add_kwargs["name"] = add_kwargs.get("name") or default_name(path)
    with tempfile.TemporaryDirectory(prefix="loradex-pickle-") as tmp:
        done = convert_pickle_for_catalog(path, tmp, extra_allowed=extra_allowed)
        return add_file(catalog, done.path, lineage=[done.edge, *(lineage or [])],
                        extra={**(extra or {}), **done.extra}, **add_kwargs)


@dataclass(frozen=True)
class CatalogConversion:
    """A pickle converted for the catalog: the safetensors file to store, its ``converted_from``
    lineage edge (to ``sha256:<pickle>``, with the recipe) and the version's ``extra`` entry."""

    path: Path
    edge: dict
    extra: dict


def convert_pickle_for_catalog(path, dest_dir, *, extra_allowed=()) -> CatalogConversion:
    """What ``add`` and ``import`` store for an opted-in pickle (one code path for both)."""
    path = Path(path)
    dest, report = pickle_to_safetensors(path, dest_dir, extra_allowed=extra_allowed)
    edge = {"relation": "converted_from", "external_parent": f"sha256:{report['source_sha256']}",
            "recipe": conversion_recipe(report)}
    extra = {"converted_from_pickle": {"file_name": path.name, "sha256": report["source_sha256"],
                                       "dropped": report["dropped"]}}
    return CatalogConversion(dest, edge, extra)


def add_adapter_file(catalog, path, *, allow_pickle: bool = False, keep_pickle: bool = False,
                     extra_allowed=(), **add_kwargs):
    """``loradex add``: with ``allow_pickle`` a pickle is converted to safetensors first (the
    default) or, with ``keep_pickle``, stored as it is; everything else goes to ``add_file``
    (which refuses pickles without ``allow_pickle``, naming the option)."""
    from loradex.registry.catalog.adding import add_file
    from loradex.registry.files.file_sniff import PICKLE_KINDS, sniff

    if allow_pickle and not keep_pickle and sniff(path).kind in PICKLE_KINDS:
        return add_pickle_converted(catalog, path, extra_allowed=extra_allowed, **add_kwargs)
    return add_file(catalog, path, allow_pickle=allow_pickle, **add_kwargs)
