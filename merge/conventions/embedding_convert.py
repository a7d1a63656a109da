"""Textual-inversion embeddings between A1111, diffusers and SDXL layouts.

- A1111 / kohya safetensors: ``{"emb_params": T[n, dim]}``; A1111 ``.pt`` (already loaded by
  the safe pickle loader): ``{"string_to_param": {"*": T[n, dim]}, "name": …}``;
- diffusers: ``{token: T[dim] or T[n, dim]}`` (one token per file);
- SDXL: ``{"clip_l": T[n, 768], "clip_g": T[n, 1280]}`` — one embedding per text encoder.

The neutral form is ``Embedding``: vectors per text encoder ("text_encoder", "text_encoder_2"),
each kept exactly as stored (shape included), and the token if the file names one. Multi-vector
embeddings stay multi-vector. Formats register by name, like the LoRA conventions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from loradex.registry.errors import UnsupportedFormat, UsageError

if TYPE_CHECKING:
    import torch

_SRC = "<embedding>"
# Metadata describing the source's own bytes (hashes): wrong for a converted file.
_STALE_PREFIXES = ("sshs_", "modelspec.hash")
SDXL_KEYS = {"clip_l": "text_encoder", "clip_g": "text_encoder_2"}


@dataclass
class Embedding:
    vectors: dict[str, "torch.Tensor"] = field(default_factory=dict)  # text encoder → T[n, dim] or T[dim]
    token: str | None = None

    @property
    def num_vectors(self) -> int:
        sizes = {1 if t.dim() == 1 else int(t.shape[0]) for t in self.vectors.values()}
        if len(sizes) != 1:
            raise UnsupportedFormat(_SRC, f"text encoders disagree on the number of vectors: {sorted(sizes)}")
        return sizes.pop()


@dataclass(frozen=True)
class EmbeddingFormat:
    name: str
    matches: Callable[[dict], bool]
    read: Callable[[dict], Embedding]
    write: Callable[[Embedding, str | None], dict]


EMBEDDING_FORMATS: dict[str, EmbeddingFormat] = {}


def register_embedding_format(name: str, matches, read, write) -> None:
    EMBEDDING_FORMATS[name] = EmbeddingFormat(name, matches, read, write)


def _as_matrix(t: "torch.Tensor") -> "torch.Tensor":
    return t.unsqueeze(0) if t.dim() == 1 else t


def _single(emb: Embedding, fmt: str) -> "torch.Tensor":
    if set(emb.vectors) != {"text_encoder"}:
        raise UnsupportedFormat(_SRC, f"{fmt} holds one text encoder's vectors, this embedding has "
                                      f"{sorted(emb.vectors)}",
                                hint="split it per text encoder: `loradex convert FILE --to a1111|diffusers` "
                                     "writes one file per encoder")
    return emb.vectors["text_encoder"]


# --- A1111 ------------------------------------------------------------------------------------
def _a1111_read(sd: dict) -> Embedding:
    if "emb_params" in sd:
        return Embedding({"text_encoder": sd["emb_params"]})
    params = sd["string_to_param"]
    (tensor,) = params.values()
    token = sd.get("name") if isinstance(sd.get("name"), str) else None
    return Embedding({"text_encoder": tensor}, token)


def _a1111_write(emb: Embedding, token: str | None) -> dict:
    return {"emb_params": _as_matrix(_single(emb, "a1111"))}


register_embedding_format(
    "a1111",
    lambda sd: set(sd) == {"emb_params"} or ("string_to_param" in sd and len(sd["string_to_param"]) == 1),
    _a1111_read, _a1111_write)


# --- diffusers --------------------------------------------------------------------------------
def _is_tensor(value) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _diffusers_read(sd: dict) -> Embedding:
    (token, tensor), = sd.items()
    return Embedding({"text_encoder": tensor}, token)


def _diffusers_write(emb: Embedding, token: str | None) -> dict:
    token = token or emb.token
    if not token:
        raise UsageError("a diffusers embedding is keyed by its token: pass token='<name>'")
    return {token: _single(emb, "diffusers")}


register_embedding_format(
    "diffusers",
    lambda sd: len(sd) == 1 and next(iter(sd)) not in ("emb_params", "string_to_param", *SDXL_KEYS, "t5xxl")
    and _is_tensor(next(iter(sd.values()))),
    _diffusers_read, _diffusers_write)


# --- SDXL -------------------------------------------------------------------------------------
def _sdxl_keys(sd: dict) -> dict[str, str] | None:
    """key → "clip_l" | "clip_g": the names themselves, or any two tensors 768 and 1280 wide."""
    from loradex.registry.probe.embedding_formats import sdxl_pair

    if not all(_is_tensor(v) for v in sd.values()):
        return None
    return sdxl_pair(sd)


def _sdxl_read(sd: dict) -> Embedding:
    return Embedding({SDXL_KEYS[role]: sd[key] for key, role in _sdxl_keys(sd).items()})


def _sdxl_write(emb: Embedding, token: str | None) -> dict:
    if set(emb.vectors) != set(SDXL_KEYS.values()):
        raise UnsupportedFormat(_SRC, f"SDXL embeddings need vectors for both text encoders, got {sorted(emb.vectors)}",
                                hint="join two single-encoder files: `loradex convert CLIP_L --join CLIP_G --to sdxl`")
    if emb.num_vectors < 1:  # num_vectors raises when the two encoders disagree
        raise UnsupportedFormat(_SRC, "empty embedding")
    return {key: _as_matrix(emb.vectors[encoder]) for key, encoder in SDXL_KEYS.items()}


register_embedding_format("sdxl", lambda sd: _sdxl_keys(sd) is not None, _sdxl_read, _sdxl_write)


# --- API --------------------------------------------------------------------------------------
def detect_embedding_format(sd: dict) -> str:
    if "t5xxl" in sd:
        raise UnsupportedFormat(_SRC, "a T5-XXL embedding (SD3/Flux); it cannot be used with SD1/SDXL")
    for name, fmt in EMBEDDING_FORMATS.items():
        if fmt.matches(sd):
            return name
    raise UnsupportedFormat(_SRC, f"not a known embedding layout (keys: {sorted(sd)[:5]})")


def to_embedding(sd: dict, *, token: str | None = None) -> Embedding:
    emb = EMBEDDING_FORMATS[detect_embedding_format(sd)].read(sd)
    if token:
        emb.token = token
    return emb


def from_embedding(emb: Embedding, fmt: str, *, token: str | None = None) -> dict:
    if fmt not in EMBEDDING_FORMATS:
        raise UsageError(f"unknown embedding format {fmt!r}; known: {', '.join(EMBEDDING_FORMATS)}")
    return EMBEDDING_FORMATS[fmt].write(emb, token)


def convert_embedding(sd: dict, to: str, *, token: str | None = None) -> dict:
    """Convert between single-encoder layouts, or SDXL ↔ SDXL (use split/join across)."""
    return from_embedding(to_embedding(sd, token=token), to, token=token)


def split_embedding(emb: Embedding, to: str, *, token: str | None = None) -> dict[str, dict]:
    """Text encoder → a single-encoder state dict in layout ``to`` holding that encoder's vectors."""
    return {encoder: from_embedding(Embedding({"text_encoder": t}, emb.token), to, token=token)
            for encoder, t in emb.vectors.items()}


def split_sdxl(sd: dict, to: str = "diffusers", *, token: str | None = None) -> dict[str, dict]:
    """SDXL ``clip_l``/``clip_g`` → one single-encoder dict per text encoder (load the first with
    text_encoder/tokenizer, the second with text_encoder_2/tokenizer_2)."""
    return split_embedding(to_embedding(sd, token=token), to, token=token)


_SDXL_WIDTHS = {768: "clip_l", 1280: "clip_g"}


def join_embeddings(parts: list[Embedding]) -> Embedding:
    """Two single-encoder embeddings → one SDXL embedding; each half goes where its width says
    (768: clip_l / text_encoder, 1280: clip_g / text_encoder_2). The first token found is kept."""
    halves = {}
    for part in parts:
        vectors = _single(part, "each half of an SDXL join")
        width = int(vectors.shape[-1])
        key = _SDXL_WIDTHS.get(width)
        if key is None or key in halves:
            raise UnsupportedFormat(_SRC, f"got {width}-wide vectors twice or an unknown width; joining needs "
                                          "one 768-wide (clip_l) and one 1280-wide (clip_g) embedding")
        halves[key] = vectors
    if len(halves) != 2:
        raise UnsupportedFormat(_SRC, "joining needs one clip_l (768) and one clip_g (1280) embedding")
    token = next((p.token for p in parts if p.token), None)
    return Embedding({encoder: halves[key] for key, encoder in SDXL_KEYS.items()}, token)


def join_sdxl(clip_l: dict, clip_g: dict) -> dict:
    """Two single-encoder embeddings (any layout) → SDXL ``clip_l``/``clip_g``."""
    return from_embedding(join_embeddings([to_embedding(clip_l), to_embedding(clip_g)]), "sdxl")


@dataclass
class EmbeddingReport:
    source_format: str
    target_format: str
    num_vectors: int
    token: str | None
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def convert_embedding_file(src, dest, to: str, *, token: str | None = None, base: str | None = None,
                           join_with=None) -> EmbeddingReport:
    """Convert a ``.safetensors`` embedding to ``to`` (a1111, diffusers or sdxl) and write it atomically.

    - SDXL source, single-encoder target: split into two files, ``<dest stem>.clip_l`` and ``.clip_g``.
    - single-encoder source, ``sdxl`` target: joined with ``join_with`` (the file holding the other
      text encoder's vectors; which one is clip_l and which clip_g is told by their widths).
    - The token of a diffusers target defaults to the source's own, else the source file's stem
      (A1111 names embeddings by file name).

    Each written file carries the source's metadata (minus stale hashes) and the ModelSpec keys
    of ``merge.modelspec``: ``<base>/textual-inversion``, title, the token as trigger phrase, and
    ``hash_sha256``."""
    from pathlib import Path

    from loradex.registry.files.safetensors_writer import save_safetensors

    from .modelspec import HASH_KEY, TEXTUAL_INVERSION, modelspec_metadata, source_title

    src, dest = Path(src), Path(dest)
    if to not in EMBEDDING_FORMATS:
        raise UsageError(f"{src}: an embedding converts to {', '.join(EMBEDDING_FORMATS)}, not {to!r}",
                         hint="--to a1111, diffusers or sdxl")
    sd, metadata = _load_embedding_file(src)
    source = _detect_in(src, sd)
    emb = to_embedding(sd, token=token)
    if join_with is not None:
        if to != "sdxl":
            raise UsageError(f"--join makes an SDXL embedding (clip_l + clip_g): it needs --to sdxl, not {to!r}")
        other_sd, other_meta = _load_embedding_file(Path(join_with))
        _detect_in(join_with, other_sd)
        emb = _named(f"{src} + {join_with}", join_embeddings, [emb, to_embedding(other_sd)])
        metadata = {**other_meta, **metadata}
    elif source != "sdxl" and to == "sdxl":
        raise UsageError(f"{src} holds one text encoder's vectors; an SDXL embedding needs both",
                         hint="pass the other encoder's file with --join FILE (clip_l is 768 wide, clip_g 1280)")
    token = token or emb.token or src.stem.split(".")[0]
    base = _width_base(emb) if len(emb.vectors) == 2 else base or _width_base(emb)
    if len(emb.vectors) == 2 and to != "sdxl":
        parts = split_embedding(emb, to, token=token)
        outputs = {dest.with_name(f"{dest.stem}.{key}{dest.suffix}"): parts[encoder]
                   for key, encoder in SDXL_KEYS.items()}
    else:
        outputs = {dest: _named(src, from_embedding, emb, to, token=token)}
    meta = {k: v for k, v in metadata.items() if not k.startswith(_STALE_PREFIXES)}
    meta.update(modelspec_metadata(metadata, base=base, adapter=TEXTUAL_INVERSION,
                                   title=source_title(metadata, token.strip("<>")), triggers=[token]))
    meta.setdefault("format", "pt")
    report = EmbeddingReport(source, to, emb.num_vectors, token if to == "diffusers" else emb.token)
    for path, tensors in outputs.items():
        save_safetensors(tensors, path, meta, hash_key=HASH_KEY)
        report.files.append(str(path))
    return report


def _load_embedding_file(src) -> tuple[dict, dict[str, str]]:
    from safetensors import safe_open

    if src.suffix != ".safetensors":
        raise UnsupportedFormat(src, "only .safetensors embeddings are converted here",
                                hint="add a pickle with `loradex add --allow-pickle` (stored as safetensors), "
                                     "then `loradex export REF DEST --format …`")
    with safe_open(str(src), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})


def _named(path, fn, *args, **kwargs):
    """``fn(*args)`` with ``path`` named in its UnsupportedFormat error instead of ``<embedding>``."""
    try:
        return fn(*args, **kwargs)
    except UnsupportedFormat as exc:
        raise UnsupportedFormat(path, exc.message.removeprefix(f"{_SRC}: "), hint=exc.hint) from None


def _detect_in(path, sd: dict) -> str:
    return _named(path, detect_embedding_format, sd)


def _width_base(emb: Embedding) -> str | None:
    """The family whose identity declares these vector widths: one encoder's (``TEXT_WIDTH``), or a
    clip_l + clip_g pair (``EMBEDDING_PAIR``: SDXL)."""
    from loradex.registry.probe.base_family import TEXT_WIDTH, embedding_pair_evidence

    if len(emb.vectors) == 2:
        widths = tuple(int(emb.vectors[encoder].shape[-1]) for encoder in SDXL_KEYS.values())
        found = embedding_pair_evidence(widths)
        return found[0][0] if found else None
    (vectors,) = emb.vectors.values()
    return TEXT_WIDTH.get(int(vectors.shape[-1]))
