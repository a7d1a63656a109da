"""Pre-signed download URLs (``loradex serve --presigned-downloads``): instead of streaming an
object through the replica, Hub ``resolve`` (LFS files) and Civitai ``download`` answer with a
redirect to a short-lived URL of the object store that needs no credentials, so the bytes go from
the bucket (or the CDN in front of it) to the client.

Presigners are registered per blob store scheme (``PRESIGNERS``); only ``s3`` has one. The URL
names the object by its content-addressed key and carries ``response-content-disposition`` (the
file name the client should save under) and ``response-content-type``; it is valid for
``PRESIGNED_SECONDS``. The object store's endpoint (``LORADEX_S3_ENDPOINT_URL``) must be one the
clients can reach.
"""

from __future__ import annotations

import weakref
from typing import Callable
from urllib.parse import quote

PRESIGNED_SECONDS = 300  # long enough to start a download; a resumed download asks the replica again
PRESIGNERS: dict[str, Callable] = {}  # blob store scheme → presign(backend, sha256, filename, seconds) → URL


def register_presigner(scheme: str):
    def deco(fn):
        PRESIGNERS[scheme] = fn
        return fn

    return deco


def presigner_for(backend) -> Callable[[str, str | None], str] | None:
    """``url(sha256, filename)`` for ``backend``, or None where the store cannot sign URLs."""
    from ...files.blob_backends import scheme_of

    location = getattr(backend, "location", None)
    fn = PRESIGNERS.get(scheme_of(location)) if isinstance(location, str) and location else None
    if fn is None:
        return None
    return lambda sha256, filename=None: fn(backend, sha256, filename, PRESIGNED_SECONDS)


def require_presigner(backend, what: str = "--presigned-downloads"):
    from ...errors import UsageError

    signer = presigner_for(backend)
    if signer is None:
        raise UsageError(f"{what} needs blobs on object storage (LORADEX_BLOBS=s3://BUCKET[/PREFIX]); "
                         "this home's blobs are local files, which are streamed by the server")
    return signer


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback name and the exact UTF-8 one (RFC 6266)."""
    base = filename.rsplit("/", 1)[-1]
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in base) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(base, safe='')}"


_SIGNING_CLIENTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # store → signing client


def _sigv4_client(backend):
    """A client like the store's (endpoint, region, addressing, credentials) that signs with
    SigV4 (``X-Amz-*`` query parameters): the store's own may use the older query signature.
    Signing is computed locally; the client never sends a request."""
    client = _SIGNING_CLIENTS.get(backend)
    if client is None:
        import boto3
        from botocore.config import Config

        meta = backend.client.meta
        client = boto3.session.Session().client(
            "s3", endpoint_url=meta.endpoint_url, region_name=meta.region_name,
            config=meta.config.merge(Config(signature_version="s3v4")))
        _SIGNING_CLIENTS[backend] = client
    return client


@register_presigner("s3")
def _s3_presigned_get(backend, sha256: str, filename: str | None, seconds: int) -> str:
    params = {"Bucket": backend.bucket, "Key": backend.key_for(sha256),
              "ResponseContentType": "application/octet-stream"}
    if filename:
        params["ResponseContentDisposition"] = content_disposition(filename)
    return _sigv4_client(backend).generate_presigned_url("get_object", Params=params, ExpiresIn=seconds)
