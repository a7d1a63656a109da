"""Downloads must make progress: a server trickling bytes just fast enough to beat the per-read
timeout is cut off by the stall guard (LORADEX_HTTP_STALL_S), with a resumable error."""

from __future__ import annotations

import time

import pytest

from _adversarial_server import AdversarialServer
from loradex.registry.errors import TransferError
from loradex.registry.remotes.http_limits import StallGuard


def test_stall_guard_needs_min_bytes_per_window(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    guard = StallGuard("pull: x", seconds=10, min_bytes=1000)
    for _ in range(9):  # 9 × 100 B in 9 s: still inside the first window
        clock[0] += 1
        guard.update(100)
    clock[0] += 1
    guard.update(100)  # 1,000 B reached: a new window starts
    clock[0] += 10.5
    with pytest.raises(TransferError, match="stalling") as info:
        guard.update(10)
    assert info.value.resumable is True


def _trickle(handler, server):
    handler.send_response(200)
    handler.send_header("Content-Type", "application/octet-stream")
    handler.send_header("Content-Length", str(10**6))
    handler.end_headers()
    for _ in range(200):  # one byte every 0.1 s: each read succeeds, no per-read timeout fires
        handler.wfile.write(b"\0")
        handler.wfile.flush()
        time.sleep(0.1)
    handler.close_connection = True


def test_civitai_download_trickle_is_cut_off_and_resumable(tmp_path, monkeypatch):
    from loradex.registry.remotes.civitai import CivitaiClient

    monkeypatch.setenv("LORADEX_HTTP_STALL_S", "1.5")
    with AdversarialServer() as server:
        server.routes["/files/big.safetensors"] = _trickle
        client = CivitaiClient(server.url(), token=None, sleep=lambda s: None, retries=0, timeout=5.0)
        dest = tmp_path / "big.safetensors.part"
        t = time.monotonic()
        with pytest.raises(TransferError, match="stalling") as info:
            client.download(server.url() + "/files/big.safetensors", dest, what="pull: big")
        assert time.monotonic() - t < 10
        assert info.value.resumable is True and dest.exists()  # kept for the next attempt


def test_hub_progress_bar_hook_raises_on_stall(monkeypatch):
    from loradex.registry.remotes.hub_client import _stall_watching_bar

    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    bar = _stall_watching_bar(StallGuard("pull: f", seconds=2, min_bytes=1000))(total=10**6, disable=True)
    bar.update(500)
    clock[0] += 3
    with pytest.raises(TransferError):
        bar.update(1)
