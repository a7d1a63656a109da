"""Running the Hub app with uvicorn in a background thread (tests, embedding)."""

from __future__ import annotations

import os
import threading
import time
from typing import Callable

from .app import create_app


def serve_in_thread(root: str | os.PathLike, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                    **app_options) -> tuple[str, Callable[[], None]]:
    """Start the standalone Hub app; returns ``(url, stop)``. ``port=0`` picks a free port.
    ``stop()`` asks uvicorn to exit and waits for the thread."""
    return serve_app_in_thread(create_app(root, token=token, **app_options), host, port)


def serve_app_in_thread(app, host: str = "127.0.0.1", port: int = 0) -> tuple[str, Callable[[], None]]:
    """Run any ASGI ``app`` (e.g. ``server_app.build_server_app``, what ``loradex serve`` runs)
    under uvicorn in a daemon thread; returns ``(url, stop)``."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off",
                            access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"loradex-hub-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"hub server failed to start on {host}:{port}")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"hub server did not start within 30 s on {host}:{port}")
        time.sleep(0.02)
    bound_port = server.servers[0].sockets[0].getsockname()[1]

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)

    return f"http://{host}:{bound_port}", stop
