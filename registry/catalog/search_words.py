"""The words of the search index, without a database: how documents and queries are split
(``words``), the fields of an adapter's document and their weights, and the words of one
version or adapter. ``search_index`` (which writes the index) and ``search`` (which reads it)
both use them; kept apart from ``search_index`` so that a search opened through the light
reader (``light_reads``) does not import SQLAlchemy.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Iterable

from ..errors import UntrustedData
from ..untrusted import parse_json

# Field → (SQLite FTS5 bm25 weight, PostgreSQL tsvector weight class). The first three come from
# the adapter row, the rest from its versions (VERSION_FIELDS).
FIELDS: dict[str, tuple[float, str]] = {
    "name": (10.0, "A"),
    "triggers": (8.0, "A"),
    "description": (4.0, "B"),
    "tags": (4.0, "B"),
    "metadata": (2.0, "C"),
    "message": (2.0, "C"),
    "prompts": (1.0, "D"),
}
VERSION_FIELDS = ("triggers", "metadata", "message", "prompts")
MAX_VERSION_FIELD_CHARS = 4_000  # of normalised words, per field of one version
MAX_FIELD_CHARS = 20_000  # per field of an adapter's document (newest versions first)
MAX_PROMPT_RECORDS = 50  # newest records whose prompts a version's words hold
MAX_TAG_FREQUENCY_BYTES = 1 << 20
MAX_TAG_CHARS = 200

_WORD = re.compile(r"[^\W_]+")
# Every version's metadata words start with this word since they hold the base family's and
# variant's words: a document without it was written before, and is rewritten once
# (``search_index.reindex_if_stale``) — no migration. Not a word anyone types.
INDEX_MARK = "qxzfamilywords2"  # 2: + the prediction-type words
VARIANT_TAG = "\x1fvariant:"  # search_tags rows of the variant facet (a control character: no user tag)


def words(value: str) -> list[str]:
    """Lower-case, accent-folded runs of letters and digits: how documents and queries split."""
    if not value:
        return []
    folded = unicodedata.normalize("NFKD", value.replace("\x00", "").lower())
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return _WORD.findall(folded)


def _cap(joined: str, limit: int) -> str:
    return joined[:limit].rsplit(" ", 1)[0] if len(joined) > limit else joined


def _field(*parts: str, limit: int = MAX_VERSION_FIELD_CHARS) -> str:
    return _cap(" ".join(w for part in parts for w in words(part)), limit)


def trigger_key(triggers: Iterable[str]) -> str:
    """``\\n`` + each trigger word (its words, space-joined) + ``\\n``: ``--trigger`` matches one
    whole trigger with ``LIKE '%\\nW\\n%'``."""
    keys = [" ".join(words(str(t))) for t in triggers]
    keys = [k for k in keys if k]
    return "\n" + "\n".join(keys) + "\n" if keys else ""


def tag_rows(tags) -> list[str]:
    """An adapter's tags as ``key=value`` strings (as given, not split into words)."""
    tags = _json(tags, {})
    if not isinstance(tags, dict):
        return []
    rows = {f"{k}={v}"[:MAX_TAG_CHARS] for k, v in tags.items()}
    return sorted(r for r in rows if not r.startswith(VARIANT_TAG))  # that prefix files variants


def _tag_frequency_words(raw) -> str:
    """``ss_tag_frequency`` (kohya: JSON text ``{dataset: {tag: count}}``) → its tags, most
    frequent first. It comes from a file header: parsed with caps, anything odd ignored."""
    if isinstance(raw, str):
        if len(raw) > MAX_TAG_FREQUENCY_BYTES:
            return ""
        try:
            raw = parse_json(raw, "ss_tag_frequency", max_bytes=MAX_TAG_FREQUENCY_BYTES)
        except UntrustedData:
            return ""
    if not isinstance(raw, dict):
        return ""
    counts: dict[str, float] = {}
    for tags in raw.values():
        if isinstance(tags, dict):
            for tag, count in tags.items():
                n = count if isinstance(count, (int, float)) and not isinstance(count, bool) else 0
                counts[str(tag)] = counts.get(str(tag), 0) + n
    return " ".join(sorted(counts, key=lambda t: (-counts[t], t)))


def _json(value, default):
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except ValueError:
            return default
    return default if value is None else value


def version_variant(family: str | None, *, file_metadata=None, extra=None, probe=None) -> str | None:
    """The variant (sub-family) a version's stored probe result, header metadata and Civitai info
    tell (``loradex.families.vocabulary.stored_variant``); None when nothing does."""
    from loradex.families.vocabulary import stored_variant, variant_names

    if not variant_names(family):
        return None
    meta, extra, probe = _json(file_metadata, {}), _json(extra, {}), _json(probe, {})
    found = stored_variant(family, probe=probe if isinstance(probe, dict) else None,
                           metadata=meta if isinstance(meta, dict) else None,
                           extra=extra if isinstance(extra, dict) else None)
    return found[0] if found else None


def family_words(family: str | None, variant: str | None) -> list[str]:
    """Words a version is found by for its base family and variant: "sdxl", "pony" …
    (``loradex.families.vocabulary.search_words``; few, since every word lengthens the document
    bm25 ranks by)."""
    from loradex.families.vocabulary import search_words

    return search_words(family, variant)


def variant_tag(family: str, variant: str) -> str:
    """The ``search_tags`` row that files an adapter under a variant facet (never a user tag:
    those are ``key=value`` strings that cannot start with ``VARIANT_TAG``)."""
    return f"{VARIANT_TAG}{family}/{variant}"


def version_words(*, message: str, trigger_words, file_metadata, prompts: Iterable[str],
                  family: str | None = None, variant: str | None = None) -> dict[str, str]:
    """The indexed words of one version, per field of ``VERSION_FIELDS``. The metadata field
    starts with ``INDEX_MARK`` and the family/variant words (before the capped tag words)."""
    meta = _json(file_metadata, {})
    meta = meta if isinstance(meta, dict) else {}
    triggers = _json(trigger_words, [])
    triggers = [str(t) for t in triggers] if isinstance(triggers, list) else []
    meta_parts = [INDEX_MARK, *family_words(family, variant), *prediction_words(meta),
                  _tag_frequency_words(meta.get("ss_tag_frequency"))]
    for key in ("modelspec.title", "modelspec.description"):
        if isinstance(meta.get(key), str):
            meta_parts.append(meta[key])
    return {"triggers": _field(*triggers), "metadata": _field(*meta_parts), "message": _field(message or ""),
            "prompts": _field(*prompts)}


# what a version whose header states its prediction type (ModelSpec ``prediction_type``, kohya's
# ``ss_v_parameterization``) is also found by: ``loradex search vpred``
PREDICTION_SEARCH_WORDS = {"v": ("vpred", "vprediction"), "epsilon": ("eps", "epsilon")}


def prediction_words(meta: dict) -> tuple[str, ...]:
    from loradex.families.vocabulary import prediction_from_metadata

    found = prediction_from_metadata(meta)
    return PREDICTION_SEARCH_WORDS.get(found[0], ()) if found else ()


def adapter_words(*, name: str, description: str, tags) -> dict[str, str]:
    """The indexed words an adapter's every version shares: name, description, tags."""
    tags = _json(tags, {})
    tag_text = " ".join(f"{k} {v}" for k, v in tags.items()) if isinstance(tags, dict) else ""
    return {"name": _field(name), "description": _field(description or "", limit=MAX_FIELD_CHARS),
            "tags": _field(tag_text)}
