"""Multi-file versions (issue 20): a Wan 2.2 A14B LoRA's high-noise + low-noise pair is ONE version
holding two named files, each its own blob. add/show/export/verify/gc/rm through the CLI; push to
and pull from ``loradex serve`` (the Hub protocol, driven by the real huggingface_hub client) and a
plain Hub repo holding the pair; hostile file names refused wherever a name comes from outside."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loradex.cli.app import app
from loradex.merge.synthetic_adapters import write_random_kohya_lora
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import InvalidFile, UsageError

runner = CliRunner()


def cli(*args: str, code: int = 0):
    result = runner.invoke(app, list(args), catch_exceptions=True)
    assert result.exit_code == code, (result.output, result.exception)
    return result


def cli_json(*args: str):
    return json.loads(cli(*args, "--json").stdout)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    """Two different tiny LoRA files named as Wan 2.2 writers name an expert pair."""
    folder = tmp_path_factory.mktemp("pair")
    high = write_random_kohya_lora(folder / "wan22_style_HighNoise.safetensors", rank=2, seed=11, trigger="zk")
    low = write_random_kohya_lora(folder / "wan22_style_LowNoise.safetensors", rank=2, seed=12, trigger="zk")
    return high, low


# --- naming ---------------------------------------------------------------------------------------
def test_roles_come_from_the_usual_file_name_patterns():
    from loradex.registry.catalog.version_files import name_files, role_for

    assert role_for("wan2.2_i2v_A14b_high_noise_lora.safetensors") == "high_noise"
    assert role_for("wan22-style-LowNoise.safetensors") == "low_noise"
    assert role_for("style_HIGH.safetensors") == "high_noise"
    assert role_for("style_low-noise_v2.safetensors") == "low_noise"
    assert role_for("highlights_lora.safetensors") is None  # "high" inside a word is no role
    assert role_for("style.safetensors") is None
    assert name_files(["a_low_noise.safetensors", "a_high_noise.safetensors"]) == ["low_noise", "high_noise"]
    assert name_files(["one.safetensors", "two.safetensors"]) == ["one", "two"]  # the stems
    assert name_files(["x_high.safetensors", "y.safetensors"], [None, "extra"]) == ["high_noise", "extra"]
    with pytest.raises(UsageError, match="--file ROLE=PATH"):
        name_files(["a.safetensors", "b.safetensors"], ["same", "same"])


@pytest.mark.parametrize("name", ["../x.safetensors", "a/b.safetensors", ".hidden", "", "a\\b", "-rf",
                                  "x" * 201, "ok\x00.safetensors", "naïve.safetensors", "a b.safetensors"])
def test_hostile_file_names_are_refused(name):
    from loradex.registry.catalog.version_files import check_file_name

    with pytest.raises(InvalidFile):
        check_file_name(name)


def test_a_local_file_name_is_tidied_not_refused():
    from loradex.registry.catalog.version_files import tidy_file_name

    assert tidy_file_name("My LoRA (high).safetensors") == "My_LoRA_high_.safetensors"
    assert tidy_file_name("../../etc/passwd") == "etc_passwd"


# --- the catalog ----------------------------------------------------------------------------------
def test_add_show_export_verify_gc_rm(pair, tmp_path, loradex_home):
    high, low = pair
    added = cli_json("add", str(high), str(low), "--name", "wan-style")
    assert added["ref"] == "wan-style@1.0.0" and added["sha256"] == sha(high)  # the primary: the first
    assert [(f["name"], f["file_name"], f["sha256"], f["size"]) for f in added["files"]] == [
        ("high_noise", high.name, sha(high), high.stat().st_size),
        ("low_noise", low.name, sha(low), low.stat().st_size)]
    assert added["stored_bytes"] == high.stat().st_size + low.stat().st_size

    shown = cli_json("show", "wan-style")
    assert [f["name"] for f in shown["files"]] == ["high_noise", "low_noise"]
    assert shown["files"][1]["probe"]["kind"] == "lora" and shown["files"][1]["file_format"] == "kohya"
    text = cli("show", "wan-style").stdout
    assert "high_noise" in text and low.name in text
    # the Catalog (SQLAlchemy) reader answers as the light one did
    catalog = Catalog(loradex_home)
    assert [f.sha256 for f in catalog.resolve("wan-style").files] == [sha(high), sha(low)]
    assert [f.sha256 for f in catalog.versions("wan-style")[0].files] == [sha(high), sha(low)]
    assert [f["name"] for f in cli_json("versions", "wan-style")[0]["files"]] == ["high_noise", "low_noise"]

    # a second version sharing the low-noise file stores only the new bytes (content-addressed)
    other = write_random_kohya_lora(tmp_path / "style_v2_high_noise.safetensors", rank=2, seed=13)
    again = cli_json("add", "--file", f"high_noise={other}", "--file", f"low_noise={low}", "--name", "wan-style")
    assert again["ref"] == "wan-style@1.1.0" and again["stored_bytes"] == other.stat().st_size

    # export writes every file under its own name, byte-identical
    webui = tmp_path / "comfy"
    exported = cli_json("export", "wan-style@1.0.0", str(webui), "--layout", "comfyui")
    folder = webui / "models" / "loras"
    assert (folder / high.name).read_bytes() == high.read_bytes()
    assert (folder / low.name).read_bytes() == low.read_bytes()
    assert {Path(p).name for p in exported["files"]} >= {high.name, low.name}

    # verify and gc count every file as referenced; a missing second file is a problem
    report = cli_json("verify")
    assert report["ok"] and report["unreferenced_blobs"] == [] and report["checked_blobs"] == 3
    assert cli_json("gc")["removed"] == []
    # removing 1.0.0 frees its high-noise blob only (the low-noise one is 1.1.0's too)
    cli("rm", "wan-style@1.0.0")
    assert cli_json("gc")["removed"] == [sha(high)]
    catalog.blobs.remove(sha(low))
    broken = cli("verify", "--json", code=1)
    assert {"ref": "wan-style@1.1.0", "blob": sha(low), "problem": "blob missing"} in json.loads(broken.stdout)["problems"]


def test_files_of_another_kind_are_refused_as_one_version(pair, tmp_path):
    from loradex.merge.synthetic_adapters import write_random_embedding

    high, _ = pair
    embedding = write_random_embedding(tmp_path / "x_low_noise.safetensors")
    result = cli("add", str(high), str(embedding), "--name", "mixed", code=1)
    assert "one kind" in str(result.exception)
    assert cli_json("list") == []  # nothing registered, nothing half-added
    copy = tmp_path / "copy_low_noise.safetensors"
    copy.write_bytes(high.read_bytes())
    twice = cli("add", str(high), str(copy), code=1)  # (CliRunner: the UsageError itself, exit 2 from loradex)
    assert isinstance(twice.exception, UsageError) and "given twice" in str(twice.exception)


def test_a_multi_file_version_is_not_converted_on_export(pair, tmp_path):
    from loradex.registry.catalog.store import Catalog
    from loradex.registry.folders.webui_export import export_version

    high, low = pair
    catalog = Catalog()
    cli("add", str(high), str(low), "--name", "pair")
    with pytest.raises(InvalidFile, match="holds 2 files"):
        export_version(catalog, "pair", tmp_path / "w", to_format="diffusers")
    assert not (tmp_path / "w").exists()


# --- push / pull: loradex serve (the team mirror) and a plain Hub repo -----------------------------
from _hub_sync_fixtures import TOKEN, ThreadServer, _quiet_hub  # noqa: E402,F401 (autouse fixture)


@pytest.fixture(scope="module")
def hub_server(tmp_path_factory):
    with ThreadServer(tmp_path_factory.mktemp("served") / "server-home") as srv:
        yield srv


def test_push_to_the_mirror_and_pull_back_bit_identically(pair, hub_server, tmp_path):
    import httpx

    from loradex.registry.catalog.adding import add_files
    from loradex.registry.remotes import add_remote, pull, push

    high, low = pair
    home_a = Catalog(tmp_path / "a")
    add_files(home_a, [high, low], name="wan-pair", alias="production")
    add_remote(home_a, "team", f"{hub_server.url}/team", "mirror")
    pushed = push(home_a, "wan-pair@1.0.0", "team")
    assert {high.name, low.name, "loradex.json", "README.md"} <= set(pushed.uploaded)  # one commit, both files
    assert push(home_a, "wan-pair@1.0.0", "team").already_there  # again: sends nothing
    readme = httpx.get(f"{hub_server.url}/team/wan-pair/resolve/v1.0.0/README.md",
                       headers={"authorization": f"Bearer {TOKEN}"}).text
    assert f"`{high.name}` — high_noise" in readme and f"`{low.name}` — low_noise" in readme

    # the server registered ONE version holding both files
    served = Catalog(hub_server.home).resolve("wan-pair@1.0.0")
    assert [(f.name, f.sha256) for f in served.files] == [("high_noise", sha(high)), ("low_noise", sha(low))]

    home_b = Catalog(tmp_path / "b")
    add_remote(home_b, "team", f"{hub_server.url}/team", "mirror")
    got = pull(home_b, "mirror://team/wan-pair@production")
    v = got.version
    assert v.ref == "wan-pair@1.0.0" and got.had_manifest
    assert [(f.name, f.file_name, f.sha256) for f in v.files] == [
        ("high_noise", high.name, sha(high)), ("low_noise", low.name, sha(low))]
    for f, src in zip(v.files, (high, low)):
        assert home_b.blobs.path_for(f.sha256).read_bytes() == src.read_bytes()
    assert [a.name for a in home_b.aliases("wan-pair")] == ["production"]
    assert pull(home_b, "mirror://team/wan-pair@v1.0.0").already_present


def test_a_plain_hub_repo_holding_a_pair_pulls_as_one_version(pair, hub_server, tmp_path):
    from loradex.registry.remotes import hub_client, pull

    high, low = pair
    pushed = hub_client.push_files(hub_server.url, "someone/wan-i2v", {
        "Wan2.2-I2V-A14B-style-high_noise.safetensors": high, "Wan2.2-I2V-A14B-style-low_noise.safetensors": low},
        "upload", TOKEN)
    catalog = Catalog(tmp_path / "c")
    got = pull(catalog, "hf://someone/wan-i2v", endpoint=hub_server.url, token=TOKEN)
    assert not got.had_manifest and got.commit == pushed.commit
    assert [(f.name, f.file_name, f.sha256) for f in got.version.files] == [
        ("high_noise", "Wan2.2-I2V-A14B-style-high_noise.safetensors", sha(high)),
        ("low_noise", "Wan2.2-I2V-A14B-style-low_noise.safetensors", sha(low))]
    assert got.version.extra["hub"]["paths"] == [f.file_name for f in got.version.files]


def test_a_manifest_naming_a_hostile_file_is_refused(pair, tmp_path):
    from loradex.registry.errors import UntrustedData
    from loradex.registry.remotes import hub_manifest as M

    high, low = pair
    manifest = {"schema": M.MANIFEST_SCHEMA, "name": "x", "version": "1.0.0",
                "file": {"path": "a_high_noise.safetensors", "hashes": {"sha256": sha(high)}},
                "version_files": [{"name": "high_noise", "path": "a_high_noise.safetensors", "sha256": sha(high)},
                                  {"name": "low_noise", "path": "../../outside.safetensors", "sha256": sha(low)}]}
    path = tmp_path / "loradex.json"
    path.write_text(json.dumps(manifest))
    with pytest.raises(UntrustedData):
        M.read_manifest(path)
    manifest["version_files"][1]["path"] = "a_high_noise.safetensors"  # the same file twice
    path.write_text(json.dumps(manifest))
    with pytest.raises(UntrustedData, match="twice"):
        M.manifest_version_files(M.read_manifest(path))


def test_the_civitai_style_mirror_serves_both_files_and_pull_takes_both(pair, hub_server, tmp_path, monkeypatch):
    """``loradex serve``'s Civitai API lists the pair's second file (not primary, its own download
    URL); a Civitai pull of a version whose files[] holds two model files named as a pair takes both."""
    import httpx

    from loradex.registry.catalog.adding import add_files
    from loradex.registry.remotes import pull

    high, low = pair
    served = add_files(Catalog(hub_server.home), [high, low], name="wan-civitai").version
    auth = {"authorization": f"Bearer {TOKEN}"}
    info = httpx.get(f"{hub_server.url}/api/v1/model-versions/{served.id}", headers=auth).json()
    assert [(f["name"], f["primary"], f["hashes"]["SHA256"].lower()) for f in info["files"]] == [
        (high.name, True, sha(high)), (low.name, False, sha(low))]
    second = httpx.get(info["files"][1]["downloadUrl"], headers=auth, follow_redirects=True)
    assert second.status_code == 200 and second.content == low.read_bytes()
    missing = httpx.get(f"{hub_server.url}/api/download/models/{served.id}?file=..%2Fcatalog.db", headers=auth)
    assert missing.status_code == 404

    monkeypatch.setenv("CIVITAI_TOKEN", TOKEN)
    catalog = Catalog(tmp_path / "civ")
    got = pull(catalog, f"civitai:{served.id}", endpoint=hub_server.url)
    assert [(f.name, f.file_name, f.sha256) for f in got.version.files] == [
        ("high_noise", high.name, sha(high)), ("low_noise", low.name, sha(low))]
    assert got.version.extra["civitai"]["files"][1]["fileName"] == low.name
    assert pull(catalog, f"civitai:{served.id}", endpoint=hub_server.url).already_present
