"""Promote and roll back from the browser: ``POST /ui/aliases/{name}/{alias}/move`` and
``POST /ui/aliases/{name}/{alias}/rollback``.

Both are the CLI's library calls: a move is ``catalog.operations.move_alias`` (``loradex alias
set``: the alias's promotion gate applies, and a refused move is recorded in the alias history
before the refusal is shown with its reasons); a rollback is the ``RollbackAlias`` operation
(``loradex rollback``). Each needs a reason and records the signed-in token's name as ``by``.
The form must carry the session's CSRF token and come from a token that may write the adapter's
namespace; ``force`` (past a failing gate) is honoured for the admin token only — any other
token asking for it is refused (403) and nothing moves.
"""

from __future__ import annotations

from ...catalog.refs import check_alias, is_semver
from ..app import register_router
from .common import WebError, is_admin, page, require_form, secure_headers
from .version_pages import may_move, version_page, visible_namespace

MAX_REASON = 500


def form_text(form: dict, key: str, *, limit: int = MAX_REASON, required: str | None = None) -> str:
    """One text field of a form (a repeated field is refused); ``required``: the message when empty."""
    value = form.get(key, "")
    if not isinstance(value, str):
        raise WebError(400, f"the form field {key!r} was sent more than once")
    value = value.strip()
    if len(value) > limit:
        raise WebError(400, f"{key} is over {limit} characters")
    if required and not value:
        raise WebError(400, required)
    return value


async def writer_for(request, name: str):
    """(principal, form) of a POST about adapter ``name``: CSRF-checked session first (403), then
    the adapter must be visible (404) and its namespace writable by the token (403)."""
    from starlette.concurrency import run_in_threadpool

    principal, form = await require_form(request, scope="read")
    namespace = await run_in_threadpool(visible_namespace, request, principal, name)
    if not may_move(principal, namespace):
        raise WebError(403, f"token {principal.name!r} may not change adapters of namespace {namespace}")
    return principal, form


def _redirect(url: str):
    from fastapi.responses import RedirectResponse

    return secure_headers(RedirectResponse(url, status_code=303))


@register_router("web_aliases")
def aliases_router():
    from fastapi import Request
    from fastapi import APIRouter
    from starlette.concurrency import run_in_threadpool

    from .common import url_part

    router = APIRouter()

    @router.post("/ui/aliases/{name}/{alias}/move", include_in_schema=False)
    @page
    async def move(request: Request, name: str, alias: str):
        from ...catalog.operations import move_alias
        from ...catalog.records import PromotionRefused

        principal, form = await writer_for(request, name)
        check_alias(alias)
        version = form_text(form, "version", limit=100, required="say which version the alias moves to")
        if not is_semver(version):
            raise WebError(400, f"version {version!r} is not a version number (X.Y.Z)")
        reason = form_text(form, "reason", required="every alias move needs a reason")
        force = form_text(form, "force", limit=10) not in ("", "0")
        if force and not is_admin(principal):
            raise WebError(403, "forcing a move past the promotion gate needs the admin token")
        try:
            await run_in_threadpool(move_alias, request.app.state.catalog, f"{name}@{version}", alias, reason,
                                    force=force, user=principal.name)
        except PromotionRefused as exc:
            refusal = {"message": str(exc).splitlines()[0], "problems": exc.problems}
            return await run_in_threadpool(version_page, request, name, version, status=409, refusal=refusal)
        return _redirect(f"/ui/versions/{url_part(name)}/{url_part(version)}?moved={url_part(alias)}")

    @router.post("/ui/aliases/{name}/{alias}/rollback", include_in_schema=False)
    @page
    async def rollback(request: Request, name: str, alias: str):
        from ...catalog.operations import RollbackAlias

        principal, form = await writer_for(request, name)
        check_alias(alias)
        reason = form_text(form, "reason", required="every rollback needs a reason")
        to = form_text(form, "to", limit=100) or None
        if to is not None and not is_semver(to):
            raise WebError(400, f"version {to!r} is not a version number (X.Y.Z)")
        catalog = request.app.state.catalog
        await run_in_threadpool(catalog.apply, [RollbackAlias(name, alias, to, reason, user=principal.name)])
        return _redirect(f"/ui/adapters/{url_part(name)}?rolled_back={url_part(alias)}#aliases")

    return router
