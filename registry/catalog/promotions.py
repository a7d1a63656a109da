"""Protected aliases and promotion requests.

``alias protect NAME ALIAS [--approver U]...`` makes ALIAS move only through an approved request:
a direct ``alias set`` is refused (recorded in the alias history as a refused move, so it is a
``promotion.refused`` event) with the request command in the message. ``alias request REF ALIAS
--reason R`` records a request; someone other than the requester (on a served catalog: a token
with the ``approve`` scope) approves it — the move then happens in the same transaction, through
the alias's promotion gate, and its history entry names both people — or rejects it with a
reason. A protection's approver list, when not empty, limits who may decide. Every request and
decision writes an outbox event (``promotion.requested`` / ``promotion.decided``).

Rollbacks are not gated: they return an alias to a version it already held (an approved one),
which is what an incident needs at 3 a.m.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import AlreadyExists, AuthError, Conflict, NotFound, UsageError
from ..paths import current_user
from . import events
from .refs import check_alias, check_name, parse_ref
from .store import adapter_row, resolve_in

OPEN, APPROVED, REJECTED = "open", "approved", "rejected"
MAX_REASON = 2000
MAX_APPROVERS = 50


@dataclass(frozen=True)
class PromotionRequest:
    id: int
    adapter: str
    alias: str
    version: str
    requested_by: str
    requested_at: datetime
    reason: str
    state: str
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str

    def to_dict(self) -> dict:
        return {"id": self.id, "adapter": self.adapter, "alias": self.alias, "version": self.version,
                "requested_by": self.requested_by, "requested_at": self.requested_at.isoformat(),
                "reason": self.reason, "state": self.state, "decided_by": self.decided_by,
                "decided_at": self.decided_at.isoformat() if self.decided_at else None,
                "decision_reason": self.decision_reason}


@dataclass(frozen=True)
class AliasProtection:
    adapter: str
    alias: str
    approvers: tuple[str, ...]
    created_by: str
    created_at: datetime

    def to_dict(self) -> dict:
        return {"adapter": self.adapter, "alias": self.alias, "approvers": list(self.approvers),
                "created_by": self.created_by, "created_at": self.created_at.isoformat()}


def _entity(s: Session, row) -> PromotionRequest:
    from .db_schema import AdapterRow, VersionRow

    return PromotionRequest(row.id, s.get(AdapterRow, row.adapter_id).name, row.alias,
                            s.get(VersionRow, row.version_id).version, row.requested_by, _utc(row.requested_at),
                            row.reason, row.state, row.decided_by, _utc(row.decided_at), row.decision_reason or "")


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without their zone; they were written in UTC."""
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


def _text(value: str, what: str, *, required: bool) -> str:
    value = (value or "").strip()
    if required and not value:
        raise UsageError(f"{what} needs a reason: pass --reason")
    if len(value) > MAX_REASON:
        raise UsageError(f"the reason is over {MAX_REASON} characters")
    return value


def protection_in(s: Session, adapter_id: int, alias: str):
    from .db_events import AliasProtectionRow

    return s.scalar(select(AliasProtectionRow).where(AliasProtectionRow.adapter_id == adapter_id,
                                                     AliasProtectionRow.alias == alias))


def refuse_direct_move(s: Session, adapter, alias: str, version: str) -> None:
    """Called by ``MoveAlias`` for a move that is not an approved request: a protected alias
    refuses it (``PromotionRefused``: ``move_alias`` records the refusal, a promotion.refused event)."""
    if protection_in(s, adapter.id, alias) is None:
        return
    from .records import PromotionRefused

    command = f"loradex alias request {adapter.name}@{version} {alias} --reason …"
    raise PromotionRefused(f"{adapter.name}@{alias} is protected: it moves only through an approved "
                           f"promotion request; run `{command}`",
                           problems=[f"{alias} is protected (needs an approved promotion request)"])


# --- protecting --------------------------------------------------------------------------------

def protect_alias(catalog, name: str, alias: str, approvers: list[str] = (), *, user: str | None = None,
                  remove: bool = False) -> AliasProtection | None:
    """Protect NAME's ALIAS (again: replaces the approver list); ``remove`` lifts the protection."""
    from .db_events import AliasProtectionRow

    check_name(name)
    check_alias(alias)
    approvers = sorted({a.strip() for a in approvers if a and a.strip()})
    if len(approvers) > MAX_APPROVERS or any(len(a) > 200 for a in approvers):
        raise UsageError(f"give at most {MAX_APPROVERS} approvers of at most 200 characters each")
    by = user or current_user()

    def run(s: Session):
        adapter = adapter_row(s, name)
        row = protection_in(s, adapter.id, alias)
        if remove:
            if row is None:
                raise NotFound(f"{name}@{alias} is not protected")
            s.delete(row)
            return None
        if row is None:
            row = AliasProtectionRow(adapter_id=adapter.id, alias=alias, approvers=approvers,
                                     created_at=events.now(), created_by=by)
            s.add(row)
        else:
            row.approvers = approvers
        s.flush()
        return AliasProtection(name, alias, tuple(row.approvers), row.created_by, row.created_at)

    return catalog.transact(run)


def protections(catalog, name: str) -> list[AliasProtection]:
    from .db_events import AliasProtectionRow

    def run(s: Session):
        adapter = adapter_row(s, name)
        return [AliasProtection(name, r.alias, tuple(r.approvers or ()), r.created_by, r.created_at)
                for r in s.scalars(select(AliasProtectionRow).where(AliasProtectionRow.adapter_id == adapter.id)
                                   .order_by(AliasProtectionRow.alias))]

    return catalog.read(run)


# --- requests ------------------------------------------------------------------------------------

def request_promotion(catalog, ref: str, alias: str, reason: str, *, user: str | None = None) -> PromotionRequest:
    """Record a request to point ALIAS at REF (a ``promotion.requested`` event)."""
    from .db_events import PromotionRequestRow
    from .db_schema import AliasRow

    check_alias(alias)
    parsed = parse_ref(ref)
    if parsed.is_hash:
        raise UsageError("alias request needs NAME@VERSION (a hash ref may match several adapters)")
    reason = _text(reason, "a promotion request", required=True)
    by = user or current_user()

    def run(s: Session):
        target = resolve_in(s, parsed)
        adapter = adapter_row(s, parsed.name)
        current = s.scalar(select(AliasRow.version_id).where(AliasRow.adapter_id == adapter.id,
                                                             AliasRow.name == alias))
        if current == target.id:
            raise Conflict(f"{adapter.name}@{alias} already points at {target.version}")
        same = s.scalar(select(PromotionRequestRow.id).where(
            PromotionRequestRow.adapter_id == adapter.id, PromotionRequestRow.alias == alias,
            PromotionRequestRow.version_id == target.id, PromotionRequestRow.state == OPEN))
        if same is not None:
            raise AlreadyExists(f"request #{same} for {adapter.name}@{target.version} → {alias} is already open",
                                hint=f"an approver runs `loradex alias approve {same}`")
        row = PromotionRequestRow(adapter_id=adapter.id, alias=alias, version_id=target.id, requested_by=by,
                                  requested_at=events.now(), reason=reason, state=OPEN, decision_reason="")
        s.add(row)
        s.flush()
        request = _entity(s, row)
        events.emit(s, events.PROMOTION_REQUESTED, _event_data(request))
        return request

    return catalog.transact(run)


def _event_data(request: PromotionRequest) -> dict:
    data = request.to_dict()
    data["request_id"] = data.pop("id")
    return data


def _check_decider(s: Session, row, by: str) -> None:
    if by == row.requested_by:
        raise AuthError(f"request #{row.id} was made by {by}; someone else must approve or reject it")
    protection = protection_in(s, row.adapter_id, row.alias)
    if protection is not None and protection.approvers and by not in protection.approvers:
        raise AuthError(f"{by} may not decide requests for this alias; its approvers are "
                        f"{', '.join(protection.approvers)}")


def _open_request(s: Session, request_id: int):
    from .db_events import PromotionRequestRow

    row = s.scalar(select(PromotionRequestRow).where(PromotionRequestRow.id == request_id).with_for_update())
    if row is None:
        raise NotFound(f"no promotion request #{request_id}", hint="see `loradex alias requests`")
    if row.state != OPEN:
        raise Conflict(f"request #{request_id} is already {row.state} (by {row.decided_by})")
    return row


def approve_request(catalog, request_id: int, reason: str = "", *, user: str | None = None) -> PromotionRequest:
    """Approve request #ID and move the alias in the same transaction (through its promotion gate;
    a refused gate leaves the request open and records the refusal). The history entry is by the
    approver and names the requester."""
    from .operations import MoveAlias, RecordRefusedMove
    from .records import PromotionRefused

    reason = _text(reason, "an approval", required=False)
    by = user or current_user()
    facts: dict = {}

    def run(s: Session):
        row = _open_request(s, request_id)
        _check_decider(s, row, by)
        request = _entity(s, row)
        facts["ref"] = f"{request.adapter}@{request.version}"
        facts["alias"] = request.alias
        why = f"request #{row.id} by {row.requested_by}: {row.reason}; approved by {by}" + (f": {reason}" if reason else "")
        move = MoveAlias(facts["ref"], row.alias, why, user=by, approved_request=row.id)
        move.validate()
        move.apply(s, catalog)
        row.state, row.decided_by, row.decided_at, row.decision_reason = APPROVED, by, events.now(), reason
        decided = _entity(s, row)
        events.emit(s, events.PROMOTION_DECIDED, _event_data(decided))
        return decided

    try:
        return catalog.transact(run)
    except PromotionRefused as exc:
        why = f"approving request #{request_id}: [gate refused: " + "; ".join(exc.problems) + "]"
        catalog.apply([RecordRefusedMove(facts["ref"], facts["alias"], why, user=by)])
        raise


def reject_request(catalog, request_id: int, reason: str, *, user: str | None = None) -> PromotionRequest:
    reason = _text(reason, "a rejection", required=True)
    by = user or current_user()

    def run(s: Session):
        row = _open_request(s, request_id)
        _check_decider(s, row, by)
        row.state, row.decided_by, row.decided_at, row.decision_reason = REJECTED, by, events.now(), reason
        decided = _entity(s, row)
        events.emit(s, events.PROMOTION_DECIDED, _event_data(decided))
        return decided

    return catalog.transact(run)


def list_requests(catalog, *, state: str | None = OPEN, name: str | None = None,
                  limit: int = 200) -> list[PromotionRequest]:
    """Requests, newest first; ``state`` None: every state; ``name``: one adapter's."""
    from .db_events import PromotionRequestRow

    if state not in (None, OPEN, APPROVED, REJECTED):
        raise UsageError(f"unknown request state {state!r}: use open, approved or rejected")

    def run(s: Session):
        q = select(PromotionRequestRow)
        if state is not None:
            q = q.where(PromotionRequestRow.state == state)
        if name is not None:
            q = q.where(PromotionRequestRow.adapter_id == adapter_row(s, name).id)
        return [_entity(s, r) for r in s.scalars(q.order_by(PromotionRequestRow.id.desc()).limit(limit))]

    return catalog.read(run)


def get_request(catalog, request_id: int) -> PromotionRequest:
    from .db_events import PromotionRequestRow

    def run(s: Session):
        row = s.get(PromotionRequestRow, request_id)
        if row is None:
            raise NotFound(f"no promotion request #{request_id}", hint="see `loradex alias requests`")
        return _entity(s, row)

    return catalog.read(run)
