"""Where the Hub server keeps its repositories' documents: ``repo.json``-like metadata, the refs
(branches and tags) and the immutable commit documents. ``RepoStore`` holds the Hub semantics;
a backend only stores, inside one per-repo transaction.

Backends (``REPO_BACKENDS``, chosen by ``choose_repo_backend``):

- ``file`` (default for a home on SQLite): JSON files under ``<hub>/repos/models/<ns>/<name>/``,
  a thread lock plus ``flock`` per repo; the same layout and behaviour as before backends existed.
- ``database``: three tables of the catalog database (migration ``0007_hub_repos``), so several
  ``loradex serve`` replicas on one PostgreSQL share the repos and keep nothing on local disk.
  A transaction takes ``SELECT … FOR UPDATE`` on the repo's row (PostgreSQL), and every ref
  change is a compare-and-swap (``UPDATE … WHERE target = <the value read>``; a new ref is an
  ``INSERT`` on the primary key), so two replicas racing on one push or tag cannot both win:
  the loser gets ``StaleParent``/``RefExists``, the Hub's conflict answers. Commit rows are
  inserted once and never updated.

The database backend needs a server database (PostgreSQL): on SQLite its transaction would hold
the database's single write lock while a ref hook writes the catalog from another connection.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from pathlib import Path
from typing import Callable, Iterator, Protocol

from ...files.atomic_files import atomic_output
from .protocol_errors import RefExists, RepoNotFound, RevisionNotFound, StaleParent

HUB_REPOS_ENV = "LORADEX_HUB_REPOS"


class RepoTransaction(Protocol):
    """One repo, locked against other writers until the transaction ends; everything written is
    kept only if the block exits normally (file backend: each write is atomic on its own)."""

    def exists(self) -> bool: ...
    def meta(self) -> dict: ...
    def refs(self) -> dict: ...  # {"branches": {name: oid}, "tags": {name: {"target", "message"}}}
    def load_commit(self, oid: str) -> dict: ...
    def put_commit(self, oid: str, document: dict) -> None: ...
    def put_refs(self, refs: dict) -> None: ...
    def put_meta(self, meta: dict) -> None: ...
    def delete(self) -> None: ...


class RepoBackend(Protocol):
    name: str

    def transaction(self, repo_id: str) -> contextlib.AbstractContextManager[RepoTransaction]: ...
    def exists(self, repo_id: str) -> bool: ...
    def meta(self, repo_id: str) -> dict: ...  # RepoNotFound
    def refs(self, repo_id: str) -> dict: ...  # RepoNotFound
    def load_commit(self, repo_id: str, oid: str) -> dict: ...  # RevisionNotFound
    def repo_ids(self) -> list[str]: ...


REPO_BACKENDS: dict[str, Callable[..., RepoBackend]] = {}


def register_repo_backend(name: str):
    def deco(factory):
        REPO_BACKENDS[name] = factory
        return factory

    return deco


def choose_repo_backend(hub_root: Path, catalog=None) -> RepoBackend:
    """``$LORADEX_HUB_REPOS`` (``file`` or ``database``) when set; else ``database`` when the
    server has a catalog on a server database (PostgreSQL: the stateless-replica deployment),
    ``file`` otherwise."""
    from ...errors import UsageError

    wanted = os.environ.get(HUB_REPOS_ENV, "").strip().lower()
    if wanted and wanted not in REPO_BACKENDS:
        raise UsageError(f"{HUB_REPOS_ENV}={wanted[:40]!r}: write one of {', '.join(sorted(REPO_BACKENDS))}")
    if not wanted:
        wanted = "database" if catalog is not None and not catalog.url.startswith("sqlite") else "file"
    return REPO_BACKENDS[wanted](hub_root=hub_root, catalog=catalog)


# --- file backend --------------------------------------------------------------------------------
def _split(repo_id: str) -> tuple[str, str]:
    from .repo_store import validate_repo_id

    return validate_repo_id(repo_id)


@register_repo_backend("file")
class FileRepoBackend:
    name = "file"

    def __init__(self, hub_root: Path, catalog=None):
        self.root = Path(hub_root) / "repos" / "models"
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def repo_dir(self, repo_id: str) -> Path:
        ns, name = _split(repo_id)
        return self.root / ns / name

    @contextlib.contextmanager
    def transaction(self, repo_id: str) -> Iterator["_FileTransaction"]:
        directory = self.repo_dir(repo_id)
        with self._locks_guard:
            lock = self._locks.setdefault(repo_id, threading.Lock())
        with lock:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield _FileTransaction(self, repo_id, directory)
            finally:
                os.close(fd)

    def exists(self, repo_id: str) -> bool:
        return (self.repo_dir(repo_id) / "repo.json").is_file()

    def _require(self, repo_id: str) -> Path:
        directory = self.repo_dir(repo_id)
        if not (directory / "repo.json").is_file():
            raise RepoNotFound(f"Repository not found: {repo_id}")
        return directory

    def meta(self, repo_id: str) -> dict:
        from .repo_store import REPO_DOC, stored_document

        return stored_document(self._require(repo_id) / "repo.json", f"{repo_id} repo.json", REPO_DOC)

    def refs(self, repo_id: str) -> dict:
        from .repo_store import REFS_DOC, stored_document

        return stored_document(self._require(repo_id) / "refs.json", f"{repo_id} refs.json", REFS_DOC)

    def load_commit(self, repo_id: str, oid: str) -> dict:
        from .repo_store import COMMIT_DOC, stored_document

        path = self._require(repo_id) / "commits" / f"{oid}.json"
        try:
            return stored_document(path, f"{repo_id} commit {oid[:12]}", COMMIT_DOC)
        except FileNotFoundError:
            raise RevisionNotFound(f"Invalid rev id: {oid}") from None

    def repo_ids(self) -> list[str]:
        from .repo_store import REPO_PART_RE

        out = []
        if not self.root.is_dir():
            return out
        for ns in sorted(self.root.iterdir()):
            if not ns.is_dir() or not REPO_PART_RE.fullmatch(ns.name):
                continue
            for repo in sorted(ns.iterdir()):
                if REPO_PART_RE.fullmatch(repo.name) and (repo / "repo.json").is_file():
                    out.append(f"{ns.name}/{repo.name}")
        return out


class _FileTransaction:
    def __init__(self, backend: FileRepoBackend, repo_id: str, directory: Path):
        self.backend, self.repo_id, self.directory = backend, repo_id, directory

    def exists(self) -> bool:
        return (self.directory / "repo.json").is_file()

    def meta(self) -> dict:
        return self.backend.meta(self.repo_id)

    def refs(self) -> dict:
        return self.backend.refs(self.repo_id)

    def load_commit(self, oid: str) -> dict:
        return self.backend.load_commit(self.repo_id, oid)

    def put_commit(self, oid: str, document: dict) -> None:
        path = self.directory / "commits" / f"{oid}.json"
        if not path.exists():
            with atomic_output(path, "w") as fh:
                json.dump(document, fh, sort_keys=True)

    def put_refs(self, refs: dict) -> None:
        with atomic_output(self.directory / "refs.json", "w") as fh:
            json.dump({"branches": refs["branches"], "tags": refs["tags"]}, fh, indent=1, sort_keys=True)

    def put_meta(self, meta: dict) -> None:
        # written last by create_repo: a repo "exists" only once it is complete
        with atomic_output(self.directory / "repo.json", "w") as fh:
            json.dump(meta, fh)

    def delete(self) -> None:
        import shutil

        (self.directory / "repo.json").unlink()  # gone for readers first, then the rest
        for child in self.directory.iterdir():
            if child.name != ".lock":
                shutil.rmtree(child) if child.is_dir() else child.unlink()


# --- database backend ----------------------------------------------------------------------------
@register_repo_backend("database")
class DatabaseRepoBackend:
    name = "database"

    def __init__(self, hub_root: Path | None = None, catalog=None):
        from ...errors import UsageError

        if catalog is None:
            raise UsageError("Hub repos in the database need the server's catalog (loradex serve)")
        if catalog.url.startswith("sqlite"):
            raise UsageError(f"{HUB_REPOS_ENV}=database needs a server database (LORADEX_DB=postgresql+psycopg://…); "
                             "with the SQLite catalog the Hub's repos stay in files")
        self.catalog = catalog
        self.engine = catalog.engine

    @contextlib.contextmanager
    def _connection(self, write: bool):
        from sqlalchemy.exc import DBAPIError

        from ...catalog.store import database_failure

        try:
            with self.engine.connect().execution_options(loradex_write=write) as conn:
                yield conn
        except DBAPIError as exc:
            raise database_failure(exc, self.catalog._where()) from None

    @contextlib.contextmanager
    def transaction(self, repo_id: str) -> Iterator["_DatabaseTransaction"]:
        from sqlalchemy import select
        from sqlalchemy.exc import IntegrityError

        from ...catalog.db_schema import HubRepoRow

        ns, name = _split(repo_id)
        with self._connection(write=True) as conn:
            try:
                row = conn.execute(select(HubRepoRow.meta).where(HubRepoRow.repo_id == repo_id)
                                   .with_for_update()).first()
                txn = _DatabaseTransaction(self, conn, repo_id, ns, name, row[0] if row else None)
                yield txn
                conn.commit()
            except IntegrityError:
                conn.rollback()
                # a concurrent writer inserted the same repo or ref first: the protocol's conflict
                raise RefExists(f"{repo_id}: a concurrent request changed the same reference first") from None
            except BaseException:
                conn.rollback()
                raise

    def exists(self, repo_id: str) -> bool:
        from sqlalchemy import select

        from ...catalog.db_schema import HubRepoRow

        _split(repo_id)
        with self._connection(write=False) as conn:
            return conn.execute(select(HubRepoRow.repo_id).where(HubRepoRow.repo_id == repo_id)).first() is not None

    def meta(self, repo_id: str) -> dict:
        with self._connection(write=False) as conn:
            return _meta_in(conn, repo_id)

    def refs(self, repo_id: str) -> dict:
        with self._connection(write=False) as conn:
            _meta_in(conn, repo_id)
            return _refs_in(conn, repo_id)

    def load_commit(self, repo_id: str, oid: str) -> dict:
        with self._connection(write=False) as conn:
            return _commit_in(conn, repo_id, oid)

    def repo_ids(self) -> list[str]:
        from sqlalchemy import select

        from ...catalog.db_schema import HubRepoRow

        with self._connection(write=False) as conn:
            rows = conn.execute(select(HubRepoRow.namespace, HubRepoRow.name)).all()
        return [f"{ns}/{name}" for ns, name in sorted(rows)]  # the file backend's order, not the collation's


def _meta_in(conn, repo_id: str) -> dict:
    from sqlalchemy import select

    from ...catalog.db_schema import HubRepoRow
    from .repo_store import REPO_DOC

    _split(repo_id)
    row = conn.execute(select(HubRepoRow.meta).where(HubRepoRow.repo_id == repo_id)).first()
    if row is None:
        raise RepoNotFound(f"Repository not found: {repo_id}")
    return _stored_text(row[0], f"{repo_id} repo metadata", REPO_DOC)


def _refs_in(conn, repo_id: str) -> dict:
    from sqlalchemy import select

    from ...catalog.db_schema import HubRefRow

    refs: dict = {"branches": {}, "tags": {}}
    for kind, name, target, message in conn.execute(
            select(HubRefRow.kind, HubRefRow.name, HubRefRow.target, HubRefRow.message)
            .where(HubRefRow.repo_id == repo_id)):
        if kind == "branch":
            refs["branches"][name] = target
        else:
            refs["tags"][name] = {"target": target, "message": message}
    return refs


def _commit_in(conn, repo_id: str, oid: str) -> dict:
    from sqlalchemy import select

    from ...catalog.db_schema import HubCommitRow
    from .repo_store import COMMIT_DOC

    row = conn.execute(select(HubCommitRow.document).where(HubCommitRow.repo_id == repo_id,
                                                           HubCommitRow.oid == oid)).first()
    if row is None:
        raise RevisionNotFound(f"Invalid rev id: {oid}")
    return _stored_text(row[0], f"{repo_id} commit {oid[:12]}", COMMIT_DOC)


def _stored_text(text: str, source: str, schema: dict):
    from ... import untrusted
    from .repo_store import STORED_DOC_MAX_BYTES

    data = text.encode()
    value = untrusted.parse_json(data, source, max_bytes=STORED_DOC_MAX_BYTES, max_nodes=10_000_000)
    return untrusted.check_schema(value, schema, source)


class _DatabaseTransaction:
    def __init__(self, backend: DatabaseRepoBackend, conn, repo_id: str, ns: str, name: str, meta_text):
        self.backend, self.conn, self.repo_id, self.ns, self.name = backend, conn, repo_id, ns, name
        self._exists = meta_text is not None
        self._refs_read: dict | None = None

    def exists(self) -> bool:
        return self._exists

    def meta(self) -> dict:
        return _meta_in(self.conn, self.repo_id)

    def refs(self) -> dict:
        _meta_in(self.conn, self.repo_id)
        refs = _refs_in(self.conn, self.repo_id)
        self._refs_read = json.loads(json.dumps(refs))  # what put_refs compares against
        return refs

    def load_commit(self, oid: str) -> dict:
        return _commit_in(self.conn, self.repo_id, oid)

    def put_commit(self, oid: str, document: dict) -> None:
        from sqlalchemy import insert, select

        from ...catalog.db_schema import HubCommitRow

        present = self.conn.execute(select(HubCommitRow.oid).where(HubCommitRow.repo_id == self.repo_id,
                                                                   HubCommitRow.oid == oid)).first()
        if present is None:  # the oid is the hash of the document: an existing row is this commit
            self.conn.execute(insert(HubCommitRow).values(
                repo_id=self.repo_id, oid=oid, document=json.dumps(document, sort_keys=True)))

    def put_refs(self, refs: dict) -> None:
        """Write the difference to the refs read in this transaction, each change a
        compare-and-swap on the value read (``StaleParent`` when another writer got there first)."""
        from sqlalchemy import and_, delete, insert, update

        from ...catalog.db_schema import HubRefRow

        before = self._refs_read or {"branches": {}, "tags": {}}
        old = _flat(before)
        new = _flat(refs)
        table = HubRefRow.__table__
        for key in old.keys() - new.keys():
            kind, name = key
            gone = self.conn.execute(delete(table).where(and_(
                table.c.repo_id == self.repo_id, table.c.kind == kind, table.c.name == name,
                table.c.target == old[key][0])))
            if gone.rowcount != 1:
                raise StaleParent(f"{kind} {name} of {self.repo_id} changed concurrently; retry")
        for key in new.keys() & old.keys():
            if new[key] == old[key]:
                continue
            kind, name = key
            moved = self.conn.execute(update(table).where(and_(
                table.c.repo_id == self.repo_id, table.c.kind == kind, table.c.name == name,
                table.c.target == old[key][0])).values(target=new[key][0], message=new[key][1]))
            if moved.rowcount != 1:
                raise StaleParent(f"{kind} {name} of {self.repo_id} moved concurrently (expected {old[key][0]}); "
                                  "fetch the new head and retry")
        for key in new.keys() - old.keys():
            kind, name = key
            self.conn.execute(insert(table).values(repo_id=self.repo_id, kind=kind, name=name,
                                                   target=new[key][0], message=new[key][1]))
        self._refs_read = json.loads(json.dumps(refs))

    def put_meta(self, meta: dict) -> None:
        from sqlalchemy import insert, update

        from ...catalog.db_schema import HubRepoRow

        text = json.dumps(meta, sort_keys=True)
        if self._exists:
            self.conn.execute(update(HubRepoRow).where(HubRepoRow.repo_id == self.repo_id).values(meta=text))
        else:
            self.conn.execute(insert(HubRepoRow).values(repo_id=self.repo_id, namespace=self.ns, name=self.name,
                                                        meta=text))
            self._exists = True

    def delete(self) -> None:
        from sqlalchemy import delete

        from ...catalog.db_schema import HubCommitRow, HubRefRow, HubRepoRow

        for row in (HubRefRow, HubCommitRow, HubRepoRow):
            self.conn.execute(delete(row).where(row.repo_id == self.repo_id))
        self._exists = False


def _flat(refs: dict) -> dict[tuple[str, str], tuple[str, str]]:
    out = {("branch", name): (oid, "") for name, oid in refs["branches"].items()}
    out.update({("tag", name): (tag["target"], tag.get("message", "") or "") for name, tag in refs["tags"].items()})
    return out
