"""The outbox: catalog changes others care about, written in the transaction that makes them.

An operation that moves an alias, adds a version, stores a review or files/decides a promotion
request calls :func:`emit` with the session it writes with. ``emit`` inserts one ``outbox`` row
(an event name, a JSON payload, a ``delivery_id`` that stays the same on every retry) and one
``webhook_deliveries`` row per hook subscribed to that event. Both commit or roll back with the
change itself: an event is never lost once its change committed, and never sent for a change
that rolled back. Delivery (signing, POSTing, back-off) is ``registry.remotes.webhooks``.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

ALIAS_MOVED = "alias.moved"
VERSION_ADDED = "version.added"
REVIEW_ADDED = "review.added"
PROMOTION_REFUSED = "promotion.refused"
PROMOTION_REQUESTED = "promotion.requested"
PROMOTION_DECIDED = "promotion.decided"
HOOK_TEST = "hook.test"  # `hooks test`: sent to one hook only, never subscribed to
EVENTS = (ALIAS_MOVED, VERSION_ADDED, REVIEW_ADDED, PROMOTION_REFUSED, PROMOTION_REQUESTED, PROMOTION_DECIDED)
PENDING, DELIVERED = "pending", "delivered"

# Catalogs (by URL) this process wrote events to: the CLI delivers them right after the command.
WRITTEN_URLS: set[str] = set()


def now() -> datetime:
    return datetime.now(timezone.utc)


def emit(s: Session, event: str, data: dict, *, only_hook: int | None = None) -> int:
    """Write ``event`` to the outbox in ``s``'s transaction; returns the outbox row id.
    ``only_hook``: queue it for that hook alone (``hooks test``), whatever it subscribed to."""
    from .db_events import OutboxRow, WebhookDeliveryRow, WebhookRow

    at = now()
    row = OutboxRow(delivery_id=str(uuid.uuid4()), event=event, payload=data, created_at=at)
    s.add(row)
    s.flush()
    if only_hook is not None:
        targets = [only_hook]
    else:
        targets = [hook_id for hook_id, events in s.execute(select(WebhookRow.id, WebhookRow.events))
                   if event in (events or [])]
    for hook_id in targets:
        s.add(WebhookDeliveryRow(hook_id=hook_id, outbox_id=row.id, status=PENDING, attempts=0,
                                 next_attempt_at=at, last_error=""))
    bind = s.get_bind()
    WRITTEN_URLS.add(str(bind.engine.url) if hasattr(bind, "engine") else str(bind.url))
    return row.id


def _version_string(s: Session, version_id: int | None) -> str | None:
    from .db_schema import VersionRow

    return None if version_id is None else s.scalar(select(VersionRow.version).where(VersionRow.id == version_id))


def alias_event(s: Session, adapter_name: str, alias: str, action: str, from_id: int | None,
                to_id: int | None, user: str, reason: str, at: datetime) -> None:
    """An alias event as it enters the history: a refused move is ``promotion.refused``, every
    other action (set, rollback, remove) ``alias.moved``."""
    data = {"adapter": adapter_name, "alias": alias, "action": action,
            "from_version": _version_string(s, from_id), "to_version": _version_string(s, to_id),
            "by": user, "reason": reason or "", "at": at.isoformat()}
    emit(s, PROMOTION_REFUSED if action == "refused" else ALIAS_MOVED, data)


def version_added(s: Session, adapter_name: str, row) -> None:
    emit(s, VERSION_ADDED, {"adapter": adapter_name, "version": row.version, "sha256": row.sha256,
                            "size": row.size, "file_format": row.file_format, "by": row.created_by,
                            "message": row.message or "", "at": row.created_at.isoformat()})


def card_stored(s: Session, card_id: int, card: dict) -> None:
    """A stored evaluation card that revises an earlier one is a review (``review.added``); a
    first card (``eval``) is not an event others asked for."""
    revises = card.get("revises")
    if not revises:
        return
    adapter, _, version = card["version"]["ref"].partition("@")
    emit(s, REVIEW_ADDED, {"adapter": adapter, "version": version, "card_id": card_id,
                           "revises_card_id": revises.get("card_id"), "by": revises.get("by", ""),
                           "changes": list(revises.get("changes", [])), "passed": bool(card.get("passed")),
                           "at": card.get("created_at", "")})
