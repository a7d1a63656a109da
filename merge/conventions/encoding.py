"""How loradex spells values in the files and recipes it writes: dtype names (``fp16``, ``bf16``,
``fp32``) and the one canonical JSON text of a recipe stored in file metadata (``loradex.recipe``).

Shared by the conversions here and the catalog operations at ``merge/``'s root (recipes), so it
stands below both.
"""

from __future__ import annotations

import json
from typing import Any

DTYPES = {"fp16": "float16", "fp32": "float32", "bf16": "bfloat16"}


def torch_dtype(name: str):
    """fp16/fp32/bf16 → torch dtype; "keep" → None (the inputs' dtype)."""
    import torch

    from loradex.registry.errors import UsageError

    if name == "keep":
        return None
    if name not in DTYPES:
        raise UsageError(f"unknown dtype {name!r}", hint="fp16, fp32 or bf16")
    return getattr(torch, DTYPES[name])


def canonical_json(data: Any) -> str:
    """The one text form of a recipe (sorted keys, no spaces): stable across runs."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
