"""What a merge / resize / extract did to each module: kept rank, residuals, skipped modules."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ModuleReport:
    """One module's outcome.

    ``residual`` is ‖target ΔW − result ΔW‖_F (the target is what the method aims at: the weighted
    sum for svd, the TIES/DARE combination for those, the input for resize, W_tuned − W_base for
    extract); ``relative_residual`` divides it by ‖target‖_F. ``retained_fro`` = ‖kept‖_F/‖target‖_F
    from the singular values. None where a value does not apply (concat is exact by construction).
    """

    name: str
    rank: int
    input_ranks: list[int | None] = field(default_factory=list)
    residual: float | None = None
    relative_residual: float | None = None
    retained_fro: float | None = None
    note: str = ""


@dataclass
class AdapterReport:
    """Per-module reports plus the modules left out, each with its reason (never silent)."""

    operation: str
    params: dict[str, Any] = field(default_factory=dict)
    modules: dict[str, ModuleReport] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    nonfinite: list[str] = field(default_factory=list)  # "<ref or result>: <module>" kept by --allow-nonfinite

    def add(self, report: ModuleReport) -> None:
        self.modules[report.name] = report

    def max_relative_residual(self) -> float | None:
        values = [m.relative_residual for m in self.modules.values() if m.relative_residual is not None]
        return max(values) if values else None

    def total_residual(self) -> float | None:
        """sqrt(Σ residual²) over modules: the Frobenius residual of the whole adapter."""
        values = [m.residual for m in self.modules.values() if m.residual is not None]
        return sum(v * v for v in values) ** 0.5 if values else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
