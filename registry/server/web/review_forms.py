"""The review form: ``GET /ui/review/{name}/{version}`` shows a version's samples (the card's,
with the base-model image beside each, and the version's other records) with accept / reject /
neutral + reason, "choose this candidate over those" + reason, and the failure checks;
``POST`` stores them through ``registry.catalog.review.apply_review`` — the call behind
``loradex review`` — as one new card revision, with the signed-in token's name as the reviewer.

Form fields: ``verdict:<record id>`` (good | bad | neutral, empty = no change) and
``reason:<record id>``; ``choose`` (one record id), ``over`` (record ids, repeated) and
``choose_reason``; ``check:<check name>`` (pass | fail | not-checked, empty = unchanged) and
``check_note``. Only the record ids the form showed are accepted. A bad submission answers 400
with the form and the reason; the card is untouched.
"""

from __future__ import annotations

from ...catalog.review import CHECK_NAMES, Verdict, apply_review, make_review
from ..app import register_router
from .alias_forms import form_text, writer_for
from .common import WebError, current_principal, int_param, page, render, secure_headers
from .evidence_views import resolve_version, review_view
from .version_pages import is_anonymous, may_move, visible_namespace

MAX_TEXT = 1000  # characters of one reason or note


def review_from_form(form: dict, record_ids: list[str]):
    """The form's fields → a checked ``Review`` (``make_review``: the CLI's rules); ``WebError(400)``
    for a field about a record the form did not show or a repeated single field."""
    known = set(record_ids)
    verdicts = []
    for key in form:
        head, sep, rid = key.partition(":")
        if sep and head in ("verdict", "reason") and rid not in known:
            raise WebError(400, f"record {rid[:40]!r} is not one of this version's samples")
        if sep and head == "check" and rid not in CHECK_NAMES:
            raise WebError(400, f"unknown failure check {rid[:40]!r}")
    for rid in record_ids:  # in the page's order
        word = form_text(form, f"verdict:{rid}", limit=20)
        reason = form_text(form, f"reason:{rid}", limit=MAX_TEXT)
        if word:
            verdicts.append(Verdict(rid, word, reason))
        elif reason:
            raise WebError(400, f"a reason for {rid} needs a verdict (accept, reject or neutral)")
    choose = form_text(form, "choose", limit=40) or None
    over = form.get("over", [])
    over = [over] if isinstance(over, str) else list(over)
    if choose is not None and choose not in known or any(o not in known for o in over):
        raise WebError(400, "a chosen or passed-over candidate is not one of this version's samples")
    checks = []
    for name in CHECK_NAMES:
        status = form_text(form, f"check:{name}", limit=20)
        if status:
            checks.append(f"{name}={status}")
    return make_review(verdicts=verdicts, choose=choose, over=[o for o in over if o != choose] if choose else over,
                       reason=form_text(form, "choose_reason", limit=MAX_TEXT),
                       checks=checks, note=form_text(form, "check_note", limit=MAX_TEXT))


def review_page(request, name: str, selector: str, *, status: int = 200, error: str = "", stored: int = 0):
    principal = current_principal(request)
    catalog = request.app.state.catalog
    namespace = visible_namespace(request, principal, name)
    version = resolve_version(catalog, name, selector)
    reviewer = None if is_anonymous(principal) else principal.name
    view = review_view(catalog, version, reviewer)
    return render(request, "review.html", status, title=f"Review {version.ref}", version=version, **view,
                  error=error, stored=stored, may_review=may_move(principal, namespace), max_text=MAX_TEXT)


@register_router("web_review")
def review_router():
    from fastapi import APIRouter, Request
    from fastapi.responses import RedirectResponse
    from starlette.concurrency import run_in_threadpool

    from ...errors import LoradexError, NotFound
    from .common import url_part

    router = APIRouter()

    @router.get("/ui/review/{name}/{version}", include_in_schema=False)
    @page
    def show_review(request: Request, name: str, version: str):
        stored = int_param(request.query_params.get("stored"), 0, least=0, most=2**62)
        return review_page(request, name, version, stored=stored)

    @router.post("/ui/review/{name}/{version}", include_in_schema=False)
    @page
    async def post_review(request: Request, name: str, version: str):
        principal, form = await writer_for(request, name)
        catalog = request.app.state.catalog

        def store():
            found = resolve_version(catalog, name, version)
            view = review_view(catalog, found, principal.name)
            review = review_from_form(form, view["record_ids"])
            return found, apply_review(catalog, found.ref, review, reviewer=principal.name)

        try:
            found, card = await run_in_threadpool(store)
        except (WebError, LoradexError) as exc:
            if isinstance(exc, NotFound) or (isinstance(exc, WebError) and exc.status != 400):
                raise
            message = exc.message if isinstance(exc, WebError) else str(exc).splitlines()[0]
            return await run_in_threadpool(review_page, request, name, version, status=400, error=message)
        target = f"/ui/review/{url_part(name)}/{url_part(found.version)}?stored={card.id}"
        return secure_headers(RedirectResponse(target, status_code=303))

    return router
