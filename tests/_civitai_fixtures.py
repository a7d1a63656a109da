"""Civitai API v1 responses, shaped field for field like real ones (captured shapes, with the
file facts — hashes, size — filled in from a synthetic adapter so downloads can be verified);
a fake civitai.com + storage host for httpx.MockTransport; and `loradex serve`'s real app on
127.0.0.1 behind a test-only layer that injects Civitai's failures (CivitaiFaults).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import re
import zlib
from pathlib import Path

import httpx

from loradex.registry.files.hashing import hash_file

MODEL_ID = 4201
VERSION_ID = 128713
OLD_VERSION_ID = 110001
FILE_ID = 93841
STORAGE = "https://storage.civitai-cdn.test"

# GET https://civitai.com/api/v1/model-versions/128713 (a real answer's shape; values edited)
VERSION_TEMPLATE = {
    "id": VERSION_ID,
    "modelId": MODEL_ID,
    "name": "v1.5",
    "createdAt": "2023-07-24T15:38:38.946Z",
    "updatedAt": "2023-07-24T16:07:58.549Z",
    "status": "Published",
    "publishedAt": "2023-07-24T16:07:58.547Z",
    "trainedWords": ["wtrclr", "watercolor style"],
    "trainingStatus": None,
    "trainingDetails": None,
    "baseModel": "SD 1.5",
    "baseModelType": "Standard",
    "earlyAccessEndsAt": None,
    "earlyAccessConfig": None,
    "description": "<p>Second release: <strong>softer edges</strong>.</p>",
    "uploadType": "Created",
    "usageControl": "Download",
    "air": f"urn:air:sd1:lora:civitai:{MODEL_ID}@{VERSION_ID}",
    "stats": {"downloadCount": 30123, "ratingCount": 210, "rating": 4.96, "thumbsUpCount": 2712},
    "model": {"name": "Watercolor Style (LoRA)", "type": "LORA", "nsfw": False, "poi": False},
    "files": [
        {
            "id": FILE_ID,
            "sizeKB": 0.0,
            "name": "watercolorStyle_v15.safetensors",
            "type": "Model",
            "pickleScanResult": "Success",
            "pickleScanMessage": "No Pickle imports",
            "virusScanResult": "Success",
            "virusScanMessage": None,
            "scannedAt": "2023-07-24T15:45:29.331Z",
            "metadata": {"format": "SafeTensor", "size": None, "fp": None},
            "hashes": {},
            "primary": True,
            "downloadUrl": f"https://civitai.com/api/download/models/{VERSION_ID}",
        },
        {
            "id": FILE_ID + 1,
            "sizeKB": 1.0,
            "name": "watercolorStyle_v15_dataset.zip",
            "type": "Training Data",
            "pickleScanResult": "Success",
            "pickleScanMessage": "No Pickle imports",
            "virusScanResult": "Success",
            "virusScanMessage": None,
            "scannedAt": "2023-07-24T15:45:29.331Z",
            "metadata": {"format": "Other", "size": None, "fp": None},
            "hashes": {},
            "primary": False,
            "downloadUrl": f"https://civitai.com/api/download/models/{VERSION_ID}?type=Training%20Data",
        },
    ],
    "images": [
        {
            "url": "https://image.civitai.com/xG1nkqKTMzGDvpLrqFT7WA/0a1b2c3d-1111-2222-3333-444455556666/width=512/1835231.jpeg",
            "nsfwLevel": 1,
            "width": 512,
            "height": 768,
            "hash": "U9Ia0m~q00IU?bRjt7of00IU%MRj4nWBt7of",
            "type": "image",
            "metadata": {"hash": "U9Ia0m~q00IU?bRjt7of00IU%MRj4nWBt7of", "size": 91234, "width": 512, "height": 768},
            "meta": {"prompt": "wtrclr, a lighthouse at dusk, <lora:watercolorStyle_v15:0.8>",
                     "negativePrompt": "lowres, blurry", "seed": 1234567, "steps": 28,
                     "sampler": "DPM++ 2M Karras", "cfgScale": 7, "Size": "512x768",
                     "Model": "v1-5-pruned-emaonly"},
            "availability": "Public",
            "hasMeta": True,
            "hasPositivePrompt": True,
            "onSite": False,
            "remixOfId": None,
        }
    ],
    "downloadUrl": f"https://civitai.com/api/download/models/{VERSION_ID}",
}

# Keys a real GET /api/v1/model-versions/{id} answer has (what a third-party client reads).
VERSION_KEYS = {"id", "modelId", "name", "createdAt", "updatedAt", "status", "publishedAt", "trainedWords",
                "trainingStatus", "trainingDetails", "baseModel", "baseModelType", "earlyAccessEndsAt",
                "description", "uploadType", "stats", "model", "files", "images", "downloadUrl"}
FILE_KEYS = {"id", "sizeKB", "name", "type", "pickleScanResult", "pickleScanMessage", "virusScanResult",
             "virusScanMessage", "scannedAt", "metadata", "hashes", "primary", "downloadUrl"}
MODEL_KEYS = {"id", "name", "description", "type", "poi", "nsfw", "nsfwLevel", "availability",
              "allowNoCredit", "allowCommercialUse", "allowDerivatives", "allowDifferentLicense",
              "stats", "creator", "tags", "modelVersions"}


def civitai_hashes(path: Path) -> dict:
    """The ``hashes`` object Civitai lists for a file (upper-case hex, as Civitai writes it)."""
    h = hash_file(path)
    data = Path(path).read_bytes()
    out = {"AutoV1": h.autov1.upper(), "AutoV2": h.autov2.upper(), "SHA256": h.sha256.upper(),
           "CRC32": f"{zlib.crc32(data):08X}",
           # BLAKE3 is not in the stdlib; a stand-in of the right length keeps the shape.
           "BLAKE3": hashlib.blake2b(data, digest_size=32).hexdigest().upper()}
    if h.autov3:
        out["AutoV3"] = h.autov3.upper()
    return out


def version_for(path: Path, **changes) -> dict:
    """The version JSON describing ``path`` as its primary file."""
    data = copy.deepcopy(VERSION_TEMPLATE)
    data["files"][0]["sizeKB"] = Path(path).stat().st_size / 1024
    data["files"][0]["hashes"] = civitai_hashes(path)
    data["files"][1]["hashes"] = {"AutoV2": "0000000000", "SHA256": "00" * 32}
    data.update(changes)
    return data


def model_for(version: dict) -> dict:
    """GET /api/v1/models/{id}: versions newest first, without modelId/model inside."""
    newest = {k: v for k, v in copy.deepcopy(version).items() if k not in ("modelId", "model")}
    newest["index"] = 0
    older = copy.deepcopy(newest) | {"id": OLD_VERSION_ID, "name": "v1.0", "index": 1}
    return {
        "id": MODEL_ID, "name": version["model"]["name"], "description": "<p>Soft watercolor look.</p>",
        "allowNoCredit": True, "allowCommercialUse": ["Image", "RentCivit"], "allowDerivatives": True,
        "allowDifferentLicense": True, "type": "LORA", "minor": False, "sfwOnly": False, "poi": False,
        "nsfw": False, "nsfwLevel": 1, "availability": "Public", "cosmetic": None,
        "supportsGeneration": True,
        "stats": {"downloadCount": 40000, "favoriteCount": 0, "thumbsUpCount": 3000, "thumbsDownCount": 2,
                  "commentCount": 80, "ratingCount": 0, "rating": 0, "tippedAmountCount": 40},
        "creator": {"username": "painterly", "image": None},
        "tags": ["style", "watercolor"],
        "modelVersions": [newest, older],
    }


class FakeCivitai:
    """civitai.com + a storage host, as an httpx.MockTransport handler.

    Knobs: ``body`` (bytes served for the file), ``need_token``, ``rate_limit`` (how many 429s
    before answering), ``json_body`` (a JSON error with a binary type). Every request is logged
    with its headers. (The other failures are injected into `loradex serve`: CivitaiFaults.)
    """

    def __init__(self, path: Path, version: dict | None = None):
        self.path = Path(path)
        self.body = self.path.read_bytes()
        self.version = version or version_for(path)
        self.need_token: str | None = None
        self.rate_limit = 0
        self.json_body = False
        self.log: list[httpx.Request] = []

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def _authorized(self, request) -> bool:
        return self.need_token is None or request.headers.get("authorization") == f"Bearer {self.need_token}"

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.log.append(request)
        url = request.url
        if self.rate_limit:
            self.rate_limit -= 1
            return httpx.Response(429, headers={"Retry-After": "1"}, json={"error": "Too many requests"})
        if url.host == "civitai.com":
            return self._api(request)
        if str(url).startswith(STORAGE):
            return self._storage(request)
        return httpx.Response(404, json={"error": "unknown host"})

    def _api(self, request) -> httpx.Response:
        path = request.url.path
        v = self.version
        if path == f"/api/v1/model-versions/{v['id']}":
            return httpx.Response(200, json=v)
        if path.startswith("/api/v1/model-versions/by-hash/") and request.method == "GET":
            wanted = path.rsplit("/", 1)[1].upper()
            hashes = {h.upper() for h in v["files"][0]["hashes"].values()}
            return httpx.Response(200, json=v) if wanted in hashes else httpx.Response(404, json={"error": "Model not found"})
        if path == "/api/v1/model-versions/by-hash" and request.method == "POST":
            asked = {h.upper() for h in json.loads(request.content)}
            return httpx.Response(200, json=[v] if v["files"][0]["hashes"]["SHA256"] in asked else [])
        if path == f"/api/v1/models/{v['modelId']}":
            return httpx.Response(200, json=model_for(v))
        if path == f"/api/download/models/{v['id']}":
            if not self._authorized(request):
                return httpx.Response(401, json={"error": "Unauthorized"})
            return httpx.Response(307, headers={"location": f"{STORAGE}/file/{self.path.name}?sig=abc"})
        return httpx.Response(404, json={"error": f"No route {path}"})

    def _storage(self, request) -> httpx.Response:
        body = self.body
        start = 0
        rng = request.headers.get("range")
        if rng:
            start = int(rng.split("=", 1)[1].split("-", 1)[0])
        if self.json_body:
            # Some storage errors come back as JSON with a binary content type.
            return httpx.Response(200, headers={"content-type": "application/octet-stream"},
                                  content=b'{"error":"signature expired"}')
        headers = {"content-type": "application/octet-stream",
                   "content-disposition": f'attachment; filename="{self.path.name}"'}
        chunk = body[start:]
        if rng:
            headers["content-range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        status = 206 if rng else 200
        return httpx.Response(status, headers=headers, content=chunk)


# --- `loradex serve` on 127.0.0.1 with Civitai's failures injected ------------------------------
from _served_app import ServedApp  # noqa: E402  (re-exported for the Civitai tests)

EARLY_ACCESS_ENDS = "2099-01-01T00:00:00.000Z"
SIGN_IN_PAGE = b"<!DOCTYPE html><html><head><title>Sign in | Civitai</title></head><body></body></html>"
FAULTS = {
    "early-access": "version JSON has earlyAccessEndsAt; the download is a 403 (Civitai's answer)",
    "rate-limit-once": "the next version JSON request is a 429 with Retry-After: 1",
    "wrong-hash": "version JSON lists another SHA256 for the file",
    "html": "the download is a 200 text/html sign-in page",
    "truncated": "the file is served complete-looking but only its first half (Content-Length says so)",
    "cut-once": "the next file transfer drops the connection after CUT_AT bytes",
    "oversize": "the file streams on past its size (chunked, no length) with zero bytes",
}
CUT_AT = 40000
OVERSIZE_LIMIT = 64 << 20  # the oversize stream ends here, so a client without a cap fails, not hangs
_VERSION_PATH = re.compile(r"^/api/(v1/model-versions|download/models|download/files)/(\d+)(?:/|$)")


class _ConnectionDropped(Exception):
    """Raised from ``send`` mid-body: uvicorn closes the connection without finishing it."""


class CivitaiFaults:
    """Test-only ASGI layer in front of the real `loradex serve` app (never shipped).

    ``faults[version_id]`` is a set of FAULTS names. With ``storage`` set (an origin), the
    download redirect is moved to that origin, as Civitai's goes to its storage host, so the
    token must not follow it. ``log`` holds (origin port, method, path, query, headers) per request.
    """

    def __init__(self, app):
        self.app = app
        self.faults: dict[int, set[str]] = {}
        self.storage: str | None = None
        self.log: list[tuple[int, str, str, str, dict]] = []

    def inject(self, version_id: int, *names: str) -> None:
        unknown = set(names) - set(FAULTS)
        assert not unknown, unknown
        self.faults.setdefault(version_id, set()).update(names)

    def requests(self, prefix: str = "") -> list[tuple[int, str, str, str, dict]]:
        return [r for r in self.log if r[2].startswith(prefix)]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.log.append((scope["server"][1], scope["method"], scope["path"],
                         scope.get("query_string", b"").decode(), headers))
        m = _VERSION_PATH.match(scope["path"])
        route, version_id = (m.group(1), int(m.group(2))) if m else (None, None)
        faults = self.faults.get(version_id, set())
        if route == "v1/model-versions":
            if "rate-limit-once" in faults:
                faults.discard("rate-limit-once")
                return await _answer(send, 429, b'{"error":"Too Many Requests"}', "application/json",
                                     [(b"retry-after", b"1")])
            if faults & {"early-access", "wrong-hash"}:
                return await self.app(scope, receive, _EditedJson(send, lambda data: _edit_version(data, faults)))
        if route == "download/models":
            if "early-access" in faults:
                return await _answer(send, 403, b'{"error":"This model version is in early access. '
                                     b'Only supporters can download it."}', "application/json")
            if "html" in faults:
                return await _answer(send, 200, SIGN_IN_PAGE, "text/html; charset=utf-8")
            if self.storage:
                return await self.app(scope, receive, _MovedRedirect(send, self.storage))
        if route == "download/files" and not headers.get("range"):
            for name in ("truncated", "cut-once", "oversize"):
                if name in faults:
                    if name == "cut-once":
                        faults.discard(name)
                    return await self.app(scope, receive, _BodyFault(send, name))
        return await self.app(scope, receive, send)


async def _answer(send, status: int, body: bytes, ctype: str, extra: list | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode()),
                            *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


def _edit_version(data: dict, faults: set[str]) -> dict:
    if "early-access" in faults:
        data["earlyAccessEndsAt"] = EARLY_ACCESS_ENDS
    if "wrong-hash" in faults:
        data["files"][0]["hashes"]["SHA256"] = hashlib.sha256(b"other bytes").hexdigest().upper()
    return data


class _EditedJson:
    """Buffers a JSON answer and sends it edited by ``edit``."""

    def __init__(self, send, edit):
        self.send, self.edit, self.start, self.body = send, edit, None, b""

    async def __call__(self, message):
        if message["type"] == "http.response.start":
            self.start = message
            return
        self.body += message.get("body", b"")
        if message.get("more_body"):
            return
        body = json.dumps(self.edit(json.loads(self.body))).encode() if self.start["status"] == 200 else self.body
        headers = [(k, v) for k, v in self.start["headers"] if k.lower() != b"content-length"]
        await self.send({**self.start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await self.send({"type": "http.response.body", "body": body})


class _MovedRedirect:
    """Points a redirect at another origin (the same server's second port)."""

    def __init__(self, send, origin: str):
        self.send, self.origin = send, origin.encode()

    async def __call__(self, message):
        if message["type"] == "http.response.start":
            message = {**message, "headers": [
                (k, re.sub(rb"^https?://[^/]+", self.origin, v) if k.lower() == b"location" else v)
                for k, v in message["headers"]]}
        await self.send(message)


class _BodyFault:
    """Spoils a file body on its way out: ``truncated`` (half, with a matching Content-Length),
    ``cut-once`` (the full Content-Length, then the connection drops at CUT_AT), ``oversize`` (no
    length, the real bytes then zeros up to OVERSIZE_LIMIT)."""

    def __init__(self, send, mode: str):
        self.send, self.mode, self.sent, self.limit, self.done = send, mode, 0, None, False

    async def __call__(self, message):
        if self.done:
            return
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message["headers"] if k.lower() != b"content-length"]
            size = int(dict(message["headers"]).get(b"content-length", b"0"))
            self.limit = {"truncated": size // 2, "cut-once": CUT_AT}.get(self.mode)
            if self.mode != "oversize":
                headers.append((b"content-length", str(self.limit if self.mode == "truncated" else size).encode()))
            return await self.send({**message, "headers": headers})
        body = message.get("body", b"")
        if self.limit is not None and self.sent + len(body) >= self.limit:
            body = body[: self.limit - self.sent]
            await self.send({"type": "http.response.body", "body": body, "more_body": self.mode == "cut-once"})
            self.done = True
            if self.mode == "cut-once":
                raise _ConnectionDropped()
            return
        self.sent += len(body)
        if self.mode == "oversize" and not message.get("more_body"):
            await self.send({"type": "http.response.body", "body": body, "more_body": True})
            zeros = bytes(1 << 20)
            while self.sent < OVERSIZE_LIMIT:
                self.sent += len(zeros)
                await self.send({"type": "http.response.body", "body": zeros, "more_body": True})
            await self.send({"type": "http.response.body", "body": b""})
            self.done = True
            return
        await self.send({**message, "body": body})


@contextlib.contextmanager
def faulty_mirror(catalog, token: str):
    """`loradex serve`'s app for ``catalog`` behind CivitaiFaults, on an API port and a storage
    port: ``with faulty_mirror(catalog, token) as (served, faults)``."""
    from loradex.registry.server.app import build_server_app

    faults = CivitaiFaults(build_server_app(catalog, token))
    with ServedApp(faults, ports=2) as served:
        faults.storage = served.urls[1]
        yield served, faults
