"""merge, resize, extract, bake, compat, recipe replay: thin wrappers over loradex.merge."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import HomeOpt, JsonOpt, RefArg, open_catalog
from .output import Output

recipe_app = typer.Typer(help="Recipes of merged / resized / extracted versions.", no_args_is_help=True)

DtypeOpt = Annotated[str, typer.Option("--dtype", help="Output tensor dtype: fp16, fp32 or bf16.")]
VersionOpt = Annotated[Optional[str], typer.Option("--version", help="Exact version X.Y.Z (default: next).")]
NonFiniteOpt = Annotated[bool, typer.Option("--allow-nonfinite", help="Keep NaN/Inf found in an input or the result "
                                            "(listed in the report) instead of refusing.")]


def _dynamic(text: Optional[str]):
    """``sv_fro:0.9`` → ("sv_fro", 0.9)."""
    from loradex.registry.errors import UsageError

    if text is None:
        return None
    rule, _, value = text.partition(":")
    try:
        return rule, float(value)
    except ValueError:
        raise UsageError(f"--dynamic {text!r}: expected RULE:P, e.g. sv_fro:0.9") from None


def _model_spec(spec: str, catalog) -> str:
    """``tiny-sd1`` / ``tiny-sdxl`` become a diffusers folder cached under the loradex home."""
    from loradex.trainer.tiny_pipeline import save_tiny_pipeline

    if spec.startswith("tiny-") and not Path(spec).exists():
        folder = Path(catalog.home) / "cache" / "tiny-models" / spec
        if not (folder / "model_index.json").is_file():
            save_tiny_pipeline(spec.removeprefix("tiny-"), folder, seed=0)
        return str(folder)
    return spec


def _version_line(console, version: dict, extra: str = "") -> None:
    console.print(f"{version['ref']}  sha256 {version['sha256'][:12]}…  {extra}".rstrip())
    for entry in (version.get("report") or {}).get("nonfinite", []):
        console.print(f"  kept NaN/Inf (--allow-nonfinite) in {entry}")


def register(app: typer.Typer) -> None:
    app.add_typer(recipe_app, name="recipe")

    @app.command()
    def merge(
        name: Annotated[str, typer.Option("--name", help="Name of the merged adapter.")],
        refs: Annotated[Optional[list[str]], typer.Argument(help="REF[:WEIGHT] … (weight defaults to 1).")] = None,
        method: Annotated[str, typer.Option("--method", help="concat|svd|ties|dare-linear|dare-ties|"
                                            "magnitude-prune|task-arithmetic")] = "concat",
        rank: Annotated[Optional[int], typer.Option("--rank", help="Target rank (svd, ties, dare…).")] = None,
        density: Annotated[Optional[float], typer.Option("--density", help="Kept fraction (ties/dare/prune).")] = None,
        clamp_quantile: Annotated[Optional[float], typer.Option("--clamp-quantile",
                                                                help="kohya-style clamp (svd).")] = None,
        block_weights: Annotated[Optional[list[str]], typer.Option(
            "--block-weights", help="LBW vector per input: comma-separated numbers (17/26 SD1, 12/20 SDXL) or a preset (NONE, ALL, INS, IND, INALL, MIDD, OUTD, OUTS, OUTALL, ALL0.5); repeat per input.")] = None,
        seed: Annotated[Optional[int], typer.Option("--seed", help="Seed (DARE).")] = None,
        version: VersionOpt = None, dtype: DtypeOpt = "fp16",
        recipe: Annotated[Optional[Path], typer.Option("--recipe", help="Replay a recipe file (.json/.toml) "
                                                        "under --name instead.")] = None,
        save_recipe: Annotated[Optional[Path], typer.Option("--save-recipe", help="Also write the result's "
                                                             "recipe to this .toml or .json file.")] = None,
        allow_nonfinite: NonFiniteOpt = False, home: HomeOpt = None, json: JsonOpt = False,
    ) -> None:
        """Merge adapter versions into a new version (exact concat, optimal svd, ties/dare…).
        A --recipe replay whose file equals a version --name already has registers nothing and
        says which version it is identical to."""
        from loradex.merge.catalog_merge import ReplayMatch, merge_versions, parse_weighted_ref
        from loradex.merge.recipes import version_recipe, write_recipe_file
        from loradex.registry.errors import UsageError

        catalog = open_catalog(home)
        out = Output(json_mode=json)
        if recipe is not None:
            from loradex.merge.recipes import recipe_from_file

            data = recipe_from_file(recipe)
            inputs, method, rank = data["inputs"], data["method"], data.get("rank")
            seed, dtype, options = data.get("seed"), data["output"]["dtype"], data.get("options") or {}
        else:
            if not refs:
                raise UsageError("give REF[:WEIGHT] inputs or --recipe FILE")
            inputs = [dict(zip(("ref", "weight"), parse_weighted_ref(r))) for r in refs]
            if block_weights:
                if len(block_weights) != len(inputs):
                    raise UsageError(f"{len(block_weights)} --block-weights for {len(inputs)} inputs")
                for entry, text in zip(inputs, block_weights):
                    entry["block_weights"] = text  # numbers or a preset name, resolved for the family
            options = {k: v for k, v in (("density", density), ("clamp_quantile", clamp_quantile)) if v is not None}
        if allow_nonfinite:
            options = {**options, "allow_nonfinite": True}
        with out.progress("merging") as progress:
            result = merge_versions(catalog, inputs, method, rank, name=name, version=version, seed=seed,
                                    dtype=dtype, options=options, progress=progress, replay=recipe is not None)
        data = result.to_dict()
        data["report"] = result.version.extra.get("recipe_report", {})
        data["report"] = {k: v for k, v in data["report"].items() if k != "modules"}
        if save_recipe is not None:
            data["recipe_file"] = str(write_recipe_file(version_recipe(catalog, result.version.ref), save_recipe))
        if isinstance(result, ReplayMatch):
            out.result(data, lambda c: c.print(f"identical to {data['ref']} (sha256 {data['sha256']}); "
                                               "nothing new registered"))
            return
        out.result(data, lambda c: _version_line(
            c, data, f"max relative residual {data['report'].get('max_relative_residual')}"))

    @app.command()
    def resize(
        ref: RefArg,
        rank: Annotated[Optional[int], typer.Option("--rank", help="New rank (cap for --dynamic).")] = None,
        dynamic: Annotated[Optional[str], typer.Option("--dynamic", help="sv_ratio:P | sv_cumulative:P | sv_fro:P")] = None,
        name: Annotated[Optional[str], typer.Option("--name", help="Register under another name.")] = None,
        version: VersionOpt = None, dtype: DtypeOpt = "fp16", allow_nonfinite: NonFiniteOpt = False,
        home: HomeOpt = None, json: JsonOpt = False,
    ) -> None:
        """Re-rank a version keeping its scale (α/r); a new version with resized_from lineage."""
        from loradex.merge.catalog_merge import resize_version

        out = Output(json_mode=json)
        with out.progress("resizing") as progress:
            result = resize_version(open_catalog(home), ref, rank=rank, dynamic=_dynamic(dynamic), name=name,
                                    version=version, dtype=dtype, progress=progress,
                                    allow_nonfinite=allow_nonfinite)
        data = result.to_dict()
        data["report"] = result.version.extra.get("recipe_report", {})
        out.result(data, lambda c: _version_line(c, data, f"total residual {data['report'].get('total_residual')}"))

    @app.command()
    def extract(
        base: Annotated[str, typer.Option("--base", help="Base: diffusers folder, .safetensors, checkpoint ref, tiny-sd1.")],
        tuned: Annotated[str, typer.Option("--tuned", help="Fine-tuned model, same forms as --base.")],
        rank: Annotated[int, typer.Option("--rank", help="LoRA rank.")],
        name: Annotated[str, typer.Option("--name", help="Name of the extracted adapter.")],
        conv_rank: Annotated[Optional[int], typer.Option("--conv-rank", help="Also extract k×k convs at this rank.")] = None,
        min_diff: Annotated[Optional[float], typer.Option("--min-diff", help="Skip modules with max |ΔW| ≤ this.")] = None,
        version: VersionOpt = None, dtype: DtypeOpt = "fp16", home: HomeOpt = None, json: JsonOpt = False,
    ) -> None:
        """Extract a LoRA from (tuned − base); skipped modules are listed, never dropped silently."""
        from loradex.merge.extract import extract_version

        catalog = open_catalog(home)
        out = Output(json_mode=json)
        with out.progress("extracting") as progress:
            result = extract_version(catalog, _model_spec(base, catalog), _model_spec(tuned, catalog), rank,
                                     name=name, conv_rank=conv_rank, min_diff=min_diff, version=version,
                                     dtype=dtype, progress=progress)
        data = result.to_dict()
        report = result.version.extra.get("recipe_report", {})
        data["report"] = {k: v for k, v in report.items() if k != "modules"}

        def human(c):
            _version_line(c, data, f"{len(report.get('modules', {}))} modules")
            for module, why in report.get("skipped", {}).items():
                c.print(f"  skipped {module}: {why}")

        out.result(data, human)

    @app.command()
    def bake(
        base: Annotated[str, typer.Argument(help="Base: diffusers folder, .safetensors, checkpoint ref, tiny-sd1.")],
        refs: Annotated[list[str], typer.Argument(help="REF[:WEIGHT] … to fuse.")],
        output: Annotated[Path, typer.Option("-o", "--output", help="Output folder or file.")],
        format: Annotated[Optional[str], typer.Option("--format", help="diffusers | single-file (default: the "
                                                      "base's own layout; single-file: sd1/sdxl).")] = None,
        name: Annotated[Optional[str], typer.Option("--name", help="Register the single-file result as a checkpoint.")] = None,
        allow_missing: Annotated[bool, typer.Option("--allow-missing", help="Bake even if the base lacks "
                                                    "some adapter modules (listed).")] = False,
        config: Annotated[Optional[Path], typer.Option("--config", help="Single file → --format diffusers: a diffusers "
                                                       "folder of the same family, copied with its weights replaced.")] = None,
        version: VersionOpt = None, home: HomeOpt = None, json: JsonOpt = False,
    ) -> None:
        """Fuse adapters into a base model and write a checkpoint."""
        from loradex.merge.catalog_merge import parse_weighted_ref
        from loradex.merge.bake import bake as bake_fn

        catalog = open_catalog(home)
        out = Output(json_mode=json)
        with out.progress("baking") as progress:
            result = bake_fn(catalog, _model_spec(base, catalog), [parse_weighted_ref(r) for r in refs], output,
                             format=format, name=name, version=version, allow_missing=allow_missing,
                             config=config, progress=progress)
        out.result(result, lambda c: c.print(f"{result['out']} ({result['format']}), {result['fused']} module updates, "
                                             f"sha256 {result['sha256'][:12]}…"))

    @app.command()
    def compat(
        refs: Annotated[list[str], typer.Argument(help="REF[:WEIGHT] … to check together.")],
        home: HomeOpt = None, json: JsonOpt = False,
    ) -> None:
        """Base family check and per-block cosine similarity of ΔW between stacked adapters."""
        from loradex.merge.catalog_merge import compat as compat_fn

        table = compat_fn(open_catalog(home), refs)
        out = Output(json_mode=json)

        def human(c):
            c.print(f"base family: {table['family'] or 'unknown'}")
            out.table(["a", "b", "block", "modules", "cosine"],
                      [[p["a"], p["b"], p["block"], p["modules"], f"{p['cosine']:+.3f}"] for p in table["pairs"]])
            for warning in table["warnings"]:
                out.warn(warning)

        out.result(table, human)


@recipe_app.command("replay")
def recipe_replay(ref: RefArg, home: HomeOpt = None, json: JsonOpt = False) -> None:
    """Run the recipe of REF again and check the result has the same sha256 (exit 1 if not)."""
    from loradex.merge.recipes import replay_version

    out = Output(json_mode=json)
    with out.progress("replaying") as progress:
        result = replay_version(open_catalog(home), ref, progress=progress)
    out.result(result, lambda c: c.print(
        f"{result['ref']}: replayed sha256 {result['replayed_sha256']} — "
        + ("matches" if result["match"] else f"DIFFERS from stored {result['sha256']}")))
    if not result["match"]:
        raise typer.Exit(1)


@recipe_app.command("export")
def recipe_export(ref: RefArg, output: Annotated[Path, typer.Option("-o", "--output", help="FILE.toml or FILE.json")],
                  home: HomeOpt = None, json: JsonOpt = False) -> None:
    """Write REF's stored recipe to a file that `merge --recipe FILE --name N` replays."""
    from loradex.merge.recipes import version_recipe, write_recipe_file

    catalog = open_catalog(home)
    version = catalog.resolve(ref)
    written = write_recipe_file(version_recipe(catalog, version.ref), output)
    data = {"ref": version.ref, "file": str(written)}
    Output(json_mode=json).result(data, lambda c: c.print(f"{version.ref}: recipe written to {written}"))


@recipe_app.command("show")
def recipe_show(ref: RefArg, home: HomeOpt = None, json: JsonOpt = False) -> None:
    """Print the recipe stored with REF."""
    from loradex.merge.recipes import version_recipe

    recipe = version_recipe(open_catalog(home), ref)
    Output(json_mode=json).result(recipe, lambda c: c.print_json(data=recipe))
