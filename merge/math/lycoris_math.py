"""Expand LyCORIS modules to their full ΔW, and turn any ΔW into a LoRA by SVD.

Conventions follow LyCORIS' saved tensors (``hada_*``, ``lokr_*``, ``lora_mid``) as A1111 reads them:
- LoHa: ΔW = (w1a @ w1b) ⊙ (w2a @ w2b) · α/r, r = w1b.shape[0]; with Tucker cores t1/t2
  [r, r, kh, kw]: each factor is einsum("i j k l, j r, i p -> p r k l", t, w_b, w_a).
- LoKr: ΔW = kron(w1, w2) · γ, with w1 = w1_a @ w1_b and/or w2 = w2_a @ w2_b (or Tucker t2);
  γ = α/r when either side is factored (r its inner dim), 1 when both are full matrices.
- LoCon Tucker: lora_down [r, in, 1, 1], lora_mid [r, r, kh, kw], lora_up [out, r, 1, 1].
- full: ``diff`` is ΔW itself.
DoRA (``dora_scale``) and (IA)³ are not additive (their effect depends on the base weight): they
are refused with a clear error rather than approximated silently.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .lora_module import LoraModule, compute_dtype, lora_from_factors, matrix_shape
from .lowrank_svd import dense_svd, select_rank, split_factors, tail_norm

NOT_ADDITIVE_KEYS = {
    "dora_scale": "DoRA rescales the whole weight column by column",
    "on_input": "(IA)³ multiplies activations",
}


def _normalise(tensors: Mapping[str, "object"]) -> dict[str, "object"]:
    """Suffix names without '.weight' (lora_down.weight → lora_down), float32."""
    out = {}
    for key, value in tensors.items():
        short = key[: -len(".weight")] if key.endswith(".weight") else key
        out[short] = value.to(compute_dtype()) if value.is_floating_point() else value
    return out


def _scale(alpha: float | None, rank: int) -> float:
    # None or 0 alpha means alpha = rank, as for plain LoRA
    return float(alpha) / rank if alpha else 1.0


def _tucker(t, w_a, w_b):
    """Tucker rebuild as LyCORIS: t [r, r, *k], w_a [r, out], w_b [r, in] → [out, in, *k]."""
    import torch

    return torch.einsum("i j ..., i p, j r -> p r ...", t, w_a, w_b)


def _matmul_kernel(a, b):
    """a [o, r] @ b [r, i] or [r, i, kh, kw] → [o, i(, kh, kw)]."""
    r = b.shape[0]
    return (a.reshape(a.shape[0], r) @ b.reshape(r, -1)).reshape(a.shape[0], *b.shape[1:])


def _reshape(delta, shape):
    if shape is None:
        return delta
    return delta.reshape(tuple(shape))


def _loha(t: dict, alpha: float | None, shape) -> "object":
    rank = int(t["hada_w1_b"].shape[0])
    if "hada_t1" in t and "hada_t2" in t:
        w1 = _tucker(t["hada_t1"], t["hada_w1_a"], t["hada_w1_b"])
        w2 = _tucker(t["hada_t2"], t["hada_w2_a"], t["hada_w2_b"])
    else:
        w1 = _matmul_kernel(t["hada_w1_a"], t["hada_w1_b"])
        w2 = _matmul_kernel(t["hada_w2_a"], t["hada_w2_b"])
    return _reshape(w1 * w2 * _scale(alpha, rank), shape)


def _lokr(t: dict, alpha: float | None, shape) -> "object":
    import torch

    rank = None
    if "lokr_w1" in t:
        w1 = t["lokr_w1"]
    else:
        w1 = t["lokr_w1_a"] @ t["lokr_w1_b"]
        rank = int(t["lokr_w1_b"].shape[0])
    if "lokr_w2" in t:
        w2 = t["lokr_w2"]
    else:
        if rank is None:
            rank = int(t["lokr_w2_b"].shape[0])
        if "lokr_t2" in t:
            w2 = _tucker(t["lokr_t2"], t["lokr_w2_a"], t["lokr_w2_b"])
        else:
            w2 = _matmul_kernel(t["lokr_w2_a"], t["lokr_w2_b"])
    scale = _scale(alpha, rank) if rank is not None else 1.0
    while w1.dim() < w2.dim():  # a 2-D w1 against a conv w2: broadcast over the kernel
        w1 = w1.unsqueeze(-1)
    delta = torch.kron(w1, w2.contiguous()) * scale
    return _reshape(delta, shape)


def _locon(t: dict, alpha: float | None, shape) -> "object":
    import torch

    down, up = t["lora_down"], t["lora_up"]
    rank = int(down.shape[0])
    if "lora_mid" in t:
        up2d = up.reshape(up.shape[0], rank)
        down2d = down.reshape(rank, -1)
        delta = torch.einsum("n m k l, i n, m j -> i j k l", t["lora_mid"], up2d, down2d)
    else:
        delta = _matmul_kernel(up.reshape(up.shape[0], rank), down)
    return _reshape(delta * _scale(alpha, rank), shape)


def _full(t: dict, alpha: float | None, shape) -> "object":
    return _reshape(t["diff"], shape)


# marker key → (kind, expander): the first marker present decides (order matters: a LoCon
# group has lora_down, a LoHa never does)
EXPANDERS: dict[str, tuple[str, Callable[[dict, float | None, tuple | None], "object"]]] = {
    "hada_w1_a": ("loha", _loha),
    "lokr_w1": ("lokr", _lokr),
    "lokr_w1_a": ("lokr", _lokr),
    "lora_down": ("locon", _locon),
    "diff": ("full", _full),
}


def _expander(keys) -> tuple[str, Callable] | None:
    for marker, entry in EXPANDERS.items():
        if marker in keys:
            return entry
    return None


def lycoris_kind(tensors: Mapping[str, "object"]) -> str:
    """'loha', 'lokr', 'locon' (plain or Tucker LoRA) or 'full'; raises for anything else."""
    from loradex.registry.errors import UnsupportedFormat

    keys = {k[: -len(".weight")] if k.endswith(".weight") else k for k in tensors}
    entry = _expander(keys)
    if entry is None:
        raise UnsupportedFormat("module", f"unknown LyCORIS module with keys {sorted(keys)}")
    return entry[0]


def lycoris_delta(
    tensors: Mapping[str, "object"],
    alpha: float | None = None,
    *,
    shape: tuple[int, ...] | None = None,
    name: str = "module",
) -> "object":
    """Full ΔW (float32) of one LyCORIS module from its tensors (keys without the module name).

    ``alpha`` may also be given as an ``alpha`` tensor among ``tensors``. ``shape`` (the base
    weight shape) is needed only where the file stores a conv factor flattened.
    """
    from loradex.registry.errors import UnsupportedFormat

    t = _normalise(tensors)
    for key, why in NOT_ADDITIVE_KEYS.items():
        if key in t:
            raise UnsupportedFormat(
                name,
                f"{key}: not additive ({why}); its ΔW depends on the base weight",
                hint="bake it into the base instead of merging it as a LoRA",
            )
    if alpha is None and "alpha" in t:
        alpha = float(t["alpha"].float().item())
    entry = _expander(t)
    if entry is None:
        raise UnsupportedFormat(name, f"unknown LyCORIS module with keys {sorted(t)}")
    return entry[1](t, alpha, shape)


def to_lora_via_svd(delta: "object", rank: int | None, dynamic: tuple[str, float] | None = None
                    ) -> tuple[LoraModule, float]:
    """The best rank-k LoRA (α = k) for a full ΔW, and its relative Frobenius error; k is
    ``rank``, or ``dynamic`` (a ``lowrank_svd.select_rank`` rule) capped by ``rank``."""
    shape = tuple(int(s) for s in delta.shape)
    svd = dense_svd(delta.to(compute_dtype()).reshape(matrix_shape(shape)))
    k = select_rank(svd.S, rank, dynamic)
    up, down = split_factors(svd, k)
    norm = svd.energy() ** 0.5
    rel = tail_norm(svd.S, int(down.shape[0])) / norm if norm > 0 else 0.0
    return lora_from_factors(up, down, shape, alpha=float(down.shape[0])), rel
