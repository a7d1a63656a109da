"""Builders for the Hub sync tests: a `loradex serve` app on 127.0.0.1 (in a thread or a killable
subprocess), a publishing home with a version, an alias, prompt records with images and an
evaluation card."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from _served_app import ServedApp
from loradex.merge.synthetic_adapters import write_random_kohya_lora
from loradex.registry.catalog import records as R
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.store import Catalog
from loradex.registry.catalog.operations import MoveAlias

TOKEN = "hubsync-secret-7f3a9c2e51"
METRICS = ["clip_t", "clip_t_base", "style_consistency", "style_reference_similarity", "subject_consistency",
           "generalization_variance", "memorization", "memorization_base", "diversity"]
CHECKS = ["prompt_drift", "style_mismatch", "artifacts", "copyright_portrait", "review_failure"]


class ThreadServer(ServedApp):
    """build_server_app(catalog, token) under uvicorn in a thread (what `loradex serve` runs);
    ``home`` is the served home."""

    def __init__(self, home: Path, token: str | None = TOKEN, public_read: bool = False):
        from loradex.registry.server.app import build_server_app

        self.home = home
        super().__init__(build_server_app(Catalog(home), token, public_read=public_read))


@pytest.fixture(autouse=True)
def _quiet_hub(monkeypatch):
    """Hub tests: no progress bars, no Xet, no ambient HF token; the team remote's token set.
    (Autouse in every test module that imports it.)"""
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("LORADEX_TOKEN_TEAM", TOKEN)


@pytest.fixture
def server(tmp_path):
    with ThreadServer(tmp_path / "server-home") as srv:
        yield srv


def stats(url: str, token: str = TOKEN) -> dict:
    return httpx.get(f"{url}/api/_loradex/stats", headers={"authorization": f"Bearer {token}"}).json()


# A `loradex serve` in its own process (so it can be killed -9), with /resolve bodies slowed down
# so a test can catch a transfer in the middle.
_SERVE_SCRIPT = r"""
import asyncio, sys, uvicorn
from loradex.registry.catalog.store import Catalog
from loradex.registry.server.app import build_server_app
home, token, port, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
inner = build_server_app(Catalog(home), token)
async def app(scope, receive, send):
    slow = scope["type"] == "http" and "/resolve/" in scope.get("path", "") and scope.get("method") == "GET"
    async def paced(message):
        if slow and message["type"] == "http.response.body" and message.get("body"):
            await asyncio.sleep(delay)
        await send(message)
    await inner(scope, receive, paced)
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", access_log=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server_process(home: Path, port: int, *, delay: float = 0.0, log: Path) -> subprocess.Popen:
    env = {**os.environ, "LORADEX_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-c", _SERVE_SCRIPT, str(home), TOKEN, str(port), str(delay)],
                            env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early: {log.read_text()[-2000:]}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/_loradex/stats", headers={"authorization": f"Bearer {TOKEN}"},
                      timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


# --- a publishing home -------------------------------------------------------------------------
def card_for(ref: str, sha256: str, with_id: str, without_id: str) -> dict:
    metric = {"value": None, "status": "not-computed", "model": "none", "definition": "test metric",
              "note": "not computed in this test"}
    return {
        "schema": R.CARD_SCHEMA, "version": {"ref": ref, "sha256": sha256},
        "base": {"ref": "tiny-sd1", "family": "sd1", "sha256": None},
        "prompt_suite": {"file": None, "sha256": "ab" * 32, "prompts": ["a red fox"]}, "seeds": [7],
        "settings": {"steps": 2, "cfg": 5.0, "width": 32, "height": 32, "weight": 1.0},
        "embedder": {"name": "none", "model": "none"},
        "samples": [{"prompt_index": 0, "seed": 7, "with_adapter": with_id, "without_adapter": without_id}],
        "metrics": {k: dict(metric) for k in METRICS},
        "failure_checks": {k: {"status": "not-checked", "note": ""} for k in CHECKS},
        "human_verdicts": [], "candidates": [], "technical_note": {"method": "lora", "rank": 4},
        "thresholds": {}, "passed": True, "reasons": [], "created_at": R.now_iso(), "created_by": "tester",
    }


def record_png(record: dict, colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    return R.png_with_record(Image.new("RGB", (8, 8), colour), record)


@dataclass
class Published:
    catalog: Catalog
    ref: str
    sha256: str
    with_id: str
    without_id: str
    card: dict


def publishing_home(home: Path, tmp: Path, *, name: str = "style", version: str = "1.0.0", seed: int = 1,
                    rank: int = 4, evidence: bool = True, alias: str | None = "production") -> Published:
    from _evidence_fixtures import minimal_record

    catalog = Catalog(home)
    src = write_random_kohya_lora(tmp / f"{name}-{seed}.safetensors", rank=rank, seed=seed, trigger="zk")
    added = add_file(catalog, src, name=name, version=version, description="A test style.", alias=alias)
    v = added.version
    with_id = without_id = ""
    card = {}
    if evidence:
        with_rec = minimal_record(stack=[{"requested": name, "ref": v.ref, "sha256": v.sha256,
                                          "te_weight": 1.0, "unet_weight": 1.0}])
        without_rec = minimal_record(prompt="a red fox")
        R.store_record(catalog, with_rec, record_png(with_rec, (200, 30, 30)))
        R.store_record(catalog, without_rec, record_png(without_rec, (30, 30, 200)))
        card = card_for(v.ref, v.sha256, with_rec["id"], without_rec["id"])
        R.store_card(catalog, card)
        with_id, without_id = with_rec["id"], without_rec["id"]
    return Published(catalog, v.ref, v.sha256, with_id, without_id, card)


def move_alias(catalog: Catalog, ref: str, alias: str) -> None:
    catalog.apply([MoveAlias(ref, alias, reason="test")])


def files_containing(root: Path, needle: bytes) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    hits.append(str(path))
            except OSError:
                pass
    return hits
