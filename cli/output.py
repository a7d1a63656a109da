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
import json
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
        sys.stdout.write(json.dumps(data, default=_default, indent=2, sort_keys=False) + "\n")

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
        from rich.table import Table
        from rich.text import Text

        table = Table(title=None if title is None else Text(title))
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in rows:  # cells are data: Text, never parsed as markup
            table.add_row(*[Text("" if v is None else terminal_safe(str(v))) for v in row])
        self.console.print(table)

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
