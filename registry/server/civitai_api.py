"""A Civitai-style API (v1, read side) over a loradex catalog, for ``loradex serve``.

Webui tools and third-party clients that speak Civitai (Civitai Helper, ComfyUI managers,
civitapy, civitai-hub, ``loradex pull --endpoint``) work against it unchanged: same paths, same
JSON field names. Ids are the catalog's row ids (adapter id = modelId, version id = modelVersion
id = file id), so they are stable.

Paths: ``GET /api/v1/models`` (query, ids, username, types, baseModels, tag, nsfw, sort, period,
limit ≤ 100, cursor or page), ``/api/v1/models/{id}``, ``/api/v1/model-versions/{id}``,
``/api/v1/model-versions/mini/{id}``, ``/api/v1/model-versions/by-hash/{hash}`` (AutoV1, AutoV2,
AutoV3 full or 12-hex, SHA256, and CRC32/BLAKE3 where Civitai listed them; case-insensitive; only
when the hash names one file), ``POST /api/v1/model-versions/by-hash`` (≤ 100 hashes, body ≤ 64
KiB), ``POST /api/v1/model-versions/by-hash/ids`` (≤ 10,000 SHA256, body ≤ 1 MiB),
``/api/v1/images`` (prompt records, ``civitai_images``), ``/api/v1/creators``, ``/api/v1/tags``,
``/api/v1/enums``, ``GET /api/download/models/{versionId}`` → 307 to a signed file URL that
serves the blob with Content-Disposition and Range.

Who sees what: a token (or ``serve --public-read``) sees everything; a request without a token
sees the adapters of public namespaces (``serve namespace set NAME --public``: metadata, and
files unless the namespace keeps downloads for tokens) and gets 404 for everything else, as for
an unknown id; with no public namespace it gets 401, as before namespaces could be public.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures, whose types are
# imported inside civitai_router() and must be evaluated there.

import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from typing import Optional
from urllib.parse import quote, urlencode

from sqlalchemy import false, func, or_, select

from loradex.families.vocabulary import air_ecosystem, civitai_base_model, stored_variant

from ..catalog.db_schema import AdapterRow, PromptRecordRow, VersionFileRow, VersionRow
from ..files.hashing import EMPTY_SHA256
from .app import register_router
from .civitai_images import images_page, used_by, version_images
from .civitai_query import (CIVITAI_TYPE, ENUMS, BadFilter, ModelFilter, adapter_namespace,
                            adapter_tags, creators, in_namespaces, model_page, parse_ids, parse_period,
                            parse_sort, served_names, split_list, tags)
from .hub.protocol_errors import read_body_capped

MAX_LIMIT = 100
MAX_LIST_LIMIT = 200  # images, creators, tags (Civitai's cap there)
NO_AUTOV1 = EMPTY_SHA256[:8]  # the AutoV1 of every file of at most 1 MiB
BY_HASH_MAX_BODY = 64 << 10  # POST by-hash: 100 quoted 64-hex hashes are ~7 kB
BY_HASH_IDS_MAX = 10_000
BY_HASH_IDS_MAX_BODY = 1 << 20  # 10,000 quoted 64-hex hashes are ~670 kB
BY_HASH_IDS_SCHEMA = {"type": "array", "maxItems": BY_HASH_IDS_MAX, "items": {"type": "string", "maxLength": 200}}
SIGNED_URL_SECONDS = 3600
FILE_FORMAT = {"safetensors": "SafeTensor", "pickle": "PickleTensor", "ckpt": "PickleTensor",
               "pt": "PickleTensor", "bin": "PickleTensor"}
AIR_TYPE = {"lora": "lora", "lycoris": "lycoris", "embedding": "embedding", "checkpoint": "checkpoint"}
NEEDS_TOKEN = "Unauthorized: this mirror needs an API token (Authorization: Bearer or ?token=)"


def _iso(value) -> str | None:
    if value is None:
        return None
    text = value.replace(tzinfo=None).isoformat(timespec="milliseconds")
    return text + "Z"  # Civitai writes UTC with a Z and milliseconds


def _file_format(row: VersionRow) -> str:
    fmt = f"{(row.probe or {}).get('container') or ''} {row.file_format or ''}".lower()
    for key, name in FILE_FORMAT.items():
        if key in fmt:
            return name
    return "Other"


def _fp(row: VersionRow) -> str | None:
    dtypes = (row.probe or {}).get("dtypes") or []
    dtype = str(dtypes[0] if len(dtypes) == 1 else "").lower()
    return {"float16": "fp16", "f16": "fp16", "fp16": "fp16", "bfloat16": "bf16", "bf16": "bf16",
            "float32": "fp32", "f32": "fp32", "fp32": "fp32"}.get(dtype)


def file_hashes(row: VersionRow) -> dict:
    civ = (row.extra or {}).get("civitai") or {}
    hashes = {"AutoV1": (row.autov1 or "").upper() or None, "AutoV2": row.autov2.upper(),
              "SHA256": row.sha256.upper()}
    known = civ.get("hashes") or {}
    if str(known.get("SHA256", "")).lower() == row.sha256:  # extra hashes only for these bytes
        for key in ("CRC32", "BLAKE3"):
            if known.get(key):
                hashes[key] = str(known[key]).upper()
    if row.autov3:
        hashes["AutoV3"] = row.autov3.upper()
    return {k: v for k, v in hashes.items() if v}


def file_json(row: VersionRow, base_url: str, name: str) -> dict:
    pickle = _file_format(row) == "PickleTensor"
    return {
        "id": row.id,
        "sizeKB": row.size / 1024,
        "name": name,
        "type": "Model",
        "pickleScanResult": "Success",
        "pickleScanMessage": "Pickle scanned by loradex" if pickle else "No Pickle imports",
        "virusScanResult": "Success",
        "virusScanMessage": None,
        "scannedAt": _iso(row.created_at),
        "metadata": {"format": _file_format(row), "size": None, "fp": _fp(row)},
        "hashes": file_hashes(row),
        "primary": True,
        "downloadUrl": f"{base_url}api/download/models/{row.id}",
    }


def other_files_json(s, row: VersionRow, base_url: str) -> list[dict]:
    """The other files of a multi-file version (a Wan 2.2 pair's low-noise file), as Civitai lists a
    version's further files: not primary, each downloaded through the version's URL with
    ``?file=<its name>``. Their ids are the version-file rows' (a namespace of their own)."""
    if s is None:
        return []
    rows = s.scalars(select(VersionFileRow).where(VersionFileRow.version_id == row.id, VersionFileRow.position > 0)
                     .order_by(VersionFileRow.position))
    out = []
    for f in rows:
        out.append({
            "id": f.id, "sizeKB": f.size / 1024, "name": f.file_name, "type": "Model",
            "pickleScanResult": "Success", "pickleScanMessage": "No Pickle imports", "virusScanResult": "Success",
            "virusScanMessage": None, "scannedAt": _iso(row.created_at),
            "metadata": {"format": "SafeTensor" if f.file_name.endswith(".safetensors") else "Other",
                         "size": None, "fp": None},
            "hashes": {"SHA256": f.sha256.upper()}, "primary": False,
            "downloadUrl": f"{base_url}api/download/models/{row.id}?" + urlencode({"file": f.file_name}),
        })
    return out


def _other_file(s, version_id: int, file_name: str) -> VersionFileRow | None:
    """A multi-file version's other file by name (a request value, compared, never a path)."""
    return s.scalar(select(VersionFileRow).where(VersionFileRow.version_id == version_id,
                                                 VersionFileRow.file_name == file_name,
                                                 VersionFileRow.position > 0))


def _variant(row: VersionRow, adapter: AdapterRow) -> str | None:
    found = stored_variant(adapter.base, probe=row.probe, metadata=row.file_metadata, extra=row.extra)
    return found[0] if found else None


def base_model_name(row: VersionRow, adapter: AdapterRow) -> str:
    """Civitai's ``baseModel`` for a version: the one it was pulled/imported with when it names the
    catalog's (probed) family, else the family's and variant's name (a Pony LoRA: "Pony")."""
    from ..remotes.civitai import base_family

    civ = (row.extra or {}).get("civitai") or {}
    label = civ.get("baseModel") if isinstance(civ.get("baseModel"), str) else None
    if label and (adapter.base == "unknown" or base_family(label) == adapter.base):
        return label
    return civitai_base_model(adapter.base, _variant(row, adapter))


def air(row: VersionRow, adapter: AdapterRow) -> str:
    """The version's AIR (Civitai's resource URN), with this server's ids; the ecosystem is the
    family's, or its variant's where Civitai gives the variant one (Flux.1 Kontext, Wan 2.2 …)."""
    ecosystem = air_ecosystem(adapter.base, _variant(row, adapter))
    return (f"urn:air:{ecosystem}:{AIR_TYPE.get(adapter.kind, 'other')}"
            f":civitai:{adapter.id}@{row.id}")


def _nsfw_level(row: VersionRow) -> int:
    civ = (row.extra or {}).get("civitai") or {}
    level = civ.get("nsfwLevel")
    if isinstance(level, int) and not isinstance(level, bool) and level > 0:
        return level
    return 4 if civ.get("nsfw") else 1  # Civitai's levels: 1 PG … 4 R and up


def version_json(row: VersionRow, adapter: AdapterRow, base_url: str, *, in_model: bool = False,
                 s=None, name: str | None = None) -> dict:
    civ = (row.extra or {}).get("civitai") or {}
    if name is None:
        name = served_names(s, [row])[row.id] if s is not None else (row.file_name or f"{row.sha256[:12]}.safetensors")
    images = [{"url": im.get("url"), "nsfwLevel": im.get("nsfwLevel") or 1, "width": im.get("width"),
               "height": im.get("height"), "type": "image", "meta": im.get("meta")}
              for im in civ.get("images") or [] if isinstance(im, dict)]
    if not images and s is not None:
        images = version_images(s, row.id, base_url)
    data = {
        "id": row.id,
        "modelId": adapter.id,
        "name": row.version,
        "air": air(row, adapter),
        "createdAt": _iso(row.created_at),
        "updatedAt": _iso(row.created_at),
        "status": "Published",
        "availability": "Public",
        "nsfwLevel": _nsfw_level(row),
        "publishedAt": _iso(row.created_at),
        "trainedWords": list(row.trigger_words or []),
        "trainingStatus": None,
        "trainingDetails": None,
        "baseModel": base_model_name(row, adapter),
        "baseModelType": civ.get("baseModelType") or "Standard",
        "earlyAccessEndsAt": None,
        "description": civ.get("description") or row.message or "",
        "uploadType": "Created",
        "usageControl": "Download",
        "stats": {"downloadCount": 0, "ratingCount": 0, "rating": 0, "thumbsUpCount": 0},
        "model": {"name": adapter.name, "type": civ.get("modelType") or CIVITAI_TYPE.get(adapter.kind, "Other"),
                  "nsfw": bool(civ.get("nsfw")), "poi": False, "mode": None},
        "files": [file_json(row, base_url, name), *other_files_json(s, row, base_url)],
        "images": images,
        "downloadUrl": f"{base_url}api/download/models/{row.id}",
    }
    if in_model:  # versions listed inside a model carry no modelId/model (as on Civitai)
        del data["modelId"], data["model"]
    return data


def mini_json(row: VersionRow, adapter: AdapterRow, base_url: str, name: str, *, require_auth: bool) -> dict:
    """``GET /api/v1/model-versions/mini/{id}``: what a downloader needs, nothing heavy."""
    return {
        "id": row.id, "modelId": adapter.id, "air": air(row, adapter), "versionName": row.version,
        "modelName": adapter.name, "baseModel": base_model_name(row, adapter), "availability": "Public",
        "publishedAt": _iso(row.created_at), "size": row.size / 1024, "fileType": "Model", "fileName": name,
        "hashes": file_hashes(row), "downloadUrls": [f"{base_url}api/download/models/{row.id}"],
        "format": _file_format(row), "canGenerate": False, "isFeatured": False, "requireAuth": require_auth,
        "checkPermission": False, "earlyAccessEndsAt": None, "freeTrialLimit": None,
        "additionalResourceCharge": False, "minor": False, "sfwOnly": False,
    }


def _live_versions(s, adapter_id: int) -> list[VersionRow]:
    return _live_versions_of(s, [adapter_id])[adapter_id]


def model_json(s, adapter: AdapterRow, base_url: str, versions: list[VersionRow] | None = None) -> dict:
    versions = versions if versions is not None else _live_versions(s, adapter.id)
    names = served_names(s, versions)
    items = []
    for index, row in enumerate(versions):
        item = version_json(row, adapter, base_url, in_model=True, s=s, name=names[row.id])
        item["index"] = index
        items.append(item)
    return {
        "id": adapter.id,
        "name": adapter.name,
        "description": adapter.description or "",
        "type": CIVITAI_TYPE.get(adapter.kind, "Other"),
        "poi": False,
        "nsfw": any(bool(((v.extra or {}).get("civitai") or {}).get("nsfw")) for v in versions),
        "nsfwLevel": max((_nsfw_level(v) for v in versions), default=1),
        "availability": "Public",
        "mode": None,
        "minor": False,
        "sfwOnly": False,
        "supportsGeneration": False,
        "allowNoCredit": True,
        "allowCommercialUse": [],
        "allowDerivatives": True,
        "allowDifferentLicense": True,
        "stats": {"downloadCount": 0, "favoriteCount": 0, "thumbsUpCount": 0, "thumbsDownCount": 0,
                  "commentCount": 0, "ratingCount": 0, "rating": 0, "tippedAmountCount": 0},
        "creator": {"username": versions[-1].created_by if versions else "", "image": None},
        "tags": adapter_tags(adapter),
        "modelVersions": items,
    }


def _live_versions_of(s, adapter_ids: list[int]) -> dict[int, list[VersionRow]]:
    """Live versions of several adapters in one query, newest first per adapter."""
    out: dict[int, list[VersionRow]] = {i: [] for i in adapter_ids}
    if adapter_ids:
        for row in s.scalars(select(VersionRow).where(VersionRow.adapter_id.in_(adapter_ids),
                                                      VersionRow.deleted_at.is_(None))
                             .order_by(VersionRow.adapter_id, VersionRow.sort_key.desc())):
            out[row.adapter_id].append(row)
    return out


def _listed_by_civitai(kind: str):
    """A hash Civitai listed for these exact bytes, kept in ``extra.civitai.hashes`` when the
    version was pulled or identified (CRC32 and BLAKE3: loradex computes neither itself)."""
    listed = VersionRow.extra[("civitai", "hashes", kind)].as_string()
    same_bytes = func.lower(VersionRow.extra[("civitai", "hashes", "SHA256")].as_string()) == VersionRow.sha256
    return lambda h: (func.lower(listed) == h) & same_bytes


def _autov1(h: str):
    # Every file of at most 1 MiB has the AutoV1 of no bytes at all: it names no file.
    return VersionRow.autov1 == h if h != NO_AUTOV1 else false()


# hex length → what a hash of that length can be (Civitai's by-hash takes any kind, unlabelled)
HASH_KINDS = {
    8: [_autov1, _listed_by_civitai("CRC32")],
    10: [lambda h: VersionRow.autov2 == h],
    12: [lambda h: VersionRow.autov3.like(h + "%")],
    64: [lambda h: VersionRow.sha256 == h, lambda h: VersionRow.autov3 == h, _listed_by_civitai("BLAKE3")],
}


def find_by_hash(s, value: str) -> VersionRow | None:
    """The live version whose file has this hash: AutoV1 or CRC32 (8 hex), AutoV2 (10), AutoV3
    short (12), SHA256, AutoV3 or BLAKE3 (64); case-insensitive.

    Only an answer that names one file: when versions with different bytes match (two files that
    share their 64 KiB at 1 MiB, or any small file's AutoV1), there is no answer, as for an unknown
    hash. Versions holding the same bytes are one file; the oldest is answered."""
    h = value.strip().lower()
    if not h or any(c not in "0123456789abcdef" for c in h) or len(h) not in HASH_KINDS:
        return None
    cond = or_(*(kind(h) for kind in HASH_KINDS[len(h)])) & VersionRow.deleted_at.is_(None)
    row = s.scalar(select(VersionRow).where(cond).order_by(VersionRow.id).limit(1))
    if row is None:
        return None
    other = s.scalar(select(VersionRow.id).where(cond, VersionRow.sha256 != row.sha256).limit(1))
    return row if other is None else None


def ids_by_sha256(s, values: list[str], namespaces: frozenset | None) -> list[dict]:
    """``POST by-hash/ids``: {modelVersionId, hash} for each SHA256 a live version holds (the
    oldest such version), in the order asked; other values are skipped, as Civitai does."""
    wanted = {}
    for value in values:
        h = value.strip().lower()
        if len(h) == 64 and all(c in "0123456789abcdef" for c in h):
            wanted.setdefault(h, value)
    found: dict[str, int] = {}
    keys = sorted(wanted)
    for i in range(0, len(keys), 500):
        stmt = (select(VersionRow.sha256, func.min(VersionRow.id))
                .where(VersionRow.sha256.in_(keys[i:i + 500]), VersionRow.deleted_at.is_(None))
                .group_by(VersionRow.sha256))
        if namespaces is not None:
            stmt = stmt.join(AdapterRow, AdapterRow.id == VersionRow.adapter_id).where(in_namespaces(namespaces))
        found.update(dict(s.execute(stmt).all()))
    return [{"modelVersionId": found[h], "hash": value} for h, value in wanted.items() if h in found]


def _sign(secret: bytes, version_id: int, expires: int) -> str:
    return hmac.new(secret, f"{version_id}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]


def _secret(app) -> bytes:
    if not hasattr(app.state, "civitai_url_secret"):  # shared by every replica on a server database
        from .shared_secrets import server_secret

        app.state.civitai_url_secret = server_secret(getattr(app.state, "catalog", None), "civitai-download")
    return app.state.civitai_url_secret


@dataclass(frozen=True)
class View:
    """What a caller may see: ``namespaces`` whose metadata it reads and ``downloads`` whose files
    it fetches (None: everything — a token, or ``--public-read``)."""

    namespaces: frozenset | None = None
    downloads: frozenset | None = None

    def sees(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces

    def fetches(self, namespace: str) -> bool:
        return self.downloads is None or namespace in self.downloads


def _paged_meta(base: str, path: str, params, *, total: int, page: int, limit: int) -> dict:
    meta = {"totalItems": total, "currentPage": page, "pageSize": limit,
            "totalPages": (total + limit - 1) // limit}
    if page * limit < total:
        meta["nextPage"] = f"{base}{path}?" + urlencode([*params, ("page", page + 1)])
    return meta


@register_router("civitai")
def civitai_router():
    from fastapi import APIRouter, Query, Request
    from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
    from starlette.concurrency import run_in_threadpool

    from .hub.protocol_errors import BadRequest, TooLarge, public_base_url
    from .hub.request_schemas import BY_HASHES, parse_body

    router = APIRouter()

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def view(request: Request) -> View | JSONResponse:
        # ?token= is accepted here, for reads only: Civitai documents it and webui downloaders use it
        auth = request.app.state.authorize
        if auth(request, "read", query_token=True):
            return View()
        public = {} if auth.presents_token(request) else auth.public_namespaces()
        if not public:  # a refused token, or nothing public: as before namespaces could be public
            return error(401, NEEDS_TOKEN)
        return View(frozenset(public), frozenset(n for n, v in public.items() if v == "public"))

    def base(request: Request) -> str:  # the configured public URL, never the Host header
        return public_base_url(request, getattr(request.app.state, "public_url", None))

    def catalog(request: Request):
        return request.app.state.catalog

    def visible_version(s, seen: View, row: VersionRow | None) -> VersionRow | None:
        if row is None or row.deleted_at is not None:
            return None
        return row if seen.namespaces is None or seen.sees(adapter_namespace(s, row.adapter_id)) else None

    def paging(limit: int, page: int | None, most: int) -> JSONResponse | None:
        if limit < 1 or limit > most:
            return error(400, f"limit must be between 1 and {most}")
        if page is not None and page < 1:
            return error(400, "page must be 1 or more")
        return None

    @router.get("/api/v1/models")
    def list_models(request: Request, limit: int = 100, cursor: str | None = None, page: int | None = None,
                    query: str | None = None, types: list[str] = Query(default=[]),
                    baseModels: list[str] = Query(default=[]), tag: str | None = None,  # noqa: N803
                    username: str | None = None, ids: list[str] = Query(default=[]),
                    sort: str | None = None, period: str | None = None, nsfw: bool | None = None):
        if isinstance(seen := view(request), JSONResponse):
            return seen
        if (resp := paging(limit, page, MAX_LIMIT)) is not None:
            return resp
        try:
            after = int(cursor) if cursor else None
            order = parse_sort(sort)
            want = ModelFilter(query=query, types={t.lower() for t in split_list(types)},
                               bases={b.lower() for b in split_list(baseModels)}, tag=tag, username=username,
                               ids=tuple(parse_ids(ids)), nsfw=nsfw, period=parse_period(period),
                               namespaces=seen.namespaces)
        except BadFilter as exc:
            return error(400, str(exc))
        except ValueError:
            return error(400, "invalid cursor")

        def run(s):
            window, more, total = model_page(s, want, limit=limit, after=after, page=page, newest=order == "Newest")
            versions = _live_versions_of(s, [a.id for a in window])
            items = [model_json(s, a, base(request), versions[a.id]) for a in window]
            return items, more, total, window

        items, more, total, window = catalog(request).read(run)
        meta: dict = {}
        params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("cursor", "page", "token")]
        if page:
            meta.update({"totalItems": total, "currentPage": page, "pageSize": limit,
                         "totalPages": (total + limit - 1) // limit})
            if more:
                meta["nextPage"] = f"{base(request)}api/v1/models?" + urlencode([*params, ("page", page + 1)])
        elif more and window:
            meta["nextCursor"] = str(window[-1].id)
            meta["nextPage"] = f"{base(request)}api/v1/models?" + urlencode(
                [*params, ("cursor", meta["nextCursor"])])
        return {"items": items, "metadata": meta}

    @router.get("/api/v1/models/{model_id}")
    def get_model(request: Request, model_id: int):
        if isinstance(seen := view(request), JSONResponse):
            return seen

        def run(s):
            adapter = s.get(AdapterRow, model_id)
            if adapter is None or not seen.sees(adapter_namespace(s, adapter.id)):
                return None
            versions = _live_versions(s, adapter.id)
            return model_json(s, adapter, base(request), versions) if versions else None

        data = catalog(request).read(run)
        return data if data is not None else error(404, f"No model with id {model_id}")

    @router.get("/api/v1/model-versions/by-hash/{value}")
    def by_hash(request: Request, value: str):
        if isinstance(seen := view(request), JSONResponse):
            return seen

        def run(s):
            row = visible_version(s, seen, find_by_hash(s, value))
            return version_json(row, s.get(AdapterRow, row.adapter_id), base(request), s=s) if row else None

        data = catalog(request).read(run)
        return data if data is not None else error(404, "Model not found")

    async def capped_body(request: Request, cap: int, schema: dict, what: str):
        try:  # read with a cap, then parse against the schema
            body = await read_body_capped(request, cap)
        except TooLarge as exc:
            return error(413, exc.message)
        try:
            return parse_body(body, schema, what)
        except BadRequest as exc:
            return error(400, exc.message)

    @router.post("/api/v1/model-versions/by-hash")
    async def by_hashes(request: Request):
        if isinstance(seen := view(request), JSONResponse):
            return seen
        hashes = await capped_body(request, BY_HASH_MAX_BODY, BY_HASHES, "the body (a JSON list of at most 100 hashes)")
        if isinstance(hashes, JSONResponse):
            return hashes

        def run(s):
            out, done = [], set()
            for value in hashes:
                row = visible_version(s, seen, find_by_hash(s, str(value)))
                if row is not None and row.id not in done:
                    done.add(row.id)
                    out.append(version_json(row, s.get(AdapterRow, row.adapter_id), base(request), s=s))
            return out

        return await run_in_threadpool(catalog(request).read, run)

    @router.post("/api/v1/model-versions/by-hash/ids")
    async def by_hash_ids(request: Request):
        if isinstance(seen := view(request), JSONResponse):
            return seen
        hashes = await capped_body(request, BY_HASH_IDS_MAX_BODY, BY_HASH_IDS_SCHEMA,
                                   f"the body (a JSON list of at most {BY_HASH_IDS_MAX} SHA256 hashes)")
        if isinstance(hashes, JSONResponse):
            return hashes
        return await run_in_threadpool(catalog(request).read, lambda s: ids_by_sha256(s, hashes, seen.namespaces))

    @router.get("/api/v1/model-versions/mini/{version_id}")
    def mini_version(request: Request, version_id: int):
        if isinstance(seen := view(request), JSONResponse):
            return seen
        public_read = request.app.state.authorize.public_read

        def run(s):
            row = visible_version(s, seen, s.get(VersionRow, version_id))
            if row is None:
                return None
            open_files = public_read or (request.app.state.authorize.public_namespaces().get(
                adapter_namespace(s, row.adapter_id)) == "public")
            return mini_json(row, s.get(AdapterRow, row.adapter_id), base(request), served_names(s, [row])[row.id],
                             require_auth=not open_files)

        data = catalog(request).read(run)
        return data if data is not None else error(404, f"No model version with id {version_id}")

    @router.get("/api/v1/model-versions/{version_id}")
    def get_version(request: Request, version_id: int):
        if isinstance(seen := view(request), JSONResponse):
            return seen

        def run(s):
            row = visible_version(s, seen, s.get(VersionRow, version_id))
            return version_json(row, s.get(AdapterRow, row.adapter_id), base(request), s=s) if row else None

        data = catalog(request).read(run)
        return data if data is not None else error(404, f"No model version with id {version_id}")

    @router.get("/api/v1/images")
    def list_images(request: Request, limit: int = 100, cursor: str | None = None, page: int | None = None,
                    modelId: int | None = None, modelVersionId: int | None = None,  # noqa: N803
                    imageId: int | None = None, username: str | None = None, sort: str | None = None):  # noqa: N803
        if isinstance(seen := view(request), JSONResponse):
            return seen
        if (resp := paging(limit, page, MAX_LIST_LIMIT)) is not None:
            return resp
        if cursor is not None and (not cursor.isascii() or not cursor.isdigit() or len(cursor) > 12):
            return error(400, "invalid cursor")
        offset = (page - 1) * limit if page else int(cursor or 0)
        visible = None if seen.namespaces is None else in_namespaces(seen.namespaces)
        items, more = catalog(request).read(lambda s: images_page(
            s, base_url=base(request), limit=limit, offset=offset, version_id=modelVersionId, model_id=modelId,
            username=username, image=imageId, visible=visible, oldest=(sort or "").lower() == "oldest"))
        params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("cursor", "page", "token")]
        meta: dict = {}
        if page:
            meta.update({"currentPage": page, "pageSize": limit})
            if more:
                meta["nextPage"] = f"{base(request)}api/v1/images?" + urlencode([*params, ("page", page + 1)])
        elif more:
            meta["nextCursor"] = str(offset + limit)
            meta["nextPage"] = f"{base(request)}api/v1/images?" + urlencode([*params, ("cursor", meta["nextCursor"])])
        return {"items": items, "metadata": meta}

    def named_list(request: Request, rows: list[tuple[str, int]], *, key: str, path: str,
                   filter_name: str, limit: int, page: int) -> dict:
        window = rows[(page - 1) * limit: page * limit]
        link = f"{base(request)}api/v1/models?{filter_name}="
        items = [{key: name, "modelCount": count, "link": link + quote(name, safe="")} for name, count in window]
        if key == "username":
            for item in items:
                item["image"] = None
        params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("page", "token")]
        return {"items": items, "metadata": _paged_meta(base(request), path, params, total=len(rows),
                                                        page=page, limit=limit)}

    @router.get("/api/v1/creators")
    def list_creators(request: Request, limit: int = 20, page: int = 1, query: str | None = None):
        if isinstance(seen := view(request), JSONResponse):
            return seen
        if (resp := paging(limit, page, MAX_LIST_LIMIT)) is not None:
            return resp
        rows = catalog(request).read(lambda s: creators(s, seen.namespaces, query))
        return named_list(request, rows, key="username", path="api/v1/creators", filter_name="username",
                          limit=limit, page=page)

    @router.get("/api/v1/tags")
    def list_tags(request: Request, limit: int = 20, page: int = 1, query: str | None = None):
        if isinstance(seen := view(request), JSONResponse):
            return seen
        if (resp := paging(limit, page, MAX_LIST_LIMIT)) is not None:
            return resp
        rows = catalog(request).read(lambda s: tags(s, seen.namespaces, query))
        return named_list(request, rows, key="name", path="api/v1/tags", filter_name="tag",
                          limit=limit, page=page)

    @router.get("/api/v1/enums")
    def enums(request: Request):
        if isinstance(seen := view(request), JSONResponse):
            return seen
        return ENUMS

    @router.get("/api/v1/images/{sha}.png")
    def image(request: Request, sha: str):
        if isinstance(seen := view(request), JSONResponse):
            return seen
        # only blobs that are a prompt record's image: the blob store is not browsable
        if not re.fullmatch(r"[0-9a-fA-F]{64}", sha):  # a request value never becomes a path unchecked
            return error(404, "No image")

        def run(s):
            stmt = select(PromptRecordRow.id).where(PromptRecordRow.image_sha256 == sha.lower())
            if seen.namespaces is not None:
                stmt = stmt.where(used_by(in_namespaces(seen.namespaces)))
            return s.scalar(stmt.limit(1))

        known = catalog(request).read(run)
        path = catalog(request).blobs.path_for(sha.lower()) if known is not None else None
        if path is None or not path.is_file():
            return error(404, "No image")
        return FileResponse(path, media_type="image/png")

    @router.get("/api/download/models/{version_id}")
    def download(request: Request, version_id: int, file: Optional[str] = None):
        if isinstance(seen := view(request), JSONResponse):
            return seen

        def run(s):
            row = visible_version(s, seen, s.get(VersionRow, version_id))
            if row is None:
                return None
            if file is not None:  # another file of a multi-file version
                other = _other_file(s, row.id, file)
                if other is None:
                    return "no file"
                return other.file_name, seen.fetches(adapter_namespace(s, row.adapter_id)), other.sha256
            return served_names(s, [row])[row.id], seen.fetches(adapter_namespace(s, row.adapter_id)), row.sha256

        found = catalog(request).read(run)
        if found == "no file":
            return error(404, f"Model version {version_id} has no other file named {str(file)[:100]!r}")
        if found is None:
            return error(404, f"No model version with id {version_id}")
        name, allowed, sha = found
        if not allowed:
            return error(401, "Unauthorized: downloads of this model need an API token "
                              "(Authorization: Bearer or ?token=)")
        if (presign := getattr(request.app.state, "presign", None)) is not None:  # serve --presigned-downloads
            return RedirectResponse(presign(sha, name), status_code=307)
        # Like Civitai: redirect to a short-lived signed URL that needs no token.
        expires = int(time.time()) + SIGNED_URL_SECONDS
        sig = _sign(_secret(request.app), version_id, expires)
        return RedirectResponse(f"{base(request)}api/download/files/{version_id}/{quote(name)}?"
                                + urlencode({"expires": expires, "sig": sig}), status_code=307)

    @router.get("/api/download/files/{version_id}/{file_name}")
    def file(request: Request, version_id: int, file_name: str, expires: int = 0, sig: str = ""):
        signed = expires >= time.time() and hmac.compare_digest(
            sig.encode(), _sign(_secret(request.app), version_id, expires).encode())
        if not signed and not request.app.state.authorize(request, "read", query_token=True):
            return error(401, NEEDS_TOKEN)

        def run(s):
            row = s.get(VersionRow, version_id)
            if row is None or row.deleted_at is not None:
                return None
            served = served_names(s, [row])[row.id]
            other = _other_file(s, row.id, file_name) if file_name != served else None
            return (other.sha256, other.file_name) if other is not None else (row.sha256, served)

        found = catalog(request).read(run)
        if found is None:
            return error(404, f"No model version with id {version_id}")
        sha, served = found
        if (presign := getattr(request.app.state, "presign", None)) is not None:
            return RedirectResponse(presign(sha, served), status_code=307)
        path = catalog(request).blobs.path_for(sha)
        if not path.is_file():
            return error(404, "file missing from the store")
        return FileResponse(path, filename=served, media_type="application/octet-stream")

    return router


def create_civitai_app(catalog, token: str | None = None):
    """An app serving only the Civitai-style API (tests, embedding)."""
    from .app import build_server_app

    return build_server_app(catalog, token, routers=["civitai"])
