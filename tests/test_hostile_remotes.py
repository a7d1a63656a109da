"""Hostile remotes (issue 9) against the real clients, through an adversarial server on 127.0.0.1
(tests/_adversarial_server.py): path traversal in Hub tree names and in Civitai file names /
Content-Disposition, tokens on cross-host redirects, a declared 500 MB JSON body, slow-loris."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from _adversarial_server import AdversarialServer, oversize_json, redirect, send_json, slow_loris
from loradex.registry.errors import LoradexError

TOKEN = "tok-SECRET-123456"
HOSTILE_NAMES = ["../../evil.safetensors", "/tmp/loradex-evil-abs.safetensors", "C:\\evil.safetensors",
                 "C:evil.safetensors", "evil\x00.safetensors", "a/../../evil.safetensors", "..", "."]


@pytest.fixture
def server():
    with AdversarialServer() as srv:
        yield srv


def _civitai(server, **kw):
    from loradex.registry.remotes.civitai import CivitaiClient

    return CivitaiClient(server.url(), token=TOKEN, sleep=lambda s: None, retries=0, **kw)


# --- tokens and redirects ----------------------------------------------------------------------
def test_civitai_token_not_forwarded_to_another_host(server):
    other = server.url("localhost")  # same socket, different origin
    server.routes["/api/v1/model-versions/1"] = redirect(other + "/landing")
    server.routes["/landing"] = redirect(server.url() + "/back")  # and back: still no token
    server.routes["/back"] = lambda h, s: send_json(h, {"id": 1})
    with _civitai(server) as client:
        assert client.version(1) == {"id": 1}
    first, landing, back = server.requests
    assert first["headers"].get("authorization") == f"Bearer {TOKEN}"
    assert "authorization" not in landing["headers"], "token sent to another host after a redirect"
    assert "authorization" not in back["headers"], "token sent again after the redirect chain left the origin"


def test_civitai_download_redirect_to_cdn_drops_token(server, tmp_path):
    server.routes["/api/download/models/7"] = redirect(server.url("localhost") + "/cdn/file")
    server.routes["/cdn/file"] = lambda h, s: _send_bytes(h, b"\x00" * 64)
    with _civitai(server) as client:
        client.download(server.url() + "/api/download/models/7", tmp_path / "f.part", what="t")
    assert "authorization" not in server.requests[1]["headers"]
    assert (tmp_path / "f.part").read_bytes() == b"\x00" * 64


def test_hub_download_never_sends_token_to_a_redirect_host(server, tmp_path):
    """huggingface_hub follows the resolve redirect itself; the client must drop our token for a
    CDN on another host."""
    from loradex.registry.remotes.hub_client import pull_revision

    payload = b"hello adapter"
    blob_id = hashlib.sha1(b"blob %d\x00" % len(payload) + payload).hexdigest()
    server.routes["/api/models/"] = lambda h, s: send_json(h, {"id": "u/r", "sha": "a" * 40, "siblings": [
        {"rfilename": "x.txt", "size": len(payload), "blobId": blob_id}]})
    server.routes["/u/r/resolve/"] = redirect(server.url("localhost") + "/cdn/x.txt")
    server.routes["/cdn/x.txt"] = lambda h, s: _send_bytes(h, payload)
    _, got = pull_revision(server.url(), "u/r", "main", tmp_path / "dest", TOKEN)
    assert got["x.txt"].read_bytes() == payload
    cdn = [r for r in server.requests if r["path"].startswith("/cdn/")]
    assert cdn and all("authorization" not in r["headers"] for r in cdn), "token leaked to the CDN host"


def test_hub_download_longer_than_announced_is_cut_off(server, tmp_path):
    """The resolve HEAD announces 1,000 bytes; the GET then streams without end. The pull stops
    reading after the first chunk past the announced size (a typed error, no final file) instead
    of writing whatever the server sends until huggingface_hub compares sizes at the end."""
    from loradex.registry.remotes.hub_client import pull_revision

    def endless(handler, srv):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("ETag", '"x"')
        if handler.command == "HEAD":
            handler.send_header("Content-Length", "1000")
            handler.end_headers()
            return
        handler.end_headers()  # no Content-Length: the body ends when the server closes
        srv.sent["endless"] = 0
        try:
            while srv.sent["endless"] < 512 * 2**20:
                handler.wfile.write(b"\0" * 2**16)
                srv.sent["endless"] += 2**16
        except (BrokenPipeError, ConnectionResetError):
            pass
        handler.close_connection = True

    server.routes["/api/models/"] = lambda h, s: send_json(h, {"id": "u/r", "sha": "a" * 40, "siblings": [
        {"rfilename": "x.safetensors", "size": 1000, "blobId": "b" * 40}]})
    server.routes["/u/r/resolve/"] = endless
    dest = tmp_path / "dest"
    with pytest.raises(LoradexError, match="more than the 1,000 bytes"):
        pull_revision(server.url(), "u/r", "main", dest, None)
    assert not (dest / "x.safetensors").exists()
    assert server.sent["endless"] < 64 * 2**20, "kept reading long past the announced size"
    parts = list((dest / ".loradex-partial").glob("*.part"))
    assert all(p.stat().st_size <= 16 * 2**20 for p in parts)


def _send_bytes(handler, data: bytes, headers: dict | None = None):
    handler.send_response(200)
    handler.send_header("Content-Type", "application/octet-stream")
    handler.send_header("Content-Length", str(len(data)))
    handler.send_header("ETag", '"x"')
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(data)


# --- path traversal ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", HOSTILE_NAMES + ["ok/../../x", "\\\\server\\share\\x"])
def test_hub_tree_with_hostile_path_is_refused(server, tmp_path, name):
    from loradex.registry.remotes.hub_client import pull_revision

    server.routes["/api/models/"] = lambda h, s: send_json(h, {"id": "u/r", "sha": "a" * 40, "siblings": [
        {"rfilename": name, "size": 3, "blobId": "b" * 40}]})
    server.routes["/u/r/resolve/"] = lambda h, s: _send_bytes(h, b"abc")
    dest = tmp_path / "a" / "b" / "dest"
    with pytest.raises(LoradexError):
        pull_revision(server.url(), "u/r", "main", dest, None)
    assert not any(p.name.startswith("evil") for p in tmp_path.rglob("*"))
    assert not Path("/tmp/loradex-evil-abs.safetensors").exists()
    assert not any(r["path"].startswith("/u/r/resolve/") for r in server.requests), "fetched a refused path"


def _civitai_site(server, file_name: str, data: bytes, *, disposition: str | None = None):
    sha = hashlib.sha256(data).hexdigest().upper()
    info = {"id": 5, "modelId": 9, "name": "v1.0", "baseModel": "SD 1.5", "trainedWords": [],
            "model": {"name": "Evil Model", "type": "LORA"},
            "files": [{"id": 1, "name": file_name, "type": "Model", "primary": True, "sizeKB": len(data) / 1024,
                       "hashes": {"SHA256": sha}, "downloadUrl": server.url() + "/api/download/models/5"}]}
    server.routes["/api/v1/model-versions/5"] = lambda h, s: send_json(h, info)
    extra = {"Content-Disposition": disposition} if disposition else {}
    server.routes["/api/download/models/5"] = lambda h, s: _send_bytes(h, data, extra)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_civitai_file_name_cannot_escape_the_download_dir(server, tmp_path, name):
    from loradex.merge.synthetic_adapters import write_random_kohya_lora
    from loradex.registry.catalog.store import Catalog
    from loradex.registry.remotes.civitai import pull_civitai

    src = tmp_path / "src.safetensors"
    write_random_kohya_lora(src, rank=2, seed=3)
    _civitai_site(server, name, src.read_bytes())
    home = tmp_path / "nest" / "home"
    catalog = Catalog(home)
    try:
        result = pull_civitai(catalog, "civitai:5", endpoint=server.url(), token=TOKEN, sleep=lambda s: None)
        assert result.version.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    except LoradexError:
        pass  # refusing the name is fine; anything else (ValueError, OSError) is not
    outside = [p for p in tmp_path.rglob("*") if "evil" in p.name and home not in p.parents]
    assert outside == [], f"wrote outside the home: {outside}"
    assert not Path("/tmp/loradex-evil-abs.safetensors").exists()


def test_civitai_content_disposition_is_ignored_for_paths(server, tmp_path):
    from loradex.merge.synthetic_adapters import write_random_kohya_lora
    from loradex.registry.catalog.store import Catalog
    from loradex.registry.remotes.civitai import pull_civitai

    src = tmp_path / "src.safetensors"
    write_random_kohya_lora(src, rank=2, seed=4)
    _civitai_site(server, "fine.safetensors", src.read_bytes(),
                  disposition='attachment; filename="../../../cd-evil.safetensors"; filename*=UTF-8\'\'..%2F..%2Fcd-evil2')
    catalog = Catalog(tmp_path / "home")
    result = pull_civitai(catalog, "civitai:5", endpoint=server.url(), token=TOKEN, sleep=lambda s: None)
    assert result.version.file_name == "fine.safetensors"
    assert not [p for p in tmp_path.rglob("*cd-evil*")]


# --- oversize and slow servers -----------------------------------------------------------------
def test_civitai_declared_500_mb_json_is_refused_without_reading_it(server):
    server.routes["/api/v1/model-versions/2"] = oversize_json()
    t = time.monotonic()
    with _civitai(server, timeout=3.0) as client, pytest.raises(LoradexError):
        client.version(2)
    assert server.sent.get("oversize", 0) < 16 * 1024 * 1024, \
        f"client read {server.sent['oversize']:,} bytes of a 500 MB JSON answer"
    assert time.monotonic() - t < 10


def test_civitai_slow_loris_body_times_out(server, monkeypatch):
    monkeypatch.setenv("LORADEX_HTTP_DEADLINE_S", "3")  # total deadline (requests-reliability.md #5)
    server.routes["/api/v1/model-versions/3"] = slow_loris(12, interval=0.5)
    t = time.monotonic()
    with _civitai(server, timeout=2.0) as client, pytest.raises(LoradexError):
        client.version(3)
    assert time.monotonic() - t < 8, "a byte every 0.5 s kept the client waiting past its timeout"


def test_civitai_slow_loris_headers_time_out(server, monkeypatch):
    monkeypatch.setenv("LORADEX_HTTP_DEADLINE_S", "3")  # total deadline (requests-reliability.md #5)
    server.routes["/api/v1/model-versions/4"] = slow_loris(12, interval=0.5, body=False)
    t = time.monotonic()
    with _civitai(server, timeout=2.0) as client, pytest.raises(LoradexError):
        client.version(4)
    assert time.monotonic() - t < 8, "trickled headers kept the client waiting past its timeout"


def test_civitai_silent_server_times_out(server):
    server.routes["/api/v1/model-versions/6"] = lambda h, s: time.sleep(10)
    t = time.monotonic()
    with _civitai(server, timeout=1.0) as client, pytest.raises(LoradexError):
        client.version(6)
    assert time.monotonic() - t < 6


def test_hub_slow_loris_metadata_times_out(server, tmp_path, monkeypatch):
    """huggingface_hub's timeouts are per socket read too; a repo-info answer trickled one byte every
    0.5 s must end in a typed error once the total deadline (LORADEX_HTTP_DEADLINE_S) has passed, not when the server decides to stop."""
    from loradex.registry.remotes.hub_client import pull_revision

    monkeypatch.setenv("LORADEX_HTTP_DEADLINE_S", "3")
    server.routes["/api/models/"] = slow_loris(10, interval=0.5)
    t = time.monotonic()
    with pytest.raises(LoradexError):
        pull_revision(server.url(), "u/r", "main", tmp_path / "dest", None)
    assert time.monotonic() - t < 9, "a trickled repo-info answer kept the pull waiting"
