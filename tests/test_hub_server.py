"""The Hub-compatible server driven by the unmodified huggingface_hub client (issue 7).

The server runs in a thread on 127.0.0.1 (free port); HfApi / hf_hub_download / snapshot_download
talk to it with ``endpoint=`` and Xet switched off. Raw httpx is used only where the real client
refuses to send what we want to prove the server refuses (path traversal, wrong LFS bytes).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from loradex.registry.server.hub import serve_in_thread

TOKEN = "hub-test-token-7f3a"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    import huggingface_hub.constants as hf_constants
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hf_constants, "HF_HUB_DISABLE_XET", True)  # read at call time by the client
        root = tmp_path_factory.mktemp("hub-root")
        url, stop = serve_in_thread(root, token=TOKEN)
        try:
            yield url, root
        finally:
            stop()


@pytest.fixture(scope="module")
def api(hub):
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub[0], token=TOKEN)


def stats(url: str) -> dict:
    return httpx.get(f"{url}/api/_loradex/stats", headers=AUTH).json()


@pytest.fixture
def adapter_files(tmp_path) -> dict[str, Path]:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(7)
    weights = tmp_path / "pytorch_lora_weights.safetensors"
    save_file({"lora_unet_down.lora_down.weight": rng.standard_normal((4, 32)).astype(np.float32),
               "lora_unet_down.lora_up.weight": rng.standard_normal((32, 4)).astype(np.float32)}, str(weights))
    card = tmp_path / "README.md"
    card.write_text("---\nbase_model: runwayml/stable-diffusion-v1-5\nlibrary_name: diffusers\n"
                    "tags: [lora, text-to-image]\ninstance_prompt: sks dog\n---\n# tiny lora\n")
    manifest = tmp_path / "loradex.json"
    manifest.write_text(json.dumps({"version": "1.0.0"}))
    return {"weights": weights, "card": card, "manifest": manifest}


def push(api, repo_id, files: dict[str, Path], message="v1.0.0"):
    from huggingface_hub import CommitOperationAdd

    ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(src)) for p, src in files.items()]
    return api.create_commit(repo_id, ops, commit_message=message)


def test_roundtrip_regular_and_lfs_files_by_tag_and_commit(hub, api, adapter_files, tmp_path):
    from huggingface_hub import hf_hub_download, snapshot_download

    url, _ = hub
    api.create_repo("team/roundtrip")
    files = {"pytorch_lora_weights.safetensors": adapter_files["weights"], "README.md": adapter_files["card"],
             "loradex.json": adapter_files["manifest"]}
    before = stats(url)
    commit = push(api, "team/roundtrip", files)
    after = stats(url)
    weights = adapter_files["weights"].read_bytes()
    # the safetensors file went through LFS (batch + PUT), the two text files inline in the commit
    assert after["lfs_bytes_received"] - before["lfs_bytes_received"] == len(weights)
    assert after["regular_bytes_received"] - before["regular_bytes_received"] == (
        len(adapter_files["card"].read_bytes()) + len(adapter_files["manifest"].read_bytes()))

    api.create_tag("team/roundtrip", tag="v1.0.0", revision=commit.oid, tag_message="release")
    refs = api.list_repo_refs("team/roundtrip")
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1.0.0", commit.oid)]
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", commit.oid)]

    listing = {f.path: f for f in api.list_repo_tree("team/roundtrip", revision="v1.0.0", recursive=True)}
    lfs_entry = listing["pytorch_lora_weights.safetensors"]
    assert lfs_entry.lfs.sha256 == hashlib.sha256(weights).hexdigest() and lfs_entry.size == len(weights)
    pointer = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{lfs_entry.lfs.sha256}\n"
               f"size {len(weights)}\n").encode()
    assert lfs_entry.blob_id == git_blob_sha1(pointer) and lfs_entry.lfs.pointer_size == len(pointer)
    card_entry = listing["README.md"]
    assert card_entry.lfs is None and card_entry.blob_id == git_blob_sha1(adapter_files["card"].read_bytes())

    info = api.model_info("team/roundtrip", revision="v1.0.0")
    assert info.sha == commit.oid
    assert info.card_data["base_model"] == "runwayml/stable-diffusion-v1-5"
    assert sorted(s.rfilename for s in info.siblings) == sorted([".gitattributes", *files])
    assert sorted(api.list_repo_files("team/roundtrip")) == sorted([".gitattributes", *files])
    paths = api.get_paths_info("team/roundtrip", ["README.md", "missing.txt"], revision=commit.oid)
    assert [p.path for p in paths] == ["README.md"]

    for revision in ("v1.0.0", commit.oid):
        got = hf_hub_download("team/roundtrip", "pytorch_lora_weights.safetensors", revision=revision,
                              endpoint=url, token=TOKEN, cache_dir=tmp_path / f"cache-{revision[:6]}")
        assert Path(got).read_bytes() == weights
    snap = Path(snapshot_download("team/roundtrip", revision="v1.0.0", endpoint=url, token=TOKEN,
                                  cache_dir=tmp_path / "snap"))
    assert snap.name == commit.oid
    for path, src in files.items():
        assert (snap / path).read_bytes() == src.read_bytes()

    history = api.list_repo_commits("team/roundtrip", revision="v1.0.0")
    assert [c.commit_id for c in history][0] == commit.oid and history[-1].title == "initial commit"


def test_second_push_of_same_content_sends_no_blob_bytes(hub, api, adapter_files):
    url, _ = hub
    api.create_repo("team/again")
    files = {"w.safetensors": adapter_files["weights"], "loradex.json": adapter_files["manifest"]}
    first = push(api, "team/again", files)
    before = stats(url)
    second = push(api, "team/again", files, message="same again")
    after = stats(url)
    assert second.oid == first.oid  # the client saw identical oids in preupload: no new commit
    assert after["lfs_bytes_received"] == before["lfs_bytes_received"]
    assert after["regular_bytes_received"] == before["regular_bytes_received"]
    assert after["commits"] == before["commits"]
    # the same blob in another repo is not sent either by a client on the LFS path (0.x clients,
    # loradex's own): the object store is content-addressed. (A huggingface_hub >= 1.0 is answered
    # 'regular' for it, to keep it off Xet, and sends the bytes inline: app.xet_without_asking.)
    from huggingface_hub import HfApi

    api.create_repo("team/other")
    push(HfApi(endpoint=url, token=TOKEN, library_name="loradex"), "team/other",
         {"copy.safetensors": adapter_files["weights"]})
    assert stats(url)["lfs_bytes_received"] == before["lfs_bytes_received"]


def test_auth_required_and_wrong_token(hub, adapter_files):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    url, _ = hub
    HfApi(endpoint=url, token=TOKEN).create_repo("team/private")
    for token in (False, "wrong-token"):
        with pytest.raises(HfHubHTTPError) as err:
            HfApi(endpoint=url, token=token).model_info("team/private")
        assert err.value.response.status_code == 401
        with pytest.raises(HfHubHTTPError) as err:
            HfApi(endpoint=url, token=token).upload_file(path_or_fileobj=b"x", path_in_repo="x.txt",
                                                         repo_id="team/private")
        assert err.value.response.status_code == 401
    r = httpx.get(f"{url}/team/private/resolve/main/.gitattributes")
    assert r.status_code == 401 and "error" in r.json()
    r = httpx.get(f"{url}/api/whoami-v2", headers={"authorization": "Bearer nope"})
    assert r.status_code == 401 and r.headers["X-Error-Message"] == "Invalid credentials in Authorization header"
    assert HfApi(endpoint=url, token=TOKEN).whoami()["name"] == "loradex"


def test_path_traversal_refused(hub, api):
    url, _ = hub
    api.create_repo("team/traversal")
    head = api.model_info("team/traversal").sha
    client = httpx.Client(headers=AUTH)
    bad_paths = ["../evil.txt", "a/../../evil.txt", "/etc/passwd", "C:/evil.txt", "a\\..\\evil.txt",
                 "nul\x00byte.txt", "./a.txt", "a//b.txt", ".git/config"]
    for bad in bad_paths:
        lines = [{"key": "header", "value": {"summary": "evil"}},
                 {"key": "file", "value": {"path": bad, "content": base64.b64encode(b"x").decode(),
                                           "encoding": "base64"}}]
        r = client.post(f"{url}/api/models/team/traversal/commit/main",
                        content="\n".join(json.dumps(line) for line in lines))
        assert r.status_code == 400, (bad, r.status_code, r.text)
        r = client.post(f"{url}/api/models/team/traversal/preupload/main",
                        json={"files": [{"path": bad, "sample": "", "size": 1}]})
        assert r.status_code == 400, bad
    for raw in ("..%2F..%2Fetc%2Fpasswd", "%2E%2E/secret", "a%5C..%5Cb", "%2Fetc%2Fpasswd"):
        r = client.get(f"{url}/team/traversal/resolve/main/{raw}")
        assert r.status_code == 400, (raw, r.status_code)
    assert api.model_info("team/traversal").sha == head  # nothing was committed


def test_range_requests_and_client_resume(hub, api, tmp_path):
    from huggingface_hub import hf_hub_download

    url, _ = hub
    api.create_repo("team/resume")
    data = bytes(range(256)) * 40  # 10240 bytes
    commit = api.upload_file(path_or_fileobj=data, path_in_repo="big.bin", repo_id="team/resume")
    resolve = f"{url}/team/resume/resolve/{commit.oid}/big.bin"

    head = httpx.head(resolve, headers=AUTH)
    sha = hashlib.sha256(data).hexdigest()
    assert head.status_code == 200 and head.headers["X-Repo-Commit"] == commit.oid
    assert head.headers["X-Linked-Etag"] == f'"{sha}"' and head.headers["X-Linked-Size"] == str(len(data))
    assert head.headers["Content-Length"] == str(len(data))

    r = httpx.get(resolve, headers={**AUTH, "Range": "bytes=1000-"})
    assert r.status_code == 206 and r.headers["Content-Range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
    assert r.content == data[1000:]
    r = httpx.get(resolve, headers={**AUTH, "Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    r = httpx.get(resolve, headers={**AUTH, "Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == data[-5:]
    r = httpx.get(resolve, headers={**AUTH, "Range": f"bytes={len(data)}-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}"

    # huggingface_hub's own resume path (http_get with resume_size, as after a dropped stream):
    # the partial file holds *marked* bytes; they survive only if the server answered 206 with
    # the rest, and the server sends only the missing bytes.
    from huggingface_hub.file_download import http_get

    partial = tmp_path / "big.bin.part"
    partial.write_bytes(b"\xff" * 4000)
    served = stats(url)["bytes_served"]
    with open(partial, "ab") as fh:
        http_get(resolve, fh, resume_size=4000, headers=AUTH, expected_size=len(data))
    assert partial.read_bytes() == b"\xff" * 4000 + data[4000:]
    assert stats(url)["bytes_served"] - served == len(data) - 4000


def test_lfs_bytes_must_match_oid_and_commit_needs_uploaded_objects(hub, api):
    url, _ = hub
    api.create_repo("team/corrupt")
    head = api.model_info("team/corrupt").sha
    good = b"real adapter bytes" * 100
    oid = hashlib.sha256(good).hexdigest()
    batch = httpx.post(f"{url}/team/corrupt.git/info/lfs/objects/batch", headers=AUTH,
                       json={"operation": "upload", "transfers": ["basic"], "hash_algo": "sha256",
                             "objects": [{"oid": oid, "size": len(good)}]}).json()
    assert batch["transfer"] == "basic" and "xet" not in json.dumps(batch)
    href = batch["objects"][0]["actions"]["upload"]["href"]
    bad = b"X" + good[1:]
    assert httpx.put(href, content=bad).status_code == 422
    assert httpx.put(href.replace("sig=", "sig=0"), content=good).status_code == 403
    verify = batch["objects"][0]["actions"]["verify"]["href"]
    assert httpx.post(verify, headers=AUTH, json={"oid": oid, "size": len(good)}).status_code == 422
    lines = [{"key": "header", "value": {"summary": "uses a blob never uploaded"}},
             {"key": "lfsFile", "value": {"path": "w.safetensors", "algo": "sha256", "oid": oid, "size": len(good)}}]
    r = httpx.post(f"{url}/api/models/team/corrupt/commit/main", headers=AUTH,
                   content="\n".join(json.dumps(line) for line in lines))
    assert r.status_code == 422
    assert api.model_info("team/corrupt").sha == head
    # the right bytes are accepted, verified and committable
    assert httpx.put(href, content=good).status_code == 200
    assert httpx.post(verify, headers=AUTH, json={"oid": oid, "size": len(good)}).status_code == 200
    r = httpx.post(f"{url}/api/models/team/corrupt/commit/main", headers=AUTH,
                   content="\n".join(json.dumps(line) for line in lines))
    assert r.status_code == 200 and api.model_info("team/corrupt").sha == r.json()["commitOid"]


def test_refs_errors_and_branch_names_with_slash(hub, api, tmp_path):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (HfHubHTTPError, RemoteEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    url, _ = hub
    api.create_repo("team/refs")
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("team/refs")
    assert err.value.response.status_code == 409
    assert api.create_repo("team/refs", exist_ok=True).repo_id == "team/refs"
    c1 = api.upload_file(path_or_fileobj=b"one\n", path_in_repo="f.txt", repo_id="team/refs")
    c2 = api.upload_file(path_or_fileobj=b"two\n", path_in_repo="f.txt", repo_id="team/refs")
    api.create_tag("team/refs", tag="v1.0.0", revision=c1.oid)
    with pytest.raises(HfHubHTTPError) as err:
        api.create_tag("team/refs", tag="v1.0.0", revision=c2.oid)
    assert err.value.response.status_code == 409
    api.create_tag("team/refs", tag="v1.0.0", revision=c2.oid, exist_ok=True)  # no error, tag unchanged
    api.create_branch("team/refs", branch="team/stable", revision="v1.0.0")
    got = hf_hub_download("team/refs", "f.txt", revision="team/stable", endpoint=url, token=TOKEN,
                          cache_dir=tmp_path / "c")
    assert Path(got).read_bytes() == b"one\n"
    refs = api.list_repo_refs("team/refs")
    assert {b.name: b.target_commit for b in refs.branches} == {"main": c2.oid, "team/stable": c1.oid}
    with pytest.raises(HfHubHTTPError) as err:
        api.create_branch("team/refs", branch="team/stable")
    assert err.value.response.status_code == 409
    api.delete_branch("team/refs", branch="team/stable")
    api.delete_tag("team/refs", tag="v1.0.0")
    refs = api.list_repo_refs("team/refs")
    assert refs.tags == [] and [b.name for b in refs.branches] == ["main"]

    with pytest.raises(RevisionNotFoundError):
        api.model_info("team/refs", revision="v9.9.9")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("team/nope")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("team/refs", "missing.txt", endpoint=url, token=TOKEN, cache_dir=tmp_path / "c")
    # a commit whose parent is no longer the head of the branch is refused
    with pytest.raises(HfHubHTTPError) as err:
        api.upload_file(path_or_fileobj=b"three\n", path_in_repo="f.txt", repo_id="team/refs",
                        parent_commit=c1.oid)
    assert err.value.response.status_code == 412
    # deleting files and folders through the client
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    api.create_commit("team/refs", [CommitOperationAdd("dir/a.txt", b"a"), CommitOperationAdd("dir/b.txt", b"b")],
                      commit_message="add dir")
    api.create_commit("team/refs", [CommitOperationDelete("dir/"), CommitOperationDelete("f.txt")],
                      commit_message="remove")
    assert api.list_repo_files("team/refs") == [".gitattributes"]


def test_readme_front_matter_is_validated(hub, api):
    api.create_repo("team/card")
    with pytest.raises(ValueError, match="Invalid metadata"):
        api.upload_file(path_or_fileobj=b"---\nbase_model: [unclosed\n---\n", path_in_repo="README.md",
                        repo_id="team/card")
    api.upload_file(path_or_fileobj=b"---\nbase_model: a/b\n---\nbody\n", path_in_repo="README.md",
                    repo_id="team/card")
    assert api.model_info("team/card").card_data["base_model"] == "a/b"


def test_unknown_route_is_a_hub_style_404(hub):
    url, _ = hub
    r = httpx.get(f"{url}/api/spaces/x/y", headers=AUTH)
    assert r.status_code == 404 and "error" in r.json()
    r = httpx.get(f"{url}/api/models/team/roundtrip/xet-read-token/main", headers=AUTH)
    assert r.status_code == 404  # Xet is never offered


def test_concurrent_commits_to_one_repo_all_land(hub, api):
    from concurrent.futures import ThreadPoolExecutor

    api.create_repo("team/concurrent")
    before = len(api.list_repo_commits("team/concurrent"))

    def upload(i: int):
        return api.upload_file(path_or_fileobj=f"file {i}\n".encode(), path_in_repo=f"f{i}.txt",
                               repo_id="team/concurrent").oid

    with ThreadPoolExecutor(4) as pool:
        oids = list(pool.map(upload, range(4)))
    assert len(set(oids)) == 4
    assert len(api.list_repo_commits("team/concurrent")) == before + 4  # a linear history, no lost update
    assert sorted(api.list_repo_files("team/concurrent")) == [".gitattributes"] + [f"f{i}.txt" for i in range(4)]


def test_aborted_lfs_upload_leaves_no_object(hub, api):
    url, root = hub
    api.create_repo("team/aborted")
    data = b"z" * 300_000
    oid = hashlib.sha256(data).hexdigest()
    batch = httpx.post(f"{url}/team/aborted.git/info/lfs/objects/batch", headers=AUTH,
                       json={"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]}).json()
    href = batch["objects"][0]["actions"]["upload"]["href"]

    def body():
        yield data[:100_000]
        raise ConnectionAbortedError("client died mid-upload")

    with pytest.raises(Exception):
        httpx.put(href, content=body())
    objects = Path(root) / "hub" / "objects" / "sha256"
    assert not (objects / oid[:2] / oid[2:]).exists()
    import time

    deadline = time.monotonic() + 5  # the server notices the disconnect asynchronously
    while list(objects.rglob(".tmp-loradex-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(objects.rglob(".tmp-loradex-*"))


def test_plain_client_configured_by_environment(hub, tmp_path):
    """HF_ENDPOINT / HF_TOKEN / HF_HUB_DISABLE_XET in a fresh interpreter, as a user would set them."""
    import os
    import subprocess
    import sys

    url, _ = hub
    folder = tmp_path / "lora"
    folder.mkdir()
    (folder / "pytorch_lora_weights.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}" + b"\x01" * 5000)
    (folder / "README.md").write_text("---\nbase_model: a/b\n---\n")
    script = (
        "import sys\n"
        "from huggingface_hub import HfApi, snapshot_download\n"
        "api = HfApi()\n"
        "api.create_repo('team/envrepo')\n"
        f"c = api.upload_folder(repo_id='team/envrepo', folder_path={str(folder)!r})\n"
        "api.create_tag('team/envrepo', tag='v1.0.0', revision=c.oid)\n"
        f"print(snapshot_download('team/envrepo', revision='v1.0.0', cache_dir={str(tmp_path / 'cache')!r}))\n"
    )
    env = {**os.environ, "HF_ENDPOINT": url, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1",
           "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    snapshot = Path(out.stdout.strip().splitlines()[-1])
    for name in ("pytorch_lora_weights.safetensors", "README.md"):
        assert (snapshot / name).read_bytes() == (folder / name).read_bytes()
