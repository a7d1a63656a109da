"""The typer app; each command group lives in its own module and registers itself here.

``app`` (``from loradex.cli.app import app``) is the whole app, every command module registered.
The console script instead calls ``app_for(argv)``: typer turns every registered command into a
click command (and pydantic adapters) before it parses anything, which for ~60 commands is a
large part of a quick command's time, so a run whose first argument names a command imports the
module that defines it (``COMMAND_NAMES``) and gets an app holding that command (or group) alone.
Anything else (``--help``, no arguments, ``--version``, a misspelt command) gets the whole app,
so help, usage errors and suggestions read as before.
"""

from __future__ import annotations

import importlib
from typing import Sequence

import typer

# Command modules, in help order. Each defines ``register(app)``.
COMMAND_MODULES = [
    "loradex.cli.catalog_cmds",
    "loradex.cli.alias_cmds",
    "loradex.cli.maintenance_cmds",
    "loradex.cli.demo_cmd",
    "loradex.cli.import_export_cmds",
    "loradex.cli.remote_cmds",
    "loradex.cli.serve_cmds",
    "loradex.cli.train_cmds",
    "loradex.cli.dataset_cmds",
    "loradex.cli.merge_cmds",
    "loradex.cli.evidence_cmds",
    "loradex.cli.search_cmds",
    "loradex.cli.blobs_cmds",
    "loradex.cli.resolve_cmds",
    "loradex.cli.hooks_cmds",
    "loradex.cli.upstream_cmds",
]

# The commands and groups each module registers, so that a run imports only the module it needs.
# A module or name missing here still works (every module is imported then, ~20 ms more);
# tests/test_cli_startup.py checks that this is exactly what the modules register.
COMMAND_NAMES = {
    "loradex.cli.catalog_cmds": ("init", "add", "inspect", "list", "show", "versions", "lineage"),
    "loradex.cli.alias_cmds": ("rollback", "alias"),
    "loradex.cli.maintenance_cmds": ("rm", "gc", "verify"),
    "loradex.cli.demo_cmd": ("demo",),
    "loradex.cli.import_export_cmds": ("import", "export", "convert", "sync-folder"),
    "loradex.cli.remote_cmds": ("pull", "push", "identify", "remote"),
    "loradex.cli.serve_cmds": ("ui", "serve"),
    "loradex.cli.train_cmds": ("train",),
    "loradex.cli.dataset_cmds": ("dataset",),
    "loradex.cli.merge_cmds": ("merge", "resize", "extract", "bake", "compat", "recipe"),
    "loradex.cli.evidence_cmds": ("generate", "render", "eval", "card", "review", "gallery", "records"),
    "loradex.cli.search_cmds": ("search",),
    "loradex.cli.blobs_cmds": ("blobs",),
    "loradex.cli.resolve_cmds": ("resolve", "export-workflow"),
    "loradex.cli.hooks_cmds": ("hooks",),
    "loradex.cli.upstream_cmds": ("outdated",),
}


def _show_version(value: bool) -> None:
    if value:
        from loradex import __version__

        typer.echo(f"loradex {__version__}")
        raise typer.Exit(0)


def _root(
    version: bool = typer.Option(False, "--version", help="Show the loradex version and exit.",
                                 is_eager=True, callback=_show_version),
) -> None:
    """(``--version`` is answered while the arguments are parsed: the group's own callback only
    runs once a command is given.)"""


def _new_app() -> typer.Typer:
    app = typer.Typer(
        name="loradex",
        help="A versioned registry and hub manager for Stable Diffusion adapters "
             "(LoRA, LyCORIS, textual inversion, DreamBooth).",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )
    app.callback()(_root)
    return app


def build_app(modules: list[str] | None = None) -> typer.Typer:
    """A new app with ``modules`` (default: every module of ``COMMAND_MODULES``) registered, in order."""
    app = _new_app()
    for module in COMMAND_MODULES if modules is None else modules:
        importlib.import_module(module).register(app)
    return app


def command_name(info) -> str | None:
    """The name a registered command (``CommandInfo``) or group (``TyperInfo``) answers to."""
    if getattr(info, "typer_instance", None) is not None:  # a group: named where it is added
        return info.name or None
    if info.name:
        return info.name
    from typer.main import get_command_name

    return get_command_name(info.callback.__name__) if info.callback is not None else None


def app_for(argv: Sequence[str]) -> typer.Typer:
    """The app that runs ``argv``: only the command its first argument names, when that is one
    (see the module's docstring), else the whole app."""
    wanted = argv[0] if argv else None
    if not wanted or wanted.startswith("-"):
        return build_app()
    owners = [m for m in COMMAND_MODULES if wanted in COMMAND_NAMES.get(m, ())]
    known = len(owners) == 1 and all(m in COMMAND_NAMES for m in COMMAND_MODULES)
    source = build_app(owners if known else None)
    commands = [c for c in source.registered_commands if command_name(c) == wanted]
    groups = [g for g in source.registered_groups if command_name(g) == wanted]
    if len(commands) + len(groups) != 1:
        return source if not known else build_app()
    app = _new_app()
    app.registered_commands.extend(commands)
    app.registered_groups.extend(groups)
    return app


def __getattr__(name: str):
    if name == "app":  # built on first use: the console script never needs the whole of it
        globals()["app"] = built = build_app()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
