"""Signing keys of ``loradex serve``: the Civitai download redirects and the Hub's LFS upload
URLs carry an HMAC that the replica serving the next request must check. On a server database
(PostgreSQL: several replicas behind a load balancer) the key is one row of ``server_secrets``,
created by whichever replica asks first; on the SQLite catalog (one server) it is a random key of
this process, as before (a read-only home can still serve)."""

from __future__ import annotations

import secrets
import threading

_LOCAL: dict[tuple[int, str], bytes] = {}
_GUARD = threading.Lock()


def server_secret(catalog, purpose: str) -> bytes:
    if catalog is None or catalog.url.startswith("sqlite"):
        with _GUARD:
            return _LOCAL.setdefault((id(catalog), purpose), secrets.token_bytes(32))
    return bytes.fromhex(catalog.transact(lambda s: _get_or_create(s, purpose)))


def _get_or_create(s, purpose: str) -> str:
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    from ..catalog.db_schema import ServerSecretRow

    # INSERT … ON CONFLICT DO NOTHING, then read: two replicas starting together agree on one key
    s.execute(pg_insert(ServerSecretRow).values(name=purpose, value=secrets.token_hex(32))
              .on_conflict_do_nothing(index_elements=["name"]))
    return s.get(ServerSecretRow, purpose).value
