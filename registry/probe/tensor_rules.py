"""What loradex accepts inside an adapter's tensors, checked from the header before any data is read.

The same rules hold for ``add``, ``inspect``, ``convert``, ``import``, ``pull`` (all probe the file)
and for ``merge`` / ``resize`` (which re-check a stored blob when they open it, for blobs added
before these rules), so a file ``add`` accepts never crashes a merge.

Dtypes, one rule each (safetensors spelling):

==========================================  ============================================================
F16, BF16, F32, F64                         accepted; the math runs in float32
F8_E4M3, F8_E5M2                            accepted; up-cast to float32 for the math (merge / resize
                                            write ``--dtype``, default fp16; ``convert`` keeps them)
I8, U8, I16, U16, I32, U32, I64, U64        accepted only as a one-element ``alpha`` (its value is
                                            up-cast); refused as weights: integers without a scale
                                            are quantised data loradex cannot interpret
BOOL, C64, F8_E8M0, F6_E2M3, F6_E3M2, F4,   refused: not weights loradex can do float math on
any other
==========================================  ============================================================

Checkpoints (kind ``checkpoint``) are not checked: their integer position ids and the like are
never merged, and ``bake`` up-casts the float weights it touches.

Plain LoRA modules (every key convention the probe pairs into down/up): both halves present,
rank ≥ 1 (``down`` has r rows, ``up`` r columns, the same r), ``alpha`` exactly one element.
LyCORIS modules (``lycoris_format``): one-element alpha, no rank 0 or empty factor, every factor
the algorithm needs, paired factors of one rank. A violation is an :class:`UnsupportedFormat`
naming the modules, in one line.

NaN/Inf are values, not header facts: ``merge``, ``resize`` and ``bake`` check them
(``merge.catalog_merge.check_finite``); ``add`` and ``convert`` (an exact key rename) keep them.
"""

from __future__ import annotations

import math
import re

from ..errors import UnsupportedFormat

FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"})
INT_DTYPES = frozenset({"I8", "U8", "I16", "U16", "I32", "U32", "I64", "U64"})
CHECKED_KINDS = frozenset({"lora", "lycoris", "embedding"})
SHOWN = 4


def _listed(items: list[str]) -> str:
    """One line: control characters a hostile tensor name may carry are escaped."""
    shown = re.sub(r"[\x00-\x1f\x7f-\x9f]", lambda m: f"\\x{ord(m.group()):02x}", "; ".join(items[:SHOWN]))
    return shown + (f"; … (+{len(items) - SHOWN} more)" if len(items) > SHOWN else "")


def dtype_problems(tensors) -> list[str]:
    """``name (DTYPE)`` for each tensor of ``tensors`` (name → object with .dtype/.shape) the
    dtype rule refuses."""
    bad = []
    for name, meta in tensors.items():
        if meta.dtype in FLOAT_DTYPES:
            continue
        if meta.dtype in INT_DTYPES and name.rsplit(".", 1)[-1] == "alpha" and math.prod(meta.shape) == 1:
            continue
        bad.append(f"{name} ({meta.dtype})")
    return sorted(bad)


def check_dtypes(path, tensors) -> None:
    bad = dtype_problems(tensors)
    if bad:
        raise UnsupportedFormat(path, f"{len(bad)} tensor(s) of a dtype loradex cannot use as adapter "
                                      f"weights: {_listed(bad)}",
                                hint="adapters need F16/BF16/F32/F64 (or F8_E4M3/F8_E5M2, up-cast) weights")


def pair_problems(module: str, parts: dict) -> list[str]:
    """What is wrong with one plain LoRA module: ``parts`` maps "down"/"up"/"alpha" to shapes."""
    down, up, alpha = parts.get("down"), parts.get("up"), parts.get("alpha")
    out = []
    if down is None or up is None:
        if down is not None or up is not None:
            have = "lora_down" if down is not None else "lora_up"
            out.append(f"{module}: {have} without its {'lora_up' if up is None else 'lora_down'}")
        elif alpha is not None:
            out.append(f"{module}: alpha without lora_down/lora_up")
    else:
        r_down = down[0] if len(down) else None
        r_up = up[1] if len(up) > 1 else None
        if len(down) < 2 or len(up) < 2:
            out.append(f"{module}: lora_down {tuple(down)} / lora_up {tuple(up)} are not matrices")
        elif r_down == 0 or r_up == 0:
            out.append(f"{module}: rank 0 (lora_down {tuple(down)}, lora_up {tuple(up)})")
        elif r_down != r_up:
            out.append(f"{module}: lora_down has rank {r_down} but lora_up has {r_up}")
    if alpha is not None and math.prod(alpha) != 1:
        out.append(f"{module}: alpha has shape {tuple(alpha)}, not one value")
    return out


def modules_problems(modules: dict[str, dict]) -> list[str]:
    """``pair_problems`` of every module of ``modules`` (name → {"down"/"up"/"alpha": shape})."""
    return [p for name in sorted(modules) for p in pair_problems(name, modules[name])]


def raise_for_modules(path, bad: list[str]) -> None:
    if bad:
        raise UnsupportedFormat(path, f"{len(bad)} malformed LoRA module(s): {_listed(bad)}",
                                hint="the file is damaged or was written by a broken tool; re-export it")


def check_view(path, view, facts) -> None:
    """The rules for a probed file: dtypes for adapter kinds, then the pairs the prober collected."""
    if facts.kind not in CHECKED_KINDS:
        return
    check_dtypes(path, view.tensors)
    raise_for_modules(path, facts.problems)
