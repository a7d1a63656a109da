"""The neutral form every LoRA convention converts to and from, and the convention registry.

A ``CanonicalLora`` holds, per component ("unet", "text_encoder", "text_encoder_2",
"transformer"), the modules by their dotted diffusers/transformers path (text encoders keep the
``text_model.`` level, as kohya and transformers 4.x name them). Each module keeps its tensors
exactly as stored: ``down`` [r, in(, k, k)], ``up`` [out, r(, 1, 1)] and ``alpha`` — the 0-dim
tensor the file stored, or None when the convention stores none (scale 1, i.e. alpha = rank).

Conventions register under a name with ``@register_convention``; the dispatcher in
``loradex.merge.conventions.convert`` looks them up, never branches on names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from loradex.merge.math.fused_projections import Factors

if TYPE_CHECKING:  # torch is imported lazily so the registry side stays light
    import torch

COMPONENTS = ("unet", "text_encoder", "text_encoder_2", "text_encoder_3", "transformer")


@dataclass
class CanonicalModule(Factors):
    """One module as stored: ``down``, ``up``, ``alpha`` (the 0-dim tensor or None) with rank,
    effective alpha (a missing or zero alpha is the rank, as kohya/A1111 read it) and scale —
    the merge math's :class:`~loradex.merge.math.fused_projections.Factors`."""

    def to_lora_module(self):
        """The merge-math view (``loradex.merge.math.lora_module.LoraModule``, alpha as a float)."""
        from loradex.merge.math.lora_module import LoraModule

        return LoraModule(self.down, self.up, None if self.alpha is None else float(self.alpha.item()))


@dataclass
class CanonicalLora:
    components: dict[str, dict[str, CanonicalModule]] = field(default_factory=dict)
    base: str | None = None                     # a family name ("sd1", "sdxl", "flux", "sd3" …) or None
    embeddings: dict[str, "torch.Tensor"] = field(default_factory=dict)  # token → [n, dim]
    metadata: dict[str, str] = field(default_factory=dict)  # source header metadata, as read
    source_convention: str | None = None
    notes: list[str] = field(default_factory=list)
    unconsumed: list[str] = field(default_factory=list)  # input keys no module took

    def module_count(self) -> int:
        return sum(len(mods) for mods in self.components.values())

    def add(self, component: str, path: str, module: CanonicalModule) -> None:
        mods = self.components.setdefault(component, {})
        if path in mods:
            raise ValueError(f"module {component}.{path} appears twice")
        mods[path] = module


@dataclass
class ReadResult:
    lora: CanonicalLora
    consumed: set[str]              # input keys that went into ``lora``


@dataclass
class ReadContext:
    metadata: dict[str, str]
    base: str | None
    adapter_config: dict[str, Any] | None = None


@dataclass
class WriteContext:
    base: str | None
    options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the writer changed (fused, rank grew…)
    # (component, path) of modules whose factors the writer had to recompute (not just move):
    # they read back with the same ΔW, not the same tensors
    regrouped: set[tuple[str, str]] = field(default_factory=set)


class LoraConvention:
    """One file convention: which keys it recognises, how to read and to write it."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    def recognizes(self, key: str, metadata: dict[str, str]) -> bool:
        raise NotImplementedError

    def read(self, state_dict: dict[str, "torch.Tensor"], ctx: ReadContext) -> ReadResult:
        raise NotImplementedError

    def write(self, lora: CanonicalLora, ctx: WriteContext) -> tuple[dict[str, "torch.Tensor"], dict[str, str]]:
        raise NotImplementedError


CONVENTIONS: dict[str, LoraConvention] = {}


def register_convention(name: str) -> Callable[[type[LoraConvention]], type[LoraConvention]]:
    def deco(cls: type[LoraConvention]) -> type[LoraConvention]:
        cls.name = name
        CONVENTIONS[name] = cls()
        return cls

    return deco


# --- helpers shared by the readers ------------------------------------------------------------
def pair_modules(found: dict[tuple[str, str], dict[str, tuple[str, Any]]], lora: CanonicalLora,
                 consumed: set[str]) -> None:
    """``found[(component, path)]`` = {"down"|"up"|"alpha": (key, tensor)}: add every complete
    pair (down and up) to ``lora`` and mark its keys consumed; incomplete ones stay unconsumed,
    so the coverage check names them."""
    for (component, path), parts in found.items():
        if "down" not in parts or "up" not in parts:
            continue
        alpha = parts.get("alpha", (None, None))[1]
        lora.add(component, path, CanonicalModule(parts["down"][1], parts["up"][1], alpha))
        consumed.update(key for key, _ in parts.values())


class PeftPatterns:
    """PEFT's ``get_pattern_key`` rule: a pattern applies when ``(.*\\.)?(pattern)$`` matches
    the module name, the first matching pattern wins. Patterns that are just an escaped name
    (what loradex and diffusers write) are looked up directly; the rest are compiled once."""

    def __init__(self, patterns: dict[str, Any]):
        self.patterns = dict(patterns)
        self.compiled = [(_pattern(p), v) for p, v in self.patterns.items()]

    def value(self, candidates: list[str]) -> Any:
        for name in candidates:
            for key in ("^" + re.escape(name), re.escape(name)):
                if key in self.patterns:
                    return self.patterns[key]
        for regex, value in self.compiled:
            if any(regex.match(name) for name in candidates):
                return value
        return None


def _pattern(pattern: str) -> "re.Pattern":
    from loradex.registry.errors import UnsupportedFormat

    try:
        return re.compile(rf"(.*\.)?({pattern})$")
    except re.error as exc:
        raise UnsupportedFormat("<state dict>", f"alpha/rank pattern {pattern[:80]!r} is not a regular "
                                                f"expression ({exc})") from None


def text_encoder_model_names(path: str) -> list[str]:
    """Names a text-encoder module may have inside the loaded model."""
    return [path, path.removeprefix("text_model.")] if path.startswith("text_model.") else [path]


def canonical_text_encoder_path(path: str) -> str:
    """Put the ``text_model.`` level back on CLIP paths saved from a flattened CLIPTextModel."""
    if path.startswith(("encoder.layers.", "embeddings.", "final_layer_norm")):
        return "text_model." + path
    return path


def dtype_name(dtype: "torch.dtype") -> str:
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> "torch.dtype":
    import torch

    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype
