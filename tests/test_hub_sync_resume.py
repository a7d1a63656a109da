"""Issue 7, acceptance 5: a `loradex pull` whose server is killed -9 in the middle of the weight
file resumes after the server restarts and completes; the bytes received before the kill are not
fetched again, and no partial file ever sits under a final name (blob store or download dir)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _hub_sync_fixtures import (TOKEN, files_containing, free_port, publishing_home, start_server_process,
                                stats)
from loradex.registry.catalog.store import Catalog
from loradex.registry.remotes.hub_client import PARTIAL_DIR
from loradex.registry.remotes import add_remote, push


def _client_env(home: Path) -> dict:
    return {**os.environ, "LORADEX_HOME": str(home), "LORADEX_TOKEN_TEAM": TOKEN, "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def _pull(home: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "loradex.cli.main", "pull", "team:style@v1.0.0", "--json"],
                            env=_client_env(home), stdout=open(out, "wb"), stderr=subprocess.STDOUT)


def test_pull_survives_server_kill_and_resumes(tmp_path, monkeypatch):
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("LORADEX_TOKEN_TEAM", TOKEN)
    server_home, log = tmp_path / "server", tmp_path / "server.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Responses of /resolve are paced (one 1 MiB chunk per 0.2 s) so the kill lands mid-file.
    first = start_server_process(server_home, port, delay=0.2, log=log)
    second = None
    try:
        # huggingface_hub's http_get writes in 10 MiB pieces (DOWNLOAD_CHUNK_SIZE), so only a file
        # over 10 MiB can have bytes on disk mid-transfer: ~11.2 MB of weights.
        pub = publishing_home(tmp_path / "a", tmp_path, rank=640, evidence=False)
        add_remote(pub.catalog, "team", f"{url}/team", "mirror")
        push(pub.catalog, pub.ref, "team")
        version = pub.catalog.resolve(pub.ref)
        assert version.size > 10 << 20

        home_b = tmp_path / "b"
        catalog_b = Catalog(home_b)
        add_remote(catalog_b, "team", f"{url}/team", "mirror")
        client = _pull(home_b, tmp_path / "pull-1.out")
        part = None
        deadline = time.time() + 90
        while time.time() < deadline and client.poll() is None:
            found = list(home_b.glob(f"downloads/hub-*/{PARTIAL_DIR}/{version.sha256}.part"))
            if found and found[0].stat().st_size > 0:
                part = found[0]
                break
            time.sleep(0.01)
        assert part is not None, (tmp_path / "pull-1.out").read_text()
        first.kill()  # -9, mid-transfer
        first.wait(10)
        had = part.stat().st_size
        assert 0 < had < version.size
        # nothing under a final name: not in the blob store, not at its path in the download dir
        assert not catalog_b.blobs.path_for(version.sha256).exists()
        assert not (part.parent.parent / "style.safetensors").exists()

        second = start_server_process(server_home, port, delay=0.0, log=log)
        rc = client.wait(120)
        if rc != 0:  # the client ran out of retries before the restart: a second pull resumes
            assert "cannot reach" in (tmp_path / "pull-1.out").read_text() or rc == 1
            again = _pull(home_b, tmp_path / "pull-2.out")
            assert again.wait(120) == 0, (tmp_path / "pull-2.out").read_text()
            out_file = tmp_path / "pull-2.out"
        else:
            out_file = tmp_path / "pull-1.out"
        result = json.loads(out_file.read_text()[out_file.read_text().index("{"):])
        pulled = Catalog(home_b).resolve("style@1.0.0")
        assert pulled.sha256 == version.sha256 == result["sha256"]
        assert Catalog(home_b).blobs.path_for(pulled.sha256).read_bytes() == \
            pub.catalog.blobs.path_for(version.sha256).read_bytes()
        # the restarted server sent only what was missing (plus small metadata files at most)
        served = stats(url)["bytes_served"]
        print(f"client rc after restart {rc}; {had} of {version.size} bytes on disk at the kill; restarted server sent {served}")
        assert served < version.size - had + 64_000, (served, version.size, had)
        assert not list(home_b.glob("downloads/hub-*"))  # the work dir is gone after success
        assert files_containing(home_b, TOKEN.encode()) == []
        assert TOKEN not in out_file.read_text() and TOKEN not in log.read_text()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
