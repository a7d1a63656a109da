"""``loradex search``: ranked full-text search over the catalog, with facet counts.

One function, ``search_catalog``, serves the CLI, the server API and the web app. It reads the
index that ``search_index`` keeps (FTS5 on SQLite, a weighted ``tsvector`` on PostgreSQL) and
answers at adapter level: one hit per adapter whose live versions match, scored by its best
matching version, with the versions that matched.

The query is never handed to the database's query language: it is split into words exactly as
documents are (``search_index.words``), every word must match (AND), and the last one matches as
a prefix unless the query ends in a space (search as you type). Filters:

* ``kind``, ``base``: the adapter's kind and base family;
* ``tags``: ``{key: value}``, all must be among the adapter's tags;
* ``alias``: the adapter has an alias of that name;
* ``trigger``: a matching version has that trigger word (whole trigger, case and accents ignored);
* ``created_by``: a matching version was added by that user.

Sorts: ``relevance`` (best score, then name; without words, the newest change first),
``updated`` (newest live version first), ``name``. Facets count the whole matching set (not just
the page): ``kind``, ``base``, ``tag`` (``key=value``, the 50 most common) and ``alias``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from sqlalchemy import DateTime, Float, Integer, String, bindparam, column, text
from sqlalchemy.orm import Session

from ..errors import UsageError
from .search_index import FIELDS, _json, words

SORTS = ("relevance", "updated", "name")
MAX_LIMIT = 200
MAX_OFFSET = 1_000_000
MAX_QUERY_CHARS = 2_000  # read of a query; longer text is cut (never an error)
MAX_TERMS = 16
MAX_TERM_CHARS = 64
MAX_FILTER_CHARS = 200
MAX_TAG_FILTERS = 16
MAX_TAG_FACETS = 50
MAX_MATCHED_SHOWN = 5


@dataclass(frozen=True)
class SearchHit:
    name: str
    kind: str
    base: str
    description: str
    tags: dict
    latest_version: str
    versions: int  # live versions of the adapter
    aliases: dict  # alias → version
    triggers: tuple[str, ...]  # of the latest version
    size: int  # bytes of the latest version
    updated_at: datetime  # when its newest live version was added
    score: float  # relevance (0 without query words); comparable within one search only
    matched_versions: tuple[str, ...]  # best first, at most MAX_MATCHED_SHOWN
    matched: int  # how many of its versions matched

    def to_dict(self) -> dict:
        return {
            "name": self.name, "kind": self.kind, "base": self.base, "description": self.description,
            "tags": dict(self.tags), "latest_version": self.latest_version, "versions": self.versions,
            "aliases": dict(self.aliases), "triggers": list(self.triggers), "size": self.size,
            "updated_at": self.updated_at.isoformat(), "score": round(self.score, 6),
            "matched_versions": list(self.matched_versions), "matched": self.matched,
        }


@dataclass(frozen=True)
class SearchResult:
    query: str
    terms: tuple[str, ...]  # the words searched for (the last is a prefix when ``prefix``)
    prefix: bool
    sort: str
    limit: int
    offset: int
    total: int  # adapters matching (all pages)
    hits: tuple[SearchHit, ...]
    facets: dict = field(default_factory=dict)  # kind/base/tag/alias → {value: adapters}

    def to_dict(self) -> dict:
        return {
            "query": self.query, "terms": list(self.terms), "prefix": self.prefix, "sort": self.sort,
            "limit": self.limit, "offset": self.offset, "total": self.total,
            "hits": [h.to_dict() for h in self.hits],
            "facets": {name: dict(counts) for name, counts in self.facets.items()},
        }


@dataclass(frozen=True)
class _Query:
    terms: tuple[str, ...]
    prefix: bool
    kind: str | None
    base: str | None
    tags: tuple[tuple[str, str], ...]
    trigger: str | None
    alias: str | None
    created_by: str | None
    sort: str
    limit: int
    offset: int


def _text_filter(value, what: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise UsageError(f"{what} must be text")
    value = value.replace("\x00", "")
    if len(value) > MAX_FILTER_CHARS:
        raise UsageError(f"{what} is longer than {MAX_FILTER_CHARS} characters")
    return value


def _count(value, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value).strip())
        except ValueError:
            raise UsageError(f"{what} must be a whole number") from None
    if not lo <= value <= hi:
        raise UsageError(f"{what} must be between {lo} and {hi}")
    return value


def parse_query(query: str | None, *, kind=None, base=None, tags=None, trigger=None, alias=None,
                created_by=None, sort="relevance", limit=20, offset=0) -> _Query:
    """Check every argument (they may come from an HTTP request) and split the query into words."""
    from .operations import BASES, KINDS

    query = query or ""
    if not isinstance(query, str):
        raise UsageError("the search query must be text")
    head = query[:MAX_QUERY_CHARS]
    terms = tuple(t[:MAX_TERM_CHARS] for t in words(head)[:MAX_TERMS])
    # The last word is a prefix while it is being typed: the query ends inside it.
    prefix = bool(terms) and len(words(head)) <= MAX_TERMS and bool(words(head[-1:]))
    kind, base = _text_filter(kind, "--kind"), _text_filter(base, "--base")
    if kind is not None and kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    if base is not None and base not in BASES:
        raise UsageError(f"unknown base {base!r}; use one of {', '.join(BASES)}")
    tags = tags or {}
    if not isinstance(tags, dict) or len(tags) > MAX_TAG_FILTERS:
        raise UsageError(f"tags must be at most {MAX_TAG_FILTERS} KEY=VALUE pairs")
    tag_pairs = tuple(sorted((_text_filter(k, "a tag key") or "", _text_filter(v, "a tag value") or "")
                             for k, v in tags.items()))
    if any(not k for k, _v in tag_pairs):
        raise UsageError("a tag filter needs a KEY (KEY=VALUE)")
    if sort not in SORTS:
        raise UsageError(f"unknown sort {sort!r}; use one of {', '.join(SORTS)}")
    trigger = _text_filter(trigger, "--trigger")
    if trigger is not None and not words(trigger):
        raise UsageError("--trigger needs a word")
    return _Query(terms, prefix, kind, base, tag_pairs, trigger, _text_filter(alias, "--alias"),
                  _text_filter(created_by, "--created-by"), sort, _count(limit, "--limit", 1, MAX_LIMIT),
                  _count(offset, "--offset", 0, MAX_OFFSET))


def search_catalog(catalog, query: str | None = "", *, kind: str | None = None, base: str | None = None,
                   tags: dict | None = None, trigger: str | None = None, alias: str | None = None,
                   created_by: str | None = None, sort: str = "relevance", limit: int = 20,
                   offset: int = 0) -> SearchResult:
    """Search the catalog (see the module doc); raises ``UsageError`` for a bad filter, never
    for query text."""
    q = parse_query(query, kind=kind, base=base, tags=tags, trigger=trigger, alias=alias,
                    created_by=created_by, sort=sort, limit=limit, offset=offset)
    return catalog.read(lambda s: _search(s, q, query or ""))


# --- the dialect-specific part: which versions match, and their scores ----------------------------

def _sqlite_match(q: _Query) -> tuple[str, str, dict]:
    """(FROM … WHERE fragment over search_docs ``d``, score expression, params) for FTS5."""
    phrases = [f'"{t}"' for t in q.terms]  # words are letters and digits: nothing to escape
    if q.prefix:
        phrases[-1] += "*"
    weights = ", ".join(str(w) for w, _c in FIELDS.values())
    return ("search_fts JOIN search_docs d ON d.version_id = search_fts.rowid WHERE search_fts MATCH :match",
            f"-bm25(search_fts, {weights})", {"match": " ".join(phrases)})


def _postgresql_match(q: _Query) -> tuple[str, str, dict]:
    parts = [f"'{t}'" for t in q.terms]  # letters and digits only, quoted as lexemes
    if q.prefix:
        parts[-1] += ":*"
    return ("search_docs d CROSS JOIN to_tsquery('simple', :tsquery) tsq WHERE d.document @@ tsq",
            "ts_rank(d.document, tsq)", {"tsquery": " & ".join(parts)})


MATCHERS: dict[str, Callable[[_Query], tuple[str, str, dict]]] = {
    "sqlite": _sqlite_match,
    "postgresql": _postgresql_match,
}


def _matching_versions(s: Session, q: _Query) -> tuple[str, dict] | None:
    """SQL selecting (version_id, adapter_id, score) of the matching live versions, or None when
    every live version matches (no words, no version filter)."""
    if not q.terms and q.trigger is None and q.created_by is None:
        return None
    dialect = s.get_bind().dialect.name
    if q.terms:
        if dialect not in MATCHERS:
            raise UsageError(f"search is not available on the {dialect} database")
        where, score, params = MATCHERS[dialect](q)
    else:
        where, score, params = "search_docs d WHERE 1 = 1", "0.0", {}
    if q.trigger is not None:
        where += " AND d.trigger_key LIKE :trigger_like"
        params["trigger_like"] = "%\n" + " ".join(words(q.trigger)) + "\n%"
    if q.created_by is not None:
        where += " AND d.version_id IN (SELECT id FROM versions WHERE created_by = :created_by)"
        params["created_by"] = q.created_by
    return f"SELECT d.version_id AS vid, d.adapter_id AS aid, {score} AS score FROM {where}", params


def _with_matches(s: Session, versions: tuple[str, dict] | None) -> str:
    """``WITH m AS (…)`` naming the matching versions. SQLite must materialise it: FTS5's bm25()
    cannot be evaluated once the planner folds the query into an aggregate."""
    if versions is None:
        return ""
    hint = "MATERIALIZED " if s.get_bind().dialect.name == "sqlite" else ""
    return f"WITH m AS {hint}({versions[0]}) "


_ADAPTER_COLUMNS = (column("id", Integer), column("name", String), column("kind", String),
                    column("base", String), column("tags", String), column("updated_at", DateTime(timezone=True)),
                    column("score", Float), column("matched", Integer))


def _candidates(s: Session, q: _Query):
    """One row per matching adapter (before the tag filter): id, name, kind, base, tags, updated,
    score, versions matched."""
    versions = _matching_versions(s, q)
    params: dict = {}
    if versions is None:
        source = "SELECT adapter_id AS aid, 0.0 AS score, live_versions AS matched FROM search_adapters"
    else:
        sql, params = versions
        source = "SELECT m.aid, max(m.score) AS score, count(*) AS matched FROM m GROUP BY m.aid"
    where = []
    if q.kind is not None:
        where.append("a.kind = :kind")
        params["kind"] = q.kind
    if q.base is not None:
        where.append("a.base = :base")
        params["base"] = q.base
    if q.alias is not None:
        where.append("EXISTS (SELECT 1 FROM aliases al WHERE al.adapter_id = a.id AND al.name = :alias)")
        params["alias"] = q.alias
    sql = (_with_matches(s, versions)
           + f"SELECT a.id, a.name, a.kind, a.base, a.tags, sa.updated_at, c.score, c.matched FROM ({source}) c "
           "JOIN adapters a ON a.id = c.aid JOIN search_adapters sa ON sa.adapter_id = c.aid"
           + (" WHERE " + " AND ".join(where) if where else ""))
    return s.execute(text(sql).columns(*_ADAPTER_COLUMNS), params).all()


# --- putting it together ----------------------------------------------------------------------------

_SORT_KEYS = {
    "relevance": lambda row: (-row.score, row.name),
    "updated": lambda row: (-_utc(row.updated_at).timestamp(), row.name),
    "name": lambda row: row.name,
}


def _in(sql: str, **names) -> text:
    return text(sql).bindparams(*(bindparam(n, expanding=True) for n in names))


def _search(s: Session, q: _Query, raw_query: str) -> SearchResult:
    rows = _candidates(s, q)
    tags_of: dict[int, dict] = {}
    matching = []
    for row in rows:
        tags = _json(row.tags, {}) if row.tags not in (None, "{}", {}) else {}
        tags = tags if isinstance(tags, dict) else {}
        if all(str(tags.get(k)) == v and k in tags for k, v in q.tags):
            matching.append(row)
            tags_of[row.id] = tags
    sort = "updated" if q.sort == "relevance" and not q.terms else q.sort
    matching.sort(key=_SORT_KEYS[sort])
    page = matching[q.offset:q.offset + q.limit]
    facets = _facets(s, matching, tags_of)
    hits = _hits(s, q, page, tags_of) if page else ()
    return SearchResult(raw_query[:MAX_QUERY_CHARS], q.terms, q.prefix, q.sort, q.limit, q.offset,
                        len(matching), tuple(hits), facets)


def _count_into(counts: dict, value) -> None:
    counts[value] = counts.get(value, 0) + 1


def _ordered(counts: dict, keep: int | None = None) -> dict:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return dict(items[:keep] if keep else items)


def _facets(s: Session, matching: list, tags_of: dict) -> dict:
    kinds: dict = {}
    bases: dict = {}
    tag_counts: dict = {}
    for row in matching:
        _count_into(kinds, row.kind)
        _count_into(bases, row.base)
        for k, v in tags_of[row.id].items():
            _count_into(tag_counts, f"{k}={v}")
    aliases: dict = {}
    if matching:
        ids = {row.id for row in matching}
        if len(ids) <= 500:
            alias_rows = s.execute(_in("SELECT adapter_id, name FROM aliases WHERE adapter_id IN :ids", ids=1),
                                   {"ids": sorted(ids)})
        else:
            alias_rows = s.execute(text("SELECT adapter_id, name FROM aliases"))
        for aid, name in alias_rows:
            if aid in ids:
                _count_into(aliases, name)
    return {"kind": _ordered(kinds), "base": _ordered(bases), "tag": _ordered(tag_counts, MAX_TAG_FACETS),
            "alias": _ordered(aliases)}


def _hits(s: Session, q: _Query, page: list, tags_of: dict) -> list[SearchHit]:
    ids = [row.id for row in page]
    latest = {aid: rest for aid, *rest in s.execute(_in(
        "SELECT sa.adapter_id, v.version, v.size, v.trigger_words, a.description, sa.live_versions "
        "FROM search_adapters sa JOIN versions v ON v.id = sa.latest_version_id "
        "JOIN adapters a ON a.id = sa.adapter_id WHERE sa.adapter_id IN :ids", ids=1), {"ids": ids})}
    aliases: dict[int, dict] = {}
    for aid, name, version in s.execute(_in(
            "SELECT al.adapter_id, al.name, v.version FROM aliases al JOIN versions v ON v.id = al.version_id "
            "WHERE al.adapter_id IN :ids ORDER BY al.name", ids=1), {"ids": ids}):
        aliases.setdefault(aid, {})[name] = version
    matched = _matched_versions(s, q, ids)
    hits = []
    for row in page:
        version, size, triggers, description, live = latest[row.id]
        triggers = _json(triggers, [])
        hits.append(SearchHit(
            name=row.name, kind=row.kind, base=row.base, description=description or "", tags=tags_of[row.id],
            latest_version=version, versions=live, aliases=aliases.get(row.id, {}),
            triggers=tuple(str(t) for t in triggers) if isinstance(triggers, list) else (),
            size=size, updated_at=_utc(row.updated_at), score=float(row.score or 0.0),
            matched_versions=tuple(matched.get(row.id, ())), matched=row.matched))
    return hits


def _utc(at: datetime) -> datetime:
    """SQLite hands back the stored UTC time without its zone."""
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at


def _matched_versions(s: Session, q: _Query, ids: list[int]) -> dict[int, list[str]]:
    """The page's matching versions, best first (newest first when there are no words)."""
    versions = _matching_versions(s, q)
    if versions is None:
        versions = ("SELECT d.version_id AS vid, d.adapter_id AS aid, 0.0 AS score FROM search_docs d "
                    "WHERE d.adapter_id IN :page_ids", {})
    sql, params = versions
    rows = s.execute(
        text(_with_matches(s, versions) + "SELECT m.aid, v.version FROM m JOIN versions v ON v.id = m.vid "
             "WHERE m.aid IN :page_ids ORDER BY m.aid, m.score DESC, v.sort_key DESC")
        .bindparams(bindparam("page_ids", expanding=True)), {**params, "page_ids": ids})
    out: dict[int, list[str]] = {}
    for aid, version in rows:
        shown = out.setdefault(aid, [])
        if len(shown) < MAX_MATCHED_SHOWN:
            shown.append(version)
    return out
