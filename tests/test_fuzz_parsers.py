"""Hostile input for the four parsers (issue 9): every input ends in a typed loradex error or a
result that passes an independent oracle (tests/_fuzz_fixtures.py) — never an uncaught
exception, a hang, or memory driven by a number in the input. Small hypothesis runs for CI;
bench/fuzz_parsers.py runs ≥ 100,000 inputs per parser."""

from __future__ import annotations

import json
import pickle
import random
import struct
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _fuzz_fixtures import (DTYPES, HeaderInput, Stats, header_file, load_seeds,
                            mutation_input, run_input)
from loradex.registry.errors import InvalidFile, InvalidRef, LoradexError, UntrustedData
from loradex.registry.files.pickle_scan import scan_pickle
from loradex.registry.catalog.refs import parse_ref
from loradex.registry.files.safetensors_header import parse_header, read_header

FAST = settings(max_examples=60, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


def check(target: str, inp) -> None:
    stats = Stats()
    run_input(target, inp, stats, limit=5.0)
    assert stats.findings == [], stats.findings[0]


# --- safetensors header ------------------------------------------------------------------------
ints = st.integers(min_value=-3, max_value=2**70) | st.sampled_from([0, 1, 2**63, 2**64 - 1, 2**64])
tensor_spec = st.fixed_dictionaries({
    "dtype": st.sampled_from([d for d in DTYPES if isinstance(d, str)]) | st.text(max_size=4),
    "shape": st.lists(ints, max_size=4) | st.just([]),
    "data_offsets": st.lists(ints, min_size=0, max_size=3),
})
json_value = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                      max_size=3), max_leaves=8)


@FAST
@given(st.dictionaries(st.text(max_size=6), tensor_spec | json_value, max_size=4),
       st.integers(min_value=0, max_value=4096))
def test_header_from_generated_tables(table, data_len):
    head = json.dumps(table).encode()
    check("safetensors_header", header_file(head, data_len))


@FAST
@given(st.lists(st.tuples(st.sampled_from(["F16", "F32", "BF16", "U8", "I64", "F4", "F6_E2M3"]),
                          st.lists(st.integers(0, 5), max_size=3)), min_size=1, max_size=4))
def test_header_valid_tables_are_accepted(specs):
    """Correct results, not only typed errors: well-formed tables pass and match the reference."""
    from loradex.registry.files.safetensors_header import DTYPE_BITS

    table, pos = {}, 0
    for i, (dtype, shape) in enumerate(specs):
        bits = DTYPE_BITS[dtype]
        n = 1
        for d in shape:
            n *= d
        if n * bits % 8:
            shape, n = [8], 8
        size = n * bits // 8
        table[f"t{i}"] = {"dtype": dtype, "shape": shape, "data_offsets": [pos, pos + size]}
        pos += size
    head = json.dumps(table).encode()
    header = parse_header(head, 8 + len(head) + pos)
    assert {k: (v.dtype, list(v.shape)) for k, v in header.tensors.items()} == \
        {k: (v["dtype"], v["shape"]) for k, v in table.items()}
    check("safetensors_header", header_file(head, pos))


@FAST
@given(st.binary(max_size=600))
def test_header_random_bytes(data):
    n = struct.unpack("<Q", data[:8])[0] if len(data) >= 8 else 0
    check("safetensors_header", HeaderInput(data[8:8 + n], len(data), data))


def _hostile_headers():
    ok = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    head = json.dumps(ok).encode()
    yield "length 2**64-1", struct.pack("<Q", 2**64 - 1) + head + bytes(8)
    yield "length 2**63", struct.pack("<Q", 2**63) + head + bytes(8)
    yield "length just over the limit", struct.pack("<Q", 100_000_001) + head + bytes(8)
    yield "length past the end", struct.pack("<Q", len(head) + 9) + head + bytes(8)
    yield "length 0", struct.pack("<Q", 0) + head + bytes(8)
    for name, table in {
        "negative offset": {"a": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}},
        "overlapping offsets": {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
        "offsets past the file": {"a": {"dtype": "F32", "shape": [2**62], "data_offsets": [0, 2**64]}},
        "dtype x shape overflow (2**64 elements)": {"a": {"dtype": "F64", "shape": [2**32, 2**32],
                                                          "data_offsets": [0, 8]}},
        "float shape": {"a": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}},
        "bool shape": {"a": {"dtype": "F32", "shape": [True, 2], "data_offsets": [0, 8]}},
        "metadata not strings": {"__metadata__": {"k": 1}, **ok},
        "unknown dtype": {"a": {"dtype": "F128", "shape": [2], "data_offsets": [0, 8]}},
    }.items():
        h = json.dumps(table).encode()
        yield name, struct.pack("<Q", len(h)) + h + bytes(8)
    deep = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    yield "deep JSON", struct.pack("<Q", len(deep)) + deep
    dup = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    yield "duplicate keys", struct.pack("<Q", len(dup)) + dup + bytes(8)
    bad = head.replace(b'"a"', b'"\xff\xfe"')
    yield "non-UTF-8 name", struct.pack("<Q", len(bad)) + bad + bytes(8)
    surrogate = head.replace(b'"a"', b'"\xed\xa0\x80"')
    yield "UTF-8-encoded surrogate", struct.pack("<Q", len(surrogate)) + surrogate + bytes(8)
    huge = b'{"a":{"dtype":"F32","shape":[1' + b"0" * 4000 + b",1" + b"0" * 4000 + b'],"data_offsets":[0,8]}}'
    yield "shape of two 4001-digit numbers", struct.pack("<Q", len(huge)) + huge + bytes(8)
    toolong = b'{"a":{"dtype":"F32","shape":[1' + b"0" * 5000 + b'],"data_offsets":[0,8]}}'
    yield "5001-digit shape", struct.pack("<Q", len(toolong)) + toolong + bytes(8)


@pytest.mark.parametrize("name,data", list(_hostile_headers()), ids=[n for n, _ in _hostile_headers()])
def test_hostile_header_is_a_typed_error_in_bounded_memory(name, data, tmp_path):
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidFile):
            read_header(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # nothing sized by a number in the header: at most a few times the bytes actually present
    assert peak < 16 * len(data) + (4 << 20), f"{name}: peak {peak:,} B for a {len(data):,}-byte file"


def test_huge_declared_length_reads_nothing_beyond_the_file(tmp_path):
    """A header length of 99,999,999 on a 100-byte file must not allocate 100 MB."""
    path = tmp_path / "liar.safetensors"
    path.write_bytes(struct.pack("<Q", 99_999_999) + b"{" + bytes(91))
    tracemalloc.start()
    try:
        with pytest.raises(InvalidFile, match="truncated"):
            read_header(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_many_huge_shape_dims_are_refused_quickly(tmp_path):
    """300 dims of 4001 digits (a 1.2 MB header): multiplying them out is quadratic in the digits
    (about a minute); the size check must stop at the first number larger than the file."""
    dims = ",".join(["1" + "0" * 4000] * 300)
    head = ('{"a":{"dtype":"F32","shape":[' + dims + '],"data_offsets":[0,8]}}').encode()
    path = tmp_path / "bigshape.safetensors"
    path.write_bytes(struct.pack("<Q", len(head)) + head + bytes(8))
    code = textwrap.dedent(f"""
        from loradex.registry.files.safetensors_header import read_header
        from loradex.registry.errors import InvalidFile
        try:
            read_header({str(path)!r})
        except InvalidFile:
            print("typed")
    """)
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("read_header spent > 15 s on a 1.2 MB header of huge shape numbers")
    assert out.stdout.strip() == "typed", out.stderr[-500:]


# --- pickle scanner ----------------------------------------------------------------------------
picklable = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
                         | st.binary(min_size=1, max_size=5),  # b"" in protocol < 3 imports builtins.bytes
                         lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
                         | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=10)


@FAST
@given(obj=picklable, protocol=st.integers(0, 5))
def test_pickle_of_plain_data_is_safe(obj, protocol, tmp_path_factory):
    path = tmp_path_factory.mktemp("p") / "x.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    report = scan_pickle(path)
    assert report.safe, report  # plain data imports at most _codecs.encode (bytes in protocol < 3)
    check("pickle_scan", path.read_bytes())


@FAST
@given(st.binary(max_size=400))
def test_pickle_random_bytes(data):
    check("pickle_scan", data)


@FAST
@given(st.integers(0, 2**32 - 1))
def test_pickle_mutated_seeds(seed):
    seeds = _seeds()
    check("pickle_scan", mutation_input("pickle_scan", random.Random(seed), seeds))


def _zip_pickle(tmp_path: Path) -> bytes:
    import torch

    path = tmp_path / "z.pt"
    torch.save({"w": torch.zeros(2)}, path)
    return path.read_bytes()


@pytest.mark.parametrize("damage", ["crc", "central-directory", "local-header-name"])
def test_damaged_torch_zip_is_a_typed_error(damage, tmp_path):
    data = bytearray(_zip_pickle(tmp_path))
    i = data.find(b"\x80\x02")  # inside data.pkl (stored uncompressed)
    if damage == "crc":
        data[i + 3] ^= 0xFF
    elif damage == "central-directory":
        j = data.rfind(b"PK\x01\x02")
        data[j + 1] ^= 0xFF
    elif damage == "local-header-name":
        j = data.find(b"data.pkl")
        data[j] = ord("x")
    path = tmp_path / "damaged.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(LoradexError):
        scan_pickle(path)


_SEEDS = {}


def _seeds():
    if not _SEEDS:
        _SEEDS.update(load_seeds())
    return _SEEDS


# --- prompt syntax -----------------------------------------------------------------------------
prompt_text = st.lists(st.sampled_from(list("abz09._-@:<>=, \n") + ["<lora:", "<lyco:", "te=", "unet=", "sha256:",
                                                                 "1e400", "é", "\x00"]), max_size=40).map("".join)


@FAST
@given(prompt_text)
def test_prompt_generated(prompt):
    check("prompt_syntax", prompt)


@FAST
@given(st.integers(0, 2**32 - 1))
def test_prompt_mutated(seed):
    check("prompt_syntax", mutation_input("prompt_syntax", random.Random(seed), {}))


def test_prompt_pathological_sizes_are_fast():
    for prompt in ["<lora:" * 20_000, "<lora:a:" + "9" * 20_000 + ">", "<lora:a" + ":" * 20_000 + ">",
                   "x" * 200_000 + "<lora:a>", "<lora:a:1e99999>"]:
        check("prompt_syntax", prompt)


# --- refs --------------------------------------------------------------------------------------
@FAST
@given(st.text(max_size=40))
def test_ref_generated(text):
    check("refs", text)


@FAST
@given(st.from_regex(r"[a-z0-9][a-z0-9._-]{0,10}(@((0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})|[a-z][a-z0-9]{0,5}))?",
                     fullmatch=True))
def test_ref_valid_forms_round_trip(text):
    ref = parse_ref(text)
    assert str(ref).startswith(text.partition("@")[0] + "@")
    check("refs", text)


@pytest.mark.parametrize("text", ["style\n@production", "style\n@1.0.0", "style@prod\nx", "style\n", "\nstyle@a\n"])
def test_ref_with_embedded_newline(text):
    """``$`` in NAME_RE/ALIAS_RE matches before a trailing newline: 'style\\n' must not be a name."""
    try:
        ref = parse_ref(text)
    except InvalidRef:
        return
    assert "\n" not in (ref.name or "") and "\n" not in ref.selector, f"{text!r} parsed as {ref!r}"


@FAST
@given(st.integers(0, 2**32 - 1))
def test_ref_mutated(seed):
    check("refs", mutation_input("refs", random.Random(seed), {}))


def test_multi_disk_zip_marker_is_a_typed_error(tmp_path):
    """zipfile.is_zipfile itself raises BadZipFile ("span multiple disks") when a zip64 end locator
    names another disk — before any try block around the zip scan (found by bench/fuzz_parsers.py)."""
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 1, 0, 2)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0, 0, 0, 0, 0)
    path = tmp_path / "span.pt"
    path.write_bytes(b"\x80\x02}q\x00." + locator + end)
    with pytest.raises(LoradexError):
        scan_pickle(path)


# --- what remotes and folders send (issue 15; targets in tests/_fuzz_untrusted.py) ---------------
import _fuzz_untrusted as untrusted_fuzz  # noqa: E402 - adds its targets to TARGETS

from loradex.registry.untrusted import check_schema, parse_json, parse_yaml  # noqa: E402


@pytest.mark.parametrize("target", sorted(untrusted_fuzz.NEW_TARGETS))
def test_untrusted_targets_mutated_seeds(target):
    """A few hundred mutated answers/sidecars per target (bench/fuzz_parsers.py runs ≥ 100,000)."""
    rng = random.Random(15)
    stats = Stats()
    for _ in range(250):
        run_input(target, untrusted_fuzz.mutation_input(target, rng), stats, limit=5.0)
    assert stats.findings == [], stats.findings[:3]
    assert stats.ok and stats.typed  # the mutations reach both outcomes


@pytest.mark.parametrize("target", sorted(untrusted_fuzz.NEW_TARGETS))
def test_untrusted_targets_generated(target):
    @FAST
    @given(untrusted_fuzz.hypothesis_strategy(target))
    def run(inp):
        check(target, inp)

    run()


@pytest.mark.parametrize("data, why", [
    (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
    (b'{"sizeKB": 1e999}', "not finite"),
    (b'{"a": NaN}', "not valid JSON"),
    (b'{"a": 1, "a": 2}', "duplicate key"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"a": "' + b"x" * (17 << 20) + b'"}', "cap"),
])
def test_hostile_json_is_one_typed_line(data, why):
    with pytest.raises(UntrustedData) as info:
        parse_json(data, "answer")
    assert why in str(info.value) and "\n" not in str(info.value)


def test_yaml_alias_bomb_is_refused_before_expanding():
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
    tracemalloc.start()
    try:
        with pytest.raises(UntrustedData, match="anchors and aliases"):
            parse_yaml(bomb, "README.md")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20  # 9^9 nodes were never built


def test_remote_answer_wrong_types_are_refused_by_the_declared_schema():
    schemas = untrusted_fuzz.remote_schemas()
    if "VERSION_SCHEMA" not in schemas:
        pytest.skip("no Civitai VERSION_SCHEMA in this checkout")
    version = dict(untrusted_fuzz.CIVITAI_VERSION)
    check_schema(parse_json(json.dumps(version), "civitai"), schemas["VERSION_SCHEMA"], "civitai")
    for field, value in (("id", "../../x"), ("id", -1), ("files", "abc"), ("trainedWords", {"a": 1})):
        with pytest.raises(UntrustedData, match=field):
            check_schema({**version, field: value}, schemas["VERSION_SCHEMA"], "civitai")
    bad_file = {**version["files"][0], "sizeKB": "abc"}
    with pytest.raises(UntrustedData, match="sizeKB"):
        check_schema({**version, "files": [bad_file]}, schemas["VERSION_SCHEMA"], "civitai")


def test_webui_sidecars_known_answers(tmp_path):
    from loradex.registry.folders.webui_import import read_sidecars

    model = tmp_path / "m.safetensors"
    model.write_bytes(b"")
    model.with_name("m.civitai.info").write_bytes(json.dumps(untrusted_fuzz.CIVITAI_VERSION).encode())
    model.with_name("m.json").write_bytes(json.dumps(untrusted_fuzz.A1111_META).encode())
    facts = read_sidecars(model)
    assert facts.skipped == [] and facts.triggers[:2] == ["shinkai", "sky"] and facts.extra["webui"] == untrusted_fuzz.A1111_META
    model.with_name("m.civitai.info").write_bytes(b"[" * 100_000)
    model.with_name("m.json").write_bytes(b'{"preferred weight": {"x": 1}}')
    facts = read_sidecars(model)
    assert sorted(name for name, _ in facts.skipped) == ["m.civitai.info", "m.json"]
    assert facts.extra == {} and facts.triggers == []
