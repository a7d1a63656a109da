"""``resolve`` (what a workflow / image needs) and ``export-workflow`` (a stack as a ComfyUI workflow)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import HomeOpt, JsonOpt, open_catalog
from .output import Output

STATUS_WORDS = {"in_catalog": "in catalog", "pulled": "pulled", "available": "available",
                "ambiguous": "ambiguous", "unknown": "unknown"}


def register(app: typer.Typer) -> None:
    @app.command("resolve")
    def resolve_cmd(
        file: Annotated[Path, typer.Argument(help="A ComfyUI workflow (UI or API JSON, or a PNG carrying it), an "
                                                  "A1111/Forge PNG or parameters text, Civitai generation data, "
                                                  "or a workflow template with properties.models.")],
        pull: Annotated[bool, typer.Option("--pull", help="Pull the missing models a remote has "
                                                          "(hash-verified, through `loradex pull`).")] = False,
        remote: Annotated[Optional[str], typer.Option("--remote", help="Ask only this recorded remote.")] = None,
        json: JsonOpt = False, home: HomeOpt = None,
    ) -> None:
        """List every model a workflow or image needs: the catalog version that matches, where it
        can be had, or unknown."""
        from loradex.registry.folders.model_needs import resolve_file

        out = Output(json_mode=json)
        with out.progress("pull", transfer=True) as progress:
            report = resolve_file(open_catalog(home), file, remote=remote, pull=pull, progress=progress)
        out.result(report.to_dict(), lambda c: _print(out, c, report))

    @app.command("export-workflow")
    def export_workflow_cmd(
        prompt: Annotated[str, typer.Argument(help='Prompt with <lora:NAME[@REF]:W> tags, e.g. '
                                                   '"a cat <lora:style@production:0.8>".')],
        base: Annotated[str, typer.Option("--base", help="The checkpoint: a catalog ref or a file name.")],
        output: Annotated[Path, typer.Option("-o", "--output", help="Workflow JSON to write.")],
        negative: Annotated[str, typer.Option("--negative", help="Negative prompt.")] = "",
        seed: Annotated[int, typer.Option("--seed")] = 0,
        steps: Annotated[int, typer.Option("--steps")] = 20,
        cfg: Annotated[float, typer.Option("--cfg")] = 7.0,
        width: Annotated[int, typer.Option("--width")] = 512,
        height: Annotated[int, typer.Option("--height")] = 512,
        scheduler: Annotated[Optional[str], typer.Option("--scheduler", help="loradex scheduler name "
                                                         "(euler, euler_a, dpm++2m…).")] = None,
        remote: Annotated[Optional[str], typer.Option("--remote", help="Mirror remote whose download URLs go "
                                                      "into properties.models (default: the only one).")] = None,
        json: JsonOpt = False, home: HomeOpt = None,
    ) -> None:
        """Write a ComfyUI workflow (LoraLoader chain, models with SHA256 and download URLs)."""
        from loradex.merge.workflow_export import workflow_for_prompt

        workflow = workflow_for_prompt(open_catalog(home), prompt, base=base, negative=negative, seed=seed,
                                       steps=steps, cfg=cfg, width=width, height=height, scheduler=scheduler,
                                       remote=remote, out=output)
        summary = {"output": str(output), "nodes": len(workflow["nodes"]), "models": workflow["models"]}
        Output(json_mode=json).result(summary, lambda c: c.print(
            f"wrote {output}: {len(workflow['nodes'])} nodes, {len(workflow['models'])} models"))


def _print(out: Output, console, report) -> None:
    rows = []
    for e in report.entries:
        need = e.need
        where = e.catalog_ref or ", ".join(s.get("ref") or s.get("url") or "" for s in e.sources) or "-"
        rows.append([need.kind, need.name or need.air or (f"civitai version {need.civitai_version_id}"
                                                          if need.civitai_version_id else "?"),
                     need.identified_by, STATUS_WORDS.get(e.status, e.status), where,
                     "; ".join(e.notes)])
    out.table(["kind", "name", "identified by", "status", "catalog / source", "notes"], rows,
              title=f"{report.file} ({report.format})")
