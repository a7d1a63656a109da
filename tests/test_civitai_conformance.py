"""Third-party Civitai clients from PyPI against `loradex serve` on 127.0.0.1 (issue 17, "Civitai
API v1"): civitapy (async SDK with typed models, base_url configurable) and civitai-hub (its
``CivitaiClient``, https only, host configurable), unmodified, each parsing the answers with its
own pydantic models. Served with the options `serve` passes to uvicorn (TLS, trusted proxies).

The home: ``brush`` pushed from namespace ``team`` (public) in two versions whose files are both
named ``brush.safetensors`` (as every push names them), with a prompt record; ``river-style`` made
by the home (namespace ``loradex``: metadata public, downloads need a token); ``secret`` from
namespace ``hidden`` (private).
"""

from __future__ import annotations

import asyncio
import hashlib
import json

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from _civitai_clients import Served, need_client, self_signed_cert
from _evidence_fixtures import minimal_record
from _fault_remote import run_cli
from loradex.cli.app import app as cli
from loradex.merge.synthetic_adapters import write_random_kohya_lora
from loradex.registry.catalog import records as R
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.db_schema import AdapterRow
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import UsageError
from loradex.registry.server.app import build_server_app, check_tls, check_trusted_proxies
from loradex.registry.server.tokens import create_token, list_tokens, set_namespace_visibility

ADMIN = "conformance-admin-token-7f3a"


def _adapter_id(catalog, name: str) -> int:
    return catalog.read(lambda s: s.scalar(select(AdapterRow.id).where(AdapterRow.name == name)))


def _pushed(repo: str) -> dict:
    return {"hub": {"repo_id": repo, "revision": "v1.0.0", "commit": "0" * 40, "path": "x.safetensors",
                    "base_model": None, "pushed_by": repo.split("/")[0]}}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("conformance")
    catalog = Catalog(root / "served")
    files = {}
    for i, seed in ((1, 11), (2, 12)):
        (root / f"v{i}").mkdir()
        files[f"brush{i}"] = write_random_kohya_lora(root / f"v{i}" / "brush.safetensors", rank=4, seed=seed,
                                                     trigger="brsh")
    b1 = add_file(catalog, files["brush1"], name="brush", version="1.0.0", tags={"style": "ink"},
                  extra=_pushed("team/brush"), user="team-bot").version
    b2 = add_file(catalog, files["brush2"], name="brush", version="1.1.0", extra=_pushed("team/brush"),
                  user="team-bot").version
    files["river"] = write_random_kohya_lora(root / "river.safetensors", rank=4, seed=13)
    river = add_file(catalog, files["river"], name="river-style", tags={"nature": "water"}, user="home-user").version
    files["secret"] = write_random_kohya_lora(root / "secret.safetensors", rank=4, seed=14)
    secret = add_file(catalog, files["secret"], name="secret", extra=_pushed("hidden/secret"), user="hider").version
    record = minimal_record(stack=[{"requested": "brush", "ref": b2.ref, "sha256": b2.sha256, "te_weight": 1.0,
                                    "unet_weight": 0.8}],
                            prompt="brsh, a heron <lora:brush@1.1.0:0.8>", negative_prompt="lowres", seed=4242,
                            steps=28, cfg=6.5, width=32, height=48, created_by="team-bot")
    R.store_record(catalog, record, R.png_with_record(Image.new("RGB", (32, 48), (10, 20, 30)), record))
    set_namespace_visibility(catalog, "team", "public")
    set_namespace_visibility(catalog, "loradex", "listed")
    reader = create_token(catalog, "read").secret
    cert, key = self_signed_cert(root)
    app = build_server_app(catalog, ADMIN)
    with Served(app) as plain, Served(app, tls=(cert, key)) as tls:
        yield {"catalog": catalog, "plain": plain, "tls": tls, "cert": cert, "key": key, "reader": reader,
               "root": root, "files": files, "b1": b1, "b2": b2, "river": river, "secret": secret,
               "record": record}


@pytest.fixture
def civitapy(served, monkeypatch, tmp_path):
    """civitapy's client against the plain server, anonymous (no CIVITAI_TOKEN)."""
    module = need_client("civitapy")
    monkeypatch.delenv("CIVITAI_TOKEN", raising=False)

    def make(token=None, url=None):
        return module.CivitAIClient(base_url=(url or served["plain"].url) + "/api/v1", token=token,
                                    download_dir=str(tmp_path / "dl"), retry_count=1, verify_hash=True)

    return make


# --- anonymous metadata reads, namespace walls ------------------------------------------------------

def test_civitapy_anonymous_lists_only_public_namespaces_and_parses_every_model(served, civitapy):
    from civitapy.models import Model

    page = civitapy().models_list()
    models = [Model(**item) for item in page["items"]]
    assert sorted(m.name for m in models) == ["brush", "river-style"]  # secret (namespace hidden) is private
    brush = next(m for m in models if m.name == "brush")
    assert [v.name for v in brush.model_versions] == ["1.1.0", "1.0.0"]
    assert (brush.availability, brush.nsfw_level, brush.mode, brush.creator.username) == ("Public", 1, None, "team-bot")
    names = [v.files[0].name for v in brush.model_versions]
    assert names == ["brush_v1.1.0.safetensors", "brush.safetensors"]  # each version its own file name

    async def walk():  # civitapy's own cursor paginator, one model a page
        return [m.name async for m in civitapy().models_list_paginated_async(limit=1)]

    assert asyncio.run(walk()) == ["brush", "river-style"]


def test_civitapy_model_filters_username_ids_tag_types_bases_sort_period(served, civitapy):
    c = civitapy(token=ADMIN)
    names = lambda **kw: sorted(m["name"] for m in c.models_list(**kw)["items"])  # noqa: E731
    ids = {n: _adapter_id(served["catalog"], n) for n in ("brush", "river-style", "secret")}
    assert names() == ["brush", "river-style", "secret"]  # a token sees every namespace
    assert names(username="team-bot") == ["brush"] and names(username="HIDER") == ["secret"]
    assert names(username="nobody") == []
    assert names(ids=[ids["river-style"], ids["secret"]]) == ["river-style", "secret"]
    assert names(tag="ink") == ["brush"] and names(tag="water") == ["river-style"]
    assert names(types=["LORA"]) == ["brush", "river-style", "secret"] and names(types=["Checkpoint"]) == []
    assert names(base_models=["SD 1.5", "SDXL 1.0"]) == ["brush", "river-style", "secret"]
    assert names(base_models="Flux.1 D") == []
    assert names(period="Day") == ["brush", "river-style", "secret"]  # all made just now
    newest = [m["name"] for m in c.models_list(sort="Newest")["items"]]
    assert newest == ["secret", "river-style", "brush"]
    assert names(nsfw=True) == ["brush", "river-style", "secret"]
    bad = httpx.get(served["plain"].url + "/api/v1/models?sort=Loudest", headers={"Authorization": f"Bearer {ADMIN}"})
    assert bad.status_code == 400 and "sort must be one of" in bad.json()["error"]
    bad = httpx.get(served["plain"].url + "/api/v1/models?ids=1,x", headers={"Authorization": f"Bearer {ADMIN}"})
    assert bad.status_code == 400 and "ids" in bad.json()["error"]


def test_civitapy_anonymous_version_hash_and_mini_lookups(served, civitapy):
    from civitapy.errors import CivitAINotFoundError
    from civitapy.models import MiniModelVersion, ModelVersion

    c = civitapy()
    b2, river, secret = served["b2"], served["river"], served["secret"]
    v = ModelVersion(**c.model_versions_get(b2.id))
    assert (v.name, v.availability, v.base_model) == ("1.1.0", "Public", "SD 1.5")
    assert v.air == f"urn:air:sd1:lora:civitai:{v.model_id}@{b2.id}" and v.model["mode"] is None
    assert v.files[0].hashes["SHA256"] == b2.sha256.upper() and v.files[0].name == "brush_v1.1.0.safetensors"
    assert ModelVersion(**c.model_versions_by_hash(b2.autov2)).id == b2.id
    assert c.model_versions_by_hash(secret.sha256) is None  # private namespace: 404, like an unknown hash
    with pytest.raises(CivitAINotFoundError):
        c.model_versions_get(secret.id)
    with pytest.raises(CivitAINotFoundError):
        c.models_get(_adapter_id(served["catalog"], "secret"))
    bulk = c.model_versions_by_hash_bulk([b2.sha256, river.sha256, secret.sha256, "00" * 32])
    assert sorted(x["id"] for x in bulk) == sorted([b2.id, river.id])
    ids = c.model_versions_by_hash_ids([b2.sha256.upper(), secret.sha256, "nothex"])
    assert [(r.model_version_id, r.hash) for r in ids] == [(b2.id, b2.sha256.upper())]
    mini = MiniModelVersion(**c.model_versions_mini(b2.id))
    assert (mini.file_name, mini.hashes.sha256) == ("brush_v1.1.0.safetensors", b2.sha256.upper())
    assert mini.download_urls == [f"{served['plain'].url}/api/download/models/{b2.id}"]
    # civitapy's model reads requireAuth under no alias (always False): the answer's own key
    assert c.model_versions_mini(b2.id)["requireAuth"] is False
    assert c.model_versions_mini(river.id)["requireAuth"] is True


def test_civitapy_images_creators_tags_enums(served, civitapy):
    from civitapy.models import Image

    c = civitapy()
    b2 = served["b2"]
    items = c.images_list(model_version_id=b2.id)["items"]
    assert len(items) == 1
    image = Image(**items[0])
    meta = image.meta
    assert (meta.prompt, meta.negative_prompt, meta.seed, meta.steps, meta.cfg_scale) == (
        "brsh, a heron <lora:brush@1.1.0:0.8>", "lowres", 4242, 28, 6.5)
    assert items[0]["meta"]["Size"] == "32x48"  # Civitai's key; civitapy's model reads "size"
    assert meta.sampler == "DDIMScheduler"
    assert [(r.model_version_id, r.weight) for r in meta.civitai_resources] == [(b2.id, 0.8)]
    assert image.model_version_ids == [b2.id] and image.username == "team-bot"
    png = httpx.get(image.url)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")  # public namespace: no token
    assert c.images_list(model_version_id=served["b1"].id)["items"] == []
    assert c.images_list(username="team-bot")["items"][0]["id"] == image.id
    creators = c.creators_list()["items"]
    assert [(x["username"], x["modelCount"]) for x in creators] == [("home-user", 1), ("team-bot", 1)]
    assert [t["name"] for t in c.tags_list()["items"]] == ["ink", "nature", "style", "water"]
    assert [t["name"] for t in c.tags_list(query="wat")["items"]] == ["water"]
    enums = c.enums()
    assert "LORA" in enums["ModelType"] and "SD 1.5" in enums["BaseModel"]


def test_private_namespace_needs_a_token_and_nothing_public_is_401(served, civitapy, tmp_path):
    from civitapy.errors import CivitAIAuthError
    from civitapy.models import ModelVersion

    secret = served["secret"]
    assert ModelVersion(**civitapy(token=served["reader"]).model_versions_get(secret.id)).id == secret.id
    with pytest.raises(CivitAIAuthError):  # a refused token is 401, never the anonymous view
        civitapy(token="not-a-token").models_list()
    bare = Catalog(tmp_path / "bare")  # a server with no public namespace answers 401 as before
    add_file(bare, served["files"]["river"], name="river-style")
    with Served(build_server_app(bare, ADMIN)) as s, pytest.raises(CivitAIAuthError):
        civitapy(url=s.url).models_list()


# --- downloads -----------------------------------------------------------------------------------

def test_civitapy_downloads_every_version_into_one_folder_and_verifies(served, civitapy, tmp_path):
    from civitapy.models import Model

    c = civitapy()
    model = Model(**c.models_list(username="team-bot")["items"][0])
    paths = c.download_model(model.id)  # anonymous: namespace team lets anyone download
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == ["brush.safetensors", "brush_v1.1.0.safetensors"]
    assert len({p.rsplit("/", 1)[0] for p in paths}) == 1  # one folder, both versions
    got = {p.rsplit("/", 1)[1]: hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths}
    assert got == {"brush.safetensors": served["b1"].sha256, "brush_v1.1.0.safetensors": served["b2"].sha256}


def test_listed_namespace_download_needs_a_token(served, civitapy):
    from civitapy.errors import CivitAIAuthError

    river = served["river"]
    with pytest.raises(CivitAIAuthError, match="downloads require a valid API token"):  # our 401
        civitapy().download_model_version(river.id)
    paths = civitapy(token=served["reader"]).download_model_version(river.id)
    assert hashlib.sha256(open(paths[0], "rb").read()).hexdigest() == river.sha256


# --- https ---------------------------------------------------------------------------------------

def test_civitai_hub_over_tls(served, monkeypatch, tmp_path):
    hub = need_client("civitai-hub")
    from civitai_hub.download import download_file
    from civitai_hub.errors import CivitaiError, NotFoundError

    monkeypatch.setenv("SSL_CERT_FILE", str(served["cert"]))  # trust the test's self-signed certificate
    b1, b2, secret = served["b1"], served["b2"], served["secret"]
    with hub.CivitaiClient(host=served["tls"].host) as client:  # anonymous, https only
        version = client.get_version(b2.id)
        assert version.files[0].download_url.startswith(served["tls"].url + "/")  # links keep https
        model = client.get_model(version.model_id)
        assert [v.id for v in model.model_versions] == [b2.id, b1.id]
        assert client.get_version_by_hash(b1.sha256).files[0].sha256 == b1.sha256.upper()
        assert sorted(m.name for m in client.search_models(types="LORA", sort="Most Downloaded")) == [
            "brush", "river-style"]
        with pytest.raises(NotFoundError):
            client.get_version(secret.id)
        store = hub.CacheStore(tmp_path / "cache", use_symlinks=False)
        settings = hub.resolve_settings(cache_dir=tmp_path / "cache")
        with pytest.raises(CivitaiError, match="untrusted host"):  # the client's own allow-list (civitai.com)
            download_file(client, model.id, version, version.files[0], store, settings=settings)
    with pytest.raises(CivitaiError, match="Unsupported host"):  # its top-level functions: the same list
        hub.model_info(b2.id, host=served["tls"].host)


def test_loradex_pull_without_a_token_from_a_public_namespace(served, monkeypatch, tmp_path):
    from loradex.registry.remotes import pull

    monkeypatch.delenv("CIVITAI_TOKEN", raising=False)
    got = pull(Catalog(tmp_path / "b"), f"civitai:{served['b2'].id}", endpoint=served["plain"].url).version
    assert (got.sha256, got.file_name) == (served["b2"].sha256, "brush_v1.1.0.safetensors")


def test_civitapy_downloads_over_tls(served, civitapy, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(served["cert"]))
    paths = civitapy(url=served["tls"].url).download_model_version(served["b1"].id)
    assert hashlib.sha256(open(paths[0], "rb").read()).hexdigest() == served["b1"].sha256


def test_forwarded_proto_only_from_trusted_proxies(served):
    """Behind a TLS-terminating proxy (no --public-url): links take the scheme the proxy forwards,
    but only when the proxy is trusted."""
    app = build_server_app(served["catalog"], ADMIN)
    headers = {"Authorization": f"Bearer {ADMIN}", "X-Forwarded-Proto": "https"}
    path = f"/api/v1/model-versions/{served['b1'].id}"
    with Served(app, trusted_proxies=["127.0.0.1"]) as trusting:
        url = httpx.get(trusting.url + path, headers=headers).json()["downloadUrl"]
        assert url == f"https://127.0.0.1:{trusting.port}/api/download/models/{served['b1'].id}"
    with Served(app, trusted_proxies=["10.1.2.3"]) as other:
        url = httpx.get(other.url + path, headers=headers).json()["downloadUrl"]
        assert url.startswith(f"http://127.0.0.1:{other.port}/")
    with Served(app) as none:  # no trusted proxy: not even 127.0.0.1 (uvicorn alone would trust it)
        assert httpx.get(none.url + path, headers=headers).json()["downloadUrl"].startswith("http://")


def test_tls_and_proxy_options_are_checked(served, tmp_path):
    assert check_tls(None, None) is None
    assert check_tls(str(served["cert"]), str(served["key"])) == (str(served["cert"]), str(served["key"]))
    (tmp_path / "junk.pem").write_text("not a certificate")
    for cert, key in [(str(served["cert"]), None), (str(tmp_path / "missing.pem"), str(served["key"])),
                      (str(tmp_path / "junk.pem"), str(served["key"])), (str(served["key"]), str(served["cert"]))]:
        with pytest.raises(UsageError) as err:
            check_tls(cert, key)
        assert "\n" not in str(err.value)
    assert check_trusted_proxies(["127.0.0.1", "10.0.0.0/8", "::1"]) == ["127.0.0.1", "10.0.0.0/8", "::1"]
    for bad in ["*", "localhost", "10.0.0.0/99", "1.2.3"]:
        with pytest.raises(UsageError):
            check_trusted_proxies([bad])
    code, err = run_cli("serve", "--home", str(tmp_path / "h"), "--public-read",
                        "--tls-cert", str(tmp_path / "junk.pem"), "--tls-key", str(served["key"]))
    assert code == 2 and err.count("\n") == 1 and "--tls-cert/--tls-key: cannot load" in err
    code, err = run_cli("serve", "--home", str(tmp_path / "h"), "--public-read", "--trusted-proxy", "*")
    assert code == 2 and "invalid --trusted-proxy" in err


# --- the CLI -----------------------------------------------------------------------------------------

def test_serve_namespace_cli(tmp_path):
    home = str(tmp_path / "h")
    run = lambda *a: CliRunner().invoke(cli, ["serve", "namespace", *a, "--home", home])  # noqa: E731
    assert run("set", "team", "--public").exit_code == 0
    assert run("set", "loradex", "--public", "--downloads", "token").exit_code == 0
    r = run("list", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == [
        {"namespace": "loradex", "visibility": "listed", "metadata": "anyone", "downloads": "token"},
        {"namespace": "team", "visibility": "public", "metadata": "anyone", "downloads": "anyone"}]
    assert run("set", "team", "--private").exit_code == 0
    assert [x["namespace"] for x in json.loads(run("list", "--json").output)] == ["loradex"]
    for bad in (["set", "../x", "--public"], ["set", "team", "--public", "--downloads", "some"], ["set", "team"]):
        code, err = run_cli("serve", "namespace", *bad, "--home", home)
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, (bad, err)
    assert list_tokens(Catalog(tmp_path / "h")) == []  # settings are not tokens


# --- hostile values ------------------------------------------------------------------------------

@pytest.mark.parametrize("method,path,body,status", [
    ("GET", "/api/v1/models?ids=1,2,-3", None, 400),
    ("GET", "/api/v1/models?ids=" + ",".join(["1"] * 1001), None, 400),
    ("GET", "/api/v1/models?ids=1%00", None, 400),
    ("GET", "/api/v1/models?period=Century", None, 400),
    ("GET", "/api/v1/models?sort=%27%3B%20DROP%20TABLE%20adapters", None, 400),
    ("GET", "/api/v1/models?username=%25&query=_", None, 200),
    ("GET", "/api/v1/models?username=" + "%00x%C3%A9" * 500, None, 200),
    ("GET", "/api/v1/images?cursor=-1", None, 400),
    ("GET", "/api/v1/images?cursor=9999999999999", None, 400),
    ("GET", "/api/v1/images?limit=201", None, 400),
    ("GET", "/api/v1/creators?page=0", None, 400),
    ("GET", "/api/v1/tags?limit=0", None, 400),
    ("POST", "/api/v1/model-versions/by-hash/ids", json.dumps(["ab"] * 10_001), 400),
    ("POST", "/api/v1/model-versions/by-hash/ids", "[" * 5000 + "]" * 5000, 400),
    ("POST", "/api/v1/model-versions/by-hash/ids", json.dumps([{"sha": 1}]), 400),
    ("POST", "/api/v1/model-versions/by-hash/ids", "x" * ((1 << 20) + 1), 413),
    ("GET", "/api/v1/model-versions/mini/99999999", None, 404),
    ("GET", "/api/v1/images/" + "a" * 64 + ".png", None, 404),
])
def test_hostile_values_get_one_line_errors(served, method, path, body, status):
    """Anonymous (the public view) and with a token: the same refusal, never a 500."""
    for headers in ({}, {"Authorization": f"Bearer {ADMIN}"}):
        r = httpx.request(method, served["plain"].url + path, content=body, headers=headers, timeout=30)
        assert r.status_code == status, (headers, r.text[:300])
        if status != 200:
            assert "\n" not in r.json()["error"]
