"""One object that prints: human (rich), ``--json`` (stable keys) or quiet.

Human output is the one place where text from outside (names, metadata, sidecars, remote
messages, error messages) reaches a terminal, so it is escaped here, whatever field it came in:
C0/C1 control characters (ESC and so CSI/OSC sequences, CR, BEL, DEL...) and the bidirectional
overrides/isolates/marks that reorder what a terminal shows become visible ``\\xNN`` /
``\\uNNNN``. Rich markup found in such text never raises (it is printed as written). ``--json``
output is ``json.dumps`` (ASCII: every control and non-ASCII character is already escaped).
"""

from __future__ import annotations

import functools
import re
import sys
from contextlib import contextmanager
from typing import Any, Iterator

# C0 controls but newline and tab, DEL, C1 controls; the bidirectional embeddings, overrides,
# isolates and marks (U+202A-202E, U+2066-2069, U+200E/200F, U+061C); lone surrogates (a
# non-UTF-8 argument or file name, a JSON "\\ud800"), which no terminal encoding can write.
_BIDI_AND_SURROGATES = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI_AND_SURROGATES}]")
_UNSAFE_ONE_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI_AND_SURROGATES}]")


def _visible(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str, *, one_line: bool = False) -> str:
    """``text`` with terminal control sequences and bidi overrides made visible and inert;
    ``one_line`` also escapes newline and tab."""
    return (_UNSAFE_ONE_LINE if one_line else _UNSAFE).sub(_visible, str(text))


@functools.lru_cache(maxsize=1)
def _safe_console_class():
    """A rich ``Console`` that escapes every piece of text it renders (not the control codes
    rich itself emits for styles and cursor moves) and prints invalid markup as plain text."""
    from rich.console import Console
    from rich.errors import MarkupError
    from rich.segment import Segment

    class SafeConsole(Console):
        def print(self, *objects: Any, **kwargs: Any) -> None:
            # escaped before rich sees it (rich would drop BEL, CR... silently; shown instead)
            objects = tuple(terminal_safe(o) if isinstance(o, str) else o for o in objects)
            try:
                super().print(*objects, **kwargs)
            except MarkupError:  # "[/bold]" in a name or a message: show it as written
                super().print(*objects, **{**kwargs, "markup": False})

        def _render_buffer(self, buffer) -> str:
            return super()._render_buffer(
                Segment(terminal_safe(text), style, control) if not control and text else
                Segment(text, style, control) for text, style, control in buffer)

    return SafeConsole


def safe_console(**kwargs: Any):
    return _safe_console_class()(**kwargs)


def _default(obj: Any):
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def dumps_indented(data: Any, default=_default) -> str:
    """``json.dumps(data, default=default, indent=2)``, the same text, about three times faster:
    the standard library writes indented JSON with its pure-Python encoder (its C encoder has no
    indent), one generator step per value; here each container is one join, and strings are
    escaped by the C ``encode_basestring_ascii``. (``loradex list --json`` with 10,000 adapters
    spent more time here than reading the catalog.)"""
    import json
    from json.encoder import c_make_encoder, encode_basestring_ascii as encode_str

    int_repr, float_repr = int.__repr__, float.__repr__
    inf = float("inf")
    markers: dict[int, Any] = {}

    def floatstr(o: float) -> str:
        if o != o:
            return "NaN"
        if o == inf:
            return "Infinity"
        if o == -inf:
            return "-Infinity"
        return float_repr(o)

    def key_text(key: Any) -> str:
        if isinstance(key, str):
            return encode_str(key)
        if isinstance(key, float):
            return encode_str(floatstr(key))
        if key is True:
            return '"true"'
        if key is False:
            return '"false"'
        if key is None:
            return '"null"'
        if isinstance(key, int):
            return encode_str(int_repr(key))
        raise TypeError(f"keys must be str, int, float, bool or None, not {key.__class__.__name__}")

    def enter(o: Any) -> None:
        if id(o) in markers:
            raise ValueError("Circular reference detected")
        markers[id(o)] = o

    def encode(o: Any, indent: str) -> str:
        if isinstance(o, str):
            return encode_str(o)
        if o is None:
            return "null"
        if o is True:
            return "true"
        if o is False:
            return "false"
        if isinstance(o, int):
            return int_repr(o)
        if isinstance(o, float):
            return floatstr(o)
        if isinstance(o, (list, tuple)):
            if not o:
                return "[]"
            enter(o)
            inner = indent + "  "
            if o[0].__class__ is dict and o[0] and all(v.__class__ is dict for v in o):
                items = rows(o, inner)
            else:
                items = [encode_str(v) if v.__class__ is str else encode(v, inner) for v in o]
            text = "[\n" + inner + (",\n" + inner).join(items) + "\n" + indent + "]"
            del markers[id(o)]
            return text
        if isinstance(o, dict):
            if not o:
                return "{}"
            inner = indent + "  "
            if all(v.__class__ in scalars for v in o.values()):  # C encoder, no container inside
                return "{\n" + inner + "".join(flat(inner)(o, 0))[1:-1] + "\n" + indent + "}"
            enter(o)
            text = ("{\n" + inner + (",\n" + inner).join(
                [(encode_str(k) if k.__class__ is str else key_text(k)) + ": "
                 + (encode_str(v) if v.__class__ is str else int_repr(v) if v.__class__ is int else encode(v, inner))
                 for k, v in o.items()]) + "\n" + indent + "}")
            del markers[id(o)]
            return text
        enter(o)
        text = encode(default(o), indent)
        del markers[id(o)]
        return text

    scalars = {str, int, float, bool, type(None)}
    flat_encoders: dict[str, Any] = {}

    def flat(inner: str):
        """The C encoder writing a container's items separated as at ``inner``'s depth."""
        if inner not in flat_encoders:
            flat_encoders[inner] = c_make_encoder(None, default, encode_str, None, ": ", ",\n" + inner,
                                                  False, False, True)
        return flat_encoders[inner]

    def rows(dicts: list, indent: str) -> list[str]:
        """A list of dicts (a table): each key's text made once for dicts with the same keys,
        values written inline, a nested dict of scalars by the C encoder."""
        inner = indent + "  "
        nested_indent = inner + "  "
        nested = flat(nested_indent)
        keys, prefixes, out = None, [], []
        for row in dicts:
            if tuple(row) != keys:
                keys = tuple(row)
                if not keys:
                    out.append("{}")
                    keys = None
                    continue
                prefixes = [",\n" + inner + (encode_str(k) if k.__class__ is str else key_text(k)) + ": "
                            for k in keys]
                prefixes[0] = "{" + prefixes[0][1:]
            enter(row)
            parts = []
            for prefix, v in zip(prefixes, row.values()):
                kind = v.__class__
                if kind is str:
                    parts.append(prefix + encode_str(v))
                elif kind is int:
                    parts.append(prefix + int_repr(v))
                elif v is None:
                    parts.append(prefix + "null")
                elif kind is dict and v and all(x.__class__ in scalars for x in v.values()):
                    parts.append(prefix + "{\n" + nested_indent + "".join(nested(v, 0))[1:-1] + "\n" + inner + "}")
                else:
                    parts.append(prefix + encode(v, inner))
            out.append("".join(parts) + "\n" + indent + "}")
            del markers[id(row)]
        return out

    if c_make_encoder is None:  # an interpreter without the C accelerator
        return json.dumps(data, default=default, indent=2)
    return encode(data, "")


_WORD = re.compile(r"\s*\S+\s*")  # rich._wrap.re_word


def _word_wrap(text: str, width: int, cells: int) -> list[str] | None:
    """The lines, padded to ``width``, that rich's ``Text.wrap(justify="left", overflow="fold")``
    makes of one line of text whose every character is one cell wide (``cells`` = its length)
    and whose every word fits the width — rich's ``divide_line`` without its measuring per word
    (a 10,000-row ``loradex list`` has ~1,000 such cells). None for any other text (rich wraps
    it); compared with rich by tests/test_cli_startup.py's table property test."""
    if cells != len(text) or not text.isprintable():  # wide, zero-width or control characters
        return None
    if not text.isascii():
        from rich.cells import get_character_cell_size

        if any(get_character_cell_size(ch) != 1 for ch in set(text) if not ch.isascii()):
            return None
    lines, line_start, offset = [], 0, 0
    for match in _WORD.finditer(text):
        start, word = match.start(), match.group()
        length = len(word.rstrip())
        if length > width:
            return None  # folded across lines: rich's business
        if width - offset >= length:
            offset += len(word)
        elif offset and start:
            lines.append(text[line_start:start])
            line_start, offset = start, len(word)
    lines.append(text[line_start:])
    return [line[:width] + " " * (width - len(line)) for line in lines]


class Output:
    def __init__(self, *, json_mode: bool = False, quiet: bool = False):
        self.json_mode = json_mode
        self.quiet = quiet
        self._console = None

    @property
    def console(self):
        if self._console is None:
            # a pipe or file gets 120 columns (rich's 80 would fold names into two lines)
            width = None if sys.stdout.isatty() else 120
            self._console = safe_console(highlight=False, soft_wrap=True, width=width)
        return self._console

    def json(self, data: Any) -> None:
        sys.stdout.write(dumps_indented(data) + "\n")

    def result(self, data: Any, human=None) -> None:
        """Print ``data`` as JSON in --json mode, else call ``human(console)`` or print it."""
        if self.json_mode:
            self.json(data)
        elif not self.quiet:
            if human is not None:
                human(self.console)
            else:
                self.console.print(data)

    def info(self, message: str) -> None:
        if not self.quiet and not self.json_mode:
            self.console.print(message)

    def warn(self, message: str) -> None:
        sys.stderr.write(f"warning: {terminal_safe(message, one_line=True)}\n")

    def table(self, columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
        cells = [["" if v is None else str(v) for v in row] for row in rows]
        if _UNSAFE.search("\n".join(["\n".join(row) for row in cells])):  # else nothing to escape
            cells = [[terminal_safe(text) for text in row] for row in cells]
        if len(cells) > 1 and self._print_long_table(columns, cells, title):
            return
        self.console.print(self._rich_table(columns, cells, title))

    @staticmethod
    def _rich_table(columns: list[str], cells: list[list[str]], title: str | None, widths=None):
        from rich.table import Table
        from rich.text import Text

        table = Table(title=None if title is None else Text(title))
        for i, col in enumerate(columns):
            table.add_column(col, overflow="fold", width=None if widths is None else widths[i])
        for row in cells:  # cells are data: Text, never parsed as markup
            table.add_row(*[Text(v) for v in row])
        return table

    def _print_long_table(self, columns: list[str], cells: list[list[str]], title: str | None) -> bool:
        """Print the table rich would print, without rich measuring and laying out every cell
        (10,000 rows took rich ~5 s). The column widths are worked out as rich's
        ``Table._calculate_column_widths`` does (a cell's width is its longest line; too wide a
        table is narrowed by rich's own ``_collapse_widths``/``ratio_reduce``); a cell that fits
        its column is its text padded with spaces, one that does not is wrapped by rich's
        ``Text.wrap``. Rich itself prints the title, the header, the frame and the first row at
        those widths, and the first row's lines must be exactly the ones made here, or nothing is
        printed and False returned (then rich lays out the whole table)."""
        import re

        from rich.cells import cell_len, set_cell_size
        from rich.text import Text

        console = self.console
        if console.legacy_windows or not (console.encoding or "").lower().startswith("utf"):
            return False  # rich draws ASCII boxes there
        if any("[" in col or not col.isprintable() for col in columns):
            return False  # a header is rich markup
        n = len(columns)
        room = console.width - (n + 1)  # the borders: an edge on each side, one between columns
        if room < 3 * n:
            return False
        breaks = re.compile("[\n\t\u2028\u2029]")
        by_column = list(zip(*cells))
        lengths, broken = [], set()  # each cell's width when on one line; rows with a line break
        for col in by_column:
            joined = "\x00".join(col)
            lengths.append(list(map(len if joined.isascii() else cell_len, col)))
            if breaks.search(joined):
                broken.update(r for r, text in enumerate(col) if breaks.search(text))

        def longest_line(text: str) -> int:  # Text.__rich_measure__'s maximum
            return max((cell_len(line) for line in text.splitlines()), default=0)

        def padded(longest: int, limit: int) -> int:  # Measurement.get of Padding(Text, (0, 1))
            if limit < 3:
                return limit
            return min(min(longest, limit) + 2, limit)

        for r in broken:  # such a row is wrapped by rich below; here it is only measured
            for i, text in enumerate(cells[r]):
                lengths[i][r] = longest_line(text)
        longest = [max(cell_len(col), max(lengths[i])) for i, col in enumerate(columns)]
        widths = [padded(m, room) or 1 for m in longest]
        if sum(widths) > room:
            from rich._ratio import ratio_reduce
            from rich.table import Table

            widths = Table._collapse_widths(widths, [True] * n, room)
            if sum(widths) > room:
                widths = ratio_reduce(sum(widths) - room, [1] * n, widths, widths)
            widths = [padded(m, w) if w >= 1 else 0 for m, w in zip(longest, widths)]
        if min(widths) < 3:
            return False
        inner = [w - 2 for w in widths]
        wrapped = set(broken)  # rows with a cell wider than its column, or a line break
        for i, w in enumerate(inner):
            if longest[i] > w:
                wrapped.update(r for r, length in enumerate(lengths[i]) if length > w)
        # every cell as one line padded to its column (rows in `wrapped` are redone below)
        padded_cells = [[text + " " * (w - length) for text, length in zip(col, lengths[i])]
                        for i, (col, w) in enumerate(zip(by_column, inner))]

        wraps: dict[tuple[str, int], list[str]] = {}  # a column's cells repeat (aliases): each wrapped once

        def wrap(text: str, w: int, length: int, one_line: bool) -> list[str]:
            key = (text, w)
            if key not in wraps:
                wraps[key] = (_word_wrap(text, w, length) if one_line else None) or [
                    set_cell_size(line.plain, w) for line in
                    Text(text).wrap(console, w, justify="left", overflow="fold", tab_size=8)]
            return wraps[key]

        def wrapped_lines(r: int) -> list[str]:
            parts = []
            for i, (text, w) in enumerate(zip(cells[r], inner)):
                if r not in broken and lengths[i][r] <= w:
                    parts.append([padded_cells[i][r]])
                else:
                    parts.append(wrap(text, w, lengths[i][r], r not in broken))
            height = max(len(p) for p in parts)
            parts = [p + [" " * w] * (height - len(p)) for p, w in zip(parts, inner)]
            return ["│ " + " │ ".join(line) + " │" for line in zip(*parts)]

        def row_lines(r: int) -> list[str]:
            if r in wrapped:
                return wrapped_lines(r)
            return ["│ " + " │ ".join([col[r] for col in padded_cells]) + " │"]

        first = row_lines(0)
        with console.capture() as capture:
            console.print(self._rich_table(columns, cells[:1], title, inner))
        lines = capture.get().split("\n")  # …, the first row's lines, the bottom edge, ""
        if len(lines) < len(first) + 4 or lines[-1] != "" or lines[-2 - len(first):-2] != first:
            return False
        body = ["│ " + " │ ".join(parts) + " │" for parts in zip(*(col[1:] for col in padded_cells))]
        if wrapped:  # those rows take more than their one line
            body = [line for r, one in enumerate(body, start=1)
                    for line in (wrapped_lines(r) if r in wrapped else (one,))]
        out = console.file
        out.write("\n".join([*lines[:-2], *body, lines[-2]]) + "\n")
        out.flush()
        return True

    @contextmanager
    def progress(self, description: str, *, transfer: bool = False) -> Iterator:
        """Yield a ``progress(done, total, desc)`` callback; a rich bar on a TTY, silent otherwise."""
        if self.quiet or self.json_mode or not sys.stderr.isatty():
            yield lambda done, total, desc="": None
            return
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn, MofNCompleteColumn)

        columns = [TextColumn("{task.description}"), BarColumn()]
        columns += ([DownloadColumn(), TransferSpeedColumn()] if transfer else [MofNCompleteColumn()])
        columns.append(TimeRemainingColumn())
        with Progress(*columns, console=safe_console(stderr=True), transient=True) as bar:
            task = bar.add_task(description, total=None)

            def update(done: int, total: int, desc: str = "") -> None:
                bar.update(task, completed=done, total=total or None,
                           description=f"{description} {desc}".strip())

            yield update


def human_size(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
