"""Issue 7, `loradex serve` side: commits become catalog versions, tags map to semver versions,
alias branches move catalog aliases. Pushed with the real `loradex push` (huggingface_hub client)
to a `loradex serve` app on 127.0.0.1; the SERVER home's catalog and its Civitai-style API are
then checked against the pushed file."""

from __future__ import annotations

import json

import httpx
import pytest
from typer.testing import CliRunner

from _hub_sync_fixtures import _quiet_hub, server  # noqa: F401 (fixtures)
from _hub_sync_fixtures import TOKEN, ThreadServer, move_alias, publishing_home, stats
from loradex.cli.app import app
from loradex.merge.synthetic_adapters import write_random_kohya_lora
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import NotFound, RemoteError
from loradex.registry.server.hub.catalog_bridge import adapter_name_for
from loradex.registry.remotes import add_remote, push

runner = CliRunner()
AUTH = {"authorization": f"Bearer {TOKEN}"}


def hub_api(url: str):
    from huggingface_hub import HfApi

    return HfApi(endpoint=url, token=TOKEN)


def repo_refs(url: str, repo: str) -> tuple[dict, dict]:
    refs = httpx.get(f"{url}/api/models/{repo}/refs", headers=AUTH).json()
    return ({t["name"]: t["targetCommit"] for t in refs["tags"]},
            {b["name"]: b["targetCommit"] for b in refs["branches"]})


def test_pushed_version_is_a_catalog_version_of_the_server_home(server, tmp_path):
    pub = publishing_home(tmp_path / "a", tmp_path, evidence=False)
    add_remote(pub.catalog, "team", f"{server.url}/team", "mirror")
    result = runner.invoke(app, ["push", pub.ref, "team", "--home", str(tmp_path / "a"), "--json"])
    assert result.exit_code == 0, result.output
    pushed = json.loads(result.stdout)

    served = Catalog(server.home)
    v = served.resolve("style@1.0.0")
    mine = pub.catalog.resolve(pub.ref)
    assert (v.sha256, v.size, v.autov2, v.file_format) == (mine.sha256, mine.size, mine.autov2, mine.file_format)
    assert v.trigger_words == ("zk",) and served.get_adapter("style").description == "A test style."
    assert served.get_adapter("style").base == "sd1" and served.get_adapter("style").kind == "lora"
    assert [(a.name, a.version) for a in served.aliases("style")] == [("production", "1.0.0")]
    # provenance: who pushed, which repo and commit
    assert v.extra["hub"] == {"repo_id": "team/style", "revision": "v1.0.0", "commit": pushed["commit"],
                              "path": "style.safetensors", "base_model": "stable-diffusion-v1-5/stable-diffusion-v1-5",
                              "pushed_by": "loradex"}
    assert v.created_by == "loradex" and v.message == f"pushed to team/style@v1.0.0 ({pushed['commit'][:12]}) by loradex"
    # the blob store holds the bytes once: a hardlink of the object the client uploaded
    blob, obj = served.blobs.path_for(v.sha256), server.home / "mirror" / "hub" / "objects" / "sha256" / v.sha256[:2] / v.sha256[2:]
    assert blob.read_bytes() == pub.catalog.blobs.path_for(mine.sha256).read_bytes()
    assert blob.stat().st_ino == obj.stat().st_ino
    assert served.blobs.verify_blob(v.sha256) is None

    # the Civitai-style API of the same server finds it by hash
    answer = httpx.get(f"{server.url}/api/v1/model-versions/by-hash/{mine.sha256}", headers=AUTH)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["name"] == "1.0.0" and body["files"][0]["hashes"]["SHA256"].lower() == mine.sha256
    assert body["trainedWords"] == ["zk"]

    # pushing the same version again adds nothing
    again = push(pub.catalog, pub.ref, "team")
    assert again.already_there and len(served.versions("style")) == 1
    assert len(served.alias_history("style", "production")) == 1


def test_new_version_registers_and_moves_alias_branches(server, tmp_path):
    pub = publishing_home(tmp_path / "a", tmp_path, evidence=False)
    add_remote(pub.catalog, "team", f"{server.url}/team", "mirror")
    push(pub.catalog, pub.ref, "team")
    v2 = add_file(pub.catalog, write_random_kohya_lora(tmp_path / "v2.safetensors", seed=9), name="style",
                  version="1.1.0").version
    move_alias(pub.catalog, v2.ref, "production")
    move_alias(pub.catalog, pub.ref, "stable")
    push(pub.catalog, v2.ref, "team")

    served = Catalog(server.home)
    assert [(v.version, v.sha256) for v in served.versions("style")] == [("1.0.0", pub.sha256), ("1.1.0", v2.sha256)]
    assert {(a.name, a.version) for a in served.aliases("style")} == {("production", "1.1.0"), ("stable", "1.0.0")}
    assert [(e.from_version, e.to_version) for e in served.alias_history("style", "production")] == \
        [(None, "1.0.0"), ("1.0.0", "1.1.0")]


def test_different_file_under_a_version_the_server_has_is_refused_and_nothing_changes(server, tmp_path):
    # the server's own catalog already holds style@1.0.0 (added there directly), with other bytes
    Catalog(server.home)
    add_file(Catalog(server.home), write_random_kohya_lora(tmp_path / "theirs.safetensors", seed=5),
             name="style", version="1.0.0")
    pub = publishing_home(tmp_path / "a", tmp_path, evidence=False)
    add_remote(pub.catalog, "team", f"{server.url}/team", "mirror")
    with pytest.raises(RemoteError, match=r"422.*style@1\.0\.0 is already in this server's catalog with another file"):
        push(pub.catalog, pub.ref, "team")
    tags, branches = repo_refs(server.url, "team/style")
    assert tags == {} and "production" not in branches  # the tag was not written: both halves agree
    served = Catalog(server.home)
    assert [v.sha256 for v in served.versions("style")] != [pub.sha256] and len(served.versions("style")) == 1
    # the repo store is intact: main holds the pushed commit and serves its file
    got = httpx.get(f"{server.url}/team/style/resolve/main/style.safetensors", headers=AUTH)
    assert got.status_code == 200 and got.content == pub.catalog.blobs.path_for(pub.sha256).read_bytes()
    # a retry is refused the same way, through the CLI as one line
    result = runner.invoke(app, ["push", pub.ref, "team", "--home", str(tmp_path / "a")])
    assert result.exit_code == 1 and "already in this server's catalog" in str(result.exception)


def test_plain_repo_tag_is_probed_and_retagging_the_same_commit_adds_nothing(server, tmp_path):
    from loradex.registry.remotes import hub_client

    src = write_random_kohya_lora(tmp_path / "w.safetensors", rank=4, seed=3)
    readme = tmp_path / "README.md"
    readme.write_text("---\nbase_model: stable-diffusion-v1-5/stable-diffusion-v1-5\ninstance_prompt: sks dog\n"
                      "---\n\n# A dog\n\nWeights trained on a dog.\n")
    pushed = hub_client.push_files(server.url, "someone/Dog_LoRA", {"pytorch_lora_weights.safetensors": src,
                                                                     "README.md": readme}, "upload", TOKEN)
    api = hub_api(server.url)
    served = Catalog(server.home)
    with pytest.raises(NotFound):
        served.get_adapter("dog_lora")  # a commit alone is no version: the tag makes it one
    api.create_tag("someone/Dog_LoRA", tag="v0.3.0", revision=pushed.commit)
    v = served.resolve("dog_lora@0.3.0")
    from loradex.registry.files.hashing import hash_file
    from loradex.registry.probe import probe_path

    assert v.sha256 == hash_file(src).sha256 and v.probe == probe_path(src).to_dict()
    assert v.file_name == "pytorch_lora_weights.safetensors" and v.trigger_words == ("sks dog",)
    assert served.get_adapter("dog_lora").description == "Weights trained on a dog."
    assert v.extra["hub"]["base_model"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    # the same commit under another version tag: the tag is written, no second version
    api.create_tag("someone/Dog_LoRA", tag="v0.4.0", revision=pushed.commit)
    assert [x.version for x in served.versions("dog_lora")] == ["0.3.0"]
    assert set(repo_refs(server.url, "someone/Dog_LoRA")[0]) == {"v0.3.0", "v0.4.0"}
    # a branch at the commit moves the alias; a non-version tag and main are plain git names
    api.create_branch("someone/Dog_LoRA", branch="production", revision="v0.4.0")
    api.create_tag("someone/Dog_LoRA", tag="nightly", revision=pushed.commit)
    assert [(a.name, a.version) for a in served.aliases("dog_lora")] == [("production", "0.3.0")]


def test_tag_on_a_commit_without_an_identifiable_adapter_stays_a_plain_tag(server, tmp_path):
    from loradex.registry.remotes import hub_client

    files = {"a.safetensors": write_random_kohya_lora(tmp_path / "a.safetensors", seed=1),
             "b.safetensors": write_random_kohya_lora(tmp_path / "b.safetensors", seed=2)}
    pushed = hub_client.push_files(server.url, "team/two", files, "two files", TOKEN)
    before = stats(server.url)["commits"]
    hub_api(server.url).create_tag("team/two", tag="v1.0.0", revision=pushed.commit)  # release tagging (issue 17)
    assert repo_refs(server.url, "team/two") == ({"v1.0.0": pushed.commit}, {"main": pushed.commit})
    assert stats(server.url)["commits"] == before
    with pytest.raises(NotFound):
        Catalog(server.home).get_adapter("two")


def test_adapter_name_for_repo_names():
    assert adapter_name_for("team/style") == "style"
    assert adapter_name_for("someone/Dog_LoRA") == "dog_lora"
    assert adapter_name_for("x/My LoRA v2") == "my-lora-v2"
    assert adapter_name_for("x/--") == "adapter"


def test_alias_branch_refused_by_the_servers_promotion_gate_is_not_created(server, tmp_path):
    from loradex.registry.catalog.records import set_alias_policy

    pub = publishing_home(tmp_path / "a", tmp_path, evidence=False, alias=None)
    add_remote(pub.catalog, "team", f"{server.url}/team", "mirror")
    push(pub.catalog, pub.ref, "team")
    served = Catalog(server.home)
    set_alias_policy(served, "style", "production", require_pass=True)  # the server has no eval card
    move_alias(pub.catalog, pub.ref, "production")
    with pytest.raises(RemoteError, match=r"422.*cannot become 'production'"):
        push(pub.catalog, pub.ref, "team")
    assert "production" not in repo_refs(server.url, "team/style")[1] and served.aliases("style") == []
