"""Training data in the web app: the version page's "Trained on" section (``trained_on_view``)
and the dataset page ``GET /ui/datasets/{name}/{version}`` (every image of a dataset version as
a thumbnail with its caption, the check's warnings, the adapter versions trained from it).

Who sees what: datasets have no namespace of their own. A signed-in token (or ``--public-read``)
sees every dataset; another anonymous visitor sees a dataset version — and its images through
``/ui/blobs`` and ``/ui/thumbs`` (``images.image_access`` asks ``dataset_image_adapters``) —
only when an adapter version it may see was trained from it. Anything else answers 404.
"""

from __future__ import annotations

from sqlalchemy import Text, cast, select

from ...catalog.datasets import PREFIX, get_dataset_version, parse_dataset_ref, trained_on, trained_versions
from ...catalog.db_schema import AdapterRow, DatasetVersionRow, LineageRow, VersionRow
from ...catalog.refs import check_name
from ..app import register_router
from .common import current_principal, page, render, visible_namespaces

THUMBS_ON_VERSION_PAGE = 12


def trained_on_view(catalog, version) -> list[dict]:
    """One entry per dataset version ``version`` was trained from: its ref and page, facts,
    warnings and the first thumbnails (their blob sha256 and captions)."""
    out = []
    for entry in trained_on(catalog, version.ref):
        found = entry["version"]
        view = {"ref": entry["ref"], "url": None, "note": entry["note"], "num_images": None, "warnings": [],
                "images": [], "more": 0, "manifest_sha256": entry["manifest_sha256"]}
        if found is not None:
            images = found.images
            view.update(url=f"/ui/datasets/{found.dataset}/{found.version}", num_images=found.num_images,
                        warnings=found.warnings, images=images[:THUMBS_ON_VERSION_PAGE],
                        more=max(0, len(images) - THUMBS_ON_VERSION_PAGE))
        out.append(view)
    return out


def _trained_adapter_ids(s, refs: set[str]) -> set[int]:
    if not refs:
        return set()
    return set(s.scalars(select(VersionRow.adapter_id)
                         .join(LineageRow, LineageRow.child_version_id == VersionRow.id)
                         .where(LineageRow.parent_ref.in_(refs), LineageRow.relation == "trained_from",
                                VersionRow.deleted_at.is_(None))))


def dataset_image_adapters(s, sha256: str) -> tuple[set[int], bool]:
    """(adapters trained from a live dataset version holding image ``sha256``, whether any live
    dataset version holds it). ``sha256`` is a checked hex digest (the route's)."""
    from ...catalog.db_schema import DatasetRow

    rows = s.execute(select(DatasetRow.name, DatasetVersionRow.version, DatasetVersionRow.manifest)
                     .join(DatasetRow, DatasetRow.id == DatasetVersionRow.dataset_id)
                     .where(DatasetVersionRow.deleted_at.is_(None),
                            cast(DatasetVersionRow.manifest, Text).contains(sha256))).all()
    refs = {f"{PREFIX}{name}@{version}" for name, version, manifest in rows
            if any(isinstance(r, dict) and r.get("sha256") == sha256 for r in (manifest or {}).get("images", ()))}
    return _trained_adapter_ids(s, refs), bool(refs)


def _may_see(request, catalog, ref: str) -> bool:
    from ..civitai_query import adapter_namespace

    namespaces = visible_namespaces(request, current_principal(request))
    if namespaces is None:
        return True

    def run(s):
        return {adapter_namespace(s, i) for i in _trained_adapter_ids(s, {ref}) if s.get(AdapterRow, i)}

    return bool(catalog.read(run) & set(namespaces))


def dataset_page(request, name: str, selector: str):
    from ...errors import NotFound

    catalog = request.app.state.catalog
    check_name(name)
    found = get_dataset_version(catalog, str(parse_dataset_ref(f"{name}@{selector}")))
    if not _may_see(request, catalog, found.ref):
        raise NotFound(f"no dataset named {name!r}")
    return render(request, "dataset.html", title=found.ref, dataset=found, images=found.images,
                  trained=trained_versions(catalog, found))


@register_router("web_datasets")
def datasets_router():
    from fastapi import APIRouter, Request

    router = APIRouter()

    @router.get("/ui/datasets/{name}/{version}", include_in_schema=False)
    @page
    def show_dataset(request: Request, name: str, version: str):
        return dataset_page(request, name, version)

    return router
