"""dataset caption | captions: captioners over a folder or a dataset version; caption refinement.

Registered on ``dataset_cmds.dataset_app`` (imported there, so ``loradex dataset …`` loads them).
"""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from .dataset_cmds import DatasetRefArg, dataset_app
from .options import HomeOpt, JsonOpt, QuietOpt
from .output import Output, terminal_safe


@dataset_app.command("caption")
def caption(
    target: Annotated[str, typer.Argument(help="An image folder (captions written beside the images) or dataset:NAME[@VERSION] (a new version saved).")],
    captioner: Annotated[str, typer.Option("--captioner", help="blip, florence2, interrogate or tags.")],
    model: Annotated[str, typer.Option("--model", help="Caption/tagger model: a local folder or a Hub id already in the HF cache (nothing is downloaded).")],
    clip_model: Annotated[Optional[str], typer.Option("--clip-model", help="interrogate: the CLIP model that ranks the terms (folder or cached Hub id).")] = None,
    prefix: Annotated[str, typer.Option("--prefix", help='Put before every caption, e.g. "TRIGGER, ".')] = "",
    missing_only: Annotated[bool, typer.Option("--missing-only", help="Caption only images without a caption.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing captions.")] = False,
    max_words: Annotated[Optional[int], typer.Option("--max-words", help="Keep at most N words (tag captions: whole tags).")] = None,
    threshold: Annotated[float, typer.Option("--threshold", help="tags: keep tags at or above this probability.")] = 0.35,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Sentence captioners: generated tokens at most.")] = 40,
    beams: Annotated[int, typer.Option("--beams", help="Sentence captioners: beam width (no sampling).")] = 3,
    task: Annotated[str, typer.Option("--task", help="florence2: <CAPTION>, <DETAILED_CAPTION> or <MORE_DETAILED_CAPTION>.")] = "<MORE_DETAILED_CAPTION>",
    flavours: Annotated[int, typer.Option("--flavours", help="interrogate: flavour terms appended.")] = 3,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per model call.")] = 8,
    caption_ext: Annotated[str, typer.Option("--caption-ext", help="Folder: caption file extension.")] = ".txt",
    message: Annotated[str, typer.Option("--message", "-m", help="Dataset: the new version's message.")] = "",
    home: HomeOpt = None, json: JsonOpt = False, quiet: QuietOpt = False,
) -> None:
    """Write captions with a captioner; each records captioner, model sha256 and settings."""
    from loradex.registry.errors import UsageError
    from loradex.trainer.captioning import CaptionSettings
    from loradex.trainer.captioning.run import caption_target

    if missing_only and overwrite:
        raise UsageError("give --missing-only or --overwrite, not both")
    out = Output(json_mode=json, quiet=quiet)
    settings = CaptionSettings(prefix=prefix, max_words=max_words, threshold=threshold, max_new_tokens=max_new_tokens,
                               num_beams=beams, task=task, top_flavours=flavours, batch_size=batch_size)
    with out.progress("captioning") as progress:
        run = caption_target(target, captioner, model, clip_model=clip_model, settings=settings,
                             mode="missing-only" if missing_only else "overwrite" if overwrite else None,
                             caption_ext=caption_ext, message=message, home=home, progress=progress)

    def human(c) -> None:
        for file, text in run.captions.items():
            c.print(terminal_safe(f"{file}\t{text}"), markup=False, highlight=False)
        if run.unchanged:
            where = f"nothing changed: {run.target} already has these captions and records; no version saved"
        elif run.version is not None:
            where = f"saved as {run.version.ref}"
        else:
            where = f"written in {run.target}" if run.captions else "nothing to caption"
        c.print(f"{len(run.captions)} caption(s) by {run.captioner} ({run.record['model']}, "
                f"sha256 {run.record['model_sha256'][:12]}…), {len(run.kept)} kept; " + where)

    out.result(run.to_dict(), human)


@dataset_app.command("captions")
def captions(
    ref: DatasetRefArg,
    edit: Annotated[bool, typer.Option("--edit", help="Edit the captions in $EDITOR as one table (FILE<TAB>CAPTION).")] = False,
    replace: Annotated[Optional[List[str]], typer.Option("--replace", help="OLD=NEW in every caption (repeatable).")] = None,
    prepend: Annotated[Optional[str], typer.Option("--prepend", help="Put TEXT before every caption (not doubled).")] = None,
    remove_tag: Annotated[Optional[List[str]], typer.Option("--remove-tag", help="Drop a tag from comma-separated captions (repeatable).")] = None,
    message: Annotated[str, typer.Option("--message", "-m", help="The new version's message.")] = "",
    home: HomeOpt = None, json: JsonOpt = False,
) -> None:
    """List a dataset version's captions; --edit or a bulk operation saves a new version."""
    from loradex.registry.catalog.store import Catalog
    from loradex.registry.errors import UsageError
    from loradex.trainer.captioning.refine import bulk_edit, edit_in_editor, list_captions

    out = Output(json_mode=json)
    catalog = Catalog(home)
    bulk = bool(replace or prepend or remove_tag)
    if edit and bulk:
        raise UsageError("--edit cannot be combined with --replace/--prepend/--remove-tag")
    if not (edit or bulk):
        version, rows = list_captions(catalog, ref)
        out.result({"ref": version.ref, "captions": rows}, lambda c: c.print(
            "\n".join(terminal_safe(f"{r['file']}\t{r['caption'] or ''}\t{(r['source'] or {}).get('kind', '')}")
                      for r in rows), markup=False, highlight=False))
        return
    if edit:
        saved = edit_in_editor(catalog, ref, message=message)
    else:
        saved = bulk_edit(catalog, ref, replace=replace or [], prepend=prepend, remove_tags=remove_tag or [],
                          message=message)
    result = {"ref": ref, "saved": saved.ref if saved else None}
    out.result(result, lambda c: c.print(f"saved {saved.ref} ({saved.message})" if saved
                                         else "no caption changed; nothing saved", markup=False))
