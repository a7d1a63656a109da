"""dataset check | add | list | show | versions | diff | export | rm | alias set/rm/history.

Datasets are versioned catalog objects (``registry/catalog/datasets.py``); refs are
``dataset:NAME``, ``dataset:NAME@X.Y.Z``, ``dataset:NAME@ALIAS`` (the prefix may be left out here).
Other modules may add commands to ``dataset_app`` (the group is registered once, here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import ForceOpt, HomeOpt, JsonOpt, QuietOpt, ReasonOpt, open_catalog
from .output import Output, human_size

dataset_app = typer.Typer(help="Training data: check folders; versioned datasets in the catalog.",
                          no_args_is_help=True)
alias_app = typer.Typer(help="Named pointers to dataset versions.", no_args_is_help=True)
dataset_app.add_typer(alias_app, name="alias")

DatasetRefArg = Annotated[str, typer.Argument(help="dataset:NAME, dataset:NAME@X.Y.Z or dataset:NAME@ALIAS.")]
DatasetNameArg = Annotated[str, typer.Argument(help="Dataset name (dataset:NAME).")]


def register(app: typer.Typer) -> None:
    app.add_typer(dataset_app, name="dataset")


def _print_warnings(c, warnings: list[str]) -> None:
    for warning in warnings:
        c.print(f"[yellow]warning[/yellow] {warning}")


@dataset_app.command("check")
def check(
    folder: Annotated[Path, typer.Argument(help="Folder of images with sidecar captions.")],
    resolution: Annotated[int, typer.Option("--resolution", help="Training resolution.")] = 512,
    caption_ext: Annotated[str, typer.Option("--caption-ext", help="Caption file extension.")] = ".txt",
    near_bits: Annotated[int, typer.Option("--near-bits", help="dHash distance counted as a near duplicate.")] = 5,
    json: JsonOpt = False,
) -> None:
    """Corrupt images, too small, exact/near duplicates, missing captions, buckets; exit 1 on corrupt images."""
    from loradex.registry.catalog.dataset_check import check_dataset

    out = Output(json_mode=json)
    with out.progress("reading images") as progress:
        report = check_dataset(folder, resolution=resolution, caption_ext=caption_ext, near_bits=near_bits,
                               progress=progress)

    def human(c) -> None:
        c.print(f"{report.folder}: {len(report.images)} image(s), manifest sha256 {report.manifest_sha256()[:16]}…")
        for item in report.corrupt:
            c.print(f"[red]corrupt[/red] {item['file']}: {item['error']}")
        for item in report.too_small:
            c.print(f"too small: {item['file']} ({item['width']}×{item['height']})")
        for group in report.exact_duplicates:
            c.print(f"exact duplicates: {', '.join(group)}")
        for pair in report.near_duplicates:
            c.print(f"near duplicates: {pair['a']} ~ {pair['b']} (distance {pair['distance']})")
        for name in report.missing_captions:
            c.print(f"no caption: {name}")
        c.print("buckets: " + ", ".join(f"{k}: {v}" for k, v in report.buckets.items()))
        _print_warnings(c, report.warnings)

    out.result(report.to_dict(), human)
    report.raise_for_errors()


@dataset_app.command("add")
def add(
    folder: Annotated[Path, typer.Argument(help="Folder of images with sidecar captions.")],
    name: Annotated[str, typer.Option("--name", help="Dataset name.")],
    version: Annotated[Optional[str], typer.Option("--version", help="Exact version X.Y.Z.")] = None,
    bump: Annotated[Optional[str], typer.Option("--bump", help="major, minor (default) or patch.")] = None,
    message: Annotated[str, typer.Option("--message", "-m", help="What changed.")] = "",
    caption_ext: Annotated[str, typer.Option("--caption-ext", help="Caption file extension.")] = ".txt",
    resolution: Annotated[int, typer.Option("--resolution", help="Training resolution the check judges sizes by.")] = 512,
    alias: Annotated[Optional[str], typer.Option("--alias", help="Also point this alias at the new version.")] = None,
    link: Annotated[bool, typer.Option("--link", help="Hardlink images into the store instead of copying, where possible.")] = False,
    home: HomeOpt = None, json: JsonOpt = False, quiet: QuietOpt = False,
) -> None:
    """Add a folder as a new dataset version: images stored once as blobs, captions and the check report in the catalog."""
    from loradex.registry.catalog.datasets import add_dataset_version

    out = Output(json_mode=json, quiet=quiet)
    catalog = open_catalog(home)
    with out.progress("adding images") as progress:
        added = add_dataset_version(catalog, folder, name=name, version=version, bump=bump, message=message,
                                    caption_ext=caption_ext, resolution=resolution, alias=alias, link=link,
                                    progress=progress)

    def human(c) -> None:
        c.print(f"added {added.ref}: {added.num_images} image(s), {human_size(added.total_bytes)}, "
                f"manifest sha256 {added.manifest_sha256[:16]}…")
        _print_warnings(c, added.warnings)

    out.result(added.to_dict(), human)


@dataset_app.command("list")
def list_(home: HomeOpt = None, json: JsonOpt = False) -> None:
    """Every dataset: latest version, number of versions, images, aliases."""
    from loradex.registry.catalog.datasets import list_datasets

    rows = list_datasets(open_catalog(home))
    out = Output(json_mode=json)
    out.result([r.to_dict() for r in rows], lambda c: out.table(
        ["dataset", "latest", "versions", "images", "aliases"],
        [[r.name, r.latest or "-", r.versions, r.num_images,
          ", ".join(f"{a}→{v}" for a, v in r.aliases.items())] for r in rows]))


@dataset_app.command("show")
def show(ref: DatasetRefArg,
         images: Annotated[bool, typer.Option("--images", help="List every image with its caption.")] = False,
         home: HomeOpt = None, json: JsonOpt = False) -> None:
    """One dataset version: facts, check warnings, aliases, the adapter versions trained from it (--json: the manifest)."""
    from loradex.registry.catalog.datasets import dataset_aliases, get_dataset_version, trained_versions

    catalog = open_catalog(home)
    found = get_dataset_version(catalog, ref)
    aliases = {a: v for a, v in dataset_aliases(catalog, found.dataset).items() if v == found.version}
    trained = trained_versions(catalog, found)
    out = Output(json_mode=json)

    def human(c) -> None:
        c.print(f"{found.ref}  {found.num_images} image(s), {human_size(found.total_bytes)}")
        c.print(f"manifest sha256 {found.manifest_sha256}")
        c.print(f"training sha256 {found.training_sha256}")
        c.print(f"added {found.created_at:%Y-%m-%d %H:%M} by {found.created_by}"
                + (f": {found.message}" if found.message else ""))
        if aliases:
            c.print("aliases: " + ", ".join(aliases))
        if trained:
            c.print("trained: " + ", ".join(trained))
        _print_warnings(c, found.warnings)
        if images:
            out.table(["file", "size", "caption"],
                      [[i.file, f"{i.width}×{i.height}", i.caption if i.caption is not None else "-"]
                       for i in found.images])

    out.result({**found.to_dict(full=True), "aliases": sorted(aliases), "trained": trained}, human)


@dataset_app.command("versions")
def versions(name: DatasetNameArg,
             all_: Annotated[bool, typer.Option("--all", help="Include removed versions.")] = False,
             home: HomeOpt = None, json: JsonOpt = False) -> None:
    """The versions of a dataset, oldest first."""
    from loradex.registry.catalog.datasets import dataset_aliases, dataset_versions

    catalog = open_catalog(home)
    rows = dataset_versions(catalog, name, include_deleted=all_)
    aliases = dataset_aliases(catalog, name)
    out = Output(json_mode=json)
    out.result([r.to_dict() for r in rows], lambda c: out.table(
        ["version", "images", "size", "added", "by", "aliases", "message"],
        [[r.version + (" (removed)" if r.deleted else ""), r.num_images, human_size(r.total_bytes),
          f"{r.created_at:%Y-%m-%d %H:%M}", r.created_by,
          ", ".join(a for a, v in aliases.items() if v == r.version), r.message] for r in rows],
        title=f"dataset:{name.removeprefix('dataset:')}"))


@dataset_app.command("diff")
def diff(a: DatasetRefArg, b: DatasetRefArg, home: HomeOpt = None, json: JsonOpt = False) -> None:
    """What changed from A to B: images added, removed, re-captioned, renamed (matched by content)."""
    from loradex.registry.catalog.datasets import diff_datasets

    result = diff_datasets(open_catalog(home), a, b)

    def human(c) -> None:
        c.print(f"{result.a} → {result.b}")
        for image in result.added:
            c.print(f"[green]+[/green] {image.file}" + (f": {image.caption}" if image.caption is not None else ""))
        for image in result.removed:
            c.print(f"[red]-[/red] {image.file}")
        for before, after in result.renamed:
            c.print(f"renamed {before.file} → {after.file}")
        for before, after in result.recaptioned:
            c.print(f"re-captioned {after.file}: {before.caption!r} → {after.caption!r}")
        if not (result.added or result.removed or result.renamed or result.recaptioned):
            c.print("no differences")

    Output(json_mode=json).result(result.to_dict(), human)


@dataset_app.command("export")
def export(ref: DatasetRefArg,
           dest: Annotated[Path, typer.Argument(help="New (or empty) folder to write the images and .txt captions to.")],
           home: HomeOpt = None, json: JsonOpt = False) -> None:
    """Write a dataset version as a kohya/diffusers training folder (images + caption files)."""
    from loradex.registry.catalog.datasets import export_dataset

    result = export_dataset(open_catalog(home), ref, dest)
    Output(json_mode=json).result(result.to_dict(), lambda c: c.print(
        f"exported {result.ref} to {result.folder}: {result.images} image(s), {result.captions} caption(s), "
        f"{human_size(result.bytes)}"))


@dataset_app.command("rm")
def rm(ref: DatasetRefArg, force: ForceOpt = False, home: HomeOpt = None, json: JsonOpt = False) -> None:
    """Remove a dataset version (soft: its history stays; `loradex gc` frees images no live version names)."""
    from loradex.registry.catalog.datasets import remove_dataset_version

    removed = remove_dataset_version(open_catalog(home), ref, force=force)
    Output(json_mode=json).result(removed.to_dict(), lambda c: c.print(f"removed {removed.ref}"))


@alias_app.command("set")
def alias_set(ref: DatasetRefArg, alias: Annotated[str, typer.Argument(help="Alias name.")],
              reason: ReasonOpt = "", home: HomeOpt = None, json: JsonOpt = False) -> None:
    """Point ALIAS of the dataset at REF (recorded)."""
    from loradex.registry.catalog.datasets import set_dataset_alias

    result = set_dataset_alias(open_catalog(home), ref, alias, reason=reason)
    Output(json_mode=json).result(result, lambda c: c.print(
        f"dataset:{result['dataset']}@{alias} → {result['version']}"))


@alias_app.command("rm")
def alias_rm(name: DatasetNameArg, alias: Annotated[str, typer.Argument(help="Alias name.")],
             reason: ReasonOpt = "", home: HomeOpt = None, json: JsonOpt = False) -> None:
    """Remove an alias of a dataset (recorded)."""
    from loradex.registry.catalog.datasets import remove_dataset_alias

    remove_dataset_alias(open_catalog(home), name, alias, reason=reason)
    Output(json_mode=json).result({"dataset": name, "alias": alias, "removed": True},
                                  lambda c: c.print(f"removed alias {alias} of {name}"))


@alias_app.command("history")
def alias_history(name: DatasetNameArg, alias: Annotated[str, typer.Argument(help="Alias name.")],
                  home: HomeOpt = None, json: JsonOpt = False) -> None:
    """Every move of a dataset alias: when, by whom, from, to, why."""
    from loradex.registry.catalog.datasets import dataset_alias_history

    events = dataset_alias_history(open_catalog(home), name, alias)
    out = Output(json_mode=json)
    out.result([e.to_dict() for e in events], lambda c: out.table(
        ["at", "by", "action", "from", "to", "reason"],
        [[f"{e.at:%Y-%m-%d %H:%M:%S}", e.by, e.action, e.from_version or "-", e.to_version or "-", e.reason]
         for e in events], title=f"dataset:{name.removeprefix('dataset:')}@{alias}"))


from . import caption_cmds  # noqa: E402,F401 - registers dataset caption / captions on dataset_app
