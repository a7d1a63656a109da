"""One validation layer for data from outside: a remote's JSON, a YAML front matter, a sidecar,
a manifest, a request body.

Every parse goes through :func:`parse_json` / :func:`parse_yaml` (caps on size, nesting depth
and node count, no YAML aliases, no NaN/Infinity, no duplicate keys) and then through a declared
JSON Schema with :func:`check_schema`. A failure is a :class:`UntrustedData` — one line naming
the source (URL, file, field) and what is wrong — never a KeyError or TypeError deeper in.

Values that become part of a path on disk must pass :func:`hex_digest`, :func:`positive_int` or
:func:`safe_relative_name` first; :func:`inside` checks a path loradex is about to delete or
truncate against the folder it created.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from .errors import UntrustedData

MAX_JSON_BYTES = 16 << 20   # a remote answer, a manifest, a sidecar
MAX_DEPTH = 64              # nesting of objects/arrays (real answers use < 10)
MAX_NODES = 1_000_000       # values in one document
MAX_STRING = 1 << 20        # one string value
MAX_YAML_BYTES = 1 << 20    # a README front matter


# --- parsing --------------------------------------------------------------------------------
def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def no_duplicate_keys(pairs):
    """``object_pairs_hook`` refusing a key given twice (which one would count?)."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _nesting_too_deep(text: str | bytes, max_depth: int) -> bool:
    """Depth of brackets outside strings, found without recursion (the stdlib parser recurses
    and would hit RecursionError on 100k levels)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    depth = 0
    in_string = False
    escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _check_unicode(text: str, source: str) -> None:
    """A lone surrogate (JSON ``"\\ud800"``) parses but can be written to no UTF-8 file or
    terminal: refused here rather than failing later, far from its source."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise UntrustedData(source, "a string that is not valid Unicode (a lone surrogate)") from None


def check_shape(value: Any, source: str, *, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES,
                max_string: int = MAX_STRING) -> Any:
    """Walk a parsed value (iteratively): depth, node count, string length, finite numbers,
    string keys only."""
    stack = [(value, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise UntrustedData(source, f"more than {max_nodes} values")
        if depth > max_depth:
            raise UntrustedData(source, f"nested deeper than {max_depth} levels")
        if isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise UntrustedData(source, f"non-string key {str(key)[:40]!r}")
                if len(key) > max_string:
                    raise UntrustedData(source, "a key longer than the cap")
                _check_unicode(key, source)
                stack.append((sub, depth + 1))
        elif isinstance(item, list):
            stack.extend((sub, depth + 1) for sub in item)
        elif isinstance(item, str):
            if len(item) > max_string:
                raise UntrustedData(source, f"a string longer than {max_string} characters")
            _check_unicode(item, source)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise UntrustedData(source, "a number that is not finite")
        elif item is None or isinstance(item, (bool, int)):
            pass
        else:
            raise UntrustedData(source, f"a value of type {type(item).__name__}")
    return value


def parse_json(data: str | bytes, source: str, *, max_bytes: int = MAX_JSON_BYTES,
               max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES, max_string: int = MAX_STRING) -> Any:
    """Parse JSON from outside with caps. Raises :class:`UntrustedData`."""
    if len(data) > max_bytes:
        raise UntrustedData(source, f"{len(data)} bytes of JSON, over the {max_bytes}-byte cap")
    if _nesting_too_deep(data, max_depth):
        raise UntrustedData(source, f"JSON nested deeper than {max_depth} levels")
    try:
        if isinstance(data, bytes):
            data = data.decode("utf-8-sig")
        elif data.startswith("\ufeff"):
            data = data[1:]
        value = json.loads(data, parse_constant=_reject_constant, object_pairs_hook=no_duplicate_keys)
    except UnicodeDecodeError:
        raise UntrustedData(source, "not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise UntrustedData(source, f"not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    return check_shape(value, source, max_depth=max_depth, max_nodes=max_nodes, max_string=max_string)


def read_json_file(path: str | os.PathLike, *, max_bytes: int = MAX_JSON_BYTES,
                   max_depth: int = MAX_DEPTH) -> Any:
    """A JSON file from outside (sidecar, manifest, card), read no further than the cap."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise UntrustedData(str(path), f"cannot read ({exc.strerror or exc})") from None
    return parse_json(data, str(path), max_bytes=max_bytes, max_depth=max_depth)


def parse_yaml(text: str, source: str, *, max_bytes: int = MAX_YAML_BYTES, max_depth: int = MAX_DEPTH,
               max_nodes: int = 100_000) -> Any:
    """YAML from outside (a model card's front matter): safe loader, no anchors or aliases (an
    alias bomb expands a few hundred bytes to 10^9 nodes), caps on size, depth and node count."""
    import yaml

    if len(text) > max_bytes:
        raise UntrustedData(source, f"YAML of {len(text)} characters, over the {max_bytes} cap")
    try:
        loader = yaml.SafeLoader(text)
        try:
            events = 0
            depth = 0
            # Walk the event stream first: refuse aliases/anchors and deep nesting before any
            # node is built.
            while loader.check_event():
                event = loader.get_event()
                events += 1
                if events > max_nodes:
                    raise UntrustedData(source, f"YAML with more than {max_nodes} nodes")
                if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                    raise UntrustedData(source, "YAML anchors and aliases are not accepted")
                if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                    depth += 1
                    if depth > max_depth:
                        raise UntrustedData(source, f"YAML nested deeper than {max_depth} levels")
                elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                    depth -= 1
        finally:
            loader.dispose()
        value = yaml.safe_load(text)
    except UntrustedData:
        raise
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        first = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise UntrustedData(source, f"not valid YAML ({first})") from None
    return check_shape(_plain(value), source, max_depth=max_depth)


def _plain(value: Any) -> Any:
    """YAML scalars JSON cannot hold (dates, bytes) as strings; non-string keys as strings."""
    import datetime

    stack = [value]
    root = value
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key in list(item):
                sub = item[key]
                if isinstance(sub, (datetime.date, datetime.datetime, bytes)):
                    sub = sub.isoformat() if not isinstance(sub, bytes) else sub.decode("latin-1")
                if not isinstance(key, str):
                    del item[key]
                    key = str(key)
                item[key] = sub
                stack.append(sub)
        elif isinstance(item, list):
            for i, sub in enumerate(item):
                if isinstance(sub, (datetime.date, datetime.datetime)):
                    item[i] = sub.isoformat()
                stack.append(item[i])
    if isinstance(root, (datetime.date, datetime.datetime)):
        return root.isoformat()
    return root


# --- schemas --------------------------------------------------------------------------------
_VALIDATORS: dict[int, Any] = {}


def check_schema(value: Any, schema: dict, source: str) -> Any:
    """Validate against a JSON Schema (draft 2020-12); the first error, one line, names the
    field path."""
    from jsonschema import Draft202012Validator

    validator = _VALIDATORS.get(id(schema))
    if validator is None:
        validator = _VALIDATORS[id(schema)] = Draft202012Validator(schema)
    error = next(iter(sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        message = " ".join(str(error.message).split())
        if len(message) > 160:
            message = message[:157] + "..."
        raise UntrustedData(source, f"field {where}: {message}")
    return value


# --- values that name things on disk ---------------------------------------------------------
_HEX = re.compile(r"[0-9a-f]+")


def _shown(value: Any, limit: int = 120) -> str:
    """A value quoted for a message: long ones keep their head and tail (where a file name is)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[:limit // 3] + "…" + text[-(limit - limit // 3):]
    return repr(text)


def hex_digest(value: Any, source: str, *, lengths: Iterable[int] = (64,), field: str = "digest") -> str:
    """A hex digest from outside, lower-cased; anything else is a protocol error."""
    lengths = tuple(lengths)
    if not isinstance(value, str):
        raise UntrustedData(source, f"{field} is not a string")
    text = value.strip().lower()
    if len(text) not in lengths or not _HEX.fullmatch(text):
        shown = "/".join(str(n) for n in lengths)
        raise UntrustedData(source, f"{field} {_shown(value)} is not a {shown}-digit hex digest")
    return text


def positive_int(value: Any, source: str, *, field: str = "id", maximum: int = 2**63 - 1) -> int:
    """An integer id from outside (a JSON int or a string of digits)."""
    if isinstance(value, bool):
        raise UntrustedData(source, f"{field} is not an integer")
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if not isinstance(value, int) or not 0 < value <= maximum:
        raise UntrustedData(source, f"{field} {_shown(value, 40)} is not a positive integer")
    return value


_BAD_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f\\:*?\"<>|]")


def safe_relative_name(value: Any, source: str, *, field: str = "file name", max_len: int = 255,
                       allow_dirs: bool = False) -> str:
    """A file name (or, with ``allow_dirs``, a relative POSIX path) from outside that stays
    inside the folder it is joined to: no absolute path, no ``..``, no drive, no control chars."""
    if not isinstance(value, str) or not value:
        raise UntrustedData(source, f"{field} is missing or not a string")
    if len(value) > (max_len * 8 if allow_dirs else max_len) or _BAD_NAME_CHARS.search(value):
        raise UntrustedData(source, f"{field} {_shown(value)} is not a safe file name")
    parts = PurePosixPath(value).parts
    if (value.startswith("/") or not parts or any(p in ("..", ".", "") for p in parts)
            or (not allow_dirs and len(parts) != 1) or any(len(p.encode()) > max_len for p in parts)):
        raise UntrustedData(source, f"{field} {_shown(value)} is not a safe relative name")
    return value


def inside(path: str | os.PathLike, root: str | os.PathLike) -> Path:
    """``path`` resolved, if it lies strictly inside ``root`` (resolved); else ValueError.
    Call before deleting, truncating or overwriting anything."""
    root_r = Path(root).resolve()
    path_r = Path(path).resolve()
    if path_r == root_r or root_r not in path_r.parents:
        raise ValueError(f"refusing to touch {path}: not inside {root}")
    return path_r
