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

from .server_tokens import ServeAuthorizer

ROUTER_MODULES = ["loradex.registry.civitai_api", "loradex.registry.hub_mirror_router"]
SERVER_ROUTERS: dict[str, Callable] = {}  # name → factory() returning an APIRouter


def register_router(name: str):
    def deco(factory: Callable) -> Callable:
        SERVER_ROUTERS[name] = factory
        return factory

    return deco


NOT_FOUND_MESSAGE = "Sorry, we can't find the page you are looking for."  # the Hub's own wording
INTERNAL_ERROR_MESSAGE = "Internal server error; the server log has the details"


def install_error_handlers(app) -> None:
    """Every error leaves as ``{"error": message}`` (the Hub's error JSON; Civitai's has the same
    key): protocol errors with their status and headers, unknown paths as the Hub's 404, and any
    unexpected exception as a generic 500 — never a stack trace or exception text."""
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from .hub_server.protocol_errors import HubProtocolError

    @app.exception_handler(HubProtocolError)
    async def _protocol_error(request, exc: HubProtocolError):
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers())

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        message = NOT_FOUND_MESSAGE if exc.status_code == 404 else str(exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code, headers={"X-Error-Message": message})

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        return JSONResponse({"error": INTERNAL_ERROR_MESSAGE}, status_code=500,
                            headers={"X-Error-Message": INTERNAL_ERROR_MESSAGE})


async def read_body_capped(request, limit: int) -> bytes:
    """The request body, refused with a 413 (``TooLarge``) as soon as it is over ``limit`` bytes,
    by its declared Content-Length or by what arrives."""
    from .hub_server.protocol_errors import TooLarge

    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"request body of {declared} bytes is over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def build_server_app(catalog, token: str | None = None, *, public_read: bool = False,
                     routers: list[str] | None = None, rate_limit=None, max_upload_bytes: int | None = None,
                     audit: bool = True):
    """``token``: the admin token ($LORADEX_SERVE_TOKEN), next to the catalog's serve tokens.
    ``rate_limit``: requests/s per token (a float, or a ``server_guard.RateLimiter``); None = no
    limit. ``max_upload_bytes``: the largest LFS object the Hub paths accept. ``audit``: record
    write requests in the catalog's audit log. No CORS middleware: browsers on other origins get
    no ``Access-Control-Allow-Origin`` and cannot read answers."""
    from fastapi import FastAPI

    from .server_guard import RateLimiter, ServerGuard

    for module in ROUTER_MODULES:
        importlib.import_module(module)
    app = FastAPI(title="loradex", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.catalog = catalog
    app.state.authorize = ServeAuthorizer(catalog, token, public_read=public_read)
    app.state.hub_options = {} if max_upload_bytes is None else {"max_upload_bytes": max_upload_bytes}
    install_error_handlers(app)
    for name, factory in SERVER_ROUTERS.items():
        if routers is None or name in routers:
            app.include_router(factory())
    limiter = rate_limit if rate_limit is None or isinstance(rate_limit, RateLimiter) else RateLimiter(rate_limit)
    app.add_middleware(ServerGuard, catalog=catalog, limiter=limiter, audit=audit)
    return app
