"""What a base-model family declares, and the registry every wing reads it from.

A family lives in one folder, ``loradex/families/<folder>/``: its ``__init__.py`` registers a
:class:`Family` (name, title, components, the operations loradex implements for it end to end),
and sibling modules hold each aspect, loaded only when asked for (:meth:`Family.aspect`):

- ``identity``   — how a file's modules (names, widths) tell this family: ``evidence(modules)``
- ``vocabulary`` — its spellings in kohya ``ss_base_model_version``, ModelSpec ``architecture``,
                   Civitai ``baseModel``, AIR ecosystems, Hub ids; its variants (sub-families)
- ``naming``     — module names in every convention its writers use (kohya, diffusers/PEFT,
                   ComfyUI-native …), fused ↔ split projections
- ``blocks``     — the LBW block map, when it has one
- ``pipeline``   — the diffusers pipeline class, a tiny random pipeline built offline from
                   config objects, the family's prompt-record fields, its training objective:
                   ``PIPELINE_CLASS``, ``PIPELINE_CLASSES`` (+ optional ``matches(pipe)``),
                   ``DENOISER`` (unet | transformer), ``OBJECTIVE``, ``GUIDANCE``
                   (classifier-free | distilled), ``NEGATIVE_PROMPT``, ``DEFAULTS`` (steps, cfg),
                   ``PROMPT_FIELDS`` / ``SCHEDULER_FIELDS``, optional ``SINGLE_FILE_MARKERS``,
                   ``TINY_RECIPE`` + ``build_tiny(seed=0)`` (shared pieces: ``tiny_parts``)

Nothing here imports torch or another loradex package: every wing (registry, merge, trainer,
cli) may import this one. Modules that need torch/diffusers import them inside functions.
Code elsewhere asks the family (``family.supports("merge")``, ``family.aspect("naming")``),
never branches on family names.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

# Evidence strengths (identity rules): shapes beat names beat hints.
STRONG, NAMING, WEAK = 3, 2, 1

# What loradex can do with a file of some family.
RECOGNISED_ORDER = ("probe", "catalog", "search", "push", "pull")
RECOGNISED = frozenset(RECOGNISED_ORDER)
END_TO_END = RECOGNISED | frozenset({"convert", "merge", "resize", "extract", "stack", "render",
                                     "train", "bake"})
OPERATION_WORDS = {"convert": "convert", "merge": "merge", "resize": "resize", "extract": "extract",
                   "stack": "merge/stack", "render": "generate/render", "train": "training",
                   "bake": "bake"}


class FamilyNotSupported(ValueError):
    """An operation loradex does not implement for a family (yet). The CLI maps it to exit 1."""

    exit_code = 1

    def __init__(self, family: str, operation: str):
        what = OPERATION_WORDS.get(operation, operation)
        done = [op for op in RECOGNISED_ORDER if family not in _FAMILIES or op in _FAMILIES[family].operations]
        listed = ", ".join(done[:-1]) + f" and {done[-1]}"
        super().__init__(f"{what} for {family} is not supported yet; {listed} are")
        self.family, self.operation = family, operation
        self.message, self.hint = str(self), None


@dataclass(frozen=True)
class Family:
    name: str                        # catalog spelling: sd1, sdxl, flux, wan-14b …
    title: str                       # "Stable Diffusion XL"
    package: str                     # the folder under loradex/families holding its aspects
    components: tuple[str, ...]      # unet | transformer, text_encoder, text_encoder_2 …
    operations: frozenset[str] = RECOGNISED
    parent: str | None = None        # same architecture as another family (Chroma → flux)
    notes: tuple[str, ...] = field(default=())

    def supports(self, operation: str) -> bool:
        return operation in self.operations

    def require(self, operation: str) -> "Family":
        if operation not in self.operations:
            raise FamilyNotSupported(self.name, operation)
        return self

    def aspect(self, name: str) -> ModuleType | None:
        """The family's ``<name>`` module (identity, vocabulary, naming, blocks, pipeline), or
        None when the family has none."""
        qualified = f"loradex.families.{self.package}.{name}"
        try:
            return importlib.import_module(qualified)
        except ModuleNotFoundError as exc:
            if exc.name == qualified:
                return None
            raise


_FAMILIES: dict[str, Family] = {}
UNKNOWN = "unknown"


def register_family(family: Family) -> Family:
    if family.name in _FAMILIES:
        raise ValueError(f"family {family.name!r} registered twice")
    if family.name == UNKNOWN:
        raise ValueError("'unknown' is not a family")
    _FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    try:
        return _FAMILIES[name]
    except KeyError:
        known = ", ".join(family_names())
        raise LookupError(f"unknown base family {name!r}; known: {known}") from None


def find_family(name: str | None) -> Family | None:
    return _FAMILIES.get(name) if name else None


def all_families() -> tuple[Family, ...]:
    return tuple(_FAMILIES.values())


def family_names() -> tuple[str, ...]:
    """Every registered family name (registration order), not counting ``unknown``."""
    return tuple(_FAMILIES)


def require(name: str | None, operation: str) -> Family | None:
    """The family when ``operation`` is implemented for it; ``FamilyNotSupported`` otherwise.
    None/unknown passes (callers that need a family say so themselves)."""
    family = find_family(name)
    if family is not None:
        family.require(operation)
    return family


def aspects(name: str) -> list[tuple[Family, ModuleType]]:
    """(family, module) for every family that has the ``name`` aspect, registration order."""
    found = []
    for family in _FAMILIES.values():
        module = family.aspect(name)
        if module is not None:
            found.append((family, module))
    return found
