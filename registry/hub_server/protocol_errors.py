"""Errors the Hub-compatible server answers with, and how they look on the wire.

The real ``huggingface_hub`` client decides which exception to raise from the ``X-Error-Code``
header (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) and from ``X-Error-Message``
("Invalid credentials in Authorization header" turns a 401 into a plain auth error instead of a
"repository not found"). Each class carries its HTTP status and those header values; the app turns
any of them into ``{"error": message}`` with the headers set.
"""

from __future__ import annotations

from ..errors import AlreadyExists, AuthError, Conflict, LoradexError, NotFound, UsageError


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
