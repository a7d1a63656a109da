"""A small adversarial HTTP server on 127.0.0.1 for tests/test_hostile_remotes.py.

Each route is a function (handler, server) → None that writes whatever it likes to the socket:
hostile JSON, redirects to another host, a declared 500 MB body, a slow-loris trickle. The server
records every request (path and headers) and how many body bytes each route managed to send
before the client hung up.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class AdversarialServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, object] = {}  # path prefix → route function
        self.requests: list[dict] = []
        self.sent: dict[str, int] = {}
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}"

    def handle_error(self, request, client_address):
        """A client hanging up mid-answer is what these tests provoke: no traceback on stderr
        (it would land in the output of a CLI run in the same process)."""
        import sys

        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in separate writes: no 40 ms delayed-ACK stall

    def log_message(self, *args):  # quiet
        pass

    def _dispatch(self):
        server: AdversarialServer = self.server
        server.requests.append({"method": self.command, "path": self.path, "host": self.headers.get("Host"),
                                "headers": {k.lower(): v for k, v in self.headers.items()}})
        for prefix, route in sorted(server.routes.items(), key=lambda kv: -len(kv[0])):
            if self.path.startswith(prefix):
                try:
                    route(self, server)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return
        send_json(self, {"error": "no route"}, status=404)

    do_GET = do_POST = do_HEAD = _dispatch


def send_json(handler, obj, *, status: int = 200, headers: dict | None = None) -> None:
    body = json.dumps(obj).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def redirect(location: str, status: int = 302):
    def route(handler, server):
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return route


def oversize_json(declared: int = 500 * 1024 * 1024, cap: int = 64 * 1024 * 1024, key: str = "oversize"):
    """Declare ``declared`` bytes of JSON; send up to ``cap`` of them as fast as the client reads."""
    def route(handler, server):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(declared))
        handler.end_headers()
        chunk = b"[" + b"1," * 32767 + b"1"
        server.sent[key] = 0
        while server.sent[key] < cap:
            handler.wfile.write(chunk)
            server.sent[key] += len(chunk)
        time.sleep(30)  # then stall, holding the connection open
    return route


def slow_loris(seconds: float, *, interval: float = 0.5, body: bool = True, key: str = "slow"):
    """Send one byte every ``interval`` s for ``seconds`` (each read succeeds: a per-read timeout
    never fires); ``body=False`` trickles the status line and headers instead."""
    def route(handler, server):
        server.sent[key] = 0
        end = time.monotonic() + seconds
        if body:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(10**6))
            handler.end_headers()
            data = b" " * 10**6
        else:
            data = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10**6
        i = 0
        while time.monotonic() < end and i < len(data):
            handler.wfile.write(data[i:i + 1])
            handler.wfile.flush()
            server.sent[key] += 1
            i += 1
            time.sleep(interval)
        handler.close_connection = True
    return route
