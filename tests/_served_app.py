"""An ASGI app under uvicorn in a thread on 127.0.0.1 (the Hub and Civitai test servers)."""

from __future__ import annotations

import threading
import time


class ServedApp:
    """An ASGI app under uvicorn in a thread, listening on ``ports`` sockets of 127.0.0.1 (each
    its own origin); ``urls`` lists them."""

    def __init__(self, app, ports: int = 1, *, options=None, scheme: str = "http"):
        """``options(port)``: extra uvicorn settings for the first socket's port (TLS, proxies)."""
        import socket

        import uvicorn

        self.sockets = []
        for _ in range(ports):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            self.sockets.append(sock)
        self.urls = [f"{scheme}://127.0.0.1:{s.getsockname()[1]}" for s in self.sockets]
        self.url = self.urls[0]
        self.port = self.sockets[0].getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        settings = {"log_level": "warning", **(options(self.port) if options else {})}
        config = uvicorn.Config(app, lifespan="off", access_log=False, **settings)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": self.sockets}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
        for sock in self.sockets:
            sock.close()
