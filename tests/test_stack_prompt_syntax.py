"""Prompt syntax: A1111 <lora:…> tags with catalog refs, clean prompt, error columns."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loradex.merge.conventions.prompt_syntax import (
    caret_lines,
    check_refs,
    find_embedding_tokens,
    parse_prompt,
)
from loradex.registry.errors import NotFound, PromptSyntaxError

# (prompt, [(name, ref, te, unet)], clean prompt)
PARSE_CASES = [
    ("a cat", [], "a cat"),
    ("a cat <lora:style:0.7>", [("style", None, 0.7, 0.7)], "a cat"),
    ("<lora:style>, a cat", [("style", None, 1.0, 1.0)], "a cat"),
    ("a cat, <lora:style@1.2.0:0.8>, on a hill", [("style", "1.2.0", 0.8, 0.8)], "a cat, on a hill"),
    ("a cat <lora:style@production:-0.5> on a hill", [("style", "production", -0.5, -0.5)],
     "a cat on a hill"),
    ("x <lora:s@latest:.5>", [("s", "latest", 0.5, 0.5)], "x"),
    ("x <lora:s:0.5:1.2>", [("s", None, 0.5, 1.2)], "x"),
    ("x <lora:s:te=0.5>", [("s", None, 0.5, 0.5)], "x"),          # unet defaults to te
    ("x <lora:s:unet=0.3>", [("s", None, 1.0, 0.3)], "x"),        # te defaults to 1
    ("x <lora:s:te=0.2:unet=0.9>", [("s", None, 0.2, 0.9)], "x"),
    ("x <lora:s:0.4:unet=1e-1>", [("s", None, 0.4, 0.1)], "x"),
    ("x <lora:s: 0.4 : unet = 2 >", [("s", None, 0.4, 2.0)], "x"),
    ("x <lyco:my_loha-v2.1:0.6>", [("my_loha-v2.1", None, 0.6, 0.6)], "x"),
    ("x <LORA:s:+1.5>", [("s", None, 1.5, 1.5)], "x"),
    ("x <lora:sha256:ABCD1234ef:0.9>", [("sha256:abcd1234ef", None, 0.9, 0.9)], "x"),
    ("x <lora:sha256:0.9>", [("sha256", None, 0.9, 0.9)], "x"),  # an adapter called "sha256"
    ("<lora:a:1> <lora:b:0.5>, a cat, <lora:c:2>",
     [("a", None, 1.0, 1.0), ("b", None, 0.5, 0.5), ("c", None, 2.0, 2.0)], "a cat"),
    ("a cat <lora:a:1>, <lora:b:1> hill", [("a", None, 1, 1), ("b", None, 1, 1)], "a cat, hill"),
    ("a (cat:1.2) <lora:a:1> [dog:0.5]", [("a", None, 1, 1)], "a (cat:1.2) [dog:0.5]"),
    ("line one\n<lora:a:1>\nline two", [("a", None, 1, 1)], "line one\n\nline two"),
    ("a <my-style> cat", [], "a <my-style> cat"),
    ("a <hypernet:x:1> cat", [], "a <hypernet:x:1> cat"),  # other networks stay text
]


@pytest.mark.parametrize("prompt,loras,clean", PARSE_CASES)
def test_parse(prompt, loras, clean):
    parsed = parse_prompt(prompt)
    assert [(t.name, t.ref, t.te_weight, t.unet_weight) for t in parsed.loras] == loras
    assert parsed.clean_prompt == clean
    for tag in parsed.loras:  # spans point at the tag text itself
        assert prompt[tag.start] == "<" and prompt[tag.end - 1] == ">"
        assert prompt[tag.start:tag.end].lower().startswith(f"<{tag.kind}:")


# (prompt, 1-based column of the problem, fragment of the message)
ERROR_CASES = [
    ("a <lora:style:0.5", 3, "unclosed"),
    ("a <lora:style:0.5 <lora:b:1>", 3, "unclosed"),
    ("<lora::0.5>", 7, "empty adapter name"),
    ("<lora:>", 7, "empty adapter name"),
    ("ab <lora: :1>", 11, "empty adapter name"),
    ("<lora:Style:1>", 7, "lower-case"),
    ("<lora:sty le:1>", 10, "invalid adapter name"),
    ("<lora:_x:1>", 7, "invalid adapter name"),
    ("<lora:x@:1>", 9, "nothing after '@'"),
    ("<lora:x@Prod:1>", 9, "neither a version"),
    ("<lora:x@@a:1>", 9, "neither a version"),
    ("<lora:@1.0.0:1>", 7, "empty adapter name"),
    ("<lora:x:abc>", 9, "not a number"),
    ("<lora:x:0.5:>", 13, "empty weight"),
    ("<lora:x::1>", 9, "empty weight"),
    ("<lora:x:1.2.3>", 9, "not a number"),
    ("<lora:x:nan>", 9, "not a number"),
    ("<lora:x:1e999>", 9, "not finite"),
    ("<lora:x:1:2:3>", 13, "too many fields"),
    ("<lora:x:dyn=4>", 9, "unknown key 'dyn'"),
    ("<lora:x:te=>", 12, "empty weight"),
    ("<lora:x:te= abc>", 13, "not a number"),
    ("<lora:x:0.5:te=1>", 13, "te weight given twice"),
    ("<lora:x:0.2:0.3:unet=1>", 17, "unet weight given twice"),
    ("<lora:x:unet=1:0.2:0.3>", 20, "too many fields"),  # 0.2 fills te, nothing is left for 0.3
    ("<lora:sha256:abcd:1>", 14, "at least 8 hex digits"),
]


@pytest.mark.parametrize("prompt,column,fragment", ERROR_CASES)
def test_errors_point_at_the_column(prompt, column, fragment):
    with pytest.raises(PromptSyntaxError) as info:
        parse_prompt(prompt)
    assert info.value.column == column, str(info.value)
    assert fragment in str(info.value)
    assert f"column {column}" in str(info.value)
    assert info.value.prompt == prompt


def test_caret_lines_marks_the_column_on_its_line():
    prompt = "first line\nsecond <lora:x:zz>"
    with pytest.raises(PromptSyntaxError) as info:
        parse_prompt(prompt)
    assert caret_lines(prompt, info.value.column) == "second <lora:x:zz>\n" + " " * 15 + "^"


def test_ref_string_and_check_refs():
    prompt = "a <lora:style@production:0.5> b <lora:ghost:1> <lora:sha256:deadbeef00>"
    parsed = parse_prompt(prompt)
    assert [t.ref_string for t in parsed.loras] == ["style@production", "ghost@latest",
                                                    "sha256:deadbeef00"]
    known = {"style@production": "style@1.1.0", "sha256:deadbeef00": "x@1.0.0"}

    def resolve(ref):
        if ref not in known:
            raise NotFound(f"no adapter named {ref.split('@')[0]!r}")
        return known[ref]

    with pytest.raises(PromptSyntaxError) as info:
        check_refs(prompt, parsed, resolve)
    assert info.value.column == prompt.index("ghost") + 1
    assert "ghost" in str(info.value)
    del parsed.loras[1]
    assert check_refs(prompt, parsed, resolve) == ["style@1.1.0", "x@1.0.0"]


def test_embedding_tokens():
    prompt = "A Wtrclr painting of <my-style>, <unknown-thing>, wtrclr2 <lora:wtrclr:1>"
    found = find_embedding_tokens(prompt, ["wtrclr", "<my-style>"])
    assert [(e.token, e.known, prompt[e.start:e.end]) for e in found] == [
        ("wtrclr", True, "Wtrclr"),
        ("<my-style>", True, "<my-style>"),
        ("<unknown-thing>", False, "<unknown-thing>"),
        ("wtrclr", True, "wtrclr"),  # inside the tag: find_embedding_tokens is plain text search
    ]
    # parse_prompt ignores what lies inside lora tags
    parsed = parse_prompt(prompt, known_tokens=["wtrclr", "<my-style>"])
    assert [e.token for e in parsed.embedding_tokens] == ["wtrclr", "<my-style>", "<unknown-thing>"]
    assert parsed.clean_prompt == "A Wtrclr painting of <my-style>, <unknown-thing>, wtrclr2"


ALPHABET = st.sampled_from(list("<>:@=,. -_0123456789eE+abstlorayc\n") + ["<lora:", "<lyco:", "te=",
                                                                        "unet=", "sha256:", "@1.2.0"])


@settings(max_examples=400, deadline=None)
@given(st.lists(ALPHABET, max_size=30).map("".join) | st.text(max_size=40))
def test_random_strings_parse_or_raise_prompt_syntax_error(prompt):
    try:
        parsed = parse_prompt(prompt, known_tokens=["te", "<a>"])
    except PromptSyntaxError as exc:
        assert 1 <= exc.column <= len(prompt)
        return
    for tag in parsed.loras:
        assert 0 <= tag.start < tag.end <= len(prompt)
    # no complete tag survives into the clean prompt
    assert parse_prompt(parsed.clean_prompt).loras == []
