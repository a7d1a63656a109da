"""The home itself, and what human output shows (issue 15): a read-only home serves every read
command; a damaged catalog.db, a schema revision from a newer loradex or edited by hand, a full
disk and a home that is not a folder each give one line saying what to do (exit 1, never 3);
human output shows terminal control sequences and bidi overrides escaped, ``--json`` exact.

The read-only home is tested twice: in-process with the writability check answering "no" (the
catalog must then be opened through a read-only SQLite URI and leave catalog.db untouched — this
holds whoever runs the test), and in a real process on a ``chmod -R a-w`` home; as root, that
process runs without the capabilities that let root write anyway (``setpriv``), so the
permission bits bite.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from _formats_fixtures import write_tiny_kohya_lora
from loradex.cli.main import main
from loradex.cli.output import terminal_safe

CONTROL = "\x1b[31mRED\x1b]0;TITLE\x07\x9b2J\r\u202egnp.exe\u2066x\u2069\u200f"
RAW_CONTROLS = ("\x1b", "\x07", "\x9b", "\r", "\u202e", "\u2066", "\u2069", "\u200f")
READ_COMMANDS = [
    ["list"], ["show", "style"], ["show", "style@production"], ["versions", "style"],
    ["lineage", "style"], ["alias", "list", "style"], ["alias", "history", "style", "production"],
    ["verify"], ["show", "style", "--json"], ["list", "--json"],
]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "internal error" not in err
    for needle in needles:
        assert needle in err, (needle, err)


def lora_file(path: Path, metadata: dict | None = None) -> Path:
    return write_tiny_kohya_lora(path, metadata)


@pytest.fixture
def filled_home(loradex_home, tmp_path, capsys) -> Path:
    """A home with style@1.0.0 (production) and style@1.1.0 whose trigger, message and metadata
    carry control sequences, bidi overrides and rich markup."""
    first = lora_file(tmp_path / "style.safetensors")
    second = lora_file(tmp_path / "style2.safetensors", {"ss_output_name": f"name{CONTROL}"})
    assert cli(capsys, "add", first, "--name", "style", "--alias", "production")[0] == 0
    code, _, err = cli(capsys, "add", second, "--name", "style", "--trigger", f"trig{CONTROL}",
                       "-m", f"msg [/bold] [red]{CONTROL}")
    assert code == 0, err
    return loradex_home


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- read-only home ----------------------------------------------------------------------------
def test_read_only_home_serves_reads_through_a_read_only_uri(filled_home, tmp_path, capsys, monkeypatch):
    from loradex.registry import paths
    from loradex.registry.catalog.store import Catalog

    _checkpoint(filled_home / "catalog.db")  # as a cleanly closed catalog is
    real_access = os.access
    monkeypatch.setattr(paths.os, "access", lambda p, mode: False if mode & os.W_OK else real_access(p, mode))
    before = digest(filled_home / "catalog.db")
    catalog = Catalog()
    assert catalog.read_only
    with catalog.engine.connect() as conn, pytest.raises(OperationalError, match="readonly"):
        conn.exec_driver_sql("CREATE TABLE probe (x)")  # opened read-only, whoever runs this
    for argv in READ_COMMANDS:
        code, out, err = cli(capsys, *argv)
        assert code == 0, (argv, err)
        assert out.strip(), argv
    assert "1.1.0" in cli(capsys, "show", "style")[1] and "1.0.0" in cli(capsys, "show", "style@production")[1]
    code, out, err = cli(capsys, "export", "style", tmp_path / "webui")
    assert code == 0, err
    assert (tmp_path / "webui" / "models" / "Lora" / "style.safetensors").is_file()
    assert cli(capsys, "inspect", tmp_path / "style.safetensors")[0] == 0
    code, _, err = cli(capsys, "card", "style")
    one_line_error(code, err, "no evaluation card")  # the answer for a version without one

    # a write is refused in one line, and nothing changed
    code, _, err = cli(capsys, "alias", "set", "style@1.1.0", "production")
    one_line_error(code, err, "read-only", "make the home writable")
    assert digest(filled_home / "catalog.db") == before
    wal = filled_home / "catalog.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    assert '"1.0.0"' in cli(capsys, "alias", "list", "style", "--json")[1]


def _unwritable_runner() -> list[str]:
    """A command prefix under which permission bits bind this process: nothing as a normal user;
    as root, ``setpriv`` dropping the capabilities that override them."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a chmod'ed home would still be writable")
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]
    probe = subprocess.run(prefix + ["true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"setpriv cannot drop capabilities here: {probe.stderr.decode()[:200]}")
    return prefix


SCRIPT = r"""
import json, sys
from loradex.cli.main import main
results = []
for argv in json.loads(sys.argv[1]):
    try:
        main(argv)
    except SystemExit as exc:
        results.append(exc.code)
print("RESULTS", json.dumps(results))
"""


def test_chmod_read_only_home_in_a_real_process(filled_home, tmp_path):
    prefix = _unwritable_runner()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    commands = READ_COMMANDS + [["export", "style", str(out_dir)], ["add", str(tmp_path / "style.safetensors"),
                                                                   "--name", "other"]]
    before = digest(filled_home / "catalog.db")
    modes = {p: p.stat().st_mode for p in [filled_home, *filled_home.rglob("*")]}
    for p in modes:
        p.chmod(stat.S_IMODE(modes[p]) & ~0o222)
    try:
        proc = subprocess.run(prefix + [sys.executable, "-c", SCRIPT, json.dumps(commands)],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "LORADEX_HOME": str(filled_home)})
    finally:
        for p in sorted(modes, key=lambda p: len(p.parts)):
            p.chmod(stat.S_IMODE(modes[p]))
    assert "RESULTS" in proc.stdout, proc.stderr[-2000:]
    results = json.loads(proc.stdout.split("RESULTS", 1)[1])
    assert results == [0] * (len(commands) - 1) + [1], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert (out_dir / "models" / "Lora" / "style.safetensors").is_file()
    assert digest(filled_home / "catalog.db") == before


# --- damaged or foreign catalog ----------------------------------------------------------------
def _set_revisions(db: Path, *revisions: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM alembic_version")
        conn.executemany("INSERT INTO alembic_version (version_num) VALUES (?)", [(r,) for r in revisions])


def _checkpoint(db: Path) -> None:
    """Move the write-ahead log into catalog.db, as the last process to close a catalog does."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _truncate(db: Path) -> None:
    _checkpoint(db)
    os.truncate(db, 8192)


def _garbage(db: Path) -> None:
    _checkpoint(db)
    db.write_bytes(b"\x13\x37not sqlite at all" * 100)


@pytest.mark.parametrize("damage, needles", [
    (_garbage, ("damaged", "restore catalog.db from a backup")),
    (_truncate, ("damaged", "restore catalog.db from a backup")),
    (lambda db: _set_revisions(db, "0099_from_the_future"), ("0099_from_the_future", "upgrade loradex")),
    (lambda db: _set_revisions(db, "0001_initial"), ("schema revision", "restore catalog.db from a backup")),
    (lambda db: _set_revisions(db), ("edited", "restore catalog.db from a backup")),
    (lambda db: _set_revisions(db, "0002_alias_policies", "0003_serve_tokens"), ("edited", "restore")),
], ids=["garbage", "truncated", "newer-schema", "hand-edited-older", "revision-deleted", "two-revisions"])
def test_damaged_or_foreign_catalog_is_one_line(filled_home, tmp_path, capsys, damage, needles):
    damage(filled_home / "catalog.db")
    for argv in (["list"], ["show", "style"], ["add", tmp_path / "style.safetensors", "--name", "x"], ["verify"]):
        code, _, err = cli(capsys, *argv)
        one_line_error(code, err, *needles)


def test_home_that_is_not_a_folder(tmp_path, capsys, monkeypatch):
    regular = tmp_path / "home-file"
    regular.write_text("not a folder")
    monkeypatch.setenv("LORADEX_HOME", str(regular))
    code, _, err = cli(capsys, "list")
    one_line_error(code, err, "is not a folder", "LORADEX_HOME")
    monkeypatch.setenv("LORADEX_HOME", str(regular / "below"))
    code, _, err = cli(capsys, "init")
    one_line_error(code, err, "cannot create the loradex home", "LORADEX_HOME")
    folder = tmp_path / "home-dir"
    (folder / "catalog.db").mkdir(parents=True)
    monkeypatch.setenv("LORADEX_HOME", str(folder))
    code, _, err = cli(capsys, "list")
    one_line_error(code, err, "catalog.db is not a file")


def test_catalog_disk_full_is_one_line_and_registers_nothing(filled_home, tmp_path, capsys, monkeypatch):
    """SQLite's own "database or disk is full" (a page limit at the current size)."""
    from sqlalchemy import event

    from loradex.registry.catalog import store as catalog_mod

    real_engine_for = catalog_mod._engine_for

    def full_engine(url, **kwargs):
        engine = real_engine_for(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _no_more_pages(dbapi_conn, _record):
            pages = dbapi_conn.execute("PRAGMA page_count").fetchone()[0]
            dbapi_conn.execute(f"PRAGMA max_page_count={pages}")

        return engine

    monkeypatch.setattr(catalog_mod, "_engine_for", full_engine)
    big = lora_file(tmp_path / "big.safetensors", {"ss_output_name": "x" * 200_000})
    code, _, err = cli(capsys, "add", big, "--name", "other", "-m", "y" * 200_000)
    one_line_error(code, err, "disk is full", "free some space")
    monkeypatch.setattr(catalog_mod, "_engine_for", real_engine_for)
    names = [a["name"] for a in json.loads(cli(capsys, "list", "--json")[1])]
    assert names == ["style"]


# --- terminal escaping -------------------------------------------------------------------------
def test_terminal_safe_escapes_controls_and_bidi():
    assert terminal_safe("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert terminal_safe("x\u202ey\u2066z\u200e") == "x\\u202ey\\u2066z\\u200e"
    assert terminal_safe("c1\x9b31m del\x7f bell\x07 cr\r") == "c1\\x9b31m del\\x7f bell\\x07 cr\\x0d"
    assert terminal_safe("two\nlines\tok") == "two\nlines\tok"
    assert terminal_safe("two\nlines\t", one_line=True) == "two\\x0alines\\x09"
    assert terminal_safe("naïve ünïcode → 日本") == "naïve ünïcode → 日本"


@pytest.mark.parametrize("argv", [["show", "style"], ["versions", "style"], ["list"],
                                  ["inspect", "{tmp}/style2.safetensors"], ["lineage", "style"]])
def test_human_output_escapes_what_came_from_outside(filled_home, tmp_path, capsys, argv):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = cli(capsys, *argv)
    assert code == 0, err
    for raw in RAW_CONTROLS:
        assert raw not in out and raw not in err, (argv, repr(raw))
    if argv[0] in ("show", "versions"):
        assert "\\x1b[31mRED" in out and "\\u202egnp.exe" in out and "[/bold]" in out


def test_show_lists_escaped_trigger_and_message(filled_home, capsys):
    out = cli(capsys, "show", "style")[1]
    assert f"trig{terminal_safe(CONTROL)}" in out
    assert f"msg [/bold] [red]{terminal_safe(CONTROL)}" in out


def test_json_output_stays_exact(filled_home, capsys):
    code, out, _ = cli(capsys, "show", "style", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["trigger_words"] == [f"trig{CONTROL}"]
    assert data["message"] == f"msg [/bold] [red]{CONTROL}"
    assert "\x1b" not in out and "\u202e" not in out  # JSON escapes them (ASCII output)


def test_lone_surrogates_never_reach_the_terminal_or_the_database(filled_home, tmp_path, capsys):
    """A JSON "\\ud800" in a file's metadata, and a non-UTF-8 argument (Python hands it over as
    a lone surrogate): shown escaped, never a UnicodeEncodeError (exit 3)."""
    path = lora_file(tmp_path / "sur.safetensors", {"ss_output_name": "x", "modelspec.trigger_phrase": "tr\ud800ig"})
    for argv in (["inspect", path], ["add", path, "--name", "sur"], ["show", "sur"], ["versions", "sur"]):
        code, out, err = cli(capsys, *argv)
        assert code == 0, (argv, err)
        out.encode("utf-8")  # strict: no surrogate left
    assert "tr\\ud800ig" in cli(capsys, "show", "sur")[1]
    assert json.loads(cli(capsys, "show", "sur", "--json")[1])["trigger_words"] == ["tr\ud800ig"]
    code, _, err = cli(capsys, "add", tmp_path / "style.safetensors", "--name", "other", "-m", "bad\udcffbyte")
    one_line_error(code, err, "not valid UTF-8", "\\udcff")
    code, _, err = cli(capsys, "show", "\udcff")
    one_line_error(code, err, "\\udcff")


def test_error_messages_are_escaped_on_one_line(filled_home, tmp_path, capsys):
    code, _, err = cli(capsys, "show", f"x{CONTROL}")
    assert code == 1 and err.count("\n") == 1, err
    for raw in RAW_CONTROLS:
        assert raw not in err, repr(raw)
    code, _, err = cli(capsys, "add", tmp_path / f"missing{CONTROL}.safetensors")
    assert code in (1, 2) and err.count("\n") == 1 and "\\u202e" in err, err
    assert "\x1b" not in err
