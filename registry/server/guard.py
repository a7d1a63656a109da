"""What ``loradex serve`` does around every request: a rate limit per token and the audit log of
writes.

Rate limit: one token bucket per caller, ``rate`` requests per second refilled up to ``burst``;
a request that finds its bucket empty is answered 429 with ``Retry-After`` before any route
runs. The caller is a token only when the token is one the server knows (looked up by its
digest, as the auth check does); anonymous requests and requests with an unknown or revoked
token all draw from the bucket of their client address, so rotating made-up tokens does not buy
fresh buckets. Buckets live in memory (one server process); full ones are forgotten when there
are many.

Audit log: every request that asked for write access (``ServeAuthorizer.check(…, "write")`` marks
it) is recorded after its answer, allowed or not: when, which token (name and id, never the
secret), method, path without the query string (signed URLs carry signatures there), status and
client address. Rows go to the catalog's ``serve_audit`` table; ``loradex serve audit`` reads them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable
from urllib.parse import parse_qs

from sqlalchemy import select

from ..errors import UsageError
from .tokens import WRITE_STATE_KEY

RATE_RE = re.compile(r"\A\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute)\s*\Z")
MAX_BUCKETS = 10_000


def parse_rate(text: str | None) -> float | None:
    """``"20/s"`` or ``"600/min"`` → requests per second; ``"off"`` or ``"0"`` → None (no limit)."""
    if text is None or text.strip().lower() in ("off", "0", "none", ""):
        return None
    m = RATE_RE.match(text.lower())
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"invalid rate limit {text!r}: write N/s or N/min (e.g. 20/s), or off")
    n = float(m.group(1))
    return n if m.group(2).startswith("s") else n / 60.0


BURST_SECONDS = 20  # default bucket size: this many seconds of the rate, at once


class RateLimiter:
    """Token buckets keyed by caller. ``acquire(key)`` takes one request from the key's bucket and
    returns 0.0, or the seconds until one is available (nothing taken).

    ``burst`` (default ``BURST_SECONDS`` × rate, 2000 requests at ``serve``'s 100/s): a client's
    bulk download comes in bursts (``snapshot_download`` of a 300-file repo sends two requests
    per file, eight at a time, and huggingface_hub 0.36 does not retry a 429), while a sustained
    flood is still held to ``rate``."""

    def __init__(self, rate: float, burst: float | None = None, *, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate * BURST_SECONDS)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key → (tokens, at)
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            if len(self._buckets) > MAX_BUCKETS:
                self._forget_full(now)
            return wait

    def _forget_full(self, now: float) -> None:
        for key, (tokens, at) in list(self._buckets.items()):
            if tokens + (now - at) * self.rate >= self.burst:
                del self._buckets[key]


def presented_token(scope) -> str | None:
    """The token a request presents (Bearer header, else ``?token=``), or None."""
    for name, value in scope.get("headers") or []:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip().decode("latin-1") or None
    query = parse_qs((scope.get("query_string") or b"").decode("latin-1")).get("token")
    return query[0] if query else None


def client_key(scope) -> str:
    client = scope.get("client")
    return f"client:{client[0] if client else 'unknown'}"


def caller_key(scope, is_known=None) -> str:
    """Which bucket a request draws from: its token's digest when ``is_known(token)`` says the
    server knows the token (no ``is_known``: any token), else its client address."""
    secret = presented_token(scope)
    if secret is not None and (is_known is None or is_known(secret)):
        return "token:" + hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()
    return client_key(scope)


class KnownTokens:
    """``is_known(secret)`` for the rate limiter: the authorizer's lookup, with the digests found
    valid remembered (bounded), so a real token costs one catalog read, not one per request. A
    revoked token stays "known" here only for the choice of bucket: the route's auth check still
    refuses it."""

    def __init__(self, authorizer, limit: int = MAX_BUCKETS):
        self.authorizer = authorizer
        self.limit = limit
        self._valid: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, secret: str) -> bool:
        digest = hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()
        with self._lock:
            if digest in self._valid:
                return True
        try:
            known = self.authorizer.lookup(secret) is not None
        except Exception:  # noqa: BLE001 — a broken catalog: the route answers; bucket by address
            return False
        if known:
            with self._lock:
                if len(self._valid) >= self.limit:
                    self._valid.clear()
                self._valid.add(digest)
        return known


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    token_name: str
    token_id: int | None
    method: str
    path: str
    status: int
    client: str | None

    def to_dict(self) -> dict:
        return {"id": self.id, "at": self.at.isoformat(), "token": self.token_name, "token_id": self.token_id,
                "method": self.method, "path": self.path, "status": self.status, "client": self.client}


def record_write(catalog, principal, method: str, path: str, status: int, client: str | None) -> None:
    from ..catalog.db_schema import ServeAuditRow

    catalog.transact(lambda s: s.add(ServeAuditRow(
        at=datetime.now(timezone.utc), token_id=principal.token_id, token_name=principal.name[:100],
        method=method[:10], path=path[:2000], status=status, client=(client or None) and client[:100])))


def list_audit(catalog, *, limit: int = 100) -> list[AuditEntry]:
    """The newest ``limit`` entries, oldest first."""
    from ..catalog.db_schema import ServeAuditRow

    def run(s):
        rows = s.scalars(select(ServeAuditRow).order_by(ServeAuditRow.id.desc()).limit(limit))
        return [AuditEntry(r.id, r.at, r.token_name, r.token_id, r.method, r.path, r.status, r.client)
                for r in rows][::-1]

    return catalog.read(run)


class ServerGuard:
    """ASGI middleware: rate limit first, then the app, then the audit record of a write."""

    def __init__(self, app, *, catalog, limiter: RateLimiter | None = None, audit: bool = True, authorizer=None):
        self.app = app
        self.catalog = catalog
        self.limiter = limiter
        self.audit = audit
        self.known = KnownTokens(authorizer) if authorizer is not None else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.limiter is not None:
            key = caller_key(scope)
            if key.startswith("token:") and self.known is not None:
                from starlette.concurrency import run_in_threadpool

                key = await run_in_threadpool(caller_key, scope, self.known)
            wait = self.limiter.acquire(key)
            if wait > 0:
                await _too_many_requests(send, wait, self.limiter.rate)
                return
        status = {"code": 500}

        async def watched_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            who = (scope.get("state") or {}).get(WRITE_STATE_KEY)
            if self.audit and who is not None:
                await self._record(who, scope, status["code"])

    async def _record(self, who, scope, status: int) -> None:
        from starlette.concurrency import run_in_threadpool

        client = scope.get("client")
        try:
            await run_in_threadpool(record_write, self.catalog, who, scope.get("method", ""),
                                    scope.get("path", ""), status, client[0] if client else None)
        except Exception as exc:  # noqa: BLE001 — the answer is sent; say so in the server log
            sys.stderr.write(f"loradex serve: could not write the audit log entry: {type(exc).__name__}\n")


async def _too_many_requests(send, wait: float, rate: float) -> None:
    retry = max(1, math.ceil(wait))
    message = f"rate limit of {rate:g} requests/s per token (or client address) exceeded; retry after {retry} s"
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": 429, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry).encode()), (b"x-error-message", message.encode())]})
    await send({"type": "http.response.body", "body": body})
