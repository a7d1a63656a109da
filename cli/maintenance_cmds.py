"""rm, gc, verify."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import ForceOpt, HomeOpt, JsonOpt, RefArg, open_catalog
from .output import Output, human_size


def register(app: typer.Typer) -> None:
    @app.command()
    def rm(ref: RefArg, force: ForceOpt = False, home: HomeOpt = None, json: JsonOpt = False) -> None:
        """Remove a version (soft delete: its row and history stay; gc frees the bytes)."""
        from loradex.registry.catalog.operations import SoftDeleteVersion

        catalog = open_catalog(home)
        (version,) = catalog.apply([SoftDeleteVersion(ref, force)])
        Output(json_mode=json).result(version.to_dict(), lambda c: c.print(f"removed {version.ref}"))

    @app.command()
    def gc(dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report what would go.")] = False,
           home: HomeOpt = None, json: JsonOpt = False) -> None:
        """Delete blobs no live version, record or preview uses."""
        from loradex.registry.catalog.maintenance import gc as run_gc

        report = run_gc(open_catalog(home), dry_run=dry_run)
        verb = "would free" if dry_run else "freed"
        Output(json_mode=json).result(report.to_dict(), lambda c: c.print(
            f"{verb} {human_size(report.bytes_freed + report.temp_bytes_freed)} "
            f"({len(report.removed)} blob(s))"))

    @app.command()
    def verify(home: HomeOpt = None, json: JsonOpt = False) -> None:
        """Re-hash every blob and check catalog rows against the store; exit 1 on any problem."""
        from loradex.registry.catalog.maintenance import verify as run_verify

        out = Output(json_mode=json)
        with out.progress("verifying") as progress:
            report = run_verify(open_catalog(home), progress=progress)

        def human(c) -> None:
            for p in report.problems:
                where = p.get("ref") or p.get("path") or p["blob"]
                c.print(f"[red]problem[/red] {where}: {p['problem']}")
            if report.unreferenced:
                c.print(f"{len(report.unreferenced)} unreferenced blob(s) (run `loradex gc`)")
            c.print(f"{'ok' if report.ok else 'FAILED'}: {report.checked_blobs} blob(s) checked, "
                    f"{len(report.problems)} problem(s)")

        out.result(report.to_dict(), human)
        if not report.ok:
            raise typer.Exit(1)
