"""``outdated``: whether the sources versions were pulled from have something newer, or deleted them."""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from .options import HomeOpt, JsonOpt, open_catalog
from .output import Output


def register(app: typer.Typer) -> None:
    @app.command("outdated")
    def outdated_cmd(
        names: Annotated[Optional[List[str]], typer.Argument(help="Adapters to check (default: every adapter "
                                                                  "pulled from Civitai or the Hub).")] = None,
        any_base: Annotated[bool, typer.Option("--any-base", help="Civitai: count newer versions of any base "
                                                                  "model (default: the same family and variant, "
                                                                  "so Pony is not Illustrious).")] = False,
        json: JsonOpt = False, home: HomeOpt = None,
    ) -> None:
        """Ask Civitai / the Hub whether a pulled adapter has a newer version upstream, or was deleted
        there (recorded, shown by `show`; nothing is removed). States: up-to-date, newer, deleted,
        unreachable. `loradex pull --update NAME` takes the newest."""
        from loradex.registry.remotes.upstream import outdated

        statuses = outdated(open_catalog(home), names or None, any_base=any_base)
        out = Output(json_mode=json)

        def human(c):
            if not statuses:
                c.print("no adapter here was pulled from Civitai or the Hub")
                return
            out.table(["adapter", "current", "source", "newest", "state", "detail"],
                      [[s.adapter, s.current, s.source, s.newest or "-", s.state, s.detail] for s in statuses])
            for s in statuses:
                for d in s.deleted:
                    c.print(f"{d['ref']}: deleted upstream on {d['deleted_at']} ({d['source']}); kept here")

        out.result([s.to_dict() for s in statuses], human)
