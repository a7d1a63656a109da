"""`loradex serve` authentication and hardening (issues 7 and 9): writes always need a write
token, Hub-style errors without stack traces, the hashed token store with scopes and namespaces,
the audit log of writes, rate limiting, CORS off, request size caps."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from loradex.registry.catalog import Catalog
from loradex.registry.server_app import build_server_app

ADMIN = "admin-token-0c9f3e7a1b"


@pytest.fixture
def catalog(tmp_path):
    return Catalog(tmp_path / "server-home")


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_public_read_without_a_token_opens_reads_but_never_writes(catalog):
    with TestClient(build_server_app(catalog, None, public_read=True)) as client:
        assert client.get("/api/v1/models").status_code == 200
        r = client.post("/api/repos/create", json={"name": "style", "organization": "team"})
        assert r.status_code == 401, r.text
        assert not (catalog.home / "mirror" / "hub" / "repos").exists() or not any(
            (catalog.home / "mirror" / "hub").rglob("style*"))
        # a made-up token does not help either
        r = client.post("/api/repos/create", json={"name": "style", "organization": "team"},
                        headers=_bearer("anything"))
        assert r.status_code == 401
