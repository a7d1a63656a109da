"""Web sessions: signing in exchanges an API token for a server-side session.

The browser holds a random session id in the ``loradex_session`` cookie (HttpOnly,
SameSite=Strict, Secure over https, Path=/); the catalog's ``web_sessions`` table holds only its
sha256, the token's name/scope/namespace, an expiry and the session's CSRF secret. The row is
bound to the token it was opened with by ``credential_check`` = sha256(session id + the token's
digest): revoking the token, or restarting the server with another admin token, ends the
session, and nothing in the row lets a reader of the database rebuild a cookie or a token.

One-time login tickets (``loradex ui``): ``issue_ticket(app, token)`` returns a random ticket,
valid once for ``TICKET_SECONDS``, kept in the server's memory (sha256 only) and exchanged at
``/ui/login/once/{ticket}`` for a session of that token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, select

from ..tokens import Principal, token_digest

SESSION_HOURS = 12
TICKET_SECONDS = 120
MAX_TICKETS = 100


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _credential_check(session_id: str, credential_digest: str) -> str:
    return _sha(session_id + "\0" + credential_digest)


def _credential_digest(authorizer, principal: Principal) -> str | None:
    """The digest of the token ``principal`` stands for, as the server knows it now (None: the
    token is gone — revoked, or the admin token unset)."""
    if principal.token_id is None:
        return authorizer._admin_digest if principal.admin else None
    from ...catalog.db_schema import ServeTokenRow
    from ..tokens import SCOPES

    return authorizer.catalog.read(lambda s: s.scalar(select(ServeTokenRow.token_sha256).where(
        ServeTokenRow.id == principal.token_id, ServeTokenRow.revoked_at.is_(None),
        ServeTokenRow.scope.in_(SCOPES))))


def sign_in(catalog, authorizer, secret: str) -> tuple[str, Principal] | None:
    """A new session for the token ``secret``: (session id for the cookie, principal), or None
    when the server does not know the token."""
    if not isinstance(secret, str) or not secret or len(secret) > 1000:
        return None
    principal = authorizer.lookup(secret.strip())
    if principal is None:
        return None
    return open_session(catalog, principal, token_digest(secret.strip())), principal


def open_session(catalog, principal: Principal, credential_digest: str) -> str:
    from ...catalog.db_schema import WebSessionRow

    session_id = secrets.token_urlsafe(32)
    now = datetime.now(timezone.utc)

    def run(s):
        s.execute(delete(WebSessionRow).where(WebSessionRow.expires_at < now))  # forget expired ones
        s.add(WebSessionRow(session_sha256=_sha(session_id),
                            credential_check=_credential_check(session_id, credential_digest),
                            token_id=principal.token_id, token_name=principal.name[:100], scope=principal.scope,
                            namespace=principal.namespace, csrf_secret=secrets.token_urlsafe(32),
                            created_at=now, expires_at=now + timedelta(hours=SESSION_HOURS)))

    catalog.transact(run)
    return session_id


def lookup_session(catalog, authorizer, session_id: str) -> tuple[Principal, str] | None:
    """(principal, CSRF token) of a live session, or None (unknown, expired, or its token gone)."""
    from ...catalog.db_schema import WebSessionRow

    if not isinstance(session_id, str) or not 20 <= len(session_id) <= 100:
        return None
    digest = _sha(session_id)
    now = datetime.now(timezone.utc)
    row = catalog.read(lambda s: s.scalar(select(WebSessionRow).where(WebSessionRow.session_sha256 == digest)))
    if row is None or _aware(row.expires_at) <= now:
        return None
    principal = Principal(row.token_name, row.scope, row.namespace, row.token_id,
                          admin=row.token_id is None and row.scope == "write")
    credential = _credential_digest(authorizer, principal)
    if credential is None or not hmac.compare_digest(_credential_check(session_id, credential), row.credential_check):
        return None
    return principal, row.csrf_secret


def end_session(catalog, session_id: str | None) -> None:
    from ...catalog.db_schema import WebSessionRow

    if isinstance(session_id, str) and session_id:
        digest = _sha(session_id)
        catalog.transact(lambda s: s.execute(delete(WebSessionRow).where(WebSessionRow.session_sha256 == digest)))


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


# --- one-time login tickets ----------------------------------------------------------------------

class Tickets:
    """One-time login tickets held in memory: ticket digest → (expiry, token secret)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._tickets: dict[str, tuple[float, str]] = {}

    def issue(self, secret: str, seconds: float = TICKET_SECONDS) -> str:
        ticket = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self._tickets = {k: v for k, v in self._tickets.items() if v[0] > now}
            if len(self._tickets) >= MAX_TICKETS:
                self._tickets.pop(next(iter(self._tickets)))
            self._tickets[_sha(ticket)] = (now + seconds, secret)
        return ticket

    def redeem(self, ticket: str) -> str | None:
        """The token secret of a valid ticket, which is then used up; else None."""
        if not isinstance(ticket, str) or len(ticket) > 100:
            return None
        with self._lock:
            found = self._tickets.pop(_sha(ticket), None)
        if found is None or found[0] <= time.monotonic():
            return None
        return found[1]


def tickets_of(app) -> Tickets:
    if not hasattr(app.state, "web_tickets"):
        app.state.web_tickets = Tickets()
    return app.state.web_tickets


def issue_ticket(app, secret: str, seconds: float = TICKET_SECONDS) -> str:
    """A one-time login link's ticket for the token ``secret`` (``loradex ui``)."""
    return tickets_of(app).issue(secret, seconds)
