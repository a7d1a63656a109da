"""The models an image's generation data names: Civitai's image ``meta`` (``civitaiResources``,
``resources``, ``hashes``, ``additionalResources``) and A1111's settings line once parsed
(``Model hash``, ``Lora hashes``, ``TI hashes``, ``Hashes``, ``Civitai resources``; see
``a1111_parameters``) — the same facts under two spellings.

What the hashes are (A1111's ``modules/hashes.py`` and ``extensions-builtin/Lora``):
``Model hash`` is the AutoV2 (10 hex; 8 hex on old images: AutoV1); a ``Lora hashes`` entry is the
first 12 hex of the AutoV3 ("addnet" hash) for a .safetensors file and of the SHA256 for others,
so both are tried; a ``TI hashes`` entry is the first 12 hex of the SHA256.
"""

from __future__ import annotations

import re

from ..errors import UntrustedData
from ..remotes.resolve import ModelNeed, need_from_air
from ..untrusted import check_schema

_ID = {"type": ["integer", "null"], "minimum": 1, "maximum": 2**53}
_TEXT = {"type": ["string", "null"], "maxLength": 4096}
_WEIGHT = {"type": ["number", "string", "null"]}
CIVITAI_RESOURCES_SCHEMA = {"type": "array", "maxItems": 500, "items": {"type": "object", "properties": {
    "type": _TEXT, "modelVersionId": _ID, "modelId": _ID, "modelVersionName": _TEXT, "modelName": _TEXT,
    "weight": _WEIGHT, "strength": _WEIGHT, "air": _TEXT, "hash": _TEXT}}}
RESOURCES_SCHEMA = {"type": "array", "maxItems": 500, "items": {"type": "object", "properties": {
    "name": _TEXT, "type": _TEXT, "weight": _WEIGHT, "hash": _TEXT}}}
ADDITIONAL_SCHEMA = {"type": "array", "maxItems": 500, "items": {"type": "object", "properties": {
    "name": _TEXT, "type": _TEXT, "strength": _WEIGHT, "strengthClip": _WEIGHT}}}
HASHES_SCHEMA = {"type": "object", "maxProperties": 500, "additionalProperties": {"type": "string", "maxLength": 128}}

# Civitai's / A1111's words for a resource's type → the kind resolve reports
TYPE_KINDS = {"checkpoint": "checkpoint", "model": "checkpoint", "lora": "lora", "locon": "lora",
              "lycoris": "lora", "lyco": "lora", "dora": "lora", "embed": "embedding", "embedding": "embedding",
              "textualinversion": "embedding", "ti": "embedding", "vae": "vae", "controlnet": "controlnet",
              "upscaler": "upscaler", "hypernet": "hypernetwork", "hypernetwork": "hypernetwork"}
LORA_TAG_RE = re.compile(r"<(lora|lyco):([^:>]{1,400})(?::([^:>]*))?(?::[^>]*)?>", re.I)
HEX_RE = re.compile(r"\A[0-9a-fA-F]{8,64}\Z")


GENERATION_KEYS = ("civitaiResources", "resources", "hashes", "Model hash", "additionalResources")


def is_generation_data(data) -> bool:
    """Civitai's image ``meta`` (or an /api/v1/images item holding one)."""
    if isinstance(data, dict) and isinstance(data.get("meta"), dict):
        data = data["meta"]
    return isinstance(data, dict) and any(k in data for k in GENERATION_KEYS)


def kind_of(word) -> str:
    return TYPE_KINDS.get(re.sub(r"[^a-z]", "", str(word or "").lower()), "other")


def needs_from_generation(meta: dict, source: str) -> list[ModelNeed]:
    """Every model a generation's data names (Civitai ``meta`` or parsed A1111 settings)."""
    if isinstance(meta.get("meta"), dict) and "civitaiResources" not in meta:
        meta = meta["meta"]  # an /api/v1/images item: the generation data is under "meta"
    weights = prompt_weights(meta.get("prompt"))
    needs: list[ModelNeed] = []
    resources = meta.get("civitaiResources", meta.get("Civitai resources"))
    if resources is not None:
        check_schema(resources, CIVITAI_RESOURCES_SCHEMA, f"{source} civitaiResources")
        for i, r in enumerate(resources):
            needs.append(_civitai_resource(r, f"civitaiResources[{i}]"))
    if meta.get("additionalResources") is not None:
        check_schema(meta["additionalResources"], ADDITIONAL_SCHEMA, f"{source} additionalResources")
        for i, r in enumerate(meta["additionalResources"]):
            kind = kind_of(r.get("type"))
            where = f"additionalResources[{i}]"
            need = need_from_air(r.get("name") or "", kind, weight=_weight(r.get("strength")), source=where)
            needs.append(need or ModelNeed(kind=kind, name=r.get("name"), weight=_weight(r.get("strength")),
                                           source=where))
    if meta.get("resources") is not None:
        check_schema(meta["resources"], RESOURCES_SCHEMA, f"{source} resources")
        for i, r in enumerate(meta["resources"]):
            kind = kind_of(r.get("type"))
            needs.append(ModelNeed(kind=kind, name=r.get("name"), hashes=_short_hashes(kind, r.get("hash"), source),
                                   weight=_weight(r.get("weight")), source=f"resources[{i}]"))
    for key in ("hashes", "Hashes"):
        if meta.get(key) is not None:
            check_schema(meta[key], HASHES_SCHEMA, f"{source} {key}")
            needs.extend(_hashes_object(meta[key], meta.get("Model"), source, key))
    model_hash = meta.get("Model hash")
    if isinstance(model_hash, str) and model_hash.strip():
        needs.append(ModelNeed(kind="checkpoint", name=_text(meta.get("Model")),
                               hashes=_short_hashes("checkpoint", model_hash, source), source="Model hash"))
    elif isinstance(meta.get("Model"), str) and meta["Model"].strip():
        needs.append(ModelNeed(kind="checkpoint", name=meta["Model"].strip()[:4096], source="Model"))
    for key, kind in (("Lora hashes", "lora"), ("TI hashes", "embedding")):
        if isinstance(meta.get(key), str):
            for name, value in _name_hash_pairs(meta[key], source, key):
                needs.append(ModelNeed(kind=kind, name=name, hashes=_short_hashes(kind, value, source),
                                       weight=weights.get(name.lower()) if kind == "lora" else None,
                                       source=key))
    named = {(n.name or "").lower() for n in needs if n.kind == "lora"}
    # Civitai lists every resource in civitaiResources (under its model name, not the tag's):
    # a tag is its own entry only where no such list is given (A1111 before Lora hashes, …)
    tags = {} if resources is not None else weights
    for name, weight in tags.items():
        if name not in named:  # a <lora:…> tag with no hash given for it
            needs.append(ModelNeed(kind="lora", name=name, weight=weight, source="prompt <lora:…> tag"))
    return [_with_weight(n, weights) for n in needs]


def _with_weight(need: ModelNeed, weights: dict) -> ModelNeed:
    if need.kind == "lora" and need.weight is None and need.name and need.name.lower() in weights:
        from dataclasses import replace

        return replace(need, weight=weights[need.name.lower()])
    return need


def _civitai_resource(r: dict, where: str) -> ModelNeed:
    kind = kind_of(r.get("type"))
    weight = _weight(r.get("weight", r.get("strength")))
    if r.get("air"):
        need = need_from_air(r["air"], kind, weight=weight, source=where)
        if need:
            return need
    return ModelNeed(kind=kind, name=r.get("modelName") or r.get("modelVersionName"), weight=weight,
                     civitai_version_id=r.get("modelVersionId"), civitai_model_id=r.get("modelId"), source=where)


def _hashes_object(hashes: dict, model_name, source: str, key: str) -> list[ModelNeed]:
    """Forge's / Civitai's ``{"model": h, "vae": h, "lora:NAME": h, "embed:NAME": h}``."""
    needs = []
    for label, value in hashes.items():
        prefix, sep, name = label.partition(":")
        kind = kind_of(prefix) if sep else ("checkpoint" if label.lower() == "model" else kind_of(label))
        if not sep:
            name = _text(model_name) if kind == "checkpoint" else None
        needs.append(ModelNeed(kind=kind, name=name or None, hashes=_short_hashes(kind, value, source),
                               source=f"{key}[{label[:80]}]"))
    return needs


def _short_hashes(kind: str, value, source: str) -> tuple[tuple[str, str], ...]:
    """The hash kinds a hash of this length can be, most likely first."""
    if value is None or not str(value).strip():
        return ()
    value = str(value).strip().lower()
    if not HEX_RE.match(value):
        raise UntrustedData(source, f"hash {value[:80]!r} is not 8-64 hex digits")
    if len(value) == 64:
        return (("sha256", value), ("autov3", value))
    if len(value) == 10:
        return (("autov2", value),)
    if len(value) == 8:
        return (("autov1", value), ("sha256", value))
    if len(value) == 12 and kind == "lora":
        return (("autov3", value), ("sha256", value))
    return (("sha256", value),)


def _name_hash_pairs(text: str, source: str, key: str) -> list[tuple[str, str]]:
    """``"name: 0123456789ab, other: …"`` (A1111 quotes the list; names may hold spaces)."""
    pairs = []
    for part in text.strip().strip('"').split(","):
        if not part.strip():
            continue
        name, sep, value = part.rpartition(":")
        if not sep or not name.strip():
            raise UntrustedData(source, f"{key}: {part.strip()[:80]!r} is not NAME: HASH")
        pairs.append((name.strip()[:4096], value.strip()))
    if len(pairs) > 500:
        raise UntrustedData(source, f"{key}: more than 500 entries")
    return pairs


def prompt_weights(prompt) -> dict[str, float]:
    """``<lora:NAME:W>`` tags of a prompt (any A1111 name; the first weight is the TE/UNet one)."""
    out: dict[str, float] = {}
    if isinstance(prompt, str):
        for m in LORA_TAG_RE.finditer(prompt[:1 << 20]):
            out.setdefault(m.group(2).strip().lower(), _weight(m.group(3)) if m.group(3) else 1.0)
    return {k: (1.0 if v is None else v) for k, v in out.items()}


def _weight(value) -> float | None:
    try:
        number = float(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and abs(number) < 1e6 else None


def _text(value) -> str | None:
    return value.strip()[:4096] if isinstance(value, str) and value.strip() else None
