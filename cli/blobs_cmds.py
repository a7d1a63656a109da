"""blobs migrate: move a home's blob store (e.g. to S3-compatible object storage)."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import HomeOpt, JsonOpt, open_catalog
from .output import Output, human_size


def register(app: typer.Typer) -> None:
    blobs = typer.Typer(help="Where the home's blobs live (local folder or s3://BUCKET/PREFIX).",
                        no_args_is_help=True)
    app.add_typer(blobs, name="blobs")

    @blobs.command()
    def migrate(to: Annotated[str, typer.Option("--to", help="The blob store to copy to, e.g. s3://BUCKET/PREFIX.")],
                home: HomeOpt = None, json: JsonOpt = False) -> None:
        """Copy every blob to another store (resumable, verified), then use that store."""
        from loradex.registry.catalog.blob_migration import migrate_blobs

        out = Output(json_mode=json)
        with out.progress("migrating blobs") as progress:
            report = migrate_blobs(open_catalog(home), to, progress=progress)
        out.result(report.to_dict(), lambda c: c.print(
            f"blobs now live in {report.location}: copied {len(report.copied)} "
            f"({human_size(report.bytes_copied)}), {report.already_there} already there"))
