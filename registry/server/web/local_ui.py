"""``loradex ui``: the web app over the local home, for its owner (as Jupyter does it).

The server listens on 127.0.0.1 only, on a free port (or the one asked for). Its admin token is
random, made for this process and never shown: the way in is a one-time sign-in link
(``/ui/login/once/TICKET``, valid once, for ``TICKET_SECONDS``) that the command prints and opens
in the browser. The session it opens lasts while this process runs (a new process has another
admin token, so old sessions stop working). ``serve``'s uvicorn options are used as they are.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from typing import Callable

from .sessions import TICKET_SECONDS, issue_ticket

LOCAL_HOST = "127.0.0.1"


class LocalUI:
    """A prepared server: ``url``, ``login_link()``; ``run(on_started)`` blocks until stopped."""

    def __init__(self, catalog, port: int = 0):
        import uvicorn

        from ..app import build_server_app, uvicorn_options

        self._token = "ldx_ui_" + secrets.token_urlsafe(32)
        from ...paths import current_user

        # the local user is who reviews and moves aliases in their own home
        self.app = build_server_app(catalog, self._token, rate_limit=None, admin_name=current_user())
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((LOCAL_HOST, port))
        except OSError as exc:
            self.socket.close()
            from ...errors import UsageError

            raise UsageError(f"cannot listen on {LOCAL_HOST}:{port} ({exc.strerror or exc})",
                             hint="pick another --port, or leave it out for a free one") from None
        self.port = self.socket.getsockname()[1]
        self.url = f"http://{LOCAL_HOST}:{self.port}"
        options = uvicorn_options(LOCAL_HOST, self.port)
        self.server = uvicorn.Server(uvicorn.Config(self.app, lifespan="off", access_log=False, **options))

    def login_link(self, seconds: float = TICKET_SECONDS) -> str:
        """A new one-time sign-in link."""
        return f"{self.url}/ui/login/once/{issue_ticket(self.app, self._token, seconds)}"

    def run(self, on_started: Callable[[], None] | None = None) -> None:
        """Serve until interrupted; ``on_started`` is called (in another thread) once the server
        accepts connections."""
        if on_started is not None:
            def wait_then_call():
                deadline = time.monotonic() + 60
                while not self.server.started and time.monotonic() < deadline and not self.server.should_exit:
                    time.sleep(0.02)
                if self.server.started:
                    on_started()

            threading.Thread(target=wait_then_call, name="loradex-ui-started", daemon=True).start()
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self.socket.close()

    def stop(self) -> None:
        self.server.should_exit = True
