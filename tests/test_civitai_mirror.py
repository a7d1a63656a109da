"""The Civitai-style mirror API of `loradex serve`, served by uvicorn on 127.0.0.1, and a second
loradex home pulling from it (issue 8, acceptance 1-3)."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from typer.testing import CliRunner

from _civitai_fixtures import FILE_KEYS, MODEL_KEYS, VERSION_ID, VERSION_KEYS, FakeCivitai, ServedApp, model_for
from loradex.cli.app import app
from loradex.merge.synthetic_adapters import write_random_embedding, write_random_kohya_lora
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.store import Catalog
from loradex.registry.server.civitai_api import create_civitai_app
from loradex.registry.errors import AuthError
from loradex.registry.files.hashing import EMPTY_SHA256
from loradex.registry.remotes import pull
from loradex.registry.server.app import SERVER_ROUTERS, build_server_app

TOKEN = "mirror-token-abcdef"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Home A: a version pulled from (fake) Civitai (over 1 MiB, so it has an AutoV1 of its own), a
    plain LoRA in two versions, an embedding."""
    root = tmp_path_factory.mktemp("mirror")
    lora = write_random_kohya_lora(root / "wc.safetensors", rank=96, seed=21, trigger="wtrclr")
    catalog = Catalog(root / "home-a")
    fake = FakeCivitai(lora)
    pulled = pull(catalog, f"civitai:{VERSION_ID}", transport=fake.transport()).version
    plain = [add_file(catalog, write_random_kohya_lora(root / f"ink{i}.safetensors", rank=4, seed=30 + i,
                                                       trigger="inkwash"), name="ink-wash",
                      tags={"style": "ink"}).version for i in range(2)]
    emb = add_file(catalog, write_random_embedding(root / "emb.safetensors", n_vectors=2, dim=32), name="tiny-emb").version
    with ServedApp(create_civitai_app(catalog, token=TOKEN)) as server:
        yield {"catalog": catalog, "pulled": pulled, "plain": plain, "emb": emb, "url": server.url,
               "fake": fake, "root": root}


def _get(source, path, token=TOKEN, **kw):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(source["url"] + path, headers=headers, timeout=30, **kw)


def test_third_party_get_by_autov2_has_civitai_fields(source):
    v = source["pulled"]
    r = _get(source, f"/api/v1/model-versions/by-hash/{v.autov2.upper()}")
    assert r.status_code == 200
    data = r.json()
    assert VERSION_KEYS <= set(data), VERSION_KEYS - set(data)
    f = data["files"][0]
    assert FILE_KEYS <= set(f), FILE_KEYS - set(f)
    assert f["hashes"]["SHA256"] == v.sha256.upper() and f["hashes"]["AutoV2"] == v.autov2.upper()
    assert f["hashes"]["CRC32"] == source["fake"].version["files"][0]["hashes"]["CRC32"]
    assert f["metadata"] == {"format": "SafeTensor", "size": None, "fp": "fp32"}
    assert f["primary"] is True and f["sizeKB"] == v.size / 1024
    assert data["baseModel"] == "SD 1.5" and data["trainedWords"] == ["wtrclr", "watercolor style"]
    assert data["model"] == {"name": "watercolor-style-lora", "type": "LORA", "nsfw": False, "poi": False,
                             "mode": None}
    assert data["images"][0]["meta"]["cfgScale"] == 7
    assert data["downloadUrl"] == f"{source['url']}/api/download/models/{v.id}"
    # the same value types as the real answer (a third-party client parses them)
    real = source["fake"].version
    for key in ("id", "modelId", "name", "trainedWords", "baseModel", "stats", "files", "images"):
        assert type(data[key]) is type(real[key]), key
    # every hash kind, any case, finds the same version; CRC32 and BLAKE3 are the ones Civitai listed
    listed = real["files"][0]["hashes"]
    assert v.size > 0x110000 and v.autov1 != EMPTY_SHA256[:8]
    for value in (v.autov1, v.autov2.lower(), v.autov3, v.autov3[:12], v.sha256, listed["CRC32"].lower(),
                  listed["BLAKE3"]):
        assert _get(source, f"/api/v1/model-versions/by-hash/{value.upper()}").json()["id"] == v.id, value
    assert {"CRC32", "BLAKE3"} <= set(f["hashes"])
    # a file of at most 1 MiB has the AutoV1 of no bytes: it names no file, though the mirror lists it
    emb = source["emb"]
    assert emb.autov1 == EMPTY_SHA256[:8]
    assert _get(source, f"/api/v1/model-versions/{emb.id}").json()["files"][0]["hashes"]["AutoV1"] == "E3B0C442"
    assert _get(source, f"/api/v1/model-versions/by-hash/{emb.autov1}").json() == {"error": "Model not found"}
    assert _get(source, "/api/v1/model-versions/by-hash/DEADBEEF00").json() == {"error": "Model not found"}


def test_models_listing_filters_and_cursor(source):
    page = _get(source, "/api/v1/models", params={"limit": 2}).json()
    assert [m["name"] for m in page["items"]] == ["watercolor-style-lora", "ink-wash"]
    assert MODEL_KEYS <= set(page["items"][0])
    nxt = httpx.get(page["metadata"]["nextPage"], headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert [m["name"] for m in nxt["items"]] == ["tiny-emb"] and "nextCursor" not in nxt["metadata"]
    ink = _get(source, "/api/v1/models", params={"query": "INK"}).json()["items"]
    assert [m["name"] for m in ink] == ["ink-wash"]
    assert [mv["name"] for mv in ink[0]["modelVersions"]] == ["1.1.0", "1.0.0"]  # newest first
    assert "modelId" not in ink[0]["modelVersions"][0]
    emb = _get(source, "/api/v1/models", params=[("types", "TextualInversion")]).json()["items"]
    assert [m["name"] for m in emb] == ["tiny-emb"]
    assert [m["name"] for m in _get(source, "/api/v1/models", params={"tag": "ink"}).json()["items"]] == ["ink-wash"]
    names = lambda params: [m["name"] for m in _get(source, "/api/v1/models", params=params).json()["items"]]  # noqa: E731
    assert names([("baseModels", "SD 1.5")]) == ["watercolor-style-lora", "ink-wash"]
    assert names([("baseModels", "other")]) == ["tiny-emb"]  # the embedding's family is unknown
    assert names([("baseModels", "SDXL 1.0")]) == []
    assert names([("types", "LORA"), ("types", "TextualInversion"), ("nsfw", "false")]) == [
        "watercolor-style-lora", "ink-wash", "tiny-emb"]  # nsfw: accepted, ignored (no such flag)
    first = _get(source, "/api/v1/models", params=[("baseModels", "SD 1.5"), ("limit", 1)]).json()
    assert [m["name"] for m in first["items"]] == ["watercolor-style-lora"]
    second = httpx.get(first["metadata"]["nextPage"], headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert [m["name"] for m in second["items"]] == ["ink-wash"] and "nextPage" not in second["metadata"]
    paged = _get(source, "/api/v1/models", params=[("types", "LORA"), ("types", "TextualInversion"),
                                                   ("page", 1), ("limit", 2)]).json()
    assert {k: paged["metadata"][k] for k in ("totalItems", "currentPage", "totalPages")} == {
        "totalItems": 3, "currentPage": 1, "totalPages": 2}
    assert paged["metadata"]["nextPage"].count("types=") == 2  # repeated filters survive the next link
    last = httpx.get(paged["metadata"]["nextPage"], headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert [m["name"] for m in last["items"]] == ["tiny-emb"] and "nextPage" not in last["metadata"]
    assert names([("tag", "ink"), ("page", 1), ("limit", 1)]) == ["ink-wash"]
    assert _get(source, "/api/v1/models", params={"page": 0}).status_code == 400
    newest = _get(source, "/api/v1/models", params={"sort": "Newest", "limit": 1}).json()
    assert newest["items"][0]["name"] == "tiny-emb"
    assert _get(source, "/api/v1/models", params={"limit": 101}).status_code == 400
    one = _get(source, f"/api/v1/models/{source['plain'][0].id and ink[0]['id']}").json()
    assert one["id"] == ink[0]["id"] and len(one["modelVersions"]) == 2
    assert _get(source, "/api/v1/models/9999").json() == {"error": "No model with id 9999"}


def test_post_by_hash_and_auth(source):
    v, p = source["pulled"], source["plain"][1]
    r = httpx.post(source["url"] + "/api/v1/model-versions/by-hash", json=[v.sha256.upper(), p.sha256, "00" * 32],
                   headers={"Authorization": f"Bearer {TOKEN}"})
    assert sorted(d["id"] for d in r.json()) == sorted([v.id, p.id])
    assert httpx.post(source["url"] + "/api/v1/model-versions/by-hash", json=["a" * 64] * 101,
                      headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 400
    r = _get(source, f"/api/v1/model-versions/{v.id}", token=None)
    assert r.status_code == 401 and "error" in r.json()
    assert _get(source, f"/api/v1/model-versions/{v.id}?token={TOKEN}", token=None).status_code == 200
    assert _get(source, "/api/v1/model-versions/424242").json() == {"error": "No model version with id 424242"}


def test_download_redirect_range_and_disposition(source):
    v = source["plain"][0]
    blob = source["catalog"].blobs.path_for(v.sha256).read_bytes()
    r = _get(source, f"/api/download/models/{v.id}")
    assert r.status_code == 307
    signed = r.headers["location"]
    assert TOKEN not in signed
    full = httpx.get(signed)  # the signed URL needs no token (like Civitai's storage URLs)
    assert full.status_code == 200 and full.content == blob
    assert 'filename="ink0.safetensors"' in full.headers["content-disposition"]
    part = httpx.get(signed, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == blob[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(blob)}"
    tampered = signed.replace("sig=", "sig=0")
    assert httpx.get(tampered).status_code == 401


@pytest.mark.parametrize("how", ["id", "AutoV1", "AutoV2", "AutoV3", "SHA256", "url", "model-url"])
def test_second_home_pulls_from_mirror(source, tmp_path, monkeypatch, how):
    monkeypatch.setenv("CIVITAI_TOKEN", TOKEN)
    v = source["pulled"]
    ink = source["plain"][1]
    model_id = source["catalog"].get_adapter("watercolor-style-lora").id
    refs = {"id": f"civitai:{v.id}", "AutoV1": f"civitai:hash:{v.autov1}",
            "AutoV2": f"civitai:hash:{v.autov2}", "AutoV3": f"civitai:hash:{v.autov3}",
            "SHA256": f"civitai:hash:{v.sha256}",
            "url": f"{source['url']}/models/{model_id}?modelVersionId={v.id}",
            "model-url": f"{source['url']}/models/{ink.id and source['catalog'].get_adapter('ink-wash').id}"}
    second = Catalog(tmp_path / "home-b")
    endpoint = None if how.endswith("url") else source["url"]
    got = pull(second, refs[how], endpoint=endpoint).version
    expect = ink if how == "model-url" else v
    assert got.sha256 == expect.sha256 == hashlib.sha256(second.blobs.path_for(got.sha256).read_bytes()).hexdigest()
    assert (got.adapter, got.version) == (expect.adapter, expect.version)
    assert list(got.trigger_words) == list(expect.trigger_words)
    assert second.get_adapter(got.adapter).base == source["catalog"].get_adapter(expect.adapter).base
    assert got.extra["civitai"]["versionId"] == expect.id and got.extra["civitai"]["endpoint"] == source["url"]
    assert [(e.relation, e.parent) for e in second.lineage(got.ref)] == [("pulled_from", f"civitai:{expect.id}")]
    from loradex.registry.catalog.records import list_records

    records = list_records(second, got.ref)  # the example image's meta travelled through the mirror
    if expect is v:
        assert [(r.record["seed"], r.record["cfg"]) for r in records] == [(1234567, 7)]
    else:
        assert records == []


def test_second_home_without_token_gets_one_line_401(source, tmp_path, monkeypatch):
    monkeypatch.delenv("CIVITAI_TOKEN", raising=False)
    with pytest.raises(AuthError, match="401 unauthorized") as err:
        pull(Catalog(tmp_path / "b"), f"civitai:{source['pulled'].id}", endpoint=source["url"])
    assert "\n" not in str(err.value)


def test_identify_against_mirror_cli(source, tmp_path, monkeypatch):
    """`loradex identify --all` in a home holding A's file without provenance."""
    monkeypatch.setenv("CIVITAI_TOKEN", TOKEN)
    home = tmp_path / "c"
    monkeypatch.setenv("LORADEX_HOME", str(home))
    blob = source["catalog"].blobs.path_for(source["plain"][0].sha256)
    local = tmp_path / "found.safetensors"
    local.write_bytes(blob.read_bytes())
    runner = CliRunner()
    assert runner.invoke(app, ["add", str(local), "--name", "found"]).exit_code == 0
    r = runner.invoke(app, ["identify", "--all", "--endpoint", source["url"], "--json"])
    assert r.exit_code == 0, r.output
    import json

    out = json.loads(r.stdout)
    assert [h["ref"] for h in out["identified"]] == ["found@1.0.0"]
    assert out["identified"][0]["versionId"] == source["plain"][0].id
    assert TOKEN not in r.output


def test_cli_remote_add_list_and_pull(source, tmp_path, monkeypatch):
    monkeypatch.setenv("CIVITAI_TOKEN", TOKEN)
    monkeypatch.setenv("LORADEX_HOME", str(tmp_path / "d"))
    runner = CliRunner()
    assert runner.invoke(app, ["remote", "add", "team", source["url"], "--kind", "civitai"]).exit_code == 0
    import json

    listed = json.loads(runner.invoke(app, ["remote", "list", "--json"]).stdout)
    assert [(r["name"], r["kind"], r["url"]) for r in listed] == [("team", "civitai", source["url"])]
    r = runner.invoke(app, ["pull", f"team:hash:{source['emb'].autov2}", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["ref"] == "tiny-emb@1.0.0" and data["sha256"] == source["emb"].sha256
    bad = runner.invoke(app, ["remote", "add", "x", f"{source['url']}?token=abc", "--kind", "civitai"])
    assert bad.exit_code != 0
    assert TOKEN not in (tmp_path / "d" / "catalog.db").read_bytes().decode("latin-1")


def test_server_app_collects_registered_routers(source):
    assert "civitai" in SERVER_ROUTERS
    from fastapi.testclient import TestClient

    v = source["pulled"]
    with TestClient(build_server_app(source["catalog"], TOKEN, public_read=True)) as client:
        assert client.get(f"/api/v1/model-versions/by-hash/{v.sha256}").json()["id"] == v.id
    with TestClient(build_server_app(source["catalog"], TOKEN)) as client:
        assert client.get(f"/api/v1/model-versions/by-hash/{v.sha256}").status_code == 401


def test_model_fixture_shape_matches_mirror(source):
    """The mirror's /models/{id} has every key of a real one (fixture captured from Civitai)."""
    real = model_for(source["fake"].version)
    ours = _get(source, f"/api/v1/models/{source['catalog'].get_adapter('watercolor-style-lora').id}").json()
    missing = {"id", "name", "description", "type", "poi", "nsfw", "stats", "creator", "tags",
               "modelVersions"} - set(ours)
    assert not missing and MODEL_KEYS <= set(real)
    assert set(real["modelVersions"][0]) - {"index"} - set(ours["modelVersions"][0]) <= {
        "earlyAccessConfig", "usageControl", "air"}
