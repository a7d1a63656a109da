"""The shared validation layer for outside data (registry/untrusted.py): caps, schemas, names."""

from __future__ import annotations

import os

import pytest

from loradex.registry.errors import LoradexError, UntrustedData
from loradex.registry.untrusted import (
    check_schema, hex_digest, inside, parse_json, parse_yaml, positive_int,
    read_json_file, safe_relative_name,
)


def test_untrusted_data_is_a_one_line_user_error():
    exc = UntrustedData("https://x/api", "field id: 'a' is not of type 'integer'")
    assert isinstance(exc, LoradexError) and exc.exit_code == 1
    assert str(exc) == "https://x/api: field id: 'a' is not of type 'integer'"


@pytest.mark.parametrize("text, why", [
    ("[" * 100_000, "nested deeper"),
    ('{"a":' * 70 + "1" + "}" * 70, "nested deeper"),
    ('{"sizeKB": 1e999}', "not finite"),
    ('{"sizeKB": NaN}', "not valid JSON"),
    ('{"a": 1, "a": 2}', "duplicate key"),
    ("{'a': 1}", "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
])
def test_json_that_breaks_a_cap_or_the_grammar_is_refused(text, why):
    with pytest.raises(UntrustedData, match=why):
        parse_json(text, "answer")


def test_json_size_cap_is_checked_before_parsing():
    with pytest.raises(UntrustedData, match="over the 10-byte cap"):
        parse_json('{"a": "0123456789"}', "answer", max_bytes=10)


def test_json_within_the_caps_parses_exactly():
    assert parse_json('\ufeff{"a": [1, 2.5, null, true, "x"]}', "s") == {"a": [1, 2.5, None, True, "x"]}
    # brackets inside strings do not count as nesting
    assert parse_json('{"s": "' + "[" * 500 + '"}', "s") == {"s": "[" * 500}


def test_json_file_reads_no_more_than_the_cap(tmp_path):
    big = tmp_path / "big.json"
    big.write_text('{"a": "' + "x" * 5000 + '"}')
    with pytest.raises(UntrustedData, match=str(big)):
        read_json_file(big, max_bytes=1000)
    with pytest.raises(UntrustedData, match="cannot read"):
        read_json_file(tmp_path / "missing.json")


def test_yaml_alias_bomb_is_refused_before_expansion():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(8))
    assert len(bomb) < 1000  # expands to 10^9 leaves
    with pytest.raises(UntrustedData, match="aliases"):
        parse_yaml(bomb, "README.md")


@pytest.mark.parametrize("text, why", [
    ("a: " + "[" * 200 + "]" * 200, "nested deeper"),
    ("a: [1, 2\nb: {", "not valid YAML"),
    ("- x\n" * 200_001, "more than"),
])
def test_yaml_that_breaks_a_cap_or_the_grammar_is_refused(text, why):
    with pytest.raises(UntrustedData, match=why):
        parse_yaml(text, "README.md", max_bytes=10 << 20)


def test_yaml_front_matter_becomes_plain_json_values():
    got = parse_yaml("license: mit\ntags: [lora, sd]\ndate: 2024-05-01\n1: one\n", "README.md")
    assert got == {"license": "mit", "tags": ["lora", "sd"], "date": "2024-05-01", "1": "one"}


def test_schema_error_names_the_field_path():
    schema = {"type": "object", "required": ["files"], "properties": {"files": {"type": "array", "items": {
        "type": "object", "properties": {"id": {"type": "integer"}}}}}}
    check_schema({"files": [{"id": 3}]}, schema, "v1")
    with pytest.raises(UntrustedData, match=r"^v1: field files/1/id: 'x' is not of type 'integer'$"):
        check_schema({"files": [{"id": 3}, {"id": "x"}]}, schema, "v1")
    with pytest.raises(UntrustedData, match=r"field \(top level\): 'files' is a required property"):
        check_schema({}, schema, "v1")


def test_digests_and_ids_from_outside():
    good = "AB" * 32
    assert hex_digest(good, "s") == "ab" * 32
    assert hex_digest("0123456789", "s", lengths=(10,)) == "0123456789"
    for bad in ("../" + "a" * 61, "g" * 64, "a" * 63, 12, None, "a" * 64 + "/"):
        with pytest.raises(UntrustedData):
            hex_digest(bad, "s")
    assert positive_int(7, "s") == 7 and positive_int("42", "s") == 42
    for bad in ("../1", -1, 0, True, 1.5, "1e3", "٣", 2**64, "9" * 30):
        with pytest.raises(UntrustedData):
            positive_int(bad, "s")


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../b", "..", ".", "", "a\x00b", "C:x",
                                  "a\\..\\b", "x" * 256, "a\nb"])
def test_names_that_could_leave_the_folder_are_refused(name):
    with pytest.raises(UntrustedData):
        safe_relative_name(name, "state", allow_dirs=True)


def test_relative_names_inside_the_folder_are_kept():
    assert safe_relative_name("Lora/style v2.safetensors", "s", allow_dirs=True) == "Lora/style v2.safetensors"
    with pytest.raises(UntrustedData):
        safe_relative_name("Lora/style.safetensors", "s")  # a bare name was wanted


def test_inside_resolves_links_before_comparing(tmp_path):
    home = tmp_path / "home"
    (home / "downloads").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, home / "downloads" / "link")
    assert inside(home / "downloads" / "x.part", home) == (home / "downloads" / "x.part").resolve()
    for path in (home / "downloads" / "link" / "x", home / ".." / "outside", home, tmp_path / "homework"):
        with pytest.raises(ValueError):
            inside(path, home)


def test_lone_surrogates_are_refused_but_pairs_are_characters():
    assert parse_json('{"s": "\\ud83d\\ude00"}', "s") == {"s": "\U0001F600"}
    for text in ('{"s": "\\ud800"}', '{"\\udcff": 1}'):
        with pytest.raises(UntrustedData, match="lone surrogate"):
            parse_json(text, "s")
    with pytest.raises(UntrustedData, match="lone surrogate"):
        parse_yaml('s: "\\ud800"', "README.md")


def test_a_long_refused_name_keeps_its_tail_in_the_message():
    name = "/" + "d" * 300 + "/victim.txt"
    with pytest.raises(UntrustedData, match=r"victim\.txt'"):
        safe_relative_name(name, "state", allow_dirs=True)
