"""Declared shapes of every JSON request body the served apps read (Hub protocol, LFS batch API,
Civitai-style by-hash), and the one parser they all go through.

Bodies are read with a size cap (``protocol_errors.read_body_capped``), only after the request
was authenticated, then parsed by :func:`parse_body`: ``untrusted.parse_json`` (caps on size,
nesting depth and node count; no NaN, no duplicate keys) and a JSON Schema check. Anything else
is a 400 naming the field, never a 500. The schemas allow extra keys (newer clients send more),
but type every key the server reads.
"""

from __future__ import annotations

from typing import Any

from ... import untrusted
from ...errors import UntrustedData
from .protocol_errors import BadRequest

BODY_MAX_DEPTH = 16      # real bodies nest at most 4 levels
BODY_MAX_NODES = 200_000

_STR_OR_NULL = {"type": ["string", "null"]}
_SIZE = {"type": "integer", "minimum": 0}
_PATH = {"type": "string", "minLength": 1, "maxLength": 4096}

CREATE_REPO = {
    "type": "object",
    "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 200},
                   "organization": _STR_OR_NULL, "type": _STR_OR_NULL,
                   "private": {"type": ["boolean", "null"]}, "visibility": _STR_OR_NULL},
    "required": ["name"],
}
DELETE_REPO = {
    "type": "object",
    "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 200},
                   "organization": _STR_OR_NULL, "type": _STR_OR_NULL},
    "required": ["name"],
}
PREUPLOAD = {
    "type": "object",
    "properties": {"files": {"type": "array", "maxItems": 10_000, "items": {
        "type": "object", "required": ["path", "size"],
        "properties": {"path": _PATH, "size": _SIZE, "sample": {"type": ["string", "null"]}}}}},
    "required": ["files"],
}
PATHS_INFO = {
    "type": "object",
    "properties": {"paths": {"type": "array", "maxItems": 10_000, "items": {"type": "string"}},
                   "expand": {"type": ["boolean", "string", "null"]}},
}
CREATE_TAG = {
    "type": "object",
    "properties": {"tag": {"type": "string", "minLength": 1, "maxLength": 200}, "message": _STR_OR_NULL},
    "required": ["tag"],
}
CREATE_BRANCH = {"type": "object", "properties": {"startingPoint": _STR_OR_NULL}}
VALIDATE_YAML = {"type": "object", "properties": {"content": {"type": "string"}}}
REPO_SETTINGS = {"type": "object", "properties": {"private": {"type": ["boolean", "null"]}, "visibility": _STR_OR_NULL,
                                                  "gated": {"type": ["string", "boolean", "null"]}}}
SUPER_SQUASH = {"type": "object", "properties": {"message": _STR_OR_NULL}}

# one line of a commit's NDJSON body: {"key": …, "value": {…}}, the value typed per key
_COMMIT_VALUES = {
    "header": {"type": "object", "required": ["summary"],
               "properties": {"summary": {"type": "string"}, "description": _STR_OR_NULL,
                              "parentCommit": {"type": ["string", "null"], "pattern": "^[0-9a-fA-F]{7,40}$"}}},
    "file": {"type": "object", "required": ["path"],
             "properties": {"path": _PATH, "content": {"type": "string"}, "encoding": {"type": "string"}}},
    "lfsFile": {"type": "object", "required": ["path", "oid"],
                "properties": {"path": _PATH, "oid": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                               "algo": {"const": "sha256"}, "size": _SIZE}},
    "deletedFile": {"type": "object", "required": ["path"], "properties": {"path": _PATH}},
    "deletedFolder": {"type": "object", "required": ["path"], "properties": {"path": _PATH}},
}
COMMIT_LINE = {
    "type": "object",
    "required": ["key", "value"],
    "properties": {"key": {"enum": sorted(_COMMIT_VALUES)}, "value": {"type": "object"}},
    "allOf": [{"if": {"properties": {"key": {"const": key}}}, "then": {"properties": {"value": schema}}}
              for key, schema in _COMMIT_VALUES.items()],
}

LFS_BATCH = {
    "type": "object",
    "properties": {"operation": {"enum": ["upload", "download"]},
                   "transfers": {"type": "array", "items": {"type": "string"}},
                   # each object is checked on its own (a bad one gets its own error entry)
                   "objects": {"type": "array", "maxItems": 10_000, "items": {"type": "object"}}},
    "required": ["operation", "objects"],
}
LFS_VERIFY = {
    "type": "object",
    "properties": {"oid": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "size": _SIZE},
    "required": ["oid", "size"],
}
BY_HASHES = {"type": "array", "maxItems": 100, "items": {"type": "string", "maxLength": 200}}


def parse_body(body: bytes, schema: dict, what: str, *, empty: Any = None,
               max_string: int = untrusted.MAX_STRING) -> Any:
    """``body`` parsed and checked against ``schema``; ``BadRequest`` (400) naming ``what`` and
    the field otherwise. An empty body is ``empty`` when given (some clients send none).
    ``max_string``: the longest string value (a commit line carries a file's base64 content)."""
    if not body.strip() and empty is not None:
        body = b"{}" if isinstance(empty, dict) else b"[]"
    try:
        value = untrusted.parse_json(body, what, max_bytes=max(len(body), 1), max_depth=BODY_MAX_DEPTH,
                                     max_nodes=BODY_MAX_NODES, max_string=max_string)
        return untrusted.check_schema(value, schema, what)
    except UntrustedData as exc:
        raise BadRequest(exc.message) from None
