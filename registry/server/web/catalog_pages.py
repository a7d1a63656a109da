"""The catalog page (``/``: search box, facets, one card per adapter, pagination, sort; a GET
form, so it works without JavaScript) and the adapter page (``/ui/adapters/{name}``:
description, versions with their card verdicts, aliases with their full move history, the
lineage graph as server-drawn SVG, the model card)."""

from __future__ import annotations

from urllib.parse import urlencode

from markupsafe import Markup

from ..app import register_router
from ...errors import UsageError
from .catalog_queries import CatalogQuery, Found, adapter_cards, adapter_page, find_adapters
from .common import current_principal, page, pages, render, visible_namespaces
from .lineage_svg import lineage_svg

FACET_TITLES = {"kind": "Kind", "base": "Base family", "variant": "Variant", "tag": "Tags", "alias": "Aliases"}
FACET_ORDER = tuple(FACET_TITLES)


def facet_label(key: str, value: str) -> str:
    """What a facet value shows: a family's title ("Stable Diffusion XL"), a variant's ("Pony
    Diffusion V6"); other values as they are. The link keeps the value itself."""
    from loradex.families import find_family
    from loradex.families.vocabulary import variant_title

    if key == "base":
        family = find_family(value)
        return family.title if family else value
    if key == "variant":
        family, _, variant = value.partition("/")
        return variant_title(family, variant) or value
    return value


def catalog_view(request):
    principal = current_principal(request)
    namespaces = visible_namespaces(request, principal)
    query = CatalogQuery.from_params(request.query_params)
    catalog = request.app.state.catalog
    try:
        found = find_adapters(catalog, query, namespaces)
        problem = ""
    except UsageError as exc:  # a filter the search refuses (an unknown kind, a tag without KEY=)
        found, problem = Found([], 0, {}), str(exc).splitlines()[0][:300]
    paging = pages(found.total, query.page, query.per_page)
    facets = []
    for key in sorted(found.facets, key=lambda k: FACET_ORDER.index(k) if k in FACET_ORDER else len(FACET_ORDER)):
        if key not in FACET_TITLES:
            continue
        active = getattr(query, key)
        facets.append({"key": key, "title": FACET_TITLES[key], "values": [
            {"value": value, "label": facet_label(key, value), "count": count, "active": value == active,
             "href": "/?" + urlencode(query.params(**{key: "" if value == active else value, "page": ""}))}
            for value, count in found.facets[key]]})
    return render(request, "catalog.html", title="Catalog", query=query, problem=problem, cards=adapter_cards(catalog, found.names),
                  facets=facets, paging=paging,
                  prev_href="/?" + urlencode(query.params(page=paging["page"] - 1)),
                  next_href="/?" + urlencode(query.params(page=paging["page"] + 1)),
                  sorts=("relevance", "updated", "name"))


def adapter_view(request, name: str):
    from ...catalog.records import card_markdown

    principal = current_principal(request)
    data = adapter_page(request.app.state.catalog, name, visible_namespaces(request, principal))
    card_text = ""
    if data["card"]:
        try:
            card_text = card_markdown(data["card"])
        except (KeyError, TypeError, ValueError, AttributeError):
            card_text = ""
    # lineage_svg escapes every text and attribute it writes (see its module docstring)
    svg = Markup(lineage_svg(data["lineage"]))  # noqa: S704
    flash = ""
    rolled_back = request.query_params.get("rolled_back") or ""  # after a rollback form (alias_forms)
    target = next((al["version"] for al in data["aliases"] if al["alias"] == rolled_back), None)
    if target:
        flash = f"{rolled_back} rolled back: it now points at {target}"
    from .promotion_pages import promotion_section  # issue 22: open requests, approve forms

    return render(request, "adapter.html", title=data["name"], a=data, lineage_svg=svg, card_text=card_text,
                  flash=flash, **promotion_section(request, principal, data["name"]))


@register_router("web_catalog")
def catalog_router():
    from fastapi import APIRouter, Request

    router = APIRouter()

    @router.get("/", include_in_schema=False)
    @page
    def catalog_index(request: Request):
        return catalog_view(request)

    @router.get("/ui/adapters/{name}", include_in_schema=False)
    @page
    def adapter(request: Request, name: str):
        return adapter_view(request, name)

    return router
