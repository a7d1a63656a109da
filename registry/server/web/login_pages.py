"""Signing in and out (``/ui/login``, ``/ui/logout``, ``/ui/login/once/{ticket}``) and the static
files (``/ui/static/…``).

The sign-in form is protected against login CSRF by a double-submit cookie
(``loradex_login_csrf``, SameSite=Strict) that the form must echo; a wrong token answers 401 and
is recorded in the audit log (as ``invalid-token``), like a refused API write.
"""

from __future__ import annotations

import hmac
import secrets

from ..app import register_router
from ..tokens import WRITE_STATE_KEY, Principal
from .common import (LOGIN_CSRF_COOKIE, MAX_FORM_BYTES, SESSION_COOKIE, STATIC_DIR, WebError, page, parse_form,
                     render, safe_next, secure_headers)
from .sessions import SESSION_HOURS, end_session, sign_in, tickets_of

STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".svg": "image/svg+xml", ".png": "image/png", ".txt": "text/plain; charset=utf-8"}


def is_https(request) -> bool:
    """The request came over TLS (uvicorn sets the scheme; from a trusted proxy's
    X-Forwarded-Proto only when ``serve --trusted-proxy`` names it)."""
    return request.url.scheme == "https"


def set_session_cookie(response, request, session_id: str) -> None:
    response.set_cookie(SESSION_COOKIE, session_id, max_age=SESSION_HOURS * 3600, path="/", httponly=True,
                        samesite="strict", secure=is_https(request))


def _signed_in_redirect(request, session_id: str, target: str):
    from fastapi.responses import RedirectResponse

    response = secure_headers(RedirectResponse(safe_next(target), status_code=303))
    set_session_cookie(response, request, session_id)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/ui/login", httponly=True, samesite="strict")
    return response


def login_form(request, *, status: int = 200, message: str = "", next_path: str = "/"):
    token = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not token or len(token) > 100:
        token = secrets.token_urlsafe(24)
    response = render(request, "login.html", status, title="Sign in", login_csrf=token, message=message,
                      next_path=safe_next(next_path))
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, path="/ui/login", httponly=True,
                        samesite="strict", secure=is_https(request))
    return response


@register_router("web_login")
def login_router():
    from fastapi import APIRouter, Request
    from fastapi.responses import RedirectResponse, Response
    from starlette.concurrency import run_in_threadpool

    from ..hub.protocol_errors import TooLarge, read_body_capped

    router = APIRouter()

    @router.get("/ui/login", include_in_schema=False)
    @page
    def login_get(request: Request):
        return login_form(request, next_path=request.query_params.get("next") or "/")

    @router.post("/ui/login", include_in_schema=False)
    @page
    async def login_post(request: Request):
        try:
            form = parse_form(await read_body_capped(request, MAX_FORM_BYTES))
        except TooLarge:
            raise WebError(413, "the form is too large") from None
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE) or ""
        sent = form.get("csrf")
        if not cookie or not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), cookie.encode()):
            raise WebError(403, "the sign-in form's CSRF token is missing or wrong: reload the page and try again")
        token = form.get("token")
        next_path = form.get("next") if isinstance(form.get("next"), str) else "/"
        app = request.app
        found = await run_in_threadpool(sign_in, app.state.catalog, app.state.authorize,
                                        token if isinstance(token, str) else "")
        state = request.scope.setdefault("state", {})
        if found is None:
            state[WRITE_STATE_KEY] = Principal("invalid-token", "none")
            return await run_in_threadpool(login_form, request, status=401, next_path=next_path,
                                           message="that token is not one this server knows (or it was revoked)")
        session_id, principal = found
        state[WRITE_STATE_KEY] = principal
        return _signed_in_redirect(request, session_id, next_path)

    @router.get("/ui/login/once/{ticket}", include_in_schema=False)
    @page
    def login_once(request: Request, ticket: str):
        secret = tickets_of(request.app).redeem(ticket)
        found = sign_in(request.app.state.catalog, request.app.state.authorize, secret) if secret else None
        if found is None:
            raise WebError(403, "this sign-in link was used already or has expired: run `loradex ui` again, "
                                "or sign in with a token")
        return _signed_in_redirect(request, found[0], "/")

    @router.post("/ui/logout", include_in_schema=False)
    @page
    async def logout(request: Request):
        from .common import require_form

        await require_form(request, scope="read")
        await run_in_threadpool(end_session, request.app.state.catalog, request.cookies.get(SESSION_COOKIE))
        response = secure_headers(RedirectResponse("/ui/login", status_code=303))
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @router.get("/ui/static/{name}", include_in_schema=False)
    def static(name: str):
        kind = STATIC_TYPES.get("." + name.rsplit(".", 1)[-1]) if "." in name else None
        path = STATIC_DIR / name
        if kind is None or "/" in name or "\\" in name or name.startswith(".") or not path.is_file():
            return Response("not found", status_code=404, media_type="text/plain")
        response = Response(path.read_bytes(), media_type=kind)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    return router
