"""Prompt records as Civitai images, for the Civitai-style API (``civitai_api``): the ``images``
of a model version and ``GET /api/v1/images``.

An image is a prompt record that has a picture: the original image URL of a Civitai import, else
the record's PNG served by this mirror (``/api/v1/images/<sha256>.png``). ``meta`` uses
Civitai's field names (prompt, negativePrompt, seed, steps, sampler, cfgScale, Size, and the
resources: the record's stack and base, with ``civitaiResources`` naming the versions of this
server that the stack used). Ids: Civitai's are integers, a record's is text, so an image's id is
the first 52 bits of the sha256 of the record id (stable, exact in JavaScript numbers).
"""

from __future__ import annotations

import hashlib

from sqlalchemy import exists, func, or_, select

from ..catalog.db_schema import AdapterRow, PromptRecordRow, PromptRecordVersionRow, VersionRow

GREY_BLURHASH = "00Eyb["  # BlurHash of plain grey (one component): Civitai lists one per image
MAX_IMAGES_IN_VERSION = 20


def image_id(record_id: str) -> int:
    return int(hashlib.sha256(record_id.encode()).hexdigest()[:13], 16)


def _iso(value) -> str | None:
    if value is None:
        return None
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def _image_url(row: PromptRecordRow, base_url: str) -> str | None:
    rec = row.record or {}
    url = ((rec.get("imported") or {}).get("extra") or {}).get("civitai_image")
    if not url and row.image_sha256:
        url = f"{base_url}api/v1/images/{row.image_sha256}.png"
    return url if isinstance(url, str) and url else None


def _has_image():
    return or_(PromptRecordRow.image_sha256.is_not(None),
               PromptRecordRow.record[("imported", "extra", "civitai_image")].as_string().is_not(None))


def _meta(rec: dict, versions: dict[str, int]) -> dict:
    """Civitai's ``meta`` of a record; ``versions``: sha256 → version id of this server."""
    meta = {"prompt": rec.get("prompt"), "negativePrompt": rec.get("negative_prompt"),
            "seed": rec.get("seed"), "steps": rec.get("steps"),
            "sampler": (rec.get("scheduler") or {}).get("name"), "cfgScale": rec.get("cfg")}
    if rec.get("width") and rec.get("height"):
        meta["Size"] = f"{rec['width']}x{rec['height']}"
    resources, civitai = [], []
    base = rec.get("base") or {}
    if isinstance(base, dict) and (base.get("ref") or base.get("sha256")):
        meta["Model"] = base.get("ref")
        resources.append({"name": base.get("ref"), "type": "model",
                          "hash": (base.get("sha256") or "")[:10] or None})
    for entry in rec.get("stack") or []:
        if not isinstance(entry, dict):
            continue
        sha = entry.get("sha256") or ""
        weight = entry.get("unet_weight")
        resources.append({"name": entry.get("ref") or entry.get("requested"), "type": "lora",
                          "weight": weight, "hash": sha[:12] or None})
        if sha in versions:
            civitai.append({"type": "lora", "modelVersionId": versions[sha], "weight": weight})
    meta["resources"] = resources
    meta["civitaiResources"] = civitai
    return meta


def image_json(row: PromptRecordRow, versions: dict[str, int], base_url: str, *, listed: bool = False,
               base_model: str | None = None) -> dict | None:
    """The Civitai image of a record, or None when it has no picture. ``listed``: the shape of
    ``GET /api/v1/images`` (nsfwLevel as a name, stats, username) rather than a version's."""
    url = _image_url(row, base_url)
    if url is None:
        return None
    rec = row.record or {}
    data = {"id": image_id(row.id), "url": url, "hash": GREY_BLURHASH, "width": rec.get("width"),
            "height": rec.get("height"), "type": "image", "createdAt": _iso(row.created_at),
            "meta": _meta(rec, versions)}
    if listed:
        data.update({"nsfw": False, "nsfwLevel": "None", "browsingLevel": 1, "postId": None,
                     "username": row.created_by or None, "baseModel": base_model,
                     "modelVersionIds": sorted(set(versions.values())),
                     "stats": {"cryCount": 0, "laughCount": 0, "likeCount": 0, "dislikeCount": 0,
                               "heartCount": 0, "commentCount": 0}})
    else:
        data["nsfwLevel"] = 1
    return data


def _linked_versions(s, record_ids: list[str]) -> dict[str, dict[str, int]]:
    """record id → {sha256: version id} of the live versions its stack used."""
    out: dict[str, dict[str, int]] = {r: {} for r in record_ids}
    if record_ids:
        for rid, vid, sha in s.execute(
                select(PromptRecordVersionRow.record_id, VersionRow.id, VersionRow.sha256)
                .join(VersionRow, VersionRow.id == PromptRecordVersionRow.version_id)
                .where(PromptRecordVersionRow.record_id.in_(record_ids), VersionRow.deleted_at.is_(None))
                .order_by(VersionRow.id)):
            out[rid].setdefault(sha, vid)
    return out


def version_images(s, version_id: int, base_url: str) -> list[dict]:
    """The images of one version (its prompt records with a picture, oldest first)."""
    rows = list(s.scalars(select(PromptRecordRow).join(
        PromptRecordVersionRow, PromptRecordVersionRow.record_id == PromptRecordRow.id)
        .where(PromptRecordVersionRow.version_id == version_id, _has_image())
        .order_by(PromptRecordRow.created_at, PromptRecordRow.id).limit(MAX_IMAGES_IN_VERSION)))
    linked = _linked_versions(s, [r.id for r in rows])
    return [im for r in rows if (im := image_json(r, linked[r.id], base_url)) is not None]


def used_by(*conds):
    """SQL: the record's stack used a live version matching ``conds`` (on VersionRow/AdapterRow)."""
    return exists(select(PromptRecordVersionRow.record_id)
                  .join(VersionRow, VersionRow.id == PromptRecordVersionRow.version_id)
                  .join(AdapterRow, AdapterRow.id == VersionRow.adapter_id)
                  .where(PromptRecordVersionRow.record_id == PromptRecordRow.id, VersionRow.deleted_at.is_(None),
                         *conds))


def images_page(s, *, base_url: str, limit: int, offset: int, version_id: int | None = None,
                model_id: int | None = None, username: str | None = None, image: int | None = None,
                visible=None, oldest: bool = False) -> tuple[list[dict], bool]:
    """A page of ``GET /api/v1/images``: (images, more after them). ``visible``: an SQL condition
    on the adapter the caller may see (None: all); a record is listed when its stack used a
    version the caller may see (records that used none are listed only to a token's view)."""
    from .civitai_query import CIVITAI_BASE

    conds = [_has_image()]
    if version_id is not None:
        conds.append(used_by(VersionRow.id == version_id))
    if model_id is not None:
        conds.append(used_by(VersionRow.adapter_id == model_id))
    if username:
        conds.append(func.lower(PromptRecordRow.created_by) == username.lower())
    if visible is not None:
        conds.append(used_by(visible))
    order = (PromptRecordRow.created_at, PromptRecordRow.id) if oldest else \
        (PromptRecordRow.created_at.desc(), PromptRecordRow.id.desc())
    stmt = select(PromptRecordRow).where(*conds).order_by(*order)
    if image is not None:  # ids are hashes of the record id: look among the matching records
        rows = [r for r in s.scalars(stmt) if image_id(r.id) == image][offset: offset + limit + 1]
    else:
        rows = list(s.scalars(stmt.offset(offset).limit(limit + 1)))
    more, rows = len(rows) > limit, rows[:limit]
    linked = _linked_versions(s, [r.id for r in rows])
    used = {v for m in linked.values() for v in m.values()}
    bases = dict(s.execute(select(VersionRow.id, AdapterRow.base)
                           .join(AdapterRow, AdapterRow.id == VersionRow.adapter_id).where(VersionRow.id.in_(used))).all())
    out = []
    for r in rows:
        ids = sorted(linked[r.id].values())
        base = CIVITAI_BASE.get(bases.get(ids[0], ""), None) if ids else None
        if (im := image_json(r, linked[r.id], base_url, listed=True, base_model=base)) is not None:
            out.append(im)
    return out, more
