"""Upstream watch: ask the source a version was pulled from whether it has something newer, or
whether it deleted what loradex holds (``loradex outdated``, ``loradex pull --update``).

A version's source is its ``pulled_from`` lineage (``civitai:VERSION_ID`` with the endpoint in
the recipe, or a Hub repo ``hf://OWNER/REPO@COMMIT`` / ``ENDPOINT/OWNER/REPO@COMMIT`` with
endpoint, repo, revision, path and sha256 in the recipe).

* Civitai: one ``/api/v1/models/{modelId}`` call lists the model's live versions. Newer = a later
  ``publishedAt`` (then a higher id) than the pulled one, of the same base model — same family
  AND variant through ``loradex.families.vocabulary`` (Pony is not Illustrious) — unless
  ``any_base``. A pulled version missing from that list is asked for by id; 404/410 there (or for
  the whole model) means deleted upstream.
* Hub: the revision's head commit and the pulled file's sha256 in it. A new commit that leaves
  the file alone is not newer; a repo, revision or file that is gone is deleted upstream.

Deleted upstream is recorded in the version's ``extra["upstream"]`` (state, deleted_at — the day
it was first seen gone —, checked_at); nothing is ever removed from the catalog. A source that
cannot be asked (network, 5xx, auth) is "unreachable" with its one-line error, and changes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import select

from ..errors import AuthError, LoradexError, NotFound, RemoteError, UsageError

UP_TO_DATE, NEWER, DELETED, UNREACHABLE = "up-to-date", "newer", "deleted", "unreachable"

# GET /api/v1/models/{id}: what the check reads of each listed version (others pass through)
_TEXT = {"type": ["string", "null"], "maxLength": 4096}
MODEL_VERSIONS_SCHEMA = {"type": "object", "properties": {
    "name": _TEXT,
    "modelVersions": {"type": ["array", "null"], "maxItems": 10_000, "items": {
        "type": "object", "required": ["id"],
        "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 2**53}, "name": _TEXT,
                       "baseModel": _TEXT, "publishedAt": _TEXT, "status": _TEXT}}}}}


@dataclass
class UpstreamStatus:
    """One adapter's answer: ``current`` is its newest catalog version pulled from the source."""
    adapter: str
    current: str  # NAME@VERSION in the catalog
    source: str  # civitai:VERSION_ID or the Hub ref it was pulled from
    kind: str  # civitai | hub
    state: str  # up-to-date | newer | deleted | unreachable
    newest: str | None = None  # the newest upstream ref of the same base (None: nothing newer)
    detail: str = ""  # base models, dates, the error of an unreachable source
    deleted: list[dict] = field(default_factory=list)  # [{"ref", "source", "deleted_at"}]
    other_base: str | None = None  # a newer version for another base model (taken only with any_base)
    _pull: dict = field(default_factory=dict, repr=False)  # what pull --update needs

    def to_dict(self) -> dict:
        return {"adapter": self.adapter, "current": self.current, "source": self.source, "kind": self.kind,
                "state": self.state, "newest": self.newest, "detail": self.detail,
                "deleted_upstream": list(self.deleted), "newer_other_base": self.other_base}


def _now() -> datetime:
    return datetime.now(timezone.utc)


# --- which versions came from where -------------------------------------------------------------
@dataclass(frozen=True)
class _Pulled:
    version_id: int
    ref: str
    sort_key: str
    kind: str
    source: str
    recipe: dict
    extra: dict


def _pulled_versions(catalog, names: list[str] | None) -> dict[str, list[_Pulled]]:
    """{adapter: its live versions with a pulled_from edge, oldest first}."""
    from ..catalog.db_schema import AdapterRow, LineageRow, VersionRow

    def run(s):
        q = (select(VersionRow, AdapterRow.name, LineageRow.parent_ref, LineageRow.recipe)
             .join(AdapterRow, AdapterRow.id == VersionRow.adapter_id)
             .join(LineageRow, LineageRow.child_version_id == VersionRow.id)
             .where(LineageRow.relation == "pulled_from", VersionRow.deleted_at.is_(None))
             .order_by(AdapterRow.name, VersionRow.sort_key, LineageRow.id))
        if names:
            q = q.where(AdapterRow.name.in_(names))
        out: dict[str, list[_Pulled]] = {}
        seen = set()
        for row, name, parent, recipe in s.execute(q):
            kind = _kind_of(parent or "", recipe or {})
            if kind is None or row.id in seen:
                continue
            seen.add(row.id)
            out.setdefault(name, []).append(_Pulled(row.id, f"{name}@{row.version}", row.sort_key, kind,
                                                    parent, dict(recipe or {}), dict(row.extra or {})))
        return out

    found = catalog.read(run)
    for name in names or []:
        if name not in found:
            catalog.versions(name)  # NotFound for an adapter that does not exist
            raise NotFound(f"{name}: no version of it was pulled from Civitai or the Hub",
                           hint="`loradex outdated` checks versions that `loradex pull` brought in")
    return found


def _kind_of(parent: str, recipe: dict) -> str | None:
    if re.fullmatch(r"civitai:\d+", parent):
        return "civitai"
    if recipe.get("repo_id") and recipe.get("commit") and recipe.get("endpoint"):
        return "hub"
    return None


# --- Civitai ------------------------------------------------------------------------------------
def _base_key(base_model: str | None):
    from .civitai import base_family_and_variant

    family, variant = base_family_and_variant(base_model)
    return (family, variant) if family != "unknown" else ("raw", (base_model or "").strip().lower())


def _order(v: dict) -> tuple[str, int]:
    # ISO-8601 from one source sorts as text; a version with no date sorts by id among its peers
    return (str(v.get("publishedAt") or ""), int(v["id"]))


def _civitai_status(catalog, adapter: str, pulled: list[_Pulled], *, any_base: bool, client_opts: dict) -> UpstreamStatus:
    from .civitai_client import CivitaiClient, DEFAULT_ENDPOINT

    current = pulled[-1]
    civ = current.extra.get("civitai") or {}
    # the endpoint the pull or identify was told to use (an imported sidecar names none: Civitai)
    endpoint = str(current.recipe.get("endpoint") or DEFAULT_ENDPOINT).rstrip("/")
    model_id = current.recipe.get("modelId") or civ.get("modelId")
    if type(model_id) is not int or model_id < 1:  # it goes into a URL: a plain positive integer only
        model_id = None
    status = UpstreamStatus(adapter, current.ref, current.source, "civitai", UP_TO_DATE)
    mine = [p for p in pulled if p.kind == "civitai"]
    try:
        with CivitaiClient(endpoint, **client_opts) as client:
            if model_id is None:  # an edge from a sidecar: the version names its model
                try:
                    model_id = client.version(int(current.source.split(":", 1)[1])).get("modelId")
                except NotFound:
                    model_id = None
                if type(model_id) is not int:
                    status.deleted = _mark(catalog, [current], {current.version_id}, "the version is gone upstream")
                    status.state, status.detail = DELETED, f"{current.source} is gone from {endpoint}"
                    return status
            try:
                model = client.get_json(f"/api/v1/models/{model_id}", what=f"civitai model {model_id}",
                                        schema=MODEL_VERSIONS_SCHEMA)
            except NotFound:
                status.deleted = _mark(catalog, mine, {p.version_id for p in mine},
                                       f"model {model_id} is gone from {endpoint}")
                status.state, status.detail = DELETED, f"model {model_id} is gone from {endpoint}"
                return status
            listed = [v for v in model.get("modelVersions") or []]
            ids = {v["id"] for v in listed}
            gone = set()
            for p in mine:
                vid = int(p.source.split(":", 1)[1])
                if vid in ids:
                    continue
                try:  # missing from the list: gone, or merely unlisted (asked directly)
                    client.version(vid)
                except NotFound:
                    gone.add(p.version_id)
    except (RemoteError, AuthError) as exc:
        status.state, status.detail = UNREACHABLE, _one_line(exc)
        return status
    status.deleted = _mark(catalog, mine, gone, "the version is gone upstream")
    pulled_id = int(current.source.split(":", 1)[1])
    mine_info = next((v for v in listed if v["id"] == pulled_id), None)
    base = (mine_info or {}).get("baseModel") or civ.get("baseModel")
    published = (mine_info or {}).get("publishedAt") or civ.get("publishedAt")
    here = _order({"id": pulled_id, "publishedAt": published})
    newer = [v for v in listed if _order(v) > here]
    same = [v for v in newer if _base_key(v.get("baseModel")) == _base_key(base)]
    other = [v for v in newer if v not in same]
    pick = max(newer if any_base else same, key=_order, default=None)
    if other and not any_base:
        best = max(other, key=_order)
        status.other_base = f"civitai:{best['id']}"
        status._pull["other_base"] = best
    if current.version_id in gone:
        status.state = DELETED
        status.detail = "this version is gone upstream"
    if pick is not None:
        status.state, status.newest = NEWER, f"civitai:{pick['id']}"
        status.detail = (f"{pick.get('name') or '?'} ({pick.get('baseModel') or '?'}, "
                         f"{str(pick.get('publishedAt') or '?')[:10]})")
        status._pull.update({"ref": f"civitai:{pick['id']}", "endpoint": endpoint, "info": pick,
                             "base": base})
    elif status.state == UP_TO_DATE and status.other_base:
        best = status._pull["other_base"]
        status.detail = (f"newer for another base model: {status.other_base} "
                         f"({best.get('baseModel') or '?'}; this one is {base or '?'}) — --any-base takes it")
    return status


# --- Hub ----------------------------------------------------------------------------------------
def _hub_status(catalog, adapter: str, pulled: list[_Pulled]) -> UpstreamStatus:
    from .hub import token_for
    from .hub_client import _remote_errors, repo_files

    current = pulled[-1]
    r = current.recipe
    endpoint, repo_id = str(r["endpoint"]).rstrip("/"), str(r["repo_id"])
    revision = str(r.get("revision") or "main")
    status = UpstreamStatus(adapter, current.ref, current.source, "hub", UP_TO_DATE)
    remote = _pulled_through(catalog, current)
    token = token_for(remote, endpoint)
    try:
        with _remote_errors(endpoint, repo_id, bool(token), "outdated"):
            commit, files = repo_files(endpoint, repo_id, revision, token)
    except NotFound as exc:
        status.state, status.detail = DELETED, _one_line(exc)
        status.deleted = _mark(catalog, [current], {current.version_id}, status.detail)
        return status
    except LoradexError as exc:
        status.state, status.detail = UNREACHABLE, _one_line(exc)
        return status
    status.deleted = _mark(catalog, [current], set(), "")
    if commit == r.get("commit"):
        return status
    path = r.get("path")
    entry = next((f for f in files if f.rfilename == path), None)
    if entry is None:
        status.state, status.detail = DELETED, f"{path} is no longer in {repo_id}@{revision} ({commit[:12]})"
        status.deleted = _mark(catalog, [current], {current.version_id}, status.detail)
        return status
    if entry.lfs is not None and entry.lfs.sha256 == r.get("sha256"):
        status.detail = f"{repo_id}@{revision} moved to {commit[:12]}; {path} is unchanged"
        return status
    status.state, status.newest = NEWER, f"{repo_id}@{commit[:12]}"
    status.detail = f"{path} changed in {repo_id}@{revision}"
    status._pull.update({"endpoint": endpoint, "repo_id": repo_id, "revision": revision, "path": path,
                         "remote": remote})
    return status


def _pulled_through(catalog, pulled: _Pulled):
    """The recorded remote a Hub pull went through (its token), when it is still recorded."""
    from . import _find_remote

    name = (pulled.extra.get("hub") or {}).get("remote")
    return _find_remote(catalog, name) if isinstance(name, str) and name else None


# --- recording ----------------------------------------------------------------------------------
def _mark(catalog, pulled: list[_Pulled], gone: set[int], why: str) -> list[dict]:
    """Record the check on each version: ``extra["upstream"]`` says deleted (first day seen gone,
    kept on later checks) or present again. Returns the deleted ones."""
    from ..catalog.db_schema import VersionRow

    when = _now()

    def run(s):
        out = []
        for p in pulled:
            row = s.get(VersionRow, p.version_id)
            if row is None:
                continue
            extra = dict(row.extra or {})
            before = dict(extra.get("upstream") or {})
            if p.version_id in gone:
                up = {"state": DELETED, "source": p.source, "why": why,
                      "deleted_at": before.get("deleted_at") if before.get("state") == DELETED
                      else when.date().isoformat(),
                      "checked_at": when.isoformat(timespec="seconds")}
                out.append({"ref": p.ref, "source": p.source, "deleted_at": up["deleted_at"]})
            else:
                up = {"state": "present", "source": p.source, "checked_at": when.isoformat(timespec="seconds")}
            extra["upstream"] = up  # checked_at moves on every check: one small write per version
            row.extra = extra
        return out

    return catalog.transact(run)



def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:240]


# --- entry points -------------------------------------------------------------------------------
def outdated(catalog, names: list[str] | None = None, *, any_base: bool = False,
             transport=None, sleep=None) -> list[UpstreamStatus]:
    """One status per adapter that has versions pulled from Civitai or the Hub (``names``: only
    these; each must have one)."""
    opts = {"transport": transport} if transport is not None else {}
    if sleep is not None:
        opts["sleep"] = sleep
    out = []
    for adapter, pulled in _pulled_versions(catalog, names).items():
        kind = pulled[-1].kind
        mine = [p for p in pulled if p.kind == kind]
        if kind == "civitai":
            out.append(_civitai_status(catalog, adapter, mine, any_base=any_base, client_opts=opts))
        else:
            out.append(_hub_status(catalog, adapter, mine))
    return out


@dataclass
class UpdateResult:
    status: UpstreamStatus
    pulled: object | None = None  # the pull's result when a version was added
    message: str = ""

    def to_dict(self) -> dict:
        return {"status": self.status.to_dict(), "message": self.message,
                "pulled": self.pulled.to_dict() if self.pulled is not None else None}


def pull_update(catalog, name: str, *, any_base: bool = False, progress=None, transport=None,
                sleep=None) -> UpdateResult:
    """Take the newest upstream version of adapter ``name`` as a NEW catalog version (minor bump,
    ``pulled_from`` lineage); nothing is replaced. Nothing newer: says so. A newer version only
    for another base model is refused unless ``any_base``."""
    (status,) = outdated(catalog, [name], any_base=any_base, transport=transport, sleep=sleep)
    if status.state == UNREACHABLE:
        raise RemoteError(f"pull --update {name}: {status.detail}", hint="try again later")
    if status.state != NEWER:
        if status.other_base:
            best = status._pull["other_base"]
            raise UsageError(f"pull --update {name}: the newer upstream version {status.other_base} is for "
                             f"{best.get('baseModel') or '?'}, {status.current} for another base model",
                             hint="pass --any-base to take it as a new version anyway")
        why = "deleted upstream" if status.state == DELETED else "up to date"
        return UpdateResult(status, None, f"nothing to do: {status.current} is {why} ({status.source})")
    p = status._pull
    if status.kind == "civitai":
        from .civitai import pull_civitai

        result = pull_civitai(catalog, p["ref"], endpoint=p["endpoint"], name=name, bump="minor",
                              progress=progress, transport=transport, sleep=sleep)
    else:
        from .hub import pull_hub

        result = pull_hub(catalog, f"hf://{p['repo_id']}@{p['revision']}", endpoint=p["endpoint"], name=name,
                          remote=p["remote"], progress=progress, aliases=False)
    if getattr(result, "already_present", False):
        return UpdateResult(status, result, f"{status.newest} is already in the catalog as {result.version.ref}")
    return UpdateResult(status, result, f"pulled {status.newest} as {result.version.ref} "
                                        f"(was {status.current}); sha256 {result.version.sha256[:12]}… verified")
