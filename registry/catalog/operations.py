"""Catalog changes as small validated operations, applied together in one transaction.

``Catalog.apply([AddVersion(...), MoveAlias(...), LinkLineage(...)])``. Each operation checks its
own input in ``validate()`` (no database), then ``apply(session, catalog)`` does the work and
returns a result entity. The same shape serves commits to remotes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import entities as E
from . import events, search_index
from .store import RetryTransaction, adapter_row, latest_row, resolve_in
from .db_schema import AdapterRow, AliasEventRow, AliasRow, LineageRow, VersionRow
from ..errors import AlreadyExists, Conflict, NotFound, UsageError
from ..paths import current_user
from .refs import check_alias, check_name, parse_ref, parse_version, sort_key

KINDS, BASES = E.KINDS, E.BASES  # the adapter kinds and base families (entities: light to import)
BUMPS = ("major", "minor", "patch")
RELATIONS = ("trained_from", "merged_from", "converted_from", "extracted_from", "pulled_from",
             "resized_from")


def now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class AddVersion:
    name: str
    sha256: str
    autov1: str | None
    autov2: str
    autov3: str | None
    size: int
    file_format: str
    kind: str
    base: str = "unknown"
    version: str | None = None
    bump: str | None = None
    file_name: str = ""
    probe: dict = field(default_factory=dict)
    file_metadata: dict = field(default_factory=dict)
    trigger_words: list[str] = field(default_factory=list)
    message: str = ""
    description: str = ""
    tags: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    user: str = field(default_factory=current_user)

    def validate(self) -> None:
        check_name(self.name)
        if self.version is not None:
            parse_version(self.version)
            if self.bump:
                raise UsageError("give either --version or --bump, not both")
        if self.bump is not None and self.bump not in BUMPS:
            raise UsageError(f"--bump must be one of {', '.join(BUMPS)}")
        if self.kind not in KINDS:
            raise UsageError(f"unknown kind {self.kind!r}; use one of {', '.join(KINDS)}")
        if self.base not in BASES:
            raise UsageError(f"unknown base {self.base!r}; use one of {', '.join(BASES)}")

    def apply(self, s: Session, catalog) -> E.Version:
        # FOR UPDATE serialises version allocation per adapter on PostgreSQL (SQLite's
        # BEGIN IMMEDIATE already serialises writers).
        adapter = s.scalar(select(AdapterRow).where(AdapterRow.name == self.name).with_for_update())
        if adapter is None:
            adapter = AdapterRow(name=self.name, kind=self.kind, base=self.base,
                                 description=self.description, tags=dict(self.tags), created_at=now())
            s.add(adapter)
            s.flush()
        else:
            if adapter.kind != self.kind and {adapter.kind, self.kind} != {"lora", "lycoris"}:
                raise Conflict(f"{self.name} holds {adapter.kind} versions; this file is a {self.kind}",
                               hint="add it under another --name, or pass --kind to override the probe")
            if self.tags:
                adapter.tags = {**(adapter.tags or {}), **self.tags}
            if self.description and not adapter.description:
                adapter.description = self.description
            if adapter.base == "unknown" and self.base != "unknown":
                adapter.base = self.base
        same_blob = s.scalar(select(VersionRow).where(VersionRow.adapter_id == adapter.id,
                                                      VersionRow.live_sha256 == self.sha256))
        if same_blob is not None:
            raise AlreadyExists(f"this file is already {self.name}@{same_blob.version} "
                                f"(sha256 {self.sha256[:12]}…)")
        version = self.version or self._next_version(s, adapter)
        if s.scalar(select(VersionRow.id).where(VersionRow.adapter_id == adapter.id,
                                                 VersionRow.version == version)) is not None:
            if self.version is None:
                raise RetryTransaction(f"{self.name}@{version} was allocated concurrently")
            raise AlreadyExists(f"{self.name}@{version} already exists; versions are immutable",
                                hint="use --bump or another --version")
        row = VersionRow(
            adapter_id=adapter.id, version=version, sort_key=sort_key(version), sha256=self.sha256,
            live_sha256=self.sha256, autov1=self.autov1, autov2=self.autov2, autov3=self.autov3,
            size=self.size, file_format=self.file_format, file_name=self.file_name,
            probe=self.probe, file_metadata=self.file_metadata, trigger_words=list(self.trigger_words),
            extra=self.extra, message=self.message, created_at=now(), created_by=self.user,
        )
        s.add(row)
        s.flush()
        search_index.refresh_versions(s, [row.id])  # and its adapter's document (name, description, tags)
        events.version_added(s, adapter.name, row)  # the outbox row commits with the version
        return row.to_entity(adapter.name)

    def _next_version(self, s: Session, adapter: AdapterRow) -> str:
        # Bump from the highest version ever allocated, removed ones included: a removed
        # version number is never handed out again.
        top = s.scalar(select(VersionRow).where(VersionRow.adapter_id == adapter.id)
                       .order_by(VersionRow.sort_key.desc()).limit(1))
        if top is None:
            return "1.0.0"
        current = parse_version(top.version)
        bumped = {"major": current.bump_major, "patch": current.bump_patch}.get(
            self.bump or "minor", current.bump_minor)()
        return str(bumped)


# Row locks (PostgreSQL; SQLite's BEGIN IMMEDIATE serialises writers anyway): an alias move
# locks the alias row before reading its old target, and both alias moves and removals lock the
# version row, so "remove v" and "point an alias at v" cannot both succeed concurrently.
def _lock_alias(s: Session, adapter_id: int, alias: str) -> AliasRow | None:
    row = s.scalar(select(AliasRow).where(AliasRow.adapter_id == adapter_id, AliasRow.name == alias)
                   .with_for_update())
    if row is None:
        # No row to lock yet: serialise on the adapter row instead (FOR NO KEY UPDATE on PostgreSQL),
        # then look again, so the move creating the alias and a refused first move recorded at the same
        # time do not both see "no alias" (the refused event's from_version would then be stale).
        s.execute(select(AdapterRow.id).where(AdapterRow.id == adapter_id).with_for_update(key_share=True))
        row = s.scalar(select(AliasRow).where(AliasRow.adapter_id == adapter_id, AliasRow.name == alias)
                       .with_for_update())
    return row


def _lock_live_version(s: Session, row: VersionRow) -> VersionRow:
    # FOR NO KEY UPDATE on PostgreSQL: it still excludes a concurrent soft delete (an UPDATE), but not the
    # FOR KEY SHARE that inserting an alias event naming this version as from_version takes; plain
    # FOR UPDATE made two moves of one alias deadlock (one holds the target, the other the alias row)
    locked = s.scalar(select(VersionRow).where(VersionRow.id == row.id).with_for_update(key_share=True)
                      .execution_options(populate_existing=True))
    if locked.deleted_at is not None:
        raise NotFound(f"version {locked.version} was removed")
    return locked


def _record_alias_event(s, adapter, alias, action, from_id, to_id, user, reason) -> None:
    at = now()
    s.add(AliasEventRow(adapter_id=adapter.id, alias=alias, action=action, from_version_id=from_id,
                        to_version_id=to_id, at=at, by=user, reason=reason or ""))
    # every history entry is also an outbox event (alias.moved / promotion.refused), same transaction
    events.alias_event(s, adapter.name, alias, action, from_id, to_id, user, reason, at)


@dataclass
class MoveAlias:
    """Point ALIAS at REF (creating it); ``action`` is recorded in the history."""

    ref: str
    alias: str
    reason: str = ""
    action: str = "set"
    user: str = field(default_factory=current_user)
    force: bool = False  # move past a failing promotion gate (recorded in the reason)
    approved_request: int | None = None  # set by promotions.approve_request: may move a protected alias

    def validate(self) -> None:
        check_alias(self.alias)
        parsed = parse_ref(self.ref)
        if parsed.is_hash:
            raise UsageError("alias set needs NAME@VERSION (a hash ref may match several adapters)")

    def apply(self, s: Session, catalog) -> E.Alias:
        target = _lock_live_version(s, resolve_in(s, parse_ref(self.ref)))
        adapter = s.get(AdapterRow, target.adapter_id)
        from .records import promotion_gate  # the alias's policy vs the version's eval card

        if self.approved_request is None:  # a protected alias moves only through an approved request
            from .promotions import refuse_direct_move

            refuse_direct_move(s, adapter, self.alias, target.version)
        gate = promotion_gate(s, target, self.alias, force=self.force)
        row = _lock_alias(s, adapter.id, self.alias)
        previous = row.version_id if row else None
        if row is None:
            s.add(AliasRow(adapter_id=adapter.id, name=self.alias, version_id=target.id))
        else:
            row.version_id = target.id
        reason = " ".join(part for part in (self.reason, gate) if part)
        _record_alias_event(s, adapter, self.alias, self.action, previous, target.id, self.user, reason)
        return E.Alias(adapter.name, self.alias, target.version)


REFUSED = "refused"  # an alias event that moved nothing (a gated promotion that failed)


@dataclass
class RecordRefusedMove:
    """Write a ``refused`` event: someone tried to point ALIAS at REF and the promotion gate said
    no. The alias does not move; the history keeps the attempt, who made it and why it failed."""

    ref: str
    alias: str
    reason: str
    user: str = field(default_factory=current_user)

    def validate(self) -> None:
        check_alias(self.alias)

    def apply(self, s: Session, catalog) -> None:
        target = resolve_in(s, parse_ref(self.ref))
        adapter = s.get(AdapterRow, target.adapter_id)
        row = _lock_alias(s, adapter.id, self.alias)
        _record_alias_event(s, adapter, self.alias, REFUSED, row.version_id if row else None, target.id,
                            self.user, self.reason)


def move_alias(catalog, ref: str, alias: str, reason: str = "", *, force: bool = False,
               user: str | None = None) -> E.Alias:
    """``alias set``: move ALIAS to REF through its promotion gate. A refused move is recorded in
    the alias history (in its own transaction, since the refused one rolls back) and re-raised.
    ``user``: who moves it (default: the current user; the web app passes the signed-in token's name)."""
    from .records import PromotionRefused

    by = user or current_user()
    try:
        (result,) = catalog.apply([MoveAlias(ref, alias, reason, force=force, user=by)])
        return result
    except PromotionRefused as exc:
        why = "[gate refused: " + "; ".join(exc.problems) + "]"
        catalog.apply([RecordRefusedMove(ref, alias, " ".join(p for p in (reason, why) if p), user=by)])
        raise


def alias_target_stack(s: Session, adapter: AdapterRow, alias: str) -> list[int]:
    """Replay the alias history: a set pushes its target, a rollback pops, a removal clears, a
    refused move changes nothing."""
    stack: list[int] = []
    for ev in s.scalars(select(AliasEventRow).where(AliasEventRow.adapter_id == adapter.id,
                                                    AliasEventRow.alias == alias).order_by(AliasEventRow.id)):
        if ev.action == REFUSED:
            continue
        if ev.action == "rollback" and stack:
            stack.pop()
            if not stack or stack[-1] != ev.to_version_id:
                stack.append(ev.to_version_id)
        elif ev.action == "remove":
            stack.clear()
        elif ev.to_version_id is not None:
            stack.append(ev.to_version_id)
    return stack


@dataclass
class RollbackAlias:
    """Move ALIAS back to its previous target (or to ``to``); nothing is deleted."""

    name: str
    alias: str = "production"
    to: str | None = None
    reason: str = ""
    user: str = field(default_factory=current_user)

    def validate(self) -> None:
        check_name(self.name)
        check_alias(self.alias)
        if self.to is not None:
            parse_version(self.to)

    def apply(self, s: Session, catalog) -> E.AliasEvent:
        adapter = adapter_row(s, self.name)
        row = _lock_alias(s, adapter.id, self.alias)
        if row is None:
            raise NotFound(f"{self.name} has no alias {self.alias!r} to roll back")
        if self.to is not None:
            target = _lock_live_version(s, resolve_in(s, parse_ref(f"{self.name}@{self.to}")))
        else:
            stack = alias_target_stack(s, adapter, self.alias)
            earlier = [vid for vid in stack[:-1]]
            target = None
            while earlier:
                candidate = s.get(VersionRow, earlier.pop())
                if candidate.deleted_at is None and candidate.id != row.version_id:
                    target = _lock_live_version(s, candidate)
                    break
            if target is None:
                raise Conflict(f"{self.name}@{self.alias} has no earlier version to roll back to",
                               hint=f"see `loradex alias history {self.name} {self.alias}`")
        if target.id == row.version_id:
            raise Conflict(f"{self.name}@{self.alias} already points at {target.version}")
        previous = row.version_id
        row.version_id = target.id
        _record_alias_event(s, adapter, self.alias, "rollback", previous, target.id, self.user,
                            self.reason or "rollback")
        names = {previous: s.get(VersionRow, previous).version, target.id: target.version}
        return E.AliasEvent(0, adapter.name, self.alias, "rollback", names[previous], target.version,
                            now(), self.user, self.reason or "rollback")


@dataclass
class RemoveAlias:
    name: str
    alias: str
    reason: str = ""
    user: str = field(default_factory=current_user)

    def validate(self) -> None:
        check_name(self.name)

    def apply(self, s: Session, catalog) -> None:
        adapter = adapter_row(s, self.name)
        row = _lock_alias(s, adapter.id, self.alias)
        if row is None:
            raise NotFound(f"{self.name} has no alias {self.alias!r}")
        _record_alias_event(s, adapter, self.alias, "remove", row.version_id, None, self.user, self.reason)
        s.delete(row)


@dataclass
class SoftDeleteVersion:
    """Mark a version removed (its row stays, with its history); ``force`` also removes the
    aliases pointing at it, recording an event for each."""

    ref: str
    force: bool = False
    user: str = field(default_factory=current_user)

    def validate(self) -> None:
        parse_ref(self.ref)

    def apply(self, s: Session, catalog) -> E.Version:
        row = _lock_live_version(s, resolve_in(s, parse_ref(self.ref)))
        adapter = s.get(AdapterRow, row.adapter_id)
        pointing = s.scalars(select(AliasRow).where(AliasRow.version_id == row.id).with_for_update()).all()
        if pointing and not self.force:
            names = ", ".join(a.name for a in pointing)
            raise Conflict(f"{adapter.name}@{row.version} is the target of alias(es) {names}",
                           hint="move them first, or pass --force to remove them too")
        for alias in pointing:
            _record_alias_event(s, adapter, alias.name, "remove", row.id, None, self.user,
                                f"rm --force {adapter.name}@{row.version}")
            s.delete(alias)
        row.deleted_at = now()
        row.deleted_by = self.user
        row.live_sha256 = None
        s.flush()
        search_index.refresh_versions(s, [row.id])  # leaves the index
        return row.to_entity(adapter.name)


@dataclass
class LinkLineage:
    """child → parent edge; the parent is a catalog ref or an external ref (hf://…, civitai:…)."""

    child: str
    relation: str
    parent: str | None = None
    external_parent: str | None = None
    recipe: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.relation not in RELATIONS:
            raise UsageError(f"unknown lineage relation {self.relation!r}")
        if (self.parent is None) == (self.external_parent is None):
            raise UsageError("a lineage edge needs exactly one of parent / external_parent")

    def apply(self, s: Session, catalog) -> E.LineageEdge:
        child = resolve_in(s, parse_ref(self.child))
        parent_id = resolve_in(s, parse_ref(self.parent)).id if self.parent else None
        s.add(LineageRow(child_version_id=child.id, parent_version_id=parent_id,
                         parent_ref=self.external_parent, relation=self.relation,
                         recipe=dict(self.recipe), created_at=now()))
        return E.LineageEdge(self.child, self.parent or self.external_parent, self.relation, self.recipe)


def latest_version(s: Session, name: str) -> VersionRow | None:
    return latest_row(s, adapter_row(s, name))
