"""SVD of low-rank products without building the full matrix, and rank selection.

For ΔW = U·D with U [m, R] and D [R, n] (R ≪ m, n), write U = Qu·Ru and Dᵀ = Qd·Rd with Qu, Qd
orthonormal; then ΔW = Qu·(Ru·Rdᵀ)·Qdᵀ and the SVD of the small R×R core Ru·Rdᵀ = Uc·S·Vcᵀ gives
the exact thin SVD ΔW = (Qu·Uc)·S·(Qd·Vc)ᵀ. Cost O((m+n)·R²) instead of O(m·n·min(m, n)) for the
full matrix, and memory O((m+n)·R).

The R factors come from the Gram matrices Uᵀ·U = Ruᵀ·Ru and D·Dᵀ = Rdᵀ·Rd in float64 (one GEMM
each instead of a Householder QR), by Cholesky, or by a symmetric eigendecomposition when a
stack is (nearly) rank-deficient — the same adapter twice, a zero module. The core's SVD is the
eigendecomposition of Ru·(D·Dᵀ)·Ruᵀ = Uc·S²·Ucᵀ, and the singular vectors are never formed
beyond the k that are asked for: Qu·Uc_k = U·(Ru⁻¹·Uc_k) and S_k·Vc_kᵀ·Qdᵀ = Uc_kᵀ·Ru·D, two thin
products. float64 keeps the singular values to ~1e-8 of the largest, far inside what a merge or
a resize reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

# torch.quantile refuses inputs above this many elements
_TORCH_QUANTILE_LIMIT = 1 << 24
# Cholesky of a Gram matrix is used while its smallest pivot is at least this fraction of the largest
# (condition number of the factor ≲ 1e6); below, an eigendecomposition drops the null directions
_CHOLESKY_MIN_PIVOT_RATIO = 1e-6
# eigenvalues of a Gram matrix below this fraction of the largest are its null space (float64 noise)
_GRAM_NULL_RATIO = 1e-13


@dataclass
class ThinSVD:
    """ΔW = U · diag(S) · Vh, singular values in descending order."""

    U: "Tensor"  # [m, p]
    S: "Tensor"  # [p]
    Vh: "Tensor"  # [p, n]

    def energy(self) -> float:
        return float(self.S.double().pow(2).sum())

    def top(self, k: int) -> "ThinSVD":
        """The leading k singular triplets."""
        return ThinSVD(U=self.U[:, :k], S=self.S[:k], Vh=self.Vh[:k])

    def balanced_factors(self, k: int) -> tuple["Tensor", "Tensor"]:
        """(U_k·√S_k, √S_k·Vh_k)."""
        root = self.S[:k].clamp_min(0).sqrt()
        return (self.U[:, :k] * root).contiguous(), (root[:, None] * self.Vh[:k]).contiguous()


@dataclass
class FactoredSVD:
    """Thin SVD of ``up @ down`` kept in factored form: all singular values, and the singular
    vectors as small R×p coefficient matrices over the factors, formed for the top k on demand.

    U = up · left, Vh = right · down; the products run in float32 (the factors' precision), the
    small coefficient matrices are float64.
    """

    S: "Tensor"  # [p] float32, descending
    up: "Tensor" = field(repr=False)  # [m, R] float32
    down: "Tensor" = field(repr=False)  # [R, n] float32
    left: "Tensor" = field(repr=False)  # [R, p] float64
    right: "Tensor" = field(repr=False)  # [p, R] float64

    def energy(self) -> float:
        return float(self.S.double().pow(2).sum())

    def top(self, k: int) -> ThinSVD:
        import torch

        return ThinSVD(U=self.up @ self.left[:, :k].to(torch.float32), S=self.S[:k],
                       Vh=self.right[:k].to(torch.float32) @ self.down)

    def balanced_factors(self, k: int) -> tuple["Tensor", "Tensor"]:
        """(U_k·√S_k, √S_k·Vh_k): √S folded into the small coefficients, one product per side."""
        import torch

        root = self.S[:k].double().clamp_min(0).sqrt()
        return (self.up @ (self.left[:, :k] * root).to(torch.float32),
                (root[:, None] * self.right[:k]).to(torch.float32) @ self.down)

    @property
    def U(self) -> "Tensor":
        import torch

        return self.up @ self.left.to(torch.float32)

    @property
    def Vh(self) -> "Tensor":
        import torch

        return self.right.to(torch.float32) @ self.down


def _gram_root(gram: "Tensor") -> tuple["Tensor", "Tensor"]:
    """(R, R⁺) with Rᵀ·R = gram on its range and R⁺ the right inverse of R there.

    R is [p, R] (p = numerical rank), from Cholesky when well conditioned, else from the
    eigendecomposition with the null directions dropped.
    """
    import torch

    chol, info = torch.linalg.cholesky_ex(gram)
    if int(info) == 0:
        pivots = torch.diagonal(chol)
        if float(pivots.min()) >= _CHOLESKY_MIN_PIVOT_RATIO * float(pivots.max()):
            root = chol.mT  # upper triangular: rootᵀ·root = gram
            eye = torch.eye(root.shape[0], dtype=root.dtype)
            return root, torch.linalg.solve_triangular(root, eye, upper=True)
    values, vectors = torch.linalg.eigh(gram)
    top = float(values[-1]) if values.numel() else 0.0
    keep = values > top * _GRAM_NULL_RATIO if top > 0 else torch.zeros_like(values, dtype=torch.bool)
    sqrt_values, vectors = values[keep].sqrt(), vectors[:, keep]
    return sqrt_values[:, None] * vectors.mT, vectors / sqrt_values


def factored_svd(up2d: "Tensor", down2d: "Tensor", column_scale: "Tensor | None" = None) -> FactoredSVD:
    """Thin SVD of ``up2d · diag(column_scale) · down2d`` ([m, R], [R], [R, n]) without
    materialising the m×n product. The scale (a merge's per-input w·α/r) is applied to the R×R
    Gram matrix and to the coefficients, never to the factors themselves."""
    import torch

    from .torch_threads import single_torch_thread

    # float32 copies stay for the final products; the Gram matrices need float64 (a half→double
    # cast through float32 is also ~2× faster than torch's direct one)
    up, down = up2d.to(torch.float32), down2d.to(torch.float32)
    up64, down64 = up.double(), down.double()
    gram_up = up64.mT @ up64  # [R, R]
    gram_down = down64 @ down64.mT  # [R, R]
    del up64, down64
    scale = (torch.ones(up.shape[1], dtype=torch.float64) if column_scale is None
             else torch.as_tensor(column_scale, dtype=torch.float64))
    # balance each rank-1 term: column j of up·diag(scale) times d_j, row j of down over d_j, so both
    # have the norm √(‖a_j‖·‖b_j‖). ΔW is unchanged; an input stored as (up/10⁶, down·10⁶) no longer
    # squares its imbalance into the Gram matrix's condition number.
    norms_up, norms_down = torch.diagonal(gram_up) * scale**2, torch.diagonal(gram_down)
    usable = (norms_up > 0) & (norms_down > 0)
    balance = torch.where(usable, (norms_down / norms_up.where(usable, 1.0)).pow(0.25), 1.0)
    scale = scale * balance
    gram_up = gram_up * scale[:, None] * scale[None, :]
    gram_down = gram_down / balance[:, None] / balance[None, :]
    with single_torch_thread():  # 2 threads only slow LAPACK down at R ≈ 100
        root, root_pinv = _gram_root(gram_up)  # A = up·diag(scale) = Q·root, Q = A·root_pinv
        if root.shape[0] == 0:  # ΔW = 0: one zero singular value (a zero rank-1 factor pair)
            zeros = torch.zeros(up.shape[1], 1, dtype=torch.float64)
            return FactoredSVD(S=torch.zeros(1), up=up, down=down, left=zeros, right=zeros.mT)
        core = root @ gram_down @ root.mT  # [p, p] = (root·down)(root·down)ᵀ
        core = (core + core.mT) / 2
        s2, vectors = torch.linalg.eigh(core)
    # at most min(rank of up, n) singular values are non-zero: as many as a thin SVD of ΔW has
    count = min(int(s2.shape[0]), int(down.shape[1]))
    s2, vectors = s2.flip(0)[:count].clamp_min(0), vectors.flip(1)[:, :count]
    s = s2.sqrt()
    # U_j = A·root_pinv·u_j ; Vh_j = u_jᵀ·root·diag(1/balance)·down / s_j (zero rows where s_j = 0)
    inv_s = torch.where(s > 0, 1.0 / s.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(s))
    left = scale[:, None] * (root_pinv @ vectors)
    right = (vectors.mT @ root) * inv_s[:, None] / balance[None, :]
    return FactoredSVD(S=s.to(torch.float32), up=up, down=down, left=left, right=right)


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


def split_factors(svd: ThinSVD | FactoredSVD, k: int, *, clamp_quantile: float | None = None) -> tuple["Tensor", "Tensor"]:
    """Rank-k factors (up [m, k], down [k, n]) of the truncated SVD.

    Without clamping, √S goes to each side (balanced magnitudes, best for fp16 storage). With
    ``clamp_quantile`` the result follows kohya's ``svd_merge_lora`` / ``extract_lora``:
    up = U·S, down = Vh, both clamped to ±(the q-quantile of their joined values).
    """
    import torch

    k = max(1, min(int(k), int(svd.S.shape[0])))
    if clamp_quantile is None:
        return svd.balanced_factors(k)
    top = svd.top(k)
    u, s, vh = top.U, top.S, top.Vh
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
