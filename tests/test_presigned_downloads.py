"""``loradex serve --presigned-downloads`` with the blobs in S3 (moto on 127.0.0.1): Hub ``resolve``
of an LFS file and Civitai ``download`` answer with a redirect to a pre-signed URL of the bucket
(with ``X-Linked-Etag``/``X-Linked-Size`` on the Hub side), the real clients (huggingface_hub,
civitapy) follow it and get the right bytes, and the server streams none of them; regular files
still stream through; with local blobs the option is a usage error."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

import _hub_sync_fixtures
import _s3
from _civitai_clients import need_client
from _hub_sync_fixtures import TOKEN
from _served_app import ServedApp
from loradex.merge.synthetic_adapters import write_random_kohya_lora
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import UsageError

s3_server, s3_blobs = _s3.s3_server, _s3.s3_blobs  # the fixtures
_quiet_hub = _hub_sync_fixtures._quiet_hub  # autouse: no progress bars, no Xet, no ambient token
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def presigning(s3_blobs, tmp_path):
    from loradex.registry.server.app import build_server_app

    catalog = Catalog(tmp_path / "served")
    with ServedApp(build_server_app(catalog, TOKEN, presigned_downloads=True)) as server:
        server.catalog = catalog
        yield server


def sha256_of(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_hub_resolve_redirects_lfs_files_to_the_bucket(presigning, s3_blobs, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi(endpoint=presigning.url, token=TOKEN)
    lora = write_random_kohya_lora(tmp_path / "style.safetensors", seed=7)
    api.create_repo("team/style")
    api.upload_file(path_or_fileobj=str(lora), path_in_repo="weights/style.safetensors", repo_id="team/style")
    api.upload_file(path_or_fileobj=b"# style\n", path_in_repo="README.md", repo_id="team/style")
    sha, size = sha256_of(lora), lora.stat().st_size

    url = f"{presigning.url}/team/style/resolve/main/weights/style.safetensors"
    for method in ("HEAD", "GET"):
        answer = httpx.request(method, url, headers=AUTH)
        assert answer.status_code == 302
        assert answer.headers["x-linked-etag"] == f'"{sha}"' and answer.headers["x-linked-size"] == str(size)
        assert answer.headers["x-repo-commit"] == api.list_repo_commits("team/style")[0].commit_id
        target = urlsplit(answer.headers["location"])
        assert f"{target.scheme}://{target.netloc}" == s3_blobs["LORADEX_S3_ENDPOINT_URL"]
        assert target.path.endswith(f"/hub/sha256/{sha[:2]}/{sha[2:]}")
        query = parse_qs(target.query)
        assert "style.safetensors" in query["response-content-disposition"][0]
        assert int(query["X-Amz-Expires"][0]) <= 600
    fetched = httpx.get(answer.headers["location"])  # no token: the signature is the credential
    assert fetched.status_code == 200 and hashlib.sha256(fetched.content).hexdigest() == sha
    assert 'filename="style.safetensors"' in fetched.headers["content-disposition"]
    tampered = answer.headers["location"].replace(sha[2:8], "000000")
    assert httpx.get(tampered).status_code == 403

    got = hf_hub_download("team/style", "weights/style.safetensors", endpoint=presigning.url, token=TOKEN,
                          cache_dir=tmp_path / "cache")
    assert sha256_of(got) == sha
    readme = hf_hub_download("team/style", "README.md", endpoint=presigning.url, token=TOKEN,
                             cache_dir=tmp_path / "cache")
    assert open(readme, "rb").read() == b"# style\n"  # a regular file streams through, as on the Hub
    stats = httpx.get(f"{presigning.url}/api/_loradex/stats", headers=AUTH).json()
    assert stats["bytes_served"] == len(b"# style\n")  # not one byte of the LFS file went through the server


def test_civitai_download_redirects_to_the_bucket(presigning, s3_blobs, tmp_path, monkeypatch):
    civitapy = need_client("civitapy")
    monkeypatch.delenv("CIVITAI_TOKEN", raising=False)
    lora = write_random_kohya_lora(tmp_path / "ink.safetensors", seed=8)
    version = add_file(presigning.catalog, lora, name="ink", version="1.0.0").version

    answer = httpx.get(f"{presigning.url}/api/download/models/{version.id}", headers=AUTH)
    assert answer.status_code == 307
    target = answer.headers["location"]
    assert target.startswith(s3_blobs["LORADEX_S3_ENDPOINT_URL"] + "/")
    fetched = httpx.get(target)
    assert hashlib.sha256(fetched.content).hexdigest() == version.sha256
    assert "ink" in fetched.headers["content-disposition"]
    assert httpx.get(f"{presigning.url}/api/download/models/{version.id}").status_code == 401  # still gated

    client = civitapy.CivitAIClient(base_url=presigning.url + "/api/v1", token=TOKEN,
                                    download_dir=str(tmp_path / "dl"), retry_count=1, verify_hash=True)
    (path,) = client.download_model_version(version.id)
    assert sha256_of(path) == version.sha256


def test_presigned_downloads_need_object_storage(tmp_path, monkeypatch):
    from _fault_remote import run_cli
    from loradex.registry.server.app import build_server_app

    monkeypatch.delenv("LORADEX_BLOBS", raising=False)
    with pytest.raises(UsageError, match="presigned-downloads needs blobs on object storage"):
        build_server_app(Catalog(tmp_path / "local"), TOKEN, presigned_downloads=True)
    monkeypatch.setenv("LORADEX_SERVE_TOKEN", TOKEN)
    code, err = run_cli("serve", "--presigned-downloads", "--home", str(tmp_path / "local"))
    assert code == 2 and err.count("\n") == 1 and "object storage" in err
