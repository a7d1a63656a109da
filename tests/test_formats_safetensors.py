"""Strict safetensors header validity, and naming of files that are not models."""

from __future__ import annotations

import json
import struct
import tracemalloc
import zipfile

import pytest
from _formats_fixtures import raw_safetensors, write_raw
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loradex.registry.errors import InvalidFile, UnsupportedFormat
from loradex.registry.files.file_sniff import raise_for_non_model, sniff
from loradex.registry.probe import probe_path
from loradex.registry.files.safetensors_header import parse_header, read_header

TENSORS = {"a": ("F32", (2, 3)), "b": ("F16", (4,)), "c": ("BF16", ())}


def _file(tmp_path, data: bytes, name="f.safetensors"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _with_header(header: dict, data_len: int, *, raw: bytes | None = None) -> bytes:
    blob = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + b"\0" * data_len


def test_valid_file_and_fields(tmp_path):
    p = write_raw(tmp_path / "ok.safetensors", TENSORS, {"k": "v"})
    h = read_header(p)
    assert h.metadata == {"k": "v"} and set(h.tensors) == {"a", "b", "c"}
    assert h.tensors["a"].shape == (2, 3) and (h.tensors["a"].begin, h.tensors["a"].end) == (0, 24)
    assert h.tensors["c"].shape == () and h.tensors["c"].nbytes == 2
    assert h.data_start == 8 + h.header_length and h.file_size == p.stat().st_size == h.data_start + 34


@pytest.mark.parametrize("pad", range(0, 9))
def test_header_lengths_not_multiple_of_8_are_valid(tmp_path, pad):
    p = write_raw(tmp_path / "pad.safetensors", TENSORS, pad=" " * pad)
    lengths = {read_header(p).header_length % 8}
    assert len(lengths) == 1  # parses for every padding, aligned or not


def test_safetensors_library_agrees_on_unaligned_file(tmp_path):
    from safetensors import safe_open

    p = write_raw(tmp_path / "u.safetensors", {"x": ("F32", (3,))}, pad="   ")
    assert read_header(p).header_length % 8 != 0
    with safe_open(str(p), "pt") as f:
        assert list(f.keys()) == ["x"]


def _good_header():
    return {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}


@pytest.mark.parametrize("mutate,data_len,expect", [
    (lambda h: h["b"].update(data_offsets=[4, 8]), 12, "overlaps"),
    (lambda h: h["b"].update(data_offsets=[10, 14]), 14, "gap"),
    (lambda h: h["b"].update(shape=[2]), 12, "needs 8 bytes"),
    (lambda h: h["a"].update(dtype="F31"), 12, "unknown dtype"),
    (lambda h: h["a"].update(shape=[-2]), 12, "non-negative"),
    (lambda h: h["a"].update(shape=[True, 2]), 12, "non-negative"),
    (lambda h: h["a"].update(data_offsets=[8, 0]), 12, "data_offsets"),
    (lambda h: h["a"].pop("data_offsets"), 12, "data_offsets"),
    (lambda h: h.update(__metadata__={"n": 1}), 12, "must be strings"),
    (lambda h: h.update(__metadata__=["x"]), 12, "not an object"),
    (lambda h: None, 11, "truncated: header says 12 bytes of tensor data but the file has 11"),
    (lambda h: None, 13, "1 unexpected bytes"),
])
def test_mutated_headers_are_invalid(tmp_path, mutate, data_len, expect):
    h = _good_header()
    mutate(h)
    p = _file(tmp_path, _with_header(h, data_len))
    with pytest.raises(InvalidFile) as exc:
        read_header(p)
    assert expect in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("raw,expect", [
    (b' {"a": 1}', "does not start with '{'"),
    (b'{"\xff\xfe": {}}', "UTF-8"),
    (b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {}}', "duplicate key"),
    (b'{"a": ', "invalid JSON"),
    (b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "bad header"),
])
def test_bad_json_headers(tmp_path, raw, expect):
    p = _file(tmp_path, _with_header({}, 4, raw=raw))
    with pytest.raises(InvalidFile, match=expect.replace("(", r"\(").replace("'", "'")):
        read_header(p)


def test_huge_header_length_rejected_without_allocating(tmp_path):
    for n in (2**63, 100_000_001, 10_000):
        p = _file(tmp_path, struct.pack("<Q", n) + b"{}" + b" " * 50)
        tracemalloc.start()
        with pytest.raises(InvalidFile, match="header length"):
            read_header(p)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 1_000_000


def test_reads_only_the_header(tmp_path):
    """A 200 MB (sparse) file costs the size of its header in memory, not its data."""
    n = 50_000_000
    head = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
    p = tmp_path / "big.safetensors"
    with open(p, "wb") as fh:
        fh.write(struct.pack("<Q", len(head)) + head)
        fh.truncate(8 + len(head) + 4 * n)
    tracemalloc.start()
    h = read_header(p)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert h.tensors["w"].shape == (n,) and peak < 1_000_000


def test_truncated_at_several_points(tmp_path):
    full = raw_safetensors(TENSORS, {"k": "v"})
    n = struct.unpack("<Q", full[:8])[0]
    for cut in (0, 3, 8, 9, 8 + n // 2, 8 + n - 1, 8 + n, 8 + n + 5, len(full) - 1):
        p = _file(tmp_path, full[:cut], f"cut{cut}.safetensors")
        with pytest.raises(InvalidFile) as exc:
            probe_path(p)
        assert "\n" not in str(exc.value)
    with pytest.raises(InvalidFile, match="truncated: header says 34 bytes of tensor data but the file has 33"):
        read_header(_file(tmp_path, full[:-1]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_invalid_file(tmp_path, data):
    p = _file(tmp_path, data, "r.safetensors")
    try:
        read_header(p)
    except InvalidFile:
        pass
    try:
        probe_path(p)
    except InvalidFile:  # UnsupportedFormat and UnsafePickle are InvalidFile too
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=255))
def test_byte_flips_of_a_valid_file(tmp_path, pos, value):
    data = bytearray(raw_safetensors(TENSORS, {"k": "v"}))
    data[pos % len(data)] = value
    p = _file(tmp_path, bytes(data), "m.safetensors")
    try:
        h = read_header(p)
        assert h.data_start + sum(t.nbytes for t in h.tensors.values()) == h.file_size
    except InvalidFile:
        pass
    try:
        parse_header(bytes(data[8:]), len(data))
    except InvalidFile:
        pass


# --- what is not a model --------------------------------------------------------------------------
def test_sniff_names_non_model_files(tmp_path):
    cases = {
        "lfs.safetensors": (b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"ab" * 32 + b"\nsize 3192\n",
                            "lfs-pointer", "Git LFS pointer, not the file"),
        "page.safetensors": (b"\n<!DOCTYPE html><html><body>Sign in</body></html>", "html", "HTML page"),
        "err.safetensors": (b'{"error": "Model not found"}', "json", "JSON text"),
        "empty.safetensors": (b"", "empty", "empty file"),
        "notes.safetensors": (b"hello world\n", "text", "text file"),
        "blob.bin": (bytes(range(200, 256)) * 4, "unknown", "not a model file"),
    }
    for name, (data, kind, msg) in cases.items():
        p = _file(tmp_path, data, name)
        assert sniff(p).kind == kind, name
        with pytest.raises(InvalidFile) as exc:
            probe_path(p, allow_pickle=True)
        assert msg in str(exc.value) and "\n" not in str(exc.value), name
    assert "Model not found" in sniff(tmp_path / "err.safetensors").detail
    with pytest.raises(InvalidFile, match="is a directory"):
        probe_path(tmp_path)
    with pytest.raises(InvalidFile, match="no such file"):
        probe_path(tmp_path / "missing.safetensors")


def test_sniff_model_containers(tmp_path):
    import pickle

    z = tmp_path / "m.pt"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
    assert sniff(z).kind == "torch-zip" and raise_for_non_model(z).kind == "torch-zip"
    other = tmp_path / "o.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(UnsupportedFormat, match="not a torch file"):
        raise_for_non_model(other)
    raw = _file(tmp_path, pickle.dumps({"a": 1}, protocol=4), "r.ckpt")
    assert sniff(raw).kind == "pickle"
    assert sniff(write_raw(tmp_path / "s.safetensors", TENSORS)).kind == "safetensors"
