"""The Civitai HTTP client: JSON calls with a total deadline and size cap, redirects followed by
hand so the token never leaves the endpoint's origin, 401/403/404/429 mapped to typed errors with
Retry-After backoff, and resumable downloads (Range) that must keep making progress.

Split from ``civitai.py`` (refs, pull, identify), which uses it.
"""

from __future__ import annotations

import html
import os
import re
import time
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import httpx

from ..errors import AuthError, NotFound, RemoteError, TransferError, UsageError
from ..untrusted import check_schema, parse_json
from .http_limits import MAX_JSON_BYTES, Deadline, StallGuard, max_download_bytes, over_cap_error, read_limited, watchdog

DEFAULT_ENDPOINT = "https://civitai.com"
# The hosts Civitai answers on (its own SERVER_DOMAINS: green = the SFW site, blue = civitai.com,
# red = the full site). One service and one account: a redirect between them keeps the token.
CIVITAI_HOSTS = ("civitai.com", "civitai.green", "civitai.red")
TOKEN_ENV = "CIVITAI_TOKEN"
BATCH = 100  # Civitai's limit for POST /api/v1/model-versions/by-hash
MAX_REDIRECTS = 10
MAX_ERROR_BODY = 64 * 1024  # of an error page or a text answer: enough for its message
SIZE_TOLERANCE = 64 * 1024  # over files[].sizeKB a download may run (sizeKB may be rounded)
Progress = Callable[[int, int, str], None]

# --- what a Civitai-style answer must look like (the fields loradex reads; others pass through) ---
_TEXT = {"type": ["string", "null"], "maxLength": 1 << 20}
_ID = {"type": "integer", "minimum": 1, "maximum": 2**53}
_COUNT = {"type": ["integer", "null"], "minimum": 0, "maximum": 2**53}
_URL = {"type": ["string", "null"], "maxLength": 8192}
FILE_SCHEMA = {
    "type": "object", "required": ["id"],
    "properties": {
        "id": _ID, "name": _TEXT, "type": _TEXT, "primary": {"type": ["boolean", "null"]},
        "sizeKB": {"type": ["number", "null"], "minimum": 0, "maximum": 2**40},
        "hashes": {"type": ["object", "null"], "additionalProperties": {"type": ["string", "null"], "maxLength": 128}},
        "downloadUrl": _URL, "metadata": {"type": ["object", "null"]},
    },
}
_IMAGE = {"type": "object", "properties": {"url": _URL, "width": _COUNT, "height": _COUNT,
                                           "meta": {"type": ["object", "null"]}}}
_VERSION_FIELDS = {
    "id": _ID, "modelId": _ID, "name": _TEXT, "baseModel": _TEXT, "baseModelType": _TEXT,
    "description": _TEXT, "publishedAt": _TEXT, "earlyAccessEndsAt": _TEXT, "downloadUrl": _URL,
    "trainedWords": {"type": ["array", "null"], "maxItems": 1000, "items": {"type": ["string", "null"], "maxLength": 4096}},
    "model": {"type": "object", "properties": {"name": _TEXT, "type": _TEXT, "nsfw": {"type": ["boolean", "null"]},
                                               "description": _TEXT}},
    "files": {"type": "array", "maxItems": 1000, "items": FILE_SCHEMA},
    "images": {"type": ["array", "null"], "maxItems": 1000, "items": _IMAGE},
}
VERSION_SCHEMA = {"type": "object", "required": ["id"], "properties": _VERSION_FIELDS}
# what a pull needs on top (a Civitai-style API always sends these)
PULL_VERSION_SCHEMA = {"type": "object", "required": ["id", "modelId", "model", "files"]}
LOOKUP_SCHEMA = {"type": ["array", "null"], "maxItems": BATCH * 10,
                 "items": {"type": "object", "required": ["id", "files"], "properties": _VERSION_FIELDS}}
MODEL_SCHEMA = {"type": "object", "properties": {
    "modelVersions": {"type": ["array", "null"], "items": {"type": "object", "required": ["id"],
                                                           "properties": {"id": _ID}}}}}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _site(url: str, endpoint: str) -> bool:
    """Whether ``url`` is on the endpoint's site, where the token may go: the same scheme and
    port, and the endpoint's host or a subdomain of it (``www.``, ``api.``), or — for an
    endpoint on one of Civitai's hosts — any of them. Another host (a storage CDN, 127.0.0.1 vs
    localhost) is another site."""
    a, b = urlsplit(url), urlsplit(endpoint)
    try:
        ports = (a.port or {"https": 443, "http": 80}.get(a.scheme), b.port or {"https": 443, "http": 80}.get(b.scheme))
    except ValueError:
        return False
    host, home = (a.hostname or "").lower(), (b.hostname or "").lower()
    if a.scheme != b.scheme or ports[0] != ports[1] or not host:
        return False

    def civitai(h: str) -> bool:
        return any(h == c or h.endswith("." + c) for c in CIVITAI_HOSTS)

    return host == home or host.endswith("." + home) or (civitai(home) and civitai(host))


def _without_token(url: str) -> str:
    """``url`` without a ``token=`` query parameter (Civitai accepts the key that way too): it
    must not travel to another site in a redirect."""
    parts = urlsplit(url)
    if "token" not in (parts.query or "").lower():
        return url
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() != "token"]
    return urlunsplit(parts._replace(query=urlencode(kept)))


# --- HTTP ---------------------------------------------------------------------------------------
def _body_message(body: bytes) -> str:
    """The server's own error text, one line, short."""
    try:
        data = parse_json(body, "error answer")
        if isinstance(data, dict):
            text = data.get("error") or data.get("message") or ""
            return " ".join(str(text).split())[:200]
    except ValueError:  # not JSON (or too deep to be a message): fall through to text
        pass
    text = body.decode("utf-8", "replace")
    if "<html" in text[:500].lower():
        return ""
    return " ".join(text.split())[:200]


def _read_head(resp: httpx.Response, limit: int = MAX_ERROR_BODY) -> bytes:
    """At most ``limit`` bytes of a streamed body (an error page, a text answer): enough to
    quote, never the whole of a huge one. Empty when the connection breaks."""
    head = b""
    try:
        for chunk in resp.iter_bytes():
            head += chunk
            if len(head) >= limit:
                break
    except httpx.HTTPError:
        pass
    return head[:limit]


def _retry_after(resp: httpx.Response, attempt: int) -> float:
    value = resp.headers.get("retry-after")
    if value:
        if value.strip().isdigit():
            return float(value.strip())
        try:
            when = parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
        except (TypeError, ValueError):
            pass
    return min(30.0, 2.0 ** attempt)


class CivitaiClient:
    """Talks to one Civitai-style endpoint. ``transport`` lets tests inject httpx.MockTransport."""

    def __init__(self, endpoint: str | None = None, *, token: str | None = None,
                 transport: httpx.BaseTransport | None = None, timeout: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep, retries: int = 5, max_wait: float = 120.0):
        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        parts = urlsplit(self.endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"a Civitai endpoint must be https://HOST[:PORT][/PATH], got {self.endpoint[:120]!r}")
        self._token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
        self._transport, self._timeout = transport, timeout
        self._http = self._new_http()
        self._sleep = sleep
        self._retries = retries
        self._max_wait = max_wait

    def __repr__(self) -> str:  # never show the token
        return f"CivitaiClient({self.endpoint!r}, token={'set' if self._token else 'none'})"

    @property
    def has_token(self) -> bool:
        return bool(self._token)

    def _new_http(self) -> httpx.Client:
        return httpx.Client(transport=self._transport, timeout=self._timeout, follow_redirects=False,
                            headers={"User-Agent": "loradex"})

    def _abort(self) -> None:
        """Called by the deadline watchdog from another thread: closing the client breaks the read
        the request is blocked in (a fresh client is made for the next request)."""
        self._http.close()

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # One request, with 429/5xx backoff. Redirects are followed by the caller (``_follow``).
    def _send(self, method: str, url: str, *, what: str, headers: dict, deadline: Deadline, json=None,
              stream: bool = False) -> httpx.Response:
        for attempt in range(self._retries + 1):
            deadline.check()
            if self._http.is_closed:  # closed by the watchdog of an earlier call
                self._http = self._new_http()
            try:
                request = self._http.build_request(method, url, headers=headers, json=json)
            except (httpx.InvalidURL, ValueError, TypeError):  # a URL the remote handed out
                raise RemoteError(f"{what}: the remote gave an unusable URL {url[:120]!r}") from None
            try:
                resp = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if attempt < min(self._retries, 2) and isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
                    self._sleep(min(10.0, 1.0 * 2 ** attempt))
                    continue
                raise RemoteError(f"{what}: cannot reach {_origin(url)}: {type(exc).__name__}: "
                                  f"{' '.join(str(exc).split())[:160]}") from None
            retryable = resp.status_code == 429 or resp.status_code in (500, 502, 503, 504)
            if not retryable or attempt == self._retries:
                return resp
            wait = _retry_after(resp, attempt) if resp.status_code == 429 else min(30.0, 2.0 ** attempt)
            resp.close()
            if wait > self._max_wait:
                raise RemoteError(f"{what}: rate limited by {_origin(url)} (429); "
                                  f"Retry-After is {wait:.0f}s", hint="try again later")
            self._sleep(wait)
        raise AssertionError("unreachable")

    def _follow(self, method: str, url: str, *, what: str, deadline: Deadline, headers: dict | None = None,
                json=None, stream: bool = False) -> httpx.Response:
        first = url
        left_site = False
        for _ in range(MAX_REDIRECTS + 1):
            hop_headers = dict(headers or {})
            # The token goes to the endpoint's site only, and never again once a redirect left it.
            if self._token and not left_site and _site(url, first):
                hop_headers["Authorization"] = f"Bearer {self._token}"
            resp = self._send(method, url, what=what, headers=hop_headers, deadline=deadline, json=json,
                              stream=stream)
            if resp.status_code in (301, 302, 303, 307, 308) and "location" in resp.headers:
                url = urljoin(url, resp.headers["location"])
                resp.close()
                if left_site or not _site(url, first):
                    left_site = True
                    url = _without_token(url)
                if resp.status_code == 303:
                    method, json = "GET", None
                continue
            return resp
        raise RemoteError(f"{what}: more than {MAX_REDIRECTS} redirects")

    def _check(self, resp: httpx.Response, what: str, *, early_access: str | None = None) -> None:
        code = resp.status_code
        if code < 400:
            return
        said = _body_message(_read_head(resp))  # a streamed error body: its start, for the message
        said = f" ({said})" if said else ""
        if code == 401:
            if self._token:
                raise AuthError(f"{what}: 401 unauthorized — the token in {TOKEN_ENV} was refused{said}")
            raise AuthError(f"{what}: 401 unauthorized — this needs an API token{said}",
                            hint=f"set {TOKEN_ENV}")
        if code == 403:
            if early_access or "early access" in said.lower():
                until = f" until {early_access}" if early_access else ""
                raise AuthError(f"{what}: 403 — this version is in early access{until}; only "
                                f"supporters can download it{said}")
            raise AuthError(f"{what}: 403 forbidden{said}" + ("" if self._token else f"; no token was sent ({TOKEN_ENV})"))
        if code in (404, 410):  # 410: Civitai's answer for a removed model or version
            raise NotFound(f"{what}: not found at {self.endpoint}{said}")
        if code == 429:
            raise RemoteError(f"{what}: still rate limited (429) after {self._retries} retries")
        raise RemoteError(f"{what}: HTTP {code} from {_origin(str(resp.request.url))}{said}")

    # --- API ---------------------------------------------------------------------------------
    def get_json(self, path: str, *, what: str, method: str = "GET", json=None, schema: dict | None = None):
        """The JSON answer to one API call, within the total deadline (LORADEX_HTTP_DEADLINE_S)
        and at most MAX_JSON_BYTES: streamed, so a huge or trickled answer is refused early; then
        parsed with caps on depth and size (``untrusted.parse_json``) and checked against
        ``schema``."""
        deadline = Deadline(what)
        with watchdog(deadline, self._abort):
            resp = self._follow(method, self.endpoint + path, what=what, json=json, deadline=deadline,
                                headers={"Accept": "application/json"}, stream=True)
            try:
                self._check(resp, what)
                body = read_limited(resp.iter_bytes(), what=what, deadline=deadline,
                                    declared=resp.headers.get("content-length"))
            except httpx.TransportError as exc:
                raise RemoteError(f"{what}: the answer from {_origin(str(resp.request.url))} broke off "
                                  f"({type(exc).__name__})") from None
            finally:
                resp.close()
        source = f"{what}: the answer from {self.endpoint}"
        data = parse_json(body, source, max_bytes=MAX_JSON_BYTES)
        return check_schema(data, schema, source) if schema is not None else data

    def version(self, version_id: int) -> dict:
        return self.get_json(f"/api/v1/model-versions/{version_id}", what=f"civitai version {version_id}",
                             schema=VERSION_SCHEMA)

    def version_by_hash(self, value: str) -> dict:
        return self.get_json(f"/api/v1/model-versions/by-hash/{value}", what=f"civitai hash {value}",
                             schema=VERSION_SCHEMA)

    def model(self, model_id: int) -> dict:
        return self.get_json(f"/api/v1/models/{model_id}", what=f"civitai model {model_id}", schema=MODEL_SCHEMA)

    def versions_by_hashes(self, hashes: list[str]) -> list[dict]:
        found: list[dict] = []
        for i in range(0, len(hashes), BATCH):
            batch = hashes[i:i + BATCH]
            data = self.get_json("/api/v1/model-versions/by-hash", method="POST", json=batch,
                                 what=f"civitai hash look-up ({len(batch)} hashes)", schema=LOOKUP_SCHEMA)
            found.extend(data or [])
        return found

    def download(self, url: str, dest: Path, *, what: str, expected_size: int | None = None,
                 progress: Progress | None = None, early_access: str | None = None,
                 label: str | None = None) -> tuple[int, int]:
        """Download ``url`` into ``dest``, resuming from its current length with Range.

        Returns (bytes received now, offset resumed from). An interrupted transfer leaves ``dest``
        in place for the next attempt; an HTML/JSON answer removes it.
        """
        offset = dest.stat().st_size if dest.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        # The total deadline covers getting to the first byte of the file (redirects, headers, an
        # error page); the body itself may take long and is bounded by the per-read timeout only.
        deadline = Deadline(what)
        with watchdog(deadline, self._abort):
            resp = self._follow("GET", url, what=what, headers=headers, stream=True, deadline=deadline)
            try:
                if resp.status_code == 416 and offset:
                    resp.close()
                    return 0, offset  # the partial file is already whole; verification decides
                self._check(resp, what, early_access=early_access)
                ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
                if ctype in ("text/html", "application/json", "text/plain", "application/xml"):
                    raise TransferError(f"{what}: the server sent {ctype} instead of the file"
                                        f"{_describe_text(_read_head(resp))}",
                                        hint="a login or error page; check the token and the version id")
            except BaseException:
                resp.close()
                raise
        try:
            if resp.status_code == 206:
                start, total = _content_range(resp.headers.get("content-range", ""))
                if start != offset:
                    raise TransferError(f"{what}: asked to resume at byte {offset}, server sent {start}")
                mode = "ab"
            else:
                offset, mode = 0, "wb"
                length = resp.headers.get("content-length", "").strip()
                total = int(length) if length.isascii() and length.isdigit() else None
            # Content-Length counts the bytes on the wire: with a compressed Content-Encoding the
            # decoded size (what is written) is unknown, and only the cap bounds it.
            encoded = resp.headers.get("content-encoding", "").strip().lower() not in ("", "identity")
            announced = bool(total) and not encoded
            total = total or expected_size or 0
            cap = expected_size + SIZE_TOLERANCE if expected_size else None
            if cap is not None and total > cap:
                raise _oversize(what, dest, f"announced {total} bytes", expected_size)
            unannounced_cap = max_download_bytes() if cap is None and not announced else None
            done = offset
            dest.parent.mkdir(parents=True, exist_ok=True)
            stall = StallGuard(what)
            with open(dest, mode) as fh:
                first = True
                try:
                    for chunk in resp.iter_bytes():  # as received: nothing buffered is lost on a drop
                        if first and offset == 0 and len(chunk) >= 16 and _looks_like_text(chunk):
                            fh.close()
                            dest.unlink(missing_ok=True)
                            raise TransferError(f"{what}: the server sent a text page instead of the "
                                                f"file{_describe_text(chunk)}")
                        first = False
                        if cap is not None and done + len(chunk) > cap:
                            fh.close()
                            raise _oversize(what, dest, f"sent more than {cap} bytes", expected_size)
                        if unannounced_cap is not None and done + len(chunk) > unannounced_cap:
                            fh.close()
                            dest.unlink(missing_ok=True)
                            raise over_cap_error(what, unannounced_cap)
                        fh.write(chunk)
                        done += len(chunk)
                        stall.update(len(chunk))
                        if progress:
                            progress(done, total, label or dest.name)
                except httpx.TransportError as exc:
                    fh.flush()
                    error = TransferError(f"{what}: download interrupted at {done} of {total or '?'} "
                                          f"bytes ({type(exc).__name__})",
                                          hint="run the same pull again to resume")
                    error.resumable = True  # keep the partial file for the next attempt
                    raise error from None
            return done - offset, offset
        finally:
            resp.close()

def _oversize(what: str, dest: Path, said: str, expected: int) -> TransferError:
    """The body is larger than the version lists: what came is dropped (never resumed from)."""
    dest.unlink(missing_ok=True)
    return TransferError(f"{what}: the server {said}, but the file is listed at {expected} bytes (sizeKB); "
                         f"download stopped", hint="the endpoint serves another file; nothing was registered")


def _content_range(value: str) -> tuple[int, int | None]:
    m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", value.strip())
    if not m:
        raise TransferError(f"bad Content-Range {value!r} in a resumed download")
    return int(m.group(1)), (int(m.group(3)) if m.group(3) != "*" else None)


def _looks_like_text(head: bytes) -> bool:
    """An HTML or JSON body where a model file was expected. A safetensors file starts with an
    8-byte little-endian length (zero bytes for any real header size); pickles/zips start binary."""
    sample = bytes(head[:64]).lstrip()
    if not sample or sample[:1] not in (b"<", b"{", b"["):
        return False
    return all(32 <= b < 127 or b in (9, 10, 13) for b in sample)


def _describe_text(body: bytes) -> str:
    text = body[:4000].decode("utf-8", "replace")
    try:
        data = parse_json(text, "text answer")
        if isinstance(data, dict) and (data.get("error") or data.get("message")):
            return f": {' '.join(str(data.get('error') or data.get('message')).split())[:160]}"
    except ValueError:
        pass
    m = re.search(r"<title>(.*?)</title>", text, re.I | re.S)
    if m:
        return f" (page title: {' '.join(html.unescape(m.group(1)).split())[:120]})"
    return ""
