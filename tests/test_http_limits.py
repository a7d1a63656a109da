"""registry/remotes/http_limits.py: the total deadline and the JSON size cap shared by the Civitai and Hub
clients (the end-to-end cases against a hostile server are in tests/test_hostile_remotes.py)."""

from __future__ import annotations

import threading
import time

import pytest

from loradex.registry.errors import RemoteError, UsageError
from loradex.registry.remotes.http_limits import (DEADLINE_ENV, DEFAULT_DEADLINE_S, Deadline, deadline_seconds,
                                          read_limited, watchdog)


def test_deadline_from_env(monkeypatch):
    monkeypatch.delenv(DEADLINE_ENV, raising=False)
    assert deadline_seconds() == DEFAULT_DEADLINE_S
    monkeypatch.setenv(DEADLINE_ENV, "2.5")
    assert deadline_seconds() == 2.5 and Deadline("x").seconds == 2.5
    for bad in ("0", "-1", "nan", "inf", "soon"):
        monkeypatch.setenv(DEADLINE_ENV, bad)
        with pytest.raises(UsageError, match=DEADLINE_ENV):
            deadline_seconds()


def test_declared_length_over_the_limit_is_refused_before_reading():
    consumed = []

    def chunks():
        consumed.append(1)
        yield b"{}"

    with pytest.raises(RemoteError, match="declares an answer of 1,001 bytes"):
        read_limited(chunks(), what="q", deadline=Deadline("q", 10), declared="1001", limit=1000)
    assert consumed == []


def test_undeclared_length_is_counted_and_stops_at_the_limit():
    sent = []

    def chunks():
        for _ in range(100):
            sent.append(300)
            yield b"x" * 300

    with pytest.raises(RemoteError, match="larger than the 1,000 bytes"):
        read_limited(chunks(), what="q", deadline=Deadline("q", 10), declared=None, limit=1000)
    assert sum(sent) == 1200  # stopped at the first chunk past the limit
    assert read_limited(iter([b"[1,", b"2]"]), what="q", deadline=Deadline("q", 10), declared="5") == b"[1,2]"


def test_trickled_chunks_stop_at_the_deadline():
    def trickle():
        while True:
            time.sleep(0.05)
            yield b" "

    t = time.monotonic()
    with pytest.raises(RemoteError, match="timed out — no complete answer within 0.3 s"):
        read_limited(trickle(), what="q", deadline=Deadline("q", 0.3), declared=None)
    assert 0.3 <= time.monotonic() - t < 1.0


def test_watchdog_aborts_a_blocked_call_and_reports_the_deadline():
    unblock = threading.Event()

    def blocked_read():
        if not unblock.wait(5):
            raise AssertionError("never aborted")
        raise ConnectionError("socket closed under the read")  # what the abort causes

    t = time.monotonic()
    with pytest.raises(RemoteError, match="q: timed out"):
        with watchdog(Deadline("q", 0.2), unblock.set):
            blocked_read()
    assert time.monotonic() - t < 1.0


def test_watchdog_leaves_fast_calls_and_their_own_errors_alone():
    aborted = []
    with watchdog(Deadline("q", 0.2), lambda: aborted.append(1)):
        pass
    with pytest.raises(KeyError):
        with watchdog(Deadline("q", 0.2), lambda: aborted.append(1)):
            raise KeyError("not a timeout")
    time.sleep(0.3)
    assert aborted == []
