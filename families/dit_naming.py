"""The machinery the DiT families' ``naming`` aspects share: a table of native (BFL / SAI)
module names ↔ diffusers module paths, with fused projections and their splits.

A family lists :class:`NativeModule` rows: one native module template (``double_blocks.{i}.
img_attn.qkv``), the diffusers paths it holds in row order (``transformer_blocks.{i}.attn.to_q``,
``…to_k``, ``…to_v``), how its output rows divide between them (:data:`EQUAL` thirds,
:data:`ATTENTION_THEN_REST` for Flux's single-block ``linear1`` = q, k, v of the input width then
the MLP) and whether the up rows are stored with shift and scale swapped (:data:`SWAP_WHEN_2X`:
the final ``adaLN_modulation.1`` holds (shift, scale), diffusers' ``norm_out.linear`` (scale,
shift) — decided by shape: a modulation whose output is twice its input is that pair).

Row counts come from each module's own shape (out rows, in features), never from constants, so
tiny test models and every real width work alike. Pure strings: no torch, no other loradex
package (the families rule).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

ONE = "one"                              # one native module = one diffusers module
EQUAL = "equal"                          # fused q, k, v: out rows split in equal parts
ATTENTION_THEN_REST = "attention_then_rest"  # q, k, v of the input width each, then the rest (MLP)

SWAP_WHEN_2X = "swap_when_2x"            # (shift, scale) ↔ (scale, shift) when out == 2 · in
NO_SWAP = "none"


@dataclass(frozen=True)
class NativeModule:
    native: str                 # template with {i}: "double_blocks.{i}.img_attn.qkv"
    parts: tuple[str, ...]      # diffusers templates, in the fused module's row order
    rows: str = ONE             # ONE | EQUAL | ATTENTION_THEN_REST
    swap: str = NO_SWAP
    rest_ratio: int | None = None  # ATTENTION_THEN_REST: the last part's rows / input width, fixed
                                   # by the architecture (Flux: mlp_ratio 4), used only when that
                                   # part is absent and its width cannot be read from a shape

    @property
    def fused(self) -> bool:
        return len(self.parts) > 1


@dataclass(frozen=True)
class Resolved:
    """One native module of a concrete model: ``native`` path, the diffusers ``parts`` paths."""

    native: str
    parts: tuple[str, ...]
    rows: str
    swap: str
    rest_ratio: int | None = None

    @property
    def fused(self) -> bool:
        return len(self.parts) > 1


def row_sizes(resolved: Resolved, out_rows: int, in_features: int) -> tuple[int, ...]:
    """How the ``out_rows`` rows of a native module divide between its parts (ValueError when the
    shape does not fit the rule, so a foreign file fails in one line instead of mis-splitting)."""
    n = len(resolved.parts)
    if resolved.rows == ONE:
        return (out_rows,)
    if resolved.rows == EQUAL:
        if out_rows % n:
            raise ValueError(f"{resolved.native}: {out_rows} rows do not split into {n} equal projections")
        return (out_rows // n,) * n
    if resolved.rows == ATTENTION_THEN_REST:
        rest = out_rows - (n - 1) * in_features
        if rest <= 0:
            raise ValueError(f"{resolved.native}: {out_rows} rows leave nothing for {resolved.parts[-1]} "
                             f"after {n - 1} projections of width {in_features}")
        return (in_features,) * (n - 1) + (rest,)
    raise ValueError(f"unknown row rule {resolved.rows!r}")


def part_sizes(resolved: Resolved, known: dict[int, int], in_features: int) -> tuple[int, ...]:
    """Row counts of every part when only some parts are present (``known``: index → rows), for
    fusing: equal parts share the size of any present one; attention parts are the input width;
    an absent last part of ATTENTION_THEN_REST is ``rest_ratio`` × the input width."""
    n = len(resolved.parts)
    if resolved.rows == EQUAL:
        size = next(iter(known.values()))
        if any(v != size for v in known.values()):
            raise ValueError(f"{resolved.native}: parts of unequal widths {sorted(known.values())}")
        return (size,) * n
    if resolved.rows == ATTENTION_THEN_REST:
        last = known.get(n - 1)
        if last is None:
            if resolved.rest_ratio is None:
                raise ValueError(f"{resolved.native}: the width of the missing {resolved.parts[-1]} is unknown")
            last = resolved.rest_ratio * in_features
        return (in_features,) * (n - 1) + (last,)
    return (known[0],)


def swaps_halves(resolved: Resolved, out_rows: int, in_features: int) -> bool:
    return resolved.swap == SWAP_WHEN_2X and out_rows == 2 * in_features


def _regex(template: str, sep: str) -> re.Pattern:
    escaped = re.escape(template.replace(".", sep)).replace(r"\{i\}", r"(?P<i>\d+)")
    return re.compile(f"^{escaped}$")


class NamingTable:
    """Look-ups over a family's :class:`NativeModule` rows, both directions and both spellings
    (dotted, and kohya's underscored)."""

    def __init__(self, rows: tuple[NativeModule, ...]):
        self.rows = rows

    @cached_property
    def _native(self) -> list[tuple[re.Pattern, re.Pattern, NativeModule]]:
        return [(_regex(r.native, "."), _regex(r.native, "_"), r) for r in self.rows]

    @cached_property
    def _diffusers(self) -> list[tuple[re.Pattern, re.Pattern, NativeModule, int]]:
        return [(_regex(p, "."), _regex(p, "_"), r, k) for r in self.rows for k, p in enumerate(r.parts)]

    @staticmethod
    def _fill(template: str, index: str | None) -> str:
        return template.replace("{i}", index) if index is not None else template

    def _resolved(self, row: NativeModule, index: str | None) -> Resolved:
        return Resolved(self._fill(row.native, index), tuple(self._fill(p, index) for p in row.parts),
                        row.rows, row.swap, row.rest_ratio)

    def native(self, path: str) -> Resolved | None:
        """A native module path (``double_blocks.0.img_attn.qkv``) → its parts, or None."""
        for dotted, _, row in self._native:
            m = dotted.match(path)
            if m:
                return self._resolved(row, m.groupdict().get("i"))
        return None

    def native_from_underscored(self, name: str) -> Resolved | None:
        """kohya's underscored native name (``double_blocks_0_img_attn_qkv``) → the module."""
        for _, under, row in self._native:
            m = under.match(name)
            if m:
                return self._resolved(row, m.groupdict().get("i"))
        return None

    def owner(self, diffusers_path: str) -> tuple[Resolved, int] | None:
        """A diffusers path → (the native module holding it, its index among the parts)."""
        for dotted, _, row, k in self._diffusers:
            m = dotted.match(diffusers_path)
            if m:
                return self._resolved(row, m.groupdict().get("i")), k
        return None

    def diffusers_from_underscored(self, name: str) -> str | None:
        """OneTrainer's underscored diffusers path (``transformer_blocks_0_attn_to_q``) → dotted."""
        for _, under, row, k in self._diffusers:
            m = under.match(name)
            if m:
                return self._fill(row.parts[k], m.groupdict().get("i"))
        return None


# --- T5 encoder (transformers T5EncoderModel module paths), shared by Flux and SD3 -----------
_T5_LEAF = r"(?:SelfAttention_(?:q|k|v|o)|DenseReluDense_(?:wi_0|wi_1|wi|wo))"
_T5_UNDERSCORED = re.compile(rf"^encoder_block_(\d+)_layer_(\d+)_({_T5_LEAF})$")


def t5_path_from_underscored(name: str) -> str | None:
    """``encoder_block_3_layer_1_DenseReluDense_wi_0`` → ``encoder.block.3.layer.1.DenseReluDense.wi_0``."""
    m = _T5_UNDERSCORED.match(name)
    if m is None:
        return None
    block, layer, leaf = m.groups()
    head, _, tail = leaf.partition("_")
    return f"encoder.block.{block}.layer.{layer}.{head}.{tail}"
