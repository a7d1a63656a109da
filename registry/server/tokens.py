"""API tokens of ``loradex serve`` and the check every request goes through.

Tokens are created with ``loradex serve token create --scope read|write [--namespace N]``; the
secret is printed once and only its sha256 is stored (``serve_tokens`` table of the catalog), so
neither the catalog nor a backup of it can be replayed against the server. A presented token is
hashed and looked up by digest; the digests are then compared with ``hmac.compare_digest``.

Scopes: ``read`` may read; ``write`` may read and write; ``approve`` may read and decide promotion
requests of protected aliases (``alias approve|reject``; registry/catalog/promotions.py). A token with a namespace may write only
repos under ``NAMESPACE/`` (reads are not restricted), and the Hub's ``whoami`` answers with that
namespace, so ``loradex push`` puts repos there by default. ``$LORADEX_SERVE_TOKEN`` still works:
it is one write-scoped admin token without a namespace (backwards compatibility).

Public namespaces (``loradex serve namespace set NAME --public``): the metadata of a public
namespace's adapters is readable without a token (the Civitai-style API's models, versions,
by-hash, search, images), and so are its files unless ``--downloads token`` keeps them for token
holders. The setting is one row of the same ``serve_tokens`` table, so it needs no schema of its
own: name ``ns:NAME`` (``:`` is not allowed in token names), scope ``ns-public`` or ``ns-listed``
(metadata only), and a digest derived from the name (``NAMESPACE_DIGEST_SALT``), not from any
secret. Such rows are never tokens: every token query filters on ``scope IN SCOPES``. Making a
namespace private deletes its row. Adapters the server's home made itself (``add``, ``pull``)
belong to ``HOME_NAMESPACE``, the name ``whoami`` gives tokens without a namespace.

Tokens are taken from ``Authorization: Bearer`` only. ``?token=`` in the URL is refused (URLs end
up in proxy and access logs), except where a route asks for it (the Civitai-style read API: the
Civitai API documents ``?token=`` and webui downloaders send it that way) and only for reads.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select

from ..errors import AlreadyExists, NotFound, UntrustedData, UsageError
from ..untrusted import positive_int

SCOPES = ("read", "write", "approve")
TOKEN_PREFIX = "ldx_"
ADMIN_TOKEN_NAME = "$LORADEX_SERVE_TOKEN"
TOKEN_NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"  # huggingface_hub keys on this text
WRITE_STATE_KEY = "loradex.write"  # request.state entry the audit log reads (who attempted a write)
HOME_NAMESPACE = "loradex"  # the home's own adapters; whoami's name for a token without a namespace
VISIBILITY_SCOPE = {"public": "ns-public", "listed": "ns-listed"}  # serve_tokens.scope of a setting row
NAMESPACE_ROW_PREFIX = "ns:"
NAMESPACE_DIGEST_SALT = "loradex serve namespace setting\0"


@dataclass(frozen=True)
class ServeToken:
    """A stored token, without its secret."""

    id: int
    name: str
    scope: str
    namespace: str | None
    created_at: datetime
    revoked_at: datetime | None

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "scope": self.scope, "namespace": self.namespace,
                "created_at": self.created_at.isoformat(),
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None}


@dataclass(frozen=True)
class CreatedToken:
    """What ``token create`` returns: the record and the secret (shown this once, never stored)."""

    token: ServeToken
    secret: str

    def to_dict(self) -> dict:
        return {**self.token.to_dict(), "token": self.secret}


@dataclass(frozen=True)
class Principal:
    """Who a request is: a stored token, the admin token, or anonymous (``--public-read``)."""

    name: str
    scope: str
    namespace: str | None = None
    token_id: int | None = None
    admin: bool = False  # the server's admin token ($LORADEX_SERVE_TOKEN, or the one `loradex ui` makes)


ANONYMOUS = Principal("anonymous", "none")


def token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _entity(row) -> ServeToken:
    return ServeToken(row.id, row.name, row.scope, row.namespace, row.created_at, row.revoked_at)


def create_token(catalog, scope: str, *, namespace: str | None = None, name: str | None = None) -> CreatedToken:
    from ..catalog.db_schema import ServeTokenRow
    from .hub.repo_store import REPO_PART_RE

    if scope not in SCOPES:
        raise UsageError(f"unknown scope {scope!r}: use read, write or approve")
    if namespace is not None:
        if scope not in ("write", "approve"):
            raise UsageError("--namespace limits what a token may write or approve: use it with --scope write "
                             "or --scope approve")
        if not REPO_PART_RE.fullmatch(namespace):
            raise UsageError(f"invalid namespace {namespace!r}: letters, digits, '.', '_', '-'")
    if name is not None and not TOKEN_NAME_RE.fullmatch(name):
        raise UsageError(f"invalid token name {name!r}: letters, digits, '.', '_', '-' (at most 100)")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)

    def run(s):
        if name is not None and s.scalar(select(ServeTokenRow.id).where(ServeTokenRow.name == name)):
            raise AlreadyExists(f"a token named {name!r} already exists; pick another --name "
                                "(or `loradex serve token revoke` the old one)")
        row = ServeTokenRow(name=name or f"pending-{secrets.token_hex(8)}", token_sha256=token_digest(secret),
                            scope=scope, namespace=namespace, created_at=datetime.now(timezone.utc))
        s.add(row)
        s.flush()
        if name is None:
            row.name = f"token-{row.id}"
        return _entity(row)

    return CreatedToken(catalog.transact(run), secret)


def list_tokens(catalog) -> list[ServeToken]:
    from ..catalog.db_schema import ServeTokenRow

    return catalog.read(lambda s: [_entity(r) for r in s.scalars(
        select(ServeTokenRow).where(ServeTokenRow.scope.in_(SCOPES)).order_by(ServeTokenRow.id))])


def revoke_token(catalog, name_or_id: str) -> ServeToken:
    """Revoke by name or id; the row stays (the audit log refers to it), the token stops working."""
    from ..catalog.db_schema import ServeTokenRow

    try:  # an id only when it is one a row can have (a 30-digit number is a name, found by no row)
        token_id = positive_int(name_or_id, "serve token revoke")
    except UntrustedData:
        token_id = None

    def run(s):
        cond = ServeTokenRow.name == name_or_id
        if token_id is not None:
            cond = cond | (ServeTokenRow.id == token_id)
        row = s.scalar(select(ServeTokenRow).where(cond, ServeTokenRow.scope.in_(SCOPES)).limit(1))
        if row is None:
            raise NotFound(f"no serve token named {name_or_id!r}; see `loradex serve token list`")
        if row.revoked_at is None:
            row.revoked_at = datetime.now(timezone.utc)
        return _entity(row)

    return catalog.transact(run)


def has_active_tokens(catalog) -> bool:
    from ..catalog.db_schema import ServeTokenRow

    return catalog.read(lambda s: s.scalar(select(ServeTokenRow.id).where(
        ServeTokenRow.revoked_at.is_(None), ServeTokenRow.scope.in_(SCOPES)).limit(1)) is not None)


# --- namespace visibility ------------------------------------------------------------------------

@dataclass(frozen=True)
class NamespaceSetting:
    """A namespace's visibility: ``public`` (metadata and files without a token), ``listed``
    (metadata without a token, files with one) or ``private`` (a token for everything)."""

    namespace: str
    visibility: str

    def to_dict(self) -> dict:
        return {"namespace": self.namespace, "visibility": self.visibility,
                "metadata": "anyone" if self.visibility != "private" else "token",
                "downloads": "anyone" if self.visibility == "public" else "token"}


def set_namespace_visibility(catalog, namespace: str, visibility: str) -> NamespaceSetting:
    from ..catalog.db_schema import ServeTokenRow
    from .hub.repo_store import REPO_PART_RE

    if not isinstance(namespace, str) or not REPO_PART_RE.fullmatch(namespace):
        raise UsageError(f"invalid namespace {str(namespace)[:100]!r}: letters, digits, '.', '_', '-'")
    if visibility not in (*VISIBILITY_SCOPE, "private"):
        raise UsageError(f"unknown visibility {visibility!r}: use public, listed or private")
    name = NAMESPACE_ROW_PREFIX + namespace

    def run(s):
        row = s.scalar(select(ServeTokenRow).where(ServeTokenRow.name == name))
        if visibility == "private":
            if row is not None:
                s.delete(row)
            return
        if row is None:
            row = ServeTokenRow(name=name, token_sha256=token_digest(NAMESPACE_DIGEST_SALT + namespace),
                                scope=VISIBILITY_SCOPE[visibility], namespace=namespace,
                                created_at=datetime.now(timezone.utc))
            s.add(row)
        row.scope = VISIBILITY_SCOPE[visibility]

    catalog.transact(run)
    return NamespaceSetting(namespace, visibility)


def namespace_settings(catalog) -> dict[str, str]:
    """Namespace → ``public`` | ``listed`` for every namespace that is not private."""
    from ..catalog.db_schema import ServeTokenRow

    by_scope = {v: k for k, v in VISIBILITY_SCOPE.items()}
    return catalog.read(lambda s: {
        r.namespace: by_scope[r.scope] for r in s.scalars(select(ServeTokenRow).where(
            ServeTokenRow.scope.in_(list(by_scope)), ServeTokenRow.namespace.is_not(None)))})


def _bearer(request) -> str | None:
    header = request.headers.get("authorization") or ""
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return None


class ServeAuthorizer:
    """The server's auth check. ``check`` returns the :class:`Principal` or raises the Hub's
    ``Unauthorized`` (no or unknown token, 401) or ``Forbidden`` (valid token, not allowed, 403);
    calling the object answers the same as a bool (``state.authorize(request, scope)``).

    ``namespace``: the namespace of the repo a write goes to; None means the caller's own
    namespace (a Hub ``repos/create`` without an organization)."""

    def __init__(self, catalog=None, admin_token: str | None = None, *, public_read: bool = False,
                 admin_name: str | None = None):
        """``admin_name``: who the admin token is in audit rows, alias moves and reviews
        (default ``$LORADEX_SERVE_TOKEN``; ``loradex ui`` passes the local user)."""
        self.catalog = catalog
        self.public_read = public_read
        self.admin_name = admin_name or ADMIN_TOKEN_NAME
        self._admin_digest = token_digest(admin_token) if admin_token else None

    def lookup(self, secret: str) -> Principal | None:
        digest = token_digest(secret)
        if self._admin_digest is not None and hmac.compare_digest(digest, self._admin_digest):
            return Principal(self.admin_name, "write", admin=True)
        if self.catalog is None:
            return None
        from ..catalog.db_schema import ServeTokenRow

        row = self.catalog.read(lambda s: s.scalar(select(ServeTokenRow).where(
            ServeTokenRow.token_sha256 == digest, ServeTokenRow.revoked_at.is_(None),
            ServeTokenRow.scope.in_(SCOPES))))
        if row is None or not hmac.compare_digest(row.token_sha256, digest):
            return None
        return Principal(row.name, row.scope, row.namespace, row.id)

    def public_namespaces(self) -> dict[str, str]:
        """Namespace → ``public`` | ``listed`` (see :func:`namespace_settings`); read per request,
        so ``serve namespace set`` takes effect at once."""
        return namespace_settings(self.catalog) if self.catalog is not None else {}

    def _open_to_anonymous(self, namespace: str | None, download: bool) -> bool:
        """A read of ``namespace`` without a token: metadata of a public or listed namespace,
        files of a public one (``serve namespace set``)."""
        if namespace is None:
            return False
        seen = self.public_namespaces().get(namespace)
        return seen == "public" or (seen == "listed" and not download)

    @staticmethod
    def presents_token(request) -> bool:
        """The request carries a token (header or ``?token=``), valid or not."""
        return _bearer(request) is not None or bool(request.query_params.get("token"))

    def check(self, request, scope: str = "read", namespace: str | None = None, *,
              query_token: bool = False, download: bool = False) -> Principal:
        from .hub.protocol_errors import Forbidden, Unauthorized

        secret = _bearer(request)
        in_query = request.query_params.get("token")
        if secret is None and in_query and query_token and scope == "read":
            secret = in_query
        state = request.scope.setdefault("state", {})
        if secret is None:
            if scope == "read" and (self.public_read or self._open_to_anonymous(namespace, download)):
                return ANONYMOUS
            if scope == "write":
                state[WRITE_STATE_KEY] = ANONYMOUS
            if in_query:
                raise Unauthorized("tokens in the URL (?token=) are refused here: send 'Authorization: Bearer <token>'")
            raise Unauthorized(f"Authorization required ({scope} access): send 'Authorization: Bearer <token>'")
        principal = self.lookup(secret)
        if scope == "write":
            state[WRITE_STATE_KEY] = principal or Principal("invalid-token", "none")
        if principal is None:
            raise Unauthorized(INVALID_CREDENTIALS)
        if scope == "write" and principal.scope != "write":
            raise Forbidden(f"token {principal.name!r} is read-only: writes need a token created with --scope write")
        if scope == "approve" and not (principal.admin or principal.scope == "approve"):
            raise Forbidden(f"token {principal.name!r} may not decide promotion requests: that needs a token "
                            "created with --scope approve")
        if scope in ("write", "approve") and principal.namespace is not None \
                and namespace not in (None, principal.namespace):
            raise Forbidden(f"token {principal.name!r} may only write repos under {principal.namespace}/, "
                            f"not {namespace}/")
        return principal

    def __call__(self, request, scope: str = "read", namespace: str | None = None, *,
                 query_token: bool = False) -> bool:
        from ..errors import AuthError

        try:
            self.check(request, scope, namespace, query_token=query_token)
        except AuthError:
            return False
        return True
