"""Images for the web pages: ``/ui/blobs/{sha256}`` (the stored image) and
``/ui/thumbs/{sha256}.webp|png`` (a thumbnail, made once and cached under the home).

Only images some catalog row shows are served: a prompt record's image, a version's preview or
an image of a live dataset version (``dataset_pages``),
and only to visitors who may see one of the adapters that row belongs to (a record whose stack
names no catalog version is for signed-in users and ``--public-read`` only). Adapter files and
other blobs are never served here, and bytes that are not PNG, JPEG, WebP or GIF are refused.

Answers carry ``ETag: "<sha256>"`` and ``Cache-Control: …, max-age=31536000, immutable`` (the
bytes of a sha256 never change): ``public`` when anonymous visitors may see the image, else
``private``; ``If-None-Match`` with that tag answers 304.

Thumbnails: decoded with a pixel cap (``MAX_PIXELS``, checked from the header before any
decoding; JPEG decoded at reduced size with ``draft``), at most ``THUMB_PX`` on a side, written
atomically to ``HOME/web-cache/thumbs/`` (a folder loradex makes) and read from there afterwards;
a read-only home gets them made per request, uncached.
"""


import io
import threading

from sqlalchemy import select

from ...files.hashing import is_sha256_hex
from ...catalog.db_schema import AdapterRow, PromptRecordRow, PromptRecordVersionRow, VersionRow
from ..app import register_router
from ..civitai_query import adapter_namespace
from .common import current_principal, visible_namespaces
from .dataset_pages import dataset_image_adapters

THUMB_PX = 320
MAX_PIXELS = 64_000_000
MAX_IMAGE_BYTES = 64 << 20
YEAR = 31_536_000
CACHE_FOLDER = ("web-cache", "thumbs")
THUMB_FORMATS = {"webp": ("WEBP", "image/webp"), "png": ("PNG", "image/png")}
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF87a", "image/gif"),
          (b"GIF89a", "image/gif"))


class Counters:
    """How many thumbnails this process decoded (tests check the cache is used)."""

    lock = threading.Lock()
    thumbnails_made = 0


def image_type(head: bytes) -> str | None:
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


# What migration 0005 indexes (the expression must be the same text to use the index).
PREVIEW_EXPRESSIONS = {"sqlite": "json_extract(extra, '$.preview_sha256')",
                       "postgresql": "extra ->> 'preview_sha256'"}


def previews_query(dialect: str):
    """SELECT adapter_id of the live versions whose preview is ``:sha``."""
    from sqlalchemy import bindparam, text

    expression = PREVIEW_EXPRESSIONS.get(dialect)
    if expression is None:
        return select(VersionRow.adapter_id).where(VersionRow.extra["preview_sha256"].as_string() == bindparam("sha"),
                                                   VersionRow.deleted_at.is_(None))
    return text(f"SELECT adapter_id FROM versions WHERE ({expression}) = :sha AND deleted_at IS NULL")


def image_access(catalog, sha256: str, namespaces: frozenset | None) -> str | None:
    """"public" (anonymous visitors may see it), "private" (this visitor may) or None (not an
    image this visitor may see)."""
    def run(s):
        adapter_ids = set(s.scalars(
            select(VersionRow.adapter_id)
            .join(PromptRecordVersionRow, PromptRecordVersionRow.version_id == VersionRow.id)
            .join(PromptRecordRow, PromptRecordRow.id == PromptRecordVersionRow.record_id)
            .where(PromptRecordRow.image_sha256 == sha256, VersionRow.deleted_at.is_(None))))
        adapter_ids |= set(s.scalars(previews_query(s.get_bind().dialect.name), {"sha": sha256}))
        trained, in_dataset = dataset_image_adapters(s, sha256)  # training images: see dataset_pages
        adapter_ids |= trained
        is_record = in_dataset or s.scalar(select(PromptRecordRow.id).where(PromptRecordRow.image_sha256 == sha256)
                                           .limit(1)) is not None
        owners = {adapter_namespace(s, i) for i in adapter_ids if s.get(AdapterRow, i) is not None}
        return owners, is_record

    owners, is_record = catalog.read(run)
    if not owners and not is_record:
        return None
    if namespaces is None:
        return "private"
    return "public" if owners & set(namespaces) else None


def _allowed(request, sha256: str) -> str | None:
    principal = current_principal(request)
    namespaces = visible_namespaces(request, principal)
    access = image_access(request.app.state.catalog, sha256, namespaces)
    if access == "private":  # could an anonymous visitor see it too?
        auth = request.app.state.authorize
        anonymous = None if auth.public_read else frozenset(auth.public_namespaces())
        if anonymous is None or image_access(request.app.state.catalog, sha256, anonymous):
            access = "public"
    return access


def cache_headers(sha256: str, access: str) -> dict:
    return {"ETag": f'"{sha256}"', "Cache-Control": f"{access}, max-age={YEAR}, immutable",
            "X-Content-Type-Options": "nosniff"}


def not_modified(request, sha256: str) -> bool:
    header = request.headers.get("if-none-match") or ""
    tags = {t.strip().removeprefix("W/").strip('"') for t in header.split(",")}
    return sha256 in tags or "*" in tags


def read_image(catalog, sha256: str) -> tuple[bytes, str] | None:
    path = catalog.blobs.path_for(sha256)
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
            kind = image_type(head)
            if kind is None:
                return None
            data = head + fh.read(MAX_IMAGE_BYTES)
    except OSError:
        return None
    return (data, kind) if len(data) <= MAX_IMAGE_BYTES else None


def thumbnail_path(catalog, sha256: str, ext: str):
    folder = catalog.home.joinpath(*CACHE_FOLDER, sha256[:2])
    return folder / f"{sha256}-{THUMB_PX}.{ext}"


def make_thumbnail(data: bytes, ext: str) -> bytes:
    """A thumbnail of at most THUMB_PX per side; ``ValueError`` for an image over MAX_PIXELS or
    one Pillow cannot decode."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise ValueError(f"image of {img.width}×{img.height} pixels is over the limit")
                img.draft("RGB", (THUMB_PX, THUMB_PX))  # JPEG: decode at a reduced scale
                img.seek(0)
                frame = img.convert("RGBA" if img.mode in ("RGBA", "LA", "P") else "RGB")
                frame.thumbnail((THUMB_PX, THUMB_PX))
        except (OSError, Image.DecompressionBombError, Image.DecompressionBombWarning, EOFError) as exc:
            raise ValueError(f"cannot decode the image ({type(exc).__name__})") from None
    out = io.BytesIO()
    fmt = THUMB_FORMATS[ext][0]
    frame.save(out, fmt, **({"quality": 80, "method": 4} if fmt == "WEBP" else {"optimize": True}))
    with Counters.lock:
        Counters.thumbnails_made += 1
    return out.getvalue()


def cached_thumbnail(catalog, sha256: str, ext: str) -> bytes | None:
    """The thumbnail's bytes: from the cache, else made from the blob and cached (None when the
    blob is not a decodable image)."""
    from ...files.atomic_files import atomic_output

    path = thumbnail_path(catalog, sha256, ext)
    try:
        return path.read_bytes()
    except OSError:
        pass
    found = read_image(catalog, sha256)
    if found is None:
        return None
    try:
        data = make_thumbnail(found[0], ext)
    except ValueError:
        return None
    if not catalog.read_only:
        try:
            with atomic_output(path) as fh:
                fh.write(data)
        except OSError:
            pass  # a full disk or a read-only folder: serve it uncached
    return data


@register_router("web_images")
def images_router():
    from fastapi import APIRouter, Request
    from fastapi.responses import Response
    from starlette.concurrency import run_in_threadpool

    from .common import LoginRequired

    router = APIRouter()

    def missing(status: int = 404) -> Response:
        return Response("not found" if status == 404 else "sign in to see this image", status_code=status,
                        media_type="text/plain", headers={"X-Content-Type-Options": "nosniff",
                                                          "Cache-Control": "no-store"})

    async def check(request, sha256: str):
        if not is_sha256_hex(sha256):
            return None, missing()
        try:
            access = await run_in_threadpool(_allowed, request, sha256)
        except LoginRequired:
            return None, missing(401)
        return (access, None) if access else (None, missing())

    @router.get("/ui/blobs/{sha256}", include_in_schema=False)
    async def blob(request: Request, sha256: str):
        access, refused = await check(request, sha256)
        if refused is not None:
            return refused
        if not_modified(request, sha256):
            return Response(status_code=304, headers=cache_headers(sha256, access))
        found = await run_in_threadpool(read_image, request.app.state.catalog, sha256)
        if found is None:
            return missing()
        return Response(found[0], media_type=found[1], headers=cache_headers(sha256, access))

    @router.get("/ui/thumbs/{sha256}.{ext}", include_in_schema=False)
    async def thumb(request: Request, sha256: str, ext: str):
        if ext not in THUMB_FORMATS:
            return missing()
        access, refused = await check(request, sha256)
        if refused is not None:
            return refused
        tag = f"{sha256}-{THUMB_PX}-{ext}"
        if not_modified(request, tag):
            return Response(status_code=304, headers=cache_headers(tag, access))
        data = await run_in_threadpool(cached_thumbnail, request.app.state.catalog, sha256, ext)
        if data is None:
            return missing()
        return Response(data, media_type=THUMB_FORMATS[ext][1], headers=cache_headers(tag, access))

    return router
