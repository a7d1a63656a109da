"""Civitai (and any Civitai-style mirror, such as ``loradex serve``): pull and identify.

Refs: ``civitai:VERSION_ID``, ``civitai:hash:HASH`` (AutoV1/AutoV2/AutoV3/SHA256),
``civitai:model:MODEL_ID`` (its latest version), ``https://HOST/models/ID[?modelVersionId=V]``
and ``https://HOST/api/download/models/V``. The endpoint is ``--endpoint`` (default
https://civitai.com), else a URL ref's own origin.

The token comes from ``CIVITAI_TOKEN`` at the moment of use. It is sent as a Bearer header on the
first request and on same-origin redirect hops only: once a redirect leaves the endpoint's origin
(Civitai's downloads go to a storage host) it is never sent again. It is never stored or printed.

Answers are parsed with caps and checked against declared schemas (``civitai_client``); ids and
SHA256 must be integers and 64-digit hex. The download folder is ``downloads/civitai-<digest>``,
a digest loradex computes of endpoint, version id, file id and SHA256, and the partial file is
``download.part``: no string from the remote names anything on disk. Cleanup removes that folder
only after checking it lies under ``downloads/``.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select

from ..errors import InvalidRef, LoradexError, NotFound, TransferError, UntrustedData, UsageError
from ..files.hashing import EMPTY_SHA256
from ..untrusted import check_schema, hex_digest, positive_int, safe_relative_name
from . import discard_download, register_remote
from .civitai_client import (CIVITAI_HOSTS, DEFAULT_ENDPOINT, PULL_VERSION_SCHEMA, CivitaiClient, Progress, _describe_text,
                             _looks_like_text, _origin)

MAX_FILE_NAME_BYTES = 240  # 255 on common file systems, less the ".part" of the partial download

def base_family_and_variant(base_model: str | None) -> tuple[str, str | None]:
    """Civitai ``baseModel`` → (loradex family, variant): ``"Pony"`` → ("sdxl", "pony"),
    ``"Flux.1 S"`` → ("flux", "schnell"); ("unknown", None) for a name no family declares."""
    from loradex.families.vocabulary import normalise

    found = normalise(base_model, "civitai") if isinstance(base_model, str) else None
    return found if found else ("unknown", None)


def base_family(base_model: str | None) -> str:
    return base_family_and_variant(base_model)[0]


# --- refs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CivitaiTarget:
    version_id: int | None = None
    model_id: int | None = None
    hash: str | None = None
    origin: str | None = None  # the origin of a URL ref


def parse_civitai_ref(ref: str) -> CivitaiTarget:
    ref = ref.strip()
    if ref.startswith(("http://", "https://")):
        parts = urlsplit(ref)
        query = parse_qs(parts.query)
        m = re.match(r"^/models/(\d+)(?:/[^/]*)?/?$", parts.path)
        if m:
            version = query.get("modelVersionId", [None])[0]
            if version is not None and not version.isdigit():
                raise InvalidRef(f"{ref!r}: modelVersionId must be a number")
            return CivitaiTarget(version_id=int(version) if version else None, model_id=int(m.group(1)),
                                 origin=_origin(ref))
        m = re.match(r"^/api/download/models/(\d+)/?$", parts.path)
        if m:
            return CivitaiTarget(version_id=int(m.group(1)), origin=_origin(ref))
        raise InvalidRef(f"{ref!r} is not a Civitai model URL",
                         hint="use https://civitai.com/models/ID or …/models/ID?modelVersionId=V")
    body = ref[len("civitai:"):] if ref.startswith("civitai:") else ref
    if body.isdigit():
        return CivitaiTarget(version_id=int(body))
    kind, _, value = body.partition(":")
    if kind == "hash" and value.lower() == EMPTY_SHA256[:8]:
        raise InvalidRef(f"{ref!r} is the AutoV1 of every file of at most 1 MiB (the hash of no bytes) "
                         f"and names no file", hint="use the AutoV2 or SHA256 hash")
    if kind == "hash" and re.fullmatch(r"[0-9a-fA-F]{8,64}", value):
        return CivitaiTarget(hash=value.upper())
    if kind == "model" and value.isdigit():
        return CivitaiTarget(model_id=int(value))
    raise InvalidRef(f"{ref!r} is not a Civitai ref",
                     hint="use civitai:VERSION_ID, civitai:hash:HEX (8-64 digits) or civitai:model:ID")


def _is_civitai_url(ref: str) -> bool:
    if not ref.startswith(("http://", "https://")):
        return False
    path = urlsplit(ref).path
    return bool(re.match(r"^/(models/\d+|api/download/models/\d+)", path))


# --- pull ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PullResult:
    version: object  # entities.Version
    civitai: dict
    downloaded_bytes: int
    resumed_from: int
    already_present: bool = False
    records: int = 0
    note: str = ""

    def to_dict(self) -> dict:
        return {**self.version.to_dict(), "civitai": {k: self.civitai.get(k) for k in
                                                      ("modelId", "versionId", "fileId", "endpoint")},
                "downloaded_bytes": self.downloaded_bytes, "resumed_from": self.resumed_from,
                "already_present": self.already_present, "prompt_records": self.records,
                "note": self.note}


def normalise_name(model_name: str, model_id) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "-", (model_name or "").lower()).strip("-._")
    return name[:120].strip("-._") or f"civitai-{model_id}"


def semver_from_name(version_name: str) -> str | None:
    """'v1.0' → '1.0.0', 'V2' → '2.0.0', '1.2.3' → '1.2.3'; anything else → None (bump)."""
    m = re.fullmatch(r"\s*[vV]?(\d+)(?:\.(\d+))?(?:\.(\d+))?\s*", version_name or "")
    if not m:
        return None
    major, minor, patch = (int(g) if g is not None else 0 for g in m.groups())
    return f"{major}.{minor}.{patch}"


def plain_text(markup: str | None, limit: int = 4000) -> str:
    text = re.sub(r"<br\s*/?>|</p>", "\n", markup or "", flags=re.I)
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())[:limit]


def safe_file_name(name, fallback: str) -> str:
    """A plain file name for the download from the API's ``name`` field (the server chooses it):
    its last path component for either separator, without a drive prefix or control characters
    (``:*?"<>|`` become ``_``);
    ``fallback`` when nothing usable is left, it would be hidden (".", "..", ".x") or it is too
    long for a file system (255 bytes, with room for the ".part" suffix)."""
    text = "".join(ch for ch in str(name or "") if ch.isprintable())
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = re.sub(r"^[A-Za-z]:", "", text).strip()
    text = re.sub(r'[:*?"<>|]', "_", text)  # characters some file systems refuse
    ok = text and not text.startswith(".") and len(text.encode()) <= MAX_FILE_NAME_BYTES
    return text if ok else fallback


def pick_file(files: list[dict], *, name: str | None = None, file_type: str | None = None) -> dict:
    if not files:
        raise NotFound("this Civitai version lists no files")
    if name:
        hit = [f for f in files if f.get("name") == name]
        if not hit:
            raise NotFound(f"no file named {name!r}; files: {', '.join(str(f.get('name')) for f in files)}")
        return hit[0]
    if file_type:
        hit = [f for f in files if (f.get("type") or "").lower() == file_type.lower()]
        if not hit:
            raise NotFound(f"no file of type {file_type!r}; types: "
                           f"{', '.join(sorted({str(f.get('type')) for f in files}))}")
        return hit[0]
    primary = [f for f in files if f.get("primary")]
    models = [f for f in files if f.get("type") == "Model"]
    return (primary or models or files)[0]


def _file_hashes(file: dict) -> dict[str, str]:
    """The file's hashes, upper-case kinds, lower-case hex; a SHA256 that is not 64 hex digits is a
    protocol error (it names the download folder and the catalog look-up)."""
    hashes = {k.upper(): str(v).lower() for k, v in (file.get("hashes") or {}).items() if v}
    if "SHA256" in hashes:
        hashes["SHA256"] = hex_digest(hashes["SHA256"], f"civitai file {file.get('id')}",
                                      field="hashes.SHA256")
    return hashes


def provenance(info: dict, file: dict, endpoint: str, how: str) -> dict:
    """What loradex keeps of a Civitai version in ``version.extra["civitai"]``."""
    model = info.get("model") or {}
    return {
        "modelId": info.get("modelId"), "versionId": info.get("id"), "fileId": file.get("id"),
        "modelName": model.get("name"), "modelType": model.get("type"), "nsfw": model.get("nsfw"),
        "versionName": info.get("name"), "baseModel": info.get("baseModel"),
        "baseModelType": info.get("baseModelType"), "trainedWords": list(info.get("trainedWords") or []),
        "description": info.get("description") or "", "publishedAt": info.get("publishedAt"),
        "fileName": file.get("name"), "fileType": file.get("type"), "sizeKB": file.get("sizeKB"),
        "fileMetadata": file.get("metadata") or {}, "hashes": file.get("hashes") or {},
        "downloadUrl": file.get("downloadUrl") or info.get("downloadUrl"), "endpoint": endpoint,
        "via": how,
    }


def _resolve_info(client: CivitaiClient, target: CivitaiTarget) -> dict:
    info = _find_info(client, target)
    return check_schema(info, PULL_VERSION_SCHEMA, f"civitai version {info['id']} (not a Civitai-style API?)")


def _find_info(client: CivitaiClient, target: CivitaiTarget) -> dict:
    if target.hash:
        return client.version_by_hash(target.hash)
    if target.version_id is None:
        model = client.model(target.model_id)
        versions = model.get("modelVersions") or []
        if not versions:
            raise NotFound(f"civitai model {target.model_id} has no published versions")
        target = CivitaiTarget(version_id=versions[0]["id"])  # Civitai lists newest first
    return client.version(target.version_id)  # checked against VERSION_SCHEMA


def _live_version_by_sha(catalog, sha256: str):
    from ..catalog.db_schema import AdapterRow, VersionRow

    def run(s):
        row = s.scalar(select(VersionRow).where(VersionRow.sha256 == sha256, VersionRow.deleted_at.is_(None))
                       .order_by(VersionRow.id).limit(1))
        return row.to_entity(s.get(AdapterRow, row.adapter_id).name) if row is not None else None

    return catalog.read(run)


def _download_url(client: CivitaiClient, info: dict, file: dict) -> str:
    url = file.get("downloadUrl") or info.get("downloadUrl") or f"{client.endpoint}/api/download/models/{info['id']}"
    try:
        # A mirror may hand out civitai.com URLs: keep the path, use the endpoint we were told to use.
        if _origin(url) != _origin(client.endpoint):
            parts = urlsplit(url)
            url = client.endpoint + parts.path + (f"?{parts.query}" if parts.query else "")
    except ValueError:
        raise UntrustedData(f"civitai version {info['id']}", f"downloadUrl {url[:80]!r} is not a URL") from None
    return url


def _work_dir(catalog, endpoint: str, version_id: int, file_id: int, sha: str | None) -> Path:
    """The download folder of one file: named by loradex (a digest of what identifies the file,
    stable so an interrupted pull resumes), never by a string the remote sent."""
    key = hashlib.sha256(f"{endpoint}\n{version_id}\n{file_id}\n{sha or ''}".encode()).hexdigest()[:24]
    return catalog.home / "downloads" / f"civitai-{key}"


def _verify(path: Path, file: dict, what: str) -> None:
    from ..files.hashing import hash_file

    expected = _file_hashes(file)
    size = path.stat().st_size
    listed = int(float(file["sizeKB"]) * 1024) if file.get("sizeKB") else None
    with open(path, "rb") as fh:
        head = fh.read(64)
    if _looks_like_text(head):
        body = path.read_bytes()[:4000] if size < 1 << 20 else head
        raise TransferError(f"{what}: the downloaded body is a text page, not a model file{_describe_text(body)}")
    actual = hash_file(path)
    want = expected.get("SHA256")
    if want and actual.sha256 != want:
        if listed and size < listed - 1024:
            raise TransferError(f"{what}: short file — got {size} bytes, Civitai lists about {listed} "
                                f"(the 'small corrupt file' failure); SHA256 does not match")
        raise TransferError(f"{what}: SHA256 mismatch — expected {want[:16]}…, got {actual.sha256[:16]}…")
    if not want:
        if expected.get("AUTOV2") and actual.autov2 != expected["AUTOV2"][:10]:
            raise TransferError(f"{what}: AutoV2 mismatch — expected {expected['AUTOV2']}, got {actual.autov2}")
        if listed and size < listed - 1024:
            raise TransferError(f"{what}: short file — got {size} bytes, Civitai lists about {listed}")


def _records_module():
    try:
        from ..catalog import records  # optional: the prompt-record store
    except ImportError:
        return None
    return records if hasattr(records, "store_record") else None


_LORA_TAG = re.compile(r"<lora:([^:>]+)(?::([-0-9.]+))?(?::([-0-9.]+))?>", re.I)


def _number(value, kind=float):
    try:
        return kind(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def record_from_civitai_image(version, image: dict, info: dict) -> dict:
    """A prompt record (schema loradex.prompt-record/1) from one Civitai example image's ``meta``.

    Civitai's meta is A1111's generation parameters parsed into JSON, so the record is an A1111
    import; the image itself is not downloaded (image_sha256 stays null, the URL is kept)."""
    from ..paths import current_user
    from ..catalog.records import RECORD_SCHEMA, new_record_id, now_iso

    meta = image.get("meta") or {}
    prompt = str(meta.get("prompt") or "")
    stem = Path(version.file_name or version.adapter).stem
    te = unet = 1.0
    requested = stem
    for m in _LORA_TAG.finditer(prompt):
        if m.group(1).strip().lower() in (stem.lower(), version.adapter):
            requested = m.group(1).strip()
            te = _number(m.group(2)) if m.group(2) else 1.0
            unet = _number(m.group(3)) if m.group(3) else te
            break
    size_w, _, size_h = str(meta.get("Size") or "").partition("x")
    width = _number(image.get("width"), int) or _number(size_w, int)
    height = _number(image.get("height"), int) or _number(size_h, int)
    seed = _number(meta.get("seed"), int)
    steps = _number(meta.get("steps"), int)
    model_hash = str(meta.get("Model hash") or "").lower()
    return {
        "schema": RECORD_SCHEMA, "id": new_record_id(), "source": "import-a1111",
        "prompt": prompt, "clean_prompt": _LORA_TAG.sub("", prompt).strip(" ,"),
        "negative_prompt": str(meta.get("negativePrompt") or ""),
        "seed": seed if seed is not None and seed >= 0 else None,
        "steps": steps if steps and steps >= 1 else None, "cfg": _number(meta.get("cfgScale")),
        "width": width if width and width >= 1 else None, "height": height if height and height >= 1 else None,
        "scheduler": {"name": meta.get("sampler"), "config": {}},
        "base": {"ref": meta.get("Model"), "family": base_family(info.get("baseModel")),
                 "sha256": model_hash if re.fullmatch(r"[0-9a-f]{8,64}", model_hash) else None},
        "stack": [{"requested": requested, "ref": version.ref, "sha256": version.sha256,
                   "te_weight": te, "unet_weight": unet}],
        "embeddings": [], "dtype": None, "device": None, "libraries": {}, "image_sha256": None,
        "created_at": now_iso(), "created_by": current_user(),
        "imported": {"file": str(image.get("url") or ""),
                     "extra": {"civitai_image": image.get("url"), "civitaiVersionId": info.get("id"),
                               "meta": meta}},
    }


def image_records(catalog, version, info: dict) -> tuple[int, list[dict]]:
    """Example images' ``meta`` → prompt records when the records module exists; else the list
    to keep in extra["civitai"]["images"]. Returns (records created, images to keep)."""
    images = [{"url": im.get("url"), "width": im.get("width"), "height": im.get("height"),
               "nsfwLevel": im.get("nsfwLevel"), "meta": im.get("meta")}
              for im in (info.get("images") or []) if isinstance(im, dict)]
    records = _records_module()
    if records is None:
        return 0, images
    made, kept = 0, []
    for im in images:
        if not (im.get("meta") or {}).get("prompt"):
            continue
        record = _valid_record(record_from_civitai_image(version, im, info))
        if record is None:
            kept.append(im)  # meta that makes no valid record: kept as it came
            continue
        records.store_record(catalog, record)
        made += 1
    return made, kept


def _valid_record(record: dict) -> dict | None:
    """``record`` when it passes the prompt-record schema (a Civitai image's meta is the remote's
    free text: one that does not make a valid record stays an image entry instead)."""
    from loradex.schemas import validate

    try:
        validate("prompt-record", record)
    except (LoradexError, ValueError):
        return None
    return record


def pull_civitai(catalog, ref: str, *, endpoint: str | None = None, file: str | None = None,
                 file_type: str | None = None, progress: Progress | None = None, remote=None,
                 token: str | None = None, transport=None, sleep=None, name: str | None = None,
                 alias: str | None = None, bump: str | None = None, **_ignored) -> PullResult:
    """``bump``: number the new version by bumping the adapter's latest (``pull --update``)
    instead of from the Civitai version's name."""
    from ..catalog.adding import add_file

    target = parse_civitai_ref(ref)
    endpoint = (endpoint or target.origin or DEFAULT_ENDPOINT).rstrip("/")
    kwargs = {"token": token, "transport": transport}
    if sleep is not None:
        kwargs["sleep"] = sleep
    with CivitaiClient(endpoint, **kwargs) as client:
        info = _resolve_info(client, target)
        chosen = pick_file(info.get("files") or [], name=file, file_type=file_type)
        civ = provenance(info, chosen, endpoint, "pull")
        sha = _file_hashes(chosen).get("SHA256")
        if sha:
            existing = _live_version_by_sha(catalog, sha)
            if existing is not None:
                return PullResult(existing, civ, 0, 0, already_present=True,
                                  note=f"already in the catalog as {existing.ref}")
        pair = None if (file or file_type) else paired_model_files(info.get("files") or [])
        if pair is not None:  # a Wan 2.2 high-noise + low-noise pair: ONE version holding both
            return _pull_files(catalog, client, endpoint, info, pair, progress=progress, name=name, alias=alias,
                               bump=bump)
        part, work, file_name, got, resumed = _download(catalog, client, endpoint, info, chosen, sha, progress)
    try:
        final = work / file_name  # file_name passed safe_relative_name: a plain name inside work
        os.replace(part, final)
        adapter_name = name or normalise_name((info.get("model") or {}).get("name"), info.get("modelId"))
        version = None if bump else semver_from_name(info.get("name") or "")
        if version is not None and _version_taken(catalog, adapter_name, version):
            version = None
        base = base_family(info.get("baseModel"))
        added = add_file(
            catalog, final, name=adapter_name, version=version, bump=bump, base=None if base == "unknown" else base,
            triggers=[w.strip() for w in info.get("trainedWords") or [] if w and w.strip()] or None,
            description=plain_text((info.get("model") or {}).get("description") or info.get("description")),
            message=f"pulled from civitai:{info['id']} ({civ['modelName']} {civ['versionName']})",
            extra={"civitai": civ}, link=True, alias=alias,
            lineage=[{"relation": "pulled_from", "external_parent": f"civitai:{info['id']}",
                      "recipe": {"endpoint": endpoint, "modelId": info.get("modelId"),
                                 "fileId": chosen.get("id"), "sha256": sha}}],
        )
    finally:
        discard_download(work, catalog.home)
    made, images = image_records(catalog, added.version, info)
    if images:
        _merge_extra(catalog, added.version.id, {"images": images})
    version_entity = catalog.resolve(added.version.ref)
    return PullResult(version_entity, civ, got, resumed, records=made, note=added.note)


def _download(catalog, client, endpoint: str, info: dict, chosen: dict, sha: str | None, progress):
    """Download one file of the version into its own work folder and check its bytes:
    (partial file, work folder, checked file name, bytes got, resumed from)."""
    version_id = positive_int(info["id"], "civitai version", field="id")
    file_id = positive_int(chosen.get("id"), f"civitai version {version_id}", field="files[].id")
    what = f"civitai version {version_id} file {chosen.get('name')!r}"
    work = _work_dir(catalog, endpoint, version_id, file_id, sha)
    file_name = safe_relative_name(safe_file_name(chosen.get("name"), f"civitai-{version_id}.safetensors"),
                                   what, field="files[].name")
    part = work / "download.part"
    listed = int(float(chosen["sizeKB"]) * 1024) if chosen.get("sizeKB") else None
    try:
        got, resumed = client.download(_download_url(client, info, chosen), part, what=what,
                                       expected_size=listed, progress=progress,
                                       early_access=info.get("earlyAccessEndsAt"), label=file_name)
        _verify(part, chosen, what)
    except (TransferError, UntrustedData) as exc:
        if not getattr(exc, "resumable", False):
            discard_download(work, catalog.home)  # wrong bytes: never resume from them
        raise
    return part, work, file_name, got, resumed


def paired_model_files(files: list[dict]) -> list[tuple[str, dict]] | None:
    """The model files of a version that make ONE multi-file version: several ``Model`` files
    whose names say one role each (a Wan 2.2 ``…high_noise…`` + ``…low_noise…`` pair), as
    [(role, file)] in the roles' order; None otherwise (the primary file is pulled alone: two
    model files may as well be an fp16 and an fp32 copy of one LoRA)."""
    from ..catalog.version_files import MAX_FILES, ROLE_ORDER, role_for

    models = [f for f in files if f.get("type") == "Model"]
    if not 2 <= len(models) <= MAX_FILES:
        return None
    roles = [role_for(safe_file_name(f.get("name"), "")) for f in models]
    if None in roles or len(set(roles)) != len(roles):
        return None
    return sorted(zip(roles, models), key=lambda rf: ROLE_ORDER.index(rf[0]))


def _pull_files(catalog, client, endpoint: str, info: dict, pair: list[tuple[str, dict]], *, progress, name,
                alias, bump: str | None = None) -> PullResult:
    """``pull_civitai`` for a multi-file version: every file downloaded and checked, then ONE
    version holding them (the first role's file the primary)."""
    from ..catalog.adding import add_files
    from ..catalog.version_files import tidy_file_name

    primary = pair[0][1]
    civ = provenance(info, primary, endpoint, "pull")
    sha = _file_hashes(primary).get("SHA256")
    existing = _live_version_by_sha(catalog, sha) if sha else None
    if existing is not None:
        return PullResult(existing, civ, 0, 0, already_present=True, note=f"already in the catalog as {existing.ref}")
    civ["files"] = [{"role": role, "fileId": f.get("id"), "fileName": f.get("name"), "hashes": f.get("hashes") or {}}
                    for role, f in pair]
    fetched, total, resumed_total = [], 0, 0
    try:
        for _, chosen in pair:
            part, work, file_name, got, resumed = _download(catalog, client, endpoint, info, chosen,
                                                            _file_hashes(chosen).get("SHA256"), progress)
            fetched.append((part, work, file_name))
            total += got
            resumed_total += resumed
        finals = []
        for part, work, file_name in fetched:
            final = work / file_name  # file_name passed safe_relative_name: a plain name inside work
            os.replace(part, final)
            finals.append(final)
        adapter_name = name or normalise_name((info.get("model") or {}).get("name"), info.get("modelId"))
        version = None if bump else semver_from_name(info.get("name") or "")
        if version is not None and _version_taken(catalog, adapter_name, version):
            version = None
        base = base_family(info.get("baseModel"))
        added = add_files(
            catalog, finals, roles=[role for role, _ in pair], file_names=[tidy_file_name(f.name) for f in finals],
            name=adapter_name, version=version, bump=bump, base=None if base == "unknown" else base,
            triggers=[w.strip() for w in info.get("trainedWords") or [] if w and w.strip()] or None,
            description=plain_text((info.get("model") or {}).get("description") or info.get("description")),
            message=f"pulled from civitai:{info['id']} ({civ['modelName']} {civ['versionName']})",
            extra={"civitai": civ}, link=True, alias=alias,
            lineage=[{"relation": "pulled_from", "external_parent": f"civitai:{info['id']}",
                      "recipe": {"endpoint": endpoint, "modelId": info.get("modelId"),
                                 "fileIds": [f.get("id") for _, f in pair],
                                 "sha256": sha}}],
        )
    finally:
        for _, work, _ in fetched:
            discard_download(work, catalog.home)
    made, images = image_records(catalog, added.version, info)
    if images:
        _merge_extra(catalog, added.version.id, {"images": images})
    return PullResult(catalog.resolve(added.version.ref), civ, total, resumed_total, records=made, note=added.note)


def _version_taken(catalog, name: str, version: str) -> bool:
    from ..catalog.db_schema import AdapterRow, VersionRow

    def run(s):
        return s.scalar(select(VersionRow.id).join(AdapterRow, AdapterRow.id == VersionRow.adapter_id)
                        .where(AdapterRow.name == name, VersionRow.version == version)) is not None

    return catalog.read(run)


def _merge_extra(catalog, version_id: int, civitai_fields: dict) -> None:
    from ..catalog.db_schema import VersionRow

    def run(s):
        row = s.get(VersionRow, version_id)
        extra = dict(row.extra or {})
        extra["civitai"] = {**(extra.get("civitai") or {}), **civitai_fields}
        row.extra = extra

    catalog.transact(run)


# --- identify -----------------------------------------------------------------------------------
@dataclass
class IdentifyReport:
    identified: list[dict] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already have provenance

    def to_dict(self) -> dict:
        return {"identified": self.identified, "unknown": self.unknown, "skipped": self.skipped}


def _has_provenance(s, row) -> bool:
    from ..catalog.db_schema import LineageRow

    if (row.extra or {}).get("civitai"):
        return True
    return s.scalar(select(LineageRow.id).where(LineageRow.child_version_id == row.id,
                                                LineageRow.relation == "pulled_from")) is not None


def identify(catalog, refs: list[str] | None = None, *, all_versions: bool = False,
             endpoint: str | None = None, token: str | None = None, transport=None,
             sleep=None, progress: Progress | None = None) -> IdentifyReport:
    """Look up versions without provenance by SHA256 on a Civitai-style API and attach it."""
    from ..catalog.store import resolve_in
    from ..catalog.db_schema import AdapterRow, LineageRow, VersionRow
    from ..catalog import search_index
    from ..catalog.operations import now
    from ..catalog.refs import parse_ref

    if not refs and not all_versions:
        raise UsageError("give REF(s) or --all")
    endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
    report = IdentifyReport()

    def candidates(s):
        if refs:
            rows = [resolve_in(s, parse_ref(r)) for r in refs]
        else:
            rows = list(s.scalars(select(VersionRow).where(VersionRow.deleted_at.is_(None))
                                  .order_by(VersionRow.id)))
        out = []
        for row in rows:
            ref = f"{s.get(AdapterRow, row.adapter_id).name}@{row.version}"
            if _has_provenance(s, row):
                report.skipped.append(ref)
            else:
                out.append((row.id, ref, row.sha256))
        return out

    todo = catalog.read(candidates)
    if not todo:
        return report
    kwargs = {"token": token, "transport": transport}
    if sleep is not None:
        kwargs["sleep"] = sleep
    with CivitaiClient(endpoint, **kwargs) as client:
        found = client.versions_by_hashes([sha.upper() for _, _, sha in todo])
    by_sha: dict[str, tuple[dict, dict]] = {}
    for info in found:
        for f in info.get("files") or []:
            sha = _file_hashes(f).get("SHA256")
            if sha:
                by_sha.setdefault(sha, (info, f))
    for i, (vid, ref, sha) in enumerate(todo):
        if progress:
            progress(i + 1, len(todo), ref)
        hit = by_sha.get(sha)
        if hit is None:
            report.unknown.append(ref)
            continue
        info, f = hit
        civ = provenance(info, f, endpoint, "identify")

        def attach(s, vid=vid, info=info, civ=civ):
            row = s.get(VersionRow, vid)
            if _has_provenance(s, row):  # someone attached it meanwhile
                return False
            row.extra = {**(row.extra or {}), "civitai": civ}
            if not row.trigger_words and civ["trainedWords"]:
                row.trigger_words = list(civ["trainedWords"])
                search_index.refresh_versions(s, [vid])
            s.add(LineageRow(child_version_id=vid, parent_version_id=None,
                             parent_ref=f"civitai:{info.get('id')}", relation="pulled_from",
                             recipe={"endpoint": endpoint, "modelId": info.get("modelId"),
                                     "fileId": f.get("id"), "via": "identify"},
                             created_at=now()))
            return True

        if catalog.transact(attach):
            version = catalog.resolve(ref)
            made, images = image_records(catalog, version, info)
            if images:
                _merge_extra(catalog, vid, {"images": images})
            report.identified.append({"ref": ref, "modelId": info.get("modelId"), "versionId": info.get("id"),
                                      "model": civ["modelName"], "version": civ["versionName"],
                                      "baseModel": info.get("baseModel")})
    return report


register_remote("civitai:", puller=pull_civitai, kind="civitai", hosts=CIVITAI_HOSTS)
register_remote("https://civitai.com/", puller=pull_civitai, kind="civitai", match=_is_civitai_url)
