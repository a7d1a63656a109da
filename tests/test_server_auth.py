"""`loradex serve` authentication and hardening (issues 7 and 9): writes always need a write
token, Hub-style errors without stack traces, the hashed token store with scopes and namespaces,
the audit log of writes, rate limiting, CORS off, request size caps."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from loradex.registry.catalog.store import Catalog
from loradex.registry.server.app import build_server_app

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
    from loradex.registry.server.hub import repo_store

    def broken(self, *a, **kw):
        raise OSError("disk exploded at /very/private/path")

    monkeypatch.setattr(repo_store.RepoStore, "create_repo", broken)
    with TestClient(build_server_app(catalog, ADMIN), raise_server_exceptions=False) as client:
        r = client.post("/api/repos/create", json={"name": "style", "organization": "team"}, headers=_bearer(ADMIN))
    assert r.status_code == 500 and r.json() == {"error": "Internal server error; the server log has the details"}
    assert "/very/private/path" not in r.text


# --- the token store -------------------------------------------------------------------------
def _cli(*args):
    import json

    from typer.testing import CliRunner

    from loradex.cli.app import app

    r = CliRunner().invoke(app, list(args))
    return r, (json.loads(r.stdout) if "--json" in args and r.exit_code == 0 else None)


def _home_bytes(home) -> bytes:
    return b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())


def test_token_is_shown_once_and_stored_only_as_its_sha256(catalog):
    import hashlib

    home = str(catalog.home)
    r, created = _cli("serve", "token", "create", "--scope", "write", "--namespace", "team", "--name", "ci",
                      "--json", "--home", home)
    assert r.exit_code == 0, r.output
    secret = created["token"]
    assert secret.startswith("ldx_") and len(secret) > 40
    assert (created["name"], created["scope"], created["namespace"]) == ("ci", "write", "team")
    stored = _home_bytes(catalog.home)
    assert secret.encode() not in stored and hashlib.sha256(secret.encode()).hexdigest().encode() in stored
    r, listed = _cli("serve", "token", "list", "--json", "--home", home)
    assert [(t["name"], t["scope"], t["namespace"], t["revoked_at"]) for t in listed] == [("ci", "write", "team", None)]
    assert "token" not in listed[0] and secret not in r.output
    r, _ = _cli("serve", "token", "list", "--home", home)
    assert "ci" in r.output and secret not in r.output
    # bad input: one line, exit != 0, nothing stored
    for args in (["--scope", "admin"], ["--scope", "read", "--namespace", "team"], ["--scope", "write", "--name", "ci"],
                 ["--scope", "write", "--namespace", "../etc"]):
        r, _ = _cli("serve", "token", "create", *args, "--home", home)
        assert r.exit_code != 0 and "Traceback" not in r.output, args
    assert len(_cli("serve", "token", "list", "--json", "--home", home)[1]) == 1
    r, _ = _cli("serve", "token", "revoke", "nope", "--home", home)
    assert r.exit_code == 1 and "nope" in str(r.exception)


def test_scopes_namespaces_and_revocation(catalog):
    from loradex.registry.server.tokens import create_token, revoke_token

    reader = create_token(catalog, "read", name="reader").secret
    team = create_token(catalog, "write", namespace="team", name="team-ci").secret
    anywhere = create_token(catalog, "write").secret
    with TestClient(build_server_app(catalog, ADMIN)) as client:
        def create(token, org):
            return client.post("/api/repos/create", json={"name": "style", "organization": org},
                               headers=_bearer(token) if token else {}).status_code

        assert client.get("/api/v1/models").status_code == 401  # anonymous read is off by default
        assert client.get("/api/models/team/style").status_code == 401
        assert client.get("/api/v1/models", headers=_bearer(reader)).status_code == 200
        assert create(reader, "team") == 403  # read-only
        assert create(team, "other") == 403  # outside its namespace
        assert create(team, "team") == 200
        assert client.get("/api/whoami-v2", headers=_bearer(team)).json()["name"] == "team"
        r = client.post("/api/repos/create", json={"name": "second"}, headers=_bearer(team))
        assert r.status_code == 200 and r.json()["name"] == "team/second"  # default org = its namespace
        assert create(anywhere, "other") == 200 and create(ADMIN, "admin-ns") == 200  # unscoped write tokens
        tag = client.post("/api/models/team/style/tag/main", json={"tag": "v1"}, headers=_bearer(reader))
        assert tag.status_code == 403
        assert create("ldx_made-up", "team") == 401
        revoke_token(catalog, "team-ci")
        assert create(team, "team") == 401
        assert client.get("/api/v1/models", headers=_bearer(team)).status_code == 401


def test_tokens_in_the_url_are_refused_except_for_civitai_reads(catalog):
    from loradex.registry.server.tokens import create_token

    secret = create_token(catalog, "write").secret
    with TestClient(build_server_app(catalog, None)) as client:
        assert client.get(f"/api/v1/models?token={secret}").status_code == 200  # Civitai documents ?token=
        r = client.get(f"/api/models/team/style?token={secret}")
        assert r.status_code == 401 and "?token=" in r.json()["error"]
        r = client.post(f"/api/repos/create?token={secret}", json={"name": "style", "organization": "team"})
        assert r.status_code == 401


def test_the_real_hub_client_with_a_namespace_token(tmp_path):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from _hub_sync_fixtures import ThreadServer
    from loradex.registry.server.tokens import create_token

    home = tmp_path / "srv"
    secret = create_token(Catalog(home), "write", namespace="team", name="ci").secret
    with ThreadServer(home, token=None) as srv:
        api = HfApi(endpoint=srv.url, token=secret)
        assert api.whoami()["name"] == "team"
        api.create_repo("team/style")
        api.upload_file(path_or_fileobj=b"hello", path_in_repo="a.txt", repo_id="team/style")
        assert "a.txt" in api.list_repo_files("team/style")
        with pytest.raises(HfHubHTTPError) as err:
            api.create_repo("other/style")
        assert err.value.response.status_code == 403
        with pytest.raises(HfHubHTTPError) as err:
            HfApi(endpoint=srv.url, token=False).model_info("team/style")
        assert err.value.response.status_code == 401


# --- audit log, rate limit, CORS, size caps ----------------------------------------------------
def test_audit_log_records_who_wrote_what_and_refused_writes(catalog):
    from loradex.registry.server.tokens import create_token

    ci = create_token(catalog, "write", namespace="team", name="ci").secret
    reader = create_token(catalog, "read", name="reader").secret
    with TestClient(build_server_app(catalog, ADMIN)) as client:
        assert client.post("/api/repos/create", json={"name": "style"}, headers=_bearer(ci)).status_code == 200
        commit = "\n".join([
            '{"key": "header", "value": {"summary": "first"}}',
            '{"key": "file", "value": {"path": "a.txt", "content": "aGVsbG8=", "encoding": "base64"}}'])
        r = client.post("/api/models/team/style/commit/main?sig=not-logged", content=commit, headers=_bearer(ci))
        assert r.status_code == 200, r.text
        assert client.post("/api/models/team/style/tag/main", json={"tag": "v1"},
                           headers=_bearer(reader)).status_code == 403
        assert client.get("/api/models/team/style", headers=_bearer(ci)).status_code == 200  # reads: not logged
    r, entries = _cli("serve", "audit", "--json", "--home", str(catalog.home))
    assert r.exit_code == 0, r.output
    assert [(e["token"], e["method"], e["path"], e["status"]) for e in entries] == [
        ("ci", "POST", "/api/repos/create", 200),
        ("ci", "POST", "/api/models/team/style/commit/main", 200),
        ("reader", "POST", "/api/models/team/style/tag/main", 403)]
    assert entries[0]["token_id"] is not None and entries[0]["at"]
    assert ci not in r.output and reader not in r.output
    human, _ = _cli("serve", "audit", "--home", str(catalog.home))
    assert "commit/main" in human.output and "reader" in human.output


def test_rate_limiter_refills_per_caller():
    from loradex.registry.server.guard import RateLimiter

    now = [100.0]
    limiter = RateLimiter(2.0, burst=2, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(2)] == [0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(0.5)  # one request refills in 1/rate s
    assert limiter.acquire("b") == 0.0  # another caller has its own bucket
    now[0] += 0.5
    assert limiter.acquire("a") == 0.0 and limiter.acquire("a") == pytest.approx(0.5)


def test_parse_rate():
    from loradex.registry.errors import UsageError
    from loradex.registry.server.guard import parse_rate

    assert parse_rate("20/s") == 20 and parse_rate("120/min") == 2 and parse_rate("off") is None
    for bad in ("20", "x/s", "-1/s", "0/s", "5/h"):
        with pytest.raises(UsageError):
            parse_rate(bad)


def test_rate_limit_answers_429_with_retry_after_per_token(catalog):
    from loradex.registry.server.guard import RateLimiter

    other = "second-token-for-bucket"
    limiter = RateLimiter(0.5, burst=1, clock=lambda: 0.0)  # frozen clock: nothing refills
    with TestClient(build_server_app(catalog, ADMIN, rate_limit=limiter)) as client:
        assert client.get("/api/v1/models", headers=_bearer(ADMIN)).status_code == 200
        r = client.get("/api/v1/models", headers=_bearer(ADMIN))
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
        assert "rate limit" in r.json()["error"]
        assert client.get("/api/v1/models", headers=_bearer(other)).status_code == 401  # own bucket, not 429


def test_cors_is_off(catalog):
    with TestClient(build_server_app(catalog, ADMIN, public_read=True)) as client:
        got = client.get("/api/v1/models", headers={"Origin": "https://evil.example"})
        pre = client.options("/api/v1/models", headers={"Origin": "https://evil.example",
                                                        "Access-Control-Request-Method": "GET"})
    assert got.status_code == 200
    for r in (got, pre):
        assert not any(h.lower().startswith("access-control-") for h in r.headers), dict(r.headers)


def test_by_hash_body_is_capped_and_checked(catalog):
    with TestClient(build_server_app(catalog, ADMIN)) as client:
        url = "/api/v1/model-versions/by-hash"
        r = client.post(url, content=b"[" + b'"aa",' * 40_000 + b'"aa"]', headers=_bearer(ADMIN))
        assert r.status_code == 413 and "limit" in r.json()["error"]
        assert client.post(url, content=b"{not json", headers=_bearer(ADMIN)).status_code == 400
        assert client.post(url, json={"a": 1}, headers=_bearer(ADMIN)).status_code == 400
        assert client.post(url, json=["00" * 32], headers=_bearer(ADMIN)).json() == []


def test_max_upload_bytes_applies_to_lfs_uploads(catalog):
    with TestClient(build_server_app(catalog, ADMIN, max_upload_bytes=1000)) as client:
        assert client.post("/api/repos/create", json={"name": "big", "organization": "team"},
                           headers=_bearer(ADMIN)).status_code == 200
        batch = {"operation": "upload", "transfers": ["basic"], "objects": [
            {"oid": "a" * 64, "size": 1001}, {"oid": "b" * 64, "size": 1000}]}
        r = client.post("/team/big.git/info/lfs/objects/batch", json=batch, headers=_bearer(ADMIN))
    objects = r.json()["objects"]
    assert objects[0]["error"]["code"] == 413 and "upload" in objects[1]["actions"]


def test_serve_refuses_to_start_when_no_token_could_use_it(catalog, monkeypatch):
    monkeypatch.delenv("LORADEX_SERVE_TOKEN", raising=False)
    r, _ = _cli("serve", "--home", str(catalog.home), "--port", "1")
    assert r.exit_code != 0 and "serve token create" in str(r.exception)
    r, _ = _cli("serve", "--home", str(catalog.home), "--rate-limit", "lots")
    assert r.exit_code != 0 and "rate limit" in str(r.exception)
