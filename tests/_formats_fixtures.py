"""Shared test helpers for adapter files: corpus location and generated files at real shapes.

``write_kohya_from_layout`` turns a shape-only layout (``../shared/corpus/layouts/*.json``: key →
{"shape", "dtype": "torch.float16"}) into a real kohya safetensors file with random weights and
the rank dimension reduced, so tests run at real key layouts and module widths in a few MB.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
CORPUS_FILES = CORPUS / "files"
LAYOUTS = CORPUS / "layouts"
SD15_LAYOUT = LAYOUTS / "kohya_sd15_lora_layout_shinkai.json"
SDXL_LAYOUT = LAYOUTS / "kohya_sdxl_lora_layout_AlienStyle.json"


def corpus_available() -> bool:
    return CORPUS_FILES.is_dir()


def write_kohya_from_layout(layout_json, out_path, rank: int = 2, seed: int = 0, *, alpha: float | None = None,
                            metadata: dict[str, str] | None = None) -> dict[str, tuple[int, ...]]:
    """Write a kohya LoRA with the layout's keys, its widths and ``rank``; return key → shape written.

    ``lora_down`` [r, in(, k, k)] and ``lora_up`` [out, r(, 1, 1)] get their rank dimension set to
    ``rank``; ``.alpha`` is ``alpha`` (default: ``rank``, i.e. scale 1). Weights are seeded normal
    values scaled by 0.01, in the layout's dtype.
    """
    import torch
    from safetensors.torch import save_file

    layout = json.loads(Path(layout_json).read_text())
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for key in sorted(layout):
        spec = layout[key]
        dtype = getattr(torch, spec["dtype"].removeprefix("torch."))
        shape = list(spec["shape"])
        if key.endswith(".lora_down.weight"):
            shape[0] = rank
        elif key.endswith(".lora_up.weight"):
            shape[1] = rank
        if key.endswith(".alpha"):
            tensors[key] = torch.tensor(float(alpha if alpha is not None else rank), dtype=dtype)
        else:
            tensors[key] = (torch.randn(shape, generator=gen) * 0.01).to(dtype)
    md = {"ss_network_module": "networks.lora", "ss_network_dim": str(rank),
          "ss_network_alpha": str(float(alpha if alpha is not None else rank))}
    md.update(metadata or {})
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_path), metadata=md)
    return {k: tuple(v.shape) for k, v in tensors.items()}


def raw_safetensors(tensors: dict[str, tuple[str, tuple[int, ...]]], metadata: dict | None = None, *,
                    pad: str = "") -> bytes:
    """Bytes of a safetensors file with zero-filled data, header written by hand (no alignment)."""
    from loradex.registry.files.safetensors_header import DTYPE_BITS

    header: dict = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    pos = 0
    for name, (dtype, shape) in tensors.items():
        n = 1
        for d in shape:
            n *= d
        size = n * DTYPE_BITS[dtype] // 8
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + size]}
        pos += size
    blob = (json.dumps(header) + pad).encode()
    return struct.pack("<Q", len(blob)) + blob + b"\0" * pos


def write_raw(path, tensors, metadata=None, *, pad: str = "") -> Path:
    path = Path(path)
    path.write_bytes(raw_safetensors(tensors, metadata, pad=pad))
    return path


def write_tiny_kohya_lora(path, metadata: dict | None = None) -> Path:
    """A two-module kohya LoRA (one UNet, one text-encoder module, rank 4, F16 zeros): the
    smallest file every command takes for a real adapter."""
    tensors = {}
    for module, width in (("lora_unet_down_blocks_0_attentions_0_proj_in", 320),
                          ("lora_te_text_model_encoder_layers_0_self_attn_q_proj", 768)):
        tensors[f"{module}.lora_down.weight"] = ("F16", (4, width))
        tensors[f"{module}.lora_up.weight"] = ("F16", (width, 4))
        tensors[f"{module}.alpha"] = ("F16", ())
    return write_raw(path, tensors, metadata or {"ss_output_name": "style"})
