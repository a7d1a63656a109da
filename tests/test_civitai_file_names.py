"""safe_file_name: the API's file name (chosen by the server) becomes one plain file name in the
download directory, or the fallback (end-to-end pulls with hostile names: test_hostile_remotes.py)."""

from __future__ import annotations

import pytest

from loradex.registry.remotes.civitai import safe_file_name

FALLBACK = "civitai-5.safetensors"


@pytest.mark.parametrize("name,expected", [
    ("style.safetensors", "style.safetensors"),
    ("../../evil.safetensors", "evil.safetensors"),
    ("a/../../evil.safetensors", "evil.safetensors"),
    ("/tmp/abs.safetensors", "abs.safetensors"),
    ("C:\\dir\\evil.safetensors", "evil.safetensors"),
    ("C:evil.safetensors", "evil.safetensors"),
    ("\\\\server\\share\\x.pt", "x.pt"),
    ("evil\x00.safetensors", "evil.safetensors"),
    ("two\nlines\t.pt", "twolines.pt"),
    ("..", FALLBACK), (".", FALLBACK), ("dir/..", FALLBACK), (".hidden.safetensors", FALLBACK),
    ("", FALLBACK), (None, FALLBACK), ("\x00", FALLBACK), ("C:", FALLBACK),
    ("é" * 121 + ".pt", FALLBACK),  # 245 UTF-8 bytes: no room for ".part"
    ("é" * 100 + ".pt", "é" * 100 + ".pt"),
])
def test_safe_file_name(name, expected):
    assert safe_file_name(name, FALLBACK) == expected
