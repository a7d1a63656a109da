"""search: ranked full-text search over the catalog, with facet counts."""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from .catalog_cmds import _parse_tags
from .options import HomeOpt, JsonOpt, open_reader
from .output import Output, human_size


def register(app: typer.Typer) -> None:
    @app.command()
    def search(
        query: Annotated[str, typer.Argument(help="Words to find (the last one also as a prefix).")] = "",
        kind: Annotated[Optional[str], typer.Option("--kind", help="lora, lycoris, embedding or checkpoint.")] = None,
        base: Annotated[Optional[str], typer.Option("--base", help="Base family (sd1, sdxl, flux, wan-14b …, any Civitai/kohya spelling) or a variant name (pony).")] = None,
        variant: Annotated[Optional[str], typer.Option("--variant", help="Sub-family, FAMILY/VARIANT or VARIANT: sdxl/pony, illustrious, noobai-vpred.")] = None,
        tag: Annotated[Optional[List[str]], typer.Option("--tag", help="KEY=VALUE the adapter is tagged with (repeatable).")] = None,
        trigger: Annotated[Optional[str], typer.Option("--trigger", help="A trigger word of a matching version.")] = None,
        alias: Annotated[Optional[str], typer.Option("--alias", help="Only adapters that have this alias.")] = None,
        created_by: Annotated[Optional[str], typer.Option("--created-by", help="A matching version was added by this user.")] = None,
        sort: Annotated[str, typer.Option("--sort", help="relevance, updated or name.")] = "relevance",
        limit: Annotated[int, typer.Option("--limit", help="Adapters to show (1-200).")] = 20,
        offset: Annotated[int, typer.Option("--offset", help="Skip this many (the next page).")] = 0,
        home: HomeOpt = None, json: JsonOpt = False,
    ) -> None:
        """Search adapters by name, description, triggers, tags, metadata and sample prompts."""
        from loradex.registry.catalog.search import search_catalog

        result = search_catalog(open_reader(home), query, kind=kind, base=base, tags=_parse_tags(tag),
                                trigger=trigger, alias=alias, created_by=created_by, sort=sort,
                                limit=limit, offset=offset, variant=variant)
        out = Output(json_mode=json)
        out.result(result, lambda c: _print(out, c, result))


def _print(out: Output, console, result) -> None:
    columns = ["name", "kind", "base", "latest", "aliases", "triggers", "size", "updated"]
    rows = [[h.name, h.kind, h.base, h.latest_version, ", ".join(f"{a}→{v}" for a, v in h.aliases.items()),
             ", ".join(h.triggers), human_size(h.size), h.updated_at.strftime("%Y-%m-%d")] for h in result.hits]
    if result.terms:  # which versions the words were found in
        columns.append("matched")
        for row, h in zip(rows, result.hits):
            more = h.matched - len(h.matched_versions)
            row.append(", ".join(h.matched_versions) + (f" (+{more})" if more > 0 else ""))
    out.table(columns, rows)
    out.table(["facet", "counts"], [[name, ", ".join(f"{v} {n}" for v, n in counts.items())]
                                    for name, counts in result.facets.items() if counts])
    shown = f"{result.offset + 1}-{result.offset + len(result.hits)}" if result.hits else "0"
    console.print(f"{shown} of {result.total} adapters")
