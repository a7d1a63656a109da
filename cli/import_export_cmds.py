"""``import``, ``export``, ``convert`` and ``sync-folder``: moving adapters between loradex and
webui model folders (A1111, ComfyUI, InvokeAI) and between LoRA key conventions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import HomeOpt, JsonOpt, QuietOpt, RefArg, open_catalog
from .output import Output, human_size

LayoutOpt = Annotated[str, typer.Option("--layout", help="Folder layout: a1111 or comfyui.")]
AliasOpt = Annotated[str, typer.Option("--alias", help="Which alias the folder mirrors.")]
LORA_TARGETS = ("kohya", "diffusers", "peft")


def _no_rank(rank: int | None) -> None:
    from loradex.registry.errors import UsageError

    if rank is not None:
        raise UsageError("--rank applies to LyCORIS files only (their conversion to LoRA is approximate)",
                         hint="to change a LoRA's rank use `loradex resize`")


def _convert_lora(src: Path, dest: Path, to: str, allow_partial: bool, base: str | None, rank: int | None = None):
    from loradex.merge.convert import convert_file

    _no_rank(rank)

    return convert_file(src, dest, to, base=base, allow_partial=allow_partial)


def _convert_embedding(src: Path, dest: Path, to: str, allow_partial: bool, base: str | None,
                       rank: int | None = None):
    """Embeddings: every tensor is carried (the layouts differ only in keys), so nothing can be
    dropped and allow_partial does not apply. A diffusers file is keyed by its token: ``<stem>``."""
    from safetensors.torch import load_file, save_file

    from loradex.merge.embedding_convert import from_embedding, to_embedding
    from loradex.registry.atomic_files import atomic_path
    from loradex.registry.errors import UnsupportedFormat

    _no_rank(rank)
    if src.suffix != ".safetensors":
        raise UnsupportedFormat(src, "only .safetensors embeddings are converted here",
                                hint="add the pickle with `loradex add --allow-pickle`, then `loradex export --format`")
    state_dict = load_file(str(src))
    emb = to_embedding(state_dict)
    out = from_embedding(emb, to, token=None if emb.token else f"<{src.name.split('.')[0]}>")
    with atomic_path(dest) as tmp:
        save_file({k: v.contiguous() for k, v in out.items()}, str(tmp))
    return {"files": [str(dest)], "source_keys": sorted(state_dict), "keys": sorted(out)}


def _convert_lycoris(src: Path, dest: Path, to: str, allow_partial: bool, base: str | None, rank: int | None = None):
    """LyCORIS → LoRA is an SVD approximation: it needs a rank, and reports the error per module."""
    from loradex.merge.lycoris_to_lora import convert_lycoris_file

    return convert_lycoris_file(src, dest, to, rank=rank, base=base, allow_partial=allow_partial)


# Probed kind → converter; each takes (src, dest, to, allow_partial, base, rank).
CONVERTERS = {"lora": _convert_lora, "lycoris": _convert_lycoris, "embedding": _convert_embedding}


def _import_table(out: Output, report) -> None:
    rows = [[i.status, i.path, i.ref or "", i.reason] for i in report.items if i.status != "unchanged"]
    if rows:
        out.table(["status", "file", "ref", "detail"], rows)
    c, s = report.counts(), report.stats
    out.console.print(
        f"{c['added']} added, {c['duplicate']} duplicate, {c['refused']} refused, "
        f"{c['unchanged']} unchanged  ({s.model_files} model files, {s.cache_hits} from cache, "
        f"{human_size(s.bytes_hashed)} read, {s.seconds:.2f} s)")


def register(app: typer.Typer) -> None:
    @app.command("import")
    def import_(
        folder: Annotated[Path, typer.Argument(help="A webui folder (A1111, ComfyUI, InvokeAI) or its models/Lora, embeddings… folder.")],
        allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Scan and load pickles (.pt/.bin/.ckpt) with weights_only instead of refusing them.")] = False,
        link: Annotated[bool, typer.Option("--link", help="Hardlink files into the store instead of copying when possible.")] = False,
        home: HomeOpt = None, json: JsonOpt = False, quiet: QuietOpt = False,
    ) -> None:
        """Import every adapter in a webui models tree, with its sidecars (.civitai.info, .json, preview)."""
        from loradex.registry.webui_import import import_tree

        out = Output(json_mode=json, quiet=quiet)
        catalog = open_catalog(home)
        with out.progress("importing") as progress:
            report = import_tree(catalog, folder, allow_pickle=allow_pickle, link=link, progress=progress)
        out.result(report, lambda c: _import_table(out, report))

    @app.command()
    def export(
        ref: RefArg,
        dest: Annotated[Path, typer.Argument(help="The webui root folder (files go to its models/Lora, embeddings…).")],
        layout: LayoutOpt = "a1111",
        to_format: Annotated[Optional[str], typer.Option("--format", help="Convert the LoRA to kohya, diffusers or peft on the way.")] = None,
        allow_partial: Annotated[bool, typer.Option("--allow-partial", help="Convert even if some keys cannot be carried over (they are listed).")] = False,
        home: HomeOpt = None, json: JsonOpt = False,
    ) -> None:
        """Write a version into a webui folder with the sidecars A1111 reads."""
        from loradex.registry.webui_export import export_version

        out = Output(json_mode=json)
        catalog = open_catalog(home)
        converter = None
        if to_format:
            from loradex.merge.convert import convert_file as converter
        result = export_version(catalog, ref, dest, layout=layout, to_format=to_format,
                                converter=converter, allow_partial=allow_partial)
        out.result(result, lambda c: c.print(
            f"exported {result.ref} ({result.layout}"
            + (f", converted to {result.converted_to}" if result.converted_to else "") + "):\n  "
            + "\n  ".join(result.files)))

    @app.command()
    def convert(
        path: Annotated[Path, typer.Argument(help="A LoRA or embedding .safetensors file.")],
        to: Annotated[str, typer.Option("--to", help="kohya, diffusers or peft (LoRA); a1111, diffusers or sdxl (embedding).")],
        output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the converted file.")],
        allow_partial: Annotated[bool, typer.Option("--allow-partial", help="Write even if some keys cannot be carried over (they are listed).")] = False,
        base: Annotated[Optional[str], typer.Option("--base", help="Base family when the probe cannot tell (sd1, sd2, sdxl).")] = None,
        rank: Annotated[Optional[int], typer.Option("--rank", help="LyCORIS (LoHa/LoKr/LoCon/full) → LoRA: rank of the SVD approximation (required for LyCORIS files).")] = None,
        json: JsonOpt = False,
    ) -> None:
        """Convert a file between LoRA key conventions (or embedding layouts); LyCORIS → LoRA with --rank."""
        from loradex.registry.errors import UsageError
        from loradex.registry.probe import probe_path

        out = Output(json_mode=json)
        facts = probe_path(path).to_dict()
        kind = facts.get("kind") or "lora"
        if kind not in CONVERTERS:
            raise UsageError(f"{path} is a {kind}; convert handles {', '.join(CONVERTERS)} files")
        probed_base = facts.get("base")
        report = CONVERTERS[kind](path, output, to, allow_partial,
                                  base or (probed_base if probed_base not in (None, "unknown") else None), rank=rank)
        data = report.to_dict() if hasattr(report, "to_dict") else dict(report)
        out.result(data, lambda c: c.print(
            f"converted {path.name} ({facts.get('format')}) → {to}: " + ", ".join(map(str, data.get("files") or [output]))
            + (f"\n  not carried over: {', '.join(data['unconsumed'])}" if data.get("unconsumed") else "")
            + (f"\n  {data['converted']} LyCORIS module(s) → rank {data['rank']}: relative error max "
               f"{data['max_relative_error']:.4g}, mean {data['mean_relative_error']:.4g}" if "max_relative_error" in data else "")))

    @app.command("sync-folder")
    def sync_folder_cmd(
        folder: Annotated[Path, typer.Argument(help="The webui root folder to keep in step.")],
        layout: LayoutOpt = "a1111",
        alias: AliasOpt = "production",
        force: Annotated[bool, typer.Option("--force", help="Also replace or remove managed files changed by hand.")] = False,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would change; write nothing.")] = False,
        home: HomeOpt = None, json: JsonOpt = False,
    ) -> None:
        """Make a webui folder hold each adapter's ALIAS version (only files loradex manages change)."""
        from loradex.registry.folder_sync import sync_folder

        out = Output(json_mode=json)
        catalog = open_catalog(home)
        report = sync_folder(catalog, folder, layout=layout, alias=alias, force=force, dry_run=dry_run)

        def human(c) -> None:
            changed = report.changed()
            if changed:
                out.table(["action", "file", "ref", "detail"], [[a.action, a.path, a.ref, a.reason] for a in changed])
            counts = report.to_dict()["counts"]
            c.print(f"{report.root} ({report.layout}, alias {report.alias}): "
                    + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing to do")
                    + (" (dry run)" if dry_run else ""))

        out.result(report, human)
