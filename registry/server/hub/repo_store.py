"""Repositories of the Hub server: commits, branches and tags, over a ``RepoBackend``
(``repo_backends``): JSON files under ``<hub>/repos`` (default), or tables of the catalog database
when ``loradex serve`` runs as stateless replicas on PostgreSQL (docs/SCALING.md).

The file backend's layout under ``<root>/hub/``::

    objects/sha256/ab/cdef…             file contents (see object_store.py)
    repos/models/<ns>/<name>/repo.json  {"id", "private", "createdAt"}
    repos/models/<ns>/<name>/refs.json  {"branches": {name: oid}, "tags": {name: {"target", "message"}}}
    repos/models/<ns>/<name>/commits/<oid>.json

A commit document holds its whole tree, ``{path: {sha256, size, lfs, blob_id}}``; ``blob_id`` is
what git (and the Hub's tree API) calls the file's oid: the git blob sha1 of the content for a
regular file, of the LFS pointer text for an LFS file. The commit oid is the sha1 of the
canonical JSON of the document, so it is 40 hex digits like a git commit id (the client checks
that pattern). Commits are immutable; every write runs in the backend's per-repo transaction
(file: a thread lock plus ``flock``, ``refs.json`` replaced atomically; database: the repo row
locked ``FOR UPDATE`` and each ref moved by compare-and-swap), so two writers — threads, server
processes, replicas — never both move one ref from the same value.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from .object_store import ObjectStore
from .protocol_errors import (BadRequest, EntryNotFound, RefExists, RepoNotFound, RevisionNotFound,
                              StaleParent, UnprocessableUpload)
from .repo_backends import FileRepoBackend, RepoBackend

REPO_PART_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")
REF_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/+-]{0,199}")
COMMIT_OID_RE = re.compile(r"[0-9a-f]{40}")
MAX_PATH_LEN = 1024
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub refuses regular (non-LFS) files above 10 MB

# What the Hub puts in a new repo's first commit, trimmed to the kinds of files adapters come
# with. Preupload answers "lfs" for paths matching a `filter=lfs` rule of the repo's own file.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle",
                    "*.npy", "*.npz", "*.h5", "*.onnx", "*.gguf", "*.msgpack", "*.model",
                    "*.zip", "*.tar", "*.gz", "*.tgz", "*.zst", "*.7z",
                    "*.png", "*.jpg", "*.jpeg", "*.webp", "*.gif")
)


def validate_repo_path(path: object) -> str:
    """A file path inside a repo, or ``BadRequest``: no traversal, no absolute or drive paths."""
    if not isinstance(path, str) or not path:
        raise BadRequest("file path must be a non-empty string")
    problems = []
    if "\x00" in path:
        problems.append("contains NUL")
    if "\\" in path:
        problems.append("contains a backslash")
    if path.startswith("/"):
        problems.append("is absolute")
    if re.match(r"[A-Za-z]:", path):
        problems.append("starts with a drive letter")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        problems.append("has an empty, '.' or '..' segment")
    if parts[0] == ".git":
        problems.append("is under .git/")
    if len(path) > MAX_PATH_LEN:
        problems.append(f"is longer than {MAX_PATH_LEN} characters")
    if any(ord(ch) < 32 for ch in path):
        problems.append("contains control characters")
    if problems:
        raise BadRequest(f"invalid file path {path!r}: " + ", ".join(problems))
    return path


def validate_repo_id(repo_id: str) -> tuple[str, str]:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(REPO_PART_RE.fullmatch(p) for p in parts) or ".." in repo_id:
        raise BadRequest(f"invalid repo id {repo_id!r}: expected namespace/name "
                         "(letters, digits, '.', '_', '-'; no '..')")
    return parts[0], parts[1]


def validate_ref_name(name: str) -> str:
    if (not REF_NAME_RE.fullmatch(name) or ".." in name or "//" in name or name.endswith(("/", ".lock"))
            or COMMIT_OID_RE.fullmatch(name) or name.startswith("refs/")):
        raise BadRequest(f"invalid branch or tag name {name!r}")
    return name


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class TreeEntry:
    sha256: str
    size: int
    lfs: bool
    blob_id: str

    @classmethod
    def regular(cls, data: bytes, sha256: str) -> "TreeEntry":
        return cls(sha256=sha256, size=len(data), lfs=False, blob_id=git_blob_sha1(data))

    @classmethod
    def lfs_file(cls, sha256: str, size: int) -> "TreeEntry":
        return cls(sha256=sha256, size=size, lfs=True, blob_id=git_blob_sha1(lfs_pointer(sha256, size)))

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))


@dataclass(frozen=True)
class Commit:
    oid: str
    parents: list[str]
    title: str
    message: str
    author: str
    date: str
    tree: dict[str, TreeEntry] = field(repr=False)

    def document(self) -> dict:
        return {"parents": self.parents, "title": self.title, "message": self.message,
                "author": self.author, "date": self.date,
                "tree": {path: asdict(entry) for path, entry in sorted(self.tree.items())}}

    @classmethod
    def create(cls, parents, title, message, author, tree) -> "Commit":
        draft = cls("", list(parents), title, message, author, utc_now(), dict(tree))
        oid = hashlib.sha1(json.dumps(draft.document(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        return cls(oid, draft.parents, title, message, author, draft.date, draft.tree)

    @classmethod
    def from_document(cls, oid: str, doc: dict) -> "Commit":
        tree = {path: TreeEntry(**entry) for path, entry in doc["tree"].items()}
        return cls(oid, doc["parents"], doc["title"], doc["message"], doc["author"], doc["date"], tree)

    def folders(self) -> set[str]:
        out = set()
        for path in self.tree:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                out.add("/".join(parts[:i]))
        return out

    def folder_oid(self, folder: str) -> str:
        prefix = folder + "/"
        listing = sorted((p, e.blob_id) for p, e in self.tree.items() if p.startswith(prefix))
        return hashlib.sha1(json.dumps(listing).encode()).hexdigest()


@dataclass(frozen=True)
class FileOp:
    """One line of a commit: add ``entry`` at ``path``, or delete a file / folder."""

    kind: str  # "add" | "delete_file" | "delete_folder"
    path: str
    entry: TreeEntry | None = None


@dataclass
class Refs:
    branches: dict[str, str]
    tags: dict[str, dict]  # name -> {"target": oid, "message": str}


class RefHook(Protocol):
    """Told about a tag or branch about to be written, inside the repo's lock and before
    ``refs.json`` changes: raising refuses the ref (the repo stays as it was). ``by`` is the user
    the server's auth check named. ``loradex serve`` registers ``catalog_bridge.CatalogBridge``."""

    def tag_created(self, store: "RepoStore", repo_id: str, tag: str, commit: Commit, by: str) -> str | None:
        """May return a note for the client (what the tag became)."""

    def branch_set(self, store: "RepoStore", repo_id: str, branch: str, commit: Commit, by: str) -> None: ...


class RepoStore:
    """The Hub semantics of repositories (commits, branches, tags) over a ``RepoBackend``
    (``repo_backends``): files under ``<hub>/repos`` by default, or the catalog database."""

    def __init__(self, hub_root: Path, objects: ObjectStore, ref_hooks: list[RefHook] | None = None,
                 backend: RepoBackend | None = None):
        self.backend: RepoBackend = backend or FileRepoBackend(hub_root)
        self.objects = objects
        self.ref_hooks: list[RefHook] = list(ref_hooks or [])

    # --- repos ------------------------------------------------------------------------------
    def exists(self, repo_id: str) -> bool:
        return self.backend.exists(repo_id)

    def require(self, repo_id: str) -> None:
        if not self.backend.exists(repo_id):
            raise RepoNotFound(f"Repository not found: {repo_id}")

    def create_repo(self, repo_id: str, *, private: bool, author: str) -> Commit:
        validate_repo_id(repo_id)
        with self.backend.transaction(repo_id) as txn:
            if txn.exists():
                raise RefExists(f"You already created this model repo: {repo_id}")
            data = DEFAULT_GITATTRIBUTES.encode()
            sha = self.objects.put_bytes(data)
            first = Commit.create([], "initial commit", "", author, {".gitattributes": TreeEntry.regular(data, sha)})
            txn.put_commit(first.oid, first.document())
            txn.put_refs({"branches": {"main": first.oid}, "tags": {}})
            txn.put_meta({"id": repo_id, "private": private, "createdAt": first.date})  # last: complete repo
            return first

    def repo_meta(self, repo_id: str) -> dict:
        return self.backend.meta(repo_id)

    def delete_repo(self, repo_id: str) -> None:
        with self.backend.transaction(repo_id) as txn:
            if not txn.exists():
                raise RepoNotFound(f"Repository not found: {repo_id}")
            txn.delete()

    # --- refs & commits ---------------------------------------------------------------------
    def refs(self, repo_id: str) -> Refs:
        data = self.backend.refs(repo_id)
        return Refs(branches=data["branches"], tags=data["tags"])

    @staticmethod
    def _txn_refs(txn) -> Refs:
        data = txn.refs()
        return Refs(branches=data["branches"], tags=data["tags"])

    @staticmethod
    def _put_refs(txn, refs: Refs) -> None:
        txn.put_refs({"branches": refs.branches, "tags": refs.tags})

    def load_commit(self, repo_id: str, oid: str) -> Commit:
        return Commit.from_document(oid, self.backend.load_commit(repo_id, oid))

    @staticmethod
    def _resolve_in(refs: Refs, revision: str) -> str:
        name = revision
        if name.startswith("refs/heads/") and name[11:] in refs.branches:
            return refs.branches[name[11:]]
        if name.startswith("refs/tags/") and name[10:] in refs.tags:
            return refs.tags[name[10:]]["target"]
        if name in refs.branches:
            return refs.branches[name]
        if name in refs.tags:
            return refs.tags[name]["target"]
        if COMMIT_OID_RE.fullmatch(name):
            return name
        raise RevisionNotFound(f"Invalid rev id: {revision}")

    def resolve(self, repo_id: str, revision: str) -> Commit:
        """A branch, a tag (also as ``refs/heads/…``/``refs/tags/…``) or a full commit oid."""
        return self.load_commit(repo_id, self._resolve_in(self.refs(repo_id), revision))

    def history(self, repo_id: str, revision: str) -> list[Commit]:
        """First-parent history, newest first."""
        out = [self.resolve(repo_id, revision)]
        while out[-1].parents:
            out.append(self.load_commit(repo_id, out[-1].parents[0]))
        return out

    def lfs_patterns(self, repo_id: str, revision: str) -> list[str]:
        """``filter=lfs`` patterns of ``.gitattributes`` at ``revision`` (default set if absent)."""
        try:
            commit = self.resolve(repo_id, revision)
        except RevisionNotFound:
            text = DEFAULT_GITATTRIBUTES
        else:
            entry = commit.tree.get(".gitattributes")
            if entry is None:
                return []
            with self.objects.open(entry.sha256) as fh:
                text = fh.read().decode("utf-8", "replace")
        patterns = []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) >= 2 and not line.lstrip().startswith("#") and "filter=lfs" in fields[1:]:
                patterns.append(fields[0])
        return patterns

    def commit(self, repo_id: str, branch: str, ops: list[FileOp], *, title: str, message: str,
               author: str, parent_commit: str | None = None) -> Commit:
        # objects are checked before the repo is locked (a store round trip each; the Hub's objects
        # are never deleted), so concurrent writers of one repo wait only for the ref update
        for op in ops:
            if op.kind == "add" and not self.objects.has(op.entry.sha256, op.entry.size):
                raise UnprocessableUpload(
                    f"{op.path}: object sha256:{op.entry.sha256[:12]}… ({op.entry.size} bytes) was never "
                    "uploaded; upload it through the LFS batch API first")
        with self.backend.transaction(repo_id) as txn:
            refs = self._txn_refs(txn)
            if branch not in refs.branches:
                raise RevisionNotFound(f"Invalid rev id: {branch} (commits go to an existing branch)")
            head = Commit.from_document(refs.branches[branch], txn.load_commit(refs.branches[branch]))
            if parent_commit and not head.oid.startswith(parent_commit.lower()):
                raise StaleParent(f"parentCommit {parent_commit} is not the head of {branch} ({head.oid})")
            tree = dict(head.tree)
            for op in ops:
                if op.kind == "add":
                    tree[op.path] = op.entry
                elif op.kind == "delete_file":
                    if tree.pop(op.path, None) is None:
                        raise EntryNotFound(f"A file with this name doesn't exist: {op.path}")
                elif op.kind == "delete_folder":
                    prefix = op.path.rstrip("/") + "/"
                    doomed = [p for p in tree if p.startswith(prefix)]
                    if not doomed:
                        raise EntryNotFound(f"A folder with this name doesn't exist: {op.path}")
                    for p in doomed:
                        del tree[p]
                else:
                    raise BadRequest(f"unknown commit operation {op.kind!r}")
            new = Commit.create([head.oid], title, message, author, tree)
            txn.put_commit(new.oid, new.document())
            refs.branches[branch] = new.oid
            self._put_refs(txn, refs)
            return new

    def create_tag(self, repo_id: str, tag: str, revision: str, message: str = "", *,
                   by: str = "") -> tuple[str, list[str]]:
        """Tag ``revision``; returns (target commit, the hooks' notes: what the tag became)."""
        validate_ref_name(tag)
        with self.backend.transaction(repo_id) as txn:
            refs = self._txn_refs(txn)
            target = self._resolve_in(refs, revision)
            commit = Commit.from_document(target, txn.load_commit(target))
            if tag in refs.tags:
                raise RefExists(f"Tag already exists: {tag}")
            notes = [note for hook in self.ref_hooks if (note := hook.tag_created(self, repo_id, tag, commit, by))]
            refs.tags[tag] = {"target": target, "message": message}
            self._put_refs(txn, refs)
            return target, notes

    def squash(self, repo_id: str, branch: str, title: str, *, author: str) -> Commit:
        """``super_squash_history``: ``branch`` becomes one root commit holding its current tree
        (tags and other branches keep their commits, which stay readable by oid)."""
        with self.backend.transaction(repo_id) as txn:
            refs = self._txn_refs(txn)
            if branch not in refs.branches:
                raise RevisionNotFound(f"Invalid rev id: {branch} (only a branch can be squashed)")
            head = Commit.from_document(refs.branches[branch], txn.load_commit(refs.branches[branch]))
            new = Commit.create([], title, "", author, head.tree)
            txn.put_commit(new.oid, new.document())
            refs.branches[branch] = new.oid
            self._put_refs(txn, refs)
            return new

    def repo_ids(self) -> list[str]:
        """Every complete repo, sorted by namespace then name."""
        return self.backend.repo_ids()

    def last_commits(self, repo_id: str, commit: Commit, paths: list[str], max_depth: int = 1000) -> dict[str, Commit]:
        """For each path (file or folder) of ``commit``: the newest first-parent ancestor (the
        commit itself included) since which its content is unchanged (the Hub's ``lastCommit``).
        The walk stops after ``max_depth`` commits: older changes are reported at the oldest
        commit looked at."""
        def states(c: Commit, which) -> dict:
            folders = c.folders() if any(p not in c.tree for p in which) else set()
            return {p: c.tree[p].blob_id if p in c.tree else c.folder_oid(p) if p in folders else None
                    for p in which}

        found: dict[str, Commit] = {}
        current, wanted = commit, states(commit, paths)
        for _ in range(max_depth):
            pending = [p for p in paths if p not in found]
            if not current.parents or not pending:
                break
            parent = self.load_commit(repo_id, current.parents[0])
            for path, value in states(parent, pending).items():
                if value != wanted[path]:
                    found[path] = current
            current = parent
        return {p: found.get(p, current) for p in paths}

    def set_meta(self, repo_id: str, **fields) -> dict:
        """Update fields of the repo's metadata (atomically, in the repo's transaction)."""
        with self.backend.transaction(repo_id) as txn:
            if not txn.exists():
                raise RepoNotFound(f"Repository not found: {repo_id}")
            meta = txn.meta()
            meta.update(fields)
            txn.put_meta(meta)
            return meta

    def delete_tag(self, repo_id: str, tag: str) -> None:
        with self.backend.transaction(repo_id) as txn:
            refs = self._txn_refs(txn)
            if refs.tags.pop(tag, None) is None:
                raise RevisionNotFound(f"Tag not found: {tag}")
            self._put_refs(txn, refs)

    def create_branch(self, repo_id: str, branch: str, starting_point: str | None, *, by: str = "") -> str:
        validate_ref_name(branch)
        with self.backend.transaction(repo_id) as txn:
            refs = self._txn_refs(txn)
            if branch in refs.branches:
                raise RefExists(f"Reference already exists: refs/heads/{branch}")
            target = self._resolve_in(refs, starting_point or "main")
            commit = Commit.from_document(target, txn.load_commit(target))
            for hook in self.ref_hooks:
                hook.branch_set(self, repo_id, branch, commit, by)
            refs.branches[branch] = target
            self._put_refs(txn, refs)
            return target

    def delete_branch(self, repo_id: str, branch: str) -> None:
        with self.backend.transaction(repo_id) as txn:
            refs = self._txn_refs(txn)
            if branch == "main":
                raise BadRequest("the main branch cannot be deleted")
            if refs.branches.pop(branch, None) is None:
                raise RevisionNotFound(f"Branch not found: {branch}")
            self._put_refs(txn, refs)


# --- the server's own documents, read back through the same caps as anything from outside -----------
_ENTRY_DOC = {"type": "object", "required": ["sha256", "size", "lfs", "blob_id"], "additionalProperties": False,
              "properties": {"sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                             "size": {"type": "integer", "minimum": 0}, "lfs": {"type": "boolean"},
                             "blob_id": {"type": "string"}}}
REPO_DOC = {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}
REFS_DOC = {"type": "object", "required": ["branches", "tags"],
            "properties": {"branches": {"type": "object", "additionalProperties": {"type": "string"}},
                           "tags": {"type": "object", "additionalProperties": {
                               "type": "object", "required": ["target"],
                               "properties": {"target": {"type": "string"}}}}}}
COMMIT_DOC = {"type": "object", "required": ["parents", "title", "message", "author", "date", "tree"],
              "properties": {"tree": {"type": "object", "additionalProperties": _ENTRY_DOC},
                             "parents": {"type": "array", "items": {"type": "string"}},
                             "title": {"type": "string"}, "message": {"type": "string"},
                             "author": {"type": "string"}, "date": {"type": "string"}}}
STORED_DOC_MAX_BYTES = 256 << 20  # a commit lists its whole tree


def stored_document(path: Path, source: str, schema: dict):
    """A JSON document of the repo store, parsed with caps and checked against ``schema``
    (``untrusted.UntrustedData`` when a hand-edited or damaged file does not fit; the answer is
    then a generic 500 that names nothing). ``FileNotFoundError`` passes through."""
    from ... import untrusted

    with open(path, "rb") as fh:
        data = fh.read(STORED_DOC_MAX_BYTES + 1)
    value = untrusted.parse_json(data, source, max_bytes=STORED_DOC_MAX_BYTES, max_nodes=10_000_000)
    return untrusted.check_schema(value, schema, source)


def matches_lfs_pattern(path: str, patterns: list[str]) -> bool:
    """gitattributes matching, simplified: a pattern without '/' matches the base name anywhere,
    one with '/' matches the whole path from the root (``**`` behaves like ``*``)."""
    base = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        if "/" in pattern.strip("/"):
            if fnmatch.fnmatchcase(path, pattern.lstrip("/").replace("**/", "*").replace("**", "*")):
                return True
        elif fnmatch.fnmatchcase(base, pattern.strip("/")):
            return True
    return False
