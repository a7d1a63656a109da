"""A1111 / Forge generation parameters (the ``parameters`` text of their PNGs) as a dict.

The text is the prompt, an optional ``Negative prompt: …`` part, and a last line of settings
``Steps: 20, Sampler: Euler a, …, Model hash: 6ce0161689, Model: v1-5, Lora hashes: "a: 0123…",
TI hashes: "e: …", Hashes: {…}, Civitai resources: […]``: ``KEY: VALUE`` pairs split on commas,
a value either quoted (A1111 quotes one holding commas), JSON (``[…]`` / ``{…}``: Forge's
``Hashes``, Civitai's ``Civitai resources``), or plain up to the next comma. The models are then
read by ``civitai_generation`` (the keys are the same facts under A1111's spelling).
"""

from __future__ import annotations

import json
import re

from ..errors import UntrustedData
from ..remotes.resolve import ModelNeed
from ..untrusted import check_shape
from .civitai_generation import needs_from_generation

MAX_PARAMETERS = 1 << 20  # characters of one image's parameters (real ones are < 10 kB)
KEY_RE = re.compile(r"\s*([A-Za-z][\w \-/]{0,63}):\s*")


def looks_like_parameters(text: str) -> bool:
    last = text.strip().rsplit("\n", 1)[-1]
    return bool(re.match(r"\s*Steps:\s*\d", last)) or "Model hash:" in last


def parse_parameters(text: str, source: str) -> dict:
    """``{"prompt", "negativePrompt", <settings key>: value…}``; JSON values parsed (capped)."""
    if len(text) > MAX_PARAMETERS:
        raise UntrustedData(source, f"parameters text of {len(text)} characters, over the {MAX_PARAMETERS} cap")
    lines = text.strip().split("\n")
    settings_line = lines[-1] if len(lines) > 1 or looks_like_parameters(lines[-1]) else ""
    if settings_line and not looks_like_parameters(settings_line):
        settings_line = ""
    body = lines[:-1] if settings_line else lines
    prompt, negative, in_negative = [], [], False
    for line in body:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    out = {"prompt": "\n".join(prompt).strip(), "negativePrompt": "\n".join(negative).strip()}
    out.update(_settings(settings_line, source))
    return out


def _settings(line: str, source: str) -> dict:
    out: dict = {}
    pos = 0
    while pos < len(line):
        m = KEY_RE.match(line, pos)
        if not m:
            break  # the rest is not KEY: VALUE (a prompt line that only looked like settings)
        key, pos = m.group(1).strip(), m.end()
        if pos < len(line) and line[pos] in "[{":
            value, pos = _json_value(line, pos, source, key)
        elif pos < len(line) and line[pos] == '"':
            end = pos + 1
            while end < len(line) and line[end] != '"':
                end += 2 if line[end] == "\\" else 1
            value = line[pos + 1:end].replace('\\"', '"')
            pos = end + 1
        else:
            end = line.find(",", pos)
            end = len(line) if end < 0 else end
            value, pos = line[pos:end].strip(), end
        out.setdefault(key, value)
        while pos < len(line) and line[pos] in ", ":
            pos += 1
    return out


def _json_value(line: str, pos: int, source: str, key: str):
    try:
        value, end = json.JSONDecoder().raw_decode(line, pos)
    except (ValueError, RecursionError):
        raise UntrustedData(source, f"parameters: {key} is not valid JSON") from None
    return check_shape(value, f"{source} {key}", max_depth=16, max_nodes=20_000), end


def needs_from_parameters(text: str, source: str) -> list[ModelNeed]:
    return needs_from_generation(parse_parameters(text, source), source)
