"""FastAPI app serving the subset of the Hugging Face Hub HTTP protocol that the unmodified
``huggingface_hub`` client uses to create repos, commit (regular + LFS files), tag, branch, list
and download. The protocol as seen from the client is summarised in FORMATS.md ("Hugging Face Hub
protocol"); the request/response shapes follow ``huggingface_hub`` 2.x (hf_api.py,
_commit_api.py, lfs.py, file_download.py).

Xet is never advertised: no ``X-Xet-*`` headers, no ``xetHash`` in listings, and the xet token
routes answer 404 with the reason. How each client decides (see ``xet_without_asking``): up to
1.19 clients offer ``transfers: [basic, multipart, xet]`` to the LFS batch API and use what the
server picks (``basic`` here); clients from 1.20 on send every ``lfs``-mode file through Xet
whenever ``hf_xet`` is importable, without asking. So preupload answers ``regular`` to those clients (the
bytes then come base64 inside the commit, which is all a Hub without Xet can offer them) for
every file up to ``max_upload_bytes`` (the LFS limit) while the commit stays under
``max_commit_bytes`` (default: one file of ``max_upload_bytes`` in base64 plus 64 MiB), and the
server stores such files as LFS objects anyway (listings and downloads are the same either way).
The commit body is read as a stream (``commit_stream``): a long ``file`` line's base64 content is
decoded chunk by chunk into a staged file, so memory stays bounded whatever the file's size, and
nothing is published before the whole body has been read and checked. loradex's own client
(``User-Agent: loradex/…``) switches Xet off and keeps the resumable LFS path.

Revisions may contain ``/`` sent as ``%2F``; Starlette decodes the path before routing, so the
routes that take a revision re-split the *raw* path.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, unquote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ...files.hashing import is_sha256_hex
from . import request_schemas as S
from .commit_stream import DEFAULT_LINE_IN_MEMORY_BYTES, CommitLimits, CommitLine, received_commit, sweep_incoming
from .discovery import list_models
from .object_store import ObjectStore
from .protocol_errors import (BadRequest, EntryNotFound, Forbidden, RefExists, RouteNotFound, Unauthorized,
                              UnprocessableUpload, install_error_handlers, public_base_url)
from .protocol_errors import read_body_capped as _read_body
from .repo_store import (LFS_SIZE_THRESHOLD, FileOp, RepoStore, TreeEntry, matches_lfs_pattern, validate_repo_id,
                         validate_repo_path)
from .wire_format import (commit_json, last_commit_json, model_info_json, parse_front_matter, paths_info_json,
                          refs_json, tree_json)

DEFAULT_MAX_UPLOAD_BYTES = 50 << 30
COMMIT_OVERHEAD_BYTES = 64 << 20  # a commit's JSON around its inline files, and small files beside a big one
MAX_REQUEST_BYTES = 64 << 20  # any other API body (preupload, paths-info…), read whole
UPLOAD_URL_TTL_S = 3600
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"  # the client keys on this text
UNSUPPORTED = "not supported by this server (loradex serve)"
NO_PULL_REQUESTS = f"pull requests are {UNSUPPORTED}: commit to a branch instead (create_branch, then revision=)"
NO_XET = (f"Xet storage is {UNSUPPORTED}: files go through the LFS batch API or inline; a file over the "
          "server's inline budget (its upload limit) cannot be sent by this client: set HF_HUB_DISABLE_XET=1")
_UA_HF_HUB = re.compile(r"(?:^|[;\s])hf_hub/(\d+)\.(\d+)")
XET_WITHOUT_ASKING_SINCE = (1, 20)  # huggingface_hub 1.20 dropped the LFS batch negotiation


# --- auth -------------------------------------------------------------------------------------
@dataclass
class TokenAuth:
    """One shared Bearer token (or none = open server). ``public_read`` lets reads through
    without a token. The ``loradex serve`` token table can replace this with any object that has
    the same ``check`` method."""

    token: str | None = None
    public_read: bool = False
    user: str = "loradex"

    def check(self, request: Request, scope: str, namespace: str | None = None, *, download: bool = False) -> str:
        """``namespace``: the repo namespace of a write (one shared token has no namespaces);
        ``download``: the read is a file (no difference here: no namespace settings)."""
        header = request.headers.get("authorization", "")
        presented = header[7:].strip() if header.lower().startswith("bearer ") else None
        if self.token is None:
            return self.user
        if presented is None:
            if scope == "read" and self.public_read:
                return "anonymous"
            raise Unauthorized(f"Authorization required ({scope} access): send 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(presented.encode(), self.token.encode()):
            raise Unauthorized(INVALID_CREDENTIALS)
        return self.user


@dataclass
class TransferStats:
    """Bytes the server received, so tests and operators can see what a push really sent."""

    lfs_bytes_received: int = 0  # bytes of files stored as LFS objects (LFS PUTs, and inline uploads of them)
    regular_bytes_received: int = 0
    bytes_served: int = 0  # file bytes sent by /resolve GETs (a resumed download sends only the rest)
    lfs_uploads: int = 0
    commits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict:
        with self._lock:
            return {k: v for k, v in vars(self).items() if not k.startswith("_")}


@dataclass
class HubContext:
    repos: RepoStore
    objects: ObjectStore
    auth: TokenAuth
    stats: TransferStats
    secret: bytes
    max_upload_bytes: int
    max_commit_bytes: int
    line_in_memory_bytes: int = DEFAULT_LINE_IN_MEMORY_BYTES  # longer commit lines are parsed as a stream
    public_url: str | None = None  # what redirect and upload URLs start with (None: the listening address)
    models_page_size: int = 1000  # entries per page of /api/models
    presign: Callable | None = None  # url(sha256, filename) when resolve redirects LFS files to the store

    def base_url(self, request: Request) -> str:
        return public_base_url(request, self.public_url)

    @property
    def commit_limits(self) -> CommitLimits:
        return CommitLimits(max_body_bytes=self.max_commit_bytes, max_file_bytes=self.max_upload_bytes,
                            line_in_memory_bytes=self.line_in_memory_bytes)


@dataclass
class ApiCall:
    """One request to ``/api/models/<ns>/<name>/<action>/<rev>/<path>``, decoded."""

    request: Request
    repo_id: str
    rev: str | None
    path: str
    body: bytes | list[CommitLine]  # the commit action gets its body as checked lines (``commit_stream``)
    user: str


# --- /api/models/... actions, registered by (method, action) --------------------------------
ApiHandler = Callable[[HubContext, ApiCall], Response]
API_ACTIONS: dict[tuple[str, str | None], tuple[str, ApiHandler]] = {}


def api_action(method: str, action: str | None, scope: str):
    def register(fn: ApiHandler) -> ApiHandler:
        API_ACTIONS[(method, action)] = (scope, fn)
        return fn
    return register


def _json_body(call: ApiCall, schema: dict) -> dict:
    return S.parse_body(call.body, schema, "request body", empty={})


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true")


def xet_without_asking(request: Request) -> bool:
    """Whether the client uploads ``lfs``-mode files through Xet without negotiating: a
    ``huggingface_hub`` from 1.20 on (``hf_hub/N.M…`` in its User-Agent). Older ones negotiate in
    the LFS batch call; loradex's own client (``loradex/…``) turns Xet off for this server."""
    agent = request.headers.get("user-agent", "")
    if agent.startswith("loradex/"):
        return False
    found = _UA_HF_HUB.search(agent)
    return found is not None and (int(found.group(1)), int(found.group(2))) >= XET_WITHOUT_ASKING_SINCE


def _with_last_commits(ctx: HubContext, call: ApiCall, commit, entries: list[dict]) -> list[dict]:
    """``expand=True`` listings: each entry's ``lastCommit`` (``RepoStore.last_commits``)."""
    lasts = ctx.repos.last_commits(call.repo_id, commit, [e["path"] for e in entries])
    for entry in entries:
        entry["lastCommit"] = last_commit_json(lasts[entry["path"]])
    return entries


@api_action("GET", None, "read")
@api_action("GET", "revision", "read")
def _model_info(ctx: HubContext, call: ApiCall) -> Response:
    commit = ctx.repos.resolve(call.repo_id, call.rev or "main")
    blobs = call.request.query_params.get("blobs", "").lower() in ("1", "true")
    return JSONResponse(model_info_json(call.repo_id, ctx.repos.repo_meta(call.repo_id), commit, ctx.objects,
                                        blobs=blobs))


@api_action("GET", "tree", "read")
def _tree(ctx: HubContext, call: ApiCall) -> Response:
    commit = ctx.repos.resolve(call.repo_id, call.rev)
    recursive = call.request.query_params.get("recursive", "").lower() in ("1", "true")
    prefix = call.path.strip("/")
    if prefix:
        validate_repo_path(prefix)
    entries = tree_json(commit, prefix, recursive)
    if entries is None:
        raise EntryNotFound(f"{prefix} does not exist on {call.rev}", commit=commit.oid)
    if _flag(call.request.query_params.get("expand")):
        entries = _with_last_commits(ctx, call, commit, entries)
    return JSONResponse(entries)


@api_action("POST", "paths-info", "read")
def _paths_info(ctx: HubContext, call: ApiCall) -> Response:
    commit = ctx.repos.resolve(call.repo_id, call.rev)
    if call.request.headers.get("content-type", "").startswith("application/json"):
        body = _json_body(call, S.PATHS_INFO)
        paths, expand = body.get("paths", []), body.get("expand") in (True, "true", "True", "1")
    else:  # the client posts a form: paths=a&paths=b&expand=False
        form = parse_qs(call.body.decode("utf-8", "replace"))
        paths, expand = form.get("paths", []), _flag((form.get("expand") or [""])[0])
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise BadRequest("paths must be a list of strings")
    for p in paths:
        validate_repo_path(p.strip("/"))
    entries = paths_info_json(commit, paths)
    return JSONResponse(_with_last_commits(ctx, call, commit, entries) if expand else entries)


@api_action("POST", "preupload", "write")
def _preupload(ctx: HubContext, call: ApiCall) -> Response:
    """Per file: 'lfs' when the repo's .gitattributes says so, the file is binary (NUL in the
    sample) or too large for a regular file; plus the current oid so the client skips unchanged
    files (sha256 for LFS files, git blob sha1 for regular ones: what the client compares).
    A client that would send 'lfs' files through Xet (``xet_without_asking``) is told 'regular'
    for them while they fit the inline budget (see the module docstring)."""
    if _flag(call.request.query_params.get("create_pr")):
        raise BadRequest(NO_PULL_REQUESTS)
    commit = ctx.repos.resolve(call.repo_id, call.rev)
    patterns = ctx.repos.lfs_patterns(call.repo_id, commit.oid)
    files = _json_body(call, S.PREUPLOAD)["files"]
    inline_left = _inline_budget(ctx) if xet_without_asking(call.request) else 0
    answer = []
    for item in files:
        path = validate_repo_path(item["path"])
        size = item["size"]
        try:
            sample = base64.b64decode(item.get("sample") or "", validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"{path}: sample is not base64") from None
        lfs = size >= LFS_SIZE_THRESHOLD or b"\x00" in sample or matches_lfs_pattern(path, patterns)
        if lfs and size <= min(inline_left, ctx.max_upload_bytes):
            lfs, inline_left = False, inline_left - size
        out = {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False}
        existing = commit.tree.get(path)
        if existing is not None:
            if lfs:
                out["oid"] = existing.sha256 if existing.lfs else None
            else:  # what the client compares for a regular file: the git blob sha1 of the content
                out["oid"] = _content_blob_id(ctx, existing) if existing.lfs else existing.blob_id
        answer.append(out)
    return JSONResponse({"files": answer, "commitOid": commit.oid})


def _inline_budget(ctx: HubContext) -> int:
    """Bytes of files one commit may carry inline (base64 grows them by 4/3); with the default
    ``max_commit_bytes`` at least ``max_upload_bytes``, so every file the server accepts."""
    overhead = min(COMMIT_OVERHEAD_BYTES, ctx.max_commit_bytes // 16)
    return max((ctx.max_commit_bytes - overhead) * 3 // 4, 0)


def _content_blob_id(ctx: HubContext, entry: TreeEntry) -> str:
    digest = hashlib.sha1(b"blob %d\x00" % entry.size)
    with ctx.objects.open(entry.sha256) as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@api_action("POST", "commit", "write")
def _commit(ctx: HubContext, call: ApiCall) -> Response:
    """The body arrives as checked lines (``commit_stream.received_commit``), each inline file
    staged; the staged files are published into the object store just before the repo store's
    atomic commit, so a refused commit changes no repo."""
    branch = call.rev[11:] if call.rev.startswith("refs/heads/") else call.rev
    header, ops, regular_bytes, inline_lfs_bytes = None, [], 0, 0
    staged, patterns = [], None
    for line in call.body:
        key, value = line.item["key"], line.item["value"]
        if key == "header":
            header = value
        elif key == "file":
            path = validate_repo_path(value.get("path"))
            found = line.staged
            if patterns is None:
                patterns = ctx.repos.lfs_patterns(call.repo_id, branch)
            staged.append(found)
            if found.size >= LFS_SIZE_THRESHOLD or b"\x00" in found.head or matches_lfs_pattern(path, patterns):
                inline_lfs_bytes += found.size  # sent inline (a Xet-only client), kept as an LFS object
                ops.append(FileOp("add", path, TreeEntry.lfs_file(found.sha256, found.size)))
            else:
                regular_bytes += found.size
                ops.append(FileOp("add", path, TreeEntry(found.sha256, found.size, False, found.git_blob_id())))
        elif key == "lfsFile":
            path = validate_repo_path(value.get("path"))
            oid = value["oid"]  # 64 hex digits, algo sha256: checked by the schema
            size = value.get("size")
            if size is None:  # copies name only the oid
                size = ctx.objects.size_of(oid)
                if size is None:
                    raise UnprocessableUpload(f"{path}: LFS object {oid[:12]}… was never uploaded")
            ops.append(FileOp("add", path, TreeEntry.lfs_file(oid, int(size))))
        elif key == "deletedFile":
            ops.append(FileOp("delete_file", validate_repo_path(value.get("path"))))
        else:  # deletedFolder (the schema allows no other key)
            ops.append(FileOp("delete_folder", validate_repo_path(value["path"].rstrip("/"))))
    if header is None or not header["summary"].strip():
        raise BadRequest("commit needs a header line with a non-empty summary")
    ctx.stats.add(regular_bytes_received=regular_bytes, lfs_bytes_received=inline_lfs_bytes)
    for found in staged:
        found.publish(ctx.objects)
    commit = ctx.repos.commit(call.repo_id, branch, ops, title=str(header["summary"]),
                              message=str(header.get("description") or ""), author=call.user,
                              parent_commit=header.get("parentCommit"))
    ctx.stats.add(commits=1)
    base = ctx.base_url(call.request)
    return JSONResponse({"success": True, "commitOid": commit.oid, "hookOutput": "",
                         "commitUrl": f"{base}{call.repo_id}/commit/{commit.oid}"})


@api_action("GET", "refs", "read")
def _refs(ctx: HubContext, call: ApiCall) -> Response:
    return JSONResponse(refs_json(ctx.repos.refs(call.repo_id)))


@api_action("GET", "commits", "read")
def _commits(ctx: HubContext, call: ApiCall) -> Response:
    return JSONResponse([commit_json(c) for c in ctx.repos.history(call.repo_id, call.rev)])


@api_action("POST", "tag", "write")
def _create_tag(ctx: HubContext, call: ApiCall) -> Response:
    body = _json_body(call, S.CREATE_TAG)
    tag = body["tag"]
    target, notes = ctx.repos.create_tag(call.repo_id, tag, call.rev, str(body.get("message") or ""), by=call.user)
    out = {"name": tag, "ref": f"refs/tags/{tag}", "targetCommit": target}
    if notes:
        out["note"] = " ".join(notes)  # e.g. kept as a plain git tag, and why (clients ignore extra keys)
    return JSONResponse(out)


@api_action("DELETE", "tag", "write")
def _delete_tag(ctx: HubContext, call: ApiCall) -> Response:
    ctx.repos.delete_tag(call.repo_id, call.rev)
    return JSONResponse({})


@api_action("POST", "branch", "write")
def _create_branch(ctx: HubContext, call: ApiCall) -> Response:
    start = _json_body(call, S.CREATE_BRANCH).get("startingPoint")
    target = ctx.repos.create_branch(call.repo_id, call.rev, start, by=call.user)
    return JSONResponse({"name": call.rev, "ref": f"refs/heads/{call.rev}", "targetCommit": target})


@api_action("PUT", "settings", "write")
def _settings(ctx: HubContext, call: ApiCall) -> Response:
    """``update_repo_settings``: who may read a repo follows the server's tokens (and
    ``--public-read``), not per-repo flags, so only 'public' and 'not gated' are accepted."""
    body = _json_body(call, S.REPO_SETTINGS)
    refused = sorted(k for k in body if k not in ("private", "visibility", "gated"))
    if body.get("private") is True or body.get("visibility") not in (None, "public"):
        refused.append("private visibility")
    if body.get("gated") not in (None, False):
        refused.append("gated access")
    if refused:
        raise BadRequest(f"repo settings {', '.join(refused)}: {UNSUPPORTED}; who may read a repo follows the "
                         "server's tokens and --public-read")
    ctx.repos.set_meta(call.repo_id, private=False)
    return JSONResponse({})


@api_action("POST", "super-squash", "write")
def _super_squash(ctx: HubContext, call: ApiCall) -> Response:
    message = str(_json_body(call, S.SUPER_SQUASH).get("message") or f"Super-squash branch '{call.rev}'")
    branch = call.rev[11:] if call.rev.startswith("refs/heads/") else call.rev
    commit = ctx.repos.squash(call.repo_id, branch, message, author=call.user)
    ctx.stats.add(commits=1)
    return JSONResponse({"commitOid": commit.oid})


def _no_xet(ctx: HubContext, call: ApiCall) -> Response:
    raise RouteNotFound(NO_XET)  # a 404, as from a Hub without Xet


api_action("GET", "xet-write-token", "write")(_no_xet)
api_action("GET", "xet-read-token", "read")(_no_xet)


@api_action("DELETE", "branch", "write")
def _delete_branch(ctx: HubContext, call: ApiCall) -> Response:
    ctx.repos.delete_branch(call.repo_id, call.rev)
    return JSONResponse({})


# --- helpers ----------------------------------------------------------------------------------
def _raw_segments(request: Request, skip: int) -> list[str]:
    """Path segments from the undecoded path (so %2F inside a revision stays in one segment)."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    parts = raw.decode("latin-1").split("?", 1)[0].split("/")[1:]
    return [unquote(p) for p in parts[skip:]]


def _upload_signature(secret: bytes, oid: str, size: int, expires: int) -> str:
    return hmac.new(secret, f"{oid}:{size}:{expires}".encode(), "sha256").hexdigest()


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end) inclusive for a single ``bytes=`` range; None = send everything."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].strip().partition("-")
    try:
        if first == "":
            n = int(last)
            start, end = max(size - n, 0), size - 1
        else:
            start = int(first)
            end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or start > end:
        raise _RangeNotSatisfiable()
    return start, min(end, size - 1)


class _RangeNotSatisfiable(Exception):
    pass


# --- app --------------------------------------------------------------------------------------
def create_app(root: str | os.PathLike, token: str | None = None, *, public_read: bool = False,
               user: str = "loradex", auth: TokenAuth | None = None,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               max_commit_bytes: int | None = None, public_url: str | None = None,
               models_page_size: int = 1000,
               line_in_memory_bytes: int = DEFAULT_LINE_IN_MEMORY_BYTES, repo_backend=None,
               secret: bytes | None = None, presigned_downloads: bool = False) -> FastAPI:
    """The Hub-compatible app storing everything under ``<root>/hub/``. ``token``: the Bearer
    token every request must carry (None = no auth); ``public_read`` lets reads through without.
    ``public_url``: the server's address as clients reach it (``serve --public-url``); the URLs
    the app hands out (repo URLs, LFS upload and verify actions) start with it, never with the
    request's ``Host`` header. None: the address the connection came in on.

    ``max_upload_bytes``: the largest file (LFS upload or inline). ``max_commit_bytes``: the
    largest commit body (default: one ``max_upload_bytes`` file in base64 plus
    ``COMMIT_OVERHEAD_BYTES``). ``line_in_memory_bytes``: commit lines up to this long are parsed
    whole, longer ones as a stream (``commit_stream``). ``repo_backend``: where repos are kept
    (``repo_backends``; default: files under ``<root>/hub/repos``). ``secret``: the key signing
    LFS upload URLs (replicas share one, ``shared_secrets``; default: random, this process's).
    ``presigned_downloads``: ``resolve`` answers LFS files with a 302 to a pre-signed URL of the
    object store (``presigned``; S3 only).

    Every route authenticates before it reads a body, then parses the body through its declared
    schema (``request_schemas``): a malformed request without a valid token is a 401, with one
    a 400, never a 500."""
    hub_root = Path(root) / "hub"
    if max_commit_bytes is None:
        max_commit_bytes = 4 * -(-max_upload_bytes // 3) + COMMIT_OVERHEAD_BYTES  # its base64, and the rest
    sweep_incoming(hub_root)  # commit bodies a killed server was receiving
    objects = ObjectStore.for_hub(hub_root)  # local <hub>/objects, or LORADEX_BLOBS's bucket under hub/
    ctx = HubContext(repos=RepoStore(hub_root, objects, backend=repo_backend), objects=objects,
                     auth=auth or TokenAuth(token, public_read=public_read, user=user),
                     stats=TransferStats(), secret=secret or os.urandom(32),
                     max_upload_bytes=max_upload_bytes, max_commit_bytes=max_commit_bytes,
                     public_url=public_url, models_page_size=models_page_size,
                     line_in_memory_bytes=line_in_memory_bytes)
    if presigned_downloads:
        from .presigned import require_presigner

        ctx.presign = require_presigner(objects.backend)
    app = FastAPI(title="loradex hub server", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.hub = ctx

    install_error_handlers(app)  # Hub error JSON, Hub 404, generic 500 without a stack trace

    async def run(fn: Callable, *args):
        return await run_in_threadpool(fn, *args)

    @app.get("/api/whoami-v2")
    async def whoami(request: Request):
        if ctx.auth.token is not None or request.headers.get("authorization"):
            name = ctx.auth.check(request, "read")
        else:
            raise Unauthorized(INVALID_CREDENTIALS)
        scope = getattr(name, "scope", "read" if name == "anonymous" else "write")  # one shared token: write
        if scope not in ("read", "write") or name == "anonymous":  # --public-read: reads, but no identity
            raise Unauthorized(INVALID_CREDENTIALS)
        role = scope
        return {"type": "user", "id": name, "name": name, "fullname": name, "isPro": False, "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "loradex", "role": role}}}

    @app.get("/api/models")
    async def models_list(request: Request):
        namespaces = None  # all
        try:
            ctx.auth.check(request, "read")
        except Unauthorized:
            # no token at all: the public and listed namespaces (``serve namespace set``), if any
            anonymous = getattr(ctx.auth, "anonymous_namespaces", lambda request: None)
            if not (namespaces := anonymous(request)):
                raise
        page, next_url = await run(list_models, ctx.repos, request.query_params, ctx.base_url(request),
                                   ctx.models_page_size, namespaces)
        return JSONResponse(page, headers={"Link": f'<{next_url}>; rel="next"'} if next_url else None)

    @app.post("/api/repos/move")
    async def move_repo(request: Request):
        ctx.auth.check(request, "write")
        raise BadRequest(f"moving or renaming repos is {UNSUPPORTED}: a repo's name is its adapter's name in the "
                         "server's catalog; create the new repo and push to it")

    @app.post("/api/validate-yaml")
    async def validate_yaml(request: Request):
        if request.headers.get("authorization"):  # the Hub validates for anyone; a token sent must be valid
            ctx.auth.check(request, "read")
        body = S.parse_body(await _read_body(request, 4 << 20), S.VALIDATE_YAML, "request body", empty={})
        try:
            data = parse_front_matter(body.get("content", ""))
        except ValueError as exc:  # untrusted.UntrustedData: aliases, nesting, size, syntax
            return JSONResponse({"errors": [{"message": f"Invalid YAML metadata: {exc}"}], "warnings": []},
                                status_code=400)
        if data is not None and not isinstance(data, dict):
            return JSONResponse({"errors": [{"message": "YAML metadata must be a mapping"}], "warnings": []},
                                status_code=400)
        return {"errors": [], "warnings": []}

    @app.post("/api/repos/create")
    async def create_repo(request: Request):
        ctx.auth.check(request, "write")  # who, before reading anything; the namespace once known
        body = S.parse_body(await _read_body(request, 1 << 20), S.CREATE_REPO, "request body", empty={})
        user_name = ctx.auth.check(request, "write", body.get("organization") or None)
        if body.get("type", "model") not in (None, "model"):
            raise BadRequest("only model repos are supported")
        name, org = body["name"], body.get("organization") or user_name
        repo_id = f"{org}/{name}"
        validate_repo_id(repo_id)
        private = body.get("visibility") == "private" or bool(body.get("private"))
        url = f"{ctx.base_url(request)}{repo_id}"
        try:
            await run(lambda: ctx.repos.create_repo(repo_id, private=private, author=user_name))
        except RefExists as exc:  # the client's exist_ok path reads "url" from the 409 body
            return JSONResponse({"error": exc.message, "url": url}, status_code=409, headers=exc.headers())
        return {"url": url, "name": repo_id, "id": repo_id}

    @app.delete("/api/repos/delete")
    async def delete_repo(request: Request):
        ctx.auth.check(request, "write")
        body = S.parse_body(await _read_body(request, 1 << 20), S.DELETE_REPO, "request body", empty={})
        user_name = ctx.auth.check(request, "write", body.get("organization") or None)
        repo_id = f"{body.get('organization') or user_name}/{body.get('name')}"
        validate_repo_id(repo_id)
        await run(ctx.repos.delete_repo, repo_id)
        return {}

    @app.get("/api/_loradex/stats")
    async def stats(request: Request):
        ctx.auth.check(request, "read")
        return ctx.stats.as_dict()

    @app.api_route("/api/models/{rest:path}", methods=["GET", "POST", "PUT", "DELETE"])
    async def models_api(request: Request, rest: str):
        seg = _raw_segments(request, 2)
        if len(seg) < 2:
            raise RouteNotFound("Sorry, we can't find the page you are looking for.")
        repo_id = f"{seg[0]}/{seg[1]}"
        action = seg[2] if len(seg) > 2 else None
        found = API_ACTIONS.get((request.method, action))
        if found is None:
            raise RouteNotFound("Sorry, we can't find the page you are looking for.")
        scope, handler = found
        user_name = ctx.auth.check(request, scope, seg[0])
        validate_repo_id(repo_id)
        rev = seg[3] if len(seg) > 3 else None
        if action not in (None, "refs", "settings") and not rev:
            raise BadRequest(f"{action} needs a revision in the URL")
        path = "/".join(seg[4:])
        if (request.method, action) == ("POST", "commit"):  # the one body that may hold whole files
            if _flag(request.query_params.get("create_pr")):
                raise BadRequest(NO_PULL_REQUESTS)
            await run(ctx.repos.require, repo_id)  # before reading what may be gigabytes
            async with received_commit(request, hub_root, ctx.commit_limits) as lines:
                return await run(_checked, handler, ctx, ApiCall(request, repo_id, rev, path, lines, user_name))
        body = await _read_body(request, MAX_REQUEST_BYTES) if request.method not in ("GET", "HEAD") else b""
        call = ApiCall(request, repo_id, rev, path, body, user_name)
        return await run(_checked, handler, ctx, call)

    @app.post("/{ns}/{name}.git/info/lfs/objects/batch")
    async def lfs_batch(request: Request, ns: str, name: str):
        # only uploads are served, so the batch API needs write access before its body is read
        ctx.auth.check(request, "write", ns)
        body = S.parse_body(await _read_body(request, 16 << 20), S.LFS_BATCH, "LFS batch request")
        repo_id = f"{ns}/{name}"
        await run(ctx.repos.require, repo_id)
        if body["operation"] != "upload":
            raise BadRequest("only the 'upload' LFS operation is served; download with /resolve")
        base, out = ctx.base_url(request), []
        for obj in body["objects"]:
            oid, size = obj.get("oid"), obj.get("size")
            if not is_sha256_hex(oid) or not isinstance(size, int) or size < 0:
                out.append({"oid": str(oid), "size": size if isinstance(size, int) else 0,
                            "error": {"code": 422, "message": "oid must be 64 hex digits and size >= 0"}})
            elif size > ctx.max_upload_bytes:
                out.append({"oid": oid, "size": size,
                            "error": {"code": 413, "message": f"over the upload limit of {ctx.max_upload_bytes}"}})
            elif ctx.objects.has(oid, size):
                out.append({"oid": oid, "size": size, "authenticated": True})  # no actions: nothing to send
            else:
                expires = int(time.time()) + UPLOAD_URL_TTL_S
                sig = _upload_signature(ctx.secret, oid, size, expires)
                out.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                    "upload": {"href": f"{base}api/_loradex/lfs-upload/{oid}?size={size}&expires={expires}&sig={sig}",
                               "expires_in": UPLOAD_URL_TTL_S},
                    "verify": {"href": f"{base}{repo_id}.git/info/lfs/objects/verify"},
                }})
        return JSONResponse({"transfer": "basic", "objects": out, "hash_algo": "sha256"},
                            media_type="application/vnd.git-lfs+json")

    @app.put("/api/_loradex/lfs-upload/{oid}")
    async def lfs_upload(request: Request, oid: str):
        # The client sends this PUT without its auth headers (it is meant for pre-signed URLs),
        # so the URL itself carries the authorisation: an HMAC over oid, size and expiry.
        q = request.query_params
        try:
            size, expires = int(q.get("size", "")), int(q.get("expires", ""))
        except ValueError:
            raise Forbidden("upload URL is malformed") from None
        if not is_sha256_hex(oid) or expires < time.time() or not hmac.compare_digest(
                q.get("sig", ""), _upload_signature(ctx.secret, oid, size, expires)):
            raise Forbidden("upload URL is invalid or expired; ask the LFS batch endpoint for a new one")
        ctx.stats.add(lfs_uploads=1)
        await ctx.objects.put_stream(request.stream(), oid, size,
                                     on_bytes=lambda n: ctx.stats.add(lfs_bytes_received=n))
        return Response(status_code=200)

    @app.post("/{ns}/{name}.git/info/lfs/objects/verify")
    async def lfs_verify(request: Request, ns: str, name: str):
        ctx.auth.check(request, "write", ns)
        await run(ctx.repos.require, f"{ns}/{name}")
        body = S.parse_body(await _read_body(request, 1 << 20), S.LFS_VERIFY, "LFS verify request")
        oid, size = body["oid"], body["size"]
        if not ctx.objects.has(oid, size):
            raise UnprocessableUpload(f"object {oid} ({size} bytes) is not stored")
        return JSONResponse({"message": "ok"}, media_type="application/vnd.git-lfs+json")

    @app.api_route("/{ns}/{name}/resolve/{rest:path}", methods=["GET", "HEAD"])
    async def resolve(request: Request, ns: str, name: str, rest: str):
        ctx.auth.check(request, "read", ns, download=True)
        seg = _raw_segments(request, 3)
        if len(seg) < 2:
            raise RouteNotFound("resolve needs /{revision}/{path}")
        repo_id, rev, path = f"{ns}/{name}", seg[0], "/".join(seg[1:])
        validate_repo_id(repo_id)
        validate_repo_path(path)
        commit = await run(ctx.repos.resolve, repo_id, rev)
        entry = commit.tree.get(path)
        if entry is None:
            raise EntryNotFound(f"{path} does not exist at {rev}", commit=commit.oid)
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes",
                   "ETag": f'"{entry.sha256 if entry.lfs else entry.blob_id}"'}
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        if entry.lfs and entry.size and ctx.presign is not None:
            # like the Hub's CDN redirect: the client reads X-Linked-* here and fetches the bytes from
            # the store without its token (another origin)
            url = await run(ctx.presign, entry.sha256, path)
            return Response(status_code=302, headers={**headers, "Location": url})
        if request.method == "HEAD":
            headers["Content-Length"] = str(entry.size)
            return Response(status_code=200, headers=headers, media_type="application/octet-stream")
        try:
            span = _parse_range(request.headers.get("range"), entry.size)
        except _RangeNotSatisfiable:
            return JSONResponse({"error": "Requested range not satisfiable"}, status_code=416,
                                headers={"Content-Range": f"bytes */{entry.size}", **headers})
        start, end = span if span else (0, entry.size - 1)
        status = 206 if span else 200
        if span:
            headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        headers["Content-Length"] = str(max(end - start + 1, 0))
        body = _counted(ctx.objects.iter_range(entry.sha256, start, end), ctx.stats) if entry.size else iter(())
        return StreamingResponse(body, status_code=status, headers=headers, media_type="application/octet-stream")

    return app


def _counted(chunks, stats: TransferStats):
    for chunk in chunks:
        stats.add(bytes_served=len(chunk))
        yield chunk


def _checked(handler: ApiHandler, ctx: HubContext, call: ApiCall) -> Response:
    """Run an action after checking the repo exists: the client tells RepoNotFound from
    RevisionNotFound by X-Error-Code, so the repo check must come first."""
    ctx.repos.require(call.repo_id)
    return handler(ctx, call)
