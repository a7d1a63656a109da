"""hub_client: transport failures end as typed errors and metadata calls keep a total deadline
(trickled answers against a real server: tests/test_hostile_remotes.py)."""

from __future__ import annotations

import time

import httpx2
import pytest

from loradex.registry.errors import RemoteError
from loradex.registry.remotes.hub_client import _remote_errors, _retrying, _transient


@pytest.mark.parametrize("exc", [httpx2.RemoteProtocolError("peer closed connection without sending complete "
                                                            "message body"),
                                 httpx2.ReadError("reset"), httpx2.ReadTimeout("slow"), httpx2.ConnectError("refused"),
                                 httpx2.UnsupportedProtocol("gopher://")])
def test_transport_errors_become_remote_errors(exc):
    with pytest.raises(RemoteError, match=rf"pull: the connection to http://h failed for u/r \({type(exc).__name__}"):
        with _remote_errors("http://h", "u/r", False, "pull"):
            raise exc


def test_transient_transport_errors_are_the_ones_worth_retrying():
    assert _transient(httpx2.RemoteProtocolError("x")) == 0.0
    assert _transient(httpx2.ReadTimeout("x")) == 0.0
    assert _transient(httpx2.ConnectError("x")) == 0.0
    assert _transient(httpx2.UnsupportedProtocol("x")) is None
    assert _transient(ValueError("x")) is None


def test_retries_stop_when_the_next_would_start_past_the_deadline(monkeypatch):
    monkeypatch.setenv("LORADEX_HTTP_DEADLINE_S", "2")
    calls = []

    def flaky():
        calls.append(time.monotonic())
        raise httpx2.ReadError("reset")

    t = time.monotonic()
    with pytest.raises(httpx2.ReadError):  # the last failure itself, for _remote_errors to word
        _retrying(flaky, delays=(0.3, 5.0, 5.0, 5.0))
    assert len(calls) == 2 and time.monotonic() - t < 1.5  # the 5 s pause would end past the 2 s deadline
    calls.clear()
    with pytest.raises(httpx2.ReadError):  # downloads: no total deadline, every retry is made
        _retrying(flaky, delays=(0.3, 0.3), total_deadline=False)
    assert len(calls) == 3
