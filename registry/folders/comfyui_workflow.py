"""The models a ComfyUI workflow needs, read from either of its JSON formats.

* **UI format** (what the frontend saves, and the ``workflow`` chunk of its PNGs): ``nodes[]``
  with ``type``, ``mode`` (2 muted, 4 bypassed: those load nothing) and ``widgets_values``;
  templates add ``properties.models`` on a node, or ``models`` at the top:
  ``[{name, url, hash, hash_type, directory}]``.
* **API format** (what ``/prompt`` runs, the ``prompt`` chunk): ``{id: {class_type, inputs}}``.

Loader nodes are a table (:data:`LOADER_NODES`: node type → the model kind, the input name and
its widget index); custom stacks are read by shape: rgthree's Power Lora Loader keeps one
``{"on", "lora", "strength"}`` object per LoRA, ComfyUI LoRA Manager's loaders a ``loras`` list
of ``{"name", "strength", "active"}`` (under ``__value__`` in the API format). A name that is an
AIR URN (Civitai's generator writes ``urn:air:sdxl:lora:civitai:MODEL@VERSION`` as the file
name) is read as one; ``embedding:NAME`` in a text widget names an embedding.
"""

from __future__ import annotations

import re

from ..errors import UntrustedData
from ..remotes.resolve import ModelNeed, need_from_air
from ..untrusted import check_schema

_NAME = {"type": "string", "maxLength": 4096}
_NODE = {"type": "object", "properties": {
    "id": {"type": ["integer", "string"]}, "type": {"type": "string", "maxLength": 512},
    "mode": {"type": ["integer", "null"]}, "widgets_values": {"type": ["array", "object", "null"]},
    "properties": {"type": ["object", "null"]}}}
MODEL_FILE_SCHEMA = {"type": "object", "required": ["name"], "properties": {
    "name": _NAME, "url": {"type": ["string", "null"], "maxLength": 8192},
    "hash": {"type": ["string", "null"], "maxLength": 128}, "hash_type": {"type": ["string", "null"], "maxLength": 32},
    "directory": {"type": ["string", "null"], "maxLength": 256}}}
UI_SCHEMA = {"type": "object", "required": ["nodes"], "properties": {
    "nodes": {"type": "array", "maxItems": 20_000, "items": _NODE},
    "models": {"type": "array", "maxItems": 1000, "items": MODEL_FILE_SCHEMA}}}
API_NODE_SCHEMA = {"type": "object", "required": ["class_type"], "properties": {
    "class_type": {"type": "string", "maxLength": 512}, "inputs": {"type": "object"}}}
MODELS_LIST_SCHEMA = {"type": "array", "maxItems": 1000, "items": MODEL_FILE_SCHEMA}

MUTED_MODES = frozenset({2, 4})  # LiteGraph: 2 = never (muted), 4 = bypass

# node type → [(kind, input name, widget index, weight input name or None)]
LOADER_NODES: dict[str, list[tuple[str, str, int, str | None]]] = {
    "CheckpointLoaderSimple": [("checkpoint", "ckpt_name", 0, None)],
    "CheckpointLoader": [("checkpoint", "ckpt_name", 1, None)],
    "ImageOnlyCheckpointLoader": [("checkpoint", "ckpt_name", 0, None)],
    "unCLIPCheckpointLoader": [("checkpoint", "ckpt_name", 0, None)],
    "UNETLoader": [("unet", "unet_name", 0, None)],
    "CLIPLoader": [("clip", "clip_name", 0, None)],
    "DualCLIPLoader": [("clip", "clip_name1", 0, None), ("clip", "clip_name2", 1, None)],
    "TripleCLIPLoader": [("clip", f"clip_name{i}", i - 1, None) for i in (1, 2, 3)],
    "QuadrupleCLIPLoader": [("clip", f"clip_name{i}", i - 1, None) for i in (1, 2, 3, 4)],
    "VAELoader": [("vae", "vae_name", 0, None)],
    "LoraLoader": [("lora", "lora_name", 0, "strength_model")],
    "LoraLoaderModelOnly": [("lora", "lora_name", 0, "strength_model")],
    "ControlNetLoader": [("controlnet", "control_net_name", 0, None)],
    "UpscaleModelLoader": [("upscaler", "model_name", 0, None)],
    "CLIPVisionLoader": [("clip_vision", "clip_name", 0, None)],
    "StyleModelLoader": [("style_model", "style_model_name", 0, None)],
}
WEIGHT_WIDGET = {"LoraLoader": 1, "LoraLoaderModelOnly": 1}
TEXT_NODES = frozenset({"CLIPTextEncode", "CLIPTextEncodeSDXL", "CLIPTextEncodeFlux"})
# ComfyUI's model folders (a template's ``directory``) → the kind of model kept there
DIRECTORY_KINDS = {
    "loras": "lora", "lora": "lora", "checkpoints": "checkpoint", "diffusion_models": "unet", "unet": "unet",
    "text_encoders": "clip", "clip": "clip", "vae": "vae", "embeddings": "embedding",
    "controlnet": "controlnet", "upscale_models": "upscaler", "clip_vision": "clip_vision",
    "style_models": "style_model",
}
EMBEDDING_RE = re.compile(r"embedding:([A-Za-z0-9_.\-/\\ ]+?)(?=[\s,():]|\Z)")


def is_ui_workflow(data) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def is_api_prompt(data) -> bool:
    return (isinstance(data, dict) and bool(data)
            and all(isinstance(v, dict) and "class_type" in v for v in data.values()))


def is_template_models(data) -> bool:
    return isinstance(data, dict) and isinstance(data.get("models"), list) and "nodes" not in data


# --- UI format -----------------------------------------------------------------------------
def needs_from_ui(data: dict, source: str) -> list[ModelNeed]:
    check_schema(data, UI_SCHEMA, source)
    needs: list[ModelNeed] = []
    for node in data["nodes"]:
        node_type = node.get("type") or ""
        where = f"node {node.get('id')} ({node_type})"
        models = (node.get("properties") or {}).get("models")
        if models is not None:
            needs.extend(needs_from_model_files(models, f"{source} {where}", where))
        if node.get("mode") in MUTED_MODES:
            continue
        widgets = node.get("widgets_values")
        values = widgets if isinstance(widgets, list) else []
        for kind, input_name, index, _weight in LOADER_NODES.get(node_type, ()):
            name = widgets.get(input_name) if isinstance(widgets, dict) else _at(values, index)
            weight = _number(_at(values, WEIGHT_WIDGET[node_type])) if node_type in WEIGHT_WIDGET else None
            need = _named(kind, name, weight, where)
            if need:
                needs.append(need)
        needs.extend(_stack_needs(widgets, where))
        if node_type in TEXT_NODES:
            needs.extend(_embeddings(values, where))
    needs.extend(needs_from_model_files(data.get("models") or [], source, "models"))
    return needs


def _at(values: list, index: int):
    return values[index] if 0 <= index < len(values) else None


# --- API format ----------------------------------------------------------------------------
def needs_from_api(data: dict, source: str) -> list[ModelNeed]:
    needs: list[ModelNeed] = []
    if len(data) > 20_000:
        raise UntrustedData(source, f"{len(data)} nodes, over the 20000 cap")
    for node_id, node in data.items():
        check_schema(node, API_NODE_SCHEMA, f"{source} node {node_id}")
        node_type = node["class_type"]
        inputs = node.get("inputs") or {}
        where = f"node {node_id} ({node_type})"
        for kind, input_name, _index, weight_name in LOADER_NODES.get(node_type, ()):
            weight = _number(inputs.get(weight_name)) if weight_name else None
            need = _named(kind, inputs.get(input_name), weight, where)
            if need:
                needs.append(need)
        needs.extend(_stack_needs(inputs, where))
        if node_type in TEXT_NODES:
            needs.extend(_embeddings([v for v in inputs.values() if isinstance(v, str)], where))
    return needs


# --- custom LoRA stacks (read by shape) ----------------------------------------------------
def _stack_needs(widgets, where: str) -> list[ModelNeed]:
    """rgthree Power Lora Loader (``{"on", "lora", "strength"}`` per row) and LoRA Manager
    (``loras``: ``[{"name", "strength", "active"}]``, maybe under ``__value__``) rows."""
    rows: list[dict] = []
    items = widgets.values() if isinstance(widgets, dict) else widgets if isinstance(widgets, list) else ()
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("__value__"), list):
            item = item["__value__"]
        if isinstance(item, dict) and "lora" in item:
            rows.append(item)
        elif isinstance(item, list):
            rows.extend(r for r in item if isinstance(r, dict) and "name" in r
                        and ("strength" in r or "active" in r))
    needs = []
    for row in rows:
        if row.get("on") is False or row.get("active") is False:
            continue  # switched off in the stack: not loaded
        need = _named("lora", row.get("lora", row.get("name")), _number(row.get("strength")), where)
        if need:
            needs.append(need)
    return needs


def _embeddings(texts, where: str) -> list[ModelNeed]:
    out = []
    for text in texts:
        if isinstance(text, str):
            for m in EMBEDDING_RE.finditer(text):
                out.append(ModelNeed(kind="embedding", name=m.group(1).strip(), source=where))
    return out


def _named(kind: str, name, weight, where: str) -> ModelNeed | None:
    if not isinstance(name, str) or not name.strip() or name.strip().lower() == "none":
        return None  # an input fed by a link (API: ["4", 0]) or an empty choice names no file
    name = name.strip()[:4096]
    return need_from_air(name, kind, weight=weight, source=where) or ModelNeed(
        kind=kind, name=name, weight=weight, source=where)


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# --- template model lists ------------------------------------------------------------------
def needs_from_model_files(models, source: str, where: str) -> list[ModelNeed]:
    """A template's ``[{name, url, hash, hash_type, directory}]``."""
    check_schema(models, MODELS_LIST_SCHEMA, source)
    needs = []
    for entry in models:
        hashes = ()
        value = (entry.get("hash") or "").strip().lower()
        hash_type = (entry.get("hash_type") or "sha256").strip().lower()
        if value:
            if hash_type != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", value):
                raise UntrustedData(source, f"models entry {entry['name'][:80]!r}: hash must be 64 hex "
                                            f"digits of hash_type SHA256, got {hash_type} {value[:80]!r}")
            hashes = (("sha256", value),)
        kind = DIRECTORY_KINDS.get((entry.get("directory") or "").strip("/").lower(), "other")
        needs.append(ModelNeed(kind=kind, name=entry["name"], hashes=hashes, url=entry.get("url") or None,
                               source=f"{where} properties.models" if where != "models" else "models"))
    return needs
