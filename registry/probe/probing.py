"""Run every prober on a file and turn the best verdict into a :class:`ProbeResult`.

``ProbeResult.to_dict()`` keys (stable; stored in the catalog and printed by ``inspect --json``):

==================  =======================================================================
prober              name of the prober whose verdict won
kind                ``lora`` | ``lycoris`` | ``embedding`` | ``checkpoint``
algorithm           LyCORIS algorithm (``loha``, ``lokr``, ``locon``, ``full``, ``glora``,
                    ``ia3``, ``oft``, ``norm``) or null
format              ``kohya``, ``diffusers``, ``diffusers-legacy``, ``diffusers-legacy-attn-proc``,
                    ``peft``, ``safeloras``, ``comfyui``, ``xlabs``, ``lycoris``, ``a1111-embedding``,
                    ``a1111-embedding-pt``, ``diffusers-embedding``, ``sdxl-embedding``,
                    ``t5-embedding``, ``checkpoint``, ``diffusers-unet``, ``diffusers-transformer``
convention          the writers' key spelling: ``format``, or more precisely ``onetrainer``
                    (``lora_transformer_<diffusers path>``), and for LyCORIS files the naming
                    (``kohya`` ``lora_unet_…``, ``lycoris`` ``lycoris_…``, ``comfyui`` ``diffusion_model.…``)
container           ``safetensors`` | ``torch-zip`` | ``torch-legacy`` | ``pickle``
base                a registered family (``loradex.families.family_names()``: sd1, sd2, sdxl, sd3,
                    flux, chroma, flux2, qwen-image, z-image, hidream, lumina2, auraflow, wan-1.3b,
                    wan-5b, wan-14b, hunyuan-video, ltx-video) or ``unknown`` — from shapes; metadata
                    picks a key-identical child family (Chroma for Flux.1 keys without modulation)
base_reason         the evidence behind ``base``
variant             the family's variant (sub-family) from metadata / Civitai info
                    (``loradex.families.vocabulary.variant_from_metadata``: pony, illustrious,
                    noobai-vpred, dev, schnell, kontext, 3.5-large …) or null
variant_evidence    the metadata behind ``variant`` (``ss_base_model_version=…``) or null
base_from_metadata  family named by metadata (``ss_base_model_version``, ``modelspec.architecture``,
                    ``ss_v2``, PEFT ``base_model_name_or_path``) or null
warnings            list of str: metadata disagreeing with shapes, bogus hashes, keys not understood
notes               list of str: informational (tucker, T5 embedding, PEFT config missing...)
ranks               sorted unique ranks (ints)
alphas              sorted unique explicit alphas (floats); empty = none stored (alpha = rank)
components          unet / text_encoder / text_encoder_2 / text_encoder_3 / transformer / t5 / vae...
module_count        number of adapted modules (0 for embeddings and checkpoints)
target_modules      sorted module types (``to_q``, ``ff_net_0_proj``, ``q_proj``...) or the
                    replaced classes a file names (safeloras) / the PEFT config's list
conv                true when any module is a spatial (k > 1) convolution
dora                true when DoRA magnitude tensors are present
n_vectors           embedding vectors (embeddings, and tokens bundled in LoRA files)
tokens              embedding tokens (diffusers: the keys; A1111/SDXL/T5: the file stem)
trigger_words       ``modelspec.trigger_phrase``, top ``ss_tag_frequency`` tags, tokens
training            ss_*/modelspec.* facts under friendly names (steps, epochs, learning_rate,
                    seed, resolution, network_module/dim/alpha/args, output_name, title...);
                    ``lora_adapter_metadata``: component → its PEFT LoraConfig fields (r,
                    lora_alpha, target_modules, rank_pattern, alpha_pattern…) from a diffusers file
tensor_count        number of tensors
dtypes              sorted unique dtypes (safetensors spelling)
metadata            the raw ``__metadata__`` dict (empty for pickles)
header_hashes       ``sshs_model_hash`` / ``sshs_legacy_hash`` when present and not bogus
unexplained_keys    up to 20 tensor names the winning prober did not account for
prediction_type     "v" | "epsilon" from ModelSpec ``modelspec.prediction_type`` (or kohya's
                    ``ss_v_parameterization``), else null; ``compat``/``generate`` warn on a mix
timestep_range      [low, high] from ModelSpec ``modelspec.timestep_range``, else null
==================  =======================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UnsafePickle, UnsupportedFormat, UntrustedData
from ..files.file_sniff import PICKLE_KINDS, raise_for_non_model, sniff
from ..files.safetensors_header import read_header, read_scalars
from ..untrusted import read_json_file
from .base_family import (base_from_metadata, component_aliases, decide, evidence_from_modules, family_notes,
                          key_identical_child)
from .tensor_rules import check_view
from .facts import PROBERS, HeaderView, ProbeFacts, TensorMeta, Verdict
from .training_facts import header_hashes, trigger_words, training_facts

COMPONENT_ORDER = ["unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "t5", "model", "vae"]
PICKLE_HINT = "pass --allow-pickle to scan and load it with torch.load(weights_only=True)"


@dataclass(frozen=True)
class ProbeResult:
    prober: str
    kind: str
    algorithm: str | None
    format: str
    container: str
    base: str
    base_reason: str
    base_from_metadata: str | None
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    ranks: tuple[int, ...]
    alphas: tuple[float, ...]
    components: tuple[str, ...]
    module_count: int
    target_modules: tuple[str, ...]
    conv: bool
    dora: bool
    n_vectors: int
    tokens: tuple[str, ...]
    trigger_words: tuple[str, ...]
    training: dict = field(default_factory=dict)
    tensor_count: int = 0
    dtypes: tuple[str, ...] = ()
    metadata: dict = field(default_factory=dict)
    header_hashes: dict = field(default_factory=dict)
    unexplained_keys: tuple[str, ...] = ()
    convention: str | None = None
    variant: str | None = None
    variant_evidence: str | None = None
    prediction_type: str | None = None  # "v" | "epsilon" as the metadata states it
    timestep_range: tuple[int, int] | None = None

    def to_dict(self) -> dict:
        return {
            "prober": self.prober, "kind": self.kind, "algorithm": self.algorithm, "format": self.format,
            "convention": self.convention or self.format,
            "container": self.container, "base": self.base, "base_reason": self.base_reason,
            "variant": self.variant, "variant_evidence": self.variant_evidence,
            "base_from_metadata": self.base_from_metadata, "warnings": list(self.warnings),
            "notes": list(self.notes), "ranks": list(self.ranks), "alphas": list(self.alphas),
            "components": list(self.components), "module_count": self.module_count,
            "target_modules": list(self.target_modules), "conv": self.conv, "dora": self.dora,
            "n_vectors": self.n_vectors, "tokens": list(self.tokens), "trigger_words": list(self.trigger_words),
            "training": dict(self.training), "tensor_count": self.tensor_count, "dtypes": list(self.dtypes),
            "metadata": dict(self.metadata), "header_hashes": dict(self.header_hashes),
            "unexplained_keys": list(self.unexplained_keys), "prediction_type": self.prediction_type,
            "timestep_range": list(self.timestep_range) if self.timestep_range else None,
        }


# --- views ------------------------------------------------------------------------------------
def _sidecars(path: Path) -> dict[str, dict]:
    """PEFT's adapter_config.json: ``<stem>.adapter_config.json`` or ``adapter_config.json`` alongside."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    for candidate in (path.with_name(f"{stem}.adapter_config.json"), path.with_name("adapter_config.json")):
        if candidate.is_file():
            try:
                cfg = read_json_file(candidate, max_bytes=1 << 20)
            except UntrustedData:  # unreadable, too big, too deep or not JSON: no sidecar
                continue
            if isinstance(cfg, dict):
                return {"adapter_config": cfg}
    return {}


def safetensors_view(path) -> HeaderView:
    path = Path(path)
    header = read_header(path)
    return HeaderView(
        tensors={k: TensorMeta(t.dtype, t.shape) for k, t in header.tensors.items()},
        metadata=dict(header.metadata), container="safetensors", source=str(path), stem=path.stem,
        sidecars=_sidecars(path), scalar_reader=lambda names: read_scalars(path, header, names),
    )


_TORCH_TO_ST = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
                "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
                "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "uint16": "U16", "uint32": "U32",
                "uint64": "U64", "complex64": "C64"}


def state_dict_view(obj, *, container="pickle", path=None) -> HeaderView:
    """The header view of an in-memory (possibly nested) dict of tensors, e.g. a loaded pickle."""
    import torch

    tensors: dict[str, TensorMeta] = {}
    objects: dict[str, object] = {}
    extras: dict[str, object] = {}
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # Lightning .ckpt wrapper
        extras.update({k: v for k, v in obj.items() if isinstance(v, (str, int, float, bool))})
        obj = obj["state_dict"]

    def walk(node, prefix: str, depth: int) -> None:
        if isinstance(node, torch.Tensor):
            tensors[prefix] = TensorMeta(_TORCH_TO_ST.get(str(node.dtype).removeprefix("torch."), str(node.dtype)),
                                         tuple(node.shape))
            objects[prefix] = node
        elif hasattr(node, "items") and depth < 6:
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k), depth + 1)
        elif node is None or isinstance(node, (str, int, float, bool)):
            extras[prefix] = node
        else:
            extras[prefix] = f"<{type(node).__name__}>"

    walk(obj, "", 0)
    p = Path(path) if path else None

    def scalars(names):
        return {n: float(objects[n].reshape(-1)[0]) for n in names if objects[n].numel() == 1}

    return HeaderView(tensors=tensors, metadata={}, container=container, source=str(p) if p else None,
                      stem=p.stem if p else None, sidecars=_sidecars(p) if p else {}, extras=extras,
                      scalar_reader=scalars)


def view_for_path(path, *, allow_pickle: bool = False, extra_allowed=()) -> HeaderView:
    """Sniff ``path`` and build its header view; raise InvalidFile / UnsafePickle for what is not."""
    path = Path(path)
    s = sniff(path)
    if s.kind == "safetensors" or (s.kind == "unknown" and path.suffix == ".safetensors"):
        return safetensors_view(path)  # read_header names what is wrong with a damaged file
    if s.kind in PICKLE_KINDS:
        if not allow_pickle:
            raise UnsafePickle(path, f"is {s.detail}: unpickling can run code, so loradex does not open "
                                     "pickles by default", hint=PICKLE_HINT)
        from ..files.pickle_scan import safe_load_pickle, scan_pickle

        container = scan_pickle(path).container
        return state_dict_view(safe_load_pickle(path, extra_allowed=extra_allowed), container=container, path=path)
    raise_for_non_model(path, s)
    raise AssertionError("unreachable")  # pragma: no cover


# --- probing --------------------------------------------------------------------------------------
def explain_view(view: HeaderView) -> list[Verdict]:
    return [fn(view) for fn in PROBERS.values()]


def best_verdict(verdicts: list[Verdict]) -> Verdict | None:
    matched = [(i, v) for i, v in enumerate(verdicts) if v.matched]
    if not matched:
        return None
    return max(matched, key=lambda iv: (iv[1].facts.explained, -iv[0]))[1]


def probe_view(view: HeaderView, *, path="<memory>") -> ProbeResult:
    verdicts = explain_view(view)
    best = best_verdict(verdicts)
    if best is None:
        if not view.tensors:
            raise UnsupportedFormat(path, "contains no tensors", hint="nothing to register")
        example = next(iter(view.tensors))
        raise UnsupportedFormat(path, f"no prober recognises its {len(view.tensors)} tensor(s) (e.g. {example!r})",
                                hint="`loradex inspect --explain` lists each prober's reason")
    check_view(path, view, best.facts)
    return result_from_facts(best.prober, best.facts, view)


def result_from_facts(prober: str, facts: ProbeFacts, view: HeaderView) -> ProbeResult:
    md = view.metadata
    modules = facts.modules
    base, base_reason, notes = decide(evidence_from_modules(modules) + facts.base_evidence)
    notes = list(facts.notes) + notes
    warnings: list[str] = []
    meta = base_from_metadata(md) or facts.base_from_config
    meta_base = meta[0] if meta else None
    if meta and base != "unknown" and meta_base != base and key_identical_child(meta_base, base, modules):
        base_reason = (f"{base_reason}; {meta_base} shares these keys with {base} and metadata names it ({meta[1]})")
        base = meta_base
    elif meta and base != "unknown" and meta_base != base:
        warnings.append(f"metadata says {meta_base} ({meta[1]}) but the tensor shapes say {base}: trusting shapes")
    if base == "unknown" and meta:
        base, base_reason = meta_base, f"shapes inconclusive; taken from metadata ({meta[1]})"
    notes += [n for n in family_notes(base, modules) if n not in notes]
    variant = _variant(base, md)
    hashes, hash_warnings = header_hashes(md)
    warnings += hash_warnings
    if facts.unexplained:
        warnings.append(f"{len(facts.unexplained)} tensor(s) not understood by the {facts.format} prober, "
                        f"e.g. {facts.unexplained[0]}")
    aliases = component_aliases(base)  # kohya's lora_te3_ is Flux's T5, diffusers' text_encoder_2
    comps = {aliases.get(m.component, m.component) for m in modules} | set(facts.components)
    components = sorted(comps, key=lambda c: (COMPONENT_ORDER.index(c) if c in COMPONENT_ORDER else 99, c))
    targets = facts.target_modules or sorted({m.type for m in modules if m.type})
    training = training_facts(md)
    training.update(facts.training)
    steps = timestep_range(md.get("modelspec.timestep_range"), notes)
    return ProbeResult(
        prober=prober, kind=facts.kind, algorithm=facts.algorithm, format=facts.format, container=view.container,
        base=base, base_reason=base_reason, base_from_metadata=meta_base, warnings=tuple(warnings),
        notes=tuple(notes), ranks=tuple(sorted({m.rank for m in modules if m.rank is not None})),
        alphas=tuple(facts.alphas), components=tuple(components), module_count=len(modules),
        target_modules=tuple(targets), conv=any(m.conv for m in modules), dora=facts.dora,
        n_vectors=facts.n_vectors, tokens=tuple(facts.tokens), trigger_words=tuple(trigger_words(md, facts.tokens)),
        training=training, tensor_count=len(view.tensors), dtypes=tuple(sorted({t.dtype for t in view.tensors.values()})),
        metadata=dict(md), header_hashes=hashes, unexplained_keys=tuple(facts.unexplained[:20]),
        convention=facts.convention, variant=variant[0] if variant else None,
        variant_evidence=variant[1] if variant else None, prediction_type=_prediction(md),
        timestep_range=steps,
    )


def _prediction(md: dict) -> str | None:
    """ModelSpec ``prediction_type`` (or kohya's ``ss_v_parameterization``) in the families'
    words: "v" or "epsilon" (``loradex.families.vocabulary.prediction_from_metadata``)."""
    from loradex.families.vocabulary import prediction_from_metadata

    found = prediction_from_metadata(md)
    return found[0] if found else None


def timestep_range(raw, notes: list | None = None) -> tuple[int, int] | None:
    """ModelSpec ``timestep_range`` ("200,1000": the timesteps a model was trained on) as
    (low, high); None, with a note, when it is not two ordered integers in 0…10000."""
    if raw is None:
        return None
    parts = str(raw)[:64].replace(" ", "").split(",")
    if len(parts) == 2 and all(p.isdigit() and len(p) <= 5 for p in parts):
        low, high = int(parts[0]), int(parts[1])
        if low <= high <= 10_000:
            return low, high
    if notes is not None:
        notes.append(f"modelspec.timestep_range {str(raw)[:40]!r} is not 'LOW,HIGH' (two integers); ignored")
    return None


def _variant(base: str, md: dict) -> tuple[str, str] | None:
    """The family's variant from the header metadata (helper "vocabulary"'s normaliser)."""
    from loradex.families.vocabulary import variant_from_metadata

    return variant_from_metadata(base, md) if base != "unknown" else None


def check_tensor_rules(path):
    """Hold a safetensors file to ``tensor_rules`` as ``add`` does (for readers of stored blobs that
    may predate the rules); returns its header view. Nothing is refused when no prober matches."""
    view = safetensors_view(path)
    best = best_verdict(explain_view(view))
    if best is not None:
        check_view(path, view, best.facts)
    return view


def probe_path(path, *, allow_pickle: bool = False, extra_allowed=()) -> ProbeResult:
    """Probe the adapter file at ``path`` from its header (pickles only with ``allow_pickle``).

    Raises InvalidFile (not a model: LFS pointer, HTML, JSON, damaged safetensors...),
    UnsafePickle (a pickle without opt-in, or one importing disallowed globals) or
    UnsupportedFormat (a valid file no prober recognises).
    """
    view = view_for_path(path, allow_pickle=allow_pickle, extra_allowed=extra_allowed)
    return probe_view(view, path=path)


def explain_path(path, *, allow_pickle: bool = False, extra_allowed=()) -> list[Verdict]:
    """Every prober's verdict on ``path``, in registration order (for ``inspect --explain``)."""
    return explain_view(view_for_path(path, allow_pickle=allow_pickle, extra_allowed=extra_allowed))
