"""The audit page (``/ui/audit``, the admin token only): the server's audit log of write
requests, filterable by user (token name), method, path, outcome and a UTC time range, newest
first, paginated."""

from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import urlencode

from ..app import register_router
from .catalog_queries import audit_entries
from .common import WebError, int_param, page, pages, render, require_admin

PER_PAGE = 50


def _when(value: str | None, field: str) -> datetime | None:
    """``2026-12-07T09:50`` (a datetime-local field, read as UTC) → datetime; "" → None."""
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value[:40])
    except ValueError:
        raise WebError(400, f"{field}: write a date and time like 2026-12-07T09:50") from None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def audit_view(request):
    require_admin(request)
    params = request.query_params
    f = {key: " ".join(str(params.get(key) or "").split())[:200]
         for key in ("user", "method", "path", "since", "until", "status")}
    if f["method"] and not f["method"].isalpha():
        raise WebError(400, "method: a word such as POST")
    page_no = int_param(params.get("page"), 1, most=1_000_000)
    entries, total, users = audit_entries(
        request.app.state.catalog, user=f["user"], method=f["method"], path=f["path"],
        since=_when(f["since"], "from"), until=_when(f["until"], "to"), status=f["status"],
        page=page_no, per_page=PER_PAGE)
    paging = pages(total, page_no, PER_PAGE)
    base = {k: v for k, v in f.items() if v}
    return render(request, "audit.html", title="Audit log", entries=entries, users=users, f=f, paging=paging,
                  prev_href="/ui/audit?" + urlencode({**base, "page": paging["page"] - 1}),
                  next_href="/ui/audit?" + urlencode({**base, "page": paging["page"] + 1}))


@register_router("web_audit")
def audit_router():
    from fastapi import APIRouter, Request

    router = APIRouter()

    @router.get("/ui/audit", include_in_schema=False)
    @page
    def audit(request: Request):
        return audit_view(request)

    return router
