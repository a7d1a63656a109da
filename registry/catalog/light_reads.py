"""The read commands' path to an SQLite catalog that is already at the newest schema: the
standard library's ``sqlite3``, no SQLAlchemy.

Importing SQLAlchemy (and mapping ``db_schema``) takes longer than ``loradex list`` takes to read
100,000 versions, so ``list``, ``show``, ``versions``, ``lineage`` and ``search`` open the catalog
through ``open_light_reader`` (``search`` runs its own statements through ``read_sql``). It gives a ``LightReader`` only when nothing but reading is needed: the
default SQLite catalog (no ``LORADEX_DB``) exists and records exactly the newest schema
revision (the head, read from the migration files without importing alembic). Anything else — no
catalog yet, an older schema to upgrade, another database, a damaged file — gives ``None`` and
the caller opens ``Catalog``, which creates, upgrades or explains.

Each method answers what the ``Catalog`` method of the same name answers (same entities, same
order, same errors); they run the SQL that SQLAlchemy emits for those methods, and
tests/test_light_reads.py compares the two on one catalog.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from datetime import datetime
from pathlib import Path

from . import entities as E
from ..errors import AmbiguousRef, NotFound
from ..paths import loradex_home, prepare_home, read_only_sqlite_uri

# .refs (and semver, ~10 ms) is imported by the methods that parse refs: `list` needs neither.

MIGRATIONS = Path(__file__).parent / "migrations"
_REVISIONS: dict[str, tuple[frozenset, frozenset]] = {}

_VERSION_COLUMNS = ("versions.id, versions.adapter_id, versions.version, versions.sha256, versions.autov1, "
                    "versions.autov2, versions.autov3, versions.size, versions.file_format, "
                    "versions.file_name, versions.probe, versions.file_metadata, versions.trigger_words, "
                    "versions.extra, versions.message, versions.created_at, versions.created_by, "
                    "versions.deleted_at")


# --- the schema head, from the migration files ----------------------------------------------
def revision_files(folder: Path = MIGRATIONS) -> tuple[frozenset, frozenset]:
    """(revisions, the revisions they follow), read from the revision files' ``revision`` /
    ``down_revision`` lines: a directory listing instead of importing alembic (~100 ms)."""
    key = str(folder)
    if key not in _REVISIONS:
        revisions, parents = set(), set()
        for path in (folder / "versions").glob("*.py"):
            text = path.read_text(encoding="utf-8")
            rev = re.search(r"^revision\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
            down = re.search(r"^down_revision\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
            if rev:
                revisions.add(rev.group(1))
            if down:
                parents.add(down.group(1))
        _REVISIONS[key] = (frozenset(revisions), frozenset(parents))
    return _REVISIONS[key]


def head_from_files(folder: Path = MIGRATIONS) -> str | None:
    """The one revision no other follows; None when the files do not say (several heads), for
    the caller to ask alembic."""
    revisions, parents = revision_files(folder)
    heads = revisions - parents
    return next(iter(heads)) if len(heads) == 1 else None


# --- opening --------------------------------------------------------------------------------
def open_light_reader(home: str | os.PathLike | None = None) -> "LightReader | None":
    """A ``LightReader`` on the home's catalog, or None when ``Catalog`` must open it (see the
    module's docstring). Home errors (not a folder, unreadable) are raised as ``Catalog`` raises
    them."""
    if os.environ.get("LORADEX_DB"):
        return None
    path = loradex_home(home)
    read_only = prepare_home(path)
    db = path / "catalog.db"
    head = head_from_files()
    if head is None or not db.is_file():
        return None
    try:
        if read_only:
            conn = sqlite3.connect(read_only_sqlite_uri(db), uri=True, timeout=60, check_same_thread=False)
        else:
            conn = sqlite3.connect(str(db), timeout=60)
    except sqlite3.Error:
        return None
    conn.isolation_level = None  # transactions are begun explicitly, as Catalog does
    try:
        conn.execute("PRAGMA busy_timeout=60000")
        conn.execute("PRAGMA mmap_size=1073741824")  # reads straight from the page cache: ~25% off a full scan
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:  # no schema yet, a damaged file: Catalog says what to do
        conn.close()
        return None
    if rows != [(head,)]:
        conn.close()
        return None
    return LightReader(path, conn)


def _datetime(value):
    return None if value is None else datetime.fromisoformat(value)


def _json(value):
    if value is None or not isinstance(value, (str, bytes)):  # SQLAlchemy's SQLite JSON lets numbers be
        return value
    return json.loads(value)


class SQLiteSQL:
    """``search.SQL`` on a sqlite3 connection: SQL text with ``:name`` parameters, rows as tuples."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def rows(self, sql: str, params: dict | None = None) -> list[tuple]:
        return self._conn.execute(sql, params or {}).fetchall()


class LightReader:
    """Reads of one SQLite catalog through ``sqlite3`` (see the module's docstring)."""

    def __init__(self, home: Path, conn: sqlite3.Connection):
        self.home = home
        self._conn = conn
        self._catalog = None  # opened when a read must be handed over (see _read)

    def close(self) -> None:
        self._conn.close()

    def _read(self, fn, method, *args, **kwargs):
        """``fn(connection)`` in one read transaction (one snapshot, as ``Catalog.read``). A
        failure that is not an answer (a locked or damaged database, text or a number sqlite3
        cannot bind) is handed to ``Catalog``: its ``method(*args, **kwargs)`` (or
        ``method(catalog)`` when ``method`` is a function) retries, or raises the error the
        catalog's other commands raise."""
        conn = self._conn
        try:
            conn.execute("BEGIN DEFERRED")
            try:
                return fn(conn)
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
        except (sqlite3.Error, UnicodeError, OverflowError):
            if self._catalog is None:
                from .store import Catalog

                self._catalog = Catalog(self.home)
            if callable(method):
                return method(self._catalog)
            return getattr(self._catalog, method)(*args, **kwargs)

    def read_sql(self, fn, handover):
        """``fn(SQLiteSQL)``: SQL text with ``:name`` parameters run in one read transaction
        (``search.search_catalog`` runs its statements so); ``handover(catalog)`` answers
        instead when sqlite3 cannot (see ``_read``)."""
        return self._read(lambda c: fn(SQLiteSQL(c)), handover)

    # --- the reads Catalog has ---------------------------------------------------------------
    def list_adapters(self) -> list[E.AdapterSummary]:
        def run(c):
            # One pass over ix_versions_live_latest: with exactly one max() in the query, SQLite
            # takes the bare columns (version, size) from the row holding the maximum sort_key
            # (documented; https://sqlite.org/lang_select.html#bareagg), so the newest live version
            # needs no second join back into versions (Catalog.list_adapters' portable form does).
            rows = c.execute(
                "SELECT a.name, a.kind, a.base, g.version, g.size, g.n FROM adapters a LEFT JOIN "
                "(SELECT adapter_id, max(sort_key) AS k, version, size, count(*) AS n FROM versions "
                "WHERE deleted_at IS NULL GROUP BY adapter_id) g ON g.adapter_id = a.id "
                "ORDER BY a.name").fetchall()
            alias_rows = c.execute(
                "SELECT adapters.name, aliases.name AS name_1, versions.version FROM adapters "
                "JOIN aliases ON aliases.adapter_id = adapters.id "
                "JOIN versions ON versions.id = aliases.version_id").fetchall()
            return rows, alias_rows

        rows, alias_rows = self._read(run, "list_adapters")
        aliases: dict[str, dict[str, str]] = {}
        for adapter, alias, version in alias_rows:
            aliases.setdefault(adapter, {})[alias] = version
        summary = E.AdapterSummary
        return [summary(name, kind, base, version, n or 0, aliases.get(name, {}), size or 0)
                for name, kind, base, version, size, n in rows]

    def resolve(self, ref) -> E.Version:
        from .refs import parse_ref

        ref = parse_ref(ref) if isinstance(ref, str) else ref
        return self._read(lambda c: self._resolve_in(c, ref), "resolve", ref)

    def versions(self, name: str, *, include_deleted: bool = False) -> list[E.Version]:
        def run(c):
            adapter_id, adapter_name = self._adapter(c, name)
            rows = c.execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions WHERE versions.adapter_id = ?"
                + ("" if include_deleted else " AND versions.deleted_at IS NULL")
                + " ORDER BY versions.sort_key", (adapter_id,)).fetchall()
            multi = {vid for (vid,) in c.execute(  # versions holding several files: one query for all
                "SELECT DISTINCT version_files.version_id FROM version_files JOIN versions "
                "ON versions.id = version_files.version_id WHERE versions.adapter_id = ?", (adapter_id,))}
            return [self._with_files(c, v) if v.id in multi else v
                    for v in (self._version(r, adapter_name) for r in rows)]

        return self._read(run, "versions", name, include_deleted=include_deleted)

    def aliases(self, name: str) -> list[E.Alias]:
        def run(c):
            adapter_id, adapter_name = self._adapter(c, name)
            rows = c.execute(
                "SELECT aliases.name, versions.version FROM aliases "
                "JOIN versions ON versions.id = aliases.version_id "
                "WHERE aliases.adapter_id = ? ORDER BY aliases.name", (adapter_id,)).fetchall()
            return [E.Alias(adapter_name, alias, version) for alias, version in rows]

        return self._read(run, "aliases", name)

    def lineage(self, ref: str) -> list[E.LineageEdge]:
        """Edges from the version to its parents, recursively (parents first found first)."""

        from .refs import parse_ref

        def run(c):
            start = self._resolve_row(c, parse_ref(ref))
            edges, seen, todo = [], set(), [start[0]]
            while todo:
                vid = todo.pop(0)
                if vid in seen:
                    continue
                seen.add(vid)
                rows = c.execute(
                    "SELECT lineage.child_version_id, lineage.parent_version_id, lineage.parent_ref, "
                    "lineage.relation, lineage.recipe, lineage.created_at FROM lineage "
                    "WHERE lineage.child_version_id = ? ORDER BY lineage.id", (vid,)).fetchall()
                for child_id, parent_id, parent_ref, relation, recipe, created_at in rows:
                    names = self._version_names(c, {child_id, parent_id})
                    parent = names.get(parent_id) or parent_ref or "?"
                    edges.append(E.LineageEdge(names[child_id], parent, relation,
                                               dict(_json(recipe) or {}), _datetime(created_at)))
                    if parent_id:
                        todo.append(parent_id)
            return edges

        return self._read(run, "lineage", ref)

    # --- helpers (store.py's resolve_in, adapter_row, _version_names) -------------------------
    @staticmethod
    def _adapter(c, name: str) -> tuple[int, str]:
        row = c.execute("SELECT adapters.id, adapters.name FROM adapters WHERE adapters.name = ?",
                        (name,)).fetchone()
        if row is None:
            raise NotFound(f"no adapter named {name!r}", hint="see `loradex list`")
        return row

    @staticmethod
    def _version(row, adapter_name: str) -> E.Version:
        (vid, _adapter_id, version, sha256, autov1, autov2, autov3, size, file_format, file_name,
         probe, file_metadata, trigger_words, extra, message, created_at, created_by, deleted_at) = row
        return E.Version(
            id=vid, adapter=adapter_name, version=version, sha256=sha256, autov1=autov1, autov2=autov2,
            autov3=autov3, size=size, file_format=file_format, file_name=file_name,
            probe=dict(_json(probe) or {}), file_metadata=dict(_json(file_metadata) or {}),
            trigger_words=tuple(_json(trigger_words) or ()), extra=dict(_json(extra) or {}),
            message=message, created_at=_datetime(created_at), created_by=created_by,
            deleted=deleted_at is not None)

    def _resolve_in(self, c, ref) -> E.Version:
        row = self._resolve_row(c, ref)
        if ref.is_hash:
            name = c.execute("SELECT adapters.name FROM adapters WHERE adapters.id = ?", (row[1],)).fetchone()[0]
        else:
            name = ref.name
        return self._with_files(c, self._version(row, name))

    @staticmethod
    def _with_files(c, version: E.Version) -> E.Version:
        """A multi-file version's named files (``version_files``, primary first)."""
        import dataclasses

        rows = c.execute("SELECT name, file_name, sha256, size, file_format, probe FROM version_files "
                         "WHERE version_id = ? ORDER BY position", (version.id,)).fetchall()
        if not rows:
            return version
        files = tuple(E.VersionFile(n, fn, sha, size, fmt, dict(_json(probe) or {}))
                      for n, fn, sha, size, fmt, probe in rows)
        return dataclasses.replace(version, files=files)

    def _resolve_row(self, c, ref) -> tuple:
        from .refs import LATEST

        if ref.is_hash:
            column = {"sha256": "sha256", "autov1": "autov1", "autov2": "autov2", "autov3": "autov3"}[ref.hash_kind]
            rows = c.execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions WHERE versions.{column} LIKE ? "
                "AND versions.deleted_at IS NULL LIMIT ? OFFSET ?", (ref.hash_prefix + "%", 20, 0)).fetchall()
            if not rows:
                raise NotFound(f"no version with {ref.hash_kind} starting {ref.hash_prefix}")
            if len(rows) > 1:
                names = self._version_names(c, {r[0] for r in rows})
                listed = ", ".join(sorted(names.values()))
                raise AmbiguousRef(f"{ref} matches {len(rows)} versions: {listed}",
                                   hint="use NAME@VERSION or a longer hash")
            return rows[0]
        adapter_id, adapter_name = self._adapter(c, ref.name)
        if ref.selector == LATEST:
            row = c.execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions WHERE versions.adapter_id = ? "
                "AND versions.deleted_at IS NULL ORDER BY versions.sort_key DESC LIMIT ? OFFSET ?",
                (adapter_id, 1, 0)).fetchone()
            if row is None:
                raise NotFound(f"{adapter_name} has no versions left", hint="add one with `loradex add`")
            return row
        if ref.is_version:
            row = c.execute(f"SELECT {_VERSION_COLUMNS} FROM versions WHERE versions.adapter_id = ? "
                            "AND versions.version = ?", (adapter_id, ref.selector)).fetchone()
            if row is None:
                raise NotFound(f"{adapter_name} has no version {ref.selector}",
                               hint=f"see `loradex versions {adapter_name}`")
            if row[-1] is not None:
                raise NotFound(f"{adapter_name}@{ref.selector} was removed")
            return row
        alias = c.execute("SELECT aliases.version_id FROM aliases WHERE aliases.adapter_id = ? "
                          "AND aliases.name = ?", (adapter_id, ref.selector)).fetchone()
        if alias is None:
            raise NotFound(f"{adapter_name} has no alias {ref.selector!r}",
                           hint=f"see `loradex alias list {adapter_name}`")
        return c.execute(f"SELECT {_VERSION_COLUMNS} FROM versions WHERE versions.id = ?", (alias[0],)).fetchone()

    @staticmethod
    def _version_names(c, ids: set) -> dict[int, str]:
        ids = sorted(i for i in ids if i is not None)
        if not ids:
            return {}
        rows = c.execute(
            "SELECT versions.id, adapters.name, versions.version FROM versions "
            "JOIN adapters ON adapters.id = versions.adapter_id "
            f"WHERE versions.id IN ({', '.join('?' * len(ids))})", ids).fetchall()
        return {vid: f"{name}@{version}" for vid, name, version in rows}
