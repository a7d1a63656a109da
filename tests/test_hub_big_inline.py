"""Issue 17: a default ``huggingface_hub`` (>= 1.20, hf_xet installed, no HF_HUB_DISABLE_XET) sends
'lfs' files inline in the commit body; the server reads that body as a stream
(``registry/server/hub/commit_stream.py``), so a file of any size the server accepts goes through
without the whole body in memory, and hostile bodies leave nothing behind.

The servers here run with a small ``line_in_memory_bytes`` so the streamed path is the one taken
with files of a few MiB (the default threshold is 8 MiB).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import time
from pathlib import Path

import httpx
import pytest

from _served_app import ServedApp

TOKEN = "big-inline-secret-7c41"
AUTH = {"authorization": f"Bearer {TOKEN}"}
CLIENT_2X_UA = "unknown/None; hf_hub/2.4.0; python/3.11.7"


def _objects(root: Path) -> set[Path]:
    return {p for p in (root / "hub" / "objects").rglob("*") if p.is_file()}


def _incoming(root: Path) -> list[Path]:
    folder = root / "hub" / "incoming"
    return [p for p in folder.rglob("*")] if folder.exists() else []


def _wait_until(predicate, what: str, seconds: float = 20.0) -> None:
    """Poll (the server cleans up after the request's task ends, not before we look)."""
    end = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.05)


# --- the real client ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client_server(tmp_path_factory):
    from loradex.registry.server.hub import create_app

    root = tmp_path_factory.mktemp("big-inline-client")
    app = create_app(root, token=TOKEN, line_in_memory_bytes=1 << 20)
    with ServedApp(app) as server:
        yield {"url": server.url, "root": root}


def test_default_client_uploads_a_file_over_the_in_memory_line_through_the_streamed_parser(
        client_server, tmp_path, monkeypatch):
    from huggingface_hub import HfApi, constants, hf_hub_download

    from loradex.registry.server.hub import commit_stream

    assert not constants.HF_HUB_DISABLE_XET  # a default install: 'lfs' files would go to Xet
    parsed_whole: list[int] = []  # every body parse_body sees: whole short lines and skeletons
    real_parse = commit_stream.S.parse_body
    monkeypatch.setattr(commit_stream.S, "parse_body",
                        lambda body, *a, **k: (parsed_whole.append(len(body)), real_parse(body, *a, **k))[1])

    api = HfApi(endpoint=client_server["url"], token=TOKEN)
    api.create_repo("team/big")
    data = os.urandom(3 << 20) + b"\x00"  # 4 MiB of base64 in one line: 4x the in-memory threshold
    source = tmp_path / "big.safetensors"
    source.write_bytes(data)
    api.upload_file(path_or_fileobj=str(source), path_in_repo="big.safetensors", repo_id="team/big")

    assert parsed_whole and max(parsed_whole) < 1 << 20  # the 4 MiB line was never parsed whole
    digest = hashlib.sha256(data).hexdigest()
    entry = next(iter(api.get_paths_info("team/big", ["big.safetensors"])))
    assert entry.lfs is not None and entry.lfs.sha256 == digest and entry.size == len(data)
    stored = client_server["root"] / "hub" / "objects" / "sha256" / digest[:2] / digest[2:]
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest
    got = hf_hub_download("team/big", "big.safetensors", endpoint=client_server["url"], token=TOKEN,
                          cache_dir=tmp_path / "cache")
    assert hashlib.sha256(Path(got).read_bytes()).hexdigest() == digest
    assert _incoming(client_server["root"]) == []  # the staged file became the object


def test_a_streamed_text_file_under_the_lfs_threshold_stays_a_regular_file(client_server, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi(endpoint=client_server["url"], token=TOKEN)
    api.create_repo("team/text")
    text = ("a line of a model card\n" * 100_000).encode()  # 2.3 MB: streamed, but no NUL and < 10 MB
    api.upload_file(path_or_fileobj=text, path_in_repo="notes.md", repo_id="team/text")
    entry = next(iter(api.get_paths_info("team/text", ["notes.md"])))
    assert entry.lfs is None and entry.size == len(text)
    assert entry.blob_id == hashlib.sha1(b"blob %d\x00" % len(text) + text).hexdigest()
    got = hf_hub_download("team/text", "notes.md", endpoint=client_server["url"], token=TOKEN,
                          cache_dir=tmp_path / "cache")
    assert Path(got).read_bytes() == text


@pytest.mark.parametrize("size, mode", [(50 << 30, "regular"), ((50 << 30) + 1, "lfs")])
def test_preupload_keeps_xet_clients_inline_up_to_the_upload_limit(client_server, size, mode):
    """With the defaults (50 GiB upload limit) a Xet-without-asking client is told 'regular' for
    any file the server accepts, so no environment variable is needed; beyond the limit 'lfs'."""
    with httpx.Client(base_url=client_server["url"], headers={**AUTH, "user-agent": CLIENT_2X_UA}) as http:
        http.post("/api/repos/create", json={"name": "budget", "organization": "team"})
        answer = http.post("/api/models/team/budget/preupload/main",
                           json={"files": [{"path": "w.safetensors", "size": size, "sample": ""}]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["files"][0]["uploadMode"] == mode


# --- hostile bodies ---------------------------------------------------------------------------------
MAX_FILE = 256 << 10
MAX_BODY = 1 << 20


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory):
    """Tiny limits: 1 KiB lines parsed whole, 256 KiB files, 1 MiB bodies."""
    from loradex.registry.server.hub import create_app

    root = tmp_path_factory.mktemp("big-inline-hostile")
    app = create_app(root, token=TOKEN, max_upload_bytes=MAX_FILE, max_commit_bytes=MAX_BODY,
                     line_in_memory_bytes=1 << 10)
    with ServedApp(app) as server:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
            assert http.post("/api/repos/create", json={"name": "target", "organization": "team"}).status_code == 200
            yield {"url": server.url, "root": root, "http": http, "port": server.port}


def _head(http) -> str:
    return http.get("/api/models/team/target/revision/main").json()["sha"]


def _ndjson(*items) -> bytes:
    return b"".join(json.dumps(i).encode() + b"\n" for i in items)


HEADER = {"key": "header", "value": {"summary": "hostile", "description": ""}}


def _file_line(content: str, path: str = "w.safetensors") -> bytes:
    return b'{"key": "file", "value": {"content": "' + content.encode() + b'", "path": "' + path.encode() + \
        b'", "encoding": "base64"}}\n'


def _post(server, body: bytes, headers=None):
    return server["http"].post("/api/models/team/target/commit/main", content=body,
                               headers={"content-type": "application/x-ndjson", **(headers or {})})


B64 = base64.b64encode(os.urandom(48 << 10)).decode()  # 64 KiB of base64: a streamed line here


@pytest.mark.parametrize("body, status, words", [
    (_ndjson(HEADER) + _file_line(B64)[:40_000], 400, "truncated"),                      # cut inside content
    (_ndjson(HEADER) + _file_line(B64)[:-4], 400, "commit line 2"),                       # cut in the skeleton
    (_ndjson(HEADER) + _file_line(B64[:30_000] + "*" + B64[30_001:]), 400, "not base64"),
    (_ndjson(HEADER) + _file_line(B64[:-1]), 400, "multiple of 4"),
    (_ndjson(HEADER) + _file_line(B64[:1000] + "==" + B64[1002:]), 400, "not base64"),    # padding inside
    (_ndjson(HEADER) + _file_line(B64[:30_000] + "\\n" + B64[30_000:]), 400, "escape \\n"),
    (_ndjson(HEADER) + _file_line(B64[:30_000] + "\\u002a" + B64[30_001:]), 400, "escape \\u002a"),
    (_ndjson(HEADER) + b'{"key": "lfsFile", "value": {"content": "' + B64.encode() + b'", "path": "a", '
     b'"oid": "' + b"0" * 64 + b'"}}\n', 400, "only a 'file' operation"),
    (_ndjson(HEADER) + b'{"key": "file", "value": {"content": "' + B64.encode() + b'", "content": "QUFB", '
     b'"path": "a"}}\n', 400, "appears twice"),
    (_ndjson(HEADER) + b'{"key": "file", "value": {"content": "' + B64.encode() + b'", "path": "a", '
     b'"encoding": "hex"}}\n', 400, "only base64"),
    (_ndjson(HEADER) + b'{"key": "file", "value": {"content": "QUFB", "path": "a", "note": "'
     + b"x" * (70 << 10) + b'"}}\n', 413, "outside the file content"),
    (_ndjson(HEADER) + _file_line(base64.b64encode(os.urandom(MAX_FILE + 3)).decode()), 413, "upload limit"),
    (_ndjson({"key": "header", "value": {"summary": ""}}) + _file_line(B64), 400, "non-empty summary"),
])
def test_hostile_commit_bodies_are_refused_and_leave_nothing(strict_server, body, status, words):
    root, http = strict_server["root"], strict_server["http"]
    head, objects = _head(http), _objects(root)
    answer = _post(strict_server, body)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"]
    assert _head(http) == head and _objects(root) == objects
    _wait_until(lambda: _incoming(root) == [], "staged files removed")


def _raw_commit_head(port: int, length: int) -> bytes:
    return (f"POST /api/models/team/target/commit/main HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/x-ndjson\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def test_a_body_declared_over_the_commit_cap_is_refused_before_it_is_read(strict_server):
    with socket.create_connection(("127.0.0.1", strict_server["port"]), timeout=20) as sock:
        sock.sendall(_raw_commit_head(strict_server["port"], MAX_BODY + 1))  # and not one byte of body
        answer = b""
        while b"}" not in answer:
            answer += sock.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"over the limit" in body


def test_legal_json_escapes_in_the_content_decode_to_the_same_bytes(strict_server):
    """``\\/`` and ``\\u0041``-style escapes are legal JSON for base64 characters; an escape cut
    between two pieces of the body is handled by the unit test below."""
    http, root = strict_server["http"], strict_server["root"]
    data = os.urandom(60 << 10)
    text = base64.b64encode(data).decode()
    assert "/" in text and "A" in text
    escaped = text.replace("/", "\\/").replace("A", "\\u0041")
    answer = _post(strict_server, _ndjson(HEADER) + _file_line(escaped, "escaped.bin"))
    assert answer.status_code == 200, answer.text
    got = http.get("/team/target/resolve/main/escaped.bin")
    assert got.status_code == 200 and got.content == data
    _wait_until(lambda: _incoming(root) == [], "staged files removed")


def test_a_client_that_disconnects_mid_body_leaves_no_staged_file_and_no_commit(strict_server):
    root, http, port = strict_server["root"], strict_server["http"], strict_server["port"]
    head, objects = _head(http), _objects(root)
    body = _ndjson(HEADER) + _file_line(base64.b64encode(os.urandom(200 << 10)).decode())
    sent = body[:len(body) // 2]
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_raw_commit_head(port, len(body)) + sent)
        # the server is decoding into a staged file under hub/incoming/ …
        _wait_until(lambda: any(p.suffix == ".part" and p.stat().st_size > 0 for p in _incoming(root)),
                    "a staged file being written")
    # … and the client went away: the staged file goes, nothing is published
    _wait_until(lambda: not any(p.suffix == ".part" for p in _incoming(root)), "staged file removed")
    _wait_until(lambda: _incoming(root) == [], "work folder removed")
    assert _head(http) == head and _objects(root) == objects


# --- the line scanner against json.loads, fed in every piece size ----------------------------------
LINES = [
    {"key": "file", "value": {"content": base64.b64encode(bytes(range(256)) * 40).decode(), "path": "a/b.bin",
                              "encoding": "base64"}},
    {"value": {"path": "later/" + "p" * 600 + ".bin", "x": {"content": "not-the-file"}, "content": "QUJD"}, "key": "file"},
    {"key": "header", "value": {"summary": "s" * 3000, "description": "quote \" and \\ and \u00e9"}},
    {"key": "deletedFile", "value": {"path": "gone.txt"}},
]


@pytest.mark.parametrize("piece", [1, 2, 3, 5, 7, 4096])
def test_reader_gives_what_json_loads_gives_whatever_the_pieces(tmp_path, piece):
    from loradex.registry.server.hub.commit_stream import CommitBodyReader, CommitLimits

    raw = b"".join(json.dumps(line).encode() + b"\n" for line in LINES)
    # an escaped key and escaped base64 characters, which json.loads decodes the same way
    raw += (b'{"key": "file", "value": {"cont\\u0065nt": "\\u0051\\/\\/\\/", "path": "esc.bin", "pad": "'
            + b"x" * 600 + b'"}}')  # over the 512-byte line: scanned; no final newline
    reader = CommitBodyReader(tmp_path, CommitLimits(max_body_bytes=1 << 30, max_file_bytes=1 << 30,
                                                     line_in_memory_bytes=512))
    for i in range(0, len(raw), piece):
        reader.feed(raw[i:i + piece])
    lines = reader.finish()
    expected = [json.loads(line) for line in raw.splitlines()]
    assert [line.number for line in lines] == [1, 2, 3, 4, 5]
    for line, want in zip(lines, expected):
        content = want["value"].pop("content", None)
        assert line.item == want
        if content is None:
            assert line.staged is None
        else:
            data = base64.b64decode(content)
            assert line.staged.path.read_bytes() == data
            assert (line.staged.sha256, line.staged.size, line.staged.head) == (
                hashlib.sha256(data).hexdigest(), len(data), data[:512])


def test_a_killed_servers_staged_commit_is_swept_at_the_next_start_and_a_live_one_is_not(tmp_path):
    """A server killed mid-body leaves its work folder with an unlocked lock file; the next app on
    the same home removes it, while a folder a live request holds stays."""
    from loradex.registry.files.atomic_files import held_work_dir
    from loradex.registry.server.hub import create_app

    incoming = tmp_path / "hub" / "incoming"
    dead = incoming / "commit-dead"
    dead.mkdir(parents=True)
    (dead / ".tmp-loradex-abc.work-lock").write_bytes(b"")  # nobody holds its lock: a dead server's
    (dead / "000001.part").write_bytes(b"half a file")
    with held_work_dir(incoming, "commit-") as live:
        (live / "000001.part").write_bytes(b"being received")
        create_app(tmp_path, token=TOKEN)
        assert not dead.exists() and (live / "000001.part").exists()
