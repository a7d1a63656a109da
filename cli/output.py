"""One object that prints: human (rich), ``--json`` (stable keys) or quiet."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any, Iterator


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
            from rich.console import Console

            # a pipe or file gets 120 columns (rich's 80 would fold names into two lines)
            width = None if sys.stdout.isatty() else 120
            self._console = Console(highlight=False, soft_wrap=True, width=width)
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
        sys.stderr.write(f"warning: {message}\n")

    def table(self, columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
        from rich.table import Table

        table = Table(title=title)
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in rows:
            table.add_row(*["" if v is None else str(v) for v in row])
        self.console.print(table)

    @contextmanager
    def progress(self, description: str, *, transfer: bool = False) -> Iterator:
        """Yield a ``progress(done, total, desc)`` callback; a rich bar on a TTY, silent otherwise."""
        if self.quiet or self.json_mode or not sys.stderr.isatty():
            yield lambda done, total, desc="": None
            return
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn, MofNCompleteColumn)

        columns = [TextColumn("{task.description}"), BarColumn()]
        columns += ([DownloadColumn(), TransferSpeedColumn()] if transfer else [MofNCompleteColumn()])
        columns.append(TimeRemainingColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
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
