"""SVD of low-rank products without building the full matrix, and rank selection.

For ΔW = U·Vᵀ with U [m, R] and V [n, R] (R ≪ m, n): QR both factors (U = Qu·Ru, V = Qv·Rv), take
the SVD of the small R×R core Ru·Rvᵀ = Uc·S·Vcᵀ; then ΔW = (Qu·Uc)·S·(Qv·Vc)ᵀ is an exact thin SVD.
Cost O((m+n)·R²) instead of O(m·n·min(m, n)) for the full matrix, and memory O((m+n)·R).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

# torch.quantile refuses inputs above this many elements
_TORCH_QUANTILE_LIMIT = 1 << 24


@dataclass
class ThinSVD:
    """ΔW = U · diag(S) · Vh, singular values in descending order."""

    U: "Tensor"  # [m, p]
    S: "Tensor"  # [p]
    Vh: "Tensor"  # [p, n]

    def energy(self) -> float:
        return float(self.S.double().pow(2).sum())


def factored_svd(up2d: "Tensor", down2d: "Tensor") -> ThinSVD:
    """Thin SVD of ``up2d @ down2d`` ([m, R] @ [R, n]) without materialising the m×n product."""
    import torch

    up2d = up2d.to(torch.float32)
    down2d = down2d.to(torch.float32)
    qu, ru = torch.linalg.qr(up2d, mode="reduced")  # [m, a], [a, R]
    qv, rv = torch.linalg.qr(down2d.T, mode="reduced")  # [n, b], [b, R]
    # the small core in float64: costs nothing and keeps tiny singular values honest
    uc, s, vch = torch.linalg.svd(ru.double() @ rv.double().T, full_matrices=False)
    return ThinSVD(U=qu @ uc.to(torch.float32), S=s.to(torch.float32), Vh=vch.to(torch.float32) @ qv.T)


def dense_svd(matrix: "Tensor") -> ThinSVD:
    """Thin SVD of a materialised matrix (float32)."""
    import torch

    u, s, vh = torch.linalg.svd(matrix.to(torch.float32), full_matrices=False)
    return ThinSVD(U=u, S=s, Vh=vh)


def tail_norm(S: "Tensor", k: int) -> float:
    """‖ΔW − best rank-k approximation‖_F = sqrt(Σ_{j ≥ k} S_j²)."""
    return math.sqrt(float(S[k:].double().pow(2).sum()))


def lowrank_sum_norm(terms: Sequence[tuple["Tensor", "Tensor"]]) -> float:
    """‖Σ up_i @ down_i‖_F for [m, r_i] / [r_i, n] pairs, through QR (stable, no m×n matrix).

    Used for residuals such as ‖ΣΔW − merged‖ where cancellation in ‖A‖² + ‖B‖² − 2⟨A, B⟩
    would lose all precision in float32.
    """
    import torch

    ups = torch.cat([u.to(torch.float32) for u, _ in terms], dim=1)
    downs = torch.cat([d.to(torch.float32) for _, d in terms], dim=0)
    _, ru = torch.linalg.qr(ups, mode="reduced")
    _, rv = torch.linalg.qr(downs.T, mode="reduced")
    return float(torch.linalg.matrix_norm(ru.double() @ rv.double().T))


def quantile(values: "Tensor", q: float) -> float:
    """torch.quantile (linear interpolation), also for inputs beyond its 2**24-element limit."""
    import torch

    flat = values.reshape(-1).to(torch.float32)
    if flat.numel() <= _TORCH_QUANTILE_LIMIT:
        return float(torch.quantile(flat, q))
    pos = q * (flat.numel() - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    ordered = torch.sort(flat).values
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def split_factors(svd: ThinSVD, k: int, *, clamp_quantile: float | None = None) -> tuple["Tensor", "Tensor"]:
    """Rank-k factors (up [m, k], down [k, n]) of the truncated SVD.

    Without clamping, √S goes to each side (balanced magnitudes, best for fp16 storage). With
    ``clamp_quantile`` the result follows kohya's ``svd_merge_lora`` / ``extract_lora``:
    up = U·S, down = Vh, both clamped to ±(the q-quantile of their joined values).
    """
    import torch

    k = max(1, min(int(k), int(svd.S.shape[0])))
    u, s, vh = svd.U[:, :k], svd.S[:k], svd.Vh[:k]
    if clamp_quantile is None:
        root = s.clamp_min(0).sqrt()
        return (u * root).contiguous(), (root[:, None] * vh).contiguous()
    up = u * s
    hi = quantile(torch.cat([up.reshape(-1), vh.reshape(-1)]), clamp_quantile)
    return up.clamp(-hi, hi).contiguous(), vh.clamp(-hi, hi).contiguous()


# --- rank selection ---------------------------------------------------------------------------


def _rank_by_sv_ratio(S: "Tensor", p: float) -> int:
    """Keep singular values larger than S₀ / p."""
    return int((S > S[0] / p).sum())


def _rank_by_sv_cumulative(S: "Tensor", p: float) -> int:
    """Smallest k with Σ_{j<k} S_j ≥ p · Σ S."""
    import torch

    cum = torch.cumsum(S.double(), 0)
    return int(torch.searchsorted(cum, p * cum[-1])) + 1


def _rank_by_sv_fro(S: "Tensor", p: float) -> int:
    """Smallest k with Σ_{j<k} S_j² ≥ p² · Σ S² (retained Frobenius norm fraction ≥ p)."""
    import torch

    cum = torch.cumsum(S.double().pow(2), 0)
    return int(torch.searchsorted(cum, (p**2) * cum[-1])) + 1


DYNAMIC_RANK_RULES = {
    "sv_ratio": _rank_by_sv_ratio,
    "sv_cumulative": _rank_by_sv_cumulative,
    "sv_fro": _rank_by_sv_fro,
}


def select_rank(S: "Tensor", rank: int | None = None, dynamic: tuple[str, float] | None = None) -> int:
    """How many singular values to keep: a fixed ``rank``, or a ``dynamic`` rule capped by ``rank``.

    Always at least 1 and at most len(S).
    """
    from loradex.registry.errors import UsageError

    available = int(S.shape[0])
    if available == 0:
        return 0
    if dynamic is None:
        if rank is None:
            raise UsageError("select_rank needs a rank or a dynamic rule")
        k = int(rank)
    else:
        rule_name, p = dynamic
        rule = DYNAMIC_RANK_RULES.get(rule_name)
        if rule is None:
            raise UsageError(f"unknown dynamic rank rule {rule_name!r}", hint=f"one of {sorted(DYNAMIC_RANK_RULES)}")
        if float(S[0]) == 0.0:
            k = 1
        else:
            k = rule(S, float(p))
        if rank is not None:
            k = min(k, int(rank))
    return max(1, min(k, available))


def retained_fro_fraction(S: "Tensor", k: int) -> float:
    """‖rank-k part‖_F / ‖all‖_F (1.0 for a zero matrix)."""
    total = float(S.double().pow(2).sum())
    if total == 0.0:
        return 1.0
    return math.sqrt(float(S[:k].double().pow(2).sum()) / total)
