"""Errors the Hub-compatible server answers with, and how they look on the wire.

The real ``huggingface_hub`` client decides which exception to raise from the ``X-Error-Code``
header (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) and from ``X-Error-Message``
("Invalid credentials in Authorization header" turns a 401 into a plain auth error instead of a
"repository not found"). Each class carries its HTTP status and those header values; the app turns
any of them into ``{"error": message}`` with the headers set.
"""

from __future__ import annotations

import os
import re

from ...errors import AlreadyExists, AuthError, Conflict, LoradexError, NotFound, UsageError


class HubProtocolError(LoradexError):
    status = 500
    error_code: str | None = None

    def headers(self) -> dict[str, str]:
        # header values must be printable ASCII: no newlines (header injection), no "…"
        text = "".join(ch if " " <= ch <= "~" else ("..." if ch == "\u2026" else "?") for ch in self.message)
        out = {"X-Error-Message": text[:500]}
        if self.error_code:
            out["X-Error-Code"] = self.error_code
        return out


class RepoNotFound(HubProtocolError, NotFound):
    status = 404
    error_code = "RepoNotFound"


class RevisionNotFound(HubProtocolError, NotFound):
    status = 404
    error_code = "RevisionNotFound"


class EntryNotFound(HubProtocolError, NotFound):
    status = 404
    error_code = "EntryNotFound"

    def __init__(self, message: str, *, commit: str | None = None):
        super().__init__(message)
        self.commit = commit  # sent as X-Repo-Commit so the client can cache the absence

    def headers(self) -> dict[str, str]:
        out = super().headers()
        if self.commit:
            out["X-Repo-Commit"] = self.commit
        return out


class RouteNotFound(HubProtocolError, NotFound):
    status = 404


class BadRequest(HubProtocolError, UsageError):
    status = 400


class Unauthorized(HubProtocolError, AuthError):
    status = 401


class Forbidden(HubProtocolError, AuthError):
    status = 403


class RefExists(HubProtocolError, AlreadyExists):
    status = 409


class StaleParent(HubProtocolError, Conflict):
    """``parentCommit`` given with the commit is no longer the head of the branch."""

    status = 412


class TooLarge(HubProtocolError, UsageError):
    status = 413


class UnprocessableUpload(HubProtocolError, UsageError):
    """An LFS object whose bytes do not match its oid/size, or a commit naming one never uploaded."""

    status = 422


# --- how every served app answers errors and caps bodies (Hub app, `loradex serve`, Civitai API) ----
NOT_FOUND_MESSAGE = "Sorry, we can't find the page you are looking for."  # the Hub's own wording
INTERNAL_ERROR_MESSAGE = "Internal server error; the server log has the details"


def install_error_handlers(app) -> None:
    """Every error leaves as ``{"error": message}`` (the Hub's error JSON; Civitai's has the same
    key): protocol errors with their status and headers, unknown paths as the Hub's 404, and any
    unexpected exception as a generic 500 — never a stack trace or exception text."""
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(HubProtocolError)
    async def _protocol_error(request, exc: HubProtocolError):
        exc.message = scrub_paths(exc.message)  # a catalog error may name a file of the server
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers())

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        message = NOT_FOUND_MESSAGE if exc.status_code == 404 else scrub_paths(str(exc.detail))
        return JSONResponse({"error": message}, status_code=exc.status_code, headers={"X-Error-Message": message})

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        log_unexpected(request, exc)
        return JSONResponse({"error": INTERNAL_ERROR_MESSAGE}, status_code=500,
                            headers={"X-Error-Message": INTERNAL_ERROR_MESSAGE})


def log_unexpected(request, exc: BaseException) -> None:
    """An unexpected exception while answering ``request``: its traceback goes to the server's log
    (stderr under ``loradex serve``), never into the answer."""
    import logging

    where = f"{request.method} {request.url.path}" if request is not None else "?"
    logging.getLogger("loradex.server").error("internal error answering %s", where, exc_info=exc)


async def read_body_capped(request, limit: int) -> bytes:
    """The request body, refused with a 413 (``TooLarge``) as soon as it is over ``limit`` bytes,
    by its declared Content-Length or by what arrives."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"request body of {declared} bytes is over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# --- what answers may say about the server -------------------------------------------------------
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])(?:~|/[^\s'\"/]+)(?:/[^\s'\"/,;)]+)+/?")
HIDDEN_PATH = "<server path>"


def scrub_paths(text: str) -> str:
    """``text`` with every absolute file-system path of this machine replaced by ``<server
    path>``: a path is a ``/a/b…`` run whose first component exists at the root of this machine's
    file system (``/tmp``, ``/home``, ``/srv``…), so URL paths such as ``/api/models/…`` and repo
    paths stay readable. Error answers go through this: they never tell a client where the
    server keeps its home."""
    def hide(m: re.Match) -> str:
        found = m.group(0)
        if found.startswith("~"):
            return HIDDEN_PATH
        first = found[1:].split("/", 1)[0]
        return HIDDEN_PATH if os.path.lexists("/" + first) else found

    return _ABSOLUTE_PATH.sub(hide, text) if "/" in text else text


def public_base_url(request, configured: str | None) -> str:
    """The URL, ending in ``/``, that links handed to clients start with: the configured public
    URL (``serve --public-url``), else the address the connection arrived on (the listening
    socket, known to the server), never the request's ``Host`` header, which the client writes."""
    if configured:
        return configured if configured.endswith("/") else configured + "/"
    scheme = request.scope.get("scheme") or "http"
    server = request.scope.get("server")
    if not server:  # an in-process test client: nothing was listened on
        return "http://localhost/"
    host, port = server[0], server[1]
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}/" if port in (None, default) else f"{scheme}://{host}:{port}/"
