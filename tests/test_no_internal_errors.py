"""Exit 3 ("internal error") means a bug, so no input may reach it (issue 15).

The CLI runs, in-process through ``loradex.cli.main.main`` (the console script's own argument
parsing and error-to-one-line path) and once as a real process, over a hostile corpus:

* malformed files for ``add``/``inspect``: truncated safetensors, a header that is not JSON, a
  header length of 2^63, a directory, a FIFO, an empty file, random bytes, a zip, a pickle whose
  globals run a shell command;
* malformed refs (``../x``, ``sha256:zz``, ``a@b@c``, a 5000-character name, control characters)
  for every command taking one;
* malformed flags (``--version abc``, ``--tag =``, ``--bump weird``…);
* every cheap command over a damaged or foreign home: catalog.db garbage or truncated, a schema
  from a newer loradex, a hand-edited revision, the home a regular file, catalog.db a folder, a
  read-only home.

Each call must end in exit 0, 1 or 2 with no traceback and no "internal error" line; an error
is exactly one line on stderr.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sqlite3
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from _formats_fixtures import write_tiny_kohya_lora
from loradex.cli.main import main

LONG = "a" * 5000
BAD_REFS = ["../x", "sha256:zz", "a@b@c", f"{LONG}@1.0.0", "x\x1b[2J\u202e", "", "@", "style@../../etc",
            "style@99999999999999999999.0.0", "sha256:" + "f" * 200, "style@1.0.0\n", "[/bold]", "x\udcff"]


@pytest.fixture(autouse=True)
def _cwd_in_tmp(tmp_path, monkeypatch):
    """Commands given a hostile ref as a destination (``export REF DEST``) write relative to the
    working directory: keep that under the test's own temp dir, never in the checkout."""
    monkeypatch.chdir(tmp_path)


def run_cli(capsys, argv: list) -> tuple[int, str, str]:
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # noqa: BLE001 - escaping main() at all is a finding
        code = f"escaped {type(exc).__name__}: {exc}"
    out, err = capsys.readouterr()
    return code, out, err


def problems(capsys, commands: list[list]) -> list[str]:
    """Run each command; describe every one that hit an internal error."""
    found = []
    for argv in commands:
        code, out, err = run_cli(capsys, argv)
        bad = code not in (0, 1, 2, 130) or "Traceback" in out + err or "internal error" in err
        if code in (1, 2) and not bad:
            lines = [line for line in err.splitlines() if line.startswith("error: ")]
            bad = len(lines) != 1
        if bad:
            found.append(f"{[str(a)[:60] for a in argv]} → {code}: {(err or out).strip()[-300:]}")
    return found


def lora(path: Path, metadata: dict | None = None) -> Path:
    return write_tiny_kohya_lora(path, metadata)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def hostile_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    good = lora(folder / "good.safetensors").read_bytes()
    files = {
        "truncated": good[: len(good) // 2],
        "truncated-in-header": good[:40],
        "header-not-json": struct.pack("<Q", 12) + b"{not json!!}" + b"\0" * 64,
        "header-length-2^63": struct.pack("<Q", 2**63) + b"{}",
        "header-wrong-types": struct.pack("<Q", 60) + b'{"a": {"dtype": 7, "shape": "x", "data_offsets": null}}    ',
        "empty": b"",
        "random": os.urandom(4096),
        "pickle-bad-globals": pickle.dumps(_Evil()),
    }
    surrogate = lora(folder / "surrogate.safetensors", {"ss_output_name": "x\ud800", "ss_tag_frequency": "{\"\udcff\": 1}"})
    out = {}
    for name, data in files.items():
        suffix = ".pt" if name.startswith("pickle") else ".safetensors"
        out[name] = folder / f"{name}{suffix}"
        out[name].write_bytes(data)
    out["surrogate-metadata"] = surrogate
    out["zip"] = folder / "archive.safetensors"
    with zipfile.ZipFile(out["zip"], "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"a": 1}))
    out["zip-as-pt"] = folder / "archive.pt"
    out["zip-as-pt"].write_bytes(out["zip"].read_bytes())
    out["directory"] = folder / "adir.safetensors"
    out["directory"].mkdir()
    out["fifo"] = folder / "pipe.safetensors"
    os.mkfifo(out["fifo"])
    out["missing"] = folder / "missing.safetensors"
    return out


@pytest.fixture
def home(loradex_home, tmp_path, capsys) -> Path:
    """style@1.0.0 (alias production), style@1.1.0."""
    assert run_cli(capsys, ["add", lora(tmp_path / "style.safetensors"), "--name", "style",
                            "--alias", "production"])[0] == 0
    assert run_cli(capsys, ["add", lora(tmp_path / "s2.safetensors", {"x": "2"}), "--name", "style"])[0] == 0
    return loradex_home


# --- files -------------------------------------------------------------------------------------


def test_hostile_files_through_add_and_inspect(home, tmp_path, capsys):
    commands = []
    for kind, path in hostile_files(tmp_path / "hostile").items():
        for argv in (["inspect", path], ["inspect", path, "--explain"], ["inspect", path, "--allow-pickle"],
                     ["add", path, "--name", "hostile"], ["add", path, "--name", "hostile", "--allow-pickle"],
                     ["add", path, "--name", "hostile", "--link"], ["inspect", path, "--json"]):
            commands.append(argv)
    assert problems(capsys, commands) == []
    from loradex.registry.catalog.store import Catalog

    catalog = Catalog()
    assert [a.name for a in catalog.list_adapters()] == ["hostile", "style"]
    # only the one valid file (lone surrogates in its metadata) was registered; nothing half-registered
    surrogate = hashlib.sha256((tmp_path / "hostile" / "surrogate.safetensors").read_bytes()).hexdigest()
    assert [v.sha256 for v in catalog.versions("hostile")] == [surrogate]


def test_json_in_header_metadata_nested_past_the_caps(home, tmp_path, capsys):
    """ss_network_args, ss_tag_frequency, training info and lora_adapter_metadata are JSON inside
    the header: 100k levels of it (RecursionError in json.loads) are read as not-JSON, and the
    file is still probed and added; a tiny JSON file nested 2,000 deep is named as JSON text."""
    deep = "[" * 100_000 + "]" * 100_000
    path = lora(tmp_path / "deep.safetensors", {"ss_network_args": deep, "ss_tag_frequency": deep,
                                                "ss_training_info": deep, "lora_adapter_metadata": deep,
                                                "ss_output_name": "deep"})
    assert problems(capsys, [["inspect", path], ["inspect", path, "--json"], ["add", path, "--name", "deep"]]) == []
    (tmp_path / "deep.json").write_text("[" * 2000)
    code, _, err = run_cli(capsys, ["inspect", tmp_path / "deep.json"])
    assert code == 1 and "JSON text" in err


# --- refs --------------------------------------------------------------------------------------
def test_malformed_refs_for_every_command_taking_one(home, tmp_path, capsys):
    out = tmp_path / "out"
    commands = []
    for ref in BAD_REFS:
        commands += [["show", ref], ["versions", ref], ["lineage", ref],
                     ["alias", "list", ref], ["alias", "history", ref, "production"],
                     ["alias", "history", "style", ref], ["alias", "set", ref, "staging"],
                     ["alias", "set", "style@1.0.0", ref], ["rollback", ref], ["rollback", "style", "--to", ref],
                     ["rm", ref], ["card", ref], ["export", ref, out], ["recipe", "show", ref],
                     ["records", "list", ref], ["records", "show", ref], ["remote", "rm", ref]]
    assert problems(capsys, commands) == []


# --- flags -------------------------------------------------------------------------------------
def test_malformed_flags(home, tmp_path, capsys):
    f = lora(tmp_path / "flags.safetensors", {"y": "1"})
    commands = [["add", f, *flags] for flags in (
        ["--version", "abc"], ["--version", "1.2"], ["--version", "-1.0.0"], ["--version", "1.0.0.0"],
        ["--version", "99999999999999999999999.0.0"], ["--version", ""], ["--tag", "="], ["--tag", "novalue"],
        ["--tag", "=v"], ["--bump", "weird"], ["--bump", ""], ["--name", "../x"], ["--name", ""],
        ["--name", LONG], ["--name", "x\x1b[2J"], ["--alias", "BAD ALIAS"], ["--alias", "../x"],
        ["--kind", "evil"], ["--base", "../x"], ["--trigger", ""], ["--version", "1.0.0", "--bump", "major"],
        ["--name", "style", "--version", "1.0.0"], ["--name", "markup", "-m", "[/bold] [red]x\x1b[2J"],
        ["-m", "not utf-8 \udcff"], ["--name", "x\udcff"], ["--trigger", "\udcfe"], ["--tag", "k=\udcff"])]
    commands += [["show", "markup"], ["versions", "markup"], ["list"]]  # a message that is not valid markup
    commands += [["rollback", "style", "--alias", "../x"], ["rollback", "style", "--to", "abc"],
                 ["export", "style", tmp_path / "o", "--layout", "evil"],
                 ["export", "style", tmp_path / "o", "--format", "evil"],
                 ["sync-folder", tmp_path / "sf", "--layout", "evil"], ["sync-folder", tmp_path / "sf", "--alias", "../x"],
                 ["list", "--no-such-flag"], ["nosuchcommand"], ["show"], ["add"],
                 ["remote", "add", "x", "not a url"], ["remote", "add", "../x", "https://civitai.com", "--kind", "civitai"],
                 ["pull", "nosuchremote:123"], ["pull", "../x"], ["records", "list", "--limit", "-1"],
                 ["records", "list", "--limit", "99999999999999999999"],
                 ["serve", "token", "revoke", "99999999999999999999"], ["serve", "token", "revoke", "-1"]]
    assert problems(capsys, commands) == []


# --- the home ----------------------------------------------------------------------------------
def _set_revision(db: Path, revision: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))


def _checkpointed(db: Path) -> Path:
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db


def _read_only(home: Path, monkeypatch) -> None:
    from loradex.registry import paths

    real = os.access
    monkeypatch.setattr(paths.os, "access", lambda p, mode: False if mode & os.W_OK else real(p, mode))


HOME_STATES = {
    "healthy": lambda home, mp: None,
    "garbage-db": lambda home, mp: _checkpointed(home / "catalog.db").write_bytes(os.urandom(5000)),
    "truncated-db": lambda home, mp: os.truncate(_checkpointed(home / "catalog.db"), 8192),
    "newer-schema": lambda home, mp: _set_revision(home / "catalog.db", "0042_from_the_future"),
    "hand-edited-revision": lambda home, mp: _set_revision(home / "catalog.db", "0001_initial"),
    "read-only": _read_only,
}


def _commands(home: Path, tmp: Path, files: dict) -> list[list]:
    out = tmp / "out"
    return [
        ["init"], ["list"], ["list", "--json"], ["show", "style"], ["show", "style@production", "--json"],
        ["versions", "style"], ["versions", "style", "--all"], ["lineage", "style"], ["alias", "list", "style"],
        ["alias", "history", "style", "production"], ["alias", "set", "style@1.0.0", "staging"],
        ["rollback", "style"], ["rm", "style@1.1.0"], ["verify"], ["gc"], ["card", "style"],
        ["export", "style", out], ["sync-folder", out], ["import", tmp / "webui"],
        ["add", files["good"], "--name", "other"], ["add", files["truncated"]], ["inspect", files["good"]],
        ["remote", "list"], ["remote", "add", "civ", "https://civitai.example", "--kind", "civitai"],
        ["remote", "rm", "civ"], ["records", "list"], ["records", "show", "nope"], ["recipe", "show", "style"],
        ["serve", "token", "list"], ["serve", "audit"], ["identify", "style", "--help"],
    ]


@pytest.mark.parametrize("state", list(HOME_STATES))
def test_every_command_over_a_damaged_or_foreign_home(state, home, tmp_path, capsys, monkeypatch):
    files = hostile_files(tmp_path / "files")
    files["good"] = lora(tmp_path / "files" / "other.safetensors", {"z": "1"})
    (tmp_path / "webui" / "models" / "Lora").mkdir(parents=True)
    HOME_STATES[state](home, monkeypatch)
    assert problems(capsys, _commands(home, tmp_path, files)) == []


@pytest.mark.parametrize("what", ["regular-file", "below-a-file", "db-is-a-folder", "symlink-loop", "name-too-long",
                                  "db-url-garbage", "db-url-unknown-dialect"])
def test_every_command_when_the_home_is_not_a_folder(what, tmp_path, capsys, monkeypatch):
    regular = tmp_path / "home-file"
    regular.write_text("x")
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    target = {"regular-file": regular, "below-a-file": regular / "sub", "symlink-loop": tmp_path / "loop-a" / "h",
              "name-too-long": tmp_path / ("n" * 300)}.get(what, tmp_path / "h")
    if what == "db-is-a-folder":
        (target / "catalog.db").mkdir(parents=True)
    if what.startswith("db-url"):
        monkeypatch.setenv("LORADEX_DB", "not a url" if what == "db-url-garbage" else "nosuchdialect://x/y")
    monkeypatch.setenv("LORADEX_HOME", str(target))
    files = {"good": lora(tmp_path / "good.safetensors"), "truncated": regular}
    (tmp_path / "webui").mkdir()
    assert problems(capsys, _commands(target, tmp_path, files)) == []


def test_console_script_in_a_real_process(home, tmp_path):
    """The installed entry point: a malformed ref, a hostile file and a garbage catalog each end
    in exit 1 with one line on stderr."""
    script = Path(sys.executable).with_name("loradex")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 2**63) + b"{}")
    env = {**os.environ, "LORADEX_HOME": str(home)}
    for argv in (["show", "a@b@c"], ["add", str(bad)], ["show", "x\x1b[2J"]):
        proc = subprocess.run([str(script), *argv], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, (argv, proc.stderr)
        assert proc.stderr.startswith("error: ") and "\x1b" not in proc.stderr
    _checkpointed(home / "catalog.db").write_bytes(b"garbage" * 1000)
    proc = subprocess.run([str(script), "list"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1 and "damaged" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


# --- PNGs for `records import` -----------------------------------------------------------------
def hostile_pngs(folder: Path) -> dict[str, Path]:
    import io
    import json

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    folder.mkdir(parents=True, exist_ok=True)
    out = {}

    def png(name: str, chunks: dict[str, str]) -> None:
        info = PngInfo()
        for key, value in chunks.items():
            info.add_text(key, value)
        out[name] = folder / f"{name}.png"
        Image.new("RGB", (4, 4), (1, 2, 3)).save(out[name], pnginfo=info)

    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG")
    good = buf.getvalue()
    for name, data in {"truncated": good[: len(good) // 2], "bad-crc": good[:20] + b"\xff" + good[21:],
                       "random": os.urandom(300), "gif": b"GIF89a" + bytes(40), "empty": b""}.items():
        out[name] = folder / f"{name}.png"
        out[name].write_bytes(data)
    sampler = {"class_type": "KSampler", "inputs": {"model": ["2", 0], "positive": ["3", 0], "latent_image": ["3", 0]}}
    png("loradex-not-json", {"loradex": "{not json"})
    png("loradex-list", {"loradex": "[1, 2]"})
    png("loradex-deep", {"loradex": "[" * 50_000 + "]" * 50_000})
    png("loradex-id-only", {"loradex": json.dumps({"id": 5})})
    png("a1111-bad-escape", {"parameters": 'a cat\nSteps: 20, Sampler: "bad \\x escape", Size: axb, Seed: 1e999'})
    png("a1111-odd", {"parameters": 'x <lora:../../etc:abc:def> <lora::>\nSteps: 9, Lora hashes: "a:,:b", Size: 9x'})
    png("comfy-not-json", {"prompt": "{nope"})
    png("comfy-list", {"prompt": "[1, 2, 3]"})
    png("comfy-cycle", {"prompt": json.dumps({"1": sampler, "2": {"inputs": {"model": ["2", 0]}},
                                              "3": {"inputs": {"conditioning": ["3", 0]}}})})
    png("comfy-inputs-not-object", {"prompt": json.dumps({"1": {**sampler, "inputs": "x"}, "2": {"inputs": "t"},
                                                          "3": {"inputs": [1]}})})
    png("comfy-link-to-text-node", {"prompt": json.dumps({"1": sampler, "2": {"inputs": "text"}, "3": {"inputs": "text"}})})
    png("comfy-deep", {"prompt": "{\"a\":" * 30_000 + "1" + "}" * 30_000})
    png("comfy-workflow-deep", {"prompt": json.dumps({"1": sampler}), "workflow": "[" * 50_000 + "]" * 50_000})
    return out


def test_hostile_pngs_through_records_import(loradex_home, tmp_path, capsys):
    pngs = hostile_pngs(tmp_path / "pngs")
    assert problems(capsys, [["records", "import", p] for p in pngs.values()]) == []
    # known answers: a cycle in the graph ends (no hang) and imports what it can
    code, out, err = run_cli(capsys, ["records", "import", pngs["comfy-cycle"], "--json"])
    assert code == 0, err
    code, _, err = run_cli(capsys, ["records", "import", pngs["comfy-deep"]])
    assert code == 1 and "nested deeper" in err and "'prompt' chunk" in err, err
    code, _, err = run_cli(capsys, ["records", "import", pngs["truncated"]])
    assert code == 1 and str(pngs["truncated"]) in err and "\\x89PNG" not in err, err
