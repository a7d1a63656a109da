"""Caption refinement in the browser: ``GET /ui/datasets/{name}/{version}/captions`` shows each
image of a dataset version beside an editable caption (100 per page, ``?page=N``), and ``POST``
to the same path saves the changed captions as a NEW version of the dataset — the CLI's
``dataset captions --edit`` through the same library call
(``catalog.dataset_captions.save_caption_edit``; each changed caption's source becomes
``{"kind": "manual", "via": "web", "by": <token name>}`` keeping the captioner record it
refined), then redirects to the new version's captions page.

Who may: the page is seen by whoever may see the dataset page (``dataset_pages``); saving needs
the page's CSRF token and a signed-in write token without a namespace restriction (datasets
belong to no namespace, so a token limited to one may not change them). A save from a version
that is no longer the dataset's newest is refused (409: reload, nothing is lost silently).
Form fields are ``caption-<i>`` (``i``: the image's index in the version, never a file name);
an index outside the page, a repeated field or a caption over the manifest's cap is refused.
"""

from __future__ import annotations

from ...catalog.dataset_captions import MAX_CAPTION_CHARS, save_caption_edit
from ...catalog.datasets import get_dataset_version, parse_dataset_ref
from ...catalog.refs import check_name
from ..app import register_router
from .common import WebError, int_param, page, pages, render, require_form, secure_headers, url_part

PER_PAGE = 100  # the form stays under common.MAX_FORM_FIELDS (200) and MAX_FORM_BYTES
MAX_MESSAGE = 500


def _version(request, name: str, selector: str):
    from ...errors import NotFound
    from .dataset_pages import _may_see

    check_name(name)
    found = get_dataset_version(request.app.state.catalog, str(parse_dataset_ref(f"{name}@{selector}")))
    if not _may_see(request, request.app.state.catalog, found.ref):
        raise NotFound(f"no dataset named {name!r}")
    return found


def may_edit(principal) -> bool:
    return principal is not None and principal.scope == "write" and principal.namespace is None


def captions_page(request, name: str, selector: str, *, page_no: int = 1, status: int = 200,
                  error: str = "", saved: str = ""):
    from .common import signed_in

    found = _version(request, name, selector)
    images = found.images
    paging = pages(len(images), page_no, PER_PAGE)
    start = (paging["page"] - 1) * PER_PAGE
    rows = [{"index": start + i, "image": img} for i, img in enumerate(images[start:start + PER_PAGE])]
    return render(request, "captions.html", status, title=f"captions of {found.ref}", dataset=found, rows=rows,
                  paging=paging, may_edit=may_edit(signed_in(request)), error=error, saved=saved,
                  max_caption=MAX_CAPTION_CHARS, max_message=MAX_MESSAGE)


def _field(form: dict, key: str, limit: int) -> str | None:
    value = form.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise WebError(400, f"the form field {key!r} was sent more than once")
    if len(value) > limit:
        raise WebError(400, f"{key} is over {limit} characters")
    return value


def edited_captions(form: dict, images: list, page_no: int) -> dict[str, str | None]:
    """file → caption from the form's ``caption-<i>`` fields of page ``page_no`` (see module docstring)."""
    first = (page_no - 1) * PER_PAGE
    allowed = range(first, min(first + PER_PAGE, len(images)))
    out = {}
    for key in form:
        if not key.startswith("caption-"):
            continue
        index = key.removeprefix("caption-")
        if not index.isdigit() or len(index) > 6 or int(index) not in allowed:
            raise WebError(400, f"the form field {key[:40]!r} names no image of this page")
        text = _field(form, key, MAX_CAPTION_CHARS)
        out[images[int(index)].file] = text.strip() or None
    return out


@register_router("web_captions")
def captions_router():
    from fastapi import APIRouter, Request
    from fastapi.responses import RedirectResponse
    from starlette.concurrency import run_in_threadpool

    router = APIRouter()

    @router.get("/ui/datasets/{name}/{version}/captions", include_in_schema=False)
    @page
    def show_captions(request: Request, name: str, version: str):
        return captions_page(request, name, version, page_no=int_param(request.query_params.get("page"), 1),
                             saved=request.query_params.get("saved", "")[:100])

    @router.post("/ui/datasets/{name}/{version}/captions", include_in_schema=False)
    @page
    async def save_captions(request: Request, name: str, version: str):
        principal, form = await require_form(request, scope="read")
        if not may_edit(principal):
            raise WebError(403, f"token {principal.name!r} may not change datasets "
                                "(a write token without a namespace restriction)")
        found = await run_in_threadpool(_version, request, name, version)
        newest = await run_in_threadpool(get_dataset_version, request.app.state.catalog, f"dataset:{found.dataset}")
        if newest.version != found.version:
            return await run_in_threadpool(
                captions_page, request, name, version, status=409,
                error=f"{newest.ref} is newer than the version edited here: open its captions and edit again")
        page_no = int_param(_field(form, "page", 9), 1)
        captions = edited_captions(form, found.images, page_no)
        message = (_field(form, "message", MAX_MESSAGE) or "").strip()
        current = {img.file: img.caption for img in found.images}
        if all(current[f] == c for f, c in captions.items()):
            return await run_in_threadpool(captions_page, request, name, version, page_no=page_no,
                                           error="no caption changed; nothing saved")
        saved = await run_in_threadpool(save_caption_edit, request.app.state.catalog, found.ref, captions,
                                        via="web", message=message, user=principal.name)
        target = (f"/ui/datasets/{url_part(saved.dataset)}/{url_part(saved.version)}/captions"
                  f"?page={page_no}&saved={url_part(saved.version)}")
        return secure_headers(RedirectResponse(target, status_code=303))

    return router
