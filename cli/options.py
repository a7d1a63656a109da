"""Shared command options as ``Annotated`` aliases, so every command spells them the same."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (stable keys).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
HomeOpt = Annotated[Optional[Path], typer.Option("--home", help="loradex home (default: $LORADEX_HOME).",
                                                 envvar="LORADEX_HOME", show_envvar=False)]
RefArg = Annotated[str, typer.Argument(help="NAME, NAME@VERSION, NAME@ALIAS or sha256:<hex>.")]
NameArg = Annotated[str, typer.Argument(help="Adapter name.")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (recorded in the history).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Do it even if something depends on it.")]


def open_catalog(home: Path | None):
    from loradex.registry.catalog.store import Catalog

    return Catalog(home)


def open_reader(home: Path | None):
    """For commands that only read: a ``LightReader`` (sqlite3, no SQLAlchemy import) when the
    catalog is the home's SQLite one at the newest schema, else the ``Catalog``. Both answer
    ``list_adapters``, ``resolve``, ``versions``, ``aliases`` and ``lineage`` alike."""
    from loradex.registry.catalog.light_reads import open_light_reader

    return open_light_reader(home) or open_catalog(home)
