"""Issue 15, `loradex serve` side: hostile clients of the server.

* Namespaces are walls: two write tokens of different namespaces (and the unscoped admin token),
  driven through the real ``huggingface_hub`` client where it can send the request, through raw
  HTTP where it cannot; every route that can create versions, tags, branches or aliases.
* YAML alias bombs and deep nesting in README front matter (``model_info``, ``validate-yaml``) and
  malformed JSON bodies on every write route: 4xx, never 500; unauthenticated ones 401 + audit row.
* Error answers never name a server path; rate limits count per client address for anonymous and
  unknown tokens; links come from the configured public URL, never from the ``Host`` header.
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from _served_app import ServedApp
from loradex.cli.app import app as cli_app
from loradex.merge.synthetic_adapters import write_random_kohya_lora
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import UsageError
from loradex.registry.server.app import build_server_app
from loradex.registry.server.guard import list_audit
from loradex.registry.server.tokens import create_token

ADMIN = "hostile-admin-token-4b1e"


def _bearer(token: str | None) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _commit_body(*lines: dict) -> str:
    return "\n".join(json.dumps(line) for line in lines)


def _file_line(path: str, data: bytes) -> dict:
    return {"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"}}


HEADER = {"key": "header", "value": {"summary": "hostile"}}


# --- namespaces are walls (real client over a socket) --------------------------------------------
@pytest.fixture(scope="module")
def walled(tmp_path_factory):
    """A served home with write tokens for namespaces team and evil; team has published
    style@1.0.0 and style@1.1.0 (production → 1.1.0) from team/style, and the home holds an
    adapter of its own, ``local``."""
    import huggingface_hub.constants as hf_constants
    from huggingface_hub import HfApi
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    root = tmp_path_factory.mktemp("walls")
    catalog = Catalog(root / "srv")
    tokens = {ns: create_token(catalog, "write", namespace=ns, name=f"{ns}-ci").secret for ns in ("team", "evil")}
    files = {n: write_random_kohya_lora(root / f"{n}.safetensors", rank=4, seed=s)
             for n, s in (("v1", 1), ("v2", 2), ("evil", 3), ("local", 4), ("local2", 5))}
    add_file(catalog, files["local"], name="local", version="1.0.0")
    with pytest.MonkeyPatch.context() as mp, ServedApp(build_server_app(Catalog(root / "srv"), ADMIN)) as srv:
        mp.setattr(hf_constants, "HF_HUB_DISABLE_XET", True)  # read at call time by the client
        mp.setenv("HF_HUB_DISABLE_XET", "1")
        mp.delenv("HF_TOKEN", raising=False)
        team = HfApi(endpoint=srv.url, token=tokens["team"])
        team.create_repo("team/style")
        commits = {}
        for version, key in (("1.0.0", "v1"), ("1.1.0", "v2")):
            info = team.upload_file(path_or_fileobj=str(files[key]), path_in_repo="style.safetensors",
                                    repo_id="team/style", commit_message=version)
            commits[version] = info.oid
            team.create_tag("team/style", tag=f"v{version}", revision=info.oid)
        team.create_branch("team/style", branch="production", revision=commits["1.1.0"])
        yield {"url": srv.url, "catalog": Catalog(root / "srv"), "tokens": tokens, "files": files,
               "api": lambda token: HfApi(endpoint=srv.url, token=token), "commits": commits}


def _status(call) -> int:
    from huggingface_hub.errors import HfHubHTTPError

    try:
        call()
    except HfHubHTTPError as exc:
        return exc.response.status_code
    return 200


def _style_unchanged(catalog):
    assert [v.version for v in catalog.versions("style")] == ["1.0.0", "1.1.0"]
    assert [(a.name, a.version) for a in catalog.aliases("style")] == [("production", "1.1.0")]
    assert len(catalog.alias_history("style", "production")) == 1


def test_a_repo_of_another_namespace_cannot_add_versions_or_move_aliases(walled):
    """evil/style maps to the same adapter name as team/style: its version tags and alias
    branches are the Hub's 403 and leave the catalog and evil's refs as they were."""
    evil = walled["api"](walled["tokens"]["evil"])
    assert _status(lambda: evil.create_repo("evil/style")) == 200  # its own repo: fine
    new = evil.upload_file(path_or_fileobj=str(walled["files"]["evil"]), path_in_repo="style.safetensors",
                           repo_id="evil/style").oid
    assert _status(lambda: evil.create_tag("evil/style", tag="v2.0.0", revision=new)) == 403
    # a copy of team's own 1.0.0 file, branched as production: would move team's alias
    old = evil.upload_file(path_or_fileobj=str(walled["files"]["v1"]), path_in_repo="style.safetensors",
                           repo_id="evil/style").oid
    for branch in ("production", "stable"):
        assert _status(lambda: evil.create_branch("evil/style", branch=branch, revision=old)) == 403
    assert _status(lambda: evil.create_tag("evil/style", tag="v1.0.0", revision=old)) == 403  # same file, too
    # the unscoped admin token gets the same answer for repos outside the owning namespace
    admin = walled["api"](ADMIN)
    assert _status(lambda: admin.create_tag("evil/style", tag="v3.0.0", revision=new)) == 403
    assert _status(lambda: admin.create_branch("evil/style", branch="production", revision=old)) == 403
    refs = evil.list_repo_refs("evil/style")
    assert [t.name for t in refs.tags] == [] and [b.name for b in refs.branches] == ["main"]
    _style_unchanged(walled["catalog"])
    # plain git names are still plain git names
    assert _status(lambda: evil.create_tag("evil/style", tag="experiment", revision=new)) == 200
    assert _status(lambda: evil.create_branch("evil/style", branch="wip", revision=new)) == 200


def test_the_error_is_one_line_through_push(walled, tmp_path, monkeypatch):
    """`loradex push` from evil's home to a mirror remote under evil/: exit 1, one line, 403."""
    from loradex.registry.remotes import add_remote

    home = Catalog(tmp_path / "evil-home")
    add_file(home, walled["files"]["local2"], name="style", version="7.0.0")
    add_remote(home, "evil", f"{walled['url']}/evil", "mirror")
    monkeypatch.setenv("LORADEX_TOKEN_EVIL", walled["tokens"]["evil"])
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    r = CliRunner().invoke(cli_app, ["push", "style@7.0.0", "evil", "--home", str(tmp_path / "evil-home")])
    assert r.exit_code == 1, r.output
    assert "403" in str(r.exception) and "published from namespace 'team'" in str(r.exception)
    _style_unchanged(walled["catalog"])


def test_every_write_route_of_another_namespace_is_403(walled):
    """evil's token on team/style: commit, preupload, LFS batch and verify, tag, branch, their
    deletes, repo create and delete; nothing changes."""
    from huggingface_hub import CommitOperationAdd

    url, evil_token = walled["url"], walled["tokens"]["evil"]
    evil = walled["api"](evil_token)
    assert _status(lambda: evil.create_repo("team/other")) == 403
    assert _status(lambda: evil.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="team/style")) == 403
    assert _status(lambda: evil.create_commit("team/style", [CommitOperationAdd(
        "style.safetensors", str(walled["files"]["evil"]))], commit_message="swap")) == 403
    assert _status(lambda: evil.create_tag("team/style", tag="v9.0.0", revision="main")) == 403
    assert _status(lambda: evil.delete_tag("team/style", tag="v1.0.0")) == 403
    assert _status(lambda: evil.create_branch("team/style", branch="stable", revision="main")) == 403
    assert _status(lambda: evil.delete_branch("team/style", branch="production")) == 403
    assert _status(lambda: evil.delete_repo("team/style")) == 403
    raw = httpx.Client(base_url=url, headers=_bearer(evil_token))
    oid = "ab" * 32
    for path, body in [
        ("/api/models/team/style/preupload/main", {"files": [{"path": "a.safetensors", "size": 5, "sample": ""}]}),
        ("/api/models/team/style/commit/main", None),
        ("/team/style.git/info/lfs/objects/batch", {"operation": "upload", "objects": [{"oid": oid, "size": 5}]}),
        ("/team/style.git/info/lfs/objects/verify", {"oid": oid, "size": 5}),
        ("/api/models/team/style/tag/main", {"tag": "v9.9.9"}),
        ("/api/models/team/style/branch/canary", {}),
    ]:
        r = raw.post(path, content=_commit_body(HEADER, _file_line("x.txt", b"x")) if body is None else json.dumps(body))
        assert r.status_code == 403, (path, r.status_code, r.text)
    for path in ("/api/models/team/style/tag/v1.0.0", "/api/models/team/style/branch/production"):
        assert raw.delete(path).status_code == 403
    team = walled["api"](walled["tokens"]["team"])
    refs = team.list_repo_refs("team/style")
    assert sorted(t.name for t in refs.tags) == ["v1.0.0", "v1.1.0"]
    assert sorted(b.name for b in refs.branches) == ["main", "production"]
    assert team.model_info("team/style").sha == walled["commits"]["1.1.0"]
    _style_unchanged(walled["catalog"])


def test_the_wall_holds_both_ways_and_the_homes_own_adapters_need_an_unscoped_token(walled):
    evil, team, admin = (walled["api"](t) for t in (walled["tokens"]["evil"], walled["tokens"]["team"], ADMIN))
    # evil publishes an adapter of its own: evil/brush owns "brush"; team/brush cannot feed it
    evil.create_repo("evil/brush")
    sha = evil.upload_file(path_or_fileobj=str(walled["files"]["evil"]), path_in_repo="brush.safetensors",
                           repo_id="evil/brush").oid
    assert _status(lambda: evil.create_tag("evil/brush", tag="v1.0.0", revision=sha)) == 200
    team.create_repo("team/brush")
    other = team.upload_file(path_or_fileobj=str(walled["files"]["v2"]), path_in_repo="brush.safetensors",
                             repo_id="team/brush").oid
    assert _status(lambda: team.create_tag("team/brush", tag="v2.0.0", revision=other)) == 403
    assert [v.version for v in walled["catalog"].versions("brush")] == ["1.0.0"]
    # "local" was added on the server itself: a namespaced token cannot publish to it...
    team.create_repo("team/local")
    mine = team.upload_file(path_or_fileobj=str(walled["files"]["local2"]), path_in_repo="local.safetensors",
                            repo_id="team/local").oid
    assert _status(lambda: team.create_tag("team/local", tag="v2.0.0", revision=mine)) == 403
    assert [v.version for v in walled["catalog"].versions("local")] == ["1.0.0"]
    # ...the admin token can, and that push gives it to the team namespace
    assert _status(lambda: admin.create_tag("team/local", tag="v2.0.0", revision=mine)) == 200
    assert [v.version for v in walled["catalog"].versions("local")] == ["1.0.0", "2.0.0"]
    assert _status(lambda: team.create_branch("team/local", branch="production", revision=mine)) == 200
    assert [(a.name, a.version) for a in walled["catalog"].aliases("local")] == [("production", "2.0.0")]


# --- malformed and hostile bodies ------------------------------------------------------------------
@pytest.fixture
def served(tmp_path):
    catalog = Catalog(tmp_path / "srv")
    with TestClient(build_server_app(catalog, ADMIN), raise_server_exceptions=False) as client:
        assert client.post("/api/repos/create", json={"name": "card", "organization": "team"},
                           headers=_bearer(ADMIN)).status_code == 200
        yield client, catalog


def _alias_bomb(levels: int = 6, fan: int = 10) -> str:
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]")
    return "\n".join(lines)


def test_yaml_alias_bombs_and_deep_nesting_in_front_matter_are_refused(served):
    client, _ = served
    bomb = _alias_bomb()  # ~400 bytes, 10^6 strings once expanded
    for text in (bomb, "tags: " + "[" * 50_000 + "]" * 50_000, "a:\n" + "".join(" " * i + "- \n" for i in range(200))):
        r = client.post("/api/validate-yaml", json={"content": f"---\n{text}\n---\nbody\n", "repoType": "model"},
                        headers=_bearer(ADMIN))
        assert r.status_code == 400, (text[:40], r.status_code, r.text[:200])
        assert r.json()["errors"][0]["message"].startswith("Invalid YAML metadata")
    # committed anyway (raw HTTP skips the client's validate-yaml): model_info ignores the card
    r = client.post("/api/models/team/card/commit/main",
                    content=_commit_body(HEADER, _file_line("README.md", f"---\n{bomb}\n---\n# x\n".encode())),
                    headers=_bearer(ADMIN))
    assert r.status_code == 200, r.text
    info = client.get("/api/models/team/card", headers=_bearer(ADMIN))
    assert info.status_code == 200 and info.json()["cardData"] is None and info.json()["tags"] == []
    assert len(info.content) < 5_000


MALFORMED = [  # (method, path, body) with a valid write token: each a 4xx, never a 500
    ("POST", "/api/repos/create", b"[1, 2]"),
    ("POST", "/api/repos/create", b'{"name": 5}'),
    ("POST", "/api/repos/create", b"{not json"),
    ("POST", "/api/repos/create", b'{"name": "x", "organization": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ("DELETE", "/api/repos/delete", b'"just a string"'),
    ("POST", "/api/validate-yaml", b'{"content": {"not": "text"}}'),
    ("POST", "/api/models/team/card/preupload/main", b'{"files": "all"}'),
    ("POST", "/api/models/team/card/preupload/main", b'{"files": [{"path": "a.bin", "size": "abc"}]}'),
    ("POST", "/api/models/team/card/preupload/main", b'{"files": [{"path": "a.bin", "size": 1e999}]}'),
    ("POST", "/api/models/team/card/preupload/main", b'{"files": [{"path": "a.bin", "size": NaN}]}'),
    ("POST", "/api/models/team/card/paths-info/main", b'{"paths": [1, 2]}'),
    ("POST", "/api/models/team/card/commit/main", b'{"key": "header", "value": "flat"}'),
    ("POST", "/api/models/team/card/commit/main", b'{"key": 5, "value": {}}'),
    ("POST", "/api/models/team/card/commit/main", b'{"key": "header", "value": {"summary": ["a"]}}'),
    ("POST", "/api/models/team/card/commit/main",
     b'{"key": "header", "value": {"summary": "s"}}\n{"key": "lfsFile", "value": {"path": "a", "oid": 7}}'),
    ("POST", "/api/models/team/card/commit/main",
     b'{"key": "header", "value": {"summary": "s"}}\n{"key": "deletedFolder", "value": {"path": ["a"]}}'),
    ("POST", "/api/models/team/card/commit/main",
     b'{"key": "header", "value": {"summary": "s", "parentCommit": {"x": 1}}}'),
    ("POST", "/api/models/team/card/commit/main", b'{"key": "header", "value": {"summary": "s", "a": 1, "a": 2}}'),
    ("POST", "/api/models/team/card/tag/main", b'{"tag": 5}'),
    ("POST", "/api/models/team/card/tag/main", b"[]"),
    ("POST", "/api/models/team/card/branch/dev", b'{"startingPoint": 5}'),
    ("POST", "/team/card.git/info/lfs/objects/batch", b'{"operation": "upload", "objects": "x"}'),
    ("POST", "/team/card.git/info/lfs/objects/batch", b'{"objects": [1]}'),
    ("POST", "/team/card.git/info/lfs/objects/verify", b"{not json"),
    ("POST", "/team/card.git/info/lfs/objects/verify", b'{"oid": 5, "size": 1}'),
    ("POST", "/api/v1/model-versions/by-hash", b"[" * 10_000 + b"]" * 10_000),
]


def test_malformed_request_bodies_are_4xx_never_500(served):
    client, _ = served
    head = client.get("/api/models/team/card", headers=_bearer(ADMIN)).json()["sha"]
    for method, path, body in MALFORMED:
        r = client.request(method, path, content=body, headers={"content-type": "application/json", **_bearer(ADMIN)})
        assert 400 <= r.status_code < 500, (path, body[:80], r.status_code, r.text[:200])
        assert "error" in r.json() or "errors" in r.json()
        assert "Traceback" not in r.text and "Error:" not in r.json().get("error", "")
    assert client.get("/api/models/team/card", headers=_bearer(ADMIN)).json()["sha"] == head


def test_unauthenticated_malformed_writes_are_401_with_an_audit_row(served):
    client, catalog = served
    before = len(list_audit(catalog))
    cases = [("POST", "/api/repos/create", b"{not json", None),
             ("POST", "/api/repos/create", b"[1]", "made-up-token"),
             ("DELETE", "/api/repos/delete", b"\xff\xfe", None),
             ("POST", "/team/card.git/info/lfs/objects/batch", b"{broken", None),
             ("POST", "/team/card.git/info/lfs/objects/verify", b"[[[", "made-up-token"),
             ("POST", "/api/models/team/card/commit/main", b"garbage", None)]
    for method, path, body, token in cases:
        r = client.request(method, path, content=body, headers=_bearer(token))
        assert r.status_code == 401, (path, r.status_code, r.text[:200])
    rows = list_audit(catalog)[before:]
    assert [(e.method, e.path, e.status) for e in rows] == [(m, p, 401) for m, p, _, _ in cases]
    assert [e.token_name for e in rows] == ["anonymous" if t is None else "invalid-token" for *_, t in cases]


def test_error_answers_never_name_a_server_path(served):
    """A tag whose file the catalog cannot read: the refusal names the repo and the problem,
    not the server's temporary folder."""
    client, catalog = served
    junk = b"\x08\x00\x00\x00\x00\x00\x00\x00{bad}xxx"
    r = client.post("/api/models/team/card/commit/main",
                    content=_commit_body(HEADER, _file_line("card.safetensors", junk)), headers=_bearer(ADMIN))
    assert r.status_code == 200, r.text
    r = client.post("/api/models/team/card/tag/main", json={"tag": "v1.0.0"}, headers=_bearer(ADMIN))
    assert r.status_code == 422 and "team/card@v1.0.0 not registered" in r.json()["error"]
    home = str(catalog.home.resolve())
    for text in (r.text, r.headers["x-error-message"]):
        assert home not in text and str(catalog.home) not in text and "/tmp/" not in text, text
        assert "<server path>" in text


# --- rate limits per client address -------------------------------------------------------------
def test_made_up_tokens_share_the_client_address_bucket(tmp_path):
    from loradex.registry.server.guard import RateLimiter

    catalog = Catalog(tmp_path / "srv")
    limiter = RateLimiter(0.5, burst=2, clock=lambda: 0.0)  # frozen clock: nothing refills
    with TestClient(build_server_app(catalog, ADMIN, rate_limit=limiter)) as client:
        codes = [client.get("/api/v1/models", headers=_bearer(f"made-up-{i}")).status_code for i in range(4)]
        assert codes == [401, 401, 429, 429]
        assert client.get("/api/v1/models").status_code == 429  # anonymous: the same address
        assert client.get("/api/v1/models?token=another-made-up").status_code == 429
        # a token the server knows keeps its own bucket
        assert [client.get("/api/v1/models", headers=_bearer(ADMIN)).status_code for _ in range(3)] == [200, 200, 429]


# --- links from the configured public URL, never from Host ----------------------------------------
def test_links_use_the_public_url_not_the_host_header(tmp_path):
    catalog = Catalog(tmp_path / "srv")
    v = add_file(catalog, write_random_kohya_lora(tmp_path / "a.safetensors", rank=4, seed=1), name="a").version
    evil_host = {"host": "evil.example", "x-forwarded-host": "evil.example", **_bearer(ADMIN)}
    public = "https://loras.example.com/mirror"
    with TestClient(build_server_app(catalog, ADMIN, public_url=public)) as client:
        r = client.get(f"/api/download/models/{v.id}", headers=evil_host, follow_redirects=False)
        assert r.status_code == 307 and r.headers["location"].startswith(f"{public}/api/download/files/{v.id}/")
        listing = client.get("/api/v1/models?limit=1", headers=evil_host).json()
        assert listing["items"][0]["modelVersions"][0]["downloadUrl"] == f"{public}/api/download/models/{v.id}"
        made = client.post("/api/repos/create", json={"name": "x", "organization": "team"}, headers=evil_host).json()
        assert made["url"] == f"{public}/team/x"
        batch = client.post("/team/x.git/info/lfs/objects/batch", headers=evil_host, json={
            "operation": "upload", "objects": [{"oid": "cd" * 32, "size": 3}]}).json()
        assert batch["objects"][0]["actions"]["upload"]["href"].startswith(f"{public}/api/_loradex/lfs-upload/")
    with TestClient(build_server_app(catalog, ADMIN)) as client:  # none configured: the listening address
        r = client.get(f"/api/download/models/{v.id}", headers=evil_host, follow_redirects=False)
        assert "evil.example" not in r.headers["location"]
        assert r.headers["location"].startswith("http://testserver/api/download/files/")


def test_serve_public_url_option(tmp_path, monkeypatch):
    from loradex.registry.server.app import default_public_url

    monkeypatch.setenv("LORADEX_SERVE_TOKEN", ADMIN)
    for bad in ("ftp://x.example", "not a url", "http://", "https://h.example/?q=1"):
        r = CliRunner().invoke(cli_app, ["serve", "--home", str(tmp_path / "h"), "--public-url", bad])
        assert isinstance(r.exception, UsageError) and "--public-url" in str(r.exception), (bad, r.output)
    assert default_public_url("127.0.0.1", 8470) == "http://127.0.0.1:8470/"
    assert default_public_url("::1", 80) == "http://[::1]:80/"
    assert default_public_url("0.0.0.0", 8470) is None  # each connection's own address
