"""``loradex serve`` also speaks the Hugging Face Hub protocol (registry.hub_server), so the
unmodified ``huggingface_hub`` client, ``loradex push`` to a ``mirror`` remote and
``loradex pull mirror://…`` all work against it.

The Hub app is reached through routes for the Hub's own paths (``HUB_PATHS``: ``/api/models/…``,
``/api/repos/…``, ``/api/whoami-v2``, ``/{ns}/{name}/resolve/…``, ``/{ns}/{name}.git/…``), which
do not collide with the other features' (e.g. the Civitai-style ``/api/v1/…``). It is built on the first request, from the
serving app's state: repos are stored under ``<home>/mirror/hub/`` and every request is checked
with the same ``app.state.authorize`` as the rest of the server (same tokens, read/write scopes
and namespaces, same ``--public-read``). Pushed versions become versions of the served catalog
(``hub_server.catalog_bridge``): a ``vX.Y.Z`` tag registers the version, an alias branch moves the
alias, so the Civitai-style API lists what was pushed.
"""

from __future__ import annotations

import threading

from .app import register_router

MIRROR_DIR = "mirror"


# The Hub protocol's paths (registry.hub_server), listed rather than caught all, so routers that
# other features register after this one are not shadowed.
HUB_PATHS = (
    "/api/whoami-v2", "/api/validate-yaml", "/api/repos/{action}", "/api/models", "/api/models/{rest:path}",
    "/api/_loradex/stats", "/api/_loradex/lfs-upload/{oid}",
    "/{ns}/{name}.git/info/lfs/objects/{action}", "/{ns}/{name}/resolve/{rest:path}",
)


class ServeAuth:
    """The Hub app's auth interface (``check(request, scope, namespace) -> user``) over the
    server's ``ServeAuthorizer`` (registry.server_tokens). ``token`` only tells the Hub app that
    whoami must be checked; it is not the token. The user is the token's namespace when it has
    one (so ``whoami`` and repos created without an organization land there), else ``user``;
    the name carries the token's namespace (``catalog_bridge.HubUser``), so the bridge knows
    whether the pusher may publish the home's own adapters."""

    token = "configured-by-loradex-serve"

    def __init__(self, authorizer, user: str = "loradex"):
        self._authorizer = authorizer
        self.user = user

    def check(self, request, scope: str, namespace: str | None = None, *, download: bool = False) -> str:
        from .hub.catalog_bridge import HubUser

        principal = self._authorizer.check(request, scope, namespace, download=download)
        # the Hub knows read|write: an approve token reads there; anonymous stays "none" (no identity)
        return HubUser(principal.namespace or self.user, principal.namespace,
                       "read" if principal.scope == "approve" else principal.scope)

    def anonymous_namespaces(self, request) -> set[str] | None:
        """The namespaces ``request`` may list without a token (public and listed ones), or None
        when it needs one: it carries a token (a refused token is never anonymous) or no
        namespace is open."""
        if self._authorizer.presents_token(request):
            return None
        return set(self._authorizer.public_namespaces()) or None


class _HubMount:
    """ASGI endpoint forwarding to the Hub app of the serving app it is mounted in."""

    def __init__(self):
        self._apps: dict[int, object] = {}
        self._lock = threading.Lock()

    def _hub_app(self, parent):
        key = id(parent)
        with self._lock:
            app = self._apps.get(key)
            if app is None:
                from .hub import catalog_bridge, create_app
                from .hub.repo_backends import choose_repo_backend
                from .shared_secrets import server_secret

                catalog = parent.state.catalog
                hub_root = catalog.home / MIRROR_DIR / "hub"
                app = create_app(catalog.home / MIRROR_DIR, auth=ServeAuth(parent.state.authorize),
                                 repo_backend=choose_repo_backend(hub_root, catalog),
                                 secret=server_secret(catalog, "hub-lfs-upload"),
                                 public_url=getattr(parent.state, "public_url", None),
                                 **getattr(parent.state, "hub_options", {}))
                catalog_bridge.install(app, catalog)  # version tags / alias branches → this catalog
                parent.state.hub_app = app
                self._apps[key] = app
        return app

    async def __call__(self, scope, receive, send):
        await self._hub_app(scope["app"])(scope, receive, send)


@register_router("hub")
def hub_router():
    from fastapi import APIRouter
    from starlette.routing import Route

    router = APIRouter()
    mount = _HubMount()
    for path in HUB_PATHS:
        router.routes.append(Route(path, endpoint=mount, include_in_schema=False))
    return router
