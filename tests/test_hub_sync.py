"""Issue 7: push a catalog version to `loradex serve` (its Hub protocol side, driven by the real
huggingface_hub client) and pull it into a second home: same bytes, version, aliases, records,
card, a pulled_from edge; a second push sends nothing; a different blob under a published tag is
refused; a plain Hub LoRA repo (no loradex.json) pulls and probes; tokens are never written."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from _hub_sync_fixtures import _quiet_hub, server  # noqa: F401 (fixtures)
from _hub_sync_fixtures import (TOKEN, ThreadServer, files_containing, move_alias, publishing_home, stats)
from loradex.cli.app import app
from loradex.registry.remotes import hub_client
from loradex.registry.catalog import records as R
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import AuthError, Conflict, NotFound
from loradex.registry.probe import probe_path
from loradex.registry.remotes import add_remote, pull, push
from loradex.registry.remotes.hub import sync_state

runner = CliRunner()
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def cli_json(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"], catch_exceptions=True)
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout), result.output


def cli_fail(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=True)
    assert result.exit_code == 1, (result.output, result.exception)
    exc = result.exception  # cli.main turns it into one line; through CliRunner it stays the exception
    return f"{result.output} {exc} {getattr(exc, 'hint', '') or ''}"


def test_round_trip_between_two_homes_then_push_again_sends_nothing(server, tmp_path):
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    pub = publishing_home(home_a, tmp_path)
    add_remote(pub.catalog, "team", f"{server.url}/team", "mirror")
    before = stats(server.url)
    out_push, text_push = cli_json("push", pub.ref, "team", "--home", str(home_a))
    assert out_push["repo_id"] == "team/style" and out_push["tag"] == "v1.0.0"
    assert out_push["branches_set"] == ["production"] and not out_push["already_there"]
    assert {"style.safetensors", "loradex.json", "README.md", "evaluation/card.json",
            f"records/{pub.with_id}.json", f"records/{pub.with_id}.png"} <= set(out_push["uploaded"])
    first = stats(server.url)
    assert first["lfs_bytes_received"] - before["lfs_bytes_received"] >= pub.catalog.resolve(pub.ref).size

    # (2) the same version again: nothing sent (server counters), and the CLI says so
    out_again, text_again = cli_json("push", pub.ref, "team", "--home", str(home_a))
    after = stats(server.url)
    assert out_again["already_there"] and out_again["sent_nothing"] and out_again["commit"] == out_push["commit"]
    assert after["lfs_bytes_received"] == first["lfs_bytes_received"]
    assert after["regular_bytes_received"] == first["regular_bytes_received"]
    assert after["commits"] == first["commits"] and after["lfs_uploads"] == first["lfs_uploads"]
    assert [s["remote_oid"] for s in sync_state(pub.catalog, "team")] == [out_push["commit"]]

    # the model card the Hub (and diffusers) read
    readme = httpx.get(f"{server.url}/team/style/resolve/v1.0.0/README.md",
                       headers={"authorization": f"Bearer {TOKEN}"}).text
    front = yaml.safe_load(readme.split("---")[1])
    assert front["library_name"] == "diffusers" and front["instance_prompt"] == "zk"
    assert front["base_model"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert {"lora", "text-to-image", "template:sd-lora"} <= set(front["tags"])
    assert front["widget"] == [{"text": "a red fox", "output": {"url": f"records/{pub.with_id}.png"}}]
    assert "## Evaluation of style@1.0.0" in readme and "A test style." in readme

    # (1) pull into an empty home through the alias branch
    catalog_b = Catalog(home_b)
    add_remote(catalog_b, "team", f"{server.url}/team", "mirror")
    served = stats(server.url)["bytes_served"]
    out_pull, text_pull = cli_json("pull", "mirror://team/style@production", "--home", str(home_b))
    v_a, v_b = pub.catalog.resolve(pub.ref), catalog_b.resolve("style@1.0.0")
    assert out_pull["ref"] == "style@1.0.0" and v_b.sha256 == v_a.sha256 and v_b.version == v_a.version
    assert catalog_b.blobs.path_for(v_b.sha256).read_bytes() == pub.catalog.blobs.path_for(v_a.sha256).read_bytes()
    assert stats(server.url)["bytes_served"] - served >= v_a.size
    assert [(a.name, a.version) for a in catalog_b.aliases("style")] == [("production", "1.0.0")]
    assert v_b.trigger_words == ("zk",) and catalog_b.get_adapter("style").description == "A test style."
    edges = [e for e in catalog_b.lineage("style@1.0.0") if e.relation == "pulled_from"]
    assert len(edges) == 1 and edges[0].parent == f"{server.url}/team/style@{out_push['commit']}"
    assert edges[0].recipe["commit"] == out_push["commit"] and edges[0].recipe["sha256"] == v_a.sha256
    # records (with their PNGs, byte for byte) and the card came along
    with_b = R.get_record(catalog_b, pub.with_id)
    assert with_b.versions == ("style@1.0.0",)
    assert R.record_png_bytes(catalog_b, with_b) == R.record_png_bytes(pub.catalog, R.get_record(pub.catalog, pub.with_id))
    assert R.get_record(catalog_b, pub.without_id).record == R.get_record(pub.catalog, pub.without_id).record
    assert R.latest_card(catalog_b, "style@1.0.0").card == pub.card
    assert out_pull["records"] == 2 and out_pull["cards"] == 1 and out_pull["aliases_set"] == ["production"]

    # pulling again is a no-op that downloads no weights
    served = stats(server.url)["bytes_served"]
    again, _ = cli_json("pull", "team:style@v1.0.0", "--home", str(home_b))
    assert again["already_present"] and stats(server.url)["bytes_served"] - served < v_a.size

    # (4) the token is nowhere: neither home, the server's home, nor anything printed
    for root in (home_a, home_b, tmp_path / "server-home"):
        assert files_containing(root, TOKEN.encode()) == []
    for text in (text_push, text_again, text_pull):
        assert TOKEN not in text


def test_new_version_moves_alias_branch_and_all_versions_pull(server, tmp_path):
    from loradex.merge.synthetic_adapters import write_random_kohya_lora
    from loradex.registry.catalog.adding import add_file

    pub = publishing_home(tmp_path / "a", tmp_path, evidence=False)
    remote = add_remote(pub.catalog, "team", f"{server.url}/team", "mirror")
    push(pub.catalog, pub.ref, "team")
    v2 = add_file(pub.catalog, write_random_kohya_lora(tmp_path / "v2.safetensors", seed=9), name="style",
                  version="1.1.0").version
    move_alias(pub.catalog, v2.ref, "production")
    move_alias(pub.catalog, pub.ref, "stable")
    r2 = push(pub.catalog, v2.ref, "team")
    assert sorted(r2.branches_set) == ["production", "stable"]  # stable → the v1.0.0 tag already there
    assert r2.to_dict()["uploaded"]

    catalog_b = Catalog(tmp_path / "b")
    add_remote(catalog_b, "team", remote.url, "mirror")
    result = pull(catalog_b, "team:style@v*")
    assert [o.version.version for o in result.others] + [result.version.version] == ["1.0.0", "1.1.0"]
    assert {(a.name, a.version) for a in catalog_b.aliases("style")} == {("production", "1.1.0"), ("stable", "1.0.0")}
    assert catalog_b.resolve("style@1.1.0").sha256 == v2.sha256
    with pytest.raises(NotFound, match="revision not found"):
        pull(catalog_b, "team:style@v9.9.9")


def test_different_blob_under_published_version_is_refused(server, tmp_path):
    pub = publishing_home(tmp_path / "a", tmp_path, evidence=False)
    add_remote(pub.catalog, "team", f"{server.url}/team", "mirror")
    first = push(pub.catalog, pub.ref, "team")
    other = publishing_home(tmp_path / "c", tmp_path, seed=2, evidence=False)  # same name@version, other bytes
    add_remote(other.catalog, "team", f"{server.url}/team", "mirror")
    before = stats(server.url)
    with pytest.raises(Conflict, match="already has v1.0.0 with other weights"):
        push(other.catalog, other.ref, "team")
    output = cli_fail("push", other.ref, "team", "--home", str(tmp_path / "c"))
    assert "v1.0.0" in output and "never changes" in output
    assert stats(server.url)["lfs_bytes_received"] == before["lfs_bytes_received"]
    refs = httpx.get(f"{server.url}/api/models/team/style/refs", headers={"authorization": f"Bearer {TOKEN}"}).json()
    assert {t["name"]: t["targetCommit"] for t in refs["tags"]} == {"v1.0.0": first.commit}


def test_auth_errors_name_repo_and_whether_a_token_was_sent(server, tmp_path, monkeypatch):
    pub = publishing_home(tmp_path / "a", tmp_path, evidence=False)
    add_remote(pub.catalog, "team", f"{server.url}/team", "mirror")
    monkeypatch.setenv("LORADEX_TOKEN_TEAM", "wrong-token-value")
    with pytest.raises(AuthError, match=r"team/style.*401; a token was sent"):
        push(pub.catalog, pub.ref, "team")
    monkeypatch.delenv("LORADEX_TOKEN_TEAM")
    output = cli_fail("pull", "team:style@v1.0.0", "--home", str(tmp_path / "a"))
    assert "team/style" in output and "no token was sent" in output and "wrong-token-value" not in output
    monkeypatch.setenv("LORADEX_TOKEN_TEAM", TOKEN)
    with pytest.raises(NotFound, match=r"team/nothing-here on http://127\.0\.0\.1:\d+ not found \(a token was sent\)"):
        pull(pub.catalog, "team:nothing-here")


@pytest.fixture
def plain_repo(server, tmp_path):
    """A repo as diffusers' training scripts publish it: weights + README, no loradex.json."""
    src = CORPUS / "files" / "diffusers_sd2x_f32_JustinJiangNext_pytorch_lora_weights.safetensors"
    if not src.is_file():
        pytest.skip(f"corpus not found at {CORPUS}/files (a user's clone has no ../shared)")
    readme = tmp_path / "README.md"
    readme.write_text("---\nbase_model: stabilityai/stable-diffusion-2-1\nlibrary_name: diffusers\n"
                      "instance_prompt: a photo of sks dog\ntags:\n- lora\n---\n\n# LoRA for SD 2.1\n\n"
                      "These are LoRA weights trained on dogs.\n")
    pushed = hub_client.push_files(server.url, "someone/dog-lora", {"pytorch_lora_weights.safetensors": src,
                                                                    "README.md": readme}, "upload", TOKEN)
    return src, pushed.commit


def test_plain_hub_lora_repo_pulls_and_probes(server, plain_repo, monkeypatch):
    src, commit = plain_repo
    catalog = Catalog()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # the endpoint huggingface_hub is pointed at gets HF_TOKEN
    out, text = cli_json("pull", "hf://someone/dog-lora")
    v = catalog.resolve("dog-lora")
    expected = probe_path(src).to_dict()
    assert v.sha256 == out["sha256"] and v.size == src.stat().st_size and not out["had_manifest"]
    assert v.probe == expected and v.probe["base"] == "sd2" and v.file_format == expected["format"]
    assert v.trigger_words == ("a photo of sks dog",) and v.extra["hub"]["base_model"] == "stabilityai/stable-diffusion-2-1"
    assert catalog.get_adapter("dog-lora").description == "These are LoRA weights trained on dogs."
    assert [e.parent for e in catalog.lineage(v.ref)] == [f"{server.url}/someone/dog-lora@{commit}"]
    assert TOKEN not in text and files_containing(catalog.home, TOKEN.encode()) == []


def test_diffusers_copy_per_remote_setting(server, tmp_path):
    from loradex.merge.conventions.convert import convert_file

    pub = publishing_home(tmp_path / "a", tmp_path, evidence=False)
    add_remote(pub.catalog, "team", f"{server.url}/team", "mirror", settings={"formats": ["kohya", "diffusers"]})
    result = push(pub.catalog, pub.ref, "team", converter=convert_file)
    assert {"style.safetensors", "pytorch_lora_weights.safetensors"} <= set(result.uploaded)
    readme = httpx.get(f"{server.url}/team/style/resolve/v1.0.0/README.md",
                       headers={"authorization": f"Bearer {TOKEN}"}).text
    assert "diffusers" in yaml.safe_load(readme.split("---")[1])["tags"]
    # the diffusers copy is a valid diffusers-convention LoRA of the same base
    catalog_b = Catalog(tmp_path / "b")
    got = pull(catalog_b, f"hf://team/style@v1.0.0", endpoint=server.url, token=TOKEN,
               file="pytorch_lora_weights.safetensors", name="style-diffusers")
    assert got.version.file_format == "diffusers" and got.version.probe["base"] == "sd1"
    assert got.version.sha256 == json.loads(httpx.get(
        f"{server.url}/team/style/resolve/v1.0.0/loradex.json",
        headers={"authorization": f"Bearer {TOKEN}"}).text)["files"]["pytorch_lora_weights.safetensors"]["sha256"]


def test_plain_client_reads_what_loradex_pushed_and_serve_auth_applies(tmp_path, monkeypatch):
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    pub = publishing_home(tmp_path / "a", tmp_path, evidence=False)
    with ThreadServer(tmp_path / "server-home", public_read=True) as srv:
        add_remote(pub.catalog, "team", f"{srv.url}/team", "mirror")
        pushed = push(pub.catalog, pub.ref, "team")
        assert (tmp_path / "server-home" / "mirror" / "hub").is_dir()  # stored under <home>/mirror/
        # anonymous reads are allowed (--public-read): the unmodified client downloads the tag
        snap = Path(snapshot_download("team/style", revision="v1.0.0", endpoint=srv.url, token=False,
                                      cache_dir=tmp_path / "hf-cache"))
        assert (snap / "style.safetensors").read_bytes() == pub.catalog.blobs.path_for(pub.sha256).read_bytes()
        assert json.loads((snap / "loradex.json").read_text())["file"]["hashes"]["sha256"] == pub.sha256
        refs = HfApi(endpoint=srv.url, token=False).list_repo_refs("team/style")
        assert {b.name: b.target_commit for b in refs.branches}["production"] == pushed.commit
        # writes still need the serve token; a wrong one is a 401
        with pytest.raises(HfHubHTTPError) as err:
            HfApi(endpoint=srv.url, token=False).create_repo("team/other", exist_ok=True)
        assert err.value.response.status_code == 401
        with pytest.raises(HfHubHTTPError) as err:
            HfApi(endpoint=srv.url, token="not-the-token").create_branch("team/style", branch="x")
        assert err.value.response.status_code == 401
        # the Civitai-style API of the same server still answers next to the Hub paths
        assert httpx.get(f"{srv.url}/api/v1/models").status_code == 200


def test_cli_push_formats_and_pull_all_versions(server, tmp_path):
    pub = publishing_home(tmp_path / "a", tmp_path, evidence=False)
    add_remote(pub.catalog, "team", f"{server.url}/team", "mirror")
    out, _ = cli_json("push", pub.ref, "team", "--format", "kohya", "--format", "diffusers",
                      "--home", str(tmp_path / "a"))
    assert {"style.safetensors", "pytorch_lora_weights.safetensors"} <= set(out["uploaded"])
    catalog_b = Catalog(tmp_path / "b")
    add_remote(catalog_b, "team", f"{server.url}/team", "mirror")
    cli_json("pull", "mirror://team/style", "--all-versions", "--home", str(tmp_path / "b"))
    assert [v.version for v in catalog_b.versions("style")] == ["1.0.0"]
