"""One normalisation of the vocabularies that name base models.

The same base model is spelled differently by each tool that writes or lists adapters:

- kohya sd-scripts / musubi-tuner ``ss_base_model_version`` (``sd_v1``, ``sdxl_base_v1-0``, ``flux1``),
- ModelSpec ``modelspec.architecture`` (``stable-diffusion-xl-v1-base/lora``, ``flux-1-dev/lora``),
- Civitai ``baseModel`` (``SDXL 1.0``, ``Pony``, ``Flux.1 D``, ``Wan Video 2.2 T2V-A14B``),
- Civitai AIR ecosystems (``urn:air:sdxl:lora:…``, ``flux1``, ``wanvideo-22-t2v-a14b``),
- Hugging Face Hub repo ids (``stabilityai/stable-diffusion-xl-base-1.0``),
- A1111's ``sd version`` (``SD1``, ``SDXL``) and free text (checkpoint file names such as
  kohya's ``ss_sd_model_name``: ``ponyDiffusionV6XL_v6.safetensors``).

Each family declares its spellings and its *variants* (sub-families that share its tensor layout
and so cannot be told apart by shapes: Pony / Illustrious / NoobAI on SDXL, Flux.1 dev / schnell /
Kontext / Krea, SD 3 medium / 3.5 medium / 3.5 large, Wan 2.1 / 2.2 t2v / i2v) in its
``vocabulary`` module (``VOCABULARIES``, a tuple of :class:`Vocabulary`). This module reads them all
and answers in both directions: :func:`normalise` (a spelling → family, variant) and
:func:`civitai_base_model` / :func:`air_ecosystem` / :func:`kohya_base_model_version` /
:func:`modelspec_architecture` / :func:`default_hub_repo` (family, variant → a spelling).
:func:`variant_from_metadata` tells a file's variant from its header metadata (and a Civitai
``baseModel``), with the evidence.

Values handed in come from files and remote services: they are capped (``MAX_TEXT``) before any
pattern sees them, and nothing here does more than compare strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

MAX_TEXT = 512  # longest spelling looked at: longer metadata values are cut here first
SOURCES = ("kohya", "modelspec", "civitai", "air", "hub", "a1111", "text")
ADAPTER_SUFFIX = {"lora": "lora", "lycoris": "lora", "dora": "lora", "embedding": "textual-inversion",
                  "textual-inversion": "textual-inversion", "ti": "textual-inversion", "checkpoint": ""}
PREDICTION_WORDS = {"v": "v-prediction", "epsilon": "epsilon"}


@dataclass(frozen=True)
class Variant:
    """A sub-family: same tensor layout as its family, told apart by metadata only."""

    name: str                           # catalog spelling: pony, noobai-vpred, dev, 3.5-large, 2.2-i2v
    title: str                          # "Pony Diffusion V6"
    civitai: tuple[str, ...] = ()       # Civitai baseModel values (the first is what loradex answers)
    air: str | None = None              # AIR ecosystem, when it is not the family's
    kohya: tuple[str, ...] = ()         # ss_base_model_version values naming this variant
    modelspec: tuple[str, ...] = ()     # modelspec.architecture ids (the first is what loradex writes)
    hub: tuple[str, ...] = ()           # Hub repo ids (the first is the default base repo)
    hints: tuple[str, ...] = ()         # regexes over lower-cased free text (checkpoint names, titles)
    prediction: str | None = None       # "v" | "epsilon" when the variant fixes it
    line: str | None = None             # variants of one line differing by prediction (noobai, noobai-vpred)
    words: tuple[str, ...] = ()         # more search words


@dataclass(frozen=True)
class Vocabulary:
    """How one family is spelled in each vocabulary (the first of each tuple is what loradex writes)."""

    family: str
    civitai: tuple[str, ...] = ()       # family-level Civitai baseModel values
    air: str | None = None
    kohya: tuple[str, ...] = ()         # empty where no trainer's value is known: loradex writes none
    modelspec: tuple[str, ...] = ()
    hub: tuple[str, ...] = ()
    a1111: str | None = None            # A1111's "sd version"
    hints: tuple[str, ...] = ()
    variants: tuple[Variant, ...] = ()
    words: tuple[str, ...] = ()

    def variant(self, name: str | None) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None) if name else None


@dataclass(frozen=True)
class _Entry:
    family: str
    variant: str | None
    pattern: re.Pattern


@dataclass
class _Index:
    exact: dict[str, dict[str, tuple[str, str | None]]] = field(default_factory=dict)  # source → key → fv
    modelspec_prefixes: list[tuple[str, str, str | None]] = field(default_factory=list)
    hints: list[_Entry] = field(default_factory=list)
    by_family: dict[str, Vocabulary] = field(default_factory=dict)


def _key(text: str) -> str:
    """Case, surrounding space, runs of spaces/underscores don't matter in a spelling."""
    return re.sub(r"[\s_]+", " ", text.strip().lower())


def _cap(text) -> str:
    return text[:MAX_TEXT] if isinstance(text, str) else ""


def _strip_adapter(arch: str) -> str:
    """``stable-diffusion-xl-v1-base/lora`` → ``stable-diffusion-xl-v1-base``."""
    return arch.split("/", 1)[0]


@lru_cache(maxsize=1)
def _index() -> _Index:
    from . import aspects

    index = _Index(exact={s: {} for s in SOURCES})
    seen: set[int] = set()
    for _family, module in aspects("vocabulary"):
        if id(module) in seen:  # one module may declare several families (wan)
            continue
        seen.add(id(module))
        for vocab in getattr(module, "VOCABULARIES", ()):
            _add(index, vocab)
    # Longest ModelSpec prefix first: "stable-diffusion-3-5-large" before "stable-diffusion-3".
    index.modelspec_prefixes.sort(key=lambda e: -len(e[0]))
    return index


def _add(index: _Index, vocab: Vocabulary) -> None:
    if vocab.family in index.by_family:
        raise ValueError(f"vocabulary for {vocab.family!r} declared twice")
    index.by_family[vocab.family] = vocab
    fam = vocab.family

    def put(source: str, values, variant: str | None) -> None:
        for value in values:
            index.exact[source].setdefault(_key(value), (fam, variant))

    # Variants first: a spelling both declare ("Flux.1 D") names the variant, the more precise.
    for v in vocab.variants:
        put("civitai", v.civitai, v.name)
        put("kohya", v.kohya, v.name)
        put("hub", v.hub, v.name)
        put("air", (v.air,) if v.air else (), v.name)
        for arch in v.modelspec:
            index.modelspec_prefixes.append((_key(arch), fam, v.name))
        index.hints += [_Entry(fam, v.name, re.compile(h)) for h in v.hints]
    put("civitai", vocab.civitai, None)
    put("kohya", vocab.kohya, None)
    put("hub", vocab.hub, None)
    put("a1111", (vocab.a1111,) if vocab.a1111 else (), None)
    put("air", (vocab.air,) if vocab.air else (), None)
    for arch in vocab.modelspec:
        index.modelspec_prefixes.append((_key(arch), fam, None))
    index.hints += [_Entry(fam, None, re.compile(h)) for h in vocab.hints]


def vocabulary(family: str | None) -> Vocabulary | None:
    return _index().by_family.get(family) if family else None


def variants(family: str | None) -> tuple[Variant, ...]:
    vocab = vocabulary(family)
    return vocab.variants if vocab else ()


def variant_names(family: str | None) -> tuple[str, ...]:
    return tuple(v.name for v in variants(family))


def variant_title(family: str | None, variant: str | None) -> str | None:
    vocab = vocabulary(family)
    found = vocab.variant(variant) if vocab else None
    return found.title if found else None


# --- spelling → (family, variant) ---------------------------------------------------------------
def _from_hints(text: str, family: str | None = None, *, variants_only: bool = False):
    """The (family, variant) whose hint matches the longest stretch of ``text`` (ties: the
    variant, then declaration order). ``family``: only that family's hints."""
    best, best_len = None, 0
    for entry in _index().hints:
        if family is not None and entry.family != family:
            continue
        if variants_only and entry.variant is None:
            continue
        m = entry.pattern.search(text)
        if m is None:
            continue
        length = (m.end() - m.start()) * 2 + (1 if entry.variant else 0)
        if length > best_len:
            best, best_len = (entry.family, entry.variant), length
    return best


def normalise(text, source: str = "text") -> tuple[str, str | None] | None:
    """(family, variant or None) that ``text`` names in the ``source`` vocabulary (one of
    ``SOURCES``), or None when it names no family loradex knows. Exact spellings first, then the
    families' hints over the text (the longest match wins: "Flux.2 Klein" is flux2, not flux)."""
    if source not in SOURCES:
        raise ValueError(f"unknown vocabulary {source!r}; one of {', '.join(SOURCES)}")
    text = _cap(text)
    if not text.strip():
        return None
    index = _index()
    if source == "modelspec":
        arch = _key(_strip_adapter(text))
        for prefix, fam, variant in index.modelspec_prefixes:
            if arch == prefix or arch.startswith(prefix + "-") or arch.startswith(prefix + "/"):
                return fam, variant
    elif source == "air":
        eco = _key(text.removeprefix("urn:air:").split(":", 1)[0])
        found = index.exact["air"].get(eco)
        return found  # AIR ecosystems are a closed list: no guessing
    else:
        found = index.exact[source].get(_key(text))
        if found:
            return found
    found = _from_hints(text.lower())
    if found and found[1] is None:  # the family's own hint won: a variant hint may still say more
        found = _from_hints(text.lower(), found[0], variants_only=True) or found
    return found


def family_from_text(text) -> str | None:
    """The family any spelling in free text names (a file name, a title, a config value)."""
    found = normalise(text, "text")
    return found[0] if found else None


def family_from_hub_id(repo_id) -> str | None:
    found = normalise(repo_id, "hub")
    return found[0] if found else None


# --- (family, variant) → spelling -----------------------------------------------------------------
def civitai_base_model(family: str | None, variant: str | None = None) -> str:
    """Civitai's ``baseModel`` for a family (and variant); ``"Other"`` when Civitai has none."""
    vocab = vocabulary(family)
    if vocab is None:
        return "Other"
    found = vocab.variant(variant)
    if found and found.civitai:
        return found.civitai[0]
    return vocab.civitai[0] if vocab.civitai else "Other"


def civitai_base_models() -> list[str]:
    """Every Civitai ``baseModel`` value some family declares (declaration order, no repeats)."""
    seen: dict[str, None] = {}
    for vocab in _index().by_family.values():
        for name in vocab.civitai:
            seen.setdefault(name)
        for v in vocab.variants:
            for name in v.civitai:
                seen.setdefault(name)
    return list(seen)


def air_ecosystem(family: str | None, variant: str | None = None) -> str:
    """The AIR ecosystem (``urn:air:<ecosystem>:…``); ``"other"`` for a family Civitai has none for."""
    vocab = vocabulary(family)
    if vocab is None:
        return "other"
    found = vocab.variant(variant)
    return (found.air if found and found.air else vocab.air) or "other"


def kohya_base_model_version(family: str | None) -> str | None:
    """``ss_base_model_version`` as kohya's trainers write it for the family (None: unknown)."""
    vocab = vocabulary(family)
    return vocab.kohya[0] if vocab and vocab.kohya else None


def modelspec_architecture(family: str | None, kind: str = "lora", variant: str | None = None) -> str | None:
    """``modelspec.architecture``: the family's (or variant's) id + ``/lora``, ``/textual-inversion``
    or nothing for a checkpoint (``kind``: lora, lycoris, embedding, checkpoint…). None: unknown."""
    vocab = vocabulary(family)
    if vocab is None:
        return None
    found = vocab.variant(variant)
    arch = found.modelspec[0] if found and found.modelspec else (vocab.modelspec[0] if vocab.modelspec else None)
    if arch is None:
        return None
    suffix = ADAPTER_SUFFIX.get(kind, "lora")
    return f"{arch}/{suffix}" if suffix else arch


def default_hub_repo(family: str | None, variant: str | None = None) -> str | None:
    """The Hub repo a model card's ``base_model`` names for the family (its usual reference)."""
    vocab = vocabulary(family)
    if vocab is None:
        return None
    found = vocab.variant(variant)
    if found and found.hub:
        return found.hub[0]
    return vocab.hub[0] if vocab.hub else None


def a1111_sd_version(family: str | None) -> str:
    vocab = vocabulary(family)
    return vocab.a1111 if vocab and vocab.a1111 else "Unknown"


def search_words(family: str | None, variant: str | None = None) -> list[str]:
    """The few words a version of this family/variant is indexed under (its family's name and
    words, the variant's name and words: "sdxl", "pony", "ponyxl"); titles and Civitai names
    are spellings ``normalise`` reads instead (``--base "Pony Diffusion"``)."""
    from . import find_family

    fam = find_family(family)
    if fam is None:
        return []
    out = [fam.name]
    vocab = vocabulary(family)
    if vocab:
        out += list(vocab.words)
        found = vocab.variant(variant)
        if found:
            out += [found.name, *found.words]
    return list(dict.fromkeys(out))


# --- metadata → variant ----------------------------------------------------------------------------
def prediction_from_metadata(metadata) -> tuple[str, str] | None:
    """("v" | "epsilon", evidence) from ModelSpec ``prediction_type``, kohya's
    ``ss_v_parameterization`` or a "vpred"/"eps" checkpoint name; None when nothing says."""
    md = metadata if isinstance(metadata, dict) else {}
    value = _cap(md.get("modelspec.prediction_type")).strip().lower()
    if value in ("v", "v_prediction", "v-prediction", "epsilon", "eps"):
        return ("v" if value.startswith("v") else "epsilon"), f"modelspec.prediction_type={value}"
    if _cap(md.get("ss_v_parameterization")).strip().lower() == "true":
        return "v", "ss_v_parameterization=True"
    name = _cap(md.get("ss_sd_model_name")).lower()
    if re.search(r"v[-_ ]?pred", name):
        return "v", f"ss_sd_model_name={md.get('ss_sd_model_name')[:MAX_TEXT]}"
    if re.search(r"eps(ilon)?[-_ ]?pred", name):
        return "epsilon", f"ss_sd_model_name={md.get('ss_sd_model_name')[:MAX_TEXT]}"
    return None


def _with_prediction(vocab: Vocabulary, variant: Variant, prediction: str | None) -> Variant:
    """The variant of the same line with the prediction the metadata states (noobai + v → noobai-vpred)."""
    if prediction is None or variant.prediction == prediction:
        return variant
    line = variant.line or variant.name
    for other in vocab.variants:
        if (other.line or other.name) == line and (other.prediction or "epsilon") == prediction:
            return other
    return variant


def variant_from_metadata(family: str | None, metadata, civitai_info=None) -> tuple[str, str] | None:
    """(variant, evidence) of a file of ``family`` from its header metadata and, when given, its
    Civitai info (``.civitai.info`` / API version: ``baseModel``). Evidence in order of trust: the
    Civitai ``baseModel`` label, ``modelspec.architecture``, ``ss_base_model_version``, then the
    name of the checkpoint it was trained on (``ss_sd_model_name``); the prediction type
    (``modelspec.prediction_type``, ``ss_v_parameterization``) picks between v-prediction and
    epsilon siblings. A spelling naming another family is no evidence. None: nothing tells."""
    vocab = vocabulary(family)
    if vocab is None or not vocab.variants:
        return None
    md = metadata if isinstance(metadata, dict) else {}
    info = civitai_info if isinstance(civitai_info, dict) else {}
    candidates = [("civitai", "baseModel", info.get("baseModel")),
                  ("modelspec", "modelspec.architecture", md.get("modelspec.architecture")),
                  ("kohya", "ss_base_model_version", md.get("ss_base_model_version"))]
    found: Variant | None = None
    evidence: list[str] = []
    for source, key, value in candidates:
        value = _cap(value)
        hit = normalise(value, source) if value else None
        if hit and hit[0] == vocab.family and hit[1]:
            found = vocab.variant(hit[1])
            evidence.append(f"{'Civitai ' if source == 'civitai' else ''}{key}={value}")
            break
    if found is None:
        for key in ("ss_sd_model_name", "ss_base_model"):
            value = _cap(md.get(key))
            hit = _from_hints(value.lower(), vocab.family, variants_only=True) if value else None
            if hit:
                found = vocab.variant(hit[1])
                evidence.append(f"{key}={value}")
                break
    if found is None:
        return None
    pred = prediction_from_metadata(md)
    if pred:
        chosen = _with_prediction(vocab, found, pred[0])
        if chosen is not found or found.prediction == pred[0]:
            if pred[1] not in evidence[0]:
                evidence.append(pred[1])
        found = chosen
    return found.name, "; ".join(evidence)


def stored_variant(family: str | None, *, probe=None, metadata=None, extra=None) -> tuple[str, str] | None:
    """(variant, evidence) of a catalogued version: the probe result's own ``variant`` when the
    probe stored one, else read from its header metadata and the Civitai info a pull or a
    folder import kept (``extra["civitai"]``). Nothing is stored: old versions answer too."""
    probe = probe if isinstance(probe, dict) else {}
    extra = extra if isinstance(extra, dict) else {}
    named = probe.get("variant")
    if isinstance(named, str) and named in variant_names(family):
        why = probe.get("variant_evidence") or probe.get("variant_reason")
        return named, why if isinstance(why, str) and why else "probe"
    md = metadata if isinstance(metadata, dict) and metadata else probe.get("metadata")
    return variant_from_metadata(family, md, extra.get("civitai"))


def stored_traits(family: str | None, *, probe=None, metadata=None, extra=None) -> dict:
    """What a catalogued version says about its sub-family: ``variant`` (and the variant's
    ``line``, e.g. noobai for both NoobAI models) and ``prediction`` ("v" | "epsilon"), each
    with its evidence; missing keys mean nothing tells."""
    out: dict = {}
    found = stored_variant(family, probe=probe, metadata=metadata, extra=extra)
    vocab = vocabulary(family)
    variant = vocab.variant(found[0]) if found and vocab else None
    if variant is not None:
        out.update(variant=variant.name, line=variant.line or variant.name, variant_evidence=found[1])
        if variant.prediction:
            out.update(prediction=variant.prediction, prediction_evidence=f"{variant.title} is {variant.prediction}")
    md = metadata if isinstance(metadata, dict) and metadata else None
    if md is None and isinstance(probe, dict):
        md = probe.get("metadata")
    pred = prediction_from_metadata(md)
    if pred:  # a stated prediction type beats the variant's usual one
        out.update(prediction=pred[0], prediction_evidence=pred[1])
    return out


def stack_warnings(family: str | None, traits: dict[str, dict]) -> list[str]:
    """Warnings for stacking adapters of one family whose sub-families or prediction types
    differ (``traits``: ref → :func:`stored_traits`). Adapters that say nothing are not compared."""
    out = []
    lines: dict[str, list[str]] = {}
    for ref, t in traits.items():
        if t.get("line"):
            lines.setdefault(t["line"], []).append(ref)
    if len(lines) > 1:
        named = "; ".join(f"{', '.join(refs)}: {variant_title(family, traits[refs[0]]['variant'])}"
                          for refs in lines.values())
        out.append(f"adapters for different {family} sub-families stacked ({named}) — the same key layout, "
                   f"trained on different models: expect weaker or broken results")
    preds: dict[str, list[str]] = {}
    for ref, t in traits.items():
        if t.get("prediction"):
            preds.setdefault(t["prediction"], []).append(ref)
    if len(preds) > 1:
        named = "; ".join(f"{', '.join(refs)}: {PREDICTION_WORDS[p]} ({traits[refs[0]]['prediction_evidence']})"
                          for p, refs in sorted(preds.items()))
        out.append(f"adapters trained for different prediction types stacked ({named}) — "
                   f"use one prediction type with a base model of that type")
    return out


def base_traits(family: str | None, base_name) -> dict:
    """What the name of the base model a stack renders on tells (a checkpoint file or repo named
    ``ponyDiffusionV6XL…`` / ``noobai…vpred``): the same keys as :func:`stored_traits`."""
    vocab = vocabulary(family)
    name = _cap(base_name)
    hit = _from_hints(name.lower(), vocab.family, variants_only=True) if vocab and name else None
    out: dict = {}
    if hit:
        variant = vocab.variant(hit[1])
        out.update(variant=variant.name, line=variant.line or variant.name, variant_evidence=f"base name {name}")
        if variant.prediction:
            out.update(prediction=variant.prediction, prediction_evidence=f"{variant.title} is {variant.prediction}")
    return out


def base_mismatch_warnings(family: str | None, base_name: str, base: dict, traits: dict[str, dict]) -> list[str]:
    """One warning per adapter whose sub-family or prediction type differs from the base's
    (``base``: :func:`base_traits`; ``traits``: ref → :func:`stored_traits`)."""
    out = []
    for ref, t in traits.items():
        if base.get("line") and t.get("line") and t["line"] != base["line"]:
            out.append(f"{ref} is for {variant_title(family, t['variant'])} ({t['variant_evidence']}) but base "
                       f"{base_name} is {variant_title(family, base['variant'])}: expect weaker or broken results")
        elif base.get("prediction") and t.get("prediction") and t["prediction"] != base["prediction"]:
            out.append(f"{ref} was trained for {PREDICTION_WORDS[t['prediction']]} ({t['prediction_evidence']}) "
                       f"but base {base_name} is {PREDICTION_WORDS[base['prediction']]}")
    return out

