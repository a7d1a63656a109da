"""``import``, ``export``, ``convert`` and ``sync-folder``: moving adapters between loradex and
webui model folders (A1111, ComfyUI, InvokeAI) and between LoRA key conventions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import HomeOpt, JsonOpt, QuietOpt, RefArg, open_catalog
from .output import Output, human_size

LayoutOpt = Annotated[str, typer.Option("--layout", help="Folder layout: a1111 or comfyui.")]
WebuiFormatOpt = Annotated[Optional[str], typer.Option(
    "--format", help="The model file's format. Default: as stored when the webui loads it, else converted "
                     "(kohya for LoRA, a1111 or sdxl for embeddings; what cannot be converted is refused). "
                     "kohya, diffusers or peft (LoRA); a1111, diffusers or sdxl (embedding); as-is copies the stored file.")]
AliasOpt = Annotated[str, typer.Option("--alias", help="Which alias the folder mirrors.")]
SidecarsOpt = Annotated[Optional[str], typer.Option(
    "--sidecars", help="Sidecars written beside each model, comma-separated: a1111 (<stem>.json), civitai-helper "
                       "(.civitai.info + preview), lora-manager (ComfyUI LoRA Manager .metadata.json), "
                       "stability-matrix (.cm-info.json), or none. Default: a1111,civitai-helper.")]


def _import_table(out: Output, report) -> None:
    rows = [[i.status, i.path, i.ref or "", i.reason] for i in report.items
            if i.status not in ("unchanged", "skipped")]  # skipped: warning lines on stderr
    if rows:
        out.table(["status", "file", "ref", "detail"], rows)
    c, s = report.counts(), report.stats
    out.console.print(
        f"{c['added']} added, {c['duplicate']} duplicate, {c['refused']} refused, "
        f"{c['unchanged']} unchanged" + (f", {c['skipped']} skipped" if c.get("skipped") else "")
        + f"  ({s.model_files} model files, {s.cache_hits} from cache, "
        f"{human_size(s.bytes_hashed)} read, {s.seconds:.2f} s)")


def register(app: typer.Typer) -> None:
    @app.command("import")
    def import_(
        folder: Annotated[Path, typer.Argument(help="A webui folder (A1111, ComfyUI, InvokeAI) or its models/Lora, embeddings… folder.")],
        allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Scan and load pickles (.pt/.bin/.ckpt) with weights_only instead of refusing them; they are stored converted to safetensors with a converted_from edge, as `add --allow-pickle` does.")] = False,
        link: Annotated[bool, typer.Option("--link", help="Hardlink files into the store instead of copying when possible.")] = False,
        home: HomeOpt = None, json: JsonOpt = False, quiet: QuietOpt = False,
    ) -> None:
        """Import every adapter in a webui models tree, with its sidecars (.civitai.info, .json, LoRA Manager .metadata.json, Stability Matrix .cm-info.json, preview); exit 1 if a file or sidecar was skipped."""
        from loradex.registry.folders.webui_import import import_tree

        out = Output(json_mode=json, quiet=quiet)
        catalog = open_catalog(home)
        converter = None
        if allow_pickle:  # pickles are stored converted to safetensors, exactly as `add --allow-pickle` does
            from loradex.merge.conventions.pickle_to_safetensors import convert_pickle_for_catalog as converter
        with out.progress("importing") as progress:
            report = import_tree(catalog, folder, allow_pickle=allow_pickle, link=link, progress=progress,
                                 pickle_converter=converter)
        skipped = report.by_status("skipped")
        for item in skipped:  # one line each, also with --json (stderr)
            out.warn(f"{item.path}: skipped: {item.reason}")
        out.result(report, lambda c: _import_table(out, report))
        if skipped:
            raise typer.Exit(1)

    @app.command()
    def export(
        ref: RefArg,
        dest: Annotated[Path, typer.Argument(help="The webui root folder (files go to its models/Lora, embeddings…).")],
        layout: LayoutOpt = "a1111",
        to_format: WebuiFormatOpt = None,
        allow_partial: Annotated[bool, typer.Option("--allow-partial", help="Convert even if some keys cannot be carried over (they are listed).")] = False,
        force: Annotated[bool, typer.Option("--force", help="Also overwrite files in the way that an earlier export did not write (or that were changed by hand).")] = False,
        sidecars: SidecarsOpt = None,
        home: HomeOpt = None, json: JsonOpt = False,
    ) -> None:
        """Write a version into a webui folder, in a format it loads, with the sidecars A1111 reads (exit 1 if a file in the way was left alone)."""
        from loradex.merge.conventions.file_conversion import convert_path as converter
        from loradex.registry.folders.sidecar_formats import parse_sidecar_list
        from loradex.registry.folders.webui_export import export_version

        out = Output(json_mode=json)
        catalog = open_catalog(home)
        result = export_version(catalog, ref, dest, layout=layout, to_format=to_format,
                                converter=converter, allow_partial=allow_partial, force=force,
                                sidecars=parse_sidecar_list(sidecars))
        for warning in result.warnings:
            out.warn(warning)
        out.result(result, lambda c: c.print(
            f"exported {result.ref} ({result.layout}"
            + (f", converted to {result.converted_to}" if result.converted_to else "") + "):\n  "
            + "\n  ".join(result.files)
            + (f"\n{len(result.skipped)} file(s) left alone (see the warnings)" if result.skipped else "")))
        if result.skipped:
            raise typer.Exit(1)

    @app.command()
    def convert(
        path: Annotated[Path, typer.Argument(help="A LoRA or embedding .safetensors file.")],
        to: Annotated[str, typer.Option("--to", help="kohya, diffusers, comfyui (Flux/SD3 diffusion_model. keys) or peft (LoRA); a1111, diffusers or sdxl (embedding).")],
        output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the converted file.")],
        allow_partial: Annotated[bool, typer.Option("--allow-partial", help="Write even if some keys cannot be carried over (they are listed).")] = False,
        base: Annotated[Optional[str], typer.Option("--base", help="Base family when the probe cannot tell (sd1, sd2, sdxl, sd3, flux).")] = None,
        rank: Annotated[Optional[int], typer.Option("--rank", help="LyCORIS (LoHa/LoKr/LoCon/full) → LoRA: rank of the SVD approximation (required for LyCORIS files).")] = None,
        join: Annotated[Optional[Path], typer.Option("--join", help="Embedding → sdxl: the other text encoder's single-encoder file (clip_l 768 wide, clip_g 1280).")] = None,
        token: Annotated[Optional[str], typer.Option("--token", help="Embedding → diffusers: the token to key it by (default: its own, else the file name).")] = None,
        json: JsonOpt = False,
    ) -> None:
        """Convert a file between LoRA key conventions or embedding layouts (SDXL split/join); LyCORIS → LoRA with --rank."""
        from loradex.merge.conventions.file_conversion import convert_path

        out = Output(json_mode=json)
        data = convert_path(path, output, to, base=base, allow_partial=allow_partial, rank=rank,
                            join_with=join, token=token)
        out.result(data, lambda c: c.print(
            f"converted {path.name} ({data.get('source_format')}) → {to}: " + ", ".join(map(str, data.get("files") or [output]))
            + (f"\n  not carried over: {', '.join(data['unconsumed'])}" if data.get("unconsumed") else "")
            + "".join(f"\n  {note}" for note in data.get("notes") or ())
            + (f"\n  {data['converted']} LyCORIS module(s) → rank {data['rank']}: relative error max "
               f"{data['max_relative_error']:.4g}, mean {data['mean_relative_error']:.4g}" if "max_relative_error" in data else "")))

    @app.command("sync-folder")
    def sync_folder_cmd(
        folder: Annotated[Path, typer.Argument(help="The webui root folder to keep in step.")],
        layout: LayoutOpt = "a1111",
        alias: AliasOpt = "production",
        to_format: WebuiFormatOpt = None,
        force: Annotated[bool, typer.Option("--force", help="Also replace or remove managed files changed by hand.")] = False,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would change; write nothing.")] = False,
        sidecars: SidecarsOpt = None,
        home: HomeOpt = None, json: JsonOpt = False,
    ) -> None:
        """Make a webui folder hold each adapter's ALIAS version, in a format it loads (only files loradex manages change; exit 1 if an adapter was refused)."""
        from loradex.merge.conventions.file_conversion import convert_path
        from loradex.registry.folders.folder_sync import sync_folder
        from loradex.registry.folders.sidecar_formats import parse_sidecar_list

        out = Output(json_mode=json)
        catalog = open_catalog(home)
        report = sync_folder(catalog, folder, layout=layout, alias=alias, force=force, dry_run=dry_run,
                             to_format=to_format, converter=convert_path, sidecars=parse_sidecar_list(sidecars))
        for warning in report.warnings:
            out.warn(warning)

        def human(c) -> None:
            changed = report.changed()
            if changed:
                out.table(["action", "file", "ref", "detail"], [[a.action, a.path, a.ref, a.reason] for a in changed])
            counts = report.to_dict()["counts"]
            c.print(f"{report.root} ({report.layout}, alias {report.alias}): "
                    + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing to do")
                    + (" (dry run)" if dry_run else ""))

        out.result(report, human)
        if report.count("refused"):
            raise typer.Exit(1)
