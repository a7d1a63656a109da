"""The Civitai client against a fake civitai.com + storage host (httpx.MockTransport): pull by
id/hash/URL, token handling across redirects, 404, 429 forever, a JSON error body with a binary
type, identify (issue 8). The failures `loradex serve` can be made to show over a socket (401, early
access, 429 once, wrong hash, truncated/HTML/oversize bodies, resume) are in
test_civitai_serve_faults.py."""

from __future__ import annotations

import hashlib

import pytest

from _civitai_fixtures import FILE_ID, MODEL_ID, STORAGE, VERSION_ID, FakeCivitai, version_for
from loradex.merge.synthetic_adapters import write_random_kohya_lora
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import InvalidRef, NotFound, RemoteError, TransferError
from loradex.registry.remotes import add_remote, list_remotes, pull
from loradex.registry.remotes.civitai import (base_family, identify, normalise_name, parse_civitai_ref,
                                              semver_from_name)

TOKEN = "civ-secret-token-0123456789"


@pytest.fixture(scope="module")
def lora_path(tmp_path_factory):
    # over 1 MiB, so its AutoV1 (the 64 KiB at 1 MiB) names it
    return write_random_kohya_lora(tmp_path_factory.mktemp("civ") / "wc.safetensors", rank=96, seed=7,
                                   trigger="wtrclr")


@pytest.fixture
def fake(lora_path):
    return FakeCivitai(lora_path)


@pytest.fixture
def catalog():
    return Catalog()


def _pull(catalog, fake, ref=f"civitai:{VERSION_ID}", **kw):
    return pull(catalog, ref, transport=fake.transport(), sleep=lambda s: fake.sleeps.append(s), **kw)


@pytest.fixture(autouse=True)
def _sleeps(fake):
    fake.sleeps = []


def _nothing_registered(catalog):
    assert catalog.list_adapters() == []
    assert not any((catalog.home / "downloads").rglob("*.safetensors")), "a verified file was left"


def test_refs_and_mappings():
    assert parse_civitai_ref("civitai:128713").version_id == 128713
    assert parse_civitai_ref("civitai:hash:abcdef0123").hash == "ABCDEF0123"
    with pytest.raises(InvalidRef, match="AutoV1 of every file of at most 1 MiB"):
        parse_civitai_ref("civitai:hash:E3B0C442")
    t = parse_civitai_ref("https://civitai.com/models/4201/watercolor?modelVersionId=128713")
    assert (t.model_id, t.version_id, t.origin) == (4201, 128713, "https://civitai.com")
    assert parse_civitai_ref("https://civitai.com/models/4201").version_id is None
    assert [base_family(b) for b in ("SD 1.5", "SDXL 1.0", "Pony", "SD 2.1 768", "SD 3.5 Large",
                                      "Flux.1 D", "Illustrious", "Other")] == \
        ["sd1", "sdxl", "sdxl", "sd2", "sd3", "flux", "sdxl", "unknown"]
    assert [semver_from_name(n) for n in ("v1.5", "V2", "1.2.3", "final", "v1.0-beta")] == \
        ["1.5.0", "2.0.0", "1.2.3", None, None]
    assert normalise_name("Watercolor Style (LoRA)", 1) == "watercolor-style-lora"
    assert normalise_name("水彩", 42) == "civitai-42"


def test_pull_by_version_id_registers_everything(catalog, fake, lora_path, monkeypatch):
    monkeypatch.setenv("CIVITAI_TOKEN", TOKEN)
    fake.need_token = TOKEN
    seen = []
    result = _pull(catalog, fake, progress=lambda done, total, desc: seen.append((done, total)))
    v = result.version
    sha = hashlib.sha256(lora_path.read_bytes()).hexdigest()
    assert (v.adapter, v.version, v.sha256) == ("watercolor-style-lora", "1.5.0", sha)
    assert v.file_name == "watercolorStyle_v15.safetensors"
    assert catalog.get_adapter(v.adapter).base == "sd1"
    assert list(v.trigger_words) == ["wtrclr", "watercolor style"]
    civ = v.extra["civitai"]
    assert (civ["modelId"], civ["versionId"], civ["fileId"]) == (MODEL_ID, VERSION_ID, FILE_ID)
    from loradex.registry.catalog.records import list_records

    records = list_records(catalog, v.ref)
    assert result.records == 1 and len(records) == 1 and "images" not in civ
    rec = records[0].record
    assert (rec["seed"], rec["steps"], rec["cfg"], rec["width"], rec["height"]) == (1234567, 28, 7, 512, 768)
    assert rec["scheduler"]["name"] == "DPM++ 2M Karras" and rec["negative_prompt"] == "lowres, blurry"
    assert rec["clean_prompt"] == "wtrclr, a lighthouse at dusk"
    assert rec["stack"] == [{"requested": "watercolorStyle_v15", "ref": v.ref, "sha256": v.sha256,
                             "te_weight": 0.8, "unet_weight": 0.8}]
    edges = catalog.lineage(v.ref)
    assert [(e.relation, e.parent) for e in edges] == [("pulled_from", f"civitai:{VERSION_ID}")]
    assert seen[-1] == (lora_path.stat().st_size, lora_path.stat().st_size)
    assert result.downloaded_bytes == lora_path.stat().st_size
    # token: on the API host only, never on the storage host the download redirected to
    api = [r for r in fake.log if r.url.host == "civitai.com"]
    storage = [r for r in fake.log if str(r.url).startswith(STORAGE)]
    assert api and storage
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in api)
    assert all("authorization" not in r.headers for r in storage)
    assert all(TOKEN not in str(r.url) for r in fake.log)
    # nothing of the token in the home
    for path in catalog.home.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    # pulling again downloads nothing
    again = _pull(catalog, fake)
    assert again.already_present and again.version.ref == v.ref and again.downloaded_bytes == 0


@pytest.mark.parametrize("kind", ["AutoV1", "AutoV2", "AutoV3", "SHA256"])
def test_pull_by_each_hash_kind(catalog, fake, kind):
    value = fake.version["files"][0]["hashes"][kind]
    v = _pull(catalog, fake, f"civitai:hash:{value.lower()}").version
    assert v.extra["civitai"]["versionId"] == VERSION_ID and v.version == "1.5.0"


def test_pull_by_url_takes_latest_or_given_version(catalog, fake):
    v = _pull(catalog, fake, f"https://civitai.com/models/{MODEL_ID}/watercolor-style").version
    assert v.extra["civitai"]["versionId"] == VERSION_ID  # modelVersions[0] is the newest
    assert any(r.url.path == f"/api/v1/models/{MODEL_ID}" for r in fake.log)
    catalog2 = Catalog(catalog.home.parent / "second")
    v2 = _pull(catalog2, fake, f"https://civitai.com/models/{MODEL_ID}?modelVersionId={VERSION_ID}").version
    assert v2.sha256 == v.sha256


def test_semver_taken_falls_back_to_bump(catalog, fake, tmp_path):
    other = write_random_kohya_lora(tmp_path / "other.safetensors", rank=4, seed=99)
    add_file(catalog, other, name="watercolor-style-lora", version="1.5.0")
    v = _pull(catalog, fake).version
    assert v.version == "1.6.0"


def test_404(catalog, fake):
    with pytest.raises(NotFound, match="civitai version 999: not found"):
        _pull(catalog, fake, "civitai:999")
    with pytest.raises(NotFound, match="Model not found"):
        _pull(catalog, fake, "civitai:hash:ABCDEF0123")


def test_429_forever_gives_one_line(catalog, fake):
    fake.rate_limit = 100
    with pytest.raises(RemoteError, match=r"still rate limited \(429\)"):
        _pull(catalog, fake)
    assert len(fake.sleeps) == 5


def test_json_body_with_binary_type_rejected(catalog, fake):
    fake.json_body = True
    with pytest.raises(TransferError, match="text page instead of the file: signature expired"):
        _pull(catalog, fake)
    _nothing_registered(catalog)


def test_pick_file_by_type_and_name(catalog, fake):
    with pytest.raises(NotFound, match="no file of type 'VAE'"):
        _pull(catalog, fake, file_type="VAE")
    with pytest.raises(NotFound, match="no file named 'x.bin'"):
        _pull(catalog, fake, file="x.bin")


def test_remote_record_routes_refs(catalog, fake):
    add_remote(catalog, "civ", "https://civitai.com", "civitai")
    assert [(r.name, r.kind) for r in list_remotes(catalog)] == [("civ", "civitai")]
    v = _pull(catalog, fake, f"civ:{VERSION_ID}").version
    assert v.extra["civitai"]["endpoint"] == "https://civitai.com"


def test_identify_attaches_provenance(catalog, fake, lora_path, tmp_path):
    known = add_file(catalog, lora_path, name="mystery", triggers=None).version
    other = write_random_kohya_lora(tmp_path / "u.safetensors", rank=4, seed=11)
    unknown = add_file(catalog, other, name="unknown-one").version
    report = identify(catalog, all_versions=True, transport=fake.transport(), sleep=lambda s: None)
    assert [h["ref"] for h in report.identified] == [known.ref]
    assert report.unknown == [unknown.ref]
    v = catalog.resolve(known.ref)
    assert v.extra["civitai"]["versionId"] == VERSION_ID and v.extra["civitai"]["via"] == "identify"
    assert [(e.relation, e.parent) for e in catalog.lineage(v.ref)] == [("pulled_from", f"civitai:{VERSION_ID}")]
    posts = [r for r in fake.log if r.method == "POST"]
    assert len(posts) == 1
    again = identify(catalog, all_versions=True, transport=fake.transport(), sleep=lambda s: None)
    assert again.skipped == [known.ref] and again.identified == []


def test_identify_batches_of_100(catalog, fake, monkeypatch):
    from loradex.registry.remotes import civitai

    sent = []
    client = civitai.CivitaiClient("https://civitai.com", transport=fake.transport(), sleep=lambda s: None)
    hashes = [f"{i:064X}" for i in range(250)]
    real = client.get_json

    def spy(path, **kw):
        sent.append(len(kw.get("json") or []))
        return real(path, **kw)

    monkeypatch.setattr(client, "get_json", spy)
    client.versions_by_hashes(hashes)
    assert sent == [100, 100, 50]


def test_version_for_fixture_is_consistent(lora_path):
    data = version_for(lora_path)
    assert data["files"][0]["hashes"]["SHA256"].lower() == hashlib.sha256(lora_path.read_bytes()).hexdigest()
