"""A fault-injecting remote for tests/test_hostile_pull.py: a Civitai-style site and a Hub-style
repo served from tests/_adversarial_server.py on 127.0.0.1, each answering with a valid document
that a test can replace by a mutated one, plus the mutations themselves.

``mutation_plan(doc)`` walks every field of a JSON document and lists, for each, the document
with that field missing, null, of another type, a path-traversal string, a huge or negative
number, 100,000 levels of nesting, and a few whole-document breakages; ``apply_mutation`` makes
the bytes (the plan is applied to a fresh valid document each time, so the file it describes can
differ from one mutation to the next). ``run_cli`` runs ``loradex`` in
this process (``loradex.cli.main.main``) and returns its exit code and stderr.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import struct
import sys
from pathlib import Path

from _adversarial_server import send_json

TRAVERSAL = "../../../../evil-x"
DEEP = 100_000
_HUGE = "\x00HUGE\x00"
_DEEP = "\x00DEEP\x00"


# --- mutations --------------------------------------------------------------------------------
def _paths(doc, prefix=()):
    """Every (path, value) of a JSON document, depth first (the root excluded)."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        yield prefix + (key,), value
        yield from _paths(value, prefix + (key,))


def _other_type(value):
    if isinstance(value, bool):
        return "yes"
    if isinstance(value, (int, float)):
        return "abc"
    if isinstance(value, str):
        return 12345
    if isinstance(value, list):
        return {"a": 1}
    if isinstance(value, dict):
        return ["a"]
    return {"x": [1]}


def _set(doc, path, value=None, *, delete=False):
    import copy

    out = copy.deepcopy(doc)
    node = out
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def _text(doc) -> bytes:
    text = json.dumps(doc)
    text = text.replace(json.dumps(_HUGE), "1e999").replace(json.dumps(_DEEP), "[" * DEEP + "]" * DEEP)
    return text.encode()


def mutation_plan(doc) -> list[tuple[str, tuple | None, str]]:
    """(label, path, kind) for each mutation of each field of ``doc`` (then whole-document ones,
    path None): missing, null, another type, a path-traversal string (strings and numbers), 1e999
    and -1 (numbers), 100k-deep nesting (top-level fields)."""
    plan = []
    for path, value in _paths(doc):
        kinds = []
        if isinstance(path[-1], str):
            kinds.append("missing")
        if value is not None:
            kinds.append("null")
        kinds.append("type")
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            kinds.append("traversal")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            kinds += ["huge", "negative"]
        if len(path) == 1:  # the depth cap applies before any field is read: once per top-level field
            kinds.append("deep")
        plan += [(f"{'/'.join(map(str, path))}:{kind}", path, kind) for kind in kinds]
    plan += [(f"document:{kind}", None, kind) for kind in ("not-json", "empty", "array", "deep", "string")]
    return plan


_WHOLE = {"not-json": b'{"id": 1,', "empty": b"", "array": b"[]", "string": b'"../x"'}


def apply_mutation(doc, path: tuple | None, kind: str) -> bytes:
    """The JSON bytes of ``doc`` with one mutation (see :func:`mutation_plan`)."""
    if path is None:
        return _text(_DEEP) if kind == "deep" else _WHOLE[kind]
    if kind == "missing":
        return _text(_set(doc, path, delete=True))
    node = doc
    for key in path:
        node = node[key]
    new = {"null": None, "type": _other_type(node), "traversal": TRAVERSAL, "huge": _HUGE, "negative": -1,
           "deep": _DEEP}[kind]
    return _text(_set(doc, path, new))


# --- adapter bytes ------------------------------------------------------------------------------
def with_nonce(data: bytes, nonce: str) -> bytes:
    """The same safetensors file with ``nonce`` in its metadata: other bytes, same tensors, so
    every mutation pulls a file the catalog has not seen."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.setdefault("__metadata__", {})["nonce"] = nonce
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data[8 + n:]


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def send_bytes(handler, data: bytes, headers: dict | None = None, *, length: bool = True) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/octet-stream")
    if length:
        handler.send_header("Content-Length", str(len(data)))
    handler.send_header("ETag", '"x"')
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(data)
    if not length:
        handler.close_connection = True


def send_raw_json(handler, body: bytes) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def gzip_bomb(decoded: int) -> bytes:
    """``decoded`` zero bytes, gzip-compressed (about 1,000 times smaller)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as gz:
        chunk = b"\0" * (1 << 20)
        for _ in range(decoded // len(chunk)):
            gz.write(chunk)
    return buf.getvalue()


# --- a Civitai-style site ---------------------------------------------------------------------------
VERSION_ID = 5
MODEL_ID = 9


class CivitaiSite:
    """``GET /api/v1/model-versions/5`` answers ``version`` (or ``answer``, raw bytes, when set),
    ``GET /api/v1/models/9`` answers ``model`` (or ``model_answer``); ``GET
    /api/download/models/5`` sends ``data``."""

    def __init__(self, server, data: bytes):
        self.server = server
        self.answer: bytes | None = None
        self.model_answer: bytes | None = None
        self.model = {"id": MODEL_ID, "name": "Fault Model", "type": "LORA",
                      "modelVersions": [{"id": VERSION_ID, "name": "v1.0"}]}
        self.set_file(data)
        server.routes[f"/api/v1/model-versions/{VERSION_ID}"] = self._version
        server.routes[f"/api/v1/models/{MODEL_ID}"] = lambda h, s: send_raw_json(
            h, self.model_answer if self.model_answer is not None else json.dumps(self.model).encode())
        server.routes[f"/api/download/models/{VERSION_ID}"] = lambda h, s: send_bytes(h, self.data)

    def set_file(self, data: bytes) -> None:
        self.data = data
        self.version = {
            "id": VERSION_ID, "modelId": MODEL_ID, "name": "v1.0", "baseModel": "SD 1.5", "trainedWords": ["zk"],
            "description": "<p>hi</p>", "model": {"name": "Fault Model", "type": "LORA"},
            "files": [{"id": 1, "name": "fault.safetensors", "type": "Model", "primary": True,
                       "sizeKB": len(data) / 1024, "hashes": {"SHA256": hashlib.sha256(data).hexdigest().upper()},
                       "downloadUrl": self.server.url() + f"/api/download/models/{VERSION_ID}"}],
            "images": [{"url": "https://img.test/1.jpeg", "width": 512,
                        "meta": {"prompt": "zk, a fox <lora:fault:0.8>", "seed": 7, "Size": "512x512"}}],
        }

    def _version(self, handler, server):
        if self.answer is not None:
            send_raw_json(handler, self.answer)
        else:
            send_json(handler, self.version)


# --- a Hub-style repo -------------------------------------------------------------------------------
REPO = "u/r"
COMMIT = "c" * 40


class HubRepo:
    """One repo ``u/r`` at commit COMMIT holding ``files`` ({path: bytes}); branches main and
    production point at it. ``info_answer`` / ``refs_answer`` (raw bytes) replace the generated
    answers; ``siblings`` edits (path → dict of fields) are applied to the generated model info."""

    def __init__(self, server, files: dict[str, bytes]):
        self.server = server
        self.files = dict(files)
        self.info_answer: bytes | None = None
        self.refs_answer: bytes | None = None
        self.sibling_edits: dict[str, dict] = {}
        self.headers: dict[str, str] = {}  # extra headers on file answers
        self.send_length = True
        server.routes[f"/api/models/{REPO}/revision/"] = self._info
        server.routes[f"/api/models/{REPO}/refs"] = self._refs
        server.routes[f"/{REPO}/resolve/"] = self._resolve

    def info(self) -> dict:
        siblings = []
        for path, data in sorted(self.files.items()):
            entry = {"rfilename": path, "size": len(data), "blobId": git_blob_id(data)}
            entry.update(self.sibling_edits.get(path, {}))
            siblings.append(entry)
        return {"id": REPO, "sha": COMMIT, "siblings": siblings}

    def refs(self) -> dict:
        return {"branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": COMMIT},
                             {"name": "production", "ref": "refs/heads/production", "targetCommit": COMMIT}],
                "tags": [{"name": "v1.0.0", "ref": "refs/tags/v1.0.0", "targetCommit": COMMIT}], "converts": []}

    def _info(self, handler, server):
        send_raw_json(handler, self.info_answer if self.info_answer is not None else json.dumps(self.info()).encode())

    def _refs(self, handler, server):
        send_raw_json(handler, self.refs_answer if self.refs_answer is not None else json.dumps(self.refs()).encode())

    def _resolve(self, handler, server):
        path = handler.path.split("?")[0].split("/resolve/", 1)[1].split("/", 1)[1]
        data = self.files.get(path)
        if data is None:
            send_json(handler, {"error": "no such file"}, status=404, headers={"X-Error-Code": "EntryNotFound"})
            return
        send_bytes(handler, data, {"X-Repo-Commit": COMMIT, **self.headers}, length=self.send_length)


def manifest_for(data: bytes, *, name: str = "fault", version: str = "1.0.0", card: bool = True,
                 record_id: str | None = None) -> dict:
    sha = hashlib.sha256(data).hexdigest()
    # what a pull reads of the manifest stage_version writes (the rest is informational)
    return {
        "schema": "loradex.hub-manifest/1", "name": name, "version": version,
        "kind": "lora", "base": "sd1", "base_model": "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "description": "A fault test.", "file": {"path": f"{name}.safetensors", "hashes": {"sha256": sha}},
        "files": {f"{name}.safetensors": {"sha256": sha}}, "trigger_words": ["zk"],
        "records": [{"id": record_id, "json": f"records/{record_id}.json", "image": None}] if record_id else [],
        "card": {"path": "evaluation/card.json"} if card else None,
    }


# --- the CLI in this process -------------------------------------------------------------------------
def run_cli(*args: str) -> tuple[int, str]:
    """(exit code, stderr) of ``loradex ARGS`` run in this process through the real entry point
    (errors become one line and an exit code exactly as for the console script)."""
    from loradex.cli.main import main

    err, out = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, err.getvalue()


_COMMAND = []


def run_cli_fast(*args: str) -> tuple[int, str]:
    """``run_cli`` for loops of hundreds of calls: the same click command (built once, not per
    call) and the same error mapping as ``loradex.cli.main.main`` (``describe_error``: a
    LoradexError is one line and its exit code, anything else is exit 3, a bug)."""
    from loradex.cli.main import describe_error

    if not _COMMAND:
        import typer

        from loradex.cli.app import app

        _COMMAND.append(typer.main.get_command(app))
    err, out = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            _COMMAND[0].main(list(args), prog_name="loradex", standalone_mode=False)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
        except BaseException as exc:  # noqa: BLE001 - what cli.main does with it
            code, message = describe_error(exc)
            if code is None:
                import traceback

                code = 3
                sys.stderr.write("loradex: internal error: " + "".join(traceback.format_exception(exc)))
            else:
                sys.stderr.write(f"error: {message}\n")
    return code, err.getvalue()


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for folders)."""
    out: dict[str, bytes | None] = {}
    for p in sorted(Path(root).rglob("*")):
        out[str(p.relative_to(root))] = p.read_bytes() if p.is_file() and not p.is_symlink() else None
    return out
