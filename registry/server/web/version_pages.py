"""The version page (``GET /ui/versions/{name}/{version}``) and its download
(``GET /ui/download/{name}/{version}``).

The page shows the line to paste into a prompt (with a copy button when script runs), the four
hashes, the probe facts, the header metadata (collapsed), triggers, the sample gallery from the
version's prompt records (each with the ``loradex render ID`` line that reproduces it), the
evaluation card, and, for a token that may write the adapter's namespace, one form per alias to
move it here (``alias_forms``). ``{version}`` is a version number, an alias or ``latest``.

Who sees what: a signed-in token sees every adapter; an anonymous visitor (``--public-read``, or
public / listed namespaces) sees what the API shows it, and an adapter it may not see answers 404
as an unknown one does. The download needs read access to the files: anonymous visitors get them
with ``--public-read`` or from a ``public`` namespace only (not a ``listed`` one).
"""

from __future__ import annotations

from ...catalog.refs import ALIAS_RE
from ..app import register_router
from ..tokens import ANONYMOUS
from .common import WebError, can_write, current_principal, is_admin, page, render, secure_headers, visible_namespaces
from .evidence_views import adapter_namespace_of, resolve_version, version_view


def is_anonymous(principal) -> bool:
    return principal is ANONYMOUS or principal.name == "anonymous"


def visible_namespace(request, principal, name: str, *, download: bool = False) -> str:
    """The namespace of adapter ``name`` when ``principal`` may see it (and, with ``download``,
    fetch its files); else ``NotFound`` (404, as for an unknown adapter) or 401-like ``WebError``."""
    from ...errors import NotFound

    namespace = adapter_namespace_of(request.app.state.catalog, name)
    seen = visible_namespaces(request, principal)
    if seen is not None and namespace not in seen:
        raise NotFound(f"no adapter named {name!r}")
    if download and is_anonymous(principal) and not request.app.state.authorize.public_read \
            and request.app.state.authorize.public_namespaces().get(namespace) != "public":
        raise WebError(401, "downloads of this adapter need a token: sign in first")
    return namespace


def may_move(principal, namespace: str) -> bool:
    """May ``principal`` move aliases (and review) in ``namespace``: a signed-in write token whose
    namespace (if any) is the adapter's."""
    return not is_anonymous(principal) and can_write(principal, namespace)


def version_page(request, name: str, selector: str, *, status: int = 200, refusal: dict | None = None,
                 flash: str = "", flash_kind: str = "good"):
    """Render the version page (also the answer of a refused alias move, with ``refusal``)."""
    principal = current_principal(request)
    catalog = request.app.state.catalog
    namespace = visible_namespace(request, principal, name)
    version = resolve_version(catalog, name, selector)
    view = version_view(catalog, version)
    moved = request.query_params.get("moved") or ""
    if not flash and ALIAS_RE.match(moved) and view["alias_targets"].get(moved) == version.version:
        flash = f"{moved} now points at {version.version}"
    from .dataset_pages import trained_on_view

    return render(request, "version.html", status, title=version.ref, **view, refusal=refusal, flash=flash,
                  trained_on=trained_on_view(catalog, version),
                  flash_kind=flash_kind, may_move=may_move(principal, namespace), is_admin=is_admin(principal),
                  download_name=version.file_name or f"{version.sha256[:12]}.safetensors")


@register_router("web_versions")
def versions_router():
    from fastapi import APIRouter, Request
    from fastapi.responses import FileResponse

    router = APIRouter()

    @router.get("/ui/versions/{name}/{version}", include_in_schema=False)
    @page
    def show_version(request: Request, name: str, version: str):
        return version_page(request, name, version)

    @router.get("/ui/download/{name}/{version}", include_in_schema=False)
    @page
    def download(request: Request, name: str, version: str):
        from ...catalog.db_schema import VersionRow
        from ..civitai_query import served_names

        principal = current_principal(request)
        catalog = request.app.state.catalog
        visible_namespace(request, principal, name, download=True)
        found = resolve_version(catalog, name, version)
        file_name = catalog.read(lambda s: served_names(s, [s.get(VersionRow, found.id)])[found.id])
        path = catalog.blobs.path_for(found.sha256)
        if not path.is_file():
            raise WebError(404, "the file is missing from the blob store (`loradex doctor` checks the store)")
        response = FileResponse(path, filename=file_name, media_type="application/octet-stream")
        return secure_headers(response, cache="private, no-store")

    return router
