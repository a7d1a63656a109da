"""``GET /api/models``: the Hub's model search (``HfApi.list_models``, ``hf models ls``) over the
server's repos, with the Hub's query parameters and its ``Link``-header pagination.

Parameters (all optional, as the clients send them): ``author`` (the namespace), ``search`` (a
case-insensitive substring of the repo id), ``filter`` (repeatable; each must match one of the
repo's tags: the card's ``tags``, ``library_name``, ``pipeline_tag``, ``license:<id>``,
``base_model:<id>``), ``sort`` (``lastModified``, ``createdAt``, ``id``, and the Hub's counters
``downloads``, ``likes``, ``trendingScore``, all 0 here), ``direction`` (``-1``, the default, or
``1``), ``limit`` (page size, at most 1000), ``full`` (include ``siblings``), ``cursor`` (set by the
server in the ``Link: <…>; rel="next"`` URL, as on the Hub; the client follows it).
"""

from __future__ import annotations

from urllib.parse import urlencode

from .protocol_errors import BadRequest
from .repo_store import RepoStore
from .wire_format import model_info_json

DEFAULT_PAGE_SIZE = 1000  # the Hub's page of /api/models
MAX_PAGE_SIZE = 1000
SORT_KEYS = {"lastModified": "lastModified", "last_modified": "lastModified", "createdAt": "createdAt",
             "created_at": "createdAt", "id": "id", "downloads": "downloads", "likes": "likes",
             "trendingScore": "trendingScore", "trending_score": "trendingScore"}
MAX_PARAM_CHARS = 512


def _int_param(value: str | None, name: str, low: int, high: int) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or not low <= int(value) <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}, got {value[:40]!r}")
    return int(value)


def _repo_tags(item: dict) -> set[str]:
    card = item.get("cardData") or {}
    tags = set(item.get("tags") or [])
    for key in ("library_name", "pipeline_tag"):
        if isinstance(item.get(key), str):
            tags.add(item[key])
    if isinstance(card.get("license"), str):
        tags.add(f"license:{card['license']}")
    bases = card.get("base_model")
    for base in bases if isinstance(bases, list) else [bases]:
        if isinstance(base, str):
            tags.add(f"base_model:{base}")
    return tags


def list_models(repos: RepoStore, query, base_url: str, page_size: int = DEFAULT_PAGE_SIZE,
                namespaces: set[str] | None = None) -> tuple[list, str | None]:
    """(this page of model summaries, the next page's URL or None). ``query``: the request's
    query parameters (a Starlette ``QueryParams``); ``namespaces``: only repos of these (an
    anonymous caller's view), None for all."""
    for key, value in query.multi_items():
        if len(value) > MAX_PARAM_CHARS:
            raise BadRequest(f"query parameter {key} is longer than {MAX_PARAM_CHARS} characters")
    author, search = query.get("author") or None, (query.get("search") or "").lower()
    filters = [f for f in query.getlist("filter") if f]
    sort = query.get("sort") or "lastModified"
    if sort not in SORT_KEYS:
        raise BadRequest(f"unknown sort {sort!r}: use one of {', '.join(sorted(set(SORT_KEYS.values())))}")
    sort = SORT_KEYS[sort]
    direction = query.get("direction") or "-1"
    if direction not in ("-1", "1"):
        raise BadRequest("direction must be -1 or 1")
    limit = _int_param(query.get("limit"), "limit", 1, MAX_PAGE_SIZE)
    offset = _int_param(query.get("cursor"), "cursor", 0, 10**9) or 0
    full = (query.get("full") or "").lower() in ("1", "true")

    items = []
    for repo_id in repos.repo_ids():
        namespace = repo_id.split("/")[0]
        if ((author and namespace != author) or (search and search not in repo_id.lower())
                or (namespaces is not None and namespace not in namespaces)):
            continue
        try:
            commit = repos.resolve(repo_id, "main")
            item = model_info_json(repo_id, repos.repo_meta(repo_id), commit, repos.objects, blobs=False)
        except Exception:  # noqa: BLE001 — a damaged or half-deleted repo is left out of a listing
            continue
        if filters and not set(filters) <= _repo_tags(item):
            continue
        if not full:
            item.pop("siblings", None)
        items.append(item)
    items.sort(key=lambda m: m["id"])  # ties keep the id order
    if sort != "id" or direction == "-1":
        items.sort(key=lambda m: m.get(sort) or (0 if sort in ("downloads", "likes", "trendingScore") else ""),
                   reverse=direction == "-1")
    size = min(limit or page_size, page_size)
    page = items[offset:offset + size]
    next_url = None
    if offset + size < len(items):
        params = [(k, v) for k, v in query.multi_items() if k != "cursor"] + [("cursor", str(offset + size))]
        next_url = f"{base_url}api/models?{urlencode(params)}"
    return page, next_url
