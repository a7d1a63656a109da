"""What every web page uses: the Jinja2 environment (autoescape on for every template), ``render``
(security headers, the signed-in user, the CSRF token), ``current_principal`` (session cookie →
``Principal``), ``require_form`` (a POST's form with a size cap, its CSRF token and the caller's
scope checked) and the ``page`` decorator that turns ``WebError``/``LoginRequired`` and the
catalog's errors into HTML answers.

Rules for pages (docs/WEB.md): nothing user-supplied is marked ``|safe``; no inline script or event
handler (the CSP forbids them); every state-changing form is a POST carrying
``<input type="hidden" name="csrf" value="{{ csrf }}">`` and is read with ``require_form``.
"""

from __future__ import annotations

import functools
import hmac
import inspect
import math
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qsl, quote

from ..tokens import ANONYMOUS, WRITE_STATE_KEY, Principal

WEB_DIR = Path(__file__).parent
TEMPLATE_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"
SESSION_COOKIE = "loradex_session"
LOGIN_CSRF_COOKIE = "loradex_login_csrf"
MAX_FORM_BYTES = 64 * 1024
MAX_FORM_FIELDS = 200
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
PAGE_STATE_KEY = "loradex.web"  # request.state entry: the resolved (principal, csrf) of this request


class WebError(Exception):
    """An error page: ``status`` and a one-line ``message`` (escaped when shown)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class LoginRequired(Exception):
    """The page needs a signed-in user: ``page`` answers with a redirect to /ui/login."""


# --- templates ---------------------------------------------------------------------------------

def humansize(value) -> str:
    try:
        n = float(value)
    except (TypeError, ValueError):
        return ""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _aware(value):
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def isotime(value) -> str:
    """``2026-12-07 09:50 UTC``."""
    at = _aware(value)
    return at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if at else ""


def ago(value, now: datetime | None = None) -> str:
    """``3 minutes ago``, ``2 days ago``."""
    at = _aware(value)
    if at is None:
        return ""
    seconds = max(0.0, ((now or datetime.now(timezone.utc)) - at).total_seconds())
    for size, unit in ((86400 * 365, "year"), (86400 * 30, "month"), (86400, "day"), (3600, "hour"),
                       (60, "minute")):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


def shorthash(value, n: int = 12) -> str:
    return str(value or "")[:n]


def url_part(value) -> str:
    """One URL path segment (``/ui/adapters/{{ name|url_part }}``): everything but unreserved
    characters percent-encoded, so a name can never add a path, query or scheme."""
    return quote(str(value), safe="")


# Bidirectional controls reorder what is shown (U+202E makes "gpj.exe" read "exe.jpg"): every
# value a template prints shows them as a visible "[U+202E]" instead.
BIDI_CONTROLS = {c: f"[U+{c:04X}]" for c in (0x200E, 0x200F, 0x061C, *range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def visible_controls(value: str) -> str:
    """``value`` with bidirectional controls and other invisible control characters (C0 except
    tab/newline, C1) written out as ``[U+XXXX]``."""
    if value.isprintable():
        return value.translate(BIDI_CONTROLS)
    return "".join(f"[U+{ord(ch):04X}]" if (ord(ch) < 32 and ch not in "\t\n\r") or 0x7F <= ord(ch) < 0xA0
                   else BIDI_CONTROLS.get(ord(ch), ch) for ch in value)


def _finalize(value):
    """Every ``{{ value }}``: strings (not already-escaped ``Markup``) with controls made visible;
    autoescape then escapes them."""
    from markupsafe import Markup

    if isinstance(value, str) and not isinstance(value, Markup):
        return visible_controls(value)
    return value


def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             finalize=_finalize)
    env.filters.update(humansize=humansize, isotime=isotime, ago=ago, shorthash=shorthash, url_part=url_part,
                       markdown=markdown_html)
    return env


def markdown_html(text):
    """Markdown (a model or evaluation card) as HTML through markdown-it-py with raw HTML off: every
    tag in the text comes out escaped, links with a ``javascript:``/``vbscript:``/``file:``/``data:``
    target stay text (markdown-it's link validation), images from elsewhere are blocked by the CSP;
    bidirectional controls are made visible first, as in every other value a page prints."""
    from markdown_it import MarkdownIt
    from markupsafe import Markup

    if not isinstance(text, str) or not text:
        return ""
    parser = MarkdownIt("js-default", {"html": False, "linkify": False, "typographer": False})
    return Markup(parser.render(visible_controls(text)))  # noqa: S704 — markdown-it escapes the text


class _LazyTemplates:
    """``templates``: the one Jinja2 environment, made on first use (``loradex --help`` stays fast)."""

    _env = None

    def __getattr__(self, name):
        if _LazyTemplates._env is None:
            _LazyTemplates._env = _environment()
        return getattr(_LazyTemplates._env, name)


templates = _LazyTemplates()


# --- who is asking -------------------------------------------------------------------------------

def is_admin(principal: Principal) -> bool:
    """The admin token ($LORADEX_SERVE_TOKEN, or the one ``loradex ui`` makes): the audit page and
    forced alias moves."""
    return principal.admin and principal.token_id is None and principal.scope == "write"


def can_write(principal: Principal, namespace: str | None = None) -> bool:
    if principal.scope != "write":
        return False
    return principal.namespace is None or namespace is None or principal.namespace == namespace


def _session_state(request) -> tuple[Principal | None, str]:
    """(the session's principal or None, its CSRF token or ""), read once per request."""
    state = request.scope.setdefault("state", {})
    if PAGE_STATE_KEY not in state:
        from .sessions import lookup_session

        found = None
        session_id = request.cookies.get(SESSION_COOKIE)
        if session_id:
            found = lookup_session(request.app.state.catalog, request.app.state.authorize, session_id)
        state[PAGE_STATE_KEY] = found or (None, "")
    return state[PAGE_STATE_KEY]


def signed_in(request) -> Principal | None:
    return _session_state(request)[0]


def anonymous_allowed(request) -> bool:
    """Anonymous visitors may browse: ``--public-read``, or some namespace is public/listed."""
    auth = request.app.state.authorize
    return bool(auth.public_read or auth.public_namespaces())


def current_principal(request) -> Principal:
    """The signed-in principal; ``ANONYMOUS`` when anonymous browsing is allowed; else
    ``LoginRequired`` (``page`` redirects to the sign-in page)."""
    principal = signed_in(request)
    if principal is not None:
        return principal
    if anonymous_allowed(request):
        return ANONYMOUS
    raise LoginRequired()


def visible_namespaces(request, principal: Principal) -> frozenset | None:
    """Namespaces whose adapters ``principal`` may see (None: all): a signed-in token and
    ``--public-read`` see everything; other anonymous visitors the public and listed namespaces."""
    if principal is not ANONYMOUS and principal.name != "anonymous":
        return None
    auth = request.app.state.authorize
    if auth.public_read:
        return None
    return frozenset(auth.public_namespaces())


def require_admin(request) -> Principal:
    principal = current_principal(request)
    if principal.name == "anonymous":
        raise LoginRequired()
    if not is_admin(principal):
        raise WebError(403, "this page is for the server's admin token")
    return principal


async def require_form(request, *, scope: str = "write", namespace: str | None = None) -> tuple[Principal, dict]:
    """A POST's form (``application/x-www-form-urlencoded``, at most ``MAX_FORM_BYTES``) from a
    signed-in user whose session's CSRF token it carries and whose token may ``scope`` in
    ``namespace``; else ``WebError(403)`` (also for a body that is no form; 413 when too large). The request is
    marked for the audit log as a write by that user. Repeated fields come back as lists."""
    from starlette.concurrency import run_in_threadpool

    from ..hub.protocol_errors import TooLarge, read_body_capped

    principal, csrf = await run_in_threadpool(_session_state, request)
    state = request.scope.setdefault("state", {})
    state[WRITE_STATE_KEY] = principal or ANONYMOUS
    if principal is None:
        raise WebError(403, "sign in to change anything (anonymous visitors may only look)")
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":  # no form, so no CSRF token either
        raise WebError(403, "the form's CSRF token is missing (send the page's form, "
                            "application/x-www-form-urlencoded)")
    try:
        body = await read_body_capped(request, MAX_FORM_BYTES)
    except TooLarge:
        raise WebError(413, f"the form is over {MAX_FORM_BYTES} bytes") from None
    form = parse_form(body)
    sent = form.get("csrf")
    if not isinstance(sent, str) or not csrf or not hmac.compare_digest(sent.encode(), csrf.encode()):
        raise WebError(403, "the form's CSRF token is missing or wrong: reload the page and try again")
    if scope == "write" and not can_write(principal, namespace):
        where = f" in namespace {namespace}" if namespace else ""
        raise WebError(403, f"token {principal.name!r} may not write{where}")
    return principal, form


def parse_form(body: bytes) -> dict:
    """URL-encoded form → {name: value or [values]}; ``WebError(400)`` when it is not one."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                          max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise WebError(400, "the form is not UTF-8 URL-encoded fields (or has too many)") from None
    form: dict = {}
    for key, value in pairs:
        if key in form:
            form[key] = (form[key] if isinstance(form[key], list) else [form[key]]) + [value]
        else:
            form[key] = value
    return form


# --- answers -------------------------------------------------------------------------------------

def secure_headers(response, *, cache: str = "no-store"):
    for key, value in SECURITY_HEADERS.items():
        response.headers[key] = value
    response.headers["Cache-Control"] = cache
    return response


def render(request, template: str, status: int = 200, *, title: str = "", **context):
    """``template`` rendered with the page context (``user``, ``csrf``, ``can_write``,
    ``is_admin``, ``title``, ``request_path``) as an HTMLResponse with the security headers."""
    from fastapi.responses import HTMLResponse

    principal, csrf = _session_state(request)
    user = principal or ANONYMOUS
    page_context = {"user": user, "signed_in": principal is not None, "csrf": csrf,
                    "can_write": principal is not None and principal.scope == "write",
                    "is_admin": principal is not None and is_admin(principal),
                    "title": title, "request_path": request.url.path}
    page_context.update(context)
    html = templates.get_template(template).render(**page_context)
    return secure_headers(HTMLResponse(html, status_code=status))


def error_page(request, status: int, message: str):
    return render(request, "error.html", status, title=f"Error {status}", code=status, message=message)


def login_redirect(request):
    from fastapi.responses import RedirectResponse

    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return secure_headers(RedirectResponse("/ui/login?next=" + quote(safe_next(target), safe=""), status_code=303))


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a local path only (``/…``, not ``//host`` or ``/\\host``)."""
    if not target or not target.startswith("/") or target.startswith("//") or target.startswith("/\\") \
            or any(ord(ch) < 32 for ch in target) or len(target) > 2000:
        return "/"
    return target


def page(fn):
    """Decorator for page handlers (sync handlers run in the thread pool): ``LoginRequired`` →
    redirect to the sign-in page; ``WebError`` and the catalog's errors → an HTML error page
    (NotFound 404, other user errors 400); anything else → a generic 500 page."""
    from starlette.concurrency import run_in_threadpool

    from ...errors import LoradexError, NotFound

    is_async = inspect.iscoroutinefunction(fn)

    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        request = kwargs.get("request") or next((a for a in args if hasattr(a, "cookies")), None)
        try:
            if is_async:
                return await fn(*args, **kwargs)
            return await run_in_threadpool(fn, *args, **kwargs)
        except LoginRequired:
            return login_redirect(request)
        except WebError as exc:
            return await run_in_threadpool(error_page, request, exc.status, exc.message)
        except NotFound as exc:
            return await run_in_threadpool(error_page, request, 404, str(exc).splitlines()[0][:300])
        except LoradexError as exc:
            from ..hub.protocol_errors import scrub_paths

            return await run_in_threadpool(error_page, request, 400, scrub_paths(str(exc).splitlines()[0][:300]))
        except Exception as exc:  # noqa: BLE001 — a bug: the traceback goes to the server's log only
            from ..hub.protocol_errors import INTERNAL_ERROR_MESSAGE, log_unexpected

            log_unexpected(request, exc)
            return await run_in_threadpool(error_page, request, 500, INTERNAL_ERROR_MESSAGE)

    wrapper.__signature__ = _resolved_signature(fn)
    return wrapper


def _resolved_signature(fn) -> inspect.Signature:
    """``fn``'s signature with string annotations (``from __future__ import annotations``)
    evaluated, so FastAPI reads the wrapper's parameters as the handler's (``Request`` and the
    FastAPI parameter helpers resolve even when imported inside a router factory)."""
    import typing

    from fastapi import Form, Path as PathParam, Query, Request
    from fastapi.responses import Response

    names = {"Request": Request, "Query": Query, "Form": Form, "Path": PathParam, "Response": Response,
             "Optional": typing.Optional, "Annotated": typing.Annotated}
    namespace = {**names, **fn.__globals__}
    sig = inspect.signature(fn)
    params = [p.replace(annotation=eval(p.annotation, namespace)) if isinstance(p.annotation, str) else p  # noqa: S307
              for p in sig.parameters.values()]
    return sig.replace(parameters=params, return_annotation=inspect.Signature.empty)


# --- paging --------------------------------------------------------------------------------------

def int_param(value, default: int, *, least: int = 1, most: int = 10_000) -> int:
    """A query parameter as an int in [least, most]; ``default`` when absent or not a number."""
    try:
        n = int(str(value)) if value not in (None, "") and len(str(value)) <= 9 else default
    except ValueError:
        n = default
    return min(most, max(least, n))


def pages(total: int, page_no: int, per_page: int) -> dict:
    count = max(1, math.ceil(total / per_page))
    page_no = min(page_no, count)
    return {"page": page_no, "pages": count, "total": total, "per_page": per_page,
            "has_prev": page_no > 1, "has_next": page_no < count}
