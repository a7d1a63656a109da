"""Civitai API v1 responses, shaped field for field like real ones (captured shapes, with the
file facts — hashes, size — filled in from a synthetic adapter so downloads can be verified),
and a fake civitai.com + storage host for httpx.MockTransport.
"""

from __future__ import annotations

import copy
import hashlib
import json
import zlib
from pathlib import Path

import httpx

from loradex.registry.hashing import hash_file

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

    Knobs: ``body`` (bytes served for the file), ``need_token``, ``early_access``,
    ``rate_limit`` (how many 429s before answering), ``cut_after`` (drop the connection after
    that many bytes, once), ``html``. Every request is logged with its headers.
    """

    def __init__(self, path: Path, version: dict | None = None):
        self.path = Path(path)
        self.body = self.path.read_bytes()
        self.version = version or version_for(path)
        self.need_token: str | None = None
        self.early_access = False
        self.rate_limit = 0
        self.cut_after: int | None = None
        self.html = False
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
            if self.early_access:
                return httpx.Response(403, json={"error": "This model version is in early access"})
            if self.html:
                return httpx.Response(200, headers={"content-type": "text/html"},
                                      content=b"<!DOCTYPE html><html><head><title>Sign in | Civitai</title></head></html>")
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
        if self.cut_after is not None:
            cut, self.cut_after = self.cut_after, None
            return httpx.Response(status, headers={**headers, "content-length": str(len(chunk))},
                                  stream=_BrokenStream(chunk[:cut]))
        return httpx.Response(status, headers=headers, content=chunk)


class _BrokenStream(httpx.SyncByteStream):
    """Yields some bytes, then fails like a dropped connection."""

    def __init__(self, data: bytes):
        self.data = data

    def __iter__(self):
        yield self.data
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")
