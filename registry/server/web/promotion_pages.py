"""Promotion requests over HTTP: the JSON API and the web pages.

API (``Authorization: Bearer``; errors are ``{"error": message}``):

- ``GET /api/promotions?state=open|approved|rejected|all&adapter=NAME`` (read) — requests, newest first;
- ``POST /api/promotions`` ``{"ref": "NAME@X.Y.Z", "alias": "production", "reason": "…"}`` (a write
  token of the adapter's namespace) — records a request by the token's name (201);
- ``POST /api/promotions/{id}/approve`` ``{"reason": "…"}`` and ``/reject`` ``{"reason": "…"}`` (a
  token with the ``approve`` scope, or the admin token) — the library calls of ``loradex alias
  approve|reject``: an approval moves the alias through its gate (409 with the problems when the
  gate refuses; the request stays open), the requester cannot decide their own request (403).

Web: ``GET /ui/promotions`` lists open requests (and the latest decided ones); the adapter page
shows its open requests (``promotion_section``). An approver accepts or rejects from either with
``POST /ui/promotions/{id}/approve|reject`` (CSRF-checked as every form; a reject needs a reason).
"""

# no `from __future__ import annotations`: FastAPI reads the routes' annotations (Request, a local import)

from ..app import register_router
from ..tokens import WRITE_STATE_KEY
from .common import WebError, current_principal, is_admin, page, render, secure_headers, visible_namespaces

MAX_BODY = 16 * 1024
REQUEST_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["ref", "alias", "reason"],
                  "properties": {"ref": {"type": "string", "maxLength": 300},
                                 "alias": {"type": "string", "maxLength": 100},
                                 "reason": {"type": "string", "maxLength": 2000}}}
DECISION_SCHEMA = {"type": "object", "additionalProperties": False,
                   "properties": {"reason": {"type": "string", "maxLength": 2000}}}
STATES = ("open", "approved", "rejected", "all")


def may_decide(principal, namespace: str | None) -> bool:
    """An ``approve`` token (of the adapter's namespace when it has one) or the admin token."""
    if principal is None or principal.name == "anonymous":
        return False
    if is_admin(principal):
        return True
    return principal.scope == "approve" and (principal.namespace is None or principal.namespace == namespace)


def promotion_section(request, principal, name: str) -> dict:
    """The adapter page's section: its open requests and whether this visitor may decide them."""
    from ...catalog.promotions import list_requests
    from .evidence_views import adapter_namespace_of

    catalog = request.app.state.catalog
    rows = [r.to_dict() for r in list_requests(catalog, state="open", name=name)]
    decide = bool(rows) and may_decide(principal, adapter_namespace_of(catalog, name))
    return {"promotions": rows, "may_decide": decide}


def _visible(request, principal, requests: list) -> list:
    seen = visible_namespaces(request, principal)
    if seen is None:
        return requests
    from .evidence_views import adapter_namespace_of

    catalog = request.app.state.catalog
    return [r for r in requests if adapter_namespace_of(catalog, r.adapter) in seen]


async def _json_body(request, schema: dict, source: str) -> dict:
    from ...untrusted import check_schema, parse_json
    from ..hub.protocol_errors import BadRequest, TooLarge, read_body_capped

    try:
        body = await read_body_capped(request, MAX_BODY)
    except TooLarge:
        raise BadRequest(f"{source}: the body is over {MAX_BODY} bytes") from None
    from ...errors import UntrustedData

    try:
        return check_schema(parse_json(body or b"{}", source, max_bytes=MAX_BODY), schema, source)
    except UntrustedData as exc:
        raise BadRequest(str(exc).splitlines()[0]) from None


def _api_error(exc):
    """A catalog error as the API's ``{"error": …}`` answer (never a traceback)."""
    from fastapi.responses import JSONResponse

    from ...errors import AlreadyExists, AuthError, Conflict, NotFound
    from ..hub.protocol_errors import scrub_paths

    status = (404 if isinstance(exc, NotFound) else 403 if isinstance(exc, AuthError)
              else 409 if isinstance(exc, (Conflict, AlreadyExists)) else 400)
    body = {"error": scrub_paths(str(exc).splitlines()[0][:500])}
    problems = getattr(exc, "problems", None)
    if problems:
        body["problems"] = list(problems)
    return JSONResponse(body, status_code=status)


def _decider(request, request_id: int):
    """The principal deciding request #ID: an approve token of its adapter's namespace (403 else)."""
    from ...catalog.promotions import get_request
    from .evidence_views import adapter_namespace_of

    catalog = request.app.state.catalog
    request.app.state.authorize.check(request, "approve")  # 401/403 before saying what exists
    promotion = get_request(catalog, request_id)
    namespace = adapter_namespace_of(catalog, promotion.adapter)
    principal = request.app.state.authorize.check(request, "approve", namespace)
    request.scope.setdefault("state", {})[WRITE_STATE_KEY] = principal  # the audit log names the approver
    return principal


@register_router("promotions")
def promotions_router():
    from fastapi import APIRouter, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    from ...errors import LoradexError
    from ..hub.protocol_errors import HubProtocolError

    router = APIRouter()

    @router.get("/api/promotions", include_in_schema=False)
    async def api_list(request: Request):
        from ...catalog.promotions import list_requests
        from ..hub.protocol_errors import BadRequest

        principal = request.app.state.authorize.check(request, "read")
        state = request.query_params.get("state") or "open"
        if state not in STATES:
            raise BadRequest(f"state must be one of {', '.join(STATES)}")
        adapter = request.query_params.get("adapter") or None

        def run():
            rows = list_requests(request.app.state.catalog, state=None if state == "all" else state, name=adapter)
            return [r.to_dict() for r in _visible(request, principal, rows)]

        try:
            return JSONResponse(await run_in_threadpool(run))
        except HubProtocolError:
            raise
        except LoradexError as exc:
            return _api_error(exc)

    @router.post("/api/promotions", include_in_schema=False)
    async def api_request(request: Request):
        from ...catalog.promotions import request_promotion
        from ...catalog.refs import parse_ref
        from .evidence_views import adapter_namespace_of

        body = await _json_body(request, REQUEST_SCHEMA, "POST /api/promotions")
        try:
            name = parse_ref(body["ref"]).name
            namespace = await run_in_threadpool(adapter_namespace_of, request.app.state.catalog, name)
        except HubProtocolError:
            raise
        except LoradexError as exc:
            request.app.state.authorize.check(request, "write")  # 401/403 before saying what exists
            return _api_error(exc)
        principal = request.app.state.authorize.check(request, "write", namespace)
        try:
            created = await run_in_threadpool(request_promotion, request.app.state.catalog, body["ref"],
                                              body["alias"], body["reason"], user=principal.name)
        except LoradexError as exc:
            return _api_error(exc)
        return JSONResponse(created.to_dict(), status_code=201)

    async def _decide(request: Request, request_id: int, approve: bool):
        from ...catalog.promotions import approve_request, reject_request

        body = await _json_body(request, DECISION_SCHEMA, f"POST /api/promotions/{request_id}")
        try:
            principal = await run_in_threadpool(_decider, request, request_id)
            decide = approve_request if approve else reject_request
            decided = await run_in_threadpool(decide, request.app.state.catalog, request_id,
                                              body.get("reason", ""), user=principal.name)
        except HubProtocolError:
            raise
        except LoradexError as exc:
            return _api_error(exc)
        return JSONResponse(decided.to_dict())

    @router.post("/api/promotions/{request_id}/approve", include_in_schema=False)
    async def api_approve(request: Request, request_id: int):
        return await _decide(request, request_id, True)

    @router.post("/api/promotions/{request_id}/reject", include_in_schema=False)
    async def api_reject(request: Request, request_id: int):
        return await _decide(request, request_id, False)

    # --- web -------------------------------------------------------------------------------------
    @router.get("/ui/promotions", include_in_schema=False)
    @page
    def promotions_page(request: Request):
        from ...catalog.promotions import list_requests

        principal = current_principal(request)
        catalog = request.app.state.catalog
        open_rows = _visible(request, principal, list_requests(catalog, state="open"))
        decided = [r for r in _visible(request, principal, list_requests(catalog, state=None, limit=50))
                   if r.state != "open"][:20]
        flash = request.query_params.get("decided") or ""
        return render(request, "promotions.html", title="Promotion requests",
                      open_requests=[r.to_dict() for r in open_rows], decided=[r.to_dict() for r in decided],
                      may_decide=is_admin(principal) or principal.scope == "approve",  # each POST re-checks
                      flash=f"request #{flash} decided" if flash.isdigit() else "")

    async def _web_decide(request: Request, request_id: int, approve: bool):
        from fastapi.responses import RedirectResponse

        from ...catalog.promotions import approve_request, get_request, reject_request
        from ...catalog.records import PromotionRefused
        from .alias_forms import form_text
        from .common import require_form, url_part
        from .evidence_views import adapter_namespace_of

        principal, form = await require_form(request, scope="read")
        catalog = request.app.state.catalog
        promotion = await run_in_threadpool(get_request, catalog, request_id)
        namespace = await run_in_threadpool(adapter_namespace_of, catalog, promotion.adapter)
        if not may_decide(principal, namespace):
            raise WebError(403, f"token {principal.name!r} may not decide promotion requests "
                                "(that needs a token with the approve scope)")
        reason = form_text(form, "reason", required=None if approve else "a rejection needs a reason")
        try:
            if approve:
                await run_in_threadpool(approve_request, catalog, request_id, reason, user=principal.name)
            else:
                await run_in_threadpool(reject_request, catalog, request_id, reason, user=principal.name)
        except PromotionRefused as exc:
            raise WebError(409, f"{str(exc).splitlines()[0]} ({'; '.join(exc.problems)})") from None
        back = form_text(form, "back", limit=20)
        target = f"/ui/adapters/{url_part(promotion.adapter)}#promotions" if back == "adapter" \
            else f"/ui/promotions?decided={request_id}"
        return secure_headers(RedirectResponse(target, status_code=303))

    @router.post("/ui/promotions/{request_id}/approve", include_in_schema=False)
    @page
    async def web_approve(request: Request, request_id: int):
        return await _web_decide(request, request_id, True)

    @router.post("/ui/promotions/{request_id}/reject", include_in_schema=False)
    @page
    async def web_reject(request: Request, request_id: int):
        return await _web_decide(request, request_id, False)

    return router
