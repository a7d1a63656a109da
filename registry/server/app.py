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

ROUTER_MODULES = ["loradex.registry.server.civitai_api", "loradex.registry.server.hub_mirror_router",
                  "loradex.registry.server.web.login_pages", "loradex.registry.server.web.catalog_pages",
                  "loradex.registry.server.web.images", "loradex.registry.server.web.audit_pages",
                  "loradex.registry.server.web.version_pages", "loradex.registry.server.web.compare_pages",
                  "loradex.registry.server.web.review_forms", "loradex.registry.server.web.alias_forms",
                  "loradex.registry.server.web.dataset_pages", "loradex.registry.server.web.caption_pages",
                  "loradex.registry.server.web.promotion_pages"]
SERVER_ROUTERS: dict[str, Callable] = {}  # name → factory() returning an APIRouter


def register_router(name: str):
    def deco(factory: Callable) -> Callable:
        SERVER_ROUTERS[name] = factory
        return factory

    return deco


def build_server_app(catalog, token: str | None = None, *, public_read: bool = False,
                     routers: list[str] | None = None, rate_limit=None, max_upload_bytes: int | None = None,
                     audit: bool = True, public_url: str | None = None, admin_name: str | None = None,
                     presigned_downloads: bool = False):
    """``token``: the admin token ($LORADEX_SERVE_TOKEN), next to the catalog's serve tokens.
    ``rate_limit``: requests/s per token (a float, or a ``server_guard.RateLimiter``); None = no
    limit. ``max_upload_bytes``: the largest LFS object the Hub paths accept. ``audit``: record
    write requests in the catalog's audit log. ``public_url``: the server's address as clients
    reach it (``serve --public-url``); every URL the server hands out (Civitai download
    redirects, ``downloadUrl``, ``nextPage``, Hub repo and LFS upload URLs) starts with it, never
    with the request's ``Host`` header (None: the address the connection arrived on). ``admin_name``: who the
    admin token is in the audit log, alias moves and reviews (default ``$LORADEX_SERVE_TOKEN``). No CORS middleware: browsers on other origins get
    no ``Access-Control-Allow-Origin`` and cannot read answers. ``presigned_downloads``: Hub
    ``resolve`` and Civitai ``download`` redirect to pre-signed object store URLs
    (``hub.presigned``; ``UsageError`` unless the blobs are on S3)."""
    from fastapi import FastAPI

    from .guard import RateLimiter, ServerGuard

    for module in ROUTER_MODULES:
        importlib.import_module(module)
    app = FastAPI(title="loradex", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.catalog = catalog
    app.state.public_url = check_public_url(public_url)
    app.state.authorize = ServeAuthorizer(catalog, token, public_read=public_read, admin_name=admin_name)
    app.state.hub_options = {} if max_upload_bytes is None else {"max_upload_bytes": max_upload_bytes}
    app.state.presign = None
    if presigned_downloads:
        from .hub.presigned import require_presigner

        app.state.presign = require_presigner(catalog.blobs)
        app.state.hub_options["presigned_downloads"] = True
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


def default_public_url(host: str, port: int, scheme: str = "http") -> str | None:
    """The public URL ``serve`` derives from ``--host``/``--port``: ``http://HOST:PORT/`` (https
    with TLS); None for a wildcard address (0.0.0.0, ::), where links use the address each
    connection arrived on."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        return None
    return f"{scheme}://[{host}]:{port}/" if ":" in host else f"{scheme}://{host}:{port}/"


def check_trusted_proxies(values: list[str] | None) -> list[str]:
    """``--trusted-proxy`` values: IP addresses or networks (``10.0.0.0/8``), else ``UsageError``."""
    import ipaddress

    from ..errors import UsageError

    out = []
    for value in values or []:
        try:
            out.append(str(ipaddress.ip_network(value.strip(), strict=False)) if "/" in value
                       else str(ipaddress.ip_address(value.strip())))
        except ValueError:
            raise UsageError(f"invalid --trusted-proxy {value[:100]!r}: write an IP address or network "
                             "(127.0.0.1, 10.0.0.0/8)") from None
    return out


def check_tls(cert: str | None, key: str | None) -> tuple[str, str] | None:
    """``--tls-cert``/``--tls-key``: both or neither, and a certificate chain and key that load
    together; else ``UsageError`` (one line, before the server starts)."""
    import ssl

    from ..errors import UsageError

    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise UsageError("--tls-cert and --tls-key go together: give both (PEM files)")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__
        raise UsageError(f"--tls-cert/--tls-key: cannot load the certificate and key ({reason})",
                         hint="give a PEM certificate chain and its private key (unencrypted)") from None
    return cert, key


def uvicorn_options(host: str, port: int, *, tls: tuple[str, str] | None = None,
                    trusted_proxies: list[str] | None = None) -> dict:
    """What ``serve`` passes to uvicorn: TLS through uvicorn's own ``ssl_certfile``/``ssl_keyfile``;
    ``X-Forwarded-Proto``/``-For`` honoured (uvicorn's proxy-headers middleware) only from the
    trusted proxies, and from nobody without one (uvicorn alone would trust 127.0.0.1)."""
    options = {"host": host, "port": port, "log_level": "warning",
               "proxy_headers": bool(trusted_proxies), "forwarded_allow_ips": list(trusted_proxies or [])}
    if tls is not None:
        options.update(ssl_certfile=tls[0], ssl_keyfile=tls[1])
    return options
