"""Byte-stable safetensors writes: identical content gives an identical file in any process."""

from __future__ import annotations

import hashlib
import subprocess
import sys

from safetensors import safe_open

CODE = """
import sys, torch
from loradex.registry.files.safetensors_writer import save_safetensors
sd = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(3, dtype=torch.float16)}
md = {f"key{i}": str(i) for i in range(40)}
save_safetensors(sd, sys.argv[1], md, hash_key="modelspec.hash_sha256")
"""


def test_same_content_same_bytes_across_processes(tmp_path):
    digests = set()
    for i in range(3):  # each process gets its own hash-map seed in safetensors
        path = tmp_path / f"out{i}.safetensors"
        subprocess.run([sys.executable, "-c", CODE, str(path)], check=True)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1
    from loradex.registry.files.hashing import hash_file
    from loradex.registry.files.safetensors_header import read_header

    header = read_header(path)
    assert header.header_length % 8 == 0
    assert header.metadata["modelspec.hash_sha256"] == "0x" + hash_file(path).autov3
    with safe_open(str(path), "pt") as fh:
        assert fh.get_tensor("b").tolist() == [[0, 1, 2], [3, 4, 5]]


def test_hashes_kept_for_the_blob_store_match_a_fresh_read(tmp_path):
    """save_safetensors hashes the file while writing it; the blob store's move path uses those
    hashes instead of reading the file again — they must be the ones a read gives, also past
    AutoV1's 1 MiB offset, and forgotten when the file is no longer the one written."""
    import os

    import torch

    from loradex.registry.files.hashing import hash_file
    from loradex.registry.files.safetensors_writer import hashes_of_written, save_safetensors

    big = tmp_path / "big.safetensors"
    save_safetensors({"w": torch.arange(600_000, dtype=torch.float32)}, big, {"k": "v"}, hash_key="h")
    assert hashes_of_written(big) == hash_file(big)
    assert hashes_of_written(big) is None  # given once

    edited = tmp_path / "edited.safetensors"
    save_safetensors({"w": torch.ones(4)}, edited)
    with open(edited, "r+b") as fh:  # same size, other bytes, later mtime
        fh.seek(-1, os.SEEK_END)
        fh.write(b"\x01")
    os.utime(edited, ns=(0, os.stat(edited).st_mtime_ns + 1_000_000))
    assert hashes_of_written(edited) is None


def test_merge_output_moved_into_the_store_has_the_hashes_of_its_bytes(tmp_path):
    """A merge result is renamed into the blob store with the writer's hashes: the blob's name,
    the catalog's recorded hashes and a fresh read of the blob agree, and no copy is left."""
    from loradex.merge.catalog_merge import merge_versions
    from loradex.merge.synthetic_adapters import write_random_kohya_lora
    from loradex.registry.catalog.adding import add_file
    from loradex.registry.catalog.store import Catalog
    from loradex.registry.files.hashing import hash_file

    catalog = Catalog(tmp_path / "home")
    for i in range(2):
        path = tmp_path / f"in{i}.safetensors"
        write_random_kohya_lora(path, seed=i)
        add_file(catalog, path, name=f"in{i}")
    result = merge_versions(catalog, ["in0:0.7", "in1:0.4"], "svd", rank=4, name="mix")
    version = result.version
    blob = catalog.blobs.path_for(version.sha256)
    fresh = hash_file(blob)
    assert fresh.sha256 == version.sha256 and fresh.autov3 == version.autov3 and fresh.size == version.size
    assert list((tmp_path / "home" / "tmp").iterdir()) == []


def test_autov3_hashed_during_serialisation_equals_the_data_sections_hash():
    """AutoV3 is hashed from the tensors while safetensors serialises them, in a predicted order
    that the header then confirms; a kohya LoRA (float32 alphas, float16 factors) takes that path,
    and any other mix of dtypes still gets the hash of the bytes actually written."""
    import hashlib
    import json

    import torch

    from loradex.registry.files.safetensors_writer import _data_order_key, deterministic_safetensors_parts

    kohya = {}
    for i in range(5):
        kohya[f"lora_unet_m{i}.alpha"] = torch.tensor(4.0)
        kohya[f"lora_unet_m{i}.lora_down.weight"] = torch.randn(4, 8).half()
        kohya[f"lora_unet_m{i}.lora_up.weight"] = torch.randn(6, 4).half()
    mixed = {"z": torch.ones(2, dtype=torch.float64), "c": torch.ones(3).bfloat16(), "u": torch.ones(3, dtype=torch.uint8),
             "b": torch.tensor(1.0), "e": torch.ones(0), "i": torch.ones(2, dtype=torch.int32),
             "g": torch.ones(2, requires_grad=True), "a": torch.ones(2, 2).half()}
    for sd in (kohya, mixed):
        head, data, autov3 = deterministic_safetensors_parts(sd)
        assert autov3 == hashlib.sha256(data).hexdigest()
    head, _, _ = deterministic_safetensors_parts(kohya)
    header = json.loads(head[8:])
    header.pop("__metadata__", None)
    in_file = sorted(header, key=lambda k: header[k]["data_offsets"][0])
    assert in_file == sorted(kohya, key=lambda k: _data_order_key(k, kohya[k]))
