"""Caption refinement for dataset versions: the editable caption table, bulk operations, and
saving the result as a new dataset version.

Captions are refined by hand after a captioner wrote them (the seeds' workflow: an
interrogator's first pass, then a person's edit). Every edit — ``dataset captions REF --edit``
(the table in ``$EDITOR``), the bulk operations and the web captions page — goes through
``save_caption_edit``: the changed captions become a NEW version of the same dataset (versions are
immutable), each changed image's ``caption_source`` says ``{"kind": "manual", "via": …, "by":
…}`` and keeps the source it replaced under ``"refined_from"`` (so a captioner's record stays
visible under the person's edit).

The table (``format_caption_table`` / ``parse_caption_table``) is one line per image,
``file<TAB>caption``; lines starting with ``#`` are comments, blank lines are ignored. What comes
back from an editor is outside data: size and line caps, every name must be an image of the
version, no name twice, no control characters; a line with an empty caption removes the caption.
An image left out of the table keeps its caption.

A caption run over a FOLDER records itself in ``.loradex-captions.json`` beside the images
(``CAPTION_RECORDS_FILE``: per image the caption file written, the caption text and the
captioner record). ``dataset add DIR`` reads it (``folder_caption_sources``): a caption file that
still holds the text the captioner wrote keeps the captioner record as its ``caption_source``; one
changed since (edited by hand) is recorded as ``{"kind": "manual", "via": "caption file edited
after captioning", "refined_from": <the captioner record>}``. The file is outside data: size and
depth caps, a declared schema, its names only looked up among the folder's images.

Everything here is plain text and catalog plumbing (no torch): the web app uses it too.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from ..errors import InvalidFile, UntrustedData, UsageError
from .dataset_check import normal_caption

TABLE_HEADER = ("# loradex caption table: one image per line, FILE<TAB>CAPTION.\n"
                "# Edit the captions; an empty caption removes it; a line left out keeps its caption;\n"
                "# file names cannot be changed here. Lines starting with # are ignored.\n")
MAX_TABLE_BYTES = 16 << 20   # 50,000 captions of a few hundred characters fit many times
MAX_TABLE_LINES = 200_000
MAX_CAPTION_CHARS = 20_000   # the manifest schema's cap on one caption


# --- pure caption operations -----------------------------------------------------------------

def split_tags(caption: str) -> list[str]:
    """A comma-separated tag caption as its tags (empty ones dropped)."""
    return [t.strip() for t in caption.split(",") if t.strip()]


def limit_words(caption: str, max_words: int | None, *, tags: bool = False) -> str:
    """At most ``max_words`` words. A tag caption (``tags``) keeps whole tags: the first tags whose
    words fit, so no tag is cut in half (only a first tag longer than the limit is cut)."""
    if max_words is None:
        return caption
    if max_words < 1:
        raise UsageError(f"--max-words must be at least 1, got {max_words}")
    if not tags:
        return " ".join(caption.split()[:max_words])
    kept, used = [], 0
    for tag in split_tags(caption):
        words = len(tag.split())
        if not kept and words > max_words:
            return " ".join(tag.split()[:max_words])
        if used + words > max_words:
            break
        kept.append(tag)
        used += words
    return ", ".join(kept)


def with_prefix(caption: str, prefix: str) -> str:
    """``prefix`` + caption (a trigger such as ``"shp, "``), not doubled when already there."""
    if not prefix:
        return caption
    alone = prefix.strip().rstrip(",").strip()
    if not caption:  # an image without a caption gets the trigger alone
        return alone
    if caption == alone or caption.startswith(prefix) or caption.startswith(prefix.rstrip()):
        return caption
    return normal_caption(prefix + caption) if prefix.endswith(" ") else prefix + caption


def replace_text(caption: str, old: str, new: str) -> str:
    if not old:
        raise UsageError("--replace needs OLD=NEW with a non-empty OLD")
    return normal_caption(caption.replace(old, new))


def remove_tag(caption: str, tag: str) -> str:
    """Drop every tag equal to ``tag`` (case and surrounding spaces ignored) from a comma-separated
    caption; the rest keep their order, joined by ", "."""
    wanted = tag.strip().casefold()
    if not wanted:
        raise UsageError("--remove-tag needs a tag")
    return ", ".join(t for t in split_tags(caption) if t.casefold() != wanted)


@dataclass(frozen=True)
class BulkEdit:
    """One bulk operation: its name (recorded as ``via``) and the function applied to each caption."""

    via: str
    apply: Callable[[str], str]


def bulk_edits(*, replace: list[str] = (), prepend: str | None = None, remove_tags: list[str] = ()) -> list[BulkEdit]:
    """The bulk operations in the order they run: replacements, tag removals, then the prefix."""
    out = []
    for spec in replace or ():
        old, sep, new = spec.partition("=")
        if not sep or not old:
            raise UsageError(f"--replace {spec!r}: give OLD=NEW")
        out.append(BulkEdit(f"replace {old!r} with {new!r}", lambda c, o=old, n=new: replace_text(c, o, n)))
    for tag in remove_tags or ():
        if not tag.strip():
            raise UsageError("--remove-tag needs a tag")
        out.append(BulkEdit(f"remove tag {tag.strip()!r}", lambda c, t=tag: remove_tag(c, t)))
    if prepend:
        out.append(BulkEdit(f"prepend {prepend!r}", lambda c, p=prepend: with_prefix(c, p)))
    return out


def apply_bulk(captions: dict[str, str | None], edits: list[BulkEdit]) -> dict[str, str | None]:
    """New captions after ``edits`` (an image without a caption gets only a prefix)."""
    out = {}
    for file, caption in captions.items():
        text = caption or ""
        for edit in edits:
            text = edit.apply(text)
        out[file] = text or None
    return out


# --- the editable table ----------------------------------------------------------------------

def format_caption_table(captions: dict[str, str | None]) -> str:
    """The table an editor shows: header comment, then ``file<TAB>caption`` per image in file order."""
    lines = [TABLE_HEADER]
    for file in sorted(captions):
        lines.append(f"{file}\t{captions[file] or ''}\n")
    return "".join(lines)


def _bad_chars(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") and ch != "\t" for ch in text)


def parse_caption_table(text: str | bytes, known: set[str] | list[str], source: str) -> dict[str, str | None]:
    """The captions an edited table gives (file → caption, None = removed), checked: see the
    module docstring. ``source`` names the table in errors."""
    if isinstance(text, bytes):
        if len(text) > MAX_TABLE_BYTES:
            raise InvalidFile(source, f"is {len(text)} bytes; a caption table is at most {MAX_TABLE_BYTES}")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidFile(source, f"is not UTF-8 text (byte {exc.start})", hint="save the table as UTF-8") from None
    if len(text.encode("utf-8")) > MAX_TABLE_BYTES:
        raise InvalidFile(source, f"is larger than {MAX_TABLE_BYTES} bytes")
    lines = text.replace("\r\n", "\n").split("\n")
    if len(lines) > MAX_TABLE_LINES:
        raise InvalidFile(source, f"has {len(lines)} lines; at most {MAX_TABLE_LINES}")
    known = set(known)
    out: dict[str, str | None] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        file, sep, caption = line.partition("\t")
        if not sep:
            raise InvalidFile(source, f"line {number}: no TAB between file name and caption",
                              hint="keep each line as FILE<TAB>CAPTION")
        if _bad_chars(line):
            raise InvalidFile(source, f"line {number}: control characters are not allowed in a caption")
        if file not in known:
            raise InvalidFile(source, f"line {number}: {file[:120]!r} is not an image of this dataset version",
                              hint="file names cannot be changed or added in the caption table")
        if file in out:
            raise InvalidFile(source, f"line {number}: {file[:120]!r} is listed twice")
        caption = normal_caption(caption.replace("\t", " "))
        if len(caption) > MAX_CAPTION_CHARS:
            raise InvalidFile(source, f"line {number}: caption of {file[:120]!r} is longer than "
                                      f"{MAX_CAPTION_CHARS} characters")
        out[file] = caption or None
    return out


# --- saving an edit as a new version ---------------------------------------------------------

def current_captions(version) -> dict[str, str | None]:
    """file → caption of a ``DatasetVersion``."""
    return {image.file: image.caption for image in version.images}


def save_caption_edit(catalog, ref: str, new_captions: dict[str, str | None], *, via: str, message: str = "",
                      user: str | None = None):
    """Save the captions of ``new_captions`` that differ from version ``ref``'s as a new version of
    the same dataset (see the module docstring); answers that ``DatasetVersion``. Refused when
    nothing changed (a version identical to its parent would say nothing)."""
    from ..paths import current_user
    from .datasets import add_dataset_version, get_dataset_version

    version = get_dataset_version(catalog, ref)
    images = {image.file: image for image in version.images}
    unknown = sorted(set(new_captions) - set(images))
    if unknown:
        raise UsageError(f"{version.ref}: no image named {unknown[0]!r}")
    changed = {f: (normal_caption(c) if c else None) for f, c in new_captions.items()}
    changed = {f: c for f, c in changed.items() if c != images[f].caption}
    if not changed:
        raise UsageError(f"{version.ref}: no caption changed; nothing to save")
    user = user or current_user()
    records = {}
    for file in changed:
        record = {"kind": "manual", "via": via, "by": user}
        before = images[file].caption_source
        # keep the automatic origin of a caption edited again, not a chain of every edit
        origin = before.get("refined_from") if before and before.get("kind") == "manual" else before
        if origin:
            record["refined_from"] = origin
        records[file] = record
    return add_dataset_version(catalog, version.images, name=version.dataset,
                               message=message or f"captions edited ({via}): {len(changed)} image(s)",
                               captions=changed, caption_records=records,
                               caption_ext=version.manifest.get("caption_ext", ".txt"),
                               resolution=int(version.report.get("resolution") or 512), user=user)


# --- the records file of a captioned folder --------------------------------------------------

CAPTION_RECORDS_FILE = ".loradex-captions.json"  # hidden: neither training nor `dataset add` reads it as data
CAPTION_RECORDS_SCHEMA = "loradex.caption-records/2"
MAX_RECORDS_BYTES = 16 << 20
_SCALAR = {"type": ["string", "number", "boolean", "null"], "maxLength": 1000}
_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
CAPTIONER_RECORD_SCHEMA = {
    "type": "object",
    "required": ["kind", "captioner", "model", "model_sha256", "settings"],
    "additionalProperties": False,
    "properties": {
        "kind": {"const": "captioner"},
        "captioner": {"type": "string", "minLength": 1, "maxLength": 64},
        "model": {"type": "string", "minLength": 1, "maxLength": 1000},
        "model_sha256": _SHA256,
        "settings": {"type": "object", "maxProperties": 32, "propertyNames": {"maxLength": 64},
                     "additionalProperties": _SCALAR},
        "libraries": {"type": "object", "maxProperties": 16, "propertyNames": {"maxLength": 64},
                      "additionalProperties": {"type": ["string", "null"], "maxLength": 64}},
        "models": {"type": "object", "maxProperties": 8, "propertyNames": {"maxLength": 64},
                   "additionalProperties": {"type": "object", "required": ["model", "model_sha256"],
                                            "additionalProperties": False,
                                            "properties": {"model": {"type": "string", "maxLength": 1000},
                                                           "model_sha256": _SHA256}}},
    },
}
CAPTION_RECORDS_FILE_SCHEMA = {
    "type": "object",
    "required": ["schema", "images"],
    "additionalProperties": False,
    "properties": {
        "schema": {"const": CAPTION_RECORDS_SCHEMA},
        "images": {"type": "object", "maxProperties": 50_000, "propertyNames": {"maxLength": 1000},
                   "additionalProperties": {
                       "type": "object", "required": ["caption_file", "caption", "source"],
                       "additionalProperties": False,
                       "properties": {"caption_file": {"type": "string", "minLength": 1, "maxLength": 1000},
                                      "caption": {"type": "string", "maxLength": MAX_CAPTION_CHARS},
                                      "source": CAPTIONER_RECORD_SCHEMA}}},
    },
}


def read_caption_records(folder: Path) -> dict[str, dict]:
    """image file → ``{"caption_file", "caption", "source"}`` of the folder's records file ({} when
    there is none), checked (see the module docstring). A damaged file is an error naming it."""
    from ..untrusted import check_schema, read_json_file

    path = Path(folder) / CAPTION_RECORDS_FILE
    if not path.is_file():
        return {}
    data = read_json_file(path, max_bytes=MAX_RECORDS_BYTES)
    if isinstance(data, dict) and data.get("schema") == "loradex.caption-records/1":
        raise UntrustedData(str(path), "was written by an earlier loradex (no caption texts to compare)",
                            hint="caption the folder again with `loradex dataset caption DIR --overwrite`, "
                                 "or delete the file")
    check_schema(data, CAPTION_RECORDS_FILE_SCHEMA, str(path))
    return data["images"]


def write_caption_records(folder: Path, records: dict[str, dict]) -> None:
    """Write the records file (atomically): ``records`` as ``read_caption_records`` answers them."""
    from ..files.atomic_files import atomic_output

    with atomic_output(Path(folder) / CAPTION_RECORDS_FILE, "w") as fh:
        json.dump({"schema": CAPTION_RECORDS_SCHEMA, "images": dict(sorted(records.items()))}, fh, indent=1)


def folder_caption_sources(folder: Path, captions: dict[str, str | None], caption_ext: str) -> dict[str, dict]:
    """image file → ``caption_source`` for the captions of ``folder`` (file → caption as read from
    its caption file) that its records file accounts for: the captioner record when the caption
    file still holds the captioner's text, a manual edit refined from it when not. Images the
    records do not name (or name with another caption file) are left out: their caption is the
    plain caption file's."""
    records = read_caption_records(folder)
    out: dict[str, dict] = {}
    for file, caption in captions.items():
        entry = records.get(file)
        caption_file = PurePosixPath(file).with_suffix(caption_ext).as_posix()
        if entry is None or caption is None or entry["caption_file"] != caption_file:
            continue
        if normal_caption(entry["caption"]) == caption:
            out[file] = entry["source"]
        else:
            out[file] = {"kind": "manual", "via": "caption file edited after captioning", "file": caption_file,
                         "refined_from": entry["source"]}
    return out
