"""JSON Schemas of what loradex writes (prompt records, evaluation cards), and their validation.

``load_schema("prompt-record")`` reads ``schemas/prompt-record.schema.json``;
``validate("eval-card", data)`` raises ``SchemaError`` naming the JSON path of the first error
(e.g. ``$.metrics.clip_t.value``). Pure data: no torch, importable from anywhere.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from loradex.registry.errors import SchemaError

SCHEMA_DIR = Path(__file__).parent


def schema_names() -> list[str]:
    return sorted(p.name.removesuffix(".schema.json") for p in SCHEMA_DIR.glob("*.schema.json"))


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict:
    path = SCHEMA_DIR / f"{name}.schema.json"
    if not path.is_file():
        raise SchemaError(f"no schema named {name!r}", hint=f"known: {', '.join(schema_names())}")
    return json.loads(path.read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def _validator(name: str):
    import jsonschema

    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def json_path(parts) -> str:
    """``$.a[0].b`` for a jsonschema ``absolute_path``."""
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def errors(name: str, data: Any) -> list[tuple[str, str]]:
    """Every validation error as (json path, message), shallowest path first."""
    found = sorted(_validator(name).iter_errors(data),
                   key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path], e.message))
    return [(json_path(e.absolute_path), e.message) for e in found]


def validate(name: str, data: Any) -> Any:
    """Return ``data`` unchanged if it validates against schema ``name``; else raise SchemaError
    with the path of the first error (``.path``) and all errors (``.errors``)."""
    problems = errors(name, data)
    if problems:
        path, message = problems[0]
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        exc = SchemaError(f"{name} invalid at {path}: {message}{more}")
        exc.path = path
        exc.errors = problems
        raise exc
    return data
