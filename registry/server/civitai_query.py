"""The catalog queries behind the Civitai-style API (``civitai_api``): which adapters a caller may
see (namespace visibility), the ``/api/v1/models`` filters, creators, tags, the enums, and the
file name each version is served under.

Namespaces: an adapter belongs to the namespace of the repo its first version was pushed to
(``extra.hub.repo_id``, as ``hub.catalog_bridge.owner_of`` decides); an adapter the server's home
made itself (``add``, ``pull``) belongs to ``HOME_NAMESPACE``. Both are SQL expressions here, so a
page of visible models is cut in SQL like any other filter.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import PurePosixPath

from sqlalchemy import column, exists, false, func, or_, select, table

from loradex.families import all_families
from loradex.families.vocabulary import civitai_base_model, civitai_base_models, normalise

from ..catalog.db_schema import AdapterRow, VersionRow
from ..catalog.search_words import variant_tag
from .tokens import HOME_NAMESPACE

CIVITAI_TYPE = {"lora": "LORA", "lycoris": "LoCon", "embedding": "TextualInversion", "checkpoint": "Checkpoint"}
# Catalog family → the Civitai baseModel answered for it (from the families' vocabulary; a
# version's variant may say more: civitai_api.base_model_name).
CIVITAI_BASE = {**{f.name: civitai_base_model(f.name) for f in all_families()}, "unknown": "Other"}
# Civitai's sort names (ModelSort); loradex keeps no counts or ratings: Newest and Oldest order by
# id, every other sort is the id order too.
SORTS = ("Highest Rated", "Most Downloaded", "Most Liked", "Most Discussed", "Most Collected", "Most Images",
         "Newest", "Oldest")
PERIODS = {"alltime": None, "year": 365, "month": 30, "week": 7, "day": 1}
MAX_IDS = 1000
# GET /api/v1/enums: Civitai's names; the base models and types loradex serves come first.
ENUMS = {
    "ModelType": ["Checkpoint", "TextualInversion", "Hypernetwork", "AestheticGradient", "LORA", "LoCon",
                  "DoRA", "Controlnet", "Upscaler", "MotionModule", "VAE", "Poses", "Wildcards", "Workflows",
                  "Detection", "Other"],
    "ModelFileType": ["Model", "Text Encoder", "Pruned Model", "Negative", "Training Data", "VAE", "Config",
                      "Archive"],
    "ModelFileFormat": ["SafeTensor", "PickleTensor", "GGUF", "Diffusers", "Core ML", "ONNX", "Other"],
    "ActiveBaseModel": sorted(set(CIVITAI_BASE.values()) - {"Other"}) + ["Other"],
    "BaseModel": civitai_base_models() + ["Other"],
    "BaseModelType": ["Standard", "Inpainting", "Refiner", "Pix2Pix"],
    "ModelSort": list(SORTS),
    "MetricTimeframe": ["Day", "Week", "Month", "Year", "AllTime"],
}


class BadFilter(ValueError):
    """A query parameter the API answers with 400."""


def owner_repo():
    """Per adapter row (correlated): the repo id its first pushed version came from, or NULL for
    an adapter the home made itself."""
    repo = VersionRow.extra[("hub", "repo_id")].as_string()
    pushed = VersionRow.extra[("hub", "pushed_by")].as_string()
    return (select(repo).where(VersionRow.adapter_id == AdapterRow.id, pushed.is_not(None), repo.is_not(None))
            .order_by(VersionRow.created_at, VersionRow.id).limit(1).correlate(AdapterRow).scalar_subquery())


def namespace_of(repo_id: str | None) -> str:
    return repo_id.split("/", 1)[0] if repo_id else HOME_NAMESPACE


def in_namespaces(names) -> object:
    """SQL: the adapter row belongs to one of ``names``."""
    repo = owner_repo()
    conds = [repo.startswith(n + "/", autoescape=True) for n in sorted(names)]
    if HOME_NAMESPACE in names:
        conds.append(repo.is_(None))
    return or_(*conds) if conds else false()


def creator():
    """Per adapter row (correlated): who made its oldest live version (Civitai's creator)."""
    return (select(VersionRow.created_by).where(VersionRow.adapter_id == AdapterRow.id,
                                                VersionRow.deleted_at.is_(None))
            .order_by(VersionRow.sort_key).limit(1).correlate(AdapterRow).scalar_subquery())


def _has_live(*extra):
    return select(VersionRow.id).where(VersionRow.adapter_id == AdapterRow.id, VersionRow.deleted_at.is_(None),
                                       *extra).exists()


def _named_in(column, names: dict[str, str], wanted: set):
    """``column``'s catalog value has one of the ``wanted`` Civitai names (values missing from
    ``names`` are "Other")."""
    cond = column.in_([key for key, name in names.items() if name.lower() in wanted])
    return cond | column.notin_(list(names)) if "other" in wanted else cond


_SEARCH_TAGS = table("search_tags", column("adapter_id"), column("tag"))


def _base_in(column, wanted: set):
    """The adapter is of a ``wanted`` Civitai baseModel: of its family, and where the name is a
    variant's own ("Pony", "Flux.1 S", "Wan Video 2.2 I2V-A14B") with a live version its metadata
    or Civitai info tells is of that variant (the search index's variant rows); "Other": of no
    family Civitai names."""
    conds = []
    for name in sorted(wanted):
        found = normalise(name, "civitai")
        if not found:
            continue
        family, variant = found
        if variant is None or civitai_base_model(family).lower() == name:  # the family's own name
            conds.append(column == family)
        else:
            conds.append((column == family) & exists().where(
                _SEARCH_TAGS.c.adapter_id == AdapterRow.id, _SEARCH_TAGS.c.tag == variant_tag(family, variant)))
    if "other" in wanted:
        conds.append(column.notin_([f for f, name in CIVITAI_BASE.items() if name != "Other"]))
    return or_(*conds) if conds else false()


def split_list(values: list[str]) -> list[str]:
    """``types=LORA,LoCon`` and ``types=LORA&types=LoCon`` alike (clients send both)."""
    return [part.strip() for v in values for part in v.split(",") if part.strip()]


def parse_ids(values: list[str]) -> list[int]:
    out = []
    for part in split_list(values):
        if not part.isascii() or not part.isdigit() or len(part) > 12:
            raise BadFilter(f"ids: {part[:40]!r} is not a model id")
        out.append(int(part))
    if len(out) > MAX_IDS:
        raise BadFilter(f"ids: at most {MAX_IDS}")
    return out


def parse_sort(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    for name in SORTS:
        if value.strip().lower() == name.lower():
            return name
    raise BadFilter(f"sort must be one of: {', '.join(SORTS)}")


def parse_period(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    key = value.strip().lower()
    if key not in PERIODS:
        raise BadFilter("period must be one of: AllTime, Year, Month, Week, Day")
    return PERIODS[key]


@dataclass(frozen=True)
class ModelFilter:
    """``GET /api/v1/models`` filters (``types``/``bases`` lower-cased Civitai names).
    ``namespaces``: the namespaces the caller may see (None: all, a token's view). ``nsfw``: False
    hides adapters with a version Civitai marked nsfw (the catalog has no flag of its own); None
    or True shows all. ``period``: days within which a live version was made."""

    query: str | None = None
    types: set = field(default_factory=set)
    bases: set = field(default_factory=set)
    tag: str | None = None
    username: str | None = None
    ids: tuple = ()
    nsfw: bool | None = None
    period: int | None = None
    namespaces: frozenset | None = None

    def conditions(self) -> list:
        conds = [_has_live()]
        if self.query:
            conds.append(func.lower(AdapterRow.name).contains(self.query.lower(), autoescape=True))
        if self.types:
            conds.append(_named_in(AdapterRow.kind, CIVITAI_TYPE, self.types))
        if self.bases:
            conds.append(_base_in(AdapterRow.base, self.bases))
        if self.username:
            conds.append(func.lower(creator()) == self.username.lower())
        if self.ids:
            conds.append(AdapterRow.id.in_(self.ids))
        if self.nsfw is False:
            conds.append(~_has_live(VersionRow.extra[("civitai", "nsfw")].as_boolean().is_(True)))
        if self.period is not None:
            cutoff = datetime.now(timezone.utc) - timedelta(days=self.period)
            conds.append(_has_live(VersionRow.created_at >= cutoff))
        if self.namespaces is not None:
            conds.append(in_namespaces(self.namespaces))
        return conds

    def tag_matches(self, adapter: AdapterRow) -> bool:
        return self.tag.lower() in {t.lower() for t in adapter_tags(adapter)}


def adapter_tags(adapter: AdapterRow) -> list[str]:
    """An adapter's tags as Civitai lists them: the catalog's tag keys and their text values."""
    tags = adapter.tags or {}
    return sorted({str(k) for k in tags} | {str(v) for v in tags.values() if isinstance(v, str) and v})


def model_page(s, want: ModelFilter, *, limit: int, after: int | None = None, page: int | None = None,
               newest: bool = False) -> tuple[list[AdapterRow], bool, int | None]:
    """One page of adapters with live versions: (adapters, more after them, total for page mode).
    Paged in SQL; a ``tag`` (free-form JSON tags) is matched over the adapter rows in Python."""
    order = AdapterRow.id.desc() if newest else AdapterRow.id
    stmt = select(AdapterRow).where(*want.conditions()).order_by(order)
    if after is not None and not page:
        stmt = stmt.where(AdapterRow.id < after if newest else AdapterRow.id > after)
    skip = (page - 1) * limit if page else 0
    total = None
    if want.tag:
        rows = [a for a in s.scalars(stmt) if want.tag_matches(a)]
        total = len(rows)
        rows = rows[skip: skip + limit + 1]
    elif page:
        total = s.scalar(select(func.count()).select_from(AdapterRow).where(*want.conditions()))
        rows = list(s.scalars(stmt.offset(skip).limit(limit + 1)))
    else:
        rows = list(s.scalars(stmt.limit(limit + 1)))
    return rows[:limit], len(rows) > limit, total


def adapter_namespace(s, adapter_id: int) -> str:
    return namespace_of(s.scalar(select(owner_repo()).select_from(AdapterRow).where(AdapterRow.id == adapter_id)))


def creators(s, namespaces: frozenset | None, query: str | None) -> list[tuple[str, int]]:
    """(username, number of models) of the adapters the caller may see, by username."""
    conds = ModelFilter(namespaces=namespaces).conditions()
    counts = Counter(name or "" for name in s.scalars(select(creator()).select_from(AdapterRow).where(*conds)))
    q = (query or "").lower()
    return sorted(((n, c) for n, c in counts.items() if n and q in n.lower()), key=lambda nc: nc[0].lower())


def tags(s, namespaces: frozenset | None, query: str | None) -> list[tuple[str, int]]:
    """(tag, number of models) over the adapters the caller may see, by tag."""
    counts: Counter = Counter()
    for adapter in s.scalars(select(AdapterRow).where(*ModelFilter(namespaces=namespaces).conditions())):
        counts.update(adapter_tags(adapter))
    q = (query or "").lower()
    return sorted(((t, c) for t, c in counts.items() if q in t.lower()), key=lambda tc: tc[0].lower())


def default_file_name(row: VersionRow) -> str:
    return row.file_name or f"{row.sha256[:12]}.safetensors"


def served_names(s, rows: list[VersionRow]) -> dict[int, str]:
    """The file name each version is served under: its own, unless an older live version of the
    same adapter holds other bytes under that name (every push names the file after the
    adapter); then ``<stem>_v<version><suffix>``, so clients that put several versions in one
    folder keep them apart. Stable: a version's name changes only if an older one is added."""
    adapters = sorted({r.adapter_id for r in rows})
    first: dict[tuple[int, str], str] = {}  # (adapter, name) → sha256 of the oldest live holder
    if adapters:
        for vid, aid, name, sha in s.execute(
                select(VersionRow.id, VersionRow.adapter_id, VersionRow.file_name, VersionRow.sha256)
                .where(VersionRow.adapter_id.in_(adapters), VersionRow.deleted_at.is_(None))
                .order_by(VersionRow.id)):
            first.setdefault((aid, name or f"{sha[:12]}.safetensors"), sha)
    out = {}
    for r in rows:
        name = default_file_name(r)
        holder = first.get((r.adapter_id, name), r.sha256)
        if holder != r.sha256:
            p = PurePosixPath(name)
            name = f"{p.stem}_v{r.version}{p.suffix}"
        out[r.id] = name
    return out
