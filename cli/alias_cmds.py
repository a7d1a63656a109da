"""alias set | list | history, rollback."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .options import ForceOpt, HomeOpt, JsonOpt, NameArg, ReasonOpt, RefArg, open_catalog
from .output import Output

alias_app = typer.Typer(help="Named pointers to versions (production, staging, …).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(alias_app, name="alias")

    @app.command()
    def rollback(
        name: NameArg,
        alias: Annotated[str, typer.Option("--alias", help="Alias to move back.")] = "production",
        to: Annotated[Optional[str], typer.Option("--to", help="Exact version to move it to.")] = None,
        reason: ReasonOpt = "", home: HomeOpt = None, json: JsonOpt = False,
    ) -> None:
        """Move an alias back to its previous target (or --to VERSION); nothing is deleted."""
        from loradex.registry.catalog.operations import RollbackAlias

        catalog = open_catalog(home)
        (event,) = catalog.apply([RollbackAlias(name, alias, to, reason)])
        Output(json_mode=json).result(event, lambda c: c.print(
            f"{name}@{alias}: {event.from_version} → {event.to_version}"))


@alias_app.command("set")
def alias_set(ref: RefArg, alias: Annotated[str, typer.Argument(help="Alias name.")],
              reason: ReasonOpt = "", force: ForceOpt = False, home: HomeOpt = None,
              json: JsonOpt = False) -> None:
    """Point ALIAS at REF (records who, when and why)."""
    from loradex.registry.catalog.operations import move_alias

    catalog = open_catalog(home)
    result = move_alias(catalog, ref, alias, reason, force=force)
    Output(json_mode=json).result(result, lambda c: c.print(f"{result.adapter}@{alias} → {result.version}"))


@alias_app.command("list")
def alias_list(name: NameArg, home: HomeOpt = None, json: JsonOpt = False) -> None:
    """List the aliases of an adapter."""
    catalog = open_catalog(home)
    rows = catalog.aliases(name)
    out = Output(json_mode=json)
    out.result([a.to_dict() for a in rows], lambda c: out.table(
        ["alias", "version"], [[a.name, a.version] for a in rows], title=name))


@alias_app.command("history")
def alias_history(name: NameArg, alias: Annotated[str, typer.Argument(help="Alias name.")],
                  home: HomeOpt = None, json: JsonOpt = False) -> None:
    """Every move of an alias: when, by whom, from, to, why."""
    catalog = open_catalog(home)
    events = catalog.alias_history(name, alias)
    out = Output(json_mode=json)
    out.result([e.to_dict() for e in events], lambda c: out.table(
        ["at", "by", "action", "from", "to", "reason"],
        [[e.at.strftime("%Y-%m-%d %H:%M:%S"), e.by, e.action, e.from_version or "-", e.to_version or "-",
          e.reason] for e in events], title=f"{name}@{alias}"))
