"""The four hashes against their definitions, and the parallel one-pass reader."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct

import pytest

from loradex.registry.files.blob_store import BlobStore
from loradex.registry.files.fanout_reader import read_fanout
from loradex.registry.files.hashing import MultiHasher, hash_file


def _safetensors_bytes(n_data: int) -> bytes:
    header = json.dumps({"t": {"dtype": "U8", "shape": [n_data], "data_offsets": [0, n_data]}}).encode()
    return struct.pack("<Q", len(header)) + header + os.urandom(n_data)


@pytest.mark.parametrize("n_data", [100, (1 << 20) + 12345, 9 << 20])
def test_hashes_match_their_definitions(tmp_path, n_data):
    data = _safetensors_bytes(n_data)
    path = tmp_path / "f.safetensors"
    path.write_bytes(data)
    header_len = struct.unpack("<Q", data[:8])[0]
    h = hash_file(path)
    assert h.sha256 == hashlib.sha256(data).hexdigest() and h.autov2 == h.sha256[:10]
    window = data[0x100000:0x110000]
    assert h.autov1 == hashlib.sha256(window).hexdigest()[:8]  # sha256(b"") for files < 1 MiB
    assert h.autov3 == hashlib.sha256(data[8 + header_len:]).hexdigest()
    assert h.size == len(data)
    # the store's copy computes the same hashes and holds the same bytes
    stored = BlobStore(tmp_path / "home").add_file(path)
    assert stored.hashes == h and stored.path.read_bytes() == data
    # feeding arbitrary chunk sizes single-threaded agrees
    m = MultiHasher()
    for i in range(0, len(data), 65537):
        m.update(data[i:i + 65537])
    assert m.result() == h


def test_metadata_edit_changes_sha256_not_autov3(tmp_path):
    from loradex.merge.synthetic_adapters import write_random_kohya_lora
    from loradex.registry.files.safetensors_writer import save_safetensors
    from safetensors.torch import load_file
    from safetensors import safe_open

    a = write_random_kohya_lora(tmp_path / "a.safetensors", seed=1)
    with safe_open(str(a), "pt") as fh:
        md = dict(fh.metadata())
    save_safetensors(load_file(str(a)), tmp_path / "b.safetensors", {**md, "ss_training_comment": "edited"})
    ha, hb = hash_file(a), hash_file(tmp_path / "b.safetensors")
    assert ha.sha256 != hb.sha256 and ha.autov3 == hb.autov3


def test_a_failing_sink_raises_without_hanging():
    seen = []

    def bad(view, offset):
        if offset > 0:
            raise OSError("disk full")
        seen.append(offset)

    with pytest.raises(OSError, match="disk full"):
        read_fanout(io.BytesIO(os.urandom(10 << 20)), [bad, lambda v, o: None], chunk=1 << 20, buffers=2)
    assert seen == [0]
