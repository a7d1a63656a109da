"""Recipes: the exact description of how a version was made, and replaying them.

A recipe is a JSON object (``schemas/recipe.schema.json``)::

    {"op": "merge", "inputs": [{"ref": "style@1.2.0", "sha256": "…", "weight": 0.7}],
     "method": "svd", "rank": 16, "options": {}, "seed": null, "base": "sd1",
     "loradex_version": "0.1.0", "output": {"format": "kohya", "dtype": "fp16", "name": "mix"}}

Operations register a writer with ``@register_recipe_op("merge")``: ``writer(catalog, recipe,
dest, progress)`` writes the output file at ``dest``. The same writer makes the file the first time
and on replay, and writers are deterministic (sorted keys, fixed dtype, no timestamps in the
metadata), so ``replay_recipe`` gives a bit-identical file on the same machine kind.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


RecipeWriter = Callable[..., Any]
_OPS: dict[str, RecipeWriter] = {}
# modules whose import registers the built-in ops (loaded on first use)
_BUILTIN_OP_MODULES = ("catalog_merge", "extract", "bake")

def register_recipe_op(op: str):
    def decorate(fn: RecipeWriter) -> RecipeWriter:
        _OPS[op] = fn
        return fn

    return decorate


def recipe_writer(op: str) -> RecipeWriter:
    from loradex.registry.errors import UsageError

    for module in _BUILTIN_OP_MODULES:
        importlib.import_module(f"{__package__}.{module}")
    if op not in _OPS:
        raise UsageError(f"no writer for recipe op {op!r}", hint=f"known: {', '.join(sorted(_OPS))}")
    return _OPS[op]


def loradex_version() -> str:
    from loradex import __version__

    return __version__


def validate_recipe(recipe: dict) -> dict:
    """``recipe`` unchanged if it matches ``schemas/recipe.schema.json``, else SchemaError."""
    try:
        from loradex.schemas import validate
    except ImportError:  # the schemas loader is optional; jsonschema is a dependency
        validate = None
    if validate is not None:
        return validate("recipe", recipe)
    import jsonschema

    from loradex.registry.errors import SchemaError

    schema = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "recipe.schema.json").read_text())
    try:
        jsonschema.validate(recipe, schema)
    except jsonschema.ValidationError as exc:
        raise SchemaError(f"recipe: {exc.message}") from None
    return recipe


def recipe_from_file(path: str | Path) -> dict:
    """A recipe from a ``.json`` or ``.toml`` file (TOML: the same keys, ``[[inputs]]`` tables)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        import tomllib

        data = tomllib.loads(text)
    else:
        data = json.loads(text)
    return validate_recipe(data)


def _toml_value(value: Any, where: str) -> str:
    from loradex.registry.errors import UsageError

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # shortest round-trip form; TOML reads inf / nan / 1e-05 alike
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON string escapes are valid TOML basic strings
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) and v is not None for v in value):
        return "[" + ", ".join(_toml_value(v, where) for v in value) + "]"
    raise UsageError(f"recipe value at {where} has no TOML form: {value!r}")


def _toml_key(key: str) -> str:
    import re

    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _toml_table(data: dict, prefix: str, lines: list[str]) -> None:
    """Scalars and scalar arrays first, then sub-tables and arrays of tables. A null has no TOML
    form: its key is left out (every nullable recipe key reads back as absent = null)."""
    nested = []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict) or (isinstance(value, list) and value and all(isinstance(v, dict) for v in value)):
            nested.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value, prefix + key)}")
    for key, value in nested:
        path = f"{prefix}{_toml_key(key)}"
        for table in (value if isinstance(value, list) else [value]):
            lines.append("")
            lines.append(f"[[{path}]]" if isinstance(value, list) else f"[{path}]")
            _toml_table(table, path + ".", lines)


def recipe_to_toml(recipe: dict) -> str:
    """The TOML text ``recipe_from_file`` reads back as the same recipe (nulls left out)."""
    lines: list[str] = [f"# loradex recipe ({recipe.get('op')}); replay: loradex merge --recipe FILE --name NAME"]
    _toml_table(recipe, "", lines)
    return "\n".join(lines) + "\n"


def write_recipe_file(recipe: dict, dest: str | Path) -> Path:
    """Write ``recipe`` as ``.toml`` or ``.json`` (by the suffix of ``dest``)."""
    from loradex.registry.files.atomic_files import atomic_output
    from loradex.registry.errors import UsageError

    dest = Path(dest)
    if dest.suffix not in (".toml", ".json"):
        raise UsageError(f"{dest}: a recipe file ends in .toml or .json")
    text = recipe_to_toml(recipe) if dest.suffix == ".toml" else json.dumps(recipe, indent=2, sort_keys=True) + "\n"
    with atomic_output(dest, "w") as fh:
        fh.write(text)
    return dest


def write_recipe_output(catalog, recipe: dict, dest: str | Path, *, progress=None) -> Any:
    """Validate ``recipe`` and write its output file at ``dest``; returns the writer's report."""
    validate_recipe(recipe)
    return recipe_writer(recipe["op"])(catalog, recipe, Path(dest), progress=progress)


def sha256_of(path: str | Path) -> str:
    """sha256 of a file; of a folder (a baked diffusers model): sha256 of its sorted
    ``<relative path>\\0<file sha256>\\n`` lines."""
    path = Path(path)
    if path.is_dir():
        lines = "".join(f"{p.relative_to(path).as_posix()}\0{sha256_of(p)}\n"
                        for p in sorted(path.rglob("*")) if p.is_file())
        return hashlib.sha256(lines.encode("utf-8")).hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def replay_recipe(catalog, recipe: dict, dest: str | Path | None = None, *, progress=None) -> str:
    """Run ``recipe`` again; returns the sha256 of the file it writes (kept at ``dest`` if given)."""
    if dest is not None:
        write_recipe_output(catalog, recipe, dest, progress=progress)
        return sha256_of(dest)
    with tempfile.TemporaryDirectory(prefix="loradex-replay-") as tmp:
        out = Path(tmp) / ("replay" if recipe["output"]["format"] == "diffusers" else "replay.safetensors")
        write_recipe_output(catalog, recipe, out, progress=progress)
        return sha256_of(out)


def version_recipe(catalog, ref: str) -> dict:
    """The recipe stored on a version's own lineage edges (merged_from, resized_from…)."""
    from loradex.registry.errors import NotFound

    version = catalog.resolve(ref)
    for edge in catalog.lineage(version.ref):
        if edge.child == version.ref and edge.recipe:
            return edge.recipe
    raise NotFound(f"{version.ref} has no recipe", hint="only merged, resized, extracted or baked versions have one")


def replay_version(catalog, ref: str, *, progress=None) -> dict:
    """Replay the recipe of ``ref``: {ref, sha256 (stored), replayed_sha256, match}."""
    version = catalog.resolve(ref)
    recipe = version_recipe(catalog, version.ref)
    replayed = replay_recipe(catalog, recipe, progress=progress)
    return {"ref": version.ref, "op": recipe["op"], "sha256": version.sha256, "replayed_sha256": replayed,
            "match": replayed == version.sha256}
