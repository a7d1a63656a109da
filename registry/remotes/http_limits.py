"""Limits on one HTTP exchange that a per-read timeout cannot give, shared by the Civitai and Hub
clients: a total wall-clock deadline and a size cap on JSON answers.

httpx (and huggingface_hub on top of it) times out each socket read, so a server that sends one
byte every half second never trips it: headers or a body trickled that way keep the client for as
long as the server likes. A :class:`Deadline` bounds the whole exchange: code that reads a body
itself checks it between chunks; a blocking call it cannot look into (sending a request and
waiting for the headers, or a library call such as ``HfApi.model_info``) runs under
:func:`watchdog`, which closes the HTTP client from a timer thread once the deadline has passed.
The blocked read then fails with a transport error at the next byte that arrives (or at its own
per-read timeout if the server went silent), and the caller reports ``deadline.error()``.

``LORADEX_HTTP_DEADLINE_S`` (seconds, read at call time; default 120) sets the deadline of
metadata/JSON calls. File downloads are not bounded in total (a large file legitimately takes
long); instead a :class:`StallGuard` requires progress: at least 64 KiB in every
``LORADEX_HTTP_STALL_S`` seconds (default 60), or the download stops with a resumable
``TransferError`` — a server trickling a byte just often enough to beat the per-read timeout can no
longer hold it.

A download whose size nobody announced (no ``sizeKB``, no ``Content-Length``, or a compressed
``Content-Encoding`` whose decoded size is unknown) stops at :func:`max_download_bytes`
(``LORADEX_MAX_DOWNLOAD_BYTES``, default 4 GiB), counted on the decoded bytes, so a gzip bomb
ends at the cap instead of filling the disk.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from typing import Callable, Iterable, Iterator

from ..errors import RemoteError, TransferError, UsageError

DEADLINE_ENV = "LORADEX_HTTP_DEADLINE_S"
STALL_ENV = "LORADEX_HTTP_STALL_S"
DEFAULT_STALL_S = 60.0
MIN_PROGRESS_BYTES = 64 * 1024
DEFAULT_DEADLINE_S = 120.0
MAX_JSON_BYTES = 32 * 1024 * 1024  # a Civitai version/model answer is tens of kB; by-hash batches a few MB
MAX_DOWNLOAD_ENV = "LORADEX_MAX_DOWNLOAD_BYTES"
DEFAULT_MAX_DOWNLOAD_BYTES = 4 << 30


def _seconds_from_env(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"{name}={raw!r} is not a positive number of seconds")
    return value


def max_download_bytes() -> int:
    """The most bytes (decoded) one download of unannounced size may write, from
    ``LORADEX_MAX_DOWNLOAD_BYTES`` (read at call time)."""
    raw = os.environ.get(MAX_DOWNLOAD_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_DOWNLOAD_BYTES
    if not (raw.isascii() and raw.isdigit() and 0 < int(raw) < 1 << 62):
        raise UsageError(f"{MAX_DOWNLOAD_ENV}={raw!r} is not a positive number of bytes")
    return int(raw)


def over_cap_error(what: str, cap: int) -> TransferError:
    """A download of unannounced size that ran past :func:`max_download_bytes`."""
    return TransferError(f"{what}: the server sent more than {cap:,} bytes without announcing a size; "
                         f"download stopped", hint=f"{MAX_DOWNLOAD_ENV} raises this limit if the file is real")


def deadline_seconds() -> float:
    """The total deadline for one metadata/JSON call, from ``LORADEX_HTTP_DEADLINE_S``."""
    return _seconds_from_env(DEADLINE_ENV, DEFAULT_DEADLINE_S)


class StallGuard:
    """Feed it the size of each received chunk; it raises a resumable ``TransferError`` when fewer
    than ``min_bytes`` arrived in a window of ``seconds`` (``LORADEX_HTTP_STALL_S``)."""

    def __init__(self, what: str, seconds: float | None = None, min_bytes: int = MIN_PROGRESS_BYTES):
        self.what = what
        self.seconds = _seconds_from_env(STALL_ENV, DEFAULT_STALL_S) if seconds is None else seconds
        self.min_bytes = min_bytes
        self._window_start = time.monotonic()
        self._in_window = 0

    def update(self, n: int) -> None:
        now = time.monotonic()
        self._in_window += n
        if self._in_window >= self.min_bytes:
            self._window_start, self._in_window = now, 0
        elif now - self._window_start > self.seconds:
            error = TransferError(f"{self.what}: fewer than {self.min_bytes // 1024} KiB arrived in "
                                  f"{self.seconds:g} s — the server is stalling",
                                  hint="run the same pull again to resume")
            error.resumable = True
            raise error


class Deadline:
    """A point in time by which one exchange (all its redirects and retries) must be complete."""

    def __init__(self, what: str, seconds: float | None = None):
        self.what = what
        self.seconds = deadline_seconds() if seconds is None else seconds
        self._end = time.monotonic() + self.seconds

    def remaining(self) -> float:
        return self._end - time.monotonic()

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0

    def error(self) -> RemoteError:
        return RemoteError(f"{self.what}: timed out — no complete answer within {self.seconds:g} s",
                           hint=f"the server is stalled or trickling its answer; {DEADLINE_ENV} sets this limit")

    def check(self) -> None:
        if self.expired:
            raise self.error()


@contextlib.contextmanager
def watchdog(deadline: Deadline, abort: Callable[[], None]) -> Iterator[None]:
    """Run the block; if it is still running when ``deadline`` passes, call ``abort`` (from a
    timer thread) to break the blocking read it is stuck in. An exception raised in the block
    after that is replaced by ``deadline.error()``: the deadline, not the broken connection, is
    what went wrong."""
    fired = threading.Event()

    def on_deadline():
        fired.set()
        abort()

    timer = threading.Timer(max(deadline.remaining(), 0.0), on_deadline)
    timer.daemon = True
    timer.start()
    try:
        yield
    except Exception:
        if fired.is_set():
            raise deadline.error() from None
        raise
    finally:
        timer.cancel()
        timer.join()  # an abort already under way finishes before the caller goes on


def read_limited(chunks: Iterable[bytes], *, what: str, deadline: Deadline, declared: str | None,
                 limit: int = MAX_JSON_BYTES) -> bytes:
    """The body from ``chunks`` (e.g. ``response.iter_bytes()``), refused as soon as it is known
    to exceed ``limit`` bytes — at once from its declared Content-Length ``declared``, otherwise
    while counting — and once ``deadline`` has passed between chunks."""
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise RemoteError(f"{what}: the server declares an answer of {int(declared):,} bytes, more than the "
                          f"{limit:,} accepted for JSON", hint="not a Civitai-style API answer; check the endpoint")
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        deadline.check()
        size += len(chunk)
        if size > limit:
            raise RemoteError(f"{what}: the answer is larger than the {limit:,} bytes accepted for JSON",
                              hint="not a Civitai-style API answer; check the endpoint")
        parts.append(chunk)
    deadline.check()
    return b"".join(parts)
