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
                                      f"{sorted(emb.vectors)}", hint="use split_sdxl() first")
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
def _sdxl_read(sd: dict) -> Embedding:
    return Embedding({encoder: sd[key] for key, encoder in SDXL_KEYS.items()})


def _sdxl_write(emb: Embedding, token: str | None) -> dict:
    if set(emb.vectors) != set(SDXL_KEYS.values()):
        raise UnsupportedFormat(_SRC, f"SDXL embeddings need vectors for both text encoders, got {sorted(emb.vectors)}",
                                hint="use join_sdxl(clip_l, clip_g)")
    if emb.num_vectors < 1:  # num_vectors raises when the two encoders disagree
        raise UnsupportedFormat(_SRC, "empty embedding")
    return {key: _as_matrix(emb.vectors[encoder]) for key, encoder in SDXL_KEYS.items()}


register_embedding_format("sdxl", lambda sd: set(sd) == set(SDXL_KEYS), _sdxl_read, _sdxl_write)


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


def split_sdxl(sd: dict, to: str = "diffusers", *, token: str | None = None) -> dict[str, dict]:
    """SDXL ``clip_l``/``clip_g`` → one single-encoder dict per text encoder (load the first with
    text_encoder/tokenizer, the second with text_encoder_2/tokenizer_2)."""
    emb = to_embedding(sd, token=token)
    return {encoder: from_embedding(Embedding({"text_encoder": t}, emb.token), to, token=token)
            for encoder, t in emb.vectors.items()}


def join_sdxl(clip_l: dict, clip_g: dict) -> dict:
    """Two single-encoder embeddings (any layout) → SDXL ``clip_l``/``clip_g``."""
    l_emb, g_emb = to_embedding(clip_l), to_embedding(clip_g)
    joined = Embedding({"text_encoder": _single(l_emb, "clip_l"), "text_encoder_2": _single(g_emb, "clip_g")})
    return from_embedding(joined, "sdxl")


@dataclass
class EmbeddingReport:
    source_format: str
    target_format: str
    num_vectors: int
    token: str | None
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def convert_embedding_file(src, dest, to: str, *, token: str | None = None) -> EmbeddingReport:
    """Convert a ``.safetensors`` embedding and write it atomically. SDXL sources converted to a
    single-encoder layout become two files, ``<dest stem>.clip_l`` and ``.clip_g``. The token of
    a diffusers target defaults to the source file's stem (A1111 names embeddings by file name)."""
    from pathlib import Path

    from safetensors.torch import load_file

    from loradex.registry.safetensors_writer import save_safetensors

    src, dest = Path(src), Path(dest)
    if src.suffix != ".safetensors":
        raise UnsupportedFormat(src, "only .safetensors embeddings are converted here",
                                hint="pickled .pt/.bin files are loaded by `add --allow-pickle` first")
    sd = load_file(str(src))
    source = detect_embedding_format(sd)
    emb = to_embedding(sd, token=token)
    token = token or emb.token or src.stem
    if source == "sdxl" and to != "sdxl":
        outputs = {dest.with_name(f"{dest.stem}.{key}{dest.suffix}"): out
                   for key, out in zip(SDXL_KEYS, split_sdxl(sd, to, token=token).values())}
    else:
        outputs = {dest: from_embedding(emb, to, token=token)}
    report = EmbeddingReport(source, to, emb.num_vectors, token if to == "diffusers" else emb.token)
    for path, tensors in outputs.items():
        save_safetensors(tensors, path, {"format": "pt"})
        report.files.append(str(path))
    return report
