"""demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import JsonOpt
from .output import Output, human_size


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        home: Annotated[Optional[Path], typer.Option("--home", help="Home to use (default: a new temp dir).")] = None,
        json: JsonOpt = False,
    ) -> None:
        """Run the offline tour: synthetic adapters, versions, production alias, rollback."""
        from loradex.trainer.demo import run_demo

        out = Output(json_mode=json)
        result = run_demo(home, serve_mirror=_serve_mirror, log=out.info)
        out.result(result, lambda c: out.table(
            ["name", "kind", "base", "latest", "versions", "aliases", "size"],
            [[a["name"], a["kind"], a["base"], a["latest"], a["versions"],
              ", ".join(f"{k}→{v}" for k, v in a["aliases"].items()), human_size(a["size"])]
             for a in result["adapters"]], title="catalog"))
        import shlex

        out.info(f"open this catalog in the browser: loradex ui --home {shlex.quote(str(result['home']))}")


def _serve_mirror(catalog, token: str):
    """``loradex serve`` over ``catalog`` on a free loopback port, in a thread: (url, stop)."""
    from loradex.registry.server.app import build_server_app
    from loradex.registry.server.hub.serving import serve_app_in_thread

    return serve_app_in_thread(build_server_app(catalog, token))
