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
