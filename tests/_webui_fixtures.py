"""A small A1111-style models tree with sidecars, duplicates, collisions and refusals."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from loradex.merge.synthetic_adapters import write_random_embedding, write_random_kohya_lora

CIVITAI_INFO = {
    "id": 1234, "modelId": 99, "name": "v1.0", "description": "<p>Soft watercolor washes.</p>",
    "baseModel": "SD 1.5", "baseModelType": "Standard", "trainedWords": ["wtrclr style"],
    "model": {"name": "Watercolor Style", "type": "LORA", "nsfw": False},
    "images": [{"url": "https://example.invalid/1.png", "meta": {"prompt": "wtrclr style, a cat", "seed": 1}}],
    "files": [{"id": 5, "name": "style.safetensors", "type": "Model", "primary": True,
               "hashes": {"SHA256": "00"}}],
}
A1111_JSON = {"description": "watercolor", "sd version": "SD1", "activation text": "wtrclr, soft",
              "preferred weight": 0.7, "notes": "works best at 0.7"}
LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n")


def png_bytes(color=(200, 30, 30)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buf, format="PNG")
    return buf.getvalue()


def write_pickle_embedding(path: Path) -> Path:
    import torch

    torch.save({"string_to_param": {"*": torch.zeros(2, 768)}, "name": "old"}, path)
    return path


@dataclass
class WebuiTree:
    root: Path
    files: dict[str, Path] = field(default_factory=dict)
    preview: bytes = b""


def make_webui_tree(root: Path) -> WebuiTree:
    tree = WebuiTree(root)
    lora = root / "models" / "Lora"
    lora.mkdir(parents=True)
    style = write_random_kohya_lora(lora / "style.safetensors", rank=2, seed=1, trigger="wtrclr")
    (lora / "style.civitai.info").write_text(json.dumps(CIVITAI_INFO))
    (lora / "style.json").write_text(json.dumps(A1111_JSON))
    tree.preview = png_bytes()
    (lora / "style.preview.png").write_bytes(tree.preview)
    tree.files["style"] = style
    tree.files["copy"] = lora / "copy of style.safetensors"
    tree.files["copy"].write_bytes(style.read_bytes())  # same bytes: a duplicate
    for sub, seed in (("anime", 2), ("real", 3)):  # same file name in two folders: a collision
        (lora / sub).mkdir()
        tree.files[f"char-{sub}"] = write_random_kohya_lora(lora / sub / "Char.safetensors", rank=2, seed=seed)
    tree.files["pointer"] = lora / "pointer.safetensors"
    tree.files["pointer"].write_bytes(LFS_POINTER)
    emb = root / "embeddings"
    emb.mkdir()
    tree.files["neg"] = write_random_embedding(emb / "neg.safetensors", n_vectors=2, dim=768, seed=4)
    tree.files["old"] = write_pickle_embedding(emb / "old.pt")
    vae = root / "models" / "VAE"  # not an adapter folder: ignored
    vae.mkdir(parents=True)
    write_random_embedding(vae / "vae.safetensors", n_vectors=1, dim=8)
    return tree


class OpenCounter:
    """Counts files under ``root`` opened through ``open``/``io.open`` (pathlib uses io.open)."""

    def __init__(self, monkeypatch, root: Path):
        import builtins

        self.root = str(root.resolve())
        self.opened: list[str] = []
        real_open = io.open

        def counting_open(file, *args, **kwargs):
            if isinstance(file, (str, Path)) and str(Path(file).resolve()).startswith(self.root):
                self.opened.append(str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", counting_open)
        monkeypatch.setattr(io, "open", counting_open)
