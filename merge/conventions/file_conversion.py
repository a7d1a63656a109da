"""One entry point for converting an adapter file, whatever its kind: ``loradex convert`` and
``loradex export --format`` both go through ``convert_path``.

The source is probed (header only); its kind picks the converter from ``CONVERTERS``:

- ``lora``: between key conventions (``merge.convert.convert_file``), exact;
- ``lycoris``: LyCORIS → LoRA by SVD at ``rank`` (``merge.lycoris_to_lora``), error reported;
- ``embedding``: between a1111 / diffusers / sdxl layouts, SDXL split or join
  (``merge.embedding_convert.convert_embedding_file``).

Each converter refuses the options that do not apply to its kind rather than ignoring them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loradex.registry.errors import UnsupportedFormat, UsageError


@dataclass(frozen=True)
class ConversionRequest:
    src: Path
    dest: Path
    to: str
    base: str | None = None
    allow_partial: bool = False
    rank: int | None = None  # LyCORIS only
    join_with: Path | None = None  # embeddings only
    token: str | None = None  # embeddings only


def _refuse(req: ConversionRequest, kind: str, *options: str) -> None:
    flags = {"rank": "--rank", "join_with": "--join", "token": "--token"}
    for option in options:
        if getattr(req, option) is not None:
            hint = ("to change a LoRA's rank use `loradex resize`" if option == "rank"
                    else "it applies to embeddings only")
            raise UsageError(f"{flags[option]} does not apply to {req.src} ({kind} file)", hint=hint)


def _lora(req: ConversionRequest) -> Any:
    from .convert import convert_file

    _refuse(req, "LoRA", "rank", "join_with", "token")
    return convert_file(req.src, req.dest, req.to, base=req.base, allow_partial=req.allow_partial)


def _lycoris(req: ConversionRequest) -> Any:
    from .lycoris_to_lora import convert_lycoris_file

    _refuse(req, "LyCORIS", "join_with", "token")
    return convert_lycoris_file(req.src, req.dest, req.to, rank=req.rank, base=req.base,
                                allow_partial=req.allow_partial)


def _embedding(req: ConversionRequest) -> Any:
    """Every tensor of an embedding is carried (layouts differ only in keys), so allow_partial
    has nothing to allow."""
    from .embedding_convert import convert_embedding_file

    _refuse(req, "embedding", "rank")
    return convert_embedding_file(req.src, req.dest, req.to, token=req.token, base=req.base,
                                  join_with=req.join_with)


# Probed kind → converter.
CONVERTERS: dict[str, Callable[[ConversionRequest], Any]] = {
    "lora": _lora, "lycoris": _lycoris, "embedding": _embedding,
}


def convert_path(src, dest, to: str, *, base: str | None = None, allow_partial: bool = False,
                 rank: int | None = None, join_with=None, token: str | None = None) -> dict:
    """Probe ``src`` and convert it with its kind's converter; returns the report as a dict
    (``files``: every file written). ``base``: the family when the probe cannot tell."""
    from loradex.registry.probe import probe_path

    src = Path(src)
    if src.suffix.lower() != ".safetensors":  # pickles: the probe would say "--allow-pickle", which convert lacks
        raise UnsupportedFormat(src, "only .safetensors files are converted (a pickle is never opened here)",
                                hint="add it with `loradex add --allow-pickle` (stored as safetensors), "
                                     "then `loradex export REF DEST --format …`")
    facts = probe_path(src).to_dict()
    kind = facts.get("kind") or "lora"
    if kind not in CONVERTERS:
        raise UsageError(f"{src} is a {kind}; convert handles {', '.join(CONVERTERS)} files")
    probed = facts.get("base")
    req = ConversionRequest(src, Path(dest), to, base or (probed if probed not in (None, "unknown") else None),
                            allow_partial, rank, Path(join_with) if join_with is not None else None, token)
    from loradex.families import require

    require(req.base, "convert")  # a recognised-only family (Wan, HunyuanVideo …): one line, exit 1
    report = CONVERTERS[kind](req)
    data = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    data.setdefault("kind", kind)
    data.setdefault("source_format", facts.get("format"))
    return data
