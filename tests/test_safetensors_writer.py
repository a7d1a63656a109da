"""Byte-stable safetensors writes: identical content gives an identical file in any process."""

from __future__ import annotations

import hashlib
import subprocess
import sys

from safetensors import safe_open

CODE = """
import sys, torch
from loradex.registry.safetensors_writer import save_safetensors
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
    from loradex.registry.hashing import hash_file
    from loradex.registry.safetensors_header import read_header

    header = read_header(path)
    assert header.header_length % 8 == 0
    assert header.metadata["modelspec.hash_sha256"] == "0x" + hash_file(path).autov3
    with safe_open(str(path), "pt") as fh:
        assert fh.get_tensor("b").tolist() == [[0, 1, 2], [3, 4, 5]]
