"""The catalog store: engine set-up, migrations, transactions with retry, and reads.

Writes go through ``Catalog.apply(ops)`` (see ``operations.py``): a list of small validated
operations applied in one transaction, retried on SQLite "database is locked", PostgreSQL
serialization failures and unique-key races (version allocation).
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from sqlalchemy import create_engine, event, func, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from . import entities as E
from ..files.blob_backends import open_blob_store
from ..crashpoints import crashpoint
from .db_schema import AdapterRow, AliasEventRow, AliasRow, LineageRow, VersionRow
from .light_reads import head_from_files, revision_files
from ..errors import AmbiguousRef, CatalogError, DatabaseError, NotFound
from ..paths import database_url, loradex_home, prepare_home, read_only_sqlite_uri
from .refs import LATEST, Ref, check_name, parse_ref

T = TypeVar("T")
MIGRATIONS = Path(__file__).parent / "migrations"
_RETRYABLE_TEXT = ("database is locked", "database is busy", "could not serialize",
                   "deadlock detected", "SerializationFailure", "DeadlockDetected")


class RetryTransaction(Exception):
    """Raised inside a transaction to have ``Catalog.transact`` run it again (a race lost)."""


def _engine_for(url: str, *, read_only_uri: str | None = None) -> Engine:
    """``read_only_uri``: open SQLite through that ``file:`` URI (read-only) instead of ``url``
    (passed to sqlite3 as it is: SQLAlchemy's URL parsing would decode a ``%3F`` in the path)."""
    read_only = read_only_uri is not None
    if url.startswith("sqlite"):
        if read_only:
            import sqlite3

            engine = create_engine(url, creator=lambda: sqlite3.connect(read_only_uri, uri=True, timeout=60,
                                                                        check_same_thread=False))
        else:
            engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            # We issue BEGIN ourselves (below), so the driver must not.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            if not read_only:  # a read-only database keeps the journal mode it was written with
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            # Writers take the write lock up front: no deadlock-prone lock upgrade mid-transaction.
            mode = "IMMEDIATE" if conn.get_execution_options().get("loradex_write") else "DEFERRED"
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    return create_engine(url, pool_pre_ping=True)


class Catalog:
    """A loradex home: the catalog database plus the blob store.

    A home whose folder or ``catalog.db`` cannot be written (a read-only mount, ``chmod -R a-w``)
    is opened read-only: every read command works, and a write fails in one line saying so.
    """

    def __init__(self, home: str | Path | None = None, *, db_url: str | None = None,
                 migrate: bool = True):
        self.home = loradex_home(home)
        self.read_only = prepare_home(self.home)
        self.url = db_url or database_url(self.home)
        read_only_uri = None
        if self.read_only and self.url.startswith("sqlite") and not db_url and "LORADEX_DB" not in os.environ:
            read_only_uri = read_only_sqlite_uri(self.home / "catalog.db")
        else:
            self.read_only = False  # another database: its own permissions decide
        try:
            self.engine = _engine_for(self.url, read_only_uri=read_only_uri)
        except (ArgumentError, ImportError) as exc:  # LORADEX_DB is not a URL we can use
            raise CatalogError(f"LORADEX_DB is not a database URL loradex can open ({type(exc).__name__}: "
                               f"{' '.join(str(exc).split())[:160]})",
                               hint="use e.g. postgresql+psycopg://USER@HOST/DB, or unset it for the "
                                    "SQLite catalog in the home") from None
        from .blob_uploads import CatalogUploadLedger

        self.blobs = open_blob_store(self.home, ledger=CatalogUploadLedger(self))
        if migrate:
            self.migrate()

    # --- schema -------------------------------------------------------------------------
    def _alembic_config(self):
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return cfg

    def schema_revision(self) -> str | None:
        try:
            with self.engine.connect() as conn:
                # "adapters" first: a migration creates it and alembic_version in one transaction, so
                # once it is visible the revision is too. Asked the other way round, a first-use
                # migration committing between the two questions (another process, PostgreSQL's
                # read committed) looked like a catalog whose revision had been dropped.
                has_tables = inspect(conn).has_table("adapters")
                if not inspect(conn).has_table("alembic_version"):
                    if has_tables:
                        raise CatalogError(
                            f"the catalog {self._where()} has tables but no schema revision "
                            "(alembic_version was emptied or dropped)",
                            hint="restore catalog.db from a backup")
                    return None
                rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
        except DBAPIError as exc:
            raise database_failure(exc, self._where()) from None
        if len(rows) != 1 or not isinstance(rows[0][0], str):
            raise CatalogError(f"the catalog {self._where()} has {len(rows)} schema revisions recorded "
                               "(alembic_version was edited)", hint="restore catalog.db from a backup")
        return rows[0][0]

    def _where(self) -> str:
        """The catalog's place for messages (no password)."""
        if self.url.startswith("sqlite"):
            return str(self.home / "catalog.db") if "LORADEX_DB" not in os.environ else self.url
        return self.engine.url.render_as_string(hide_password=True)

    def head_revision(self) -> str:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def migrate(self) -> None:
        """Bring the database to the newest schema (cheap when it already is)."""
        current = self.schema_revision()
        if current is not None and current == _cached_head(self):
            return
        if current is not None and current not in _known_revisions():
            raise CatalogError(
                f"the catalog {self._where()} has schema revision {current!r}, unknown to this "
                "loradex (written by a newer loradex, or edited by hand)",
                hint="upgrade loradex, or restore catalog.db from a backup")
        if self.read_only:
            if current is None:
                raise CatalogError(f"the loradex home {self.home} is read-only and holds no catalog",
                                   hint="run `loradex init` in a writable home")
            raise CatalogError(f"the catalog {self._where()} needs a schema upgrade "
                               f"({current} → {_cached_head(self)}) but the home is read-only",
                               hint="run any loradex command once with write access")
        from alembic import command
        from alembic.util import CommandError

        cfg = self._alembic_config()
        for attempt in range(20):
            try:
                with self.engine.connect().execution_options(loradex_write=True) as conn:
                    _serialise_migrations(conn)
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
                    conn.commit()
                return
            except CommandError as exc:
                raise CatalogError(f"cannot upgrade the catalog {self._where()}: {exc}",
                                   hint="restore catalog.db from a backup") from None
            except (OperationalError, IntegrityError, ProgrammingError) as exc:
                # Two first-use processes racing to create the schema: the loser retries.
                if self.schema_revision() == _cached_head(self):
                    return  # the other process finished it
                if attempt == 19 or not any(t in str(exc.orig) for t in _RACE_TEXT):
                    failure = database_failure(exc, self._where())
                    raise CatalogError(f"cannot prepare the catalog: {failure.message}",
                                       hint=failure.hint) from None
                time.sleep(0.05 * (attempt + 1))
            except DBAPIError as exc:
                raise database_failure(exc, self._where()) from None

    # --- transactions -------------------------------------------------------------------
    def transact(self, fn: Callable[[Session], T], *, write: bool = True, attempts: int = 30,
                 crash_points: bool = True) -> T:
        """Run ``fn(session)`` in one transaction, retrying transient conflicts with backoff.
        ``crash_points=False``: bookkeeping (upload records) that the kill -9 campaign's
        "before-commit"/"after-commit" points must not stop at (they mark the row's commit)."""
        if write and self.read_only:
            raise CatalogError(f"the loradex home {self.home} is read-only; this command changes the catalog",
                               hint="make the home writable, or work on a writable copy")
        for attempt in range(attempts):
            try:
                with self.engine.connect().execution_options(loradex_write=write) as conn:
                    with Session(bind=conn, expire_on_commit=False) as session:
                        result = fn(session)
                        if write and crash_points:
                            crashpoint("before-commit")
                        session.commit()
                        conn.commit()
                        if write and crash_points:
                            crashpoint("after-commit")
                        return result
            except RetryTransaction as exc:
                if attempt == attempts - 1:
                    raise DatabaseError(f"gave up after {attempts} attempts: {exc}") from None
                time.sleep(min(2.0, 0.01 * (2 ** min(attempt, 8))) * (0.5 + random.random()))
                continue
            except (OperationalError, IntegrityError) as exc:
                retry = isinstance(exc, IntegrityError) or any(t in str(exc) for t in _RETRYABLE_TEXT)
                if not retry or attempt == attempts - 1:
                    if isinstance(exc, IntegrityError):
                        raise DatabaseError(f"conflicting concurrent change: {exc.orig}") from None
                    raise database_failure(exc, self._where()) from None
                time.sleep(min(2.0, 0.01 * (2 ** min(attempt, 8))) * (0.5 + random.random()))
            except DBAPIError as exc:  # a damaged file, a driver error: never a traceback
                raise database_failure(exc, self._where()) from None
            except OverflowError:  # an integer from outside (an id, a limit) past SQLite's 64 bits
                raise DatabaseError("a number too large for the catalog (over 2^63 - 1)",
                                    hint="check the ids and numbers given") from None
            except UnicodeEncodeError as exc:  # a lone surrogate: a non-UTF-8 argument or name
                bad = exc.object[max(0, exc.start - 20):exc.end + 20] if isinstance(exc.object, str) else ""
                raise DatabaseError(f"cannot store text that is not valid UTF-8 ({bad!r})",
                                    hint="give names, messages and metadata as UTF-8 text") from None
        raise AssertionError("unreachable")

    def read(self, fn: Callable[[Session], T]) -> T:
        return self.transact(fn, write=False)

    def apply(self, ops: Iterable) -> list:
        """Apply operations (see ``operations.py``) in one transaction; returns their results."""
        ops = list(ops)
        for op in ops:
            op.validate()
        return self.transact(lambda s: [op.apply(s, self) for op in ops])

    # --- reads ---------------------------------------------------------------------------
    def resolve(self, ref: str | Ref) -> E.Version:
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        from .version_files import with_files

        return self.read(lambda s: with_files(s, resolve_in(s, ref).to_entity(_adapter_name(s, ref))))

    def get_adapter(self, name: str) -> E.Adapter:
        def run(s: Session):
            row = s.scalar(select(AdapterRow).where(AdapterRow.name == check_name(name)))
            if row is None:
                raise NotFound(f"no adapter named {name!r}", hint="see `loradex list`")
            return row.to_entity()

        return self.read(run)

    def versions(self, name: str, *, include_deleted: bool = False) -> list[E.Version]:
        from .version_files import files_by_version

        def run(s: Session):
            adapter = adapter_row(s, name)
            q = select(VersionRow).where(VersionRow.adapter_id == adapter.id)
            if not include_deleted:
                q = q.where(VersionRow.deleted_at.is_(None))
            rows = s.scalars(q.order_by(VersionRow.sort_key)).all()
            files = files_by_version(s, [r.id for r in rows])  # multi-file versions' named files
            return [dataclasses.replace(r.to_entity(adapter.name), files=files[r.id]) if r.id in files
                    else r.to_entity(adapter.name) for r in rows]

        return self.read(run)

    def aliases(self, name: str) -> list[E.Alias]:
        def run(s: Session):
            adapter = adapter_row(s, name)
            rows = s.execute(
                select(AliasRow.name, VersionRow.version)
                .join(VersionRow, VersionRow.id == AliasRow.version_id)
                .where(AliasRow.adapter_id == adapter.id)
                .order_by(AliasRow.name)
            ).all()
            return [E.Alias(adapter.name, alias, version) for alias, version in rows]

        return self.read(run)

    def alias_history(self, name: str, alias: str) -> list[E.AliasEvent]:
        def run(s: Session):
            adapter = adapter_row(s, name)
            events = s.scalars(
                select(AliasEventRow)
                .where(AliasEventRow.adapter_id == adapter.id, AliasEventRow.alias == alias)
                .order_by(AliasEventRow.id)
            ).all()
            ids = {e.from_version_id for e in events} | {e.to_version_id for e in events}
            names = {vid: ref.split("@", 1)[1] for vid, ref in _version_names(s, ids).items()}
            return [
                E.AliasEvent(e.id, adapter.name, e.alias, e.action, names.get(e.from_version_id),
                             names.get(e.to_version_id), e.at, e.by, e.reason)
                for e in events
            ]

        return self.read(run)

    def lineage(self, ref: str) -> list[E.LineageEdge]:
        """Edges from the version to its parents, recursively (parents first found first)."""

        def run(s: Session):
            start = resolve_in(s, parse_ref(ref))
            edges, seen, todo = [], set(), [start.id]
            while todo:
                vid = todo.pop(0)
                if vid in seen:
                    continue
                seen.add(vid)
                for row in s.scalars(select(LineageRow).where(LineageRow.child_version_id == vid)
                                     .order_by(LineageRow.id)):
                    names = _version_names(s, {row.child_version_id, row.parent_version_id})
                    parent = names.get(row.parent_version_id) or row.parent_ref or "?"
                    edges.append(E.LineageEdge(names[row.child_version_id], parent, row.relation,
                                               dict(row.recipe or {}), row.created_at))
                    if row.parent_version_id:
                        todo.append(row.parent_version_id)
            return edges

        return self.read(run)

    def list_adapters(self) -> list[E.AdapterSummary]:
        """One summary per adapter: three set-based queries, whatever the number of versions."""

        def run(s: Session):
            latest = (
                select(VersionRow.adapter_id, func.max(VersionRow.sort_key).label("k"),
                       func.count(VersionRow.id).label("n"))
                .where(VersionRow.deleted_at.is_(None))
                .group_by(VersionRow.adapter_id)
                .subquery()
            )
            rows = s.execute(
                select(AdapterRow.name, AdapterRow.kind, AdapterRow.base, VersionRow.version,
                       VersionRow.size, latest.c.n)
                .select_from(AdapterRow)
                .outerjoin(latest, latest.c.adapter_id == AdapterRow.id)
                .outerjoin(VersionRow, (VersionRow.adapter_id == AdapterRow.id)
                           & (VersionRow.sort_key == latest.c.k) & VersionRow.deleted_at.is_(None))
                .order_by(AdapterRow.name)
            ).all()
            alias_rows = s.execute(
                select(AdapterRow.name, AliasRow.name, VersionRow.version)
                .join(AliasRow, AliasRow.adapter_id == AdapterRow.id)
                .join(VersionRow, VersionRow.id == AliasRow.version_id)
            ).all()
            aliases: dict[str, dict[str, str]] = {}
            for adapter, alias, version in alias_rows:
                aliases.setdefault(adapter, {})[alias] = version
            return [
                E.AdapterSummary(name, kind, base, version, n or 0, aliases.get(name, {}), size or 0)
                for name, kind, base, version, size, n in rows
            ]

        return self.read(run)


_HEAD_CACHE: dict[str, str] = {}
# What two first-use processes racing to create the schema see; anything else is not retried
# (a table that "already exists" once the other process is done means a revision edited by hand).
_RACE_TEXT = _RETRYABLE_TEXT + ("UNIQUE constraint", "duplicate key")
# SQLite's words for a failure → what the user should do about it.
_DB_FAILURES = (
    (("file is not a database", "malformed", "disk image"),
     "is damaged (corrupted or truncated)", "restore catalog.db from a backup"),
    (("disk is full", "database or disk is full"), "could not be written: the disk is full",
     "free some space and run the command again"),
    (("readonly database", "read-only", "attempt to write"), "is read-only",
     "make the loradex home writable, or work on a writable copy"),
    (("unable to open database file",), "cannot be opened",
     "check that the loradex home is a folder you can read and write, and catalog.db a file"),
    (("no such table", "no such column", "has no column", "already exists", "duplicate column"),
     "does not have the tables its schema revision says",
     "its schema revision was edited by hand or the file was replaced; restore catalog.db from a backup"),
)


def database_failure(exc: DBAPIError, where: str) -> DatabaseError:
    """A one-line ``DatabaseError`` for a driver exception: what happened and what to do."""
    text = " ".join(str(getattr(exc, "orig", exc) or exc).split())
    low = text.lower()
    for needles, what, hint in _DB_FAILURES:
        if any(n.lower() in low for n in needles):
            return DatabaseError(f"the catalog {where} {what} ({text})", hint=hint)
    return DatabaseError(f"catalog database error: {text}")


# An arbitrary 64-bit key naming "loradex schema migration" among PostgreSQL advisory locks.
_MIGRATION_LOCK_KEY = 0x6C6F7261646578  # "loradex"


def _serialise_migrations(conn) -> None:
    """Make concurrent first-use migrations take turns.

    SQLite needs nothing: the migration runs in a ``BEGIN IMMEDIATE`` transaction, which holds the
    database's write lock. PostgreSQL runs DDL under MVCC, so two processes meeting an empty
    database would both try ``CREATE TABLE alembic_version``; a transaction-scoped advisory lock
    makes the second wait until the first commits, after which alembic sees the schema at head
    and does nothing.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_KEY})")


def _known_revisions() -> frozenset:
    return revision_files(MIGRATIONS)[0]


def _cached_head(catalog: Catalog) -> str:
    """The newest migration: from the revision files (see ``light_reads.revision_files``), from
    alembic when they name several heads."""
    key = str(MIGRATIONS)
    if key not in _HEAD_CACHE:
        _HEAD_CACHE[key] = head_from_files(MIGRATIONS) or catalog.head_revision()
    return _HEAD_CACHE[key]


# --- helpers shared with operations.py ------------------------------------------------------
def adapter_row(s: Session, name: str) -> AdapterRow:
    row = s.scalar(select(AdapterRow).where(AdapterRow.name == name))
    if row is None:
        raise NotFound(f"no adapter named {name!r}", hint="see `loradex list`")
    return row


def latest_row(s: Session, adapter: AdapterRow) -> VersionRow | None:
    return s.scalar(
        select(VersionRow)
        .where(VersionRow.adapter_id == adapter.id, VersionRow.deleted_at.is_(None))
        .order_by(VersionRow.sort_key.desc())
        .limit(1)
    )


def resolve_in(s: Session, ref: Ref) -> VersionRow:
    if ref.is_hash:
        column = getattr(VersionRow, ref.hash_kind)
        rows = s.scalars(
            select(VersionRow).where(column.like(ref.hash_prefix + "%"), VersionRow.deleted_at.is_(None))
            .limit(20)
        ).all()
        if not rows:
            raise NotFound(f"no version with {ref.hash_kind} starting {ref.hash_prefix}")
        if len(rows) > 1:
            names = _version_names(s, {r.id for r in rows})
            listed = ", ".join(sorted(names.values()))
            raise AmbiguousRef(f"{ref} matches {len(rows)} versions: {listed}",
                               hint="use NAME@VERSION or a longer hash")
        return rows[0]
    adapter = adapter_row(s, ref.name)
    if ref.selector == LATEST:
        row = latest_row(s, adapter)
        if row is None:
            raise NotFound(f"{adapter.name} has no versions left", hint="add one with `loradex add`")
        return row
    if ref.is_version:
        row = s.scalar(select(VersionRow).where(VersionRow.adapter_id == adapter.id,
                                                VersionRow.version == ref.selector))
        if row is None:
            raise NotFound(f"{adapter.name} has no version {ref.selector}",
                           hint=f"see `loradex versions {adapter.name}`")
        if row.deleted_at is not None:
            raise NotFound(f"{adapter.name}@{ref.selector} was removed")
        return row
    alias = s.scalar(select(AliasRow).where(AliasRow.adapter_id == adapter.id, AliasRow.name == ref.selector))
    if alias is None:
        raise NotFound(f"{adapter.name} has no alias {ref.selector!r}",
                       hint=f"see `loradex alias list {adapter.name}`")
    return s.get(VersionRow, alias.version_id)


def _adapter_name(s: Session, ref: Ref) -> str:
    if not ref.is_hash:
        return ref.name
    row = resolve_in(s, ref)
    return s.get(AdapterRow, row.adapter_id).name


def _version_names(s: Session, ids: set) -> dict[int, str]:
    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    rows = s.execute(
        select(VersionRow.id, AdapterRow.name, VersionRow.version)
        .join(AdapterRow, AdapterRow.id == VersionRow.adapter_id)
        .where(VersionRow.id.in_(ids))
    ).all()
    return {vid: f"{name}@{version}" for vid, name, version in rows}
