"""A fake upstream on 127.0.0.1 for `loradex outdated` / `pull --update` (tests/test_upstream.py):
a Civitai-style API whose model gains versions, changes base model and loses versions (or the
whole model) between calls, plus the Hub's repo-info call; and a second "site" (a storage host
reached as ``localhost`` on another port) that the downloads redirect to, so a test can see
which requests carried the token. Standard library HTTP servers; every request is logged with
its host, path, query and Authorization header."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from loradex.registry.files.hashing import hash_file


class _Server:
    def __init__(self, handle):
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                parts = urlsplit(self.path)
                upstream.log.append({"host": self.headers.get("Host"), "path": parts.path, "query": parts.query,
                                     "authorization": self.headers.get("Authorization")})
                status, headers, body = handle(parts.path, parse_qs(parts.query))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.log: list[dict] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _json(status: int, data) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(data).encode()


class FakeUpstream:
    """``api`` (http://127.0.0.1:P) answers the Civitai API and the Hub's repo info; ``storage``
    (http://localhost:Q: another site) serves the files a download redirects to.

    ``add_version(vid, name, base, published, path)``, ``delete_version(vid)``,
    ``delete_model()``, ``hub_repos[repo] = {"sha": COMMIT, "files": {path: sha256}}`` (a missing
    repo is a 404 with X-Error-Code RepoNotFound), ``failing = True`` (every API call a 500)."""

    MODEL_ID = 5150

    def __init__(self):
        self.versions: dict[int, dict] = {}
        self.files: dict[int, bytes] = {}
        self.model_gone = False
        self.failing = False
        self.hub_repos: dict[str, dict] = {}
        self.api = _Server(self._api)
        self.storage = _Server(self._storage)
        self.endpoint = f"http://127.0.0.1:{self.api.port}"
        self.storage_origin = f"http://localhost:{self.storage.port}"

    def close(self):
        self.api.close()
        self.storage.close()

    # --- changes between calls ---
    def add_version(self, vid: int, name: str, base: str, published: str, path: Path) -> None:
        h = hash_file(path)
        self.files[vid] = Path(path).read_bytes()
        self.versions[vid] = {
            "id": vid, "modelId": self.MODEL_ID, "name": name, "baseModel": base, "baseModelType": "Standard",
            "publishedAt": published, "status": "Published", "trainedWords": ["fkstyle"],
            "description": f"<p>{name}</p>", "earlyAccessEndsAt": None,
            "model": {"name": "Fake Style", "type": "LORA", "nsfw": False},
            "files": [{"id": vid * 10, "name": f"fakeStyle_{name}.safetensors", "type": "Model", "primary": True,
                       "sizeKB": len(self.files[vid]) / 1024, "metadata": {"format": "SafeTensor"},
                       "hashes": {"SHA256": h.sha256.upper(), "AutoV2": h.autov2.upper()},
                       "downloadUrl": f"{self.endpoint}/api/download/models/{vid}"}],
            "images": [],
            "downloadUrl": f"{self.endpoint}/api/download/models/{vid}",
        }

    def delete_version(self, vid: int) -> None:
        del self.versions[vid]

    def delete_model(self) -> None:
        self.model_gone = True

    # --- the API site ---
    def _api(self, path: str, query: dict):
        if self.failing:
            return _json(500, {"error": "upstream is having a bad day"})
        parts = [p for p in path.split("/") if p]
        if path.startswith("/api/models/") and "revision" in parts:  # the Hub: /api/models/O/R/revision/REV
            repo = "/".join(parts[2:4])
            info = self.hub_repos.get(repo)
            if info is None:
                return 404, {"Content-Type": "application/json", "X-Error-Code": "RepoNotFound"}, \
                    b'{"error": "Repository not found"}'
            siblings = [{"rfilename": p, "blobId": sha[:40], "size": 1, "lfs": {"sha256": sha, "size": 1}}
                        for p, sha in info["files"].items()]
            return _json(200, {"id": repo, "sha": info["sha"], "siblings": siblings})
        if self.model_gone and path.startswith("/api/"):
            return _json(410, {"error": "Model deleted"})
        if path == f"/api/v1/models/{self.MODEL_ID}":
            listed = sorted(self.versions.values(), key=lambda v: (v["publishedAt"], v["id"]), reverse=True)
            return _json(200, {"id": self.MODEL_ID, "name": "Fake Style", "type": "LORA",
                               "modelVersions": [{k: v for k, v in ver.items() if k not in ("model", "modelId")}
                                                 for ver in listed]})
        if len(parts) == 4 and parts[:3] == ["api", "v1", "model-versions"] and parts[3].isdigit():
            ver = self.versions.get(int(parts[3]))
            return _json(200, ver) if ver else _json(404, {"error": "Model version not found"})
        if len(parts) == 4 and parts[:3] == ["api", "download", "models"] and parts[3].isdigit():
            # a hop on the same site first, then the storage site (with a token= it must not get)
            return 307, {"Location": f"/api/download/files/{parts[3]}"}, b""
        if len(parts) == 4 and parts[:3] == ["api", "download", "files"] and parts[3].isdigit():
            return 307, {"Location": f"{self.storage_origin}/file/{parts[3]}?sig=abc&token=should-not-travel"}, b""
        return _json(404, {"error": f"no route {path}"})

    # --- the storage site ---
    def _storage(self, path: str, query: dict):
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2 and parts[0] == "file" and parts[1].isdigit() and int(parts[1]) in self.files:
            return 200, {"Content-Type": "application/octet-stream"}, self.files[int(parts[1])]
        return _json(404, {"error": "no such object"})
