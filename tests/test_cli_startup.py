"""What makes the read commands quick as whole processes (issue 18) answers as before: the app
built for one command, the schema head read from the migration files, the sqlite3 read path
(compared with ``Catalog`` on one catalog), the indented JSON writer and the long-table printer
(compared with json.dumps and rich). Their speed is bench/cli_startup.py's business."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from loradex.cli.app import COMMAND_MODULES, COMMAND_NAMES, app_for, build_app, command_name
from loradex.cli.output import Output, _default, _word_wrap, dumps_indented, safe_console, terminal_safe
from loradex.registry.catalog.light_reads import LightReader, head_from_files, open_light_reader, revision_files
from loradex.registry.catalog.operations import AddVersion, LinkLineage, MoveAlias, SoftDeleteVersion
from loradex.registry.catalog.store import MIGRATIONS, Catalog
from loradex.registry.errors import LoradexError

runner = CliRunner()


# --- the app built for one command ---------------------------------------------------------
def _registered(module: str) -> tuple[str, ...]:
    app = typer.Typer()
    importlib.import_module(module).register(app)
    return tuple(command_name(c) for c in app.registered_commands) + \
        tuple(command_name(g) for g in app.registered_groups)


def test_command_names_are_what_each_module_registers():
    """A command added to a module and not to COMMAND_NAMES would still run (through the whole
    app), only slower: this says where to add it."""
    for module in COMMAND_MODULES:
        assert module in COMMAND_NAMES, f"add {module} to COMMAND_NAMES in cli/app.py"
        assert sorted(COMMAND_NAMES[module]) == sorted(_registered(module)), \
            f"COMMAND_NAMES[{module!r}] in cli/app.py must list {_registered(module)}"
    assert set(COMMAND_NAMES) == set(COMMAND_MODULES)
    names = [n for m in COMMAND_MODULES for n in COMMAND_NAMES[m]]
    assert len(names) == len(set(names)), "two modules register the same command name"


def _help_commands(text: str) -> list[str]:
    lines = text.split("Commands:", 1)[1].splitlines()
    return [line.split()[0] for line in lines if line.startswith("  ") and line.split()]


def test_help_lists_every_command_as_the_whole_app_does():
    whole = runner.invoke(build_app(), ["--help"])
    lazy = runner.invoke(app_for(["--help"]), ["--help"])
    assert whole.exit_code == lazy.exit_code == 0
    assert lazy.output == whole.output
    listed = _help_commands(lazy.output)
    assert sorted(listed) == sorted(n for m in COMMAND_MODULES for n in COMMAND_NAMES[m])
    # the commands of issue 2 onwards are still there, under their names
    for name in ("init", "add", "list", "show", "versions", "lineage", "alias", "rollback", "rm", "gc",
                 "verify", "import", "export", "pull", "push", "serve", "train", "merge", "render", "card"):
        assert name in listed


def test_help_through_the_console_script_is_the_whole_apps(tmp_path):
    exe = Path(sys.executable).with_name("loradex")
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "100", "LORADEX_HOME": str(tmp_path)})
    assert proc.returncode == 0
    assert sorted(_help_commands(proc.stdout)) == sorted(n for m in COMMAND_MODULES for n in COMMAND_NAMES[m])


def test_each_command_reads_the_same_alone_as_in_the_whole_app():
    whole = build_app()
    for name in [n for m in COMMAND_MODULES for n in COMMAND_NAMES[m]]:
        alone = app_for([name, "--help"])
        assert [command_name(c) for c in alone.registered_commands] + \
               [command_name(g) for g in alone.registered_groups] == [name]
        a, b = runner.invoke(alone, [name, "--help"]), runner.invoke(whole, [name, "--help"])
        assert (a.exit_code, a.output) == (b.exit_code, b.output), name
    # a usage error names the command as before; an unknown command gets the whole app's answer
    a, b = runner.invoke(app_for(["show"]), ["show"]), runner.invoke(whole, ["show"])
    assert (a.exit_code, a.output) == (b.exit_code, b.output) and a.exit_code == 2
    a, b = runner.invoke(app_for(["lsit"]), ["lsit"]), runner.invoke(whole, ["lsit"])
    assert (a.exit_code, a.output) == (b.exit_code, b.output) and "No such command" in a.output


def test_version_option_prints_the_version():
    from loradex import __version__

    for app in (build_app(), app_for(["--version"])):
        result = runner.invoke(app, ["--version"])
        assert (result.exit_code, result.output) == (0, f"loradex {__version__}\n")


def test_app_attribute_is_the_whole_app():
    import loradex.cli.app as module

    assert sorted(command_name(c) for c in module.app.registered_commands + module.app.registered_groups) == \
        sorted(n for m in COMMAND_MODULES for n in COMMAND_NAMES[m])


# --- the schema head -----------------------------------------------------------------------
def test_head_from_the_files_is_alembics_head():
    """A new migration is the head at once: no constant to forget."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(cfg)
    assert head_from_files() == script.get_current_head()
    assert revision_files()[0] == {s.revision for s in script.walk_revisions()}


def test_head_from_files_gives_up_on_two_heads(tmp_path):
    (tmp_path / "versions").mkdir()
    for rev, down in (("a1", None), ("b1", "a1"), ("b2", "a1")):
        (tmp_path / "versions" / f"{rev}.py").write_text(
            f"revision = {rev!r}\ndown_revision = {down!r}\n")
    assert revision_files(tmp_path) == ({"a1", "b1", "b2"}, {"a1"})
    assert head_from_files(tmp_path) is None


# --- the sqlite3 read path -----------------------------------------------------------------
def _add(name: str, n: int, **kw) -> AddVersion:
    digest = hashlib.sha256(f"{name}/{n}".encode()).hexdigest()
    return AddVersion(name=name, sha256=digest, autov1=digest[:8], autov2=digest[:10], autov3=digest,
                      size=1000 + n, file_format="kohya", kind="lora", base="sdxl",
                      file_name=f"{name}-{n}.safetensors", probe={"kind": "lora", "ranks": [4, 8]},
                      file_metadata={"ss_tag_frequency": {"a": {"é": 2}}, "n": n},
                      trigger_words=[f"trig{n}", "wtrclr"], message=f"m{n} ‮x", user="tester", **kw)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    home = tmp_path_factory.mktemp("light-home")
    catalog = Catalog(home)
    catalog.apply([_add("style", 1), _add("style", 2), _add("style", 3, bump="major"),
                   _add("pre", 4, version="1.0.0-rc.1"), _add("pre", 5, version="1.0.0"),
                   _add("pre", 6, version="0.9.0"), _add("gone", 7)])
    catalog.apply([MoveAlias("style@1.1.0", "production", reason="ok", user="tester"),
                   MoveAlias("style@2.0.0", "staging", user="tester"),
                   MoveAlias("pre@1.0.0-rc.1", "beta", user="tester")])
    catalog.apply([SoftDeleteVersion("style@1.0.0", user="tester"), SoftDeleteVersion("gone@1.0.0", user="tester")])
    catalog.apply([LinkLineage("style@2.0.0", "merged_from", parent="style@1.1.0", recipe={"w": [0.5, 1]}),
                   LinkLineage("style@2.0.0", "merged_from", parent="pre@1.0.0"),
                   LinkLineage("style@1.1.0", "pulled_from", external_parent="hf://a/b"),
                   LinkLineage("pre@1.0.0", "converted_from", parent="pre@0.9.0")])
    return catalog


def _answer(fn):
    try:
        return "ok", fn()
    except LoradexError as exc:
        return type(exc).__name__, str(exc)


def test_light_reader_answers_as_catalog(catalog):
    reader = open_light_reader(catalog.home)
    assert isinstance(reader, LightReader)
    assert reader.list_adapters() == catalog.list_adapters()
    assert [s.name for s in reader.list_adapters()] == ["gone", "pre", "style"]
    assert reader.list_adapters()[0].latest is None and reader.list_adapters()[0].versions == 0
    for name in ("style", "pre", "gone", "nothing", "St'yle"):
        for deleted in (False, True):
            assert _answer(lambda: reader.versions(name, include_deleted=deleted)) == \
                _answer(lambda: catalog.versions(name, include_deleted=deleted))
        assert _answer(lambda: reader.aliases(name)) == _answer(lambda: catalog.aliases(name))
    style = catalog.versions("style", include_deleted=True)
    assert [v.deleted for v in style] == [True, False, False]
    assert style[1].created_at is not None and style[1].file_metadata == {"ss_tag_frequency": {"a": {"é": 2}}, "n": 2}
    refs = ["style", "style@1.1.0", "style@production", "style@staging", "pre", "pre@beta", "pre@1.0.0-rc.1",
            "style@1.0.0", "style@9.9.9", "style@nope", "nothing", "gone", "gone@1.0.0",
            f"sha256:{style[1].sha256[:12]}", f"autov2:{style[2].autov2}", f"sha256:{style[0].sha256}",
            "sha256:ffffffffffff", "sha256:0000000", "bad ref!"]
    for ref in refs:
        assert _answer(lambda: reader.resolve(ref)) == _answer(lambda: catalog.resolve(ref)), ref
        assert _answer(lambda: reader.lineage(ref)) == _answer(lambda: catalog.lineage(ref)), ref
    edges = reader.lineage("style@2.0.0")
    assert [(e.child, e.relation, e.parent) for e in edges] == [
        ("style@2.0.0", "merged_from", "style@1.1.0"), ("style@2.0.0", "merged_from", "pre@1.0.0"),
        ("style@1.1.0", "pulled_from", "hf://a/b"), ("pre@1.0.0", "converted_from", "pre@0.9.0")]
    assert edges[0].recipe == {"w": [0.5, 1]}


def test_listing_reads_versions_from_the_live_index(catalog):
    """Migration 0008's partial covering index answers the listing's versions (the one pass
    over versions of the query ``list_adapters`` runs), and it holds the live versions only."""
    reader = open_light_reader(catalog.home)
    statements: list[str] = []
    reader._conn.set_trace_callback(statements.append)
    reader.list_adapters()
    reader._conn.set_trace_callback(None)
    (listing,) = [s for s in statements if "max(sort_key)" in s]
    plan = [row[3] for row in reader._conn.execute("EXPLAIN QUERY PLAN " + listing)]
    on_versions = [step for step in plan if " versions " in f"{step} "]
    assert len(on_versions) == 1 and "COVERING INDEX ix_versions_live_latest" in on_versions[0], plan
    with sqlite3.connect(catalog.home / "catalog.db") as conn:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'ix_versions_live_latest'").fetchone()
        assert sql.endswith("WHERE deleted_at IS NULL")
        live = conn.execute("SELECT count(*) FROM versions INDEXED BY ix_versions_live_latest "
                            "WHERE deleted_at IS NULL").fetchone()[0]
        assert live == conn.execute("SELECT count(*) FROM versions WHERE deleted_at IS NULL").fetchone()[0] == 5


def test_light_reader_ambiguous_hash_prefix_answers_as_catalog(tmp_path):
    catalog = Catalog(tmp_path)
    ops = []
    for i in range(2):
        digest = "abcdef12" + f"{i:056x}"
        ops.append(AddVersion(name=f"a{i}", sha256=digest, autov1=None, autov2=digest[:10], autov3=None,
                              size=1, file_format="kohya", kind="lora", user="t"))
    catalog.apply(ops)
    reader = open_light_reader(tmp_path)
    got = _answer(lambda: reader.resolve("sha256:abcdef12"))
    assert got[0] == "AmbiguousRef" and got == _answer(lambda: catalog.resolve("sha256:abcdef12"))


def test_light_reader_hands_over_what_sqlite3_cannot_bind(catalog):
    """A lone surrogate (a non-UTF-8 argument) cannot be bound by sqlite3: Catalog answers."""
    reader = open_light_reader(catalog.home)
    assert _answer(lambda: reader.versions("a\udcff")) == _answer(lambda: catalog.versions("a\udcff"))
    assert reader._catalog is not None


def test_light_reader_only_for_a_catalog_at_the_head(tmp_path, monkeypatch):
    assert open_light_reader(tmp_path / "new") is None  # no catalog: Catalog creates it
    assert not (tmp_path / "new" / "catalog.db").exists()
    home = tmp_path / "h"
    Catalog(home).apply([_add("style", 1)])
    assert open_light_reader(home) is not None
    monkeypatch.setenv("LORADEX_DB", f"sqlite:///{home / 'catalog.db'}")
    assert open_light_reader(home) is None  # another database: Catalog's business
    monkeypatch.delenv("LORADEX_DB")
    with sqlite3.connect(home / "catalog.db") as conn:  # as if written by an older loradex
        conn.execute("UPDATE alembic_version SET version_num = '0001_initial'")
    assert open_light_reader(home) is None
    with sqlite3.connect(home / "catalog.db") as conn:
        conn.execute("DELETE FROM alembic_version")
    assert open_light_reader(home) is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "catalog.db").write_bytes(b"not a database" * 100)
    assert open_light_reader(tmp_path / "bad") is None  # Catalog says it is damaged


def test_read_commands_through_the_console_script(catalog, monkeypatch):
    """The installed script (light path) prints what the in-process CLI on Catalog prints."""
    from loradex.cli import catalog_cmds, options, search_cmds

    exe = Path(sys.executable).with_name("loradex")
    env = {**os.environ, "LORADEX_HOME": str(catalog.home), "COLUMNS": "120"}
    env.pop("LORADEX_DEBUG", None)
    whole = build_app()
    for args in (["list"], ["list", "--json"], ["show", "style"], ["show", "style", "--json"],
                 ["versions", "style", "--all"], ["versions", "pre", "--json"], ["lineage", "style", "--json"],
                 ["show", "nothing"], ["versions", "nothing"], ["search", "wtrclr"], ["search", "trig", "--json"],
                 ["search", "--created-by", "tester", "--sort", "name", "--json"]):
        proc = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=120)
        with monkeypatch.context() as patch:
            patch.setattr(catalog_cmds, "open_reader", options.open_catalog)  # the Catalog path, for reference
            patch.setattr(search_cmds, "open_reader", options.open_catalog)
            ref = runner.invoke(whole, [*args, "--home", str(catalog.home)])
        if ref.exit_code == 0:
            assert (proc.returncode, proc.stdout) == (0, ref.stdout), args
            if args[:2] == ["search", "trig"]:  # the prefix finds the two adapters with live versions
                assert [h["name"] for h in json.loads(proc.stdout)["hits"]] == ["pre", "style"]
        else:
            assert proc.returncode == 1 and proc.stderr.startswith("error: no adapter named 'nothing'"), args


# --- indented JSON --------------------------------------------------------------------------
_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text()
_keys = st.text() | st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False)
_json_like = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
                          | st.dictionaries(_keys, inner, max_size=4), max_leaves=30)


_row = st.fixed_dictionaries({"name": st.text(), "n": st.integers() | st.none(),
                              "aliases": st.dictionaries(_keys, _scalars, max_size=3), "x": _json_like})
_tables = st.lists(_row | st.dictionaries(st.text(max_size=2), _json_like, max_size=3), min_size=1, max_size=6)


@settings(max_examples=400, deadline=None)
@given(_json_like | _tables | st.dictionaries(st.text(max_size=3), _tables, max_size=2))
def test_dumps_indented_is_json_dumps(data):
    assert dumps_indented(data) == json.dumps(data, default=_default, indent=2)


def test_dumps_indented_objects_and_cycles():
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    data = {"at": when, "set": {3}, "path": Path("/x"), "nested": [{"a": when}], "empty": [{}, []]}
    assert dumps_indented(data) == json.dumps(data, default=_default, indent=2)
    loop: list = []
    loop.append(loop)
    row: dict = {"a": 1}
    row["self"] = [row]  # a table whose row holds itself
    for fn in (dumps_indented, lambda d: json.dumps(d, default=_default, indent=2)):
        for bad in (loop, [row], {"t": [row, row]}):
            with pytest.raises(ValueError, match="Circular reference"):
                fn(bad)
    same = {"k": "v"}
    assert dumps_indented([same, same]) == json.dumps([same, same], indent=2)  # repeated, not circular
    with pytest.raises(TypeError, match="keys must be str"):
        dumps_indented({(1, 2): 3})


# --- long tables ----------------------------------------------------------------------------
def _printed(columns, rows, title, *, width=120, terminal=False, long_path=True):
    out = Output()
    out._console = safe_console(file=io.StringIO(), highlight=False, soft_wrap=True, width=width,
                                force_terminal=terminal, color_system="truecolor" if terminal else None)
    if long_path:
        out.table(columns, rows, title=title)
    else:
        cells = [["" if v is None else terminal_safe(str(v)) for v in row] for row in rows]
        out.console.print(Output._rich_table(columns, cells, title))
    return out.console.file.getvalue()


_cell = (st.text(alphabet=st.sampled_from(list("ab Z09-,→é漢字\u0301\n\t\u2028 \x1b\u202e[")), max_size=30)
         | st.text(alphabet="abc-", max_size=6) | st.none() | st.integers())


@settings(max_examples=600, deadline=None)
@given(st.integers(1, 5).flatmap(lambda n: st.tuples(
    st.lists(st.text(alphabet="abcxyz漢", min_size=1, max_size=8), min_size=n, max_size=n),
    st.lists(st.lists(_cell, min_size=n, max_size=n), min_size=2, max_size=8))),
    st.none() | st.text(alphabet="ab 漢", max_size=30), st.sampled_from([12, 24, 40, 80, 120]), st.booleans())
def test_long_table_prints_what_rich_prints(shape, title, width, terminal):
    columns, rows = shape
    assert _printed(columns, rows, title, width=width, terminal=terminal) == \
        _printed(columns, rows, title, width=width, terminal=terminal, long_path=False)


def test_long_table_takes_the_quick_path_and_escapes(monkeypatch):
    rows = [[f"name-{i}", "lora", "\x1b[31mred", f"a→{i}", i] for i in range(50)]
    calls = []
    real = Output._rich_table

    def counting(columns, cells, title, widths=None):
        calls.append(len(cells))
        return real(columns, cells, title, widths)

    monkeypatch.setattr(Output, "_rich_table", staticmethod(counting))
    text = _printed(["name", "kind", "x", "aliases", "n"], rows, "t")
    assert calls == [1]  # rich laid out the first row only
    assert "\x1b" not in text and "\\x1b[31mred" in text
    monkeypatch.setattr(Output, "_rich_table", staticmethod(real))
    assert text == _printed(["name", "kind", "x", "aliases", "n"], rows, "t", long_path=False)


def _rich_wrap(text: str, width: int) -> list[str]:
    from rich.cells import set_cell_size
    from rich.text import Text

    console = safe_console(file=io.StringIO(), width=120)
    return [set_cell_size(line.plain, width)
            for line in Text(text).wrap(console, width, justify="left", overflow="fold", tab_size=8)]


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab Z09-,→é漢\u0301\x07")), max_size=40), st.integers(1, 25))
def test_word_wrap_is_richs_or_declines(text, width):
    from rich.cells import cell_len

    got = _word_wrap(text, width, cell_len(text))
    if got is not None:
        assert got == _rich_wrap(text, width)
    if any(ch in text for ch in "漢\u0301\x07"):
        assert got is None  # not one cell per character, or a control: rich wraps it


def test_word_wrap_known_answers():
    aliases = "production→1.9.0, staging→1.8.0"
    assert _word_wrap(aliases, 20, len(aliases)) == ["production→1.9.0,   ", "staging→1.8.0       "]
    assert _word_wrap("  ab  cd", 4, 8) == ["  ab", "cd  "] == _rich_wrap("  ab  cd", 4)
    assert _word_wrap("abcdef gh", 4, 9) is None  # a word wider than the column is folded by rich
