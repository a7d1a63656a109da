"""Exact split and fuse of LoRA factors on fused projections (Flux ``qkv`` / ``linear1``, SD3 ``qkv``).

A LoRA on a fused linear adds ΔW = s · U @ D with D [r, in], U [Σh, r], s = α / r. Its rows
are the parts' rows, so it splits exactly into per-projection LoRAs that share D and take their
rows of U, with the same α (:func:`split_rows`): each part's ΔW is the corresponding row block of
the fused ΔW, bit for bit (row slices of U, the same D).

The way back (:func:`fuse_rows`):

- **shared** — every part present with a bit-identical D and the same α: one rank-r module, U the
  parts' rows stacked. kohya → diffusers → kohya is therefore bit-exact.
- **block** — otherwise: D is the parts' downs stacked [Σr, in], U is block-diagonal [Σh, Σr]
  (each part's U in its own rows and its own rank columns, exact zeros elsewhere), rank grows to
  Σr. When all parts have one scale s, α' = s · Σr keeps every factor untouched (exact: the off
  blocks contribute exact zeros). When scales differ, one α cannot hold them: each part's scale is
  folded into its U block (α' = Σr, one float rounding per element of U; reported as ``folded``).
- A part missing from a group contributes zero rows (exact: that projection's ΔW is 0, which is
  what a loader applies for a module the file does not name); the result says how many.

:func:`split_block_diagonal` recognises a block-form module (each part's rows non-zero only in its
own contiguous rank columns) and gives back the original parts, so diffusers → kohya → diffusers
is exact in block form too. Pure tensor functions: no names, files or families.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:
    import torch


@dataclass
class Factors:
    down: "torch.Tensor"                  # [r, in]
    up: "torch.Tensor"                    # [h, r]
    alpha: "Optional[torch.Tensor]" = None  # 0-dim tensor as stored, or None (α = r)

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def alpha_value(self) -> float:
        """kohya/A1111: a missing or zero alpha means alpha = rank."""
        if self.alpha is None:
            return float(self.rank)
        value = float(self.alpha.item())
        return value if value != 0.0 else float(self.rank)

    @property
    def scale(self) -> float:
        return self.alpha_value / self.rank


@dataclass
class Fused:
    factors: Factors
    form: str              # "shared" | "block"
    missing: int = 0       # parts filled with zero rows
    folded: bool = False   # per-part scales folded into U (block form with unequal scales)


def swap_halves(up: "torch.Tensor") -> "torch.Tensor":
    """(shift, scale) rows ↔ (scale, shift): a row permutation, its own inverse, exact."""
    import torch

    half = up.shape[0] // 2
    if up.shape[0] != 2 * half:
        raise ValueError(f"cannot swap halves of {up.shape[0]} rows")
    return torch.cat([up[half:], up[:half]])


def split_rows(factors: Factors, sizes: Sequence[int]) -> list[Optional[Factors]]:
    """Per-part factors of a fused module, aligned with ``sizes``: the same D (a copy per part,
    bit-identical) and U's rows — or, for a block-form module, each part's own D rows and U block
    (None for a part that owns no rank column: it was missing when the module was fused)."""
    if sum(sizes) != factors.up.shape[0]:
        raise ValueError(f"row sizes {list(sizes)} do not add up to {factors.up.shape[0]}")
    block = split_block_diagonal(factors, sizes)
    if block is not None:
        return block
    out, start = [], 0
    for size in sizes:
        alpha = factors.alpha.clone() if factors.alpha is not None else None
        out.append(Factors(factors.down.clone(), factors.up[start:start + size].clone(), alpha))
        start += size
    return out


def split_block_diagonal(factors: Factors, sizes: Sequence[int]) -> list[Optional[Factors]] | None:
    """The parts of a block-form module (see :func:`fuse_rows`), aligned with ``sizes``, or None
    when U is not block diagonal: at least two parts whose non-zero columns form contiguous,
    ordered, disjoint ranges covering every rank column. Each part keeps the module's scale
    (α_part = s · r_part)."""
    import torch

    ranges: list[Optional[tuple[int, int]]] = []
    start = col = 0
    for size in sizes:
        cols = _nonzero_columns(factors.up[start:start + size])
        if len(cols) == 0:
            ranges.append(None)
        else:
            lo, hi = int(cols[0]), int(cols[-1]) + 1
            if lo != col or hi - lo != len(cols):
                return None
            ranges.append((lo, hi))
            col = hi
        start += size
    if sum(r is not None for r in ranges) < 2 or col != factors.rank:
        return None
    scale = factors.scale
    alpha_dtype = factors.alpha.dtype if factors.alpha is not None else factors.down.dtype
    out: list[Optional[Factors]] = []
    start = 0
    for size, span in zip(sizes, ranges):
        if span is not None:
            lo, hi = span
            out.append(Factors(factors.down[lo:hi].clone(), factors.up[start:start + size, lo:hi].clone(),
                               torch.tensor(scale * (hi - lo), dtype=alpha_dtype)))
        else:
            out.append(None)
        start += size
    return out


def _nonzero_columns(rows: "torch.Tensor") -> "torch.Tensor":
    return (rows != 0).any(dim=0).nonzero().flatten()


def fuse_rows(parts: Sequence[Optional[Factors]], sizes: Sequence[int]) -> Fused:
    """One fused module from per-part factors (None = the part is missing), rows in ``sizes``."""
    import torch

    present = [p for p in parts if p is not None]
    if not present:
        raise ValueError("nothing to fuse")
    if len(parts) != len(sizes):
        raise ValueError(f"{len(parts)} parts for {len(sizes)} row blocks")
    for p, size in zip(parts, sizes):
        if p is not None and p.up.shape[0] != size:
            raise ValueError(f"a part has {p.up.shape[0]} rows, its block {size}")
    missing = len(parts) - len(present)
    first = present[0]
    shared = all(p.down.dtype == first.down.dtype and p.down.shape == first.down.shape
                 and p.up.dtype == first.up.dtype and torch.equal(p.down, first.down)
                 and p.alpha_value == first.alpha_value for p in present[1:])
    if shared:
        ups = [p.up if p is not None else torch.zeros(size, first.rank, dtype=first.up.dtype)
               for p, size in zip(parts, sizes)]
        return Fused(Factors(first.down, torch.cat(ups), first.alpha), "shared", missing)
    rank = sum(p.rank for p in present)
    dtype = present[0].up.dtype
    for p in present[1:]:
        dtype = torch.promote_types(dtype, p.up.dtype)
    down = torch.cat([p.down.to(dtype) for p in present])
    up = torch.zeros(sum(sizes), rank, dtype=dtype)
    one_scale = all(p.scale == first.scale for p in present[1:])
    row = col = 0
    for p, size in zip(parts, sizes):
        if p is not None:
            block = p.up.to(dtype)
            if not one_scale:
                block = (block.double() * p.scale).to(dtype)
            up[row:row + size, col:col + p.rank] = block
            col += p.rank
        row += size
    alpha_dtype = first.alpha.dtype if first.alpha is not None else dtype
    alpha = torch.tensor(first.scale * rank if one_scale else float(rank), dtype=alpha_dtype)
    return Fused(Factors(down, up, alpha), "block", missing, folded=not one_scale)


def delta(factors: Factors) -> "torch.Tensor":
    """ΔW = (α / r) · U @ D in float64 (the closed form the tests compare against)."""
    return factors.scale * (factors.up.double() @ factors.down.double())
