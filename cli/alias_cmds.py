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


# --- protected aliases and promotion requests (registry/catalog/promotions.py) ---------------------
RequestArg = Annotated[int, typer.Argument(help="Request id (see `loradex alias requests`).", min=1)]


def _request_line(r) -> str:
    return f"#{r.id} {r.adapter}@{r.version} → {r.alias} ({r.state}, requested by {r.requested_by})"


@alias_app.command("protect")
def alias_protect(name: NameArg, alias: Annotated[str, typer.Argument(help="Alias name.")],
                  approver: Annotated[Optional[list[str]], typer.Option(
                      "--approver", help="Who may approve requests (repeatable; default: anyone but "
                      "the requester; on a server, tokens with the approve scope).")] = None,
                  off: Annotated[bool, typer.Option("--off", help="Lift the protection.")] = False,
                  home: HomeOpt = None, json: JsonOpt = False) -> None:
    """Make ALIAS move only through an approved promotion request (`alias request`)."""
    from loradex.registry.catalog.promotions import protect_alias

    result = protect_alias(open_catalog(home), name, alias, approver or [], remove=off)
    if result is None:
        Output(json_mode=json).result({"adapter": name, "alias": alias, "protected": False},
                                      lambda c: c.print(f"{name}@{alias} is no longer protected"))
        return
    who = ", ".join(result.approvers) or "anyone but the requester"
    Output(json_mode=json).result(result, lambda c: c.print(
        f"{name}@{alias} is protected: moves need an approved request (approvers: {who})", soft_wrap=True))


@alias_app.command("request")
def alias_request(ref: RefArg, alias: Annotated[str, typer.Argument(help="Alias name.")],
                  reason: ReasonOpt = "", home: HomeOpt = None, json: JsonOpt = False) -> None:
    """Ask for ALIAS to be moved to REF; an approver runs `alias approve ID`."""
    from loradex.registry.catalog.promotions import request_promotion

    r = request_promotion(open_catalog(home), ref, alias, reason)
    Output(json_mode=json).result(r, lambda c: c.print(
        f"request {_request_line(r)}; an approver runs `loradex alias approve {r.id}`", soft_wrap=True))


@alias_app.command("approve")
def alias_approve(request: RequestArg, reason: ReasonOpt = "", home: HomeOpt = None,
                  json: JsonOpt = False) -> None:
    """Approve a promotion request: the alias moves now (recorded with requester and approver)."""
    from loradex.registry.catalog.promotions import approve_request

    r = approve_request(open_catalog(home), request, reason)
    Output(json_mode=json).result(r, lambda c: c.print(
        f"approved {_request_line(r)}: {r.adapter}@{r.alias} → {r.version}", soft_wrap=True))


@alias_app.command("reject")
def alias_reject(request: RequestArg, reason: ReasonOpt = "", home: HomeOpt = None,
                 json: JsonOpt = False) -> None:
    """Reject a promotion request (needs --reason); the alias does not move."""
    from loradex.registry.catalog.promotions import reject_request

    r = reject_request(open_catalog(home), request, reason)
    Output(json_mode=json).result(r, lambda c: c.print(f"rejected {_request_line(r)}", soft_wrap=True))


@alias_app.command("requests")
def alias_requests(name: Annotated[Optional[str], typer.Argument(help="Only this adapter's.")] = None,
                   state: Annotated[str, typer.Option("--state", help="open | approved | rejected | all.")] = "open",
                   home: HomeOpt = None, json: JsonOpt = False) -> None:
    """Promotion requests, newest first (open ones by default)."""
    from loradex.registry.catalog.promotions import list_requests

    rows = list_requests(open_catalog(home), state=None if state == "all" else state, name=name)
    out = Output(json_mode=json)
    out.result([r.to_dict() for r in rows], lambda c: out.table(
        ["id", "adapter", "alias", "version", "state", "requested by", "reason", "decided by"],
        [[r.id, r.adapter, r.alias, r.version, r.state, r.requested_by, r.reason, r.decided_by or ""]
         for r in rows]))
