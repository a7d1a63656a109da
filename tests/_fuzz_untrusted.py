"""Fuzz targets for what remotes and folders send (issue 15): the shared validation layer
(``registry.untrusted.parse_json`` / ``parse_yaml`` / ``check_schema``) over remote answers and
model-card front matter, and the webui sidecar reader (``registry.webui_import.read_sidecars``).
Importing this module adds the targets to ``_fuzz_fixtures.TARGETS``, so tests/test_fuzz_parsers.py
and bench/fuzz_parsers.py run them like the four file/ref parsers.

Oracles (independent of the code under test):
* ``untrusted_json``: an accepted document equals ``json.loads`` of the same text, holds no NaN or
  infinity, and is no deeper than the cap; text ``json.loads`` refuses is refused (typed).
* ``untrusted_yaml``: an accepted document survives ``json.dumps(allow_nan=False)`` unchanged
  (plain data only), no deeper than the cap; a document with an anchor or alias is refused.
* ``remote_answer``: a Civitai / Hub answer accepted by ``parse_json`` + ``check_schema`` is valid for
  a fresh ``jsonschema`` validator of the same declared schema.
* ``webui_sidecar``: ``read_sidecars`` never raises; its triggers are strings, its base a string, its
  ``extra`` plain JSON; a sidecar it did not read is named in ``skipped``.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
from pathlib import Path

from _fuzz_fixtures import SCRATCH, TARGETS, Finding, mutate_bytes, mutate_text
from loradex.registry.errors import LoradexError
from loradex.registry.untrusted import MAX_DEPTH, check_schema, parse_json, parse_yaml


def _depth(value, limit: int = 10_000) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, d = stack.pop()
        deepest = max(deepest, d)
        if d > limit:
            return d
        if isinstance(item, dict):
            stack.extend((v, d + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, d + 1) for v in item)
    return deepest


def _finite(value) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return False
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def _paired(value):
    """``value`` with surrogate pairs written as two escapes ("\\ud83d\\ude00", which PyYAML keeps
    as two code points) joined into the one character JSON reads them as."""
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    if isinstance(value, list):
        return [_paired(v) for v in value]
    if isinstance(value, dict):
        return {_paired(k): _paired(v) for k, v in value.items()}
    return value


# --- targets -----------------------------------------------------------------------------------
def target_json(data: bytes) -> str:
    try:
        value = parse_json(data, "fuzz")
    except LoradexError:
        return "typed"
    try:
        reference = json.loads(data.decode("utf-8-sig") if isinstance(data, bytes) else data)
    except (ValueError, RecursionError):
        raise Finding("parse_json accepted what json.loads refuses") from None
    if value != reference:
        raise Finding("parse_json's value differs from json.loads's")
    if not _finite(value):
        raise Finding("a non-finite number was accepted")
    if _depth(value) > MAX_DEPTH + 1:
        raise Finding(f"a document deeper than {MAX_DEPTH} was accepted")
    return "ok"


def target_yaml(text: str) -> str:
    import yaml

    try:
        value = parse_yaml(text, "fuzz")
    except LoradexError:
        return "typed"
    try:
        again = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise Finding(f"parse_yaml returned something that is not plain JSON data ({exc})") from None
    if again != _paired(value):
        raise Finding("parse_yaml's value does not survive a JSON round-trip")
    if _depth(value) > MAX_DEPTH + 1:
        raise Finding(f"a YAML document deeper than {MAX_DEPTH} was accepted")
    try:
        events = list(yaml.parse(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError:
        raise Finding("parse_yaml accepted text PyYAML cannot parse") from None
    if any(isinstance(e, yaml.AliasEvent) or getattr(e, "anchor", None) for e in events):
        raise Finding("a YAML anchor or alias was accepted")
    return "ok"


def remote_schemas() -> dict[str, dict]:
    """The declared schemas of remote answers and sidecars (those present in this checkout)."""
    import importlib

    found = {}
    for module, names in (("loradex.registry.remotes.civitai_client", ("VERSION_SCHEMA", "MODEL_SCHEMA",
                                                                       "FILE_SCHEMA", "LOOKUP_SCHEMA")),
                          ("loradex.registry.remotes.hub_client", ("MODEL_INFO_SCHEMA", "REFS_SCHEMA")),
                          ("loradex.registry.remotes.hub_manifest", ("MANIFEST_JSON_SCHEMA", "FRONT_MATTER_SCHEMA")),
                          ("loradex.registry.folders.webui_import", ("CIVITAI_SIDECAR_SCHEMA", "A1111_SIDECAR_SCHEMA"))):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        for name in names:
            if isinstance(getattr(mod, name, None), dict):
                found[name] = getattr(mod, name)
    return found


_SCHEMAS: dict[str, dict] = {}


def target_remote(inp: tuple[str, bytes]) -> str:
    from jsonschema import Draft202012Validator

    name, data = inp
    schema = (_SCHEMAS or _SCHEMAS.update(remote_schemas()) or _SCHEMAS)[name]
    try:
        value = check_schema(parse_json(data, name), schema, name)
    except LoradexError:
        return "typed"
    if not Draft202012Validator(schema).is_valid(value):
        raise Finding(f"{name}: a document the schema refuses was accepted")
    return "ok"


def target_sidecar(inp: tuple[bytes, bytes]) -> str:
    """(a .civitai.info sidecar, an A1111 .json sidecar) next to one model file."""
    from loradex.registry.folders.webui_import import read_sidecars

    civitai, a1111 = inp
    with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
        model = Path(tmp) / "model.safetensors"
        model.write_bytes(b"")
        model.with_name("model.civitai.info").write_bytes(civitai)
        model.with_name("model.json").write_bytes(a1111)
        facts = read_sidecars(model)
    if not all(isinstance(t, str) for t in facts.triggers) or not isinstance(facts.base, str):
        raise Finding("sidecar facts of the wrong type")
    if not isinstance(facts.description, str):
        raise Finding("a description that is not a string")
    try:
        json.dumps(facts.extra, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise Finding(f"sidecar extra is not plain JSON ({exc})") from None
    skipped = {name for name, _why in facts.skipped}
    if not skipped <= {"model.civitai.info", "model.json"}:
        raise Finding(f"skipped names a file that is not a sidecar: {sorted(skipped)}")
    expected = _valid_object(a1111, "A1111_SIDECAR_SCHEMA")
    if expected and facts.extra.get("webui") != expected:
        raise Finding("a valid .json sidecar was not read as written")
    if expected is None and "webui" in facts.extra:
        raise Finding("an invalid .json sidecar was read")
    if _valid_object(civitai, "CIVITAI_SIDECAR_SCHEMA") is None and "civitai" in facts.extra:
        raise Finding("an invalid .civitai.info sidecar was read")
    return "ok" if not skipped else "typed"


def _valid_object(data: bytes, schema_name: str):
    """The sidecar's JSON object when it is valid for its schema by a fresh validator and within
    the sidecar cap (independent of the reader), else None."""
    from jsonschema import Draft202012Validator

    from loradex.registry.folders.webui_import import MAX_JSON_SIDECAR

    if len(data) > MAX_JSON_SIDECAR:
        return None
    def no_duplicates(pairs):
        if len({k for k, _ in pairs}) != len(pairs):
            raise ValueError("duplicate key")  # refused by policy: which one would count?
        return dict(pairs)

    try:
        value = json.loads(data.decode("utf-8-sig"), object_pairs_hook=no_duplicates)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or not _finite(value) or _depth(value) > MAX_DEPTH + 1:
        return None
    if not Draft202012Validator(remote_schemas()[schema_name]).is_valid(value):
        return None
    return value


NEW_TARGETS = {"untrusted_json": target_json, "untrusted_yaml": target_yaml,
               "remote_answer": target_remote, "webui_sidecar": target_sidecar}
TARGETS.update(NEW_TARGETS)


# --- seeds and mutation ------------------------------------------------------------------------
CIVITAI_VERSION = {
    "id": 123456, "modelId": 4242, "name": "v1.0", "baseModel": "SD 1.5", "trainedWords": ["shinkai", "sky"],
    "description": "<p>a style</p>", "publishedAt": "2024-01-02T03:04:05.000Z",
    "model": {"name": "Shinkai style", "type": "LORA", "nsfw": False},
    "files": [{"id": 99, "name": "shinkai.safetensors", "type": "Model", "primary": True, "sizeKB": 18.5,
               "downloadUrl": "https://civitai.com/api/download/models/123456",
               "hashes": {"SHA256": "AB" * 32, "AutoV2": "ABCDEF0123"}, "metadata": {"format": "SafeTensor"}}],
    "images": [{"url": "https://image.civitai.com/x.png", "nsfw": "None", "width": 512, "height": 512}],
}
HUB_MODEL_INFO = {
    "id": "team/style", "sha": "a" * 40, "lastModified": "2024-01-01T00:00:00.000Z", "tags": ["lora"],
    "siblings": [{"rfilename": "style.safetensors", "blobId": "b" * 40, "size": 18000,
                  "lfs": {"sha256": "c" * 64, "size": 18000, "pointerSize": 134}},
                 {"rfilename": "loradex.json", "blobId": "d" * 40, "size": 300}],
    "cardData": {"base_model": "runwayml/stable-diffusion-v1-5", "tags": ["lora"]},
}
A1111_META = {"description": "a style", "sd version": "SD1", "activation text": "shinkai, sky",
              "preferred weight": 0.8, "notes": "n"}
MANIFEST = {"loradex": 1, "adapter": "style", "version": "1.0.0", "sha256": "c" * 64,
            "file": "style.safetensors", "kind": "lora", "base": "sd1", "lineage": []}
JSON_SEEDS = [CIVITAI_VERSION, HUB_MODEL_INFO, A1111_META, MANIFEST, [], {}, [CIVITAI_VERSION], {"items": []}]
YAML_SEEDS = [
    "base_model: runwayml/stable-diffusion-v1-5\ntags:\n- lora\n- loradex\nlicense: mit\n",
    "loradex:\n  adapter: style\n  version: 1.0.0\n  sha256: " + "c" * 64 + "\n  lineage: []\n",
    "a: &x [1, 2]\nb: *x\n",
    "date: 2024-01-01\nwhen: 2024-01-01T00:00:00Z\nbin: !!binary aGVsbG8=\n1: one\n",
    "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n",
    "- - - - - - - - - - - - - - - - - x\n",
    "text: |\n  multi\n  line\nnum: .inf\nnan: .nan\n",
]
HOSTILE_VALUES = ["../../etc/passwd", "/abs/path", "abc", "1e999", -1, 0, 2**64, 1e308, 10**400, None, True,
                  "\x1b[2J\u202e", "x" * 5000, [], {}, [[[[[]]]]], {"$ref": "#"}, "NaN", 3.5, "", "\u0000"]
RAW_TEXT_TWEAKS = ["1e999", "NaN", "-Infinity", "[" * 100_000, "{\"a\":" * 5000, "\"\\ud800\"", "\ufeff",
                   "\"a\":1,\"a\":2", "\x00", "9" * 5000, "\"" + "x" * 100 + "\\"]


def mutate_json_value(rng: random.Random, obj):
    """A deep copy of ``obj`` with one field (at any depth) replaced, deleted or retyped."""
    obj = json.loads(json.dumps(obj))
    if not isinstance(obj, (dict, list)) or not obj:
        return rng.choice(HOSTILE_VALUES) if rng.random() < 0.5 else obj
    parent = obj
    while True:
        keys = list(parent.keys()) if isinstance(parent, dict) else list(range(len(parent)))
        if not keys:
            break
        key = rng.choice(keys)
        child = parent[key]
        if isinstance(child, (dict, list)) and child and rng.random() < 0.6:
            parent = child
            continue
        op = rng.random()
        if op < 0.6:
            parent[key] = rng.choice(HOSTILE_VALUES)
        elif op < 0.8 and isinstance(parent, dict):
            del parent[key]
        else:
            parent[key] = [child] * rng.randint(0, 3) if rng.random() < 0.5 else {"v": child}
        break
    return obj


def _json_bytes(rng: random.Random) -> bytes:
    value = mutate_json_value(rng, rng.choice(JSON_SEEDS))
    text = json.dumps(value, allow_nan=True)
    roll = rng.random()
    if roll < 0.3:
        return mutate_text(rng, text, "{}[]\",:0123456789.eE-+\\ntrufalsn \u202e\x1b").encode("utf-8", "surrogatepass")
    if roll < 0.45:
        i = rng.randint(0, len(text))
        return (text[:i] + rng.choice(RAW_TEXT_TWEAKS) + text[i:]).encode("utf-8", "surrogatepass")
    if roll < 0.55:
        return mutate_bytes(rng, text.encode(), [json.dumps(s).encode() for s in JSON_SEEDS])
    return text.encode()


def mutation_input(target: str, rng: random.Random):
    if target == "untrusted_json":
        return _json_bytes(rng)
    if target == "untrusted_yaml":
        seed = rng.choice(YAML_SEEDS)
        return mutate_text(rng, seed, ":-[]{}&*!|>'\"# \n\tabc01.") if rng.random() < 0.8 else \
            json.dumps(mutate_json_value(rng, rng.choice(JSON_SEEDS)))
    if target == "remote_answer":
        if not _SCHEMAS:
            _SCHEMAS.update(remote_schemas())
        return rng.choice(sorted(_SCHEMAS)), _json_bytes(rng)
    civitai = json.dumps(mutate_json_value(rng, CIVITAI_VERSION)).encode()
    a1111 = json.dumps(mutate_json_value(rng, A1111_META)).encode()
    if rng.random() < 0.3:
        civitai = _json_bytes(rng)
    if rng.random() < 0.2:
        a1111 = mutate_bytes(rng, a1111, [a1111])
    return civitai, a1111


def hypothesis_strategy(target: str):
    from hypothesis import strategies as st

    leaves = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
              | st.text(max_size=8))
    values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=20)
    as_json = values.map(lambda v: json.dumps(v).encode())
    if target == "untrusted_json":
        return as_json | st.binary(max_size=200)
    if target == "untrusted_yaml":
        return st.text(max_size=200) | values.map(json.dumps)
    if target == "remote_answer":
        schemas = sorted(remote_schemas())
        return st.tuples(st.sampled_from(schemas), as_json)
    return st.tuples(as_json | st.binary(max_size=100), as_json | st.binary(max_size=100))


def describe(inp) -> str:
    if isinstance(inp, tuple):
        return " | ".join(describe(part) for part in inp)
    return repr(inp[:160]) + ("…" if len(inp) > 160 else "") + f" ({len(inp)} chars/bytes)"
