"""Webhooks: hooks stored in the catalog, events delivered from its outbox.

A hook is a URL, the event names it wants and a signing secret. ``registry.catalog.events``
queues one delivery per (hook, event) in the transaction that made the change; this module
sends them. Each event is POSTed as JSON with MLflow's registry-webhook scheme (the Standard
Webhooks one), under loradex's names:

    X-Loradex-Delivery-Id: <uuid, the same on every retry of this event>
    X-Loradex-Timestamp:   <unix seconds of this attempt>
    X-Loradex-Event:       alias.moved
    X-Loradex-Signature:   v1,<base64 HMAC-SHA256(secret, f"{delivery_id}.{timestamp}.{body}")>

A receiver recomputes the signature over the raw body (:func:`verify_signature` does it) and
drops an id it has already seen. Deliveries go out in order per hook: while a hook's oldest
pending event fails (not 2xx, refused, timed out), the later ones wait; it is retried with
exponential back-off (:func:`backoff`, capped) for as long as it takes — nothing is dropped.

Several workers (``serve`` replicas, CLI commands on the same home) may run
:func:`deliver_due` at once: a worker first takes a hook's lease (``webhooks.lease_owner`` /
``lease_until``: PostgreSQL picks free hooks with ``FOR UPDATE SKIP LOCKED``, SQLite's write lock
makes the same read-then-update atomic), sends that hook's due events, and records each result
only while it still holds the lease. So one event is sent by one worker at a time; a worker that
dies mid-send leaves the lease to expire and the event is sent again with the same id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable
from urllib.parse import urlsplit

from sqlalchemy import select, update

from ..catalog import events
from ..errors import NotFound, UsageError

HEADER_DELIVERY = "X-Loradex-Delivery-Id"
HEADER_TIMESTAMP = "X-Loradex-Timestamp"
HEADER_SIGNATURE = "X-Loradex-Signature"
HEADER_EVENT = "X-Loradex-Event"
SIGNATURE_VERSION = "v1"
BACKOFF_BASE_S = 10.0
BACKOFF_CAP_S = 3600.0
LEASE_S = 60.0
TIMEOUT_S = 10.0  # one POST; well under the lease
MAX_URL = 2000
MAX_ERROR = 500
USER_AGENT = "loradex-webhooks"

Clock = Callable[[], datetime]
# (url, body, headers, timeout) → HTTP status; raises OSError-like errors when nothing answered
Poster = Callable[[str, bytes, dict, float], int]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without their zone; they were written in UTC."""
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


# --- signing ---------------------------------------------------------------------------------------

def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def verify_signature(secret: str, headers, body: bytes) -> bool:
    """The receiver's check (constant-time): the signature header matches the body, id and timestamp."""
    try:
        expected = signature(secret, headers[HEADER_DELIVERY], headers[HEADER_TIMESTAMP], body)
        return hmac.compare_digest(expected, headers[HEADER_SIGNATURE])
    except (KeyError, TypeError):
        return False


def backoff(attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed try: 10 s, 20 s, 40 s … capped at an hour."""
    return min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** max(0, min(attempts - 1, 30)))


# --- hooks -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Hook:
    id: int
    url: str
    events: tuple[str, ...]
    created_at: datetime
    created_by: str
    pending: int = 0

    def to_dict(self) -> dict:  # never the secret
        return {"id": self.id, "url": self.url, "events": list(self.events),
                "created_at": self.created_at.isoformat(), "created_by": self.created_by, "pending": self.pending}


@dataclass(frozen=True)
class CreatedHook:
    hook: Hook
    secret: str  # shown once by `hooks add`

    def to_dict(self) -> dict:
        return {**self.hook.to_dict(), "secret": self.secret}


def check_url(url: str) -> str:
    """An http(s) URL with a host, without credentials, fragment or control characters."""
    text = (url or "").strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 — raises ValueError on a bad port
    except ValueError:
        parts = None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname or len(text) > MAX_URL
            or parts.fragment or any(ch.isspace() or ord(ch) < 32 for ch in text)):
        raise UsageError(f"invalid webhook URL {text[:100]!r}: write http(s)://HOST[:PORT]/PATH")
    if parts.username or parts.password:
        raise UsageError("a webhook URL must not carry credentials (user:password@); receivers check the "
                         "signature instead (--secret)")
    return text


def check_events(names: list[str]) -> list[str]:
    wanted = []
    for name in names:
        for part in name.split(","):
            part = part.strip()
            if not part:
                continue
            if part not in events.EVENTS:
                raise UsageError(f"unknown event {part!r}: use {', '.join(events.EVENTS)}")
            if part not in wanted:
                wanted.append(part)
    if not wanted:
        raise UsageError(f"name at least one event: {', '.join(events.EVENTS)}")
    return wanted


def _hook(row, pending: int = 0) -> Hook:
    return Hook(row.id, row.url, tuple(row.events or ()), _utc(row.created_at), row.created_by, pending)


def add_hook(catalog, url: str, event_names: list[str], *, secret: str | None = None,
             user: str | None = None) -> CreatedHook:
    """Store a hook; ``secret`` None: a new random one (returned once, stored to sign with)."""
    from ..catalog.db_events import WebhookRow
    from ..paths import current_user

    url = check_url(url)
    wanted = check_events(event_names)
    if secret is not None and not (16 <= len(secret) <= 200):
        raise UsageError("--secret must be 16 to 200 characters (or leave it out for a generated one)")
    secret = secret if secret is not None else "whsec_" + secrets.token_urlsafe(32)

    def run(s):
        row = WebhookRow(url=url, events=wanted, secret=secret, created_at=events.now(),
                         created_by=user or current_user())
        s.add(row)
        s.flush()
        return _hook(row)

    return CreatedHook(catalog.transact(run), secret)


def list_hooks(catalog) -> list[Hook]:
    from sqlalchemy import func

    from ..catalog.db_events import WebhookDeliveryRow, WebhookRow

    def run(s):
        pending = dict(s.execute(select(WebhookDeliveryRow.hook_id, func.count(WebhookDeliveryRow.id))
                                 .where(WebhookDeliveryRow.status == events.PENDING)
                                 .group_by(WebhookDeliveryRow.hook_id)).all())
        return [_hook(r, pending.get(r.id, 0)) for r in s.scalars(select(WebhookRow).order_by(WebhookRow.id))]

    return catalog.read(run)


def _hook_row(s, hook_id: int):
    from ..catalog.db_events import WebhookRow

    row = s.get(WebhookRow, hook_id)
    if row is None:
        raise NotFound(f"no webhook #{hook_id}", hint="see `loradex hooks list`")
    return row


def remove_hook(catalog, hook_id: int) -> Hook:
    """Remove a hook and its deliveries (pending ones are dropped with it; the outbox stays)."""
    from sqlalchemy import delete

    from ..catalog.db_events import WebhookDeliveryRow

    def run(s):
        row = _hook_row(s, hook_id)
        hook = _hook(row)
        s.execute(delete(WebhookDeliveryRow).where(WebhookDeliveryRow.hook_id == hook_id))
        s.delete(row)
        return hook

    return catalog.transact(run)


def queue_test(catalog, hook_id: int, *, user: str | None = None) -> str:
    """Queue a ``hook.test`` event for this hook alone; returns its delivery id."""
    from ..catalog.db_events import OutboxRow
    from ..paths import current_user

    def run(s):
        _hook_row(s, hook_id)
        outbox_id = events.emit(s, events.HOOK_TEST, {"hook_id": hook_id, "by": user or current_user(),
                                                      "at": events.now().isoformat()}, only_hook=hook_id)
        return s.get(OutboxRow, outbox_id).delivery_id

    return catalog.transact(run)


@dataclass(frozen=True)
class Delivery:
    hook_id: int
    outbox_id: int
    delivery_id: str
    event: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str
    delivered_at: datetime | None

    def to_dict(self) -> dict:
        iso = lambda d: d.isoformat() if d else None  # noqa: E731
        return {"hook_id": self.hook_id, "outbox_id": self.outbox_id, "delivery_id": self.delivery_id,
                "event": self.event, "status": self.status, "attempts": self.attempts,
                "next_attempt_at": iso(self.next_attempt_at) if self.status == events.PENDING else None,
                "last_error": self.last_error, "delivered_at": iso(self.delivered_at)}


def list_deliveries(catalog, *, hook_id: int | None = None, status: str | None = None,
                    limit: int = 100) -> list[Delivery]:
    """Newest first."""
    from ..catalog.db_events import OutboxRow, WebhookDeliveryRow

    if status not in (None, events.PENDING, events.DELIVERED):
        raise UsageError(f"unknown delivery status {status!r}: use pending or delivered")

    def run(s):
        q = (select(WebhookDeliveryRow, OutboxRow.delivery_id, OutboxRow.event)
             .join(OutboxRow, OutboxRow.id == WebhookDeliveryRow.outbox_id))
        if hook_id is not None:
            _hook_row(s, hook_id)
            q = q.where(WebhookDeliveryRow.hook_id == hook_id)
        if status is not None:
            q = q.where(WebhookDeliveryRow.status == status)
        rows = s.execute(q.order_by(WebhookDeliveryRow.id.desc()).limit(limit)).all()
        return [Delivery(d.hook_id, d.outbox_id, did, ev, d.status, d.attempts, _utc(d.next_attempt_at),
                         d.last_error, _utc(d.delivered_at)) for d, did, ev in rows]

    return catalog.read(run)


# --- delivering ------------------------------------------------------------------------------------

def body_of(outbox_row) -> bytes:
    """The JSON body of an event: the same bytes on every attempt."""
    envelope = {"event": outbox_row.event, "delivery_id": outbox_row.delivery_id,
                "created_at": _utc(outbox_row.created_at).isoformat(), "data": outbox_row.payload}
    return json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def httpx_post(url: str, body: bytes, headers: dict, timeout: float) -> int:
    """POST without following redirects (a 3xx is a failure: the receiver moved, say so)."""
    import httpx

    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        return client.post(url, content=body, headers=headers).status_code


@dataclass
class DeliveryReport:
    delivered: int = 0
    failed: int = 0
    hooks: int = 0
    errors: list[str] = field(default_factory=list)
    waiting: int = 0  # pending deliveries whose back-off has not run out when the pass ended
    next_at: datetime | None = None  # the earliest of their next tries

    def to_dict(self) -> dict:
        return {"delivered": self.delivered, "failed": self.failed, "hooks": self.hooks, "errors": self.errors,
                "waiting": self.waiting, "next_at": self.next_at.isoformat() if self.next_at else None}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:MAX_ERROR]


def _waiting(catalog, at: datetime) -> tuple[int, datetime | None]:
    """(how many pending deliveries are not due yet at ``at``, the earliest next try among them)."""
    from sqlalchemy import func

    from ..catalog.db_events import WebhookDeliveryRow

    count, first = catalog.read(lambda s: s.execute(
        select(func.count(WebhookDeliveryRow.id), func.min(WebhookDeliveryRow.next_attempt_at)).where(
            WebhookDeliveryRow.status == events.PENDING, WebhookDeliveryRow.next_attempt_at > at)).one())
    return int(count), _utc(first)


def _anything_due(catalog, at: datetime) -> bool:
    from ..catalog.db_events import WebhookDeliveryRow

    return catalog.read(lambda s: s.scalar(select(WebhookDeliveryRow.id).where(
        WebhookDeliveryRow.status == events.PENDING, WebhookDeliveryRow.next_attempt_at <= at).limit(1)) is not None)


def _claim_hooks(catalog, worker: str, at: datetime, limit: int) -> list[int]:
    """Lease up to ``limit`` hooks whose oldest pending delivery is due and no live lease covers."""
    from ..catalog.db_events import WebhookDeliveryRow, WebhookRow

    def run(s):
        due = select(WebhookDeliveryRow.hook_id).where(WebhookDeliveryRow.status == events.PENDING,
                                                       WebhookDeliveryRow.next_attempt_at <= at)
        rows = s.scalars(select(WebhookRow).where(
            WebhookRow.id.in_(due), (WebhookRow.lease_until.is_(None)) | (WebhookRow.lease_until < at)
            | (WebhookRow.lease_owner == worker)).order_by(WebhookRow.id).limit(limit)
            .with_for_update(skip_locked=True)).all()
        for row in rows:
            row.lease_owner, row.lease_until = worker, at + timedelta(seconds=LEASE_S)
        return [row.id for row in rows]

    return catalog.transact(run, crash_points=False)


def _next_due(catalog, hook_id: int, worker: str, at: datetime):
    """(secret, url, delivery row id, outbox row) of the hook's oldest pending delivery, if it is due
    and the lease is still ours; else None."""
    from ..catalog.db_events import OutboxRow, WebhookDeliveryRow, WebhookRow

    def run(s):
        hook = s.get(WebhookRow, hook_id)
        if hook is None or hook.lease_owner != worker or _utc(hook.lease_until) < at:
            return None
        head = s.execute(select(WebhookDeliveryRow, OutboxRow)
                         .join(OutboxRow, OutboxRow.id == WebhookDeliveryRow.outbox_id)
                         .where(WebhookDeliveryRow.hook_id == hook_id, WebhookDeliveryRow.status == events.PENDING)
                         .order_by(WebhookDeliveryRow.outbox_id).limit(1)).first()
        if head is None or _utc(head[0].next_attempt_at) > at:
            return None  # in order: a later event waits for the head's back-off
        s.expunge(head[1])
        return hook.secret, hook.url, head[0].id, head[1]

    return catalog.read(run)


def _record(catalog, hook_id: int, delivery_row_id: int, worker: str, at: datetime, error: str | None) -> bool:
    """Store one attempt's result (the hook row-locked on PostgreSQL); False: the lease is no longer
    ours (we stalled past it), so stop. A success is recorded even then: it happened, and a worker
    that took the hook over must not send the event again."""
    from ..catalog.db_events import WebhookDeliveryRow, WebhookRow

    def run(s):
        hook = s.scalar(select(WebhookRow).where(WebhookRow.id == hook_id).with_for_update())
        ours = hook is not None and hook.lease_owner == worker
        row = s.get(WebhookDeliveryRow, delivery_row_id)
        if row is None or row.status != events.PENDING:
            return False
        if not ours:
            if error is None:
                row.attempts += 1
                row.status, row.delivered_at, row.last_error = events.DELIVERED, at, ""
            return False
        row.attempts += 1
        if error is None:
            row.status, row.delivered_at, row.last_error = events.DELIVERED, at, ""
        else:
            row.last_error = error
            row.next_attempt_at = at + timedelta(seconds=backoff(row.attempts))
        hook.lease_until = max(_utc(hook.lease_until), at + timedelta(seconds=LEASE_S))
        return True

    return catalog.transact(run, crash_points=False)


def _release(catalog, hook_ids: list[int], worker: str) -> None:
    from ..catalog.db_events import WebhookRow

    if hook_ids:
        catalog.transact(lambda s: s.execute(update(WebhookRow).where(
            WebhookRow.id.in_(hook_ids), WebhookRow.lease_owner == worker).values(lease_owner=None, lease_until=None)),
            crash_points=False)


def deliver_due(catalog, *, clock: Clock = utcnow, post: Poster = httpx_post, worker: str | None = None,
                max_deliveries: int = 100, max_hooks: int = 20, timeout: float = TIMEOUT_S) -> DeliveryReport:
    """One pass: send every due event (oldest first per hook) until ``max_deliveries`` were tried.
    A failure stops that hook for this pass (its later events wait: order is kept)."""
    worker = worker or uuid.uuid4().hex
    report = DeliveryReport()
    if not _anything_due(catalog, clock()):
        report.waiting, report.next_at = _waiting(catalog, clock())
        return report  # the common case: reads, no write transaction (serve polls every few seconds)
    claimed = _claim_hooks(catalog, worker, clock(), max_hooks)
    report.hooks = len(claimed)
    tried = 0
    try:
        for hook_id in claimed:
            while tried < max_deliveries:
                at = clock()
                head = _next_due(catalog, hook_id, worker, at)
                if head is None:
                    break
                secret, url, delivery_row_id, outbox_row = head
                body = body_of(outbox_row)
                stamp = str(int(at.timestamp()))
                headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                           HEADER_DELIVERY: outbox_row.delivery_id, HEADER_TIMESTAMP: stamp,
                           HEADER_EVENT: outbox_row.event,
                           HEADER_SIGNATURE: signature(secret, outbox_row.delivery_id, stamp, body)}
                tried += 1
                try:
                    status = post(url, body, headers, timeout)
                    error = None if 200 <= status < 300 else f"HTTP {status}"
                except Exception as exc:  # noqa: BLE001 — any transport failure is a retry, never a crash
                    error = _one_line(exc)
                if not _record(catalog, hook_id, delivery_row_id, worker, clock(), error):
                    break  # the lease went to another worker: it owns this hook now
                if error is None:
                    report.delivered += 1
                else:
                    report.failed += 1
                    report.errors.append(f"hook #{hook_id}: {error}")
                    break
    finally:
        _release(catalog, claimed, worker)
    report.waiting, report.next_at = _waiting(catalog, clock())
    return report


def deliver_after_command(*, max_deliveries: int = 20, timeout: float = 3.0) -> DeliveryReport | None:
    """What the CLI runs after a command that wrote events to a local home (a SQLite catalog): a
    short, bounded pass; whatever is left waits for the next command, `hooks deliver` or `serve`."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    from ..catalog.store import Catalog

    written, events.WRITTEN_URLS = set(events.WRITTEN_URLS), set()
    report = None
    for url in sorted(written):
        parsed = make_url(url)
        if (parsed.get_backend_name() != "sqlite" or not parsed.database or Path(parsed.database).name != "catalog.db"
                or not Path(parsed.database).is_file()):
            continue  # a shared database is served: its `serve` delivers
        try:
            catalog = Catalog(Path(parsed.database).parent, db_url=url, migrate=False)
            report = deliver_due(catalog, max_deliveries=max_deliveries, timeout=timeout)
        except Exception:  # noqa: BLE001 — the command itself succeeded; delivery is retried later
            continue
    return report


class DeliveryWorker:
    """``serve``'s background loop: a pass every ``interval`` seconds on a daemon thread."""

    def __init__(self, catalog, *, interval: float = 2.0, post: Poster = httpx_post):
        self.catalog, self.interval, self.post = catalog, interval, post
        self.worker = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "DeliveryWorker":
        self._thread = threading.Thread(target=self._run, name="loradex-webhooks", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                report = deliver_due(self.catalog, post=self.post, worker=self.worker)
            except Exception:  # noqa: BLE001 — a database hiccup: try again next tick
                report = None
            if report is None or not report.delivered:
                self._stop.wait(self.interval)

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
