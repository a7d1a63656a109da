"""Push and pull through the real ``huggingface_hub`` client (Hub or any Hub-compatible endpoint,
e.g. ``loradex serve``). huggingface_hub is imported inside the functions.

What huggingface_hub already does, and is not repeated here: retries with backoff on 429/5xx and
transport errors for preupload, the LFS batch call, the LFS PUT and verify (``http_backoff``);
within one download, re-requesting the rest with a Range header when the stream breaks
(``http_get``). What it does not, and this module adds: retries on 429/5xx for the metadata calls
(repo info, tree, refs, tag/branch creation) and around each file download; a partial file that
survives the process, so a pull killed mid-transfer resumes where it stopped; a commit POST that
failed on 5xx is only re-sent after checking that the branch did not move (a lost answer must not
make a second commit). Metadata calls (everything but the file transfers) are bounded in total by
LORADEX_HTTP_DEADLINE_S, retries included (``http_limits``: huggingface_hub's timeouts are per
socket read, so an answer trickled a byte at a time would otherwise never end); transport
failures that escape the library end as ``RemoteError``.

Nothing a remote sends is trusted: the repo info and refs a pull reads are fetched through the
library's HTTP session with a size cap, parsed by ``untrusted.parse_json`` and checked against
declared schemas (MODEL_INFO_SCHEMA, REFS_SCHEMA); every file path is checked before anything is
fetched; a partial file is named by the validated digest of its content and checked to lie in
the partial folder; an answer the library parses itself and cannot (refs for a push, whoami, a
commit) is a one-line ``UntrustedData``; a file whose size the remote does not announce stops at
LORADEX_MAX_DOWNLOAD_BYTES.

Tokens: passed in by the caller (``resolve_token``); when there is none the client is told
``token=False`` so it never falls back to the user's stored Hugging Face token, which must not
leak to a mirror. Tokens never appear in messages or files written here.

Xet: huggingface_hub uploads through Xet whenever ``hf_xet`` is importable unless
``HF_HUB_DISABLE_XET`` is set (read from ``huggingface_hub.constants`` at call time). Only
huggingface.co speaks Xet, so for other endpoints the flag is switched on for the duration of the
call (under a lock, as it is process-wide).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlparse

from ..files.atomic_files import fsync_dir
from ..errors import (AuthError, Conflict, InvalidFile, LoradexError, NotFound, RemoteError, TransferError,
                      UntrustedData, UsageError)
from .http_limits import (Deadline, StallGuard, deadline_seconds, max_download_bytes, over_cap_error, read_limited,
                          watchdog)
from ..untrusted import check_schema, hex_digest, inside, parse_json, safe_relative_name

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)
MAX_RETRY_AFTER_S = 30.0
XET_HOSTS = ("huggingface.co", "hf.co")
READ_CHUNK = 1 << 20
HUB_HOUSEKEEPING = (".gitattributes",)
LORADEX_VERSION = "0.1"  # sent in the User-Agent (``loradex/<version>``)

Progress = Callable[[int, int, str], None]
_xet_lock = threading.RLock()


# --- tokens -------------------------------------------------------------------------------------
def token_env_name(remote_name: str) -> str:
    return "LORADEX_TOKEN_" + re.sub(r"[^A-Za-z0-9]", "_", remote_name).upper()


def resolve_token(remote_name: str | None = None, *, hf_fallback: bool = True) -> str | None:
    """``LORADEX_TOKEN_<REMOTE>`` first; then, when ``hf_fallback`` (remotes that *are* the Hub),
    huggingface_hub's own resolution (``HF_TOKEN``, then the token saved by ``hf auth login``).
    Mirrors should pass ``hf_fallback=False`` so a Hugging Face token is never sent to them."""
    if remote_name:
        value = os.environ.get(token_env_name(remote_name), "").strip()
        if value:
            return value
    if not hf_fallback:
        return None
    from huggingface_hub import get_token

    return get_token() or None


# --- local file identities ------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalFile:
    path: Path
    size: int
    sha256: str
    git_sha1: str  # git blob id of the content: what the Hub lists as oid for a regular file
    sample: bytes = field(repr=False)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "LocalFile":
        path = Path(path)
        if not path.is_file():
            raise InvalidFile(path, "not a regular file")
        size = path.stat().st_size
        sha256, sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\x00" % size)
        sample = b""
        with open(path, "rb") as fh:
            while chunk := fh.read(READ_CHUNK):
                if len(sample) < 512:
                    sample += chunk[: 512 - len(sample)]
                sha256.update(chunk)
                sha1.update(chunk)
        return cls(path, size, sha256.hexdigest(), sha1.hexdigest(), sample)

    def matches(self, remote) -> bool:
        """Same content as a ``RepoFile`` / ``RepoSibling`` from the remote."""
        if remote.lfs is not None:
            return remote.lfs.sha256 == self.sha256 and remote.lfs.size == self.size
        return remote.blob_id == self.git_sha1


def _check_repo_path(path: str) -> str:
    parts = path.split("/")
    if (not path or "\\" in path or "\x00" in path or path.startswith("/") or re.match(r"[A-Za-z]:", path)
            or any(p in ("", ".", "..") for p in parts)):
        raise UsageError(f"invalid path in repo: {path!r}")
    return path


# --- error mapping, retries, xet -----------------------------------------------------------------
def _token_note(token_sent: bool) -> str:
    return "a token was sent" if token_sent else "no token was sent (set LORADEX_TOKEN_<REMOTE> or HF_TOKEN)"


@contextlib.contextmanager
def _remote_errors(endpoint: str, repo_id: str, token_sent: bool, what: str) -> Iterator[None]:
    import httpx2  # huggingface_hub's HTTP client
    from huggingface_hub.errors import (HfHubHTTPError, LocalEntryNotFoundError, RemoteEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    where = f"{repo_id} on {endpoint}"
    try:
        yield
    except RevisionNotFoundError as exc:
        raise NotFound(f"{what}: revision not found in {where}", hint=_server_said(exc)) from None
    except RemoteEntryNotFoundError as exc:
        raise NotFound(f"{what}: file not found in {where}", hint=_server_said(exc)) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise AuthError(f"{what}: {where} answered {status}; {_token_note(token_sent)}",
                            hint=_server_said(exc)) from None
        if status == 404 or isinstance(exc, RepositoryNotFoundError):
            raise NotFound(f"{what}: repository {where} not found ({_token_note(token_sent)})",
                           hint=_server_said(exc)) from None
        if status == 409:
            raise Conflict(f"{what}: {where} answered 409 (already exists)", hint=_server_said(exc)) from None
        if status == 412:
            raise Conflict(f"{what}: {where} moved while pushing (412)", hint="pull or retry the push") from None
        raise RemoteError(f"{what}: {where} answered HTTP {status}", hint=_server_said(exc)) from None
    except LocalEntryNotFoundError as exc:
        raise RemoteError(f"{what}: cannot reach {endpoint} for {repo_id}", hint=str(exc).splitlines()[0]) from None
    except httpx2.TransportError as exc:  # connection refused, reset, broken off, timed out
        detail = " ".join(str(exc).split())[:160]
        raise RemoteError(f"{what}: the connection to {endpoint} failed for {repo_id} "
                          f"({type(exc).__name__}{': ' + detail if detail else ''})") from None
    except (httpx2.HTTPError, httpx2.InvalidURL, httpx2.StreamError) as exc:  # undecodable body, bad URL
        detail = " ".join(str(exc).split())[:160]
        raise RemoteError(f"{what}: {endpoint} sent an answer that cannot be read for {repo_id} "
                          f"({type(exc).__name__}{': ' + detail if detail else ''})") from None


def _server_said(exc) -> str | None:
    response = getattr(exc, "response", None)
    if response is None:
        return None
    message = response.headers.get("X-Error-Message")
    if not message:
        try:
            message = response.json().get("error")
        except Exception:
            message = None
    return f"server said: {message}" if message else None


def _transient(exc: BaseException) -> float | None:
    """Seconds to wait before retrying ``exc``, or None when it is not worth retrying."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if isinstance(exc, HfHubHTTPError):
        response = exc.response
        if response is None or response.status_code not in RETRY_STATUS:
            return None
        after = response.headers.get("Retry-After", "")
        return min(float(after), MAX_RETRY_AFTER_S) if after.replace(".", "", 1).isdigit() else 0.0
    if isinstance(exc, LocalEntryNotFoundError):  # hf_hub_download's wrapper for "HEAD failed to connect"
        return 0.0
    # what huggingface_hub's own backoff retries: timeouts, refused/reset/broken connections
    return 0.0 if isinstance(exc, (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError)) else None


def _within_deadline(fn: Callable, deadline: Deadline):
    """``fn()`` (one blocking huggingface_hub call), broken off when ``deadline`` passes: its
    per-read timeouts never fire for an answer trickled a byte at a time, so a watchdog closes the
    library's shared HTTP session (it makes a new one on the next call)."""
    from huggingface_hub.utils import close_session

    with watchdog(deadline, close_session):
        return fn()


def _retrying(fn: Callable, *, delays=RETRY_DELAYS_S, what: str = "hub request", total_deadline: bool = True):
    """``fn()`` retried on transient failures. With ``total_deadline`` (metadata calls: every
    caller but the file download), all attempts together must finish within
    LORADEX_HTTP_DEADLINE_S; a retry that would start past it re-raises the last failure."""
    deadline = Deadline(what) if total_deadline else None
    for attempt in range(len(delays) + 1):
        try:
            return fn() if deadline is None else _within_deadline(fn, deadline)
        except Exception as exc:
            wait = _transient(exc)
            if wait is None or attempt == len(delays):
                _raise_malformed(exc, what)
                raise
            pause = max(wait, delays[attempt])
            if deadline is not None and pause >= deadline.remaining():
                raise
            time.sleep(pause)


# What huggingface_hub raises when an answer it parses itself (refs, tree, whoami, file metadata
# headers) does not have the shape it expects.
_MALFORMED = (TypeError, KeyError, AttributeError, IndexError, RecursionError, ValueError, UnicodeError)


def _raise_malformed(exc: BaseException, what: str) -> None:
    """Re-raise a parsing failure inside a library call as a one-line protocol error."""
    if isinstance(exc, _MALFORMED) and not isinstance(exc, LoradexError):
        detail = " ".join(str(exc).split())[:120]
        raise UntrustedData(what, f"a malformed answer ({type(exc).__name__}{': ' + detail if detail else ''})") from None


def uses_xet(endpoint: str) -> bool:
    host = (urlparse(endpoint).hostname or "").lower()
    return any(host == h or host.endswith("." + h) for h in XET_HOSTS)


@contextlib.contextmanager
def _lfs_only_unless_hub(endpoint: str) -> Iterator[None]:
    if uses_xet(endpoint):
        yield
        return
    from huggingface_hub import constants

    with _xet_lock:
        before = constants.HF_HUB_DISABLE_XET
        constants.HF_HUB_DISABLE_XET = True
        try:
            yield
        finally:
            constants.HF_HUB_DISABLE_XET = before


def _api(endpoint: str, token: str | None):
    from huggingface_hub import HfApi

    # "loradex/…" first in the User-Agent: a loradex server then keeps this client on the
    # resumable LFS path (Xet is off for it, _lfs_only_unless_hub) instead of inline uploads
    return HfApi(endpoint=endpoint.rstrip("/"), token=token or False, library_name="loradex",
                 library_version=LORADEX_VERSION)


# --- push ---------------------------------------------------------------------------------------
@dataclass
class PushResult:
    commit: str  # commit the pushed files are at
    uploaded: list[str]  # paths sent in a new commit ([] = the remote already had everything)
    deleted: list[str]
    tag_created: bool
    branches_set: list[str]

    @property
    def sent_nothing(self) -> bool:
        return not self.uploaded and not self.deleted

    def __str__(self) -> str:
        return self.commit


def _diff(api, repo_id: str, revision: str, local: dict[str, LocalFile], exact: bool) -> tuple[list[str], list[str]]:
    from huggingface_hub.hf_api import RepoFile

    files = _retrying(lambda: list(api.list_repo_tree(repo_id, recursive=True, revision=revision)),
                      what=f"files of {repo_id}@{revision}")
    remote = {f.path: f for f in files if isinstance(f, RepoFile)}
    changed = [p for p, lf in sorted(local.items()) if p not in remote or not lf.matches(remote[p])]
    extra = sorted(p for p in remote if p not in local and p not in HUB_HOUSEKEEPING) if exact else []
    return changed, extra


def _refs(api, repo_id: str):
    return _retrying(lambda: api.list_repo_refs(repo_id), what=f"refs of {repo_id}")


def push_files(endpoint: str, repo_id: str, files: dict[str, str | os.PathLike], message: str, token: str | None,
               tag: str | None = None, branch_aliases: dict[str, str | None] | None = None, *,
               branch: str = "main", private: bool = True, exact: bool = True,
               progress: Progress | None = None) -> PushResult:
    """Make ``branch`` hold exactly ``files`` ({path in repo: local path}) in one commit, tag it
    ``tag``, and point each ``branch_aliases`` name (a branch) at its target (a tag, branch or
    commit; None = the pushed commit).

    Nothing is sent when the remote already has the same content (compared by LFS sha256 / git
    blob id): then the result's ``uploaded`` is empty. An existing ``tag`` with different content
    raises ``Conflict`` (a version never changes). ``exact``: remote files not in ``files``
    (besides .gitattributes) are deleted in the same commit."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete
    from huggingface_hub.lfs import UploadInfo

    local = {_check_repo_path(p): LocalFile.read(src) for p, src in files.items()}
    total = sum(lf.size for lf in local.values())
    api = _api(endpoint, token)
    with _lfs_only_unless_hub(endpoint), _remote_errors(endpoint, repo_id, bool(token), "push"):
        _retrying(lambda: api.create_repo(repo_id, exist_ok=True, private=private), what=f"create {repo_id}")
        refs = _refs(api, repo_id)
        tags = {t.name: t.target_commit for t in refs.tags}
        heads = {b.name: b.target_commit for b in refs.branches}
        if tag is not None and tag in tags:
            changed, extra = _diff(api, repo_id, tags[tag], local, exact)
            if changed or extra:
                raise Conflict(f"{repo_id} on {endpoint} already has tag {tag} with different content "
                               f"({', '.join((changed + extra)[:5])})", hint="a pushed version never changes; bump it")
            result = PushResult(tags[tag], [], [], False, [])
        else:
            if branch not in heads:
                raise NotFound(f"push: branch {branch} not found in {repo_id} on {endpoint}")
            head = heads[branch]
            changed, extra = _diff(api, repo_id, head, local, exact)
            if changed or extra:
                ops = []
                for path in changed:
                    op = CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(local[path].path))
                    lf = local[path]  # hashes are known already: spare the client a second read
                    op.upload_info = UploadInfo(size=lf.size, sample=lf.sample, sha256=bytes.fromhex(lf.sha256))
                    ops.append(op)
                ops += [CommitOperationDelete(path_in_repo=p) for p in extra]
                commit = _commit_once(api, repo_id, branch, head, ops, message, local, changed, extra, exact)
            else:
                commit = head
            result = PushResult(commit, changed, extra, False, [])
            if tag is not None:
                _retrying(lambda: api.create_tag(repo_id, tag=tag, revision=commit, tag_message=message,
                                                 exist_ok=True), what=f"tag {tag} of {repo_id}")
                result.tag_created = True
        if progress:
            progress(total, total, "pushed" if result.uploaded else "already on remote")
        if branch_aliases:
            result.branches_set = _set_branches(api, repo_id, branch_aliases, result.commit, tags, heads)
    return result


def _commit_once(api, repo_id, branch, head, ops, message, local, changed, extra, exact) -> str:
    """One create_commit with ``parent_commit=head``. On a transient failure, look before
    re-sending: if the branch moved to a commit holding our files, the first attempt landed."""
    for attempt in range(len(RETRY_DELAYS_S) + 1):
        try:
            return api.create_commit(repo_id, ops, commit_message=message, revision=branch,
                                     parent_commit=head).oid
        except Exception as exc:
            wait = _transient(exc)
            if wait is None or attempt == len(RETRY_DELAYS_S):
                _raise_malformed(exc, f"push: commit to {repo_id}")
                raise
            time.sleep(max(wait, RETRY_DELAYS_S[attempt]))
            now = {b.name: b.target_commit for b in _refs(api, repo_id).branches}.get(branch)
            if now != head:
                still_changed, still_extra = _diff(api, repo_id, now, local, exact)
                if not still_changed and not still_extra:
                    return now
                raise Conflict(f"{repo_id}: branch {branch} moved during the push", hint="retry the push")
    raise AssertionError("unreachable")


def _set_branches(api, repo_id: str, aliases: dict[str, str | None], commit: str,
                  tags: dict[str, str], heads: dict[str, str]) -> list[str]:
    moved = []
    for name, target in sorted(aliases.items()):
        if name == "main":
            raise UsageError("an alias cannot be called 'main' (it is the branch versions are committed to)")
        if target is None:
            oid = commit
        elif re.fullmatch(r"[0-9a-f]{40}", target):
            oid = target
        elif target in tags or target in heads:
            oid = tags.get(target) or heads[target]
        else:
            raise NotFound(f"alias {name}: target {target} is not a tag, branch or commit of {repo_id}")
        current = heads.get(name)
        if current == oid:
            continue
        if current is not None:  # the Hub has no "move ref": delete and re-create
            _retrying(lambda: api.delete_branch(repo_id, branch=name), what=f"delete branch {name} of {repo_id}")
        _retrying(lambda: api.create_branch(repo_id, branch=name, revision=oid, exist_ok=False),
                  what=f"create branch {name} of {repo_id}")
        moved.append(name)
    return moved


# --- remote answers a pull reads: fetched with caps, checked against declared shapes ------------
_HEX40 = {"type": "string", "pattern": "^[0-9a-f]{40}$"}
_SIZE = {"type": "integer", "minimum": 0, "maximum": 2**53}
MODEL_INFO_SCHEMA = {  # GET /api/models/REPO/revision/REV?blobs=true (only what a pull reads)
    "type": "object", "required": ["sha", "siblings"],
    "properties": {
        "sha": _HEX40,
        "siblings": {"type": "array", "maxItems": 100_000, "items": {
            "type": "object", "required": ["rfilename", "blobId"],
            "properties": {
                "rfilename": {"type": "string", "minLength": 1, "maxLength": 4096},
                "size": {**_SIZE, "type": ["integer", "null"]},
                "blobId": {"type": "string", "pattern": "^([0-9a-f]{40}|[0-9a-f]{64})$"},
                "lfs": {"type": ["object", "null"], "required": ["sha256", "size"],
                        "properties": {"sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "size": _SIZE}},
            }}},
    },
}
_REF = {"type": "object", "required": ["name", "targetCommit"],
        "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 256}, "targetCommit": _HEX40}}
REFS_SCHEMA = {"type": "object", "required": ["branches", "tags"],
               "properties": {"branches": {"type": "array", "maxItems": 100_000, "items": _REF},
                              "tags": {"type": "array", "maxItems": 100_000, "items": _REF}}}


@dataclass(frozen=True)
class RemoteLfs:
    sha256: str
    size: int


@dataclass(frozen=True)
class RemoteFile:
    """One file of a remote revision, as a validated ``siblings`` entry (what ``LocalFile.matches``
    compares with)."""
    rfilename: str
    size: int | None
    blob_id: str
    lfs: RemoteLfs | None


def get_json(endpoint: str, path: str, token: str | None, *, schema: dict, what: str, params: dict | None = None):
    """One Hub API answer through huggingface_hub's HTTP session: retried like the other metadata
    calls, read no further than MAX_JSON_BYTES, parsed with depth/size caps and checked against
    ``schema`` (huggingface_hub's own parsing would fail with a TypeError deep inside)."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    url = endpoint.rstrip("/") + path

    def fetch() -> bytes:
        deadline = Deadline(what)
        with get_session().stream("GET", url, headers=build_hf_headers(token=token or False), params=params,
                                  timeout=deadline_seconds()) as resp:
            if resp.status_code >= 400:
                resp.read()  # the error page, for hf_raise_for_status's message
                hf_raise_for_status(resp)
            return read_limited(resp.iter_bytes(), what=what, deadline=deadline,
                                declared=resp.headers.get("content-length"))

    body = _retrying(fetch, what=what)
    return check_schema(parse_json(body, what), schema, what)


def repo_files(endpoint: str, repo_id: str, revision: str, token: str | None) -> tuple[str, list[RemoteFile]]:
    """(commit sha, files) of one revision, validated (MODEL_INFO_SCHEMA)."""
    from urllib.parse import quote

    what = f"pull: repo info of {repo_id}@{revision} on {endpoint}"
    data = get_json(endpoint, f"/api/models/{repo_id}/revision/{quote(revision, safe='')}", token,
                    schema=MODEL_INFO_SCHEMA, what=what, params={"blobs": True})
    files = [RemoteFile(s["rfilename"], s.get("size"), s["blobId"],
                        RemoteLfs(s["lfs"]["sha256"], s["lfs"]["size"]) if s.get("lfs") else None)
             for s in data["siblings"]]
    return data["sha"], files


def repo_refs(endpoint: str, repo_id: str, token: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """(tags, branches) of a repo as {name: commit}, validated (REFS_SCHEMA); huggingface_hub's
    RepositoryNotFoundError when it does not exist."""
    data = get_json(endpoint, f"/api/models/{repo_id}/refs", token, schema=REFS_SCHEMA,
                    what=f"refs of {repo_id} on {endpoint}")
    return ({t["name"]: t["targetCommit"] for t in data["tags"]},
            {b["name"]: b["targetCommit"] for b in data["branches"]})


# --- pull ---------------------------------------------------------------------------------------
PARTIAL_DIR = ".loradex-partial"


def pull_revision(endpoint: str, repo_id: str, revision: str, dest_dir: str | os.PathLike, token: str | None, *,
                  allow_patterns: list[str] | None = None, include_housekeeping: bool = False,
                  progress: Progress | None = None) -> tuple[str, dict[str, Path]]:
    """Download every file of ``revision`` (tag, branch or commit) into ``dest_dir`` as plain
    files at their repo paths. Returns (commit sha, {path in repo: local path}).

    Each file is fetched into ``dest_dir/.loradex-partial/<remote id>.part`` and only renamed to
    its final name once it matches the remote (sha256 for LFS files, git blob id for regular
    ones). A ``.part`` left by an interrupted pull, even one from a killed process, is resumed
    with a Range request. (huggingface_hub 2.4's ``hf_hub_download`` cannot do that: it writes
    to a process-unique temp file and deletes it on failure, so this uses the library's
    ``get_hf_file_metadata`` + ``http_get`` instead.) A file that does not match is fetched once
    more from scratch, then ``TransferError``."""
    dest_dir = Path(dest_dir)
    out: dict[str, Path] = {}
    with _lfs_only_unless_hub(endpoint), _remote_errors(endpoint, repo_id, bool(token), "pull"):
        sha, files = repo_files(endpoint, repo_id, revision, token)
        siblings = [s for s in files
                    if (include_housekeeping or s.rfilename not in HUB_HOUSEKEEPING)
                    and (allow_patterns is None or any(fnmatch.fnmatchcase(s.rfilename, p) for p in allow_patterns))]
        # Every path is checked before anything is fetched: a name from the remote stays inside dest_dir.
        where = f"pull: {repo_id}@{sha[:12]} on {endpoint}"
        paths = [safe_relative_name(s.rfilename, where, field="siblings[].rfilename", allow_dirs=True)
                 for s in siblings]
        total, done = sum(s.size or 0 for s in siblings), 0
        for sibling, path in zip(siblings, paths):
            final = _inside(dest_dir / path, dest_dir, where)
            if not (final.is_file() and LocalFile.read(final).matches(sibling)):
                moved = _ByteProgress(progress, done, total, path) if progress else None
                _download_verified(endpoint, repo_id, sha, sibling, final, dest_dir / PARTIAL_DIR, token,
                                   on_bytes=moved)
            out[path] = final
            done += sibling.size or 0
            if progress:
                progress(done, total, path)
    return sha, out


class _ByteProgress:
    """Feeds ``progress(done, total, path)`` as each chunk of one file arrives (bytes, so the
    CLI's bar shows speed and ETA); a resumed download counts its partial file as done."""

    def __init__(self, progress: Progress, before: int, total: int, path: str):
        self.progress, self.before, self.total, self.path, self.got = progress, before, total, path, 0

    def restart(self, already: int) -> None:
        self.got = already
        self.progress(self.before + already, self.total, self.path)

    def __call__(self, n: int) -> None:
        self.got += n
        self.progress(self.before + self.got, self.total, self.path)


def _inside(path: Path, root: Path, where: str) -> Path:
    try:
        return inside(path, root)
    except ValueError:
        raise UntrustedData(where, f"{str(path)[:120]!r} would lie outside the download folder") from None


def _download_verified(endpoint: str, repo_id: str, sha: str, sibling: RemoteFile, final: Path, partial_dir: Path,
                       token: str | None, on_bytes: "_ByteProgress | None" = None) -> None:
    # The partial file is named by the validated digest of the content it will hold, never by a
    # string of another shape: it survives a killed process and is resumed by the next pull.
    where = f"pull: {sibling.rfilename} from {repo_id}"
    remote_id = (hex_digest(sibling.lfs.sha256, where, field="lfs.sha256") if sibling.lfs is not None
                 else hex_digest(sibling.blob_id, where, lengths=(40, 64), field="blobId"))
    part = _inside(partial_dir / f"{remote_id}.part", partial_dir, where)
    for attempt in (1, 2):
        try:
            _retrying(lambda: _fetch_resuming(endpoint, repo_id, sha, sibling.rfilename, part, token, on_bytes),
                      total_deadline=False, what=where)  # a large file takes long: http_get's per-read timeout bounds stalls
        except TransferError as exc:
            if not getattr(exc, "resumable", False):
                part.unlink(missing_ok=True)  # more than announced or than the cap: never resumed from
            raise
        if LocalFile.read(part).matches(sibling):
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, final)
            fsync_dir(final.parent)
            return
        part.unlink()  # wrong bytes (e.g. a stale partial): start over once
    raise TransferError(f"pull: {sibling.rfilename} from {repo_id}@{sha[:12]} does not match the remote's "
                        f"{'sha256' if sibling.lfs is not None else 'blob id'} after two downloads")


def _stall_watching_bar(guard: StallGuard, on_bytes: "_ByteProgress | None" = None, *,
                        limit: int | None = None, what: str = "download", unannounced: int | None = None):
    """A progress-bar class for ``http_get`` (its public ``tqdm_class`` hook sees every chunk) that
    stops a download making no real progress (huggingface_hub's own timeout is per read) or
    running past ``limit`` bytes (what the remote announced: the library only compares sizes once
    the body has ended, however long that is), and, given ``on_bytes``, reports each chunk to
    loradex's own bar instead of drawing tqdm's."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class StallWatchingBar(hf_tqdm):
        received = 0

        def __init__(self, *args, **kwargs):
            if on_bytes is not None:
                kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            if n and n > 0:
                self.received += n
                if limit is not None and self.received > limit:
                    raise TransferError(f"{what}: the server sent more than the {limit:,} bytes it announced; "
                                        "stopped reading", hint="the remote is misbehaving: tell its operator")
                if unannounced is not None and self.received > unannounced:
                    raise over_cap_error(what, max_download_bytes())
                guard.update(n)
                if on_bytes is not None:
                    on_bytes(n)
            return super().update(n)

    return StallWatchingBar


def _fetch_resuming(endpoint: str, repo_id: str, sha: str, path: str, part: Path, token: str | None,
                    on_bytes: "_ByteProgress | None" = None) -> None:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(repo_id, path, revision=sha, endpoint=endpoint.rstrip("/"))
    meta = _within_deadline(lambda: get_hf_file_metadata(url, token=token or False),
                            Deadline(f"pull: metadata of {path} in {repo_id} on {endpoint}"))
    headers = build_hf_headers(token=token or False)
    target = meta.location or url
    if urlparse(target).netloc != urlparse(url).netloc:
        headers.pop("authorization", None)  # a signed CDN URL: never send our token elsewhere
    part.parent.mkdir(parents=True, exist_ok=True)
    with open(part, "ab") as fh:
        have = fh.tell()
        if meta.size is not None and have > meta.size:
            fh.truncate(0)
            have = 0
        if on_bytes is not None:
            on_bytes.restart(have)
        what = f"pull: {path} from {repo_id}"
        bar = _stall_watching_bar(StallGuard(what), on_bytes, what=what,
                                  limit=None if meta.size is None else meta.size - have,
                                  unannounced=None if meta.size is not None else max_download_bytes() - have)
        http_get(target, fh, resume_size=have, headers=headers, expected_size=meta.size,
                 displayed_filename=path, tqdm_class=bar)
