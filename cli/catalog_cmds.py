"""init, add, inspect, list, show, versions, lineage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from .options import HomeOpt, JsonOpt, NameArg, QuietOpt, RefArg, open_catalog, open_reader
from .output import Output, human_size


def _parse_tags(tags: list[str]) -> dict:
    from loradex.registry.errors import UsageError

    out = {}
    for item in tags or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--tag {item!r}: use KEY=VALUE")
        out[key] = value
    return out


def _named_files(paths: list[Path], named: list[str]) -> tuple[list[Path], list[str | None]]:
    """``add``'s files: the positional ones (roles from their names) then each ``--file ROLE=PATH``."""
    from loradex.registry.errors import UsageError

    files, roles = list(paths), [None] * len(paths)
    for item in named:
        role, sep, path = item.partition("=")
        if not sep or not role or not path:
            raise UsageError(f"--file {item!r}: use ROLE=PATH (e.g. high_noise=style_high.safetensors)")
        files.append(Path(path))
        roles.append(role)
    if not files:
        raise UsageError("give the adapter file to add", hint="loradex add FILE [FILE…] or --file ROLE=PATH")
    return files, roles


def register(app: typer.Typer) -> None:
    @app.command()
    def init(home: HomeOpt = None, json: JsonOpt = False) -> None:
        """Create (or upgrade) the catalog and blob store in the loradex home."""
        catalog = open_catalog(home)
        data = {"home": str(catalog.home), "database": catalog.engine.url.render_as_string(hide_password=True),
                "schema": catalog.schema_revision()}
        Output(json_mode=json).result(data, lambda c: c.print(
            f"loradex home {data['home']} ready (schema {data['schema']})"))

    @app.command()
    def add(
        paths: Annotated[Optional[List[Path]], typer.Argument(metavar="PATH...", help="Adapter file (.safetensors; pickles need --allow-pickle). Several files make ONE version holding them all (a Wan 2.2 high-noise + low-noise pair), the first the primary.")] = None,
        file: Annotated[Optional[List[str]], typer.Option("--file", help="ROLE=PATH: a named file of a multi-file version (repeatable; e.g. --file high_noise=A.safetensors --file low_noise=B.safetensors).")] = None,
        name: Annotated[Optional[str], typer.Option("--name", help="Adapter name (default: from the file name).")] = None,
        version: Annotated[Optional[str], typer.Option("--version", help="Exact version X.Y.Z.")] = None,
        bump: Annotated[Optional[str], typer.Option("--bump", help="major, minor (default) or patch.")] = None,
        kind: Annotated[Optional[str], typer.Option("--kind", help="Override the probed kind.")] = None,
        base: Annotated[Optional[str], typer.Option("--base", help="Override the probed base family.")] = None,
        trigger: Annotated[Optional[List[str]], typer.Option("--trigger", help="Trigger word (repeatable).")] = None,
        message: Annotated[str, typer.Option("--message", "-m", help="What changed.")] = "",
        tag: Annotated[Optional[List[str]], typer.Option("--tag", help="KEY=VALUE (repeatable).")] = None,
        link: Annotated[bool, typer.Option("--link", help="Hardlink instead of copying when possible.")] = False,
        allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Scan and load a pickle (.pt/.bin/.ckpt) with weights_only.")] = False,
        to_safetensors: Annotated[bool, typer.Option("--to-safetensors/--keep-pickle", help="With --allow-pickle: store the pickle converted to safetensors (default, with a converted_from lineage edge) or as-is.")] = True,
        alias: Annotated[Optional[str], typer.Option("--alias", help="Also point this alias at the new version.")] = None,
        home: HomeOpt = None, json: JsonOpt = False, quiet: QuietOpt = False,
    ) -> None:
        """Add a file as a new version of an adapter."""
        from loradex.merge.conventions.pickle_to_safetensors import add_adapter_file

        out = Output(json_mode=json, quiet=quiet)
        files, roles = _named_files(paths or [], file or [])
        catalog = open_catalog(home)
        common = dict(name=name, version=version, bump=bump, kind=kind, base=base, triggers=trigger,
                      message=message, tags=_parse_tags(tag), link=link, allow_pickle=allow_pickle, alias=alias)
        with out.progress("adding", transfer=True) as progress:
            if len(files) > 1 or any(roles):
                from loradex.registry.catalog.adding import add_files

                result = add_files(catalog, files, roles=roles, progress=progress, **common)
            else:
                result = add_adapter_file(catalog, files[0], keep_pickle=not to_safetensors, progress=progress,
                                          **common)
        if result.note:
            out.warn(result.note)
        v = result.version
        out.result(result, lambda c: c.print(
            f"added {v.ref}  {v.probe.get('kind', '')}/{v.probe.get('format', '')} "
            f"base={v.probe.get('base', '')}  sha256:{v.sha256[:12]}  {human_size(v.size)}"
            + ("  (already stored)" if result.stored_bytes == 0 else "")
            + "".join(f"\n  file {f.name:12} {f.file_name}  sha256:{f.sha256[:12]}  {human_size(f.size)}"
                      for f in v.files)))

    @app.command()
    def inspect(
        path: Annotated[Path, typer.Argument(help="File to probe (nothing is added).")],
        explain: Annotated[bool, typer.Option("--explain", help="Show every prober's verdict and reason.")] = False,
        allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Scan and load a pickle with weights_only.")] = False,
        json: JsonOpt = False,
    ) -> None:
        """Probe a file: kind, format, base family, ranks, triggers, metadata."""
        from loradex.registry.probe import explain_path, probe_path

        out = Output(json_mode=json)
        if explain:
            verdicts = explain_path(path, allow_pickle=allow_pickle)
            out.result([v.to_dict() for v in verdicts], lambda c: out.table(
                ["prober", "verdict", "reason"],
                [[v.prober, "mine" if v.matched else "not mine", v.reason] for v in verdicts],
                title=str(path)))
            return
        facts = probe_path(path, allow_pickle=allow_pickle).to_dict()
        out.result(facts, lambda c: _print_facts(c, path, facts))

    @app.command("list")
    def list_(home: HomeOpt = None, json: JsonOpt = False) -> None:
        """List adapters: kind, base, latest version, aliases, size."""
        catalog = open_reader(home)
        rows = catalog.list_adapters()
        out = Output(json_mode=json)
        out.result([r.to_dict() for r in rows] if json else None, lambda c: out.table(
            ["name", "kind", "base", "latest", "versions", "aliases", "size"],
            [[r.name, r.kind, r.base, r.latest or "-", r.versions,
              ", ".join(f"{a}→{v}" for a, v in sorted(r.aliases.items())), human_size(r.size)]
             for r in rows]))

    @app.command()
    def show(ref: RefArg, home: HomeOpt = None, json: JsonOpt = False) -> None:
        """Show one version: hashes, probe facts, triggers, aliases, lineage."""
        catalog = open_reader(home)
        version = catalog.resolve(ref)
        data = version.to_dict(full=True)
        data["aliases"] = {a.name: a.version for a in catalog.aliases(version.adapter)}
        data["lineage"] = [e.to_dict() for e in catalog.lineage(version.ref)]
        upstream = (version.extra or {}).get("upstream") or {}  # recorded by `loradex outdated`
        data["deleted_upstream"] = ({"date": upstream.get("deleted_at"), "source": upstream.get("source")}
                                    if upstream.get("state") == "deleted" else None)
        Output(json_mode=json).result(data, lambda c: _print_version(c, data))

    @app.command()
    def versions(name: NameArg, all_: Annotated[bool, typer.Option("--all", help="Include removed versions.")] = False,
                 home: HomeOpt = None, json: JsonOpt = False) -> None:
        """List the versions of an adapter (oldest first)."""
        catalog = open_reader(home)
        rows = catalog.versions(name, include_deleted=all_)
        aliases: dict[str, list[str]] = {}
        for a in catalog.aliases(name):
            aliases.setdefault(a.version, []).append(a.name)
        out = Output(json_mode=json)
        out.result([{**v.to_dict(), "aliases": aliases.get(v.version, [])} for v in rows], lambda c: out.table(
            ["version", "sha256", "size", "format", "aliases", "created", "message"],
            [[v.version + (" (removed)" if v.deleted else ""), v.sha256[:12], human_size(v.size),
              v.file_format, ", ".join(aliases.get(v.version, [])),
              v.created_at.strftime("%Y-%m-%d %H:%M") if v.created_at else "", v.message] for v in rows],
            title=name))

    @app.command()
    def lineage(ref: RefArg, home: HomeOpt = None, json: JsonOpt = False) -> None:
        """Show where a version came from (parents, recursively, with recipes)."""
        catalog = open_reader(home)
        edges = catalog.lineage(ref)
        out = Output(json_mode=json)
        out.result([e.to_dict() for e in edges], lambda c: out.table(
            ["child", "relation", "parent"], [[e.child, e.relation, e.parent] for e in edges]))


def _print_facts(console, path, facts: dict) -> None:
    console.print(f"[bold]{path}[/bold]")
    for key in ("kind", "algorithm", "format", "convention", "base", "variant", "ranks", "alphas", "components",
                "module_count", "target_modules", "conv", "n_vectors", "tokens", "trigger_words", "prediction_type",
                "timestep_range", "tensor_count", "dtypes"):
        value = facts.get(key)
        if key == "convention" and value == facts.get("format"):
            continue  # said already
        if key == "base" and facts.get("base_reason"):
            value = f"{value}  ({facts['base_reason']})"
        if key == "variant" and value and facts.get("variant_evidence"):
            value = f"{value}  ({facts['variant_evidence']})"
        if value not in (None, [], {}, ""):
            console.print(f"  {key:15} {value}")
    for note in facts.get("notes") or []:
        console.print(f"  note            {note}")
    for warning in facts.get("warnings") or []:
        console.print(f"  [yellow]warning[/yellow]        {warning}")


def _print_version(console, data: dict) -> None:
    console.print(f"[bold]{data['ref']}[/bold]  {data['file_format']}  {human_size(data['size'])}")
    for key, value in data["hashes"].items():
        console.print(f"  {key:10} {value}")
    probe = data.get("probe") or {}
    for key in ("kind", "base", "ranks", "components", "module_count", "prediction_type", "timestep_range"):
        if probe.get(key) not in (None, [], ""):
            console.print(f"  {key:10} {probe[key]}")
    if data["trigger_words"]:
        console.print(f"  triggers   {', '.join(data['trigger_words'])}")
    if data["aliases"]:
        console.print("  aliases    " + ", ".join(f"{a}→{v}" for a, v in data["aliases"].items()))
    for edge in data["lineage"]:
        console.print(f"  lineage    {edge['child']} {edge['relation']} {edge['parent']}")
    if data.get("deleted_upstream"):
        gone = data["deleted_upstream"]
        console.print(f"  [yellow]deleted upstream on {gone['date']}[/yellow] ({gone['source']}); kept here")
    for f in data.get("files") or []:
        console.print(f"  file       {f['name']:12} {f['file_name']}  {f['file_format']}  "
                      f"sha256:{f['sha256'][:12]}  {human_size(f['size'])}")
    if data["message"]:
        console.print(f"  message    {data['message']}")
