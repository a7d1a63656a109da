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


def test_unknown_endpoints_answer_in_the_hub_error_json(catalog):
    with TestClient(build_server_app(catalog, ADMIN)) as client:
        for method, path in [("GET", "/no/such/page/at/all"), ("GET", "/api/nothing-here"),
                             ("POST", "/api/v2/whatever")]:
            r = client.request(method, path, headers=_bearer(ADMIN))
            assert r.status_code == 404, (path, r.status_code)
            assert r.json() == {"error": "Sorry, we can't find the page you are looking for."}
            assert r.headers["x-error-message"] == r.json()["error"]


def test_an_unexpected_exception_is_a_generic_500_without_a_stack_trace(catalog):
    from fastapi import APIRouter

    app_ = build_server_app(catalog, ADMIN)
    router = APIRouter()

    @router.get("/api/v1/boom")
    def boom():
        raise RuntimeError("secret internal detail /srv/path/catalog.db")

    app_.include_router(router)
    with TestClient(app_, raise_server_exceptions=False) as client:
        r = client.get("/api/v1/boom", headers=_bearer(ADMIN))
    assert r.status_code == 500
    assert r.json() == {"error": "Internal server error; the server log has the details"}
    assert "Traceback" not in r.text and "secret internal detail" not in r.text and "RuntimeError" not in r.text


def test_hub_paths_of_serve_raise_no_stack_trace_either(catalog, monkeypatch):
    """An unexpected failure inside the mounted Hub app is the same generic 500."""
    from loradex.registry.hub_server import repo_store

    def broken(self, *a, **kw):
        raise OSError("disk exploded at /very/private/path")

    monkeypatch.setattr(repo_store.RepoStore, "create_repo", broken)
    with TestClient(build_server_app(catalog, ADMIN), raise_server_exceptions=False) as client:
        r = client.post("/api/repos/create", json={"name": "style", "organization": "team"}, headers=_bearer(ADMIN))
    assert r.status_code == 500 and r.json() == {"error": "Internal server error; the server log has the details"}
    assert "/very/private/path" not in r.text
