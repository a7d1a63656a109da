"""What one catalog version looks like in a Hugging Face Hub repo, and back.

One Hub repo per adapter; one commit (tagged ``vX.Y.Z``) per version, holding:

* ``<name>.safetensors`` — the version's file as stored (kohya or whatever it is), and, when the
  remote's settings ask for it, ``pytorch_lora_weights.safetensors`` in diffusers format (a
  converter is passed in: registry/ does not import merge/);
* ``loradex.json`` — the manifest (``MANIFEST_SCHEMA``): version, hashes, probe facts, lineage,
  recipe, the aliases that pointed at it when pushed, and the paths of the records and the card;
* ``records/<id>.json`` + ``records/<id>.png`` — prompt records and their sample images;
* ``evaluation/card.json`` — the newest evaluation card, if there is one;
* ``README.md`` — a Hub model card (YAML front matter the Hub and diffusers understand).

Everything written is a pure function of catalog state (no push time, keys sorted), so pushing
the same version twice produces the same bytes and the Hub client sends nothing the second time.
No network here; registry.remotes.hub does the transfers.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from loradex.families.vocabulary import default_hub_repo, family_from_hub_id, stored_variant

from ..errors import NotFound, UnsupportedFormat, UntrustedData, UsageError
from ..untrusted import check_schema, parse_yaml, read_json_file

MANIFEST_NAME = "loradex.json"
MANIFEST_SCHEMA = "loradex.hub-manifest/1"
README_NAME = "README.md"
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
CARD_PATH = "evaluation/card.json"
RECORDS_DIR = "records"
MAX_WIDGETS = 8

Converter = Callable[..., object]  # loradex.merge.conventions.convert.convert_file(src, dest, to, base=, ...)

# --- what a pulled manifest must look like (only fields a pull reads are constrained) ---------
# A repo path named by a manifest: plain segments (no "."/".." and no glob characters, since the
# paths also select what to download).
_REPO_PATH = {"type": "string", "maxLength": 1024,
              "pattern": r"^[A-Za-z0-9_][A-Za-z0-9._+-]*(/[A-Za-z0-9_][A-Za-z0-9._+-]*)*$"}
_HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_WORD = {"type": ["string", "null"], "pattern": "^[a-z0-9_-]{1,40}$"}
_TEXT = {"type": ["string", "null"], "maxLength": 1 << 20}
MANIFEST_JSON_SCHEMA = {
    "type": "object", "required": ["schema", "name", "version", "file"],
    "properties": {
        "schema": {"const": MANIFEST_SCHEMA},
        "name": {"type": "string", "maxLength": 200, "pattern": r"^[a-z0-9][a-z0-9._-]*$"},
        "version": {"type": "string", "maxLength": 128,
                    "pattern": r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"},
        "kind": _WORD, "base": _WORD, "base_model": {"type": ["string", "null"], "maxLength": 512},
        "description": _TEXT, "message": _TEXT,
        "file": {"type": "object", "required": ["path", "hashes"],
                 "properties": {"path": _REPO_PATH, "size": {"type": ["integer", "null"], "minimum": 0},
                                "hashes": {"type": "object", "required": ["sha256"],
                                           "properties": {"sha256": _HEX64}}}},
        "files": {"type": ["object", "null"], "maxProperties": 100_000, "propertyNames": _REPO_PATH,
                  "additionalProperties": {"type": "object", "properties": {"sha256": _HEX64}}},
        "trigger_words": {"type": ["array", "null"], "maxItems": 1000,
                          "items": {"type": "string", "maxLength": 4096}},
        "records": {"type": ["array", "null"], "maxItems": 10_000, "items": {
            "type": "object", "required": ["id", "json"],
            "properties": {"id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{7,39}$"}, "json": _REPO_PATH,
                           "image": {"anyOf": [_REPO_PATH, {"type": "null"}]}}}},
        "card": {"type": ["object", "null"], "required": ["path"], "properties": {"path": _REPO_PATH}},
        # a multi-file version's files, primary first (registry.catalog.version_files): plain
        # top-level names, never a path into a folder
        "version_files": {"type": ["array", "null"], "minItems": 2, "maxItems": 16, "items": {
            "type": "object", "required": ["name", "path", "sha256"],
            "properties": {"name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"},
                           "path": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"},
                           "sha256": _HEX64, "size": {"type": ["integer", "null"], "minimum": 0},
                           "format": {"type": ["string", "null"], "maxLength": 64}}}},
    },
}
# A model card's front matter: only the keys a pull reads are constrained.
FRONT_MATTER_SCHEMA = {
    "type": "object",
    "properties": {
        "base_model": {"anyOf": [{"type": ["string", "null"], "maxLength": 512},
                                 {"type": "array", "maxItems": 100, "items": {"type": "string", "maxLength": 512}}]},
        "instance_prompt": {"type": ["string", "null"], "maxLength": 4096},
    },
}
# The Hub's ``base_model_relation`` per adapter kind (its model-tree relations: adapter, merge,
# quantized, finetune): a DreamBooth checkpoint is a fine-tune of its base, everything else an adapter.
BASE_MODEL_RELATION = {"lora": "adapter", "lycoris": "adapter", "embedding": "adapter", "checkpoint": "finetune"}
MAX_README_BYTES = 4 << 20  # of a pulled README.md: the front matter and the first paragraphs are read


def kohya_file_name(adapter: str) -> str:
    return f"{adapter}.safetensors"


DIFFUSERS_KINDS = ("lora", "lycoris")  # what diffusers' load_lora_weights reads


def diffusers_not_applicable(kind: str, file_name: str) -> str | None:
    """Why a version gets no ``pytorch_lora_weights.safetensors`` copy (None: it gets one).
    An embedding is loaded by diffusers as it is (``load_textual_inversion``); a checkpoint is no
    LoRA; only .safetensors files are converted."""
    if kind not in DIFFUSERS_KINDS:
        article = "an" if kind[:1] in "aeiou" else "a"
        return f"no diffusers LoRA copy for {article} {kind} (diffusers loads it as it is)"
    if Path(file_name).suffix.lower() != ".safetensors":
        return f"no diffusers copy of {Path(file_name).suffix or 'a suffix-less'} file (only .safetensors are converted)"
    return None


def version_tag(version: str) -> str:
    return f"v{version}"


def family_of_base_model(base_model: str | None) -> str | None:
    """The family a model card's ``base_model`` (a Hub id) names, through the families' vocabulary."""
    return family_from_hub_id(base_model) if isinstance(base_model, str) else None


def base_model_id(version, base: str | None) -> str | None:
    """The Hub id a pushed card names as ``base_model``: the one the version was pulled with, else
    the usual reference repo of its family (and variant: a Pony LoRA names Pony)."""
    hub = (version.extra or {}).get("hub") or {}
    if hub.get("base_model"):
        return hub["base_model"]
    variant = stored_variant(base, probe=version.probe, metadata=version.file_metadata, extra=version.extra)
    return default_hub_repo(base, variant[0] if variant else None)


# --- staging a version for a push --------------------------------------------------------------
@dataclass
class StagedVersion:
    files: dict[str, Path]  # path in repo → local file
    manifest: dict
    adapter_paths: list[str]  # the weight files (what decides "same version" on the remote)
    notes: list[str] = field(default_factory=list)


def _dump_json(data) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _write(dest: Path, text: str | bytes) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        dest.write_text(text, encoding="utf-8")
    else:
        dest.write_bytes(text)
    return dest


def _version_records(catalog, version, card) -> list:
    """Records whose stack used this version, plus the records the card cites (the
    without-adapter baselines are not linked to the version), by id."""
    from ..catalog import records as R

    found = {r.id: r for r in R.list_records(catalog, version.ref)}
    for sample in (card.card.get("samples") or []) if card else []:
        for rid in (sample.get("with_adapter"), sample.get("without_adapter")):
            if rid and rid not in found:
                try:
                    found[rid] = R.get_record(catalog, rid)
                except NotFound:
                    pass
    return [found[k] for k in sorted(found)]


PUSH_FORMATS = ("kohya", "diffusers")  # what a Hub-kind remote can receive (remote settings "formats")


def check_push_formats(formats) -> None:
    """Refuse an empty list or a format a Hub-kind remote cannot receive."""
    if not formats or set(formats) - set(PUSH_FORMATS):
        raise UsageError(f"remote formats must be {' and/or '.join(PUSH_FORMATS)}, got {sorted(formats)}")


def manifest_file_sha256(manifest: dict, path: str) -> str | None:
    """The sha256 a manifest promises for the adapter file at ``path``: its own entry in
    ``files`` (a diffusers copy is a different file from the version's blob) else ``file.hashes``."""
    entry = (manifest.get("files") or {}).get(path) or {}
    return entry.get("sha256") or (manifest.get("file", {}).get("hashes") or {}).get("sha256")


def stage_version(catalog, ref: str, stage_dir: str | os.PathLike, *, formats: tuple[str, ...] = ("kohya",),
                  converter: Converter | None = None) -> StagedVersion:
    """Write everything one version's commit holds into ``stage_dir`` (the adapter file is not
    copied: the blob store path is used as is)."""
    stage = Path(stage_dir)
    version = catalog.resolve(ref)
    adapter = catalog.get_adapter(version.adapter)
    check_push_formats(formats)
    blob = catalog.blobs.path_for(version.sha256)
    if not blob.is_file():
        raise NotFound(f"{version.ref}: its blob {version.sha256[:12]}… is missing from the store",
                       hint="run `loradex verify`")
    files: dict[str, Path] = {}
    file_facts: dict[str, dict] = {}
    adapter_paths: list[str] = []
    notes: list[str] = []
    converted = None
    if version.files:  # a multi-file version: every file as stored, under its own name
        return _finish_staging(catalog, version, adapter, stage, *_stage_version_files(catalog, version, formats))
    if "diffusers" in formats:
        skip = diffusers_not_applicable(adapter.kind, version.file_name)
        if skip is None:
            try:
                converted = _diffusers_copy(version, blob, stage / "_diffusers" / DIFFUSERS_FILE, converter)
            except UnsupportedFormat as exc:  # e.g. a LyCORIS algorithm with no LoRA equivalent
                skip = f"no diffusers copy: {exc.message.split(': ', 1)[-1]}"
        if skip is not None:
            notes.append(f"{skip}; pushed the file as stored")
    if "kohya" in formats or converted is None:  # the file as stored: always there when no copy is
        path = kohya_file_name(version.adapter)
        files[path] = blob
        file_facts[path] = {"role": "adapter", "sha256": version.sha256, "size": version.size}
        adapter_paths.append(path)
    if converted is not None:
        from ..files.hashing import hash_file

        files[DIFFUSERS_FILE] = converted
        file_facts[DIFFUSERS_FILE] = {"role": "adapter-diffusers", "sha256": hash_file(converted).sha256,
                                      "size": converted.stat().st_size, "converted_from": version.sha256}
        adapter_paths.append(DIFFUSERS_FILE)
    return _finish_staging(catalog, version, adapter, stage, files, file_facts, adapter_paths, notes, converted)


def _stage_version_files(catalog, version, formats) -> tuple:
    """The weight files of a multi-file version: each blob under its file name (checked again:
    it becomes a repo path), facts naming its role; no diffusers copy (nothing converts a pair)."""
    from ..catalog.version_files import check_file_name

    files: dict[str, Path] = {}
    file_facts: dict[str, dict] = {}
    notes = ["no diffusers copy of a multi-file version; pushed its files as stored"] if "diffusers" in formats else []
    for position, f in enumerate(version.files):
        path = check_file_name(f.file_name, where=f"{version.ref} file")
        if path in files or path in (MANIFEST_NAME, README_NAME):
            raise UsageError(f"{version.ref}: its file name {path!r} is taken in the repo")
        blob = catalog.blobs.path_for(f.sha256)
        if not blob.is_file():
            raise NotFound(f"{version.ref}: the blob of its file {f.name} ({f.sha256[:12]}…) is missing from the store",
                           hint="run `loradex verify`")
        files[path] = blob
        file_facts[path] = {"role": "adapter" if position == 0 else "adapter-file", "name": f.name,
                            "sha256": f.sha256, "size": f.size}
    return files, file_facts, list(files), notes, None


def _finish_staging(catalog, version, adapter, stage: Path, files: dict, file_facts: dict, adapter_paths: list,
                    notes: list, converted) -> StagedVersion:
    """Records, card, manifest and model card around the staged weight files."""
    from ..catalog import records as R

    try:
        card = R.latest_card(catalog, version.ref)
    except NotFound:
        card = None
    record_entries = []
    widgets = []
    for record in _version_records(catalog, version, card):
        entry = {"id": record.id, "json": f"{RECORDS_DIR}/{record.id}.json", "image": None}
        files[entry["json"]] = _write(stage / entry["json"], _dump_json(record.record))
        if record.image_blob:
            entry["image"] = f"{RECORDS_DIR}/{record.id}.png"
            files[entry["image"]] = catalog.blobs.path_for(record.image_blob)
            if version.ref in record.versions and len(widgets) < MAX_WIDGETS:
                text = record.record.get("clean_prompt") or record.record.get("prompt") or ""
                widgets.append({"text": text, "output": {"url": entry["image"]}})
        record_entries.append(entry)
    card_entry = None
    if card is not None:
        files[CARD_PATH] = _write(stage / CARD_PATH, _dump_json(card.card))
        card_entry = {"path": CARD_PATH, "passed": card.passed}

    for path, local in files.items():
        if path not in file_facts:
            from ..files.hashing import hash_file

            h = hash_file(local)
            file_facts[path] = {"sha256": h.sha256, "size": h.size}
    aliases = sorted(a.name for a in catalog.aliases(version.adapter) if a.version == version.version)
    lineage = [{"parent": e.parent, "relation": e.relation, "recipe": e.recipe} for e in catalog.lineage(version.ref)
               if e.child == version.ref]
    recipe = next((e["recipe"] for e in lineage if e["recipe"] and e["relation"] != "pulled_from"), None)
    base = version.probe.get("base") or adapter.base
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "name": version.adapter, "version": version.version, "tag": version_tag(version.version),
        "kind": adapter.kind, "base": adapter.base if adapter.base != "unknown" else base,
        "base_model": base_model_id(version, base), "description": adapter.description,
        "file": {"path": adapter_paths[0], "file_name": version.file_name, "format": version.file_format,
                 "size": version.size,
                 "hashes": {"sha256": version.sha256, "autov1": version.autov1, "autov2": version.autov2,
                            "autov3": version.autov3}},
        "files": file_facts,
        "probe": version.probe, "trigger_words": list(version.trigger_words), "message": version.message,
        "created_at": version.to_dict()["created_at"], "created_by": version.created_by,
        "lineage": lineage, "recipe": recipe, "aliases": aliases,
        "records": record_entries, "card": card_entry,
    }
    if version.files:
        manifest["version_files"] = [{"name": f.name, "path": path, "sha256": f.sha256, "size": f.size,
                                      "format": f.file_format} for f, path in zip(version.files, adapter_paths)]
    files[MANIFEST_NAME] = _write(stage / MANIFEST_NAME, _dump_json(manifest))
    card_md = R.card_markdown(card.card) if card is not None else None
    files[README_NAME] = _write(stage / README_NAME, model_card(manifest, widgets, card_md,
                                                                diffusers=converted is not None))
    return StagedVersion(files, manifest, adapter_paths, notes)


def _diffusers_copy(version, blob: Path, dest: Path, converter: Converter | None) -> Path:
    if converter is None:
        raise UsageError("this remote asks for a diffusers copy, which needs a converter",
                         hint="pass converter=loradex.merge.conventions.convert.convert_file")
    if Path(version.file_name).suffix.lower() != ".safetensors":
        raise UsageError(f"{version.ref} is not a .safetensors file; only those are converted")
    dest.parent.mkdir(parents=True, exist_ok=True)
    base = version.probe.get("base")
    with tempfile.TemporaryDirectory(prefix=".tmp-loradex-hub-") as tmp:
        src = Path(tmp) / "source.safetensors"  # blob names carry no suffix: the converter wants one
        os.symlink(blob, src)
        converter(src, dest, "diffusers", base=None if base in (None, "unknown") else base)
    return dest


# --- the model card ------------------------------------------------------------------------------
def model_card(manifest: dict, widgets: list[dict], card_markdown: str | None, *, diffusers: bool) -> str:
    """README.md: YAML front matter (base_model + base_model_relation, library_name, tags, instance_prompt, widget)
    then the description and the evaluation card."""
    import yaml

    front: dict = {}
    if manifest.get("base_model"):
        front["base_model"] = manifest["base_model"]
        # The Hub's model tree: how this repo stands to its base ("adapter" for a LoRA/embedding)
        front["base_model_relation"] = BASE_MODEL_RELATION.get(manifest.get("kind"), "adapter")
    front["library_name"] = "diffusers"
    front["tags"] = ["lora", "text-to-image", "template:sd-lora"] + (["diffusers"] if diffusers else [])
    if manifest.get("trigger_words"):
        front["instance_prompt"] = ", ".join(manifest["trigger_words"])
    if widgets:
        front["widget"] = widgets
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip("\n"), "---", "",
             f"# {manifest['name']} {manifest['version']}", ""]
    if manifest.get("description"):
        lines += [manifest["description"].strip(), ""]
    if manifest.get("trigger_words"):
        lines += ["Trigger words: " + ", ".join(f"`{w}`" for w in manifest["trigger_words"]), ""]
    if manifest.get("version_files"):  # a multi-file version: load them together (Wan 2.2: one per expert)
        lines += [f"Files (one version; base {manifest.get('base')}):", ""]
        lines += [f"- `{f['path']}` — {f['name']} ({f.get('format')}), sha256 `{f['sha256']}`"
                  for f in manifest["version_files"]]
        lines += [""]
    else:
        lines += [f"File: `{manifest['file']['path']}` ({manifest['file']['format']}, base {manifest.get('base')}), "
                  f"sha256 `{manifest['file']['hashes']['sha256']}`.", ""]
    if card_markdown:
        lines += [card_markdown.rstrip("\n"), ""]
    lines += [f"Published by loradex; machine-readable facts are in `{MANIFEST_NAME}`.", ""]
    return "\n".join(lines)


def read_model_card(path: str | os.PathLike | None) -> tuple[dict, str]:
    """(front matter, body) of a README.md; ({}, "") when absent, ({}, text) without front matter."""
    if path is None or not Path(path).is_file():
        return {}, ""
    with open(path, "rb") as fh:  # a pulled file: read no more than the cap
        text = fh.read(MAX_README_BYTES).decode("utf-8", errors="replace").lstrip("\ufeff")
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}, text
    end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
    if end is None:
        return {}, text
    # no anchors/aliases, caps on size, depth and nodes; then the keys a pull reads
    front = parse_yaml("\n".join(lines[1:end]), f"{README_NAME} front matter")
    if not isinstance(front, dict):
        return {}, "\n".join(lines[end + 1:]).strip()
    check_schema(front, FRONT_MATTER_SCHEMA, f"{Path(path).name} front matter")
    return front, "\n".join(lines[end + 1:]).strip()


def card_facts(front: dict, body: str) -> dict:
    """What a plain Hub LoRA's card tells: base_model (first one), instance_prompt, description."""
    base_model = front.get("base_model")
    if isinstance(base_model, list):
        base_model = base_model[0] if base_model else None
    prompt = front.get("instance_prompt")
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip() and not p.lstrip().startswith(("#", "<", "!["))]
    return {"base_model": str(base_model) if base_model else None,
            "instance_prompt": str(prompt).strip() if prompt else None,
            "description": paragraphs[0][:2000] if paragraphs else ""}


def version_facts(manifest: dict | None, front: dict, body: str, adapter_file: str | os.PathLike) -> dict:
    """What a repo commit says about its adapter, as ``add_file`` options: ``kind``, ``base``,
    ``triggers``, ``description``, plus the card's ``base_model`` id. From ``loradex.json`` when
    there is one; otherwise from probing ``adapter_file`` and the model card (``base_model`` only
    when the shapes cannot tell the family; ``instance_prompt`` as the trigger word when the file
    names none; the card's first paragraph as the description). None = let ``add`` decide."""
    facts = card_facts(front, body)
    out = {"kind": None, "base": None, "triggers": None, "description": facts["description"],
           "base_model": facts["base_model"] or (manifest or {}).get("base_model")}
    if manifest is not None:
        out["base"] = manifest.get("base") if manifest.get("base") not in (None, "unknown") else None
        out["kind"] = manifest.get("kind")
        out["triggers"] = manifest.get("trigger_words") or None
        out["description"] = manifest.get("description") or out["description"]
        return out
    from ..probe import probe_path

    probed = probe_path(adapter_file).to_dict()
    if probed.get("base") in (None, "unknown"):  # shapes first; the card only when they cannot tell
        out["base"] = family_of_base_model(facts["base_model"])
    if facts["instance_prompt"] and not probed.get("trigger_words"):
        out["triggers"] = [facts["instance_prompt"]]
    return out


def read_manifest(path: str | os.PathLike | None) -> dict | None:
    """A pulled ``loradex.json``: parsed with caps, checked against MANIFEST_JSON_SCHEMA."""
    if path is None or not Path(path).is_file():
        return None
    data = read_json_file(path)
    if not isinstance(data, dict) or data.get("schema") != MANIFEST_SCHEMA:
        raise UntrustedData(MANIFEST_NAME, f"not a {MANIFEST_SCHEMA} manifest")
    return check_schema(data, MANIFEST_JSON_SCHEMA, MANIFEST_NAME)


def manifest_version_files(manifest: dict | None) -> list[tuple[str, str, str]] | None:
    """A pulled manifest's multi-file version as [(role, path, sha256)], primary first (None: one
    file). The first must be the manifest's ``file``; names and paths are checked again."""
    from ..catalog.version_files import check_file_name, check_role

    entries = (manifest or {}).get("version_files")
    if not entries:
        return None
    out = [(check_role(e["name"]), check_file_name(e["path"], where=f"{MANIFEST_NAME} file"), e["sha256"])
           for e in entries]
    if out[0][1] != manifest["file"]["path"] or out[0][2] != manifest["file"]["hashes"]["sha256"]:
        raise UntrustedData(MANIFEST_NAME, "its first version file is not its file")
    if len({p for _, p, _ in out}) != len(out) or len({r for r, _, _ in out}) != len(out):
        raise UntrustedData(MANIFEST_NAME, "names one version file twice")
    return out


def plain_repo_pair(paths: list[str]) -> list[tuple[str, str]] | None:
    """The files of a repo without a manifest that form ONE multi-file version: its top-level
    ``.safetensors`` files when there are several and their names say one role each (a Wan 2.2
    ``…high_noise…`` + ``…low_noise…`` pair), as [(role, path)] in the roles' order; else None."""
    from ..catalog.version_files import MAX_FILES, ROLE_ORDER, role_for

    top = [p for p in paths if "/" not in p and p.endswith(".safetensors")]
    if not 2 <= len(top) <= MAX_FILES:
        return None
    roles = [role_for(p) for p in top]
    if None in roles or len(set(roles)) != len(roles):
        return None
    return sorted(zip(roles, top), key=lambda rp: ROLE_ORDER.index(rp[0]))


def plain_repo_adapter(paths: list[str]) -> str | None:
    """The weight file of a repo without a manifest: diffusers' name first, then the only
    top-level .safetensors file, then the only .safetensors file in any folder."""
    if DIFFUSERS_FILE in paths:
        return DIFFUSERS_FILE
    top = [p for p in paths if "/" not in p and p.endswith(".safetensors")]
    if len(top) == 1:
        return top[0]
    anywhere = [p for p in paths if p.endswith(".safetensors")]
    return anywhere[0] if not top and len(anywhere) == 1 else None
