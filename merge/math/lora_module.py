"""One LoRA module as tensors, its ΔW, and the kohya state-dict split/join.

A module adds ΔW = weight · (α / r) · up @ down to its base layer. Conv LoRA ("LoCon") keeps the
k×k kernel on ``down`` ([r, in, kh, kw]) and a 1×1 ``up`` ([out, r, 1, 1]); the combined kernel is
ΔW[o, i, h, w] = Σ_r up[o, r] · down[r, i, h, w].

Dtype policy: every function here computes in float32 (``COMPUTE_DTYPE``); the output dtype of a
state dict is chosen by the caller (``kohya_state_dict_from_modules(..., dtype=...)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:  # torch is imported lazily so that importing loradex.merge stays cheap
    from torch import Tensor

COMPUTE_DTYPE_NAME = "float32"

# kohya key suffixes of a plain LoRA module
DOWN_SUFFIX = "lora_down.weight"
UP_SUFFIX = "lora_up.weight"
ALPHA_SUFFIX = "alpha"
PLAIN_LORA_SUFFIXES = frozenset({DOWN_SUFFIX, UP_SUFFIX, ALPHA_SUFFIX})


def compute_dtype():
    import torch

    return getattr(torch, COMPUTE_DTYPE_NAME)


@dataclass
class LoraModule:
    """A low-rank update: ``down`` [r, in] or [r, in, kh, kw], ``up`` [out, r] or [out, r, 1, 1].

    ``alpha`` None or 0 means alpha = rank (scale 1), as kohya, A1111 and diffusers read it.
    """

    down: "Tensor"
    up: "Tensor"
    alpha: float | None = None

    def __post_init__(self):
        if self.down.dim() not in (2, 4):
            raise ValueError(f"lora down must be 2-D or 4-D, got shape {tuple(self.down.shape)}")
        if self.up.dim() == 4 and tuple(self.up.shape[2:]) != (1, 1):
            raise ValueError(f"conv lora up must be a 1x1 kernel, got shape {tuple(self.up.shape)}")
        if self.up.dim() not in (2, 4) or self.up.shape[1] != self.down.shape[0]:
            raise ValueError(
                f"lora up {tuple(self.up.shape)} does not match down {tuple(self.down.shape)} (rank dim)"
            )
        if self.alpha is not None:
            self.alpha = float(self.alpha)

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def effective_alpha(self) -> float:
        return float(self.alpha) if self.alpha else float(self.rank)

    @property
    def scale(self) -> float:
        return self.effective_alpha / self.rank

    @property
    def is_conv(self) -> bool:
        return self.down.dim() == 4

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """Shape of the base weight this module updates."""
        return (int(self.up.shape[0]), *map(int, self.down.shape[1:]))

    def up_matrix(self) -> "Tensor":
        """``up`` as an [out, r] float32 matrix."""
        return self.up.reshape(self.up.shape[0], self.rank).to(compute_dtype())

    def down_matrix(self) -> "Tensor":
        """``down`` as an [r, in·kh·kw] float32 matrix (the kernel flattened)."""
        return self.down.reshape(self.rank, -1).to(compute_dtype())


@dataclass
class DenseDelta:
    """A full ΔW (scale already folded in), e.g. an expanded LyCORIS module.

    Merge methods that work on ΔW (svd, ties, dare…) accept it in place of a LoraModule.
    """

    delta: "Tensor"
    source: str = "dense"

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.delta.shape)

    @property
    def is_conv(self) -> bool:
        return self.delta.dim() == 4

    @property
    def rank(self) -> int | None:
        return None


ModuleLike = Union[LoraModule, DenseDelta]


def delta_weight(module: ModuleLike, weight: float = 1.0) -> "Tensor":
    """ΔW = weight · α/r · up @ down in float32 (conv: the combined [out, in, kh, kw] kernel)."""
    if isinstance(module, DenseDelta):
        return module.delta.to(compute_dtype()) * float(weight)
    product = module.up_matrix() @ module.down_matrix()
    return (product * (float(weight) * module.scale)).reshape(module.weight_shape)


def matrix_shape(weight_shape: tuple[int, ...]) -> tuple[int, int]:
    """(out, in·kh·kw): the 2-D view of a linear or conv weight used for all SVD work."""
    cols = 1
    for s in weight_shape[1:]:
        cols *= int(s)
    return int(weight_shape[0]), cols


def common_weight_shape(name: str, modules: list[ModuleLike | None]) -> tuple[int, ...]:
    """The base weight shape shared by all given modules.

    A linear [out, in] and a 1×1 conv [out, in, 1, 1] on the same layer (SD1 ``proj_in`` written
    by different trainers) are the same update: the conv shape wins. Anything else that differs is
    an error, not a guess.
    """
    from loradex.registry.errors import IncompatibleAdapters

    shapes = {m.weight_shape for m in modules if m is not None}
    if not shapes:
        raise ValueError(f"{name}: no module to take a shape from")
    if len(shapes) == 1:
        return next(iter(shapes))
    squeezed = {s[:2] if len(s) == 4 and s[2:] == (1, 1) else s for s in shapes}
    if len(squeezed) == 1 and all(len(s) in (2, 4) for s in shapes):
        return next(iter(squeezed)) + (1, 1)
    raise IncompatibleAdapters(
        f"{name}: the inputs update different weight shapes {sorted(shapes)}",
        hint="the adapters were trained for different base models or layer types",
    )


def lora_from_factors(up2d: "Tensor", down2d: "Tensor", weight_shape: tuple[int, ...], alpha: float | None) -> LoraModule:
    """Build a LoraModule from [out, k] / [k, in·kh·kw] matrices for a base weight shape."""
    k = int(down2d.shape[0])
    if len(weight_shape) == 4:
        down = down2d.reshape(k, *weight_shape[1:])
        up = up2d.reshape(int(weight_shape[0]), k, 1, 1)
    else:
        down, up = down2d, up2d
    return LoraModule(down=down.contiguous(), up=up.contiguous(), alpha=alpha)


# --- kohya state dicts ----------------------------------------------------------------------


def _split_key(key: str) -> tuple[str, str] | None:
    """kohya module names never contain a dot: the module is everything before the first one."""
    if "." not in key:
        return None
    module, suffix = key.split(".", 1)
    return module, suffix


def split_kohya_state_dict(
    sd: Mapping[str, "Tensor"],
) -> tuple[dict[str, LoraModule], dict[str, dict[str, "Tensor"]], dict[str, "Tensor"]]:
    """Split a kohya-named state dict into (plain LoRA modules, other per-module groups, loose keys).

    Groups whose keys are only ``lora_down.weight`` / ``lora_up.weight`` / ``alpha`` become
    LoraModules. Groups with anything else (LyCORIS ``hada_*``, ``lokr_*``, ``lora_mid``,
    ``dora_scale``…) are returned whole, keyed by their suffix, for ``lycoris_math``. Keys that do
    not look like ``module.suffix`` (bundled embeddings…) are returned as they are.
    """
    groups: dict[str, dict[str, "Tensor"]] = {}
    loose: dict[str, "Tensor"] = {}
    for key, tensor in sd.items():
        parts = _split_key(key)
        if parts is None or not parts[0].startswith(("lora_", "lycoris_")):
            loose[key] = tensor
            continue
        groups.setdefault(parts[0], {})[parts[1]] = tensor
    plain: dict[str, LoraModule] = {}
    other: dict[str, dict[str, "Tensor"]] = {}
    for name, tensors in groups.items():
        if set(tensors) <= PLAIN_LORA_SUFFIXES and DOWN_SUFFIX in tensors and UP_SUFFIX in tensors:
            alpha = tensors.get(ALPHA_SUFFIX)
            plain[name] = LoraModule(
                down=tensors[DOWN_SUFFIX],
                up=tensors[UP_SUFFIX],
                alpha=float(alpha.float().item()) if alpha is not None else None,
            )
        else:
            other[name] = tensors
    return plain, other, loose


def modules_from_kohya_state_dict(sd: Mapping[str, "Tensor"]) -> dict[str, LoraModule]:
    """Every module of a plain kohya LoRA state dict; refuses to drop anything it cannot read."""
    from loradex.registry.errors import CoverageError

    plain, other, loose = split_kohya_state_dict(sd)
    dropped = sorted(f"{name}.{suffix}" for name, group in other.items() for suffix in group) + sorted(loose)
    if dropped:
        raise CoverageError(
            "not a plain kohya LoRA",
            dropped,
            hint="use split_kohya_state_dict and expand LyCORIS modules with lycoris_math",
        )
    return plain


def kohya_state_dict_from_modules(
    modules: Mapping[str, LoraModule],
    *,
    dtype=None,
    alpha_dtype=None,
) -> dict[str, "Tensor"]:
    """kohya keys for each module: ``down``/``up`` in ``dtype`` (None: keep), ``alpha`` 0-dim.

    ``alpha_dtype`` defaults to float32 so that a non-integer alpha (resize keeps α/r) survives.
    """
    import torch

    alpha_dtype = alpha_dtype or torch.float32
    out: dict[str, "Tensor"] = {}
    for name, module in modules.items():
        down, up = module.down, module.up
        if dtype is not None:
            down, up = down.to(dtype), up.to(dtype)
        out[f"{name}.{DOWN_SUFFIX}"] = down.contiguous()
        out[f"{name}.{UP_SUFFIX}"] = up.contiguous()
        out[f"{name}.{ALPHA_SUFFIX}"] = torch.tensor(module.effective_alpha, dtype=alpha_dtype)
    return out
