"""The catalog through the CLI: versions, aliases, rollback, rm/gc/verify, bad input (issue 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loradex.cli.app import app
from loradex.merge.synthetic_adapters import write_random_embedding, write_random_kohya_lora

runner = CliRunner()


def cli(*args: str, ok: bool = True):
    result = runner.invoke(app, list(args), catch_exceptions=True)
    if ok and result.exit_code != 0:
        raise AssertionError(f"loradex {' '.join(args)} failed: {result.output} {result.exception!r}")
    return result


def cli_json(*args: str):
    return json.loads(cli(*args, "--json").stdout)


def run_loradex(*args: str, home: Path) -> subprocess.CompletedProcess:
    """The installed console script, in a real subprocess."""
    exe = Path(sys.executable).with_name("loradex")
    env = {**os.environ, "LORADEX_HOME": str(home)}
    env.pop("LORADEX_DEBUG", None)
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def lora_files(tmp_path):
    return [write_random_kohya_lora(tmp_path / f"style_{i}.safetensors", seed=i, rank=4, trigger="wtrclr")
            for i in range(3)]


def test_versions_bump_and_explicit(lora_files):
    assert cli_json("add", str(lora_files[0]), "--name", "style")["version"] == "1.0.0"
    assert cli_json("add", str(lora_files[1]), "--name", "style")["version"] == "1.1.0"
    assert cli_json("add", str(lora_files[2]), "--name", "style", "--bump", "major")["version"] == "2.0.0"
    listed = cli_json("versions", "style")
    assert [v["version"] for v in listed] == ["1.0.0", "1.1.0", "2.0.0"]
    for entry, path in zip(listed, lora_files):
        import hashlib

        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["size"] == path.stat().st_size
    assert cli_json("show", "style")["version"] == "2.0.0"  # latest is implicit


def test_explicit_version_and_duplicates(lora_files):
    assert cli_json("add", str(lora_files[0]), "--name", "style", "--version", "0.3.0")["version"] == "0.3.0"
    dup = cli("add", str(lora_files[1]), "--name", "style", "--version", "0.3.0", ok=False)
    assert dup.exit_code == 1 and "already exists" in str(dup.exception)
    same = cli("add", str(lora_files[0]), "--name", "style", ok=False)
    assert same.exit_code == 1 and "style@0.3.0" in str(same.exception)


def test_alias_rollback_and_history(lora_files):
    cli("add", str(lora_files[0]), "--name", "style")
    cli("add", str(lora_files[1]), "--name", "style")
    cli("alias", "set", "style@1.0.0", "production", "--reason", "first")
    cli("alias", "set", "style@1.1.0", "production")
    assert cli_json("show", "style@production")["version"] == "1.1.0"
    cli("rollback", "style")
    assert cli_json("show", "style@production")["version"] == "1.0.0"
    history = cli_json("alias", "history", "style", "production")
    assert [(e["action"], e["from"], e["to"]) for e in history] == [
        ("set", None, "1.0.0"), ("set", "1.0.0", "1.1.0"), ("rollback", "1.1.0", "1.0.0")]
    assert history[0]["reason"] == "first" and history[0]["by"]
    # nothing was deleted by the rollback
    assert len(cli_json("versions", "style")) == 2
    # a second rollback has nowhere earlier to go
    again = cli("rollback", "style", ok=False)
    assert again.exit_code == 1 and "no earlier version" in str(again.exception)
    cli("rollback", "style", "--to", "1.1.0")
    assert cli_json("show", "style@production")["version"] == "1.1.0"


def test_latest_is_reserved(lora_files):
    cli("add", str(lora_files[0]), "--name", "style")
    bad = cli("alias", "set", "style@1.0.0", "latest", ok=False)
    assert bad.exit_code == 1 and "reserved" in str(bad.exception)


def test_same_file_two_names_one_blob_then_gc_and_verify(lora_files, loradex_home):
    cli("add", str(lora_files[0]), "--name", "style")
    second = cli_json("add", str(lora_files[0]), "--name", "other")
    assert second["stored_bytes"] == 0
    blobs = [p for p in (loradex_home / "blobs" / "sha256").rglob("*") if p.is_file()]
    assert len(blobs) == 1
    # a hash ref matching two adapters is ambiguous
    amb = cli("show", "sha256:" + second["sha256"][:10], ok=False)
    assert amb.exit_code == 1 and "matches 2" in str(amb.exception)
    cli("alias", "set", "style@1.0.0", "production")
    refused = cli("rm", "style@1.0.0", ok=False)
    assert refused.exit_code == 1 and "production" in str(refused.exception)
    cli("rm", "style@1.0.0", "--force")
    assert cli_json("gc")["bytes_freed"] == 0  # `other` still uses it
    cli("rm", "other@1.0.0")
    freed = cli_json("gc")
    assert freed["bytes_freed"] == lora_files[0].stat().st_size
    assert not [p for p in (loradex_home / "blobs" / "sha256").rglob("*") if p.is_file()]
    history = cli_json("alias", "history", "style", "production")
    assert history[-1]["action"] == "remove"
    assert cli_json("verify")["ok"] is True


def test_verify_names_corrupted_blob(lora_files, loradex_home):
    added = cli_json("add", str(lora_files[0]), "--name", "style")
    assert cli("verify").exit_code == 0
    blob = loradex_home / "blobs" / "sha256" / added["sha256"][:2] / added["sha256"][2:]
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    result = cli("verify", "--json", ok=False)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["problems"][0]["blob"] == added["sha256"]
    assert "corrupted" in report["problems"][0]["problem"]


def test_add_link_stores_hardlink(lora_files, loradex_home):
    added = cli_json("add", str(lora_files[0]), "--name", "style", "--link")
    blob = loradex_home / "blobs" / "sha256" / added["sha256"][:2] / added["sha256"][2:]
    assert added["linked"] is True
    assert blob.stat().st_ino == lora_files[0].stat().st_ino


@pytest.mark.parametrize("case", ["truncated", "empty", "text", "directory", "missing"])
def test_bad_input_is_one_line_error(case, tmp_path, lora_files, loradex_home):
    if case == "truncated":
        path = tmp_path / "cut.safetensors"
        path.write_bytes(lora_files[0].read_bytes()[:5000])
    elif case == "empty":
        path = tmp_path / "empty.safetensors"
        path.write_bytes(b"")
    elif case == "text":
        path = tmp_path / "notes.safetensors"
        path.write_text("these are my notes, not a model\n")
    elif case == "directory":
        path = tmp_path / "adir"
        path.mkdir()
    else:
        path = tmp_path / "nope.safetensors"
    proc = run_loradex("add", str(path), "--name", "bad", home=loradex_home)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path.name) in lines[0]
    assert "Traceback" not in proc.stderr
    assert run_loradex("verify", home=loradex_home).returncode == 0
    assert json.loads(run_loradex("list", "--json", home=loradex_home).stdout) == []


def test_unknown_refs_are_clear(lora_files):
    cli("add", str(lora_files[0]), "--name", "style")
    for ref, words in [("nosuch", "no adapter"), ("style@9.9.9", "no version"),
                       ("style@staging", "no alias"), ("Bad Name", "not a valid ref"),
                       ("sha256:12", "at least 8")]:
        result = cli("show", ref, ok=False)
        assert result.exit_code == 1 and words in str(result.exception), (ref, result.exception)


def test_usage_error_exit_2(loradex_home):
    proc = run_loradex("add", home=loradex_home)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_list_table_and_embedding(tmp_path, lora_files):
    cli("add", str(lora_files[0]), "--name", "style")
    emb = write_random_embedding(tmp_path / "neg.safetensors", n_vectors=4, dim=768)
    assert cli_json("add", str(emb), "--name", "neg")["version"] == "1.0.0"
    rows = {r["name"]: r for r in cli_json("list")}
    assert rows["neg"]["kind"] == "embedding" and rows["style"]["kind"] == "lora"
    human = cli("list").stdout
    assert "style" in human and "neg" in human
