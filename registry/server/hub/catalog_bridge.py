"""Pushed repos become catalog versions of the home ``loradex serve`` serves.

The Hub side of the server keeps repos in its own store (``<home>/mirror/hub/``); this bridge is
the ``RefHook`` that makes the two agree, so the Civitai-style API and every catalog command of the
server's home see what was pushed:

* a ``vX.Y.Z`` tag (what ``loradex push`` creates once a version's commit is in) registers
  ``<repo name>@X.Y.Z`` in the catalog: the adapter file's bytes go from the object store into the
  blob store (hardlinked where the file system allows, else copied; content-addressed either way),
  with kind, base, trigger words and description from the commit's ``loradex.json``, or from
  probing the file and reading the model card when the repo has none (``hub_manifest.version_facts``,
  the same rules as ``pull``). Provenance: the version's ``message`` says it was pushed, by whom
  and where; ``extra.hub`` = {repo_id, revision (the tag), commit, path, base_model, pushed_by};
  ``created_by`` is the pushing user the auth check named ("push" when it named none).
* a branch other than ``main`` created at a commit whose adapter file is a live version of that
  adapter moves the catalog alias of the branch's name there (aliases are mirrored as branches).
  A branch at any other commit, or whose name is no valid alias, is just a branch.

The repo commit is the source of truth, and the refs are written only after the catalog agreed:
the hook runs under the repo lock before ``refs.json`` changes, and a refusal (a different file
under a version number the catalog already has, a loradex manifest naming a file the commit does
not hold, an alias move the promotion gate refuses) fails the tag or branch request with a Hub
error (422; 503 when the home itself failed, e.g. disk full) and leaves the repo as it was. A
version tag on a commit whose adapter cannot be told (several ``.safetensors``, or none, and no
``loradex.json`` naming one) is ordinary release tagging: it stays a plain git tag, and the tag
answer's ``note`` says no catalog version was registered and why. A server killed between the
catalog commit and the refs write leaves a registered version whose tag is missing; the client's
retry re-creates the tag and the registration is then a no-op (idempotent: the same file under the
same number, or a tag on a commit whose file is already a version of the adapter, adds nothing).
Deleting a branch or tag changes nothing in the catalog (versions are immutable, alias history is
kept; ``push`` moves a branch by deleting and re-creating it).

Namespaces are walls. The adapter a repo feeds is named after the repo name alone, so ``team/style``
and ``evil/style`` both map to ``style``; the catalog keeps which namespace owns it: the namespace
of the repo its first pushed version came from (``extra.hub.repo_id`` of its oldest version with
``pushed_by``; versions are never deleted outright, so the record lasts). A version tag or an
alias branch from a repo of any other namespace is refused with the Hub's 403 before anything
is registered or moved, whatever the token (an unscoped admin token included: it may push to the
owning namespace instead). An adapter the server's home made itself (``add``, ``pull``) belongs to
no namespace: only a token without a namespace may push versions to it, and the first such push
gives it to the repo's namespace. Registrations are serialised across repos and server processes
(a lock), so two namespaces racing for a new adapter name cannot both claim it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path

from ...remotes import hub_manifest as M
from ...errors import InvalidFile, LoradexError, NotFound, UntrustedData
from ...catalog.refs import ALIAS_RE, LATEST, check_name, is_semver
from ...untrusted import read_json_file
from .protocol_errors import Forbidden, HubProtocolError
from .repo_store import Commit, RepoStore

FALLBACK_USER = "push"


class RegistrationRefused(HubProtocolError):
    """The served catalog refused what a tag or branch would publish; the ref was not written."""

    status = 422


class NamespaceWall(Forbidden):
    """A repo tried to publish to (version tag) or move an alias of (branch) an adapter that
    another namespace owns (403, as the Hub answers a write outside one's namespace)."""


class HubUser(str):
    """The user name a Hub request was authorised as (what commits record as author), carrying
    the namespace its token is limited to (None: a token that may write any namespace)."""

    namespace: str | None
    scope: str  # "read" or "write": what the token may do (whoami's role)

    def __new__(cls, name: str, namespace: str | None = None, scope: str = "write"):
        obj = super().__new__(cls, name)
        obj.namespace = namespace
        obj.scope = scope
        return obj


HOME_OWNED = "(home)"  # owner of an adapter no push created: the server's home itself


class RegistrationFailed(HubProtocolError):
    """The served home could not register (I/O error); the ref was not written. Worth a retry."""

    status = 503


def adapter_name_for(repo_id: str) -> str:
    """The catalog name of a repo's adapter: its repo name, lower-cased, with characters an
    adapter name cannot hold turned into '-' (``team/My_LoRA`` → ``my_lora``)."""
    name = repo_id.split("/")[-1].lower()
    name = re.sub(r"[^a-z0-9._-]+", "-", name).strip("-._") or "adapter"
    return check_name(name)


def version_of_tag(tag: str) -> str | None:
    return tag[1:] if tag.startswith("v") and is_semver(tag[1:]) else None


class CatalogBridge:
    """``RefHook`` registering pushed versions and alias branches in ``catalog``."""

    def __init__(self, catalog):
        self.catalog = catalog
        self._lock = threading.RLock()  # one registration at a time, across repos (ownership)
        self._depth = 0  # nesting of _serialised in the thread holding _lock

    @contextlib.contextmanager
    def _serialised(self):
        """One registration at a time across repos, threads and server processes on this home
        (a thread lock plus ``flock`` on ``<home>/mirror/.bridge.lock``; re-entrant, since a
        registration moves the aliases of branches already at its commit)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            lock_path = self.catalog.home / "mirror" / ".bridge.lock"
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._depth = 1
                yield
            finally:
                self._depth = 0
                os.close(fd)

    # --- RefHook ------------------------------------------------------------------------------
    def tag_created(self, store: RepoStore, repo_id: str, tag: str, commit: Commit, by: str) -> str | None:
        """Register the version a ``vX.Y.Z`` tag names; returns the note for the tag answer."""
        version = version_of_tag(tag)
        if version is None:
            return None  # not a version tag: a plain git name
        with _refusals(repo_id, tag), self._serialised():
            manifest = self._manifest(store, repo_id, commit, tag)
            if manifest is None and self._adapter_file(store, repo_id, commit, tag, None, required=False) is None \
                    and _version_files(commit, None) is None:
                return (f"{tag} is kept as a plain git tag; no catalog version was registered: the commit has "
                        f"{_count_safetensors(commit)} .safetensors files and no {M.MANIFEST_NAME} naming the "
                        f"adapter (commit a {M.MANIFEST_NAME} with {{\"file\": \"<path>\"}}, a {M.DIFFUSERS_FILE} "
                        "or a single .safetensors, then tag that commit)")
            name = adapter_name_for(repo_id)
            self.check_owner(repo_id, name, by, tag)
            registered = self.register(store, repo_id, version, tag, commit, by or FALLBACK_USER)
            return f"registered {name}@{getattr(registered, 'version', version)} in the server's catalog"

    def branch_set(self, store: RepoStore, repo_id: str, branch: str, commit: Commit, by: str) -> None:
        if branch == "main" or branch == LATEST or not ALIAS_RE.match(branch) or is_semver(branch):
            return
        with _refusals(repo_id, branch), self._serialised():
            name = adapter_name_for(repo_id)
            try:
                manifest = self._manifest(store, repo_id, commit, branch)
            except RegistrationRefused:
                return  # a commit with a broken loradex.json is no catalog version
            found = self._adapter_file(store, repo_id, commit, branch, manifest, required=False)
            target = self._live_version(name, found[1]) if found else None
            if target is None:
                return  # a branch at a commit that is no catalog version
            self.check_owner(repo_id, name, by, branch)
            current = {a.name: a.version for a in self.catalog.aliases(name)}
            if current.get(branch) == target.version:
                return
            from ...catalog.operations import MoveAlias

            self.catalog.apply([MoveAlias(target.ref, branch, user=by or FALLBACK_USER,
                                          reason=f"branch {branch} of {repo_id} set to {commit.oid[:12]}")])

    # --- ownership ------------------------------------------------------------------------------
    def owner_of(self, name: str) -> str | None:
        """The namespace owning adapter ``name``; ``HOME_OWNED`` for one no push created; None
        when the catalog has no such adapter."""
        try:
            versions = self.catalog.versions(name, include_deleted=True)
        except NotFound:
            return None
        pushed = [v for v in versions if isinstance((v.extra or {}).get("hub"), dict)
                  and "pushed_by" in v.extra["hub"] and isinstance(v.extra["hub"].get("repo_id"), str)]
        if not pushed:
            return HOME_OWNED
        first = min(pushed, key=lambda v: (_utc(v.created_at), v.id))
        return first.extra["hub"]["repo_id"].split("/")[0]

    def check_owner(self, repo_id: str, name: str, by: str, ref: str) -> None:
        """``NamespaceWall`` unless a version tag or alias branch of ``repo_id`` may touch adapter
        ``name`` (see the module docstring)."""
        namespace = repo_id.split("/")[0]
        owner = self.owner_of(name)
        if owner is None or owner == namespace:
            return
        if owner == HOME_OWNED:
            if getattr(by, "namespace", None) is None:
                return  # an unscoped token may publish the home's own adapters
            raise NamespaceWall(
                f"{repo_id}@{ref}: adapter {name!r} of this server belongs to its home, not to namespace "
                f"{namespace!r}; a token limited to a namespace cannot add versions to it or move its aliases",
                hint="push under another repo name (the adapter is named after the repo)")
        raise NamespaceWall(
            f"{repo_id}@{ref}: adapter {name!r} of this server is published from namespace {owner!r}; "
            f"repos of {namespace!r} cannot add versions to it or move its aliases",
            hint="push under another repo name (the adapter is named after the repo)")

    # --- registration ---------------------------------------------------------------------------
    def register(self, store: RepoStore, repo_id: str, version: str, tag: str, commit: Commit, by: str):
        """Register the adapter of ``commit`` as ``<repo name>@version``; returns the version
        (the existing one when this file is already a version of the adapter)."""
        from ...catalog.adding import add_file

        name = adapter_name_for(repo_id)
        manifest = self._manifest(store, repo_id, commit, tag)
        named = _version_files(commit, manifest)
        if named is not None:
            return self._register_files(store, repo_id, name, version, tag, commit, by, manifest, named)
        path, sha256 = self._adapter_file(store, repo_id, commit, tag, manifest)
        existing = self._live_version(name, sha256)
        if existing is not None:
            return existing  # same file under this number (a re-push), or the same commit re-tagged
        try:
            taken = self.catalog.resolve(f"{name}@{version}")
        except NotFound:
            taken = None
        if taken is not None:
            raise RegistrationRefused(
                f"{name}@{version} is already in this server's catalog with another file (sha256 "
                f"{taken.sha256[:12]}…, pushed file {sha256[:12]}…); a published version never changes",
                hint="bump the version and push that")
        front, body = self._model_card(store, commit)
        work = self.catalog.home / "tmp"
        work.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="hub-register-", dir=work) as tmp:
            local = _named_view(store.objects.path_for(sha256), Path(tmp) / Path(path).name)
            facts = M.version_facts(manifest, front, body, local)
            extra = {"hub": {"repo_id": repo_id, "revision": tag, "commit": commit.oid, "path": path,
                             "base_model": facts["base_model"], "pushed_by": by}}
            added = add_file(self.catalog, local, name=name, version=version, kind=facts["kind"],
                             base=facts["base"], triggers=facts["triggers"], description=facts["description"],
                             message=f"pushed to {repo_id}@{tag} ({commit.oid[:12]}) by {by}",
                             extra=extra, link=True, user=by)
        self._branches_at(store, repo_id, commit, by)
        return added.version

    def _branches_at(self, store: RepoStore, repo_id: str, commit: Commit, by: str) -> None:
        """Branches already at this commit (a branch made before the tag) become aliases now."""
        for branch, head in sorted(store.refs(repo_id).branches.items()):
            if head == commit.oid:
                self.branch_set(store, repo_id, branch, commit, by)

    def _register_files(self, store: RepoStore, repo_id: str, name: str, version: str, tag: str, commit: Commit,
                        by: str, manifest: dict | None, named: list[tuple[str, str, str]]):
        """``register`` for a multi-file version (a Wan 2.2 high/low-noise pair): every file the
        manifest names must be in the commit with the bytes it promises; ONE version holds them."""
        from ...catalog.adding import add_files

        for role, path, want in named:
            entry = commit.tree.get(path)
            if entry is None or entry.sha256 != want:
                raise RegistrationRefused(f"{repo_id}@{tag}: {M.MANIFEST_NAME} names {path!r} ({role}) with sha256 "
                                          f"{want[:12]}…, which the commit does not hold",
                                          hint="commit every file of the version with its manifest")
        existing = self._live_version(name, named[0][2])
        if existing is not None:
            return existing
        try:
            taken = self.catalog.resolve(f"{name}@{version}")
        except NotFound:
            taken = None
        if taken is not None:
            raise RegistrationRefused(f"{name}@{version} is already in this server's catalog with other files; "
                                      "a published version never changes", hint="bump the version and push that")
        front, body = self._model_card(store, commit)
        work = self.catalog.home / "tmp"
        work.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="hub-register-", dir=work) as tmp:
            views = [_named_view(store.objects.path_for(sha), Path(tmp) / path) for _, path, sha in named]
            facts = M.version_facts(manifest, front, body, views[0])
            extra = {"hub": {"repo_id": repo_id, "revision": tag, "commit": commit.oid, "path": named[0][1],
                             "paths": [p for _, p, _ in named], "base_model": facts["base_model"], "pushed_by": by}}
            added = add_files(self.catalog, views, roles=[r for r, _, _ in named], file_names=[p for _, p, _ in named],
                              name=name, version=version, kind=facts["kind"], base=facts["base"],
                              triggers=facts["triggers"], description=facts["description"],
                              message=f"pushed to {repo_id}@{tag} ({commit.oid[:12]}) by {by}",
                              extra=extra, link=True, user=by)
        self._branches_at(store, repo_id, commit, by)
        return added.version

    def _live_version(self, name: str, sha256: str):
        try:
            versions = self.catalog.versions(name)
        except NotFound:  # no such adapter yet
            return None
        return next((v for v in versions if v.sha256 == sha256), None)

    def _manifest(self, store: RepoStore, repo_id: str, commit: Commit, ref: str) -> dict | None:
        """The commit's loradex manifest; None when it has no ``loradex.json`` or one that is not a
        loradex manifest (a repo's own file, perhaps naming its adapter: ``_named_adapter``); a
        loradex manifest that does not check out is refused."""
        entry = commit.tree.get(M.MANIFEST_NAME)
        if entry is None or not isinstance(data := _json_or_none(store, entry), dict) \
                or data.get("schema") != M.MANIFEST_SCHEMA:
            return None
        try:
            return M.read_manifest(store.objects.path_for(entry.sha256))
        except (InvalidFile, UntrustedData) as exc:
            raise RegistrationRefused(f"{repo_id}@{ref}: {M.MANIFEST_NAME} is unreadable "
                                      f"({exc.message.split(': ', 1)[-1]})",
                                      hint=f"fix {M.MANIFEST_NAME} in a new commit and tag that") from None

    def _model_card(self, store: RepoStore, commit: Commit) -> tuple[dict, str]:
        entry = commit.tree.get(M.README_NAME)
        try:  # parse_yaml: no aliases, caps on size and depth (UntrustedData → a 422 via _refusals)
            return M.read_model_card(store.objects.path_for(entry.sha256) if entry else None)
        except RecursionError:
            raise RegistrationRefused(f"{M.README_NAME} front matter is nested too deeply") from None

    def _adapter_file(self, store: RepoStore, repo_id: str, commit: Commit, ref: str, manifest: dict | None,
                      *, required: bool = True) -> tuple[str, str] | None:
        """(path, sha256) of the commit's adapter file: the manifest's ``file.path`` (which must
        hold the bytes the manifest's hashes name), else the plain-repo rule of ``pull``. None
        (``required=False``) or ``RegistrationRefused`` when there is none."""
        if manifest is not None:
            path = manifest.get("file", {}).get("path")
            entry = commit.tree.get(path) if isinstance(path, str) else None
            want = M.manifest_file_sha256(manifest, path) if isinstance(path, str) else None
            if entry is None or entry.sha256 != want:
                if not required:
                    return None
                raise RegistrationRefused(
                    f"{repo_id}@{ref}: {M.MANIFEST_NAME} names {path!r} with sha256 {str(want)[:12]}…, "
                    "which the commit does not hold", hint="commit the adapter file with its manifest")
            return path, entry.sha256
        path = _named_adapter(store, commit) or M.plain_repo_adapter(sorted(commit.tree))
        if path is None:
            if not required:
                return None
            raise RegistrationRefused(
                f"{repo_id}@{ref}: cannot tell which file of commit {commit.oid[:12]} is the adapter, so "
                "the version tag cannot become a catalog version",
                hint=f"commit a {M.MANIFEST_NAME}, a {M.DIFFUSERS_FILE} or a single top-level .safetensors")
        return path, commit.tree[path].sha256


def _version_files(commit: Commit, manifest: dict | None) -> list[tuple[str, str, str]] | None:
    """[(role, path, sha256)] of a multi-file version in ``commit`` (the manifest's
    ``version_files``, or a plain repo's recognised pair: ``hub_manifest.plain_repo_pair``)."""
    if manifest is not None:
        return M.manifest_version_files(manifest)
    paths = sorted(commit.tree)
    if M.plain_repo_adapter(paths) is not None or M.MANIFEST_NAME in commit.tree:
        return None
    pair = M.plain_repo_pair(paths)
    return [(role, path, commit.tree[path].sha256) for role, path in pair] if pair else None


def _json_or_none(store: RepoStore, entry):
    try:
        return read_json_file(store.objects.path_for(entry.sha256))
    except (InvalidFile, UntrustedData):
        return None


def _named_adapter(store: RepoStore, commit: Commit) -> str | None:
    """The file a repo's own ``loradex.json`` names (``{"file": "x.safetensors"}`` or
    ``{"file": {"path": …}}``) when the commit holds it."""
    entry = commit.tree.get(M.MANIFEST_NAME)
    data = _json_or_none(store, entry) if entry is not None else None
    named = data.get("file") if isinstance(data, dict) else None
    if isinstance(named, dict):
        named = named.get("path")
    return named if isinstance(named, str) and named in commit.tree else None


def _count_safetensors(commit: Commit) -> int:
    return sum(1 for p in commit.tree if p.endswith(".safetensors"))


class _refusals:
    """Catalog errors → Hub errors naming the repo and ref (the client shows the message)."""

    def __init__(self, repo_id: str, ref: str):
        self.where = f"{repo_id}@{ref}"

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, HubProtocolError):
            return False
        if isinstance(exc, LoradexError):
            raise RegistrationRefused(f"{self.where} not registered in the server's catalog: {exc}") from None
        if isinstance(exc, OSError):
            raise RegistrationFailed(f"{self.where} not registered: the server's home failed "
                                     f"({os.strerror(exc.errno) if exc.errno else type(exc).__name__}); "
                                     "retry later") from None
        return False


def _utc(at: datetime | None) -> datetime:
    if at is None:
        return datetime.min.replace(tzinfo=timezone.utc)
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def _named_view(src: Path, dest: Path) -> Path:
    """``src`` (an object, no suffix) under the adapter's file name, for the probe and ``add``:
    a hardlink, else a symlink (``add --link`` follows it)."""
    try:
        os.link(src, dest)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
            raise
        os.symlink(src, dest)
    return dest


def install(app, catalog) -> CatalogBridge:
    """Register a bridge to ``catalog`` on the Hub app ``app`` (from ``hub_server.create_app``)."""
    bridge = CatalogBridge(catalog)
    app.state.hub.repos.ref_hooks.append(bridge)
    return bridge
