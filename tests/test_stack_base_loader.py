"""load_base: tiny names, diffusers folders, HF-cache hub ids, single-file refusals; stable hashes."""

from __future__ import annotations

import hashlib
import os
import shutil

import numpy as np
import pytest
import torch

from loradex.registry.errors import NotFound, UnsafePickle, UnsupportedFormat, UsageError
from loradex.trainer.base_loader import folder_hash, load_base, tiny_hash
from loradex.trainer.tiny_pipeline import build_tiny_sd1_pipeline, save_tiny_pipeline


def _pixels(pipe):
    return pipe("the cat", num_inference_steps=2, height=32, width=32,
                generator=torch.Generator("cpu").manual_seed(0), output_type="np").images[0]


@pytest.fixture(scope="module")
def tiny_sd1_folder(tmp_path_factory):
    return save_tiny_pipeline("sd1", tmp_path_factory.mktemp("base") / "tiny-sd1-folder", seed=0)


def test_tiny_names_build_in_process_with_recipe_hash():
    pipe, info = load_base("tiny-sd1")
    assert (info.family, info.source, info.ref) == ("sd1", "tiny", "tiny-sd1")
    assert info.hash == tiny_hash("sd1", 0) == load_base("tiny-sd1")[1].hash
    assert len(info.hash) == 64
    assert load_base("tiny-sd1", seed=1)[1].hash != info.hash
    xl_pipe, xl = load_base("tiny-sdxl")
    assert xl.family == "sdxl" and xl.hash != info.hash
    assert type(xl_pipe).__name__ == "StableDiffusionXLPipeline"
    with pytest.raises(NotFound, match="unknown tiny base"):
        load_base("tiny-sd2")


def test_folder_loads_and_hash_covers_weights(tiny_sd1_folder, tmp_path):
    pipe, info = load_base(tiny_sd1_folder)
    assert (info.family, info.source) == ("sd1", "folder")
    np.testing.assert_array_equal(_pixels(pipe), _pixels(build_tiny_sd1_pipeline(seed=0)))
    # known answer: sha256 over "<rel>\0<sha256>\n" lines, sorted by path
    lines = []
    for p in sorted(tiny_sd1_folder.rglob("*")):
        if p.is_file() and p.suffix in {".json", ".safetensors", ".txt"}:
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            lines.append(f"{p.relative_to(tiny_sd1_folder).as_posix()}\0{digest}\n")
    assert info.hash == hashlib.sha256("".join(lines).encode()).hexdigest()
    # the same content elsewhere has the same hash; a changed weight changes it
    copy = shutil.copytree(tiny_sd1_folder, tmp_path / "copy")
    (copy / "README.md").write_text("not hashed")
    assert folder_hash(copy) == info.hash
    weights = next((copy / "unet").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert folder_hash(copy) != info.hash


def _fake_hf_cache(cache, repo_id, folder):
    """Lay ``folder`` out like huggingface_hub's cache: blobs named by sha256, snapshot symlinks."""
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    blobs = repo_dir / "blobs"
    blobs.mkdir()
    for p in folder.rglob("*"):
        if p.is_file():
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            shutil.copyfile(p, blobs / digest)
            link = repo_dir / "snapshots" / commit / p.relative_to(folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(blobs / digest, link.parent), link)


def test_hub_id_from_local_cache_only(tiny_sd1_folder, tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(NotFound, match=r"not in the local Hugging Face cache.*hf download someone/tiny"):
        load_base("someone/tiny")
    _fake_hf_cache(tmp_path / "hub", "someone/tiny", tiny_sd1_folder)
    pipe, info = load_base("someone/tiny")
    assert (info.ref, info.source, info.family) == ("someone/tiny", "hub", "sd1")
    # blob names are trusted as sha256: same hash as the plain folder
    assert info.hash == folder_hash(tiny_sd1_folder)
    np.testing.assert_array_equal(_pixels(pipe), _pixels(build_tiny_sd1_pipeline(seed=0)))


def test_refusals(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(UnsafePickle, match="refused"):
        load_base(ckpt)
    from safetensors.torch import save_file

    odd = tmp_path / "odd.safetensors"
    save_file({"some.weight": torch.zeros(2)}, odd)
    with pytest.raises(UsageError, match="kind_hint"):
        load_base(odd)
    (tmp_path / "not-a-pipeline").mkdir()
    with pytest.raises(UnsupportedFormat, match="model_index.json"):
        load_base(tmp_path / "not-a-pipeline")
    with pytest.raises(NotFound, match="not a file, a folder, a hub id"):
        load_base(tmp_path / "missing.safetensors")
