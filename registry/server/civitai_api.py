"""A Civitai-style API (v1, read side) over a loradex catalog, for ``loradex serve``.

Webui tools that speak Civitai (Civitai Helper, ComfyUI managers, ``loradex pull --endpoint``)
work against it unchanged: same paths, same JSON field names. Ids are the catalog's row ids
(adapter id = modelId, version id = modelVersion id = file id), so they are stable.

Paths: ``GET /api/v1/models`` (query, types, baseModels, tag, sort, limit ≤ 100, cursor or page),
``/api/v1/models/{id}``, ``/api/v1/model-versions/{id}``, ``/api/v1/model-versions/by-hash/{hash}``
(AutoV1, AutoV2, AutoV3 full or 12-hex, SHA256, and CRC32/BLAKE3 where Civitai listed them;
case-insensitive; only when the hash names one file), ``POST
/api/v1/model-versions/by-hash`` (≤ 100 hashes, body ≤ 64 KiB), ``GET /api/download/models/{versionId}`` → 307
to a signed file URL that serves the blob with Content-Disposition and Range.
Sorting: loradex keeps no download counts or ratings, so every sort but "Newest" is by id.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures, whose types are
# imported inside civitai_router() and must be evaluated there.

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

from sqlalchemy import false, func, or_, select

from ..catalog.db_schema import AdapterRow, PromptRecordRow, PromptRecordVersionRow, VersionRow
from ..files.hashing import EMPTY_SHA256
from .hub.protocol_errors import read_body_capped
from .app import register_router

MAX_LIMIT = 100
NO_AUTOV1 = EMPTY_SHA256[:8]  # the AutoV1 of every file of at most 1 MiB
BY_HASH_MAX_BODY = 64 << 10  # POST by-hash: 100 quoted 64-hex hashes are ~7 kB
SIGNED_URL_SECONDS = 3600
CIVITAI_TYPE = {"lora": "LORA", "lycoris": "LoCon", "embedding": "TextualInversion", "checkpoint": "Checkpoint"}
CIVITAI_BASE = {"sd1": "SD 1.5", "sd2": "SD 2.1", "sdxl": "SDXL 1.0", "sd3": "SD 3", "flux": "Flux.1 D",
                "unknown": "Other"}
FILE_FORMAT = {"safetensors": "SafeTensor", "pickle": "PickleTensor", "ckpt": "PickleTensor",
               "pt": "PickleTensor", "bin": "PickleTensor"}


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


def file_json(row: VersionRow, base_url: str) -> dict:
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
    pickle = _file_format(row) == "PickleTensor"
    return {
        "id": row.id,
        "sizeKB": row.size / 1024,
        "name": row.file_name or f"{row.sha256[:12]}.safetensors",
        "type": "Model",
        "pickleScanResult": "Success",
        "pickleScanMessage": "Pickle scanned by loradex" if pickle else "No Pickle imports",
        "virusScanResult": "Success",
        "virusScanMessage": None,
        "scannedAt": _iso(row.created_at),
        "metadata": {"format": _file_format(row), "size": None, "fp": _fp(row)},
        "hashes": {k: v for k, v in hashes.items() if v},
        "primary": True,
        "downloadUrl": f"{base_url}api/download/models/{row.id}",
    }


def record_images(s, version_id: int, base_url: str) -> list[dict]:
    """Prompt records of a version as Civitai images: the original image URL of a Civitai import,
    else the record's PNG served by this mirror; ``meta`` in Civitai's field names."""
    rows = s.scalars(select(PromptRecordRow).join(PromptRecordVersionRow,
                                                 PromptRecordVersionRow.record_id == PromptRecordRow.id)
                     .where(PromptRecordVersionRow.version_id == version_id)
                     .order_by(PromptRecordRow.created_at, PromptRecordRow.id).limit(20))
    images = []
    for r in rows:
        rec = r.record or {}
        url = ((rec.get("imported") or {}).get("extra") or {}).get("civitai_image")
        if not url and r.image_sha256:
            url = f"{base_url}api/v1/images/{r.image_sha256}.png"
        if not url:
            continue
        meta = {"prompt": rec.get("prompt"), "negativePrompt": rec.get("negative_prompt"),
                "seed": rec.get("seed"), "steps": rec.get("steps"),
                "sampler": (rec.get("scheduler") or {}).get("name"), "cfgScale": rec.get("cfg")}
        if rec.get("width") and rec.get("height"):
            meta["Size"] = f"{rec['width']}x{rec['height']}"
        images.append({"url": url, "nsfwLevel": 1, "width": rec.get("width"), "height": rec.get("height"),
                       "type": "image", "meta": meta})
    return images


def version_json(row: VersionRow, adapter: AdapterRow, base_url: str, *, in_model: bool = False,
                 s=None) -> dict:
    civ = (row.extra or {}).get("civitai") or {}
    base_model = civ.get("baseModel") if civ.get("baseModel") else CIVITAI_BASE.get(adapter.base, "Other")
    if civ.get("baseModel") and adapter.base != "unknown":
        from ..remotes.civitai import base_family

        if base_family(civ["baseModel"]) != adapter.base:  # the catalog's (probed) family wins
            base_model = CIVITAI_BASE.get(adapter.base, "Other")
    images = [{"url": im.get("url"), "nsfwLevel": im.get("nsfwLevel") or 1, "width": im.get("width"),
               "height": im.get("height"), "type": "image", "meta": im.get("meta")}
              for im in civ.get("images") or [] if isinstance(im, dict)]
    if not images and s is not None:
        images = record_images(s, row.id, base_url)
    data = {
        "id": row.id,
        "modelId": adapter.id,
        "name": row.version,
        "createdAt": _iso(row.created_at),
        "updatedAt": _iso(row.created_at),
        "status": "Published",
        "publishedAt": _iso(row.created_at),
        "trainedWords": list(row.trigger_words or []),
        "trainingStatus": None,
        "trainingDetails": None,
        "baseModel": base_model,
        "baseModelType": civ.get("baseModelType") or "Standard",
        "earlyAccessEndsAt": None,
        "description": civ.get("description") or row.message or "",
        "uploadType": "Created",
        "stats": {"downloadCount": 0, "ratingCount": 0, "rating": 0, "thumbsUpCount": 0},
        "model": {"name": adapter.name, "type": civ.get("modelType") or CIVITAI_TYPE.get(adapter.kind, "Other"),
                  "nsfw": bool(civ.get("nsfw")), "poi": False},
        "files": [file_json(row, base_url)],
        "images": images,
        "downloadUrl": f"{base_url}api/download/models/{row.id}",
    }
    if in_model:  # versions listed inside a model carry no modelId/model (as on Civitai)
        del data["modelId"], data["model"]
    return data


def _live_versions(s, adapter_id: int) -> list[VersionRow]:
    return _live_versions_of(s, [adapter_id])[adapter_id]


def model_json(s, adapter: AdapterRow, base_url: str, versions: list[VersionRow] | None = None) -> dict:
    versions = versions if versions is not None else _live_versions(s, adapter.id)
    items = []
    for index, row in enumerate(versions):
        item = version_json(row, adapter, base_url, in_model=True, s=s)
        item["index"] = index
        items.append(item)
    tags = adapter.tags or {}
    return {
        "id": adapter.id,
        "name": adapter.name,
        "description": adapter.description or "",
        "type": CIVITAI_TYPE.get(adapter.kind, "Other"),
        "poi": False,
        "nsfw": any(bool(((v.extra or {}).get("civitai") or {}).get("nsfw")) for v in versions),
        "nsfwLevel": 1,
        "availability": "Public",
        "allowNoCredit": True,
        "allowCommercialUse": [],
        "allowDerivatives": True,
        "allowDifferentLicense": True,
        "stats": {"downloadCount": 0, "favoriteCount": 0, "thumbsUpCount": 0, "thumbsDownCount": 0,
                  "commentCount": 0, "ratingCount": 0, "rating": 0, "tippedAmountCount": 0},
        "creator": {"username": versions[-1].created_by if versions else "", "image": None},
        "tags": sorted({str(k) for k in tags} | {str(v) for v in tags.values() if isinstance(v, str) and v}),
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


@dataclass(frozen=True)
class ModelFilter:
    """``GET /api/v1/models`` filters (``types``/``bases`` lower-cased Civitai names).
    ``nsfw`` is accepted and ignored: the catalog keeps no nsfw flag of its own."""

    query: str | None = None
    types: set = field(default_factory=set)
    bases: set = field(default_factory=set)
    tag: str | None = None

    def conditions(self) -> list:
        has_live = select(VersionRow.id).where(VersionRow.adapter_id == AdapterRow.id,
                                               VersionRow.deleted_at.is_(None)).exists()
        conds = [has_live]
        if self.query:
            conds.append(func.lower(AdapterRow.name).contains(self.query.lower(), autoescape=True))
        if self.types:
            conds.append(_named_in(AdapterRow.kind, CIVITAI_TYPE, self.types))
        if self.bases:
            conds.append(_named_in(AdapterRow.base, CIVITAI_BASE, self.bases))
        return conds

    def tag_matches(self, adapter: AdapterRow) -> bool:
        tags = adapter.tags or {}
        words = {str(k).lower() for k in tags} | {str(v).lower() for v in tags.values()}
        return self.tag.lower() in words


def _named_in(column, names: dict[str, str], wanted: set):
    """``column``'s catalog value has one of the ``wanted`` Civitai names (values missing from
    ``names`` are "Other")."""
    cond = column.in_([key for key, name in names.items() if name.lower() in wanted])
    return cond | column.notin_(list(names)) if "other" in wanted else cond


def model_page(s, want: ModelFilter, *, limit: int, after: int | None = None, page: int | None = None,
               newest: bool = False) -> tuple[list[AdapterRow], bool, int | None]:
    """One page of adapters with live versions: (adapters, more after them, total for page mode).
    Paged in SQL; a ``tag`` (free-form JSON tags) is matched over the adapter rows in Python."""
    order = AdapterRow.id.desc() if newest else AdapterRow.id
    stmt = select(AdapterRow).where(*want.conditions()).order_by(order)
    if after is not None and not page:
        stmt = stmt.where(AdapterRow.id < after if newest else AdapterRow.id > after)
    skip = (page - 1) * limit if page else 0
    total = None
    if want.tag:
        rows = [a for a in s.scalars(stmt) if want.tag_matches(a)]
        total = len(rows)
        rows = rows[skip: skip + limit + 1]
    elif page:
        total = s.scalar(select(func.count()).select_from(AdapterRow).where(*want.conditions()))
        rows = list(s.scalars(stmt.offset(skip).limit(limit + 1)))
    else:
        rows = list(s.scalars(stmt.limit(limit + 1)))
    return rows[:limit], len(rows) > limit, total


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


def _sign(secret: bytes, version_id: int, expires: int) -> str:
    return hmac.new(secret, f"{version_id}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]


def _secret(app) -> bytes:
    if not hasattr(app.state, "civitai_url_secret"):
        app.state.civitai_url_secret = secrets.token_bytes(32)
    return app.state.civitai_url_secret


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

    def denied(request: Request) -> JSONResponse | None:
        # ?token= is accepted here, for reads only: Civitai documents it and webui downloaders use it
        if request.app.state.authorize(request, "read", query_token=True):
            return None
        return error(401, "Unauthorized: this mirror needs an API token (Authorization: Bearer or ?token=)")

    def base(request: Request) -> str:  # the configured public URL, never the Host header
        return public_base_url(request, getattr(request.app.state, "public_url", None))

    def catalog(request: Request):
        return request.app.state.catalog

    @router.get("/api/v1/models")
    def list_models(request: Request, limit: int = 100, cursor: str | None = None, page: int | None = None,
                    query: str | None = None, types: list[str] = Query(default=[]),
                    baseModels: list[str] = Query(default=[]), tag: str | None = None,  # noqa: N803
                    sort: str | None = None, nsfw: bool | None = None):
        if (resp := denied(request)) is not None:
            return resp
        if limit < 1 or limit > MAX_LIMIT:
            return error(400, f"limit must be between 1 and {MAX_LIMIT}")
        if page is not None and page < 1:
            return error(400, "page must be 1 or more")
        newest = (sort or "").lower() == "newest"
        try:
            after = int(cursor) if cursor else None
        except ValueError:
            return error(400, "invalid cursor")
        want = ModelFilter(query=query, types={t.lower() for t in types},
                           bases={b.lower() for b in baseModels}, tag=tag)

        def run(s):
            window, more, total = model_page(s, want, limit=limit, after=after, page=page, newest=newest)
            versions = _live_versions_of(s, [a.id for a in window])
            items = [model_json(s, a, base(request), versions[a.id]) for a in window]
            return items, more, total, window

        items, more, total, window = catalog(request).read(run)
        meta: dict = {}
        params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("cursor", "page")]
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
        if (resp := denied(request)) is not None:
            return resp

        def run(s):
            adapter = s.get(AdapterRow, model_id)
            if adapter is None:
                return None
            versions = _live_versions(s, adapter.id)
            return model_json(s, adapter, base(request), versions) if versions else None

        data = catalog(request).read(run)
        return data if data is not None else error(404, f"No model with id {model_id}")

    @router.get("/api/v1/model-versions/by-hash/{value}")
    def by_hash(request: Request, value: str):
        if (resp := denied(request)) is not None:
            return resp

        def run(s):
            row = find_by_hash(s, value)
            return version_json(row, s.get(AdapterRow, row.adapter_id), base(request), s=s) if row else None

        data = catalog(request).read(run)
        return data if data is not None else error(404, "Model not found")

    @router.post("/api/v1/model-versions/by-hash")
    async def by_hashes(request: Request):
        if (resp := denied(request)) is not None:
            return resp
        try:  # read with a cap: 100 hashes of 64 hex digits fit in a few kB
            body = await read_body_capped(request, BY_HASH_MAX_BODY)
        except TooLarge as exc:
            return error(413, exc.message)
        try:
            hashes = parse_body(body, BY_HASHES, "the body (a JSON list of at most 100 hashes)")
        except BadRequest as exc:
            return error(400, exc.message)

        def run(s):
            out, seen = [], set()
            for value in hashes:
                row = find_by_hash(s, str(value))
                if row is not None and row.id not in seen:
                    seen.add(row.id)
                    out.append(version_json(row, s.get(AdapterRow, row.adapter_id), base(request), s=s))
            return out

        return await run_in_threadpool(catalog(request).read, run)

    @router.get("/api/v1/model-versions/{version_id}")
    def get_version(request: Request, version_id: int):
        if (resp := denied(request)) is not None:
            return resp

        def run(s):
            row = s.get(VersionRow, version_id)
            if row is None or row.deleted_at is not None:
                return None
            return version_json(row, s.get(AdapterRow, row.adapter_id), base(request), s=s)

        data = catalog(request).read(run)
        return data if data is not None else error(404, f"No model version with id {version_id}")

    @router.get("/api/v1/images/{sha}.png")
    def image(request: Request, sha: str):
        if (resp := denied(request)) is not None:
            return resp
        # only blobs that are a prompt record's image: the blob store is not browsable
        if not re.fullmatch(r"[0-9a-fA-F]{64}", sha):  # a request value never becomes a path unchecked
            return error(404, "No image")
        known = catalog(request).read(lambda s: s.scalar(
            select(PromptRecordRow.id).where(PromptRecordRow.image_sha256 == sha.lower()).limit(1)))
        path = catalog(request).blobs.path_for(sha.lower())
        if known is None or not path.is_file():
            return error(404, "No image")
        return FileResponse(path, media_type="image/png")

    @router.get("/api/download/models/{version_id}")
    def download(request: Request, version_id: int):
        if (resp := denied(request)) is not None:
            return resp

        def run(s):
            row = s.get(VersionRow, version_id)
            return None if row is None or row.deleted_at is not None else (row.file_name or f"{row.sha256[:12]}.safetensors")

        name = catalog(request).read(run)
        if name is None:
            return error(404, f"No model version with id {version_id}")
        # Like Civitai: redirect to a short-lived signed URL that needs no token.
        expires = int(time.time()) + SIGNED_URL_SECONDS
        sig = _sign(_secret(request.app), version_id, expires)
        return RedirectResponse(f"{base(request)}api/download/files/{version_id}/{quote(name)}?"
                                + urlencode({"expires": expires, "sig": sig}), status_code=307)

    @router.get("/api/download/files/{version_id}/{file_name}")
    def file(request: Request, version_id: int, file_name: str, expires: int = 0, sig: str = ""):
        signed = expires >= time.time() and hmac.compare_digest(
            sig.encode(), _sign(_secret(request.app), version_id, expires).encode())
        if not signed and (resp := denied(request)) is not None:
            return resp

        def run(s):
            row = s.get(VersionRow, version_id)
            return None if row is None or row.deleted_at is not None else (row.sha256, row.file_name)

        found = catalog(request).read(run)
        if found is None:
            return error(404, f"No model version with id {version_id}")
        sha, stored_name = found
        path = catalog(request).blobs.path_for(sha)
        if not path.is_file():
            return error(404, "file missing from the store")
        return FileResponse(path, filename=stored_name or file_name, media_type="application/octet-stream")

    return router


def create_civitai_app(catalog, token: str | None = None):
    """An app serving only the Civitai-style API (tests, embedding)."""
    from .app import build_server_app

    return build_server_app(catalog, token, routers=["civitai"])
