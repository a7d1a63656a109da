"""generate, render, records list|show|import, eval, card, review, gallery, alias policy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import HomeOpt, JsonOpt, RefArg, open_catalog
from .output import Output, terminal_safe

records_app = typer.Typer(help="Prompt records: what produced each image.", no_args_is_help=True)

BaseOpt = Annotated[str, typer.Option("--base", help="Base model: tiny-sd1/-sdxl/-flux/-sd3, a diffusers folder, a "
                                                     "checkpoint file, a cached hub id or a catalog ref.")]
OptionalBaseOpt = Annotated[Optional[str], typer.Option(
    "--base", help="Base model (default: the base the version was used with before: its newest prompt "
                   "record, else the base it was trained on).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Noise seed.")]
StepsOpt = Annotated[Optional[int], typer.Option(
    "--steps", help="Sampling steps (default: the base family's: 20 for SD 1.x/2.x/XL, 28 for Flux.1 and SD3).")]
CfgOpt = Annotated[Optional[float], typer.Option(
    "--cfg", help="Guidance scale: classifier-free, or Flux.1's distilled guidance (default: the base "
                  "family's: 7, 3.5 for Flux.1).")]
MaxSeqOpt = Annotated[Optional[int], typer.Option(
    "--max-sequence-length", help="T5 prompt length for Flux.1 / SD3 (default 512 / 256).")]
ShiftOpt = Annotated[Optional[float], typer.Option(
    "--shift", help="Flow-matching timestep shift for SD3 (default: the base scheduler's).")]
SizeOpt = Annotated[str, typer.Option("--size", help="WIDTHxHEIGHT.")]
NegOpt = Annotated[str, typer.Option("--negative", help="Negative prompt.")]
SchedOpt = Annotated[Optional[str], typer.Option("--scheduler", help="ddim, euler, euler_a, dpm++2m, …")]


def _size(text: str) -> tuple[int, int]:
    from loradex.registry.errors import UsageError

    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise UsageError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 512x512")
    return int(w), int(h)


def register(app: typer.Typer) -> None:
    app.add_typer(records_app, name="records")
    from .alias_cmds import alias_app

    alias_app.command("policy")(alias_policy)

    @app.command()
    def generate(
        prompt: Annotated[str, typer.Argument(help='Prompt; stack adapters with <lora:NAME[@REF]:W>.')],
        base: BaseOpt, out: Annotated[Path, typer.Option("-o", "--output", help="PNG to write.")],
        negative: NegOpt = "", seed: SeedOpt = 0, steps: StepsOpt = None, cfg: CfgOpt = None,
        size: SizeOpt = "512x512", scheduler: SchedOpt = None,
        max_sequence_length: MaxSeqOpt = None, shift: ShiftOpt = None,
        allow_partial: Annotated[bool, typer.Option("--allow-partial", help="Use adapters even if some "
                                                    "modules do not match the base.")] = False,
        reference: Annotated[list[Path], typer.Option("--reference", help="Reference image the record names "
                                                      "(stored as a blob; repeatable).")] = [],
        notes: Annotated[str, typer.Option("--notes", help="Free-text notes stored in the record.")] = "",
        save_workflow: Annotated[Optional[Path], typer.Option("--save-workflow", help="Also write the ComfyUI "
                                                              "workflow (JSON) that re-makes this image.")] = None,
        home: HomeOpt = None, json: JsonOpt = False,
    ) -> None:
        """Render a prompt with stacked adapters; writes the PNG and a prompt record."""
        from loradex.trainer.generate import GenerateSettings, generate as run

        width, height = _size(size)
        fields = {k: v for k, v in (("max_sequence_length", max_sequence_length), ("shift", shift))
                  if v is not None}
        settings = GenerateSettings(negative, seed, steps, cfg, width, height, scheduler, fields)
        output = Output(json_mode=json)
        with output.progress("rendering") as progress:
            result = run(open_catalog(home), prompt, base=base, out=out, allow_partial=allow_partial,
                         progress=progress, references=reference, notes=notes, settings=settings,
                         save_workflow=save_workflow)
        rec = result.record.record
        from loradex.trainer.compat_check import report_lines

        for line in report_lines(rec.get("compat") or {}):  # stderr, one line each, also with --json
            typer.echo(terminal_safe(line), err=True)
        output.result({**result.record.to_dict(), "output": str(out)}, lambda c: c.print(
            f"{out}  record {rec['id']}  stack: "
            + (", ".join(f"{e['ref']} te={e['te_weight']:g} unet={e['unet_weight']:g}" for e in rec["stack"])
               or "none")))

    @app.command()
    def render(
        record_id: Annotated[str, typer.Argument(help="Prompt record id (or a unique prefix).")],
        out: Annotated[Optional[Path], typer.Option("-o", "--output", help="PNG to write.")] = None,
        check: Annotated[bool, typer.Option("--check", help="Exit 1 unless the pixels are identical.")] = False,
        home: HomeOpt = None, json: JsonOpt = False,
    ) -> None:
        """Re-run a prompt record; reports identical or the max abs pixel difference."""
        from loradex.trainer.generate import render_record

        report = render_record(open_catalog(home), record_id, out=out)

        def human(c):
            c.print(f"record {report.record_id}: " + ("identical" if report.identical else
                                                      f"differs (max abs diff {report.max_abs_diff}/255)"))
            for name, d in report.differences.items():
                c.print(f"  {name}: recorded {d['recorded']}, now {d['now']}")
            if report.output:
                c.print(f"  wrote {report.output}")

        Output(json_mode=json).result(report.to_dict(), human)
        if check and not report.identical:
            raise typer.Exit(1)

    @app.command("eval")
    def eval_cmd(
        ref: RefArg,
        prompts: Annotated[Path, typer.Option("--prompts", help="Prompt suite: one prompt per line.")],
        base: OptionalBaseOpt = None,
        seeds: Annotated[int, typer.Option("--seeds", help="Seeds per prompt (0..N-1).")] = 4,
        references: Annotated[Optional[Path], typer.Option("--references", help="Folder of reference images.")] = None,
        train_dir: Annotated[Optional[Path], typer.Option("--train-dir", help="Folder of training images.")] = None,
        embedder: Annotated[str, typer.Option("--embedder", help="clip[:PATH_OR_ID] or tiny-clip.")] = "clip",
        steps: StepsOpt = None, cfg: CfgOpt = None, size: SizeOpt = "512x512", negative: NegOpt = "",
        weight: Annotated[float, typer.Option("--weight", help="Adapter weight.")] = 1.0,
        minimum: Annotated[list[str], typer.Option("--min", help="METRIC=VALUE lower bound.")] = [],
        maximum: Annotated[list[str], typer.Option("--max", help="METRIC=VALUE upper bound.")] = [],
        near_duplicate: Annotated[float, typer.Option("--near-duplicate", help="Cosine counted as a copy.")] = 0.95,
        drift_tolerance: Annotated[float, typer.Option("--drift-tolerance", help="Allowed clip_t drop.")] = 0.02,
        home: HomeOpt = None, json: JsonOpt = False,
    ) -> None:
        """Render a prompt suite with and without the adapter; store an evaluation card."""
        from loradex.trainer.evaluate import EvalOptions, evaluate, parse_thresholds

        catalog = open_catalog(home)
        base = base or _default_base(catalog, [ref])
        width, height = _size(size)
        options = EvalOptions(base=base, seeds=list(range(seeds)), steps=steps, cfg=cfg, width=width,
                              height=height, weight=weight, negative=negative,
                              references=str(references) if references else None,
                              train_dir=str(train_dir) if train_dir else None, embedder=embedder,
                              thresholds=parse_thresholds(minimum, maximum), near_duplicate=near_duplicate,
                              drift_tolerance=drift_tolerance)
        output = Output(json_mode=json)
        with output.progress("evaluating") as progress:
            card = evaluate(catalog, ref, prompts, options, progress=progress)
        output.result(card.to_dict(), lambda c: c.print(_card_summary(card)))

    @app.command()
    def card(ref: RefArg,
             markdown: Annotated[bool, typer.Option("--markdown", help="Print the card as Markdown.")] = False,
             home: HomeOpt = None, json: JsonOpt = False) -> None:
        """Show a version's newest evaluation card."""
        from loradex.registry.catalog.records import card_markdown, latest_card

        found = latest_card(open_catalog(home), ref)
        if markdown and not json:
            typer.echo(terminal_safe(card_markdown(found.card)), nl=False)
            return
        Output(json_mode=json).result(found.to_dict(), lambda c: c.print(_card_summary(found)))

    @app.command()
    def review(
        ref: RefArg,
        record: Annotated[Optional[str], typer.Option("--record", help="Sample (record id) the --verdict is about.")] = None,
        verdict: Annotated[list[str], typer.Option("--verdict", help="good|bad|neutral with --record, or "
                                                   "ID=VERDICT[:REASON] (repeatable).")] = [],
        reason: Annotated[str, typer.Option("--reason", help="Why (verdict or choice).")] = "",
        choose: Annotated[Optional[str], typer.Option("--choose", help="Candidate record chosen …")] = None,
        over: Annotated[list[str], typer.Option("--over", help="… over this candidate (repeatable).")] = [],
        check: Annotated[list[str], typer.Option("--check", help="NAME=pass|fail|not-checked: set a failure "
                                                 "check by hand (repeatable).")] = [],
        note: Annotated[str, typer.Option("--note", help="Note stored with the --check values.")] = "",
        reviewer: Annotated[Optional[str], typer.Option("--reviewer", help="Who reviews (default: you).")] = None,
        interactive: Annotated[bool, typer.Option("--interactive", help="Ask accept/reject/skip and a reason "
                                                  "for each sample (the default with no options on a terminal).")] = False,
        home: HomeOpt = None, json: JsonOpt = False,
    ) -> None:
        """Human verdicts, chosen/rejected candidates and failure checks: a new card revision."""
        import sys

        from loradex.registry.paths import current_user
        from loradex.registry.catalog.records import latest_card
        from loradex.registry.catalog.review import apply_review, build_review
        from loradex.trainer.review import interactive_review, review_mode, review_samples

        flags = bool(record or verdict or choose or over or check or note or reason)
        catalog = open_catalog(home)
        if review_mode(flags_given=flags, interactive=interactive, stdin_is_tty=sys.stdin.isatty()) == "flags":
            changes = build_review(record=record, verdicts=verdict, reason=reason, choose=choose, over=over,
                                   checks=check, note=note)
        else:
            samples = review_samples(catalog, latest_card(catalog, ref).card, reviewer or current_user())
            changes = interactive_review(samples, say=lambda line: typer.echo(terminal_safe(line), err=True),
                                         ask=lambda q, d: typer.prompt(q, default=d, show_default=False, err=True))
            if changes.empty():
                Output(json_mode=json).result({"stored": False}, lambda c: c.print("no verdicts given; nothing stored"))
                return
        found = apply_review(catalog, ref, changes, reviewer=reviewer)
        Output(json_mode=json).result(found.to_dict(), lambda c: c.print(_card_summary(found)))

    @app.command()
    def gallery(
        refs: Annotated[list[str], typer.Argument(help="Versions to compare (columns).")],
        out: Annotated[Path, typer.Option("-o", "--output", help="Sheet PNG to write.")],
        prompts: Annotated[Optional[Path], typer.Option("--prompts", help="Prompt suite (rows).")] = None,
        base: OptionalBaseOpt = None,
        seeds: Annotated[int, typer.Option("--seeds", help="Seeds per prompt.")] = 1,
        steps: StepsOpt = None, cfg: CfgOpt = None, size: SizeOpt = "512x512",
        weight: Annotated[float, typer.Option("--weight", help="Adapter weight.")] = 1.0,
        home: HomeOpt = None, json: JsonOpt = False,
    ) -> None:
        """A labelled grid: rows = prompts × seeds, columns = versions (or one version's records)."""
        from loradex.registry.errors import UsageError
        from loradex.registry.catalog.records import list_records
        from loradex.trainer.evaluate import load_suite
        from loradex.trainer.gallery import records_gallery, version_gallery

        catalog = open_catalog(home)
        output = Output(json_mode=json)
        if prompts is not None:
            base = base or _default_base(catalog, refs)
            width, height = _size(size)
            with output.progress("rendering") as progress:
                sheet = version_gallery(catalog, refs, load_suite(prompts)[0], base=base, seeds=list(range(seeds)),
                                        steps=steps, cfg=cfg, width=width, height=height, weight=weight,
                                        progress=progress)
        elif len(refs) == 1:
            sheet = records_gallery(catalog, list_records(catalog, refs[0]))
        else:
            raise UsageError("comparing versions needs --prompts SUITE")
        sheet.save(out)
        output.result({"output": str(out), **sheet.layout()},
                      lambda c: c.print(f"{out}: {len(sheet.row_labels)} rows × {len(sheet.col_labels)} columns"))


@records_app.command("list")
def records_list(ref: Annotated[Optional[str], typer.Argument(help="Only records using this version.")] = None,
                 limit: Annotated[int, typer.Option("--limit", help="Newest N.")] = 50,
                 home: HomeOpt = None, json: JsonOpt = False) -> None:
    """Prompt records, newest first."""
    from loradex.registry.catalog.records import list_records

    rows = list_records(open_catalog(home), ref, limit=limit)
    out = Output(json_mode=json)
    out.result([r.to_dict() for r in rows], lambda c: out.table(
        ["id", "created", "source", "seed", "stack", "prompt"],
        [[r.id, r.created_at.strftime("%Y-%m-%d %H:%M:%S"), r.record["source"], r.record["seed"],
          ", ".join(e.get("ref") or e["requested"] for e in r.record["stack"]), r.record["clean_prompt"][:50]]
         for r in rows]))


@records_app.command("show")
def records_show(record_id: Annotated[str, typer.Argument(help="Record id (or unique prefix).")],
                 home: HomeOpt = None, json: JsonOpt = False) -> None:
    """One prompt record in full."""
    import json as _json

    from loradex.registry.catalog.records import get_record

    rec = get_record(open_catalog(home), record_id)
    Output(json_mode=json).result(rec.to_dict(), lambda c: c.print(_json.dumps(rec.to_dict(), indent=2)))


@records_app.command("import")
def records_import(path: Annotated[Path, typer.Argument(help="PNG saved by A1111, ComfyUI or loradex.")],
                   home: HomeOpt = None, json: JsonOpt = False) -> None:
    """Read a PNG's embedded parameters into a prompt record."""
    from loradex.registry.catalog.records import import_png

    rec = import_png(open_catalog(home), path)
    Output(json_mode=json).result(rec.to_dict(), lambda c: c.print(
        f"record {rec.id} ({rec.record['source']}): seed {rec.record['seed']}, "
        f"{len(rec.record['stack'])} adapter(s), {len(rec.versions)} resolved in the catalog"))


def alias_policy(name: Annotated[str, typer.Argument(help="Adapter name.")],
                 alias: Annotated[str, typer.Argument(help="Alias to gate, e.g. production.")],
                 require: Annotated[list[str], typer.Option("--require", help="eval.pass (default).")] = [],
                 minimum: Annotated[list[str], typer.Option("--min", help="METRIC=VALUE lower bound.")] = [],
                 maximum: Annotated[list[str], typer.Option("--max", help="METRIC=VALUE upper bound.")] = [],
                 no_pass: Annotated[bool, typer.Option("--no-require-pass", help="Only check thresholds.")] = False,
                 remove: Annotated[bool, typer.Option("--remove", help="Remove the policy.")] = False,
                 home: HomeOpt = None, json: JsonOpt = False) -> None:
    """Gate an alias: versions need a passing eval card (and thresholds) to take it."""
    from loradex.registry.errors import UsageError
    from loradex.registry.catalog.records import remove_alias_policy, set_alias_policy
    from loradex.trainer.evaluate import parse_thresholds

    catalog = open_catalog(home)
    if remove:
        remove_alias_policy(catalog, name, alias)
        Output(json_mode=json).result({"removed": True}, lambda c: c.print(f"{name}@{alias}: policy removed"))
        return
    unknown = [r for r in require if r != "eval.pass"]
    if unknown:
        raise UsageError(f"unknown --require {unknown[0]!r}; supported: eval.pass")
    limits = parse_thresholds(minimum, maximum)
    policy = set_alias_policy(catalog, name, alias, require_pass=not no_pass,
                              minimums={k: v["min"] for k, v in limits.items() if "min" in v},
                              maximums={k: v["max"] for k, v in limits.items() if "max" in v})
    Output(json_mode=json).result(policy.to_dict(), lambda c: c.print(
        f"{name}@{alias} gated: " + ", ".join(
            (["eval card passes"] if policy.require_pass else [])
            + [f"{k} ≥ {v:g}" for k, v in policy.minimums.items()]
            + [f"{k} ≤ {v:g}" for k, v in policy.maximums.items()])))


def _default_base(catalog, refs: list[str]) -> str:
    from loradex.trainer.evaluate import default_base

    base, why = default_base(catalog, refs)
    typer.echo(terminal_safe(f"base: {base} (from {why})"), err=True)
    return base


def _card_summary(card) -> str:
    c = card.card
    lines = [f"{card.ref}: {'PASS' if card.passed else 'FAIL'} (card #{card.id}, {len(c['samples'])} samples, "
             f"embedder {c['embedder']['model']})"]
    for name, m in c["metrics"].items():
        lines.append(f"  {name:28s} " + (f"{m['value']:.4f}" if m["value"] is not None else f"— {m.get('note', '')}"))
    for name, chk in c["failure_checks"].items():
        by = f" (set by {chk.get('by', '?')})" if chk.get("source") == "human" else ""
        lines.append(f"  check {name:22s} {chk['status']}{by}: {chk['note']}")
    lines += [f"  reason: {r}" for r in c["reasons"]]
    from loradex.registry.catalog.records import training_data_lines
    from loradex.registry.catalog.review import review_lines

    data = training_data_lines(c)
    lines += [f"  {data[0].lower()}", *(f"  data warning: {w}" for w in data[1:])] if data else []

    return "\n".join(lines + review_lines(c))
