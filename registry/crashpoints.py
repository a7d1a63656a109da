"""Named points where a test can make loradex die as if by ``kill -9``.

``LORADEX_CRASH_AT=<name>`` makes the process SIGKILL itself when it reaches that point; the
reliability tests use it to hit every window between "bytes written" and "row committed"
deterministically (random-time kills cover the rest). Costs one dict lookup when unset.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "blob-temp-written",  # temp file complete, not yet renamed
    "blob-published",  # blob under its final name, row not committed
    "before-commit",  # inside the transaction, nothing committed
    "after-commit",  # row committed, command not finished
)
GC_POINTS = (
    "gc-blob-removed",  # one unreferenced blob deleted, the others not yet
    "gc-before-temp-sweep",  # blobs deleted, abandoned temp files not yet
)


def crashpoint(name: str) -> None:
    if os.environ.get("LORADEX_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
