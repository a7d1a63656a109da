"""A1111 prompt syntax for stacking adapters, extended with catalog refs.

Tags (``<lyco:…>`` is read exactly like ``<lora:…>``)::

    <lora:NAME>                      te = unet = 1
    <lora:NAME@REF:W>                te = unet = W      REF: 1.2.0 | production | latest
    <lora:NAME:TE_W:UNET_W>          per component
    <lora:NAME:te=0.5:unet=0.8>      named (A1111); UNET_W defaults to TE_W, TE_W to 1
    <lora:sha256:abcd1234:W>         a hash ref (≥ 8 hex digits) instead of a name

Names follow the catalog (``[a-z0-9][a-z0-9._-]*``). Anything malformed raises
``PromptSyntaxError(prompt, column, message)``; ``column`` is the 1-based character offset in
the prompt (newlines count as one character) of the first character that is wrong.
Refs are only checked for *syntax* here; ``check_refs`` turns a resolver's "unknown ref" into a
PromptSyntaxError at the tag's column. Pure string work: no torch, no catalog.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from loradex.registry.errors import LoradexError, PromptSyntaxError
from loradex.registry.catalog.refs import ALIAS_RE, HASH_KINDS, LATEST, NAME_RE, is_semver

# <lyco:…> means the same as <lora:…>: a network applied with te/unet weights
TAG_OPEN_RE = re.compile(r"<(lora|lyco):", re.IGNORECASE)
NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
NAMED_WEIGHT_KEYS = {"te": "te_weight", "unet": "unet_weight"}
BRACKET_TOKEN_RE = re.compile(r"<([A-Za-z0-9][A-Za-z0-9._-]*)>")
SEPARATORS = " \t,"


@dataclass(frozen=True)
class LoraTag:
    """One ``<lora:…>`` tag. ``start``/``end`` are 0-based offsets into the original prompt
    (``end`` exclusive). For a hash ref ``name`` is ``sha256:<hex>`` and ``ref`` is None."""

    name: str
    ref: str | None
    te_weight: float
    unet_weight: float
    start: int
    end: int
    kind: str = "lora"
    name_column: int = 0  # 1-based column of NAME, for errors found later (unknown ref)

    @property
    def ref_string(self) -> str:
        """The catalog ref this tag names (``NAME@REF``, ``NAME@latest`` or a hash ref)."""
        if self.name.partition(":")[0] in HASH_KINDS:
            return self.name
        return f"{self.name}@{self.ref or LATEST}"


@dataclass(frozen=True)
class EmbeddingToken:
    """An embedding's token found in a prompt: ``<my-style>`` (always reported, ``known`` says
    whether it is in ``known_tokens``) or a known trigger word (whole word, case-insensitive)."""

    token: str
    start: int
    end: int
    known: bool


@dataclass(frozen=True)
class ParsedPrompt:
    clean_prompt: str
    loras: list[LoraTag] = field(default_factory=list)
    embedding_tokens: list[EmbeddingToken] = field(default_factory=list)


# --- parsing ---------------------------------------------------------------------------------

def parse_prompt(prompt: str, known_tokens: Iterable[str] = ()) -> ParsedPrompt:
    """Split ``prompt`` into the text sent to the model and the adapter tags it names."""
    tags: list[LoraTag] = []
    pos = 0
    while True:
        match = TAG_OPEN_RE.search(prompt, pos)
        if match is None:
            break
        close = prompt.find(">", match.end())
        next_open = prompt.find("<", match.end())
        if close < 0 or (0 <= next_open < close):
            raise PromptSyntaxError(prompt, match.start() + 1,
                                    f"unclosed <{match.group(1)}: tag (no '>' before "
                                    + ("the next '<')" if close >= 0 else "the end of the prompt)"))
        tags.append(_parse_tag(prompt, match.group(1).lower(), match.start(), match.end(), close))
        pos = close + 1
    clean = _remove_spans(prompt, [(t.start, t.end) for t in tags])
    inside = [(t.start, t.end) for t in tags]
    embeddings = [e for e in find_embedding_tokens(prompt, known_tokens)
                  if not any(s <= e.start < end for s, end in inside)]
    return ParsedPrompt(clean_prompt=clean, loras=tags, embedding_tokens=embeddings)


def _fields(prompt: str, begin: int, end: int) -> list[tuple[str, int]]:
    """``:``-separated fields of prompt[begin:end] with their 0-based offsets, spaces trimmed."""
    out = []
    start = begin
    for piece in prompt[begin:end].split(":"):
        lead = len(piece) - len(piece.lstrip())
        out.append((piece.strip(), start + lead))
        start += len(piece) + 1
    return out


def _parse_tag(prompt: str, kind: str, start: int, body: int, close: int) -> LoraTag:
    fields = _fields(prompt, body, close)
    (name_text, name_at), rest = fields[0], fields[1:]
    if not name_text:
        raise PromptSyntaxError(prompt, name_at + 1, f"empty adapter name in <{kind}:…> tag")
    # a hash ref spans two fields: sha256:abcd1234
    if name_text.lower() in HASH_KINDS and rest and re.fullmatch(r"[0-9a-fA-F]{8,}", rest[0][0]):
        name, ref = f"{name_text.lower()}:{rest[0][0].lower()}", None
        rest = rest[1:]
    elif (name_text.lower() in HASH_KINDS and rest and re.fullmatch(r"[0-9a-fA-F]+", rest[0][0])
          and not NUMBER_RE.fullmatch(rest[0][0])):
        raise PromptSyntaxError(prompt, rest[0][1] + 1,
                                f"a {name_text.lower()} ref needs at least 8 hex digits")
    else:
        name, ref = _parse_name(prompt, name_text, name_at)

    weights: dict[str, float] = {}
    positional_keys = ["te_weight", "unet_weight"]
    for text, at in rest:
        key, eq, value = text.partition("=")
        if eq:
            key = key.strip()
            if key.lower() not in NAMED_WEIGHT_KEYS:
                raise PromptSyntaxError(prompt, at + 1,
                                        f"unknown key {key!r} in <{kind}:…> tag; "
                                        f"expected {' or '.join(k + '=' for k in NAMED_WEIGHT_KEYS)}")
            slot = NAMED_WEIGHT_KEYS[key.lower()]
            value_at = at + text.index("=") + 1 + (len(value) - len(value.lstrip()))
            value = value.strip()
        else:
            if not positional_keys:
                raise PromptSyntaxError(prompt, at + 1,
                                        f"too many fields in <{kind}:…> tag; "
                                        "use NAME[:TE_WEIGHT[:UNET_WEIGHT]]")
            slot, value, value_at = positional_keys[0], text, at
        if slot in positional_keys:
            positional_keys.remove(slot)
        if slot in weights:
            raise PromptSyntaxError(prompt, at + 1,
                                    f"{slot.replace('_weight', '')} weight given twice in <{kind}:…> tag")
        weights[slot] = _parse_weight(prompt, value, value_at, kind)
    te = weights.get("te_weight", 1.0)
    unet = weights.get("unet_weight", te)  # A1111: the UNet weight defaults to the TE weight
    return LoraTag(name=name, ref=ref, te_weight=te, unet_weight=unet, start=start, end=close + 1,
                   kind=kind, name_column=name_at + 1)


def _parse_name(prompt: str, text: str, at: int) -> tuple[str, str | None]:
    name, sep, ref = text.partition("@")
    bad = next((i for i, ch in enumerate(name) if not re.fullmatch(r"[a-z0-9._-]", ch)), None)
    if not name:
        raise PromptSyntaxError(prompt, at + 1, "empty adapter name before '@'")
    if bad is not None or not NAME_RE.match(name):
        col = at + (bad if bad is not None else 0) + 1
        hint = f" (catalog names are lower-case: try {name.lower()!r})" if name.lower() != name else ""
        raise PromptSyntaxError(prompt, col, f"invalid adapter name {name!r}: use a-z, 0-9, '.', "
                                             f"'_' or '-', starting with a letter or digit{hint}")
    if not sep:
        return name, None
    ref_at = at + len(name) + 1
    if not ref:
        raise PromptSyntaxError(prompt, ref_at + 1, f"nothing after '@' in {text!r}; "
                                                    "use NAME@VERSION or NAME@ALIAS")
    if not (ref == LATEST or is_semver(ref) or ALIAS_RE.fullmatch(ref)):
        raise PromptSyntaxError(prompt, ref_at + 1,
                                f"{ref!r} is neither a version (X.Y.Z) nor an alias name")
    return name, ref


def _parse_weight(prompt: str, value: str, at: int, kind: str) -> float:
    if not value:
        raise PromptSyntaxError(prompt, at + 1, f"empty weight in <{kind}:…> tag")
    if not NUMBER_RE.fullmatch(value):
        raise PromptSyntaxError(prompt, at + 1, f"weight {value!r} is not a number")
    weight = float(value)
    if not math.isfinite(weight):
        raise PromptSyntaxError(prompt, at + 1, f"weight {value!r} is not finite")
    return weight


# --- the prompt sent to the model ------------------------------------------------------------

def _remove_spans(prompt: str, spans: list[tuple[int, int]]) -> str:
    """Remove tags, merging the separators around them: a tag between two phrases leaves
    ", " if a comma touched it, else " "; at either end of the prompt (or of a line) nothing."""
    if not spans:
        return prompt
    regions: list[list[int]] = []
    for start, end in sorted(spans):
        while start > 0 and prompt[start - 1] in SEPARATORS:
            start -= 1
        while end < len(prompt) and prompt[end] in SEPARATORS:
            end += 1
        if regions and start <= regions[-1][1]:
            regions[-1][1] = max(regions[-1][1], end)
        else:
            regions.append([start, end])
    out, pos = [], 0
    tag_spans = sorted(spans)
    for start, end in regions:
        out.append(prompt[pos:start])
        at_edge = start == 0 or end == len(prompt) or prompt[start - 1] == "\n" or prompt[end] == "\n"
        if not at_edge:
            # commas that belonged to the text (not inside a tag) decide the joiner
            outside = "".join(ch for i, ch in enumerate(prompt[start:end], start)
                              if not any(s <= i < e for s, e in tag_spans))
            out.append(", " if "," in outside else " ")
        pos = end
    out.append(prompt[pos:])
    return "".join(out)


# --- embeddings ------------------------------------------------------------------------------

def find_embedding_tokens(prompt: str, known_tokens: Iterable[str] = ()) -> list[EmbeddingToken]:
    """Occurrences of embedding tokens in ``prompt``, in order.

    ``<word>`` tokens are always reported (``known`` tells whether an embedding claims it);
    other known tokens (stored trigger words) are matched as whole words, case-insensitively
    (CLIP lower-cases text before tokenizing)."""
    known = {t for t in known_tokens if t}
    known_lower = {t.lower() for t in known}
    found: dict[int, EmbeddingToken] = {}
    for m in BRACKET_TOKEN_RE.finditer(prompt):
        found[m.start()] = EmbeddingToken(m.group(0), m.start(), m.end(),
                                          known=m.group(0).lower() in known_lower)
    for token in sorted(known, key=len, reverse=True):  # longest first: "a-b" before "a"
        if token.startswith("<") and token.endswith(">"):
            continue  # already found by the bracket pattern
        for m in re.finditer(rf"(?<![\w<-]){re.escape(token)}(?![\w>-])", prompt, re.IGNORECASE):
            if not any(e.start <= m.start() < e.end for e in found.values()):
                found[m.start()] = EmbeddingToken(token, m.start(), m.end(), known=True)
    return [found[k] for k in sorted(found)]


# --- refs --------------------------------------------------------------------------------------

def check_refs(prompt: str, parsed: ParsedPrompt, resolve: Callable[[str], Any]) -> list[Any]:
    """Resolve every tag's ref with ``resolve(ref_string)``; a resolver error (unknown name,
    version or alias, ambiguous hash) becomes a PromptSyntaxError at the tag's name column."""
    resolved = []
    for tag in parsed.loras:
        try:
            resolved.append(resolve(tag.ref_string))
        except LoradexError as exc:
            raise PromptSyntaxError(prompt, tag.name_column, f"{tag.ref_string}: {exc}") from exc
    return resolved


def caret_lines(prompt: str, column: int) -> str:
    """Two lines for a terminal: the prompt line holding ``column`` and a caret under it."""
    offset = max(column - 1, 0)
    line_start = prompt.rfind("\n", 0, offset) + 1
    line_end = prompt.find("\n", offset)
    line = prompt[line_start: line_end if line_end >= 0 else len(prompt)]
    return f"{line}\n{' ' * (offset - line_start)}^"
