"""``GET /ui/compare/{name}?v=1.0.0&v=1.1.0[&v=…]``: two to four versions of an adapter side by
side on the same prompt records — a row per (prompt, negative, seed, steps, CFG, size,
scheduler, base) that at least two of them were rendered with, a column per version, and the
base model alone as a column where the cards hold renders without the adapter for those rows;
the metric deltas between their evaluation cards; and, for two versions, a flip view of each
row's pair (CSS-only toggle; a slider with script; side by side without either).
"""

from __future__ import annotations

from ..app import register_router
from .common import current_principal, page, render
from .evidence_views import MAX_COMPARED, compare_view
from .version_pages import visible_namespace


@register_router("web_compare")
def compare_router():
    from fastapi import APIRouter, Request

    router = APIRouter()

    @router.get("/ui/compare/{name}", include_in_schema=False)
    @page
    def compare(request: Request, name: str):
        from ...errors import UsageError

        principal = current_principal(request)
        catalog = request.app.state.catalog
        visible_namespace(request, principal, name)
        selected = [v.strip() for v in request.query_params.getlist("v") if v.strip()][:MAX_COMPARED + 1]
        all_versions = [v.version for v in catalog.versions(name)]
        if not selected:  # no choice yet: the two newest
            selected = all_versions[-2:]
        if len(selected) < 2:
            raise UsageError(f"{name} has one version: nothing to compare")
        view = compare_view(catalog, name, selected)
        return render(request, "compare.html", title=f"Compare {name}", **view, selected=selected,
                      all_versions=all_versions)

    return router
