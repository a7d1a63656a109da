"""Refining a dataset version's captions by hand: the caption table in ``$EDITOR`` and the bulk
operations, each saved as a new version (``registry.catalog.dataset_captions``)."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path

from loradex.registry.errors import UsageError

EDIT_TIMEOUT_S = 24 * 3600  # a person edits; the limit only ends a forgotten session


def list_captions(catalog, ref: str) -> tuple[object, list[dict]]:
    """(version, rows ``{file, caption, source}``) of a dataset version, in file order."""
    from loradex.registry.catalog.datasets import get_dataset_version

    version = get_dataset_version(catalog, ref)
    return version, [{"file": i.file, "caption": i.caption, "source": i.caption_source} for i in version.images]


def editor_command(environ=os.environ) -> list[str]:
    """``$VISUAL`` or ``$EDITOR`` (a command line, split like a shell would), else ``vi``."""
    text = environ.get("VISUAL") or environ.get("EDITOR") or "vi"
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"$EDITOR {text!r} cannot be parsed: {exc}") from None
    if not argv:
        raise UsageError("$EDITOR is empty", hint="export EDITOR=nano (or vi, code --wait, …)")
    return argv


def edit_in_editor(catalog, ref: str, *, editor: list[str] | None = None, message: str = ""):
    """Open the caption table of ``ref`` in ``editor``; save what comes back as a new version.
    Answers the new version, or None when no caption changed."""
    from loradex.registry.catalog.dataset_captions import (current_captions, format_caption_table,
                                                           parse_caption_table, save_caption_edit)
    from loradex.registry.catalog.datasets import get_dataset_version

    version = get_dataset_version(catalog, ref)
    before = current_captions(version)
    argv = editor or editor_command()
    with tempfile.TemporaryDirectory(prefix="loradex-captions-") as work:
        table = Path(work) / f"{version.dataset}-{version.version}.captions.tsv"
        table.write_text(format_caption_table(before), encoding="utf-8")
        try:
            done = subprocess.run([*argv, str(table)], timeout=EDIT_TIMEOUT_S)
        except FileNotFoundError:
            raise UsageError(f"editor {argv[0]!r} not found", hint="set $EDITOR to an installed editor") from None
        if done.returncode != 0:
            raise UsageError(f"editor {argv[0]!r} exited with status {done.returncode}; nothing saved")
        edited = parse_caption_table(table.read_bytes(), set(before), f"edited caption table of {version.ref}")
    if all(edited[f] == before[f] for f in edited):
        return None
    return save_caption_edit(catalog, version.ref, edited, via="editor", message=message)


def bulk_edit(catalog, ref: str, *, replace: list[str] = (), prepend: str | None = None,
              remove_tags: list[str] = (), message: str = ""):
    """Apply the bulk operations to every caption of ``ref``; the new version, or None when no
    caption changed."""
    from loradex.registry.catalog.dataset_captions import (apply_bulk, bulk_edits, current_captions,
                                                           save_caption_edit)
    from loradex.registry.catalog.datasets import get_dataset_version

    edits = bulk_edits(replace=list(replace), prepend=prepend, remove_tags=list(remove_tags))
    if not edits:
        raise UsageError("no bulk operation given", hint="--replace OLD=NEW, --prepend TEXT or --remove-tag TAG")
    version = get_dataset_version(catalog, ref)
    before = current_captions(version)
    after = apply_bulk(before, edits)
    if after == before:
        return None
    return save_caption_edit(catalog, version.ref, after, via="; ".join(e.via for e in edits), message=message)
