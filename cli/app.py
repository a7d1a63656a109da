"""The typer app; each command group lives in its own module and registers itself here."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="loradex",
    help="A versioned registry and hub manager for Stable Diffusion adapters "
         "(LoRA, LyCORIS, textual inversion, DreamBooth).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

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
    "loradex.cli.merge_cmds",
    "loradex.cli.evidence_cmds",
    "loradex.cli.search_cmds",
]

for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Show the loradex version and exit.",
                                 is_eager=True),
) -> None:
    if version:
        from loradex import __version__

        typer.echo(f"loradex {__version__}")
        raise typer.Exit(0)
