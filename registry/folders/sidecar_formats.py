"""The sidecars other model managers keep next to a model file, one registered class per tool.

| name               | file                      | tool                         | kept in ``version.extra`` |
|--------------------|---------------------------|------------------------------|---------------------------|
| ``civitai-helper`` | ``<stem>.civitai.info``   | Civitai Helper (A1111/Forge) | ``civitai`` (+ ``info``)  |
| ``a1111``          | ``<stem>.json``           | A1111 / Forge user metadata  | ``webui``                 |
| ``lora-manager``   | ``<stem>.metadata.json``  | ComfyUI LoRA Manager         | ``lora_manager``          |
| ``stability-matrix``| ``<stem>.cm-info.json``  | Stability Matrix             | ``stability_matrix``      |

Each format reads a sidecar into :class:`SidecarClaims` (what it says in loradex's words: trigger
words, the base family and variant through ``loradex.families.vocabulary.normalise``, the Civitai
ids and the SHA256 it names) and writes one from a catalog version. ``loradex import`` reads every
format; ``export`` / ``sync-folder`` write the ones ``--sidecars`` names (:data:`DEFAULT_WRITE`
otherwise: what they always wrote).

Every sidecar is data from outside: read with a size cap, parsed by ``untrusted.parse_json``
(depth, node and string caps), then checked against the format's schema. Per field:

- a field import uses with the wrong type (``TrainedWords: 5``, ``civitai: "x"``) refuses the
  whole sidecar, one line naming the field (it is then reported as ``skipped``);
- a trigger word longer than :data:`MAX_TRIGGER_CHARS`, past :data:`MAX_TRIGGERS`, or not a string
  is dropped with a note; LoRA Manager's ``usage_tips`` (JSON inside a string) that does not parse
  is ignored with a note;
- paths a sidecar names (``file_path``, ``preview_url``) are kept as text, never opened or used as
  a path; written sidecars name files from the catalog only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from loradex.families.vocabulary import a1111_sd_version, civitai_base_model, normalise

from ..errors import UntrustedData, UsageError
from ..untrusted import check_schema, parse_json

MAX_TRIGGERS = 100  # trigger words kept from one sidecar
MAX_TRIGGER_CHARS = 200  # a longer "trigger word" is a paragraph, not a word
MAX_USAGE_TIPS = 4096  # LoRA Manager's usage_tips JSON-in-a-string

_TEXT = {"type": ["string", "null"]}
_ID = {"type": ["integer", "string", "null"]}
_WORDS = {"type": ["array", "string", "null"], "items": {"type": ["string", "null"]}}


@dataclass
class SidecarClaims:
    """What one sidecar says, in loradex's words (empty fields: it says nothing about them)."""

    source: str  # the format's name
    file: str  # the sidecar's file name
    triggers: list[str] = field(default_factory=list)
    description: str = ""
    base: tuple[str, str | None] | None = None  # (family, variant) from the label it states
    base_label: str = ""  # the label as written (for notes)
    civitai: dict | None = None  # provenance-shaped (modelId, versionId, baseModel …) when it names Civitai
    sha256: str | None = None  # the model's sha256 as the sidecar states it
    extra: dict = field(default_factory=dict)  # version.extra[key] = value
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExportView:
    """What a writer may use: the catalog version and adapter, its family/variant, and the names of
    the files written beside it (``root``: the folder's absolute path when known)."""

    version: object
    adapter: object
    family: str | None
    variant: str | None
    stem: str
    model_rel: str
    preview_rel: str | None = None
    root: str | None = None
    model_sha256: str = ""  # of the model file as written (converted or not)
    model_size: int = 0

    def absolute(self, rel: str | None) -> str:
        if rel is None:
            return ""
        return f"{self.root.rstrip('/')}/{rel}" if self.root else rel


class SidecarFormat:
    """One tool's sidecar: its file suffix, schema, and reader/writer."""

    name: str = ""
    title: str = ""
    suffix: str = ""  # the sidecar is ``<model stem><suffix>``
    extra_key: str = ""  # where import keeps what it read
    schema: dict = {}
    writes_preview: bool = False  # the tool shows ``<stem>.preview.<ext>`` (written with it)
    user_typed: bool = False  # its trigger words are what a user typed (listed first on import)

    def read(self, data: dict, model_name: str, file_name: str = "") -> SidecarClaims:
        raise NotImplementedError

    def render(self, view: ExportView) -> dict | None:
        """The sidecar's JSON for a version; None when this tool has nothing to say about it."""
        raise NotImplementedError

    def parse(self, raw: bytes, file_name: str, max_bytes: int) -> dict:
        """Caps, then the schema: raises UntrustedData (one line) when the sidecar is refused."""
        return check_schema(parse_json(raw, file_name, max_bytes=max_bytes), self.schema, file_name)


SIDECAR_FORMATS: dict[str, SidecarFormat] = {}
DEFAULT_WRITE = ("a1111", "civitai-helper")  # what export / sync-folder wrote before --sidecars


def register_sidecar(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        cls.name = name
        SIDECAR_FORMATS[name] = cls()
        return cls
    return deco


def sidecar_format(name: str) -> SidecarFormat:
    try:
        return SIDECAR_FORMATS[name]
    except KeyError:
        raise UsageError(f"unknown sidecar format {name!r}",
                         hint=f"use any of {', '.join(SIDECAR_FORMATS)} (comma-separated), or none") from None


def parse_sidecar_list(text: str | None) -> tuple[str, ...]:
    """``--sidecars civitai-helper,lora-manager`` → the names, checked; None → the defaults;
    ``none`` (or an empty string) → no sidecars."""
    if text is None:
        return DEFAULT_WRITE
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names in ([], ["none"]):
        return ()
    return tuple(dict.fromkeys(sidecar_format(n).name for n in names))


# --- shared helpers -----------------------------------------------------------------------------
def words(value, claims: SidecarClaims | None = None, what: str = "trigger word") -> list[str]:
    """Trigger words from a list or a comma-separated string; oversized ones dropped (noted)."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list):
        return []
    out: list[str] = []
    dropped = 0
    for w in value:
        w = w.strip() if isinstance(w, str) else ""
        if not w:
            continue
        if len(w) > MAX_TRIGGER_CHARS or len(out) >= MAX_TRIGGERS:
            dropped += 1
            continue
        out.append(w)
    if dropped and claims is not None:
        claims.notes.append(f"{claims.file}: {dropped} {what}(s) dropped (over {MAX_TRIGGER_CHARS} characters "
                            f"or past the first {MAX_TRIGGERS})")
    return list(dict.fromkeys(out))


def base_of(label, *sources: str) -> tuple[str, str | None] | None:
    """(family, variant) a base-model label names, asking the families' vocabulary in the
    spellings of ``sources`` in turn (civitai: ``"Illustrious"``, a1111: ``"SDXL"``)."""
    text = str(label or "")
    for source in sources:
        found = normalise(text, source)
        if found:
            return found
    return None


def _int_or_none(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit() and len(value) < 19:
        return int(value)
    return None


def _sha(value) -> str | None:
    text = str(value or "").strip().lower()
    return text if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else None


def civitai_extra(info: dict, file_name: str | None = None) -> dict:
    """``extra["civitai"]`` in the shape ``pull civitai:…`` stores (Civitai's own field names,
    see ``registry.remotes.civitai.provenance``), plus the whole version JSON under ``info`` so
    ``export`` writes the sidecar back as it was."""
    from ..remotes.civitai import provenance

    files = [f for f in info.get("files") or [] if isinstance(f, dict)]
    file = next((f for f in files if file_name and f.get("name") == file_name), None) \
        or next((f for f in files if f.get("primary")), None) or (files[0] if files else {})
    civ = provenance(info, file, endpoint=None, how="sidecar")
    civ["trainedWords"] = words(info.get("trainedWords"))
    civ["images"] = [im for im in info.get("images") or [] if isinstance(im, dict)]
    civ["info"] = info
    return civ


def _file_sha(civ: dict) -> str | None:
    hashes = civ.get("hashes") if isinstance(civ.get("hashes"), dict) else {}
    return _sha(next((v for k, v in hashes.items() if str(k).upper() == "SHA256"), None))


def civitai_info(version, adapter) -> dict | None:
    """The Civitai version JSON when it is known: as imported from a sidecar, or rebuilt from
    what ``pull civitai:…`` keeps (``extra["civitai"]``: versionId, modelId, modelName, …)."""
    civ = version.extra.get("civitai")
    if not isinstance(civ, dict):
        return None
    if isinstance(civ.get("info"), dict):
        return civ["info"]
    if civ.get("versionId") is None:
        return None
    hashes = {"SHA256": version.sha256.upper(), "AutoV2": version.autov2.upper()}
    if version.autov1:
        hashes["AutoV1"] = version.autov1.upper()
    if version.autov3:
        hashes["AutoV3"] = version.autov3[:12].upper()
    return {
        "id": civ["versionId"], "modelId": civ.get("modelId"), "name": civ.get("versionName") or version.version,
        "description": civ.get("description") or adapter.description, "baseModel": civ.get("baseModel"),
        "baseModelType": civ.get("baseModelType"),
        "trainedWords": list(civ.get("trainedWords") or version.trigger_words),
        "model": {"name": civ.get("modelName") or adapter.name, "type": civ.get("modelType") or "LORA",
                  "nsfw": bool(civ.get("nsfw"))},
        "images": list(civ.get("images") or []),
        "files": [{"id": civ.get("fileId"), "name": version.file_name, "sizeKB": version.size / 1024,
                   "type": "Model", "primary": True, "hashes": hashes}],
        "downloadUrl": civ.get("downloadUrl"),
    }


def a1111_metadata(version, adapter) -> dict:
    """The ``<name>.json`` A1111 shows in its "edit metadata" dialog."""
    webui = version.extra.get("webui") if isinstance(version.extra.get("webui"), dict) else {}
    base = version.probe.get("base") or adapter.base
    if base in (None, "unknown"):
        base = adapter.base
    activation = webui.get("activation text") or ", ".join(version.trigger_words)
    notes = webui.get("notes") or ""
    stamp = f"loradex {version.ref} sha256:{version.sha256[:12]}"
    return {
        "description": webui.get("description") or adapter.description or "",
        "sd version": a1111_sd_version(base),
        "activation text": activation,
        "preferred weight": webui.get("preferred weight", 0),
        "notes": f"{notes}\n{stamp}".strip() if stamp not in notes else notes,
    }


def _preferred_weight(version) -> float | None:
    """The weight a user set in any manager (A1111 ``preferred weight``, LoRA Manager's
    ``usage_tips.strength``), None when nobody did."""
    webui = version.extra.get("webui") if isinstance(version.extra.get("webui"), dict) else {}
    for value in (webui.get("preferred weight"), (version.extra.get("lora_manager") or {}).get("strength")):
        try:
            weight = float(value)
        except (TypeError, ValueError):
            continue
        if weight:
            return weight
    return None


# --- Civitai Helper -------------------------------------------------------------------------------
CIVITAI_SIDECAR_SCHEMA = {
    "type": "object",
    "properties": {
        "id": _ID, "modelId": _ID, "name": _TEXT, "description": _TEXT, "baseModel": _TEXT,
        "baseModelType": _TEXT, "publishedAt": _TEXT, "downloadUrl": _TEXT, "trainedWords": _WORDS,
        "model": {"type": ["object", "null"], "properties": {
            "name": _TEXT, "type": _TEXT, "nsfw": {"type": ["boolean", "null"]}, "description": _TEXT}},
        "images": {"type": ["array", "null"], "items": {"type": "object"}},
        "files": {"type": ["array", "null"], "items": {"type": "object", "properties": {
            "id": _ID, "name": _TEXT, "type": _TEXT, "primary": {"type": ["boolean", "null"]},
            "sizeKB": {"type": ["number", "null"]}, "downloadUrl": _TEXT,
            "hashes": {"type": ["object", "null"], "additionalProperties": _TEXT},
            "metadata": {"type": ["object", "null"]}}}},
    },
}


@register_sidecar("civitai-helper")
class CivitaiHelperSidecar(SidecarFormat):
    title = "Civitai Helper"
    suffix = ".civitai.info"
    extra_key = "civitai"
    schema = CIVITAI_SIDECAR_SCHEMA
    writes_preview = True

    def read(self, data: dict, model_name: str, file_name: str = "") -> SidecarClaims:
        claims = SidecarClaims(self.name, file_name)
        civ = civitai_extra(data, model_name)
        model_info = data.get("model") if isinstance(data.get("model"), dict) else {}
        claims.extra = civ
        claims.civitai = civ
        claims.triggers = civ["trainedWords"]
        claims.description = str(data.get("description") or model_info.get("description") or "")
        claims.base_label = str(data.get("baseModel") or "")
        claims.base = base_of(claims.base_label, "civitai")
        claims.sha256 = _file_sha(civ)
        return claims

    def render(self, view: ExportView) -> dict | None:
        return civitai_info(view.version, view.adapter)


# --- A1111 user metadata ------------------------------------------------------------------------------
A1111_SIDECAR_SCHEMA = {
    "type": "object",
    "properties": {
        "description": _TEXT, "sd version": _TEXT, "activation text": _TEXT, "notes": _TEXT,
        "preferred weight": {"type": ["number", "string", "null"]},
    },
}


@register_sidecar("a1111")
class A1111Sidecar(SidecarFormat):
    title = "A1111 user metadata"
    suffix = ".json"
    extra_key = "webui"
    schema = A1111_SIDECAR_SCHEMA
    user_typed = True

    def read(self, data: dict, model_name: str, file_name: str = "") -> SidecarClaims:
        claims = SidecarClaims(self.name, file_name, extra=data)
        claims.triggers = words(data.get("activation text"))
        claims.description = str(data.get("description") or "")
        claims.base_label = str(data.get("sd version") or "")
        claims.base = base_of(claims.base_label, "a1111", "civitai")
        return claims

    def render(self, view: ExportView) -> dict | None:
        return a1111_metadata(view.version, view.adapter)


# --- ComfyUI LoRA Manager -----------------------------------------------------------------------------
# ``<stem>.metadata.json`` (LoRA Manager's ``BaseModelMetadata`` / ``LoraMetadata``): ``civitai`` holds
# Civitai's version JSON (the same shape as a ``.civitai.info``), ``usage_tips`` a JSON object in a string.
LORA_MANAGER_SCHEMA = {
    "type": "object",
    "properties": {
        "file_name": _TEXT, "model_name": _TEXT, "file_path": _TEXT, "size": {"type": ["number", "null"]},
        "modified": {"type": ["number", "null"]}, "sha256": _TEXT, "base_model": _TEXT, "preview_url": _TEXT,
        "preview_nsfw_level": {"type": ["integer", "null"]}, "notes": _TEXT,
        "from_civitai": {"type": ["boolean", "null"]}, "civitai": {**CIVITAI_SIDECAR_SCHEMA, "type": ["object", "null"]},
        "tags": {"type": ["array", "null"], "items": {"type": "string"}}, "modelDescription": _TEXT,
        "usage_tips": _TEXT, "civitai_deleted": {"type": ["boolean", "null"]},
        "favorite": {"type": ["boolean", "null"]}, "exclude": {"type": ["boolean", "null"]},
    },
}


@register_sidecar("lora-manager")
class LoraManagerSidecar(SidecarFormat):
    title = "ComfyUI LoRA Manager"
    suffix = ".metadata.json"
    extra_key = "lora_manager"
    schema = LORA_MANAGER_SCHEMA
    writes_preview = True

    def read(self, data: dict, model_name: str, file_name: str = "") -> SidecarClaims:
        claims = SidecarClaims(self.name, file_name)
        keep = {k: data[k] for k in ("model_name", "base_model", "notes", "tags", "modelDescription",
                                     "from_civitai", "civitai_deleted", "favorite", "preview_nsfw_level")
                if data.get(k) not in (None, "", [])}
        tips = self._usage_tips(data.get("usage_tips"), claims)
        if tips:
            keep["usage_tips"] = tips
            if isinstance(tips.get("strength"), (int, float)) and not isinstance(tips["strength"], bool):
                keep["strength"] = tips["strength"]
        civ_info = data.get("civitai") if isinstance(data.get("civitai"), dict) else {}
        claims.triggers = words(civ_info.get("trainedWords"), claims)
        if civ_info.get("id") is not None:
            claims.civitai = civitai_extra(civ_info, model_name)
        claims.description = str(data.get("modelDescription") or civ_info.get("description") or "")
        claims.base_label = str(data.get("base_model") or civ_info.get("baseModel") or "")
        claims.base = base_of(claims.base_label, "civitai")
        # the Civitai file's own SHA256 says whether this file is Civitai's; LoRA Manager's sha256
        # (of the file it sat beside) only when Civitai's info gives none
        claims.sha256 = (_file_sha(claims.civitai) if claims.civitai else None) or _sha(data.get("sha256"))
        claims.extra = keep
        return claims

    @staticmethod
    def _usage_tips(raw, claims: SidecarClaims) -> dict:
        if not raw:
            return {}
        try:
            tips = parse_json(raw, "usage_tips", max_bytes=MAX_USAGE_TIPS, max_depth=2)
        except UntrustedData as exc:
            claims.notes.append(f"{claims.file}: usage_tips ignored ({str(exc).split(': ', 1)[-1]})")
            return {}
        if not isinstance(tips, dict):
            claims.notes.append(f"{claims.file}: usage_tips ignored (not a JSON object)")
            return {}
        return {k: v for k, v in tips.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}

    def render(self, view: ExportView) -> dict | None:
        v, adapter = view.version, view.adapter
        stored = v.extra.get("lora_manager") if isinstance(v.extra.get("lora_manager"), dict) else {}
        info = civitai_info(v, adapter)
        civ = info if info is not None else {"trainedWords": list(v.trigger_words)}
        tips = dict(stored.get("usage_tips") or {})
        weight = _preferred_weight(v)
        if weight is not None:
            tips.setdefault("strength", weight)
        created = v.created_at.timestamp() if v.created_at else 0.0
        return {
            "file_name": view.model_rel.rpartition("/")[2].rpartition(".")[0] or view.stem, "model_name": stored.get("model_name") or adapter.name,
            "file_path": view.absolute(view.model_rel), "size": view.model_size or v.size, "modified": created,
            "sha256": view.model_sha256 or v.sha256, "base_model": civitai_base_model(view.family, view.variant),
            "preview_url": view.absolute(view.preview_rel), "preview_nsfw_level": stored.get("preview_nsfw_level", 0),
            "notes": stored.get("notes") or f"loradex {v.ref}", "from_civitai": info is not None,
            "civitai": civ, "tags": list(stored.get("tags") or []),
            "modelDescription": stored.get("modelDescription") or adapter.description or "",
            "civitai_deleted": bool(stored.get("civitai_deleted")), "favorite": bool(stored.get("favorite")),
            "exclude": False, "db_checked": False, "last_checked_at": 0,
            "usage_tips": json.dumps(tips),
        }


# --- Stability Matrix ---------------------------------------------------------------------------------
# ``<stem>.cm-info.json`` (Stability Matrix's ``ConnectedModelInfo``, PascalCase).
STABILITY_MATRIX_SCHEMA = {
    "type": "object",
    "properties": {
        "ModelId": _ID, "ModelName": _TEXT, "ModelDescription": _TEXT, "Nsfw": {"type": ["boolean", "null"]},
        "Tags": {"type": ["array", "null"], "items": {"type": "string"}}, "ModelType": {"type": ["string", "integer", "null"]},
        "VersionId": _ID, "VersionName": _TEXT, "VersionDescription": _TEXT, "AuthorUsername": _TEXT,
        "BaseModel": _TEXT, "RemoteFileName": _TEXT, "RemoteFileId": _ID, "ImportedAt": _TEXT,
        "Hashes": {"type": ["object", "null"], "additionalProperties": _TEXT}, "TrainedWords": _WORDS,
        "UserTitle": _TEXT, "ThumbnailImageUrl": _TEXT,
    },
}
_SM_TYPES = {"lora": "LORA", "lycoris": "LoCon", "embedding": "TextualInversion", "checkpoint": "Checkpoint"}


@register_sidecar("stability-matrix")
class StabilityMatrixSidecar(SidecarFormat):
    title = "Stability Matrix"
    suffix = ".cm-info.json"
    extra_key = "stability_matrix"
    schema = STABILITY_MATRIX_SCHEMA
    writes_preview = True

    def read(self, data: dict, model_name: str, file_name: str = "") -> SidecarClaims:
        claims = SidecarClaims(self.name, file_name)
        keep = {k: data[k] for k in ("ModelName", "VersionName", "BaseModel", "Tags", "UserTitle", "ImportedAt",
                                     "AuthorUsername", "Nsfw") if data.get(k) not in (None, "", [])}
        claims.triggers = words(data.get("TrainedWords"), claims)
        claims.description = str(data.get("VersionDescription") or data.get("ModelDescription") or "")
        claims.base_label = str(data.get("BaseModel") or "")
        claims.base = base_of(claims.base_label, "civitai")
        hashes = data.get("Hashes") or {}
        claims.sha256 = _sha(next((v for k, v in hashes.items() if k.upper() == "SHA256"), None))
        version_id = _int_or_none(data.get("VersionId"))
        if version_id is not None:
            claims.civitai = {
                "modelId": _int_or_none(data.get("ModelId")), "versionId": version_id,
                "fileId": _int_or_none(data.get("RemoteFileId")), "modelName": data.get("ModelName"),
                "modelType": data.get("ModelType") if isinstance(data.get("ModelType"), str) else None,
                "nsfw": data.get("Nsfw"), "versionName": data.get("VersionName"), "baseModel": data.get("BaseModel"),
                "trainedWords": claims.triggers, "description": claims.description,
                "fileName": data.get("RemoteFileName"), "hashes": dict(hashes), "via": "sidecar",
            }
        claims.extra = keep
        return claims

    def render(self, view: ExportView) -> dict | None:
        v, adapter = view.version, view.adapter
        stored = v.extra.get("stability_matrix") if isinstance(v.extra.get("stability_matrix"), dict) else {}
        civ = v.extra.get("civitai") if isinstance(v.extra.get("civitai"), dict) else {}
        hashes = {"SHA256": v.sha256.upper(), "AutoV2": v.autov2.upper()}
        if v.autov1:
            hashes["AutoV1"] = v.autov1.upper()
        created = v.created_at or datetime.fromtimestamp(0, timezone.utc)  # fixed: a re-sync rewrites nothing
        imported = stored.get("ImportedAt") or (created if created.tzinfo else created.replace(tzinfo=timezone.utc)).isoformat()
        out = {
            "ModelId": civ.get("modelId"), "ModelName": civ.get("modelName") or stored.get("ModelName") or adapter.name,
            "ModelDescription": adapter.description or "", "Nsfw": bool(civ.get("nsfw") or stored.get("Nsfw")),
            "Tags": list(stored.get("Tags") or []), "ModelType": civ.get("modelType") or _SM_TYPES.get(adapter.kind, "LORA"),
            "VersionId": civ.get("versionId"), "VersionName": civ.get("versionName") or v.version,
            "VersionDescription": civ.get("description") or None,
            "BaseModel": civitai_base_model(view.family, view.variant), "RemoteFileName": civ.get("fileName"),
            "RemoteFileId": civ.get("fileId"), "ImportedAt": imported, "Hashes": hashes,
            "TrainedWords": list(v.trigger_words), "UserTitle": stored.get("UserTitle") or adapter.name,
        }
        return {k: val for k, val in out.items() if val is not None}  # as SM writes: nulls left out


__all__ = ["SIDECAR_FORMATS", "DEFAULT_WRITE", "SidecarFormat", "SidecarClaims", "ExportView", "register_sidecar",
           "sidecar_format", "parse_sidecar_list", "civitai_extra", "civitai_info", "a1111_metadata", "words",
           "CIVITAI_SIDECAR_SCHEMA", "A1111_SIDECAR_SCHEMA", "LORA_MANAGER_SCHEMA", "STABILITY_MATRIX_SCHEMA"]
