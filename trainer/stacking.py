"""A stack of adapters applied to one loaded pipeline, with per-component weights.

``AdapterStack.apply(entries)`` makes the pipeline hold exactly ``entries``:

- each LoRA file is loaded once (``pipe.load_lora_weights(path, adapter_name=…)``) and kept
  while later ``apply`` calls name it with the same file; a new weight only calls
  ``set_adapters`` (peft scales the already-injected layers: no reload);
- adapters no longer named are removed with ``delete_adapters``; embeddings with
  ``unload_textual_inversion``;
- weights go to diffusers per component: the denoiser (``unet``, or ``transformer`` for Flux.1 /
  SD3) gets unet_w, every text encoder te_w — ``{"transformer": unet_w, "text_encoder": te_w}``
  (only the components the adapter really has).

Coverage: diffusers drops LoRA keys it cannot map with only a warning. After each load we look
for every down-projection of the file inside the model (peft ``lora_A[adapter]`` layers,
matched by direction, so alpha folding or renaming does not matter); file keys whose module was
not found, and keys that are neither LoRA factors nor alphas, raise ``CoverageError`` unless
``allow_partial``. Files diffusers does not read as they are go through ``convert_for_diffusers``
first: other LoRA conventions are renamed (``loradex.merge.conventions.convert``, exact); LyCORIS files
(LoHa, LoKr, LoCon-Tucker, full) are expanded to ΔW per module and written as a LoRA of the rank
that keeps each module within ``LYCORIS_STACK_TOLERANCE`` (``loradex.merge.conventions.lycoris_to_lora``), so
``set_adapters`` weights apply to them like to any LoRA; the error reached is in ``conversion``.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from loradex.registry.errors import CoverageError, IncompatibleAdapters, UsageError

# (down suffix, up suffix) of the LoRA conventions diffusers reads
FACTOR_SUFFIXES = (
    (".lora_down.weight", ".lora_up.weight"),                       # kohya
    (".lora.down.weight", ".lora.up.weight"),                       # diffusers (legacy)
    (".lora_A.weight", ".lora_B.weight"),                           # peft / diffusers
    (".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight"),
    ("_lora.down.weight", "_lora.up.weight"),                       # attention processors
)
ALPHA_SUFFIXES = (".alpha",)
# conventions (loradex.merge.conventions.convert names) that diffusers' load_lora_weights reads as they are
DIFFUSERS_READS = frozenset({"kohya", "diffusers"})
TEXT_COMPONENTS = ("text_encoder", "text_encoder_2", "text_encoder_3")
DIRECTION_MATCH = 1 - 1e-4  # cosine of a file's down factor and an injected lora_A


@dataclass(frozen=True)
class StackEntry:
    adapter_name: str
    file_path: str | os.PathLike
    te_weight: float = 1.0
    unet_weight: float = 1.0
    kind: str = "lora"          # "lora" (also LyCORIS after conversion) or "embedding"
    token: str | None = None    # embeddings: the prompt token; default "<adapter_name>"


@dataclass
class CoverageReport:
    file_modules: int
    injected_modules: int
    dropped: list[str] = field(default_factory=list)   # file keys not found in the model
    unmatched_zero: int = 0                             # all-zero down factors (cannot be located)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class LoadedAdapter:
    adapter_name: str
    peft_name: str               # diffusers/peft names may not contain "."
    file_identity: tuple
    kind: str
    components: tuple[str, ...] = ()
    tokens: tuple[str, ...] = ()
    coverage: CoverageReport | None = None
    loaded_path: str = ""        # the file diffusers read (converted copy if any)
    conversion: dict | None = None  # how that copy was made (LyCORIS: ranks, max relative ΔW error)


def _file_identity(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _peft_name(adapter_name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", adapter_name) or "adapter"
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    return name


@contextlib.contextmanager
def _quiet_library_logs():
    """transformers prints a per-key load table (base weights 'MISSING' because only LoRA
    tensors are loaded), diffusers lists the *other* adapters' keys as missing, peft warns about
    a second adapter: noise next to our own coverage check, which replaces them."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    d_level = diffusers_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            warnings.filterwarnings("ignore", message="The following alpha_pattern keys did not match")
            yield
    finally:
        hf_logging.set_verbosity(level)
        diffusers_logging.set_verbosity(d_level)
        if bars:
            hf_logging.enable_progress_bar()


# --- conversion hook -----------------------------------------------------------------------------

# A LyCORIS file (LoHa, LoKr, LoCon-Tucker, full) is stacked as the LoRA whose rank per module is
# the smallest that keeps ‖ΔW − ΔW_k‖_F ≤ tolerance·‖ΔW‖_F (exact up to float rounding for the
# low-rank structures; the error actually reached is reported with the adapter).
LYCORIS_STACK_TOLERANCE = 1e-5
_LYCORIS_STACK_RULE = ("sv_fro", (1.0 - LYCORIS_STACK_TOLERANCE**2) ** 0.5)
_NO_RANK_CAP = 1 << 30


@dataclass(frozen=True)
class DiffusersSource:
    """The file diffusers reads for a stacked adapter, and how it was obtained from the original."""

    path: Path
    conversion: dict | None = None  # None: the original file itself


def _lycoris_as_lora(path: Path, dest: Path, base: str | None) -> dict:
    from loradex.merge.conventions.lycoris_to_lora import lycoris_to_lora

    report = lycoris_to_lora(path, dest, _NO_RANK_CAP, dtype="fp32", base=base, dynamic=_LYCORIS_STACK_RULE)
    converted = report.converted()
    return {"from": "lycoris", "to": "kohya", "kinds": sorted({m.kind for m in converted.values()}),
            "modules_converted": len(converted), "ranks": sorted({m.rank for m in converted.values()}),
            "tolerance": LYCORIS_STACK_TOLERANCE, "max_relative_error": report.max_relative_error()}


def _lora_in_diffusers_convention(path: Path, dest: Path, base: str | None) -> dict | None:
    from safetensors import safe_open

    from loradex.merge.conventions.convert import convert_file, detect_convention
    from loradex.merge.conventions.dit_conventions import family_naming

    with safe_open(str(path), framework="pt") as fh:
        convention = detect_convention(list(fh.keys()), dict(fh.metadata() or {}))
    # DiT families (Flux, SD3): diffusers' kohya/ComfyUI reader drops the non-block modules (img_in,
    # final_layer …) and assumes the real Flux widths; it reads no SD3 kohya file: convert them
    if convention in DIFFUSERS_READS and (convention == "diffusers" or family_naming(base) is None):
        return None
    convert_file(path, dest, to="diffusers", base=base)
    return {"from": convention, "to": "diffusers", "exact": True}


# probed kind → fn(file, destination, base family) → conversion summary, or None when diffusers
# reads the file as it is (nothing written)
DIFFUSERS_CONVERTERS = {"lycoris": _lycoris_as_lora, "lora": _lora_in_diffusers_convention}


def convert_for_diffusers(path: str | os.PathLike, cache_dir: str | os.PathLike) -> DiffusersSource:
    """The file diffusers' ``load_lora_weights`` reads with every tensor: ``path`` itself when
    diffusers reads its convention, else a converted copy (cached by file identity, with its
    conversion summary beside it): other LoRA conventions by ``merge.convert`` (bit-exact),
    LyCORIS through ΔW by ``merge.lycoris_to_lora`` (see ``LYCORIS_STACK_TOLERANCE``)."""
    import hashlib
    import json

    from loradex.registry.files.atomic_files import atomic_output
    from loradex.registry.probe import probe_path

    path = Path(path)
    if path.suffix != ".safetensors":
        return DiffusersSource(path)
    facts = probe_path(path)
    converter = DIFFUSERS_CONVERTERS.get(facts.kind)
    if converter is None:
        return DiffusersSource(path)
    tag = hashlib.sha256(repr(_file_identity(path)).encode()).hexdigest()[:16]
    dest = Path(cache_dir) / f"{path.stem}.{tag}.{facts.kind}-for-diffusers.safetensors"
    summary_file = dest.with_suffix(".json")
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        if summary is None:
            return DiffusersSource(path)
        if dest.is_file():
            return DiffusersSource(dest, summary)
    base = facts.base if facts.base not in (None, "unknown") else None
    summary = converter(path, dest, base)
    with atomic_output(summary_file, "w") as fh:
        json.dump(summary, fh)
    return DiffusersSource(dest if summary is not None else path, summary)


# --- coverage ------------------------------------------------------------------------------------

def _file_factors(path: Path):
    """(pairs [(down_key, up_key, down tensor)], alpha keys, other keys) of a LoRA file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        keys = set(fh.keys())
        pairs, used = [], set()
        for key in sorted(keys):
            for down_sfx, up_sfx in FACTOR_SUFFIXES:
                if key.endswith(down_sfx):
                    up_key = key[: -len(down_sfx)] + up_sfx
                    if up_key in keys:
                        pairs.append((key, up_key, fh.get_tensor(key)))
                        used.update((key, up_key))
                    break
    alphas = {k for k in keys - used if k.endswith(ALPHA_SUFFIXES)}
    return pairs, alphas, sorted(keys - used - alphas)


def injected_lora_layers(pipe, peft_name: str) -> list[tuple[str, str, object]]:
    """(component, module path, lora_A weight) of every layer peft injected for ``peft_name``."""
    found = []
    for component in getattr(pipe, "_lora_loadable_modules", ()):
        model = getattr(pipe, component, None)
        if model is None:
            continue
        for name, module in model.named_modules():
            lora_a = getattr(module, "lora_A", None)
            if lora_a is not None and hasattr(lora_a, "keys") and peft_name in lora_a.keys():
                found.append((component, name, lora_a[peft_name].weight))
    return found


def check_coverage(path: Path, injected: list[tuple[str, str, object]]) -> CoverageReport:
    """Which of the file's LoRA modules landed in the model (see module docstring)."""
    import torch

    pairs, alphas, other = _file_factors(path)
    by_shape: dict[tuple, list] = {}
    for _component, _name, weight in injected:
        by_shape.setdefault(tuple(weight.shape), []).append(weight.detach().float().flatten())
    dropped, zero = list(other), 0
    found_modules = set()
    for down_key, up_key, down in pairs:
        vec = down.float().flatten()
        candidates = by_shape.get(tuple(down.shape), [])
        norm = vec.norm()
        if norm == 0:
            zero += 1
            continue
        if candidates:
            stacked = torch.stack(candidates)
            cos = (stacked @ vec) / (stacked.norm(dim=1) * norm).clamp_min(1e-30)
            if float(cos.max()) >= DIRECTION_MATCH:
                found_modules.add(down_key)
                continue
        dropped += [down_key, up_key]
    # an alpha whose module was dropped is dropped too
    prefixes = {k.rsplit(".", 2)[0] for k, _, _ in pairs if k not in found_modules}
    dropped += sorted(a for a in alphas if a[: -len(".alpha")] in prefixes)
    return CoverageReport(file_modules=len(pairs), injected_modules=len(injected),
                          dropped=sorted(dropped), unmatched_zero=zero)


# --- the stack -----------------------------------------------------------------------------------

class AdapterStack:
    """The adapters currently applied to ``pipe`` (see module docstring)."""

    def __init__(self, pipe, *, allow_partial: bool = False, cache_dir: str | os.PathLike | None = None):
        self.pipe = pipe
        self.allow_partial = allow_partial
        self.loaded: dict[str, LoadedAdapter] = {}
        self.weights: dict[str, tuple[float, float]] = {}
        self.load_calls = 0  # load_lora_weights / load_textual_inversion calls, for tests and benches
        self._cache_dir = Path(cache_dir) if cache_dir else None

    # -- public ------------------------------------------------------------------------------------
    def apply(self, entries: list[StackEntry]) -> list[LoadedAdapter]:
        """Make the pipeline hold exactly ``entries`` at their weights."""
        names = [e.adapter_name for e in entries]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise UsageError(f"adapter(s) named twice in one stack: {', '.join(dupes)}")
        wanted = {e.adapter_name: e for e in entries}
        stale = [n for n, a in self.loaded.items()
                 if n not in wanted or a.kind != wanted[n].kind
                 or a.file_identity != _file_identity(Path(wanted[n].file_path))
                 or (a.kind == "embedding" and a.tokens[:1] != (self._token(wanted[n]),))]
        self.remove(stale)
        for entry in entries:
            if entry.adapter_name not in self.loaded:
                loader = self._load_embedding if entry.kind == "embedding" else self._load_lora
                self.loaded[entry.adapter_name] = loader(entry)
        self.set_weights({e.adapter_name: (e.te_weight, e.unet_weight) for e in entries
                          if e.kind != "embedding"})
        return [self.loaded[n] for n in names]

    def set_weights(self, weights: dict[str, tuple[float, float]]) -> None:
        """Set (te_weight, unet_weight) of loaded LoRAs; the ones not named are deactivated.
        Only ``set_adapters`` runs: nothing is reloaded."""
        unknown = sorted(set(weights) - {n for n, a in self.loaded.items() if a.kind != "embedding"})
        if unknown:
            raise UsageError(f"not loaded in this stack: {', '.join(unknown)}")
        self.weights = dict(weights)
        if not weights:
            if any(a.kind != "embedding" for a in self.loaded.values()):
                self.pipe.disable_lora()
            return
        peft_names, per_component = [], []
        for name, (te, unet) in weights.items():
            adapter = self.loaded[name]
            peft_names.append(adapter.peft_name)
            per_component.append({c: (te if c in TEXT_COMPONENTS else unet) for c in adapter.components})
        self.pipe.enable_lora()
        self.pipe.set_adapters(peft_names, adapter_weights=per_component)

    def remove(self, adapter_names: list[str]) -> None:
        loras = [self.loaded[n].peft_name for n in adapter_names
                 if n in self.loaded and self.loaded[n].kind != "embedding"]
        if loras:
            self.pipe.delete_adapters(loras)
        for name in adapter_names:
            adapter = self.loaded.pop(name, None)
            self.weights.pop(name, None)
            if adapter is not None and adapter.kind == "embedding":
                self._unload_embedding(adapter)

    def clear(self) -> None:
        self.remove(list(self.loaded))

    # -- loading ----------------------------------------------------------------------------------
    def _cache(self) -> Path:
        if self._cache_dir is None:
            self._cache_dir = Path(tempfile.mkdtemp(prefix="loradex-stack-"))
        return self._cache_dir

    def _load_lora(self, entry: StackEntry) -> LoadedAdapter:
        path = Path(entry.file_path)
        if not path.is_file():
            raise UsageError(f"{path}: no such adapter file")
        prepared = convert_for_diffusers(path, self._cache())
        source = prepared.path
        peft_name = _peft_name(entry.adapter_name, {a.peft_name for a in self.loaded.values()})
        try:  # unmapped keys are only a warning in diffusers: the coverage check below decides
            with _quiet_library_logs():
                self.pipe.load_lora_weights(str(source), adapter_name=peft_name)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise IncompatibleAdapters(f"{path}: diffusers could not load it into this pipeline: {exc}",
                                       hint="check the base family of the adapter and the pipeline") from exc
        self.load_calls += 1
        components = tuple(c for c, adapters in self.pipe.get_list_adapters().items()
                           if peft_name in adapters)
        adapter = LoadedAdapter(entry.adapter_name, peft_name, _file_identity(path), "lora",
                                components=components, loaded_path=str(source), conversion=prepared.conversion)
        adapter.coverage = check_coverage(source, injected_lora_layers(self.pipe, peft_name))
        if adapter.coverage.dropped and not self.allow_partial:
            self.pipe.delete_adapters([peft_name])
            raise CoverageError(f"{path}: diffusers did not load every LoRA module", adapter.coverage.dropped,
                                hint="the file does not match this base model, or uses keys diffusers "
                                     "cannot map; pass allow_partial to use what loaded")
        return adapter

    def _token(self, entry: StackEntry) -> str:
        return entry.token or f"<{entry.adapter_name}>"

    def _load_embedding(self, entry: StackEntry) -> LoadedAdapter:
        path = Path(entry.file_path)
        token = self._token(entry)
        pipe = self.pipe
        if not hasattr(pipe, "load_textual_inversion"):  # e.g. diffusers' SD3 pipeline
            raise IncompatibleAdapters(f"{path}: a {type(pipe).__name__} base cannot load "
                                       "textual-inversion embeddings",
                                       hint="drop the embedding from the prompt, or pick an SD 1.x/2.x/XL "
                                            "or Flux.1 base")
        before = (len(pipe.tokenizer),)
        state = None
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        if state is not None and {"clip_l", "clip_g"} <= set(state) and hasattr(pipe, "text_encoder_2"):
            # SDXL embeddings: one vector set per text encoder
            pipe.load_textual_inversion(state["clip_l"], token=token, text_encoder=pipe.text_encoder,
                                        tokenizer=pipe.tokenizer)
            pipe.load_textual_inversion(state["clip_g"], token=token, text_encoder=pipe.text_encoder_2,
                                        tokenizer=pipe.tokenizer_2)
            components = ("text_encoder", "text_encoder_2")
        else:
            pipe.load_textual_inversion(str(path), token=token)
            components = ("text_encoder",)
        self.load_calls += 1
        added = pipe.tokenizer.convert_ids_to_tokens(list(range(before[0], len(pipe.tokenizer))))
        return LoadedAdapter(entry.adapter_name, "", _file_identity(path), "embedding",
                             components=components, tokens=tuple([token] + [t for t in added if t != token]),
                             loaded_path=str(path))

    def _unload_embedding(self, adapter: LoadedAdapter) -> None:
        pipe = self.pipe
        pipe.unload_textual_inversion(list(adapter.tokens))
        if "text_encoder_2" in adapter.components:
            pipe.unload_textual_inversion(list(adapter.tokens), tokenizer=pipe.tokenizer_2,
                                          text_encoder=pipe.text_encoder_2)
