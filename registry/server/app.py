"""The ``loradex serve`` application: one FastAPI app, one router per feature.

Each feature module registers a router factory with ``@register_router("name")``; the modules to
import are listed in ``ROUTER_MODULES`` (append yours — the Hub server adds its own).
``build_server_app(catalog, token=None)`` imports them and mounts every registered router.

Routers read their catalog and auth check from ``request.app.state``:
``state.catalog`` and ``state.authorize`` (a ``server_tokens.ServeAuthorizer``):
``authorize(request, scope, namespace=None) -> bool`` or ``authorize.check(…) -> Principal``
(raises the Hub's 401/403 errors). Tokens are the catalog's ``serve token``s plus the admin
token ``token`` ($LORADEX_SERVE_TOKEN); writes always need a write token, ``public_read`` opens
reads only.
"""

from __future__ import annotations

import importlib
from typing import Callable

from .hub.protocol_errors import install_error_handlers
from .tokens import ServeAuthorizer

ROUTER_MODULES = ["loradex.registry.server.civitai_api", "loradex.registry.server.hub_mirror_router"]
SERVER_ROUTERS: dict[str, Callable] = {}  # name → factory() returning an APIRouter


def register_router(name: str):
    def deco(factory: Callable) -> Callable:
        SERVER_ROUTERS[name] = factory
        return factory

    return deco


def build_server_app(catalog, token: str | None = None, *, public_read: bool = False,
                     routers: list[str] | None = None, rate_limit=None, max_upload_bytes: int | None = None,
                     audit: bool = True, public_url: str | None = None):
    """``token``: the admin token ($LORADEX_SERVE_TOKEN), next to the catalog's serve tokens.
    ``rate_limit``: requests/s per token (a float, or a ``server_guard.RateLimiter``); None = no
    limit. ``max_upload_bytes``: the largest LFS object the Hub paths accept. ``audit``: record
    write requests in the catalog's audit log. ``public_url``: the server's address as clients
    reach it (``serve --public-url``); every URL the server hands out (Civitai download
    redirects, ``downloadUrl``, ``nextPage``, Hub repo and LFS upload URLs) starts with it, never
    with the request's ``Host`` header (None: the address the connection arrived on). No CORS middleware: browsers on other origins get
    no ``Access-Control-Allow-Origin`` and cannot read answers."""
    from fastapi import FastAPI

    from .guard import RateLimiter, ServerGuard

    for module in ROUTER_MODULES:
        importlib.import_module(module)
    app = FastAPI(title="loradex", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.catalog = catalog
    app.state.public_url = check_public_url(public_url)
    app.state.authorize = ServeAuthorizer(catalog, token, public_read=public_read)
    app.state.hub_options = {} if max_upload_bytes is None else {"max_upload_bytes": max_upload_bytes}
    install_error_handlers(app)
    for name, factory in SERVER_ROUTERS.items():
        if routers is None or name in routers:
            app.include_router(factory())
    limiter = rate_limit if rate_limit is None or isinstance(rate_limit, RateLimiter) else RateLimiter(rate_limit)
    app.add_middleware(ServerGuard, catalog=catalog, limiter=limiter, audit=audit, authorizer=app.state.authorize)
    return app


def check_public_url(url: str | None) -> str | None:
    """``url`` as the base of links (``http(s)://host[:port][/prefix]/``), or ``UsageError``."""
    from urllib.parse import urlsplit

    from ..errors import UsageError

    if url is None:
        return None
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 — raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment or parts.username or any(ch.isspace() or ord(ch) < 32 for ch in url.strip()):
        raise UsageError(f"invalid --public-url {url!r}: write http(s)://HOST[:PORT][/PREFIX]")
    text = url.strip()
    return text if text.endswith("/") else text + "/"


def default_public_url(host: str, port: int) -> str | None:
    """The public URL ``serve`` derives from ``--host``/``--port``: ``http://HOST:PORT/``; None for a
    wildcard address (0.0.0.0, ::), where links use the address each connection arrived on."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        return None
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
