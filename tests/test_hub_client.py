"""registry.hub_client against the in-process Hub server, through the real huggingface_hub (issue 7):
push sends nothing when the remote has the content, versions (tags) never change, aliases are
branches, pulls verify every byte and resume from a partial file, errors name the repo and say
whether a token was sent, tokens are never written anywhere."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from loradex.registry.remotes import hub_client
from loradex.registry.errors import AuthError, Conflict, NotFound
from loradex.registry.server.hub import serve_in_thread

TOKEN = "client-test-token-91c2"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    root = tmp_path_factory.mktemp("hub-root")
    url, stop = serve_in_thread(root, token=TOKEN)
    try:
        yield url, root
    finally:
        stop()


def stats(url: str) -> dict:
    return httpx.get(f"{url}/api/_loradex/stats", headers={"authorization": f"Bearer {TOKEN}"}).json()


def refs(url: str, repo_id: str) -> dict:
    r = httpx.get(f"{url}/api/models/{repo_id}/refs", headers={"authorization": f"Bearer {TOKEN}"}).json()
    return {"tags": {t["name"]: t["targetCommit"] for t in r["tags"]},
            "branches": {b["name"]: b["targetCommit"] for b in r["branches"]}}


@pytest.fixture
def version_files(tmp_path) -> dict[str, Path]:
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(256)) * 64)
    manifest = tmp_path / "loradex.json"
    manifest.write_text('{"version": "1.0.0"}\n')
    sample = tmp_path / "sample.png"
    sample.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 300)
    return {"pytorch_lora_weights.safetensors": weights, "loradex.json": manifest, "samples/0.png": sample}


def test_resolve_token(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no token saved by `hf auth login` here
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("LORADEX_TOKEN_TEAM_MIRROR", raising=False)
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr(c, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf" / "stored_tokens"))
    assert hub_client.resolve_token("team-mirror") is None
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    assert hub_client.resolve_token("team-mirror") == "hf_from_env"
    assert hub_client.resolve_token("team-mirror", hf_fallback=False) is None  # never leak HF token to a mirror
    monkeypatch.setenv("LORADEX_TOKEN_TEAM_MIRROR", "mirror-token")
    assert hub_client.token_env_name("team-mirror") == "LORADEX_TOKEN_TEAM_MIRROR"
    assert hub_client.resolve_token("team-mirror") == "mirror-token"


def test_push_pull_roundtrip_and_idempotent_push(hub, version_files, tmp_path):
    url, root = hub
    before = stats(url)
    result = hub_client.push_files(url, "team/lora", version_files, "v1.0.0", TOKEN, tag="v1.0.0",
                                   branch_aliases={"stable": None})
    assert sorted(result.uploaded) == sorted(version_files) and result.tag_created
    assert result.branches_set == ["stable"]
    weights = version_files["pytorch_lora_weights.safetensors"].read_bytes()
    png = version_files["samples/0.png"].read_bytes()
    after = stats(url)
    assert after["lfs_bytes_received"] - before["lfs_bytes_received"] == len(weights) + len(png)
    r = refs(url, "team/lora")
    assert r["tags"] == {"v1.0.0": result.commit}
    assert r["branches"] == {"main": result.commit, "stable": result.commit}

    # pushing the same version again sends nothing at all
    again = hub_client.push_files(url, "team/lora", version_files, "v1.0.0", TOKEN, tag="v1.0.0",
                                  branch_aliases={"stable": "v1.0.0"})
    assert again.sent_nothing and again.commit == result.commit and not again.branches_set
    final = stats(url)
    assert (final["lfs_bytes_received"], final["regular_bytes_received"], final["commits"]) == (
        after["lfs_bytes_received"], after["regular_bytes_received"], after["commits"])

    sha, files = hub_client.pull_revision(url, "team/lora", "v1.0.0", tmp_path / "pulled", TOKEN)
    assert sha == result.commit
    assert sorted(files) == sorted(version_files)  # .gitattributes is Hub housekeeping, left out
    for path, src in version_files.items():
        assert files[path].read_bytes() == src.read_bytes()
        assert files[path] == tmp_path / "pulled" / path
    assert not list((tmp_path / "pulled" / hub_client.PARTIAL_DIR).glob("*.part"))
    # the token is written nowhere: not in the pulled tree, not in the server's store
    for base in (tmp_path / "pulled", Path(root)):
        for f in base.rglob("*"):
            if f.is_file():
                assert TOKEN.encode() not in f.read_bytes(), f


def test_versions_never_change_and_aliases_move(hub, version_files, tmp_path):
    url, _ = hub
    v1 = hub_client.push_files(url, "team/versions", version_files, "v1.0.0", TOKEN, tag="v1.0.0",
                               branch_aliases={"stable": None})
    changed = tmp_path / "changed.json"
    changed.write_text('{"version": "1.0.0", "tampered": true}\n')
    tampered = {**version_files, "loradex.json": changed}
    with pytest.raises(Conflict, match="v1.0.0"):
        hub_client.push_files(url, "team/versions", tampered, "v1.0.0 again", TOKEN, tag="v1.0.0")
    assert refs(url, "team/versions")["branches"]["main"] == v1.commit  # nothing committed

    v2_files = {"pytorch_lora_weights.safetensors": version_files["pytorch_lora_weights.safetensors"],
                "loradex.json": changed}  # the sample image is gone in v1.1.0
    v2 = hub_client.push_files(url, "team/versions", v2_files, "v1.1.0", TOKEN, tag="v1.1.0",
                               branch_aliases={"stable": None, "previous": "v1.0.0"})
    assert v2.uploaded == ["loradex.json"] and v2.deleted == ["samples/0.png"]
    r = refs(url, "team/versions")
    assert r["tags"] == {"v1.0.0": v1.commit, "v1.1.0": v2.commit}
    assert r["branches"] == {"main": v2.commit, "stable": v2.commit, "previous": v1.commit}
    sha, files = hub_client.pull_revision(url, "team/versions", "stable", tmp_path / "p2", TOKEN)
    assert sha == v2.commit and sorted(files) == sorted(v2_files)
    sha, files = hub_client.pull_revision(url, "team/versions", v1.commit, tmp_path / "p1", TOKEN)
    assert sorted(files) == sorted(version_files)


def test_pull_resumes_from_partial_and_rejects_wrong_bytes(hub, version_files, tmp_path):
    url, _ = hub
    result = hub_client.push_files(url, "team/resume", version_files, "v1.0.0", TOKEN, tag="v1.0.0")
    weights = version_files["pytorch_lora_weights.safetensors"].read_bytes()
    sha256 = hashlib.sha256(weights).hexdigest()
    dest = tmp_path / "dest"
    part = dest / hub_client.PARTIAL_DIR / f"{sha256}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(weights[:5000])  # what a pull killed mid-transfer leaves behind
    served = stats(url)["bytes_served"]
    seen: list[tuple[int, int, str]] = []
    sha, files = hub_client.pull_revision(url, "team/resume", "v1.0.0", dest, TOKEN,
                                          allow_patterns=["*.safetensors"],
                                          progress=lambda done, total, path: seen.append((done, total, path)))
    assert sha == result.commit and list(files) == ["pytorch_lora_weights.safetensors"]
    # the progress callback sees bytes as they arrive: from the resumed 5000 up to the whole file
    dones = [d for d, _, _ in seen]
    assert dones[0] == 5000 and dones[-1] == len(weights) and dones == sorted(dones)
    assert {t for _, t, _ in seen} == {len(weights)}
    assert files["pytorch_lora_weights.safetensors"].read_bytes() == weights
    assert stats(url)["bytes_served"] - served == len(weights) - 5000  # only the rest was sent

    # a partial with wrong bytes resumes into a file that fails the sha256 check: fetched again
    dest2 = tmp_path / "dest2"
    part2 = dest2 / hub_client.PARTIAL_DIR / f"{sha256}.part"
    part2.parent.mkdir(parents=True)
    part2.write_bytes(b"\xee" * 5000)
    _, files = hub_client.pull_revision(url, "team/resume", "v1.0.0", dest2, TOKEN,
                                        allow_patterns=["*.safetensors"])
    assert files["pytorch_lora_weights.safetensors"].read_bytes() == weights
    assert not part2.exists()


def test_errors_name_the_repo_and_the_token_state(hub, version_files, tmp_path):
    url, _ = hub
    hub_client.push_files(url, "team/errs", version_files, "v1.0.0", TOKEN, tag="v1.0.0")
    with pytest.raises(AuthError) as err:
        hub_client.pull_revision(url, "team/errs", "v1.0.0", tmp_path / "a", "wrong-token")
    assert "team/errs" in str(err.value) and "a token was sent" in str(err.value)
    assert "wrong-token" not in str(err.value)
    with pytest.raises(AuthError) as err:
        hub_client.push_files(url, "team/errs", version_files, "v1.0.0", None, tag="v1.0.0")
    assert "no token was sent" in str(err.value)
    with pytest.raises(NotFound, match="team/missing"):
        hub_client.pull_revision(url, "team/missing", "main", tmp_path / "b", TOKEN)
    with pytest.raises(NotFound, match="revision"):
        hub_client.pull_revision(url, "team/errs", "v9.0.0", tmp_path / "c", TOKEN)


def test_xet_is_switched_off_only_for_non_hub_endpoints(hub, version_files, monkeypatch):
    import huggingface_hub.constants as c

    url, _ = hub
    monkeypatch.setattr(c, "HF_HUB_DISABLE_XET", False)  # as for a user with hf_xet installed
    result = hub_client.push_files(url, "team/xet", version_files, "v1.0.0", TOKEN, tag="v1.0.0")
    assert result.uploaded and c.HF_HUB_DISABLE_XET is False  # restored after the call
    assert hub_client.uses_xet("https://huggingface.co") and not hub_client.uses_xet(url)


def test_retries_only_transient_http_errors():
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    def failing(status, times):
        calls = []

        def fn():
            calls.append(1)
            if len(calls) <= times:
                response = httpx2.Response(status, request=httpx2.Request("GET", "http://127.0.0.1/x"))
                raise HfHubHTTPError(f"{status}", response=response)
            return "ok"
        return fn, calls

    fn, calls = failing(503, 2)
    assert hub_client._retrying(fn, delays=(0, 0, 0)) == "ok" and len(calls) == 3
    fn, calls = failing(429, 5)
    with pytest.raises(HfHubHTTPError):
        hub_client._retrying(fn, delays=(0, 0))
    assert len(calls) == 3
    fn, calls = failing(404, 1)
    with pytest.raises(HfHubHTTPError):
        hub_client._retrying(fn, delays=(0, 0))
    assert len(calls) == 1
