"""``loradex search``: ranked full-text search over the catalog, with facet counts.

One function, ``search_catalog``, serves the CLI, the server API and the web app. It reads the
index that ``search_index`` keeps (FTS5 on SQLite, a weighted ``tsvector`` on PostgreSQL) and
answers at adapter level: one hit per adapter with live versions whose document matches.

The query is never handed to the database's query language: it is split into words exactly as
documents are (``search_words.words``), every word must match (AND), and the last one matches as
a prefix unless the query ends in a space (search as you type). Filters:

* ``kind``, ``base``: the adapter's kind and base family (``base`` takes any spelling the
  families' vocabulary knows: ``sdxl``, ``SDXL 1.0``, ``Flux.1 D``; a variant's name, ``pony``,
  filters on its family and the variant);
* ``variant``: one of its live versions is of that variant (``sdxl/pony``, or ``pony`` where
  only one family has it), as the version's metadata or Civitai info tells;
* ``tags``: ``{key: value}``, all must be among the adapter's tags;
* ``alias``: the adapter has an alias of that name;
* ``trigger``: one of its live versions has that trigger word (a whole trigger; case and accents
  ignored);
* ``created_by``: one of its live versions was added by that user.

The words are matched against the adapter's whole document (its own text and every live
version's), so they may come from different versions. ``matched_versions`` names the versions
that hold every word themselves (the adapter's name, description and tags count for each) and
pass the version filters: those whose own text holds more of the words first, then the newest;
it can be empty when the words are spread over several versions.

Sorts: ``relevance`` (score, then name; without words, the newest change first), ``updated``
(newest live version first), ``name`` (byte order). Facets count the whole matching set (not
just the page): ``kind``, ``base``, ``tag`` (``key=value``, the 50 most common) and ``alias``,
and ``variant`` (``family/variant``) when any matching adapter has one.
The matching set, the page, the total and the facets are one SQL statement over the index (see
``_statement``; on PostgreSQL the words are matched by a statement of their own first, see
``_postgresql_match``), then three small reads fill in the page.

The statements are SQL text with ``:name`` parameters, which both SQLAlchemy's ``text()`` and
the standard library's ``sqlite3`` take, run through ``SQL.rows``: on a ``Catalog`` through its
session (``SessionSQL``), on a ``light_reads.LightReader`` (the ``loradex search`` command on
the default SQLite catalog at the newest schema) straight through ``sqlite3``, so that a search
from the command line does not import SQLAlchemy. One search, whichever runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Protocol

from ..errors import UsageError
from .entities import KINDS
from .search_words import FIELDS, VARIANT_TAG, VERSION_FIELDS, _json, adapter_words, variant_tag, words

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
    score: float  # relevance; comparable within one search only; 0 without words or sorted otherwise
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
    facets: dict = field(default_factory=dict)  # kind/base/tag/alias (+ variant) → {value: adapters}

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
    variant: str | None  # "family/variant"
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


def family_filter(base: str | None, variant: str | None) -> tuple[str | None, str | None]:
    """``--base`` / ``--variant`` → (family, "family/variant"): a family name, any spelling the
    families' vocabulary knows for one ("SDXL 1.0", "Flux.1 D"), or a variant's name ("pony")."""
    from loradex.families import UNKNOWN, family_names
    from loradex.families.vocabulary import normalise, variant_names

    family = fam_variant = None
    if base is not None:
        key = base.strip().lower()
        if key in family_names() or key == UNKNOWN:
            family = key
        else:
            owners = [f for f in family_names() if key in variant_names(f)]
            found = ((owners[0], key) if len(owners) == 1 else None) \
                or normalise(base, "civitai") or normalise(base, "kohya") or normalise(base, "text")
            if not found:
                raise UsageError(f"unknown base {base!r}; use a family ({', '.join(family_names())}), "
                                 f"a variant or a Civitai base model name")
            family, fam_variant = found[0], (f"{found[0]}/{found[1]}" if found[1] else None)
    if variant is not None:
        fam, _, name = variant.strip().lower().rpartition("/")
        owners = [f for f in family_names() if name in variant_names(f) and (not fam or f == fam)]
        if len(owners) != 1:
            raise UsageError(f"unknown variant {variant!r}" if not owners else
                             f"variant {variant!r} names several families; use FAMILY/{name} "
                             f"({', '.join(f'{f}/{name}' for f in owners)})")
        if family is not None and family != owners[0]:
            raise UsageError(f"variant {variant!r} is not of base {family}")
        family, fam_variant = owners[0], f"{owners[0]}/{name}"
    return family, fam_variant


def parse_query(query: str | None, *, kind=None, base=None, tags=None, trigger=None, alias=None,
                created_by=None, sort="relevance", limit=20, offset=0, variant=None) -> _Query:
    """Check every argument (they may come from an HTTP request) and split the query into words."""
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
    base, variant = family_filter(base, _text_filter(variant, "--variant"))
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
    return _Query(terms, prefix, kind, base, variant, tag_pairs, trigger, _text_filter(alias, "--alias"),
                  _text_filter(created_by, "--created-by"), sort, _count(limit, "--limit", 1, MAX_LIMIT),
                  _count(offset, "--offset", 0, MAX_OFFSET))


def search_catalog(catalog, query: str | None = "", *, kind: str | None = None, base: str | None = None,
                   tags: dict | None = None, trigger: str | None = None, alias: str | None = None,
                   created_by: str | None = None, sort: str = "relevance", limit: int = 20,
                   offset: int = 0, variant: str | None = None) -> SearchResult:
    """Search the catalog (see the module doc); raises ``UsageError`` for a bad filter, never
    for query text."""
    q = parse_query(query, kind=kind, base=base, tags=tags, trigger=trigger, alias=alias,
                    created_by=created_by, sort=sort, limit=limit, offset=offset, variant=variant)
    raw_query = query or ""
    if hasattr(catalog, "read_sql"):  # a LightReader: sqlite3; a Catalog if it must hand over
        return catalog.read_sql(lambda db: _search(db, q, raw_query),
                                lambda opened: opened.read(lambda s: _search(SessionSQL(s), q, raw_query)))
    return catalog.read(lambda s: _search(SessionSQL(s), q, raw_query))


# --- running SQL text, whichever driver -------------------------------------------------------------

class SQL(Protocol):
    """Where the search's statements run: ``dialect`` is the database's name (``sqlite``,
    ``postgresql``); ``rows(sql, params)`` runs SQL text with ``:name`` parameters in the
    reader's transaction and returns its rows as tuples (none for a statement without)."""

    dialect: str

    def rows(self, sql: str, params: dict | None = None) -> list[tuple]: ...


class SessionSQL:
    """``SQL`` on a SQLAlchemy session."""

    def __init__(self, session):
        self.session = session
        self.dialect = session.get_bind().dialect.name

    def rows(self, sql: str, params: dict | None = None) -> list[tuple]:
        from sqlalchemy import text

        result = self.session.execute(text(sql), params or {})
        return [tuple(row) for row in result] if result.returns_rows else []


def _in(sql: str, ids: list[int]) -> tuple[str, dict]:
    """``sql`` with ``:ids`` spelled out as one parameter per id (both drivers take that)."""
    names = [f"id{i}" for i in range(len(ids))]
    return sql.replace(":ids", "(" + ", ".join(f":{n}" for n in names) + ")"), dict(zip(names, ids))


# --- one statement: the matching adapters, the page, the total and the facets -----------------------

@dataclass(frozen=True)
class _Dialect:
    """What differs between the databases: where the words are matched and how scored."""

    match: Callable[[SQL, _Query], tuple[str, str, str, dict]]  # → (FROM, WHERE, score, params)
    name_order: str  # byte order of names, as Python sorts them
    cte: str  # how the matching set is named once and read by each part of the statement


def _sqlite_match(db: SQL, q: _Query) -> tuple[str, str, str, dict]:
    phrases = [f'"{t}"' for t in q.terms]  # words are letters and digits: nothing to escape
    if q.prefix:
        phrases[-1] += "*"
    weights = ", ".join(str(w) for w, _c in FIELDS.values())
    return ("search_fts JOIN search_adapters sa ON sa.adapter_id = search_fts.rowid", "search_fts MATCH :match",
            f"-bm25(search_fts, {weights})", {"match": " ".join(phrases)})


def _postgresql_match(db: SQL, q: _Query) -> tuple[str, str, str, dict]:
    """Two steps. The planner prices a ``@@`` test on a TOASTed tsvector like any cheap filter and
    would read every document rather than use the GIN index, so the words are matched first on
    their own, with only bitmap scans allowed (the GIN index), and ranked on the small ``head``
    (name, triggers, description, tags; see ``search_index.HEAD_FIELDS``) plus a floor, so a match
    only in metadata, messages or prompts still scores above nothing. The statement then reads
    those (adapter, score) pairs as arrays, planned as usual."""
    parts = [f"'{t}'" for t in q.terms]  # letters and digits only, quoted as lexemes
    if q.prefix:
        parts[-1] += ":*"
    db.rows("SET LOCAL enable_seqscan = off")
    db.rows("SET LOCAL enable_indexscan = off")
    # Both lists come back, and go in again, as array literals (one aggregate pass, so their
    # positions agree): a row or a Python list per match costs more than the search.
    [(ids, scores)] = db.rows(
        "SELECT coalesce(string_agg(CAST(adapter_id AS text), ','), ''), "
        "coalesce(string_agg(CAST(ts_rank(head, to_tsquery('simple', :tsquery)) + 0.000001 AS text), ','), '') "
        "FROM search_docs WHERE document @@ to_tsquery('simple', :tsquery)", {"tsquery": " & ".join(parts)})
    db.rows("SET LOCAL enable_seqscan = on")
    db.rows("SET LOCAL enable_indexscan = on")
    return ("unnest(CAST(:match_ids AS integer[]), CAST(:match_scores AS double precision[])) AS x(aid, score) "
            "JOIN search_adapters sa ON sa.adapter_id = x.aid", "TRUE", "x.score",
            {"match_ids": "{" + ids + "}", "match_scores": "{" + scores + "}"})


DIALECTS: dict[str, _Dialect] = {
    # SQLite: folded into each part, each plans its own way in (indexes, the FTS doclist) and
    # only the page computes bm25 — measured faster than one materialised set (bench/search.py).
    "sqlite": _Dialect(_sqlite_match, "name", "NOT MATERIALIZED"),
    "postgresql": _Dialect(_postgresql_match, 'name COLLATE "C"', "MATERIALIZED"),
}


def _dialect(db: SQL) -> _Dialect:
    name = db.dialect
    if name not in DIALECTS:
        raise UsageError(f"search is not available on the {name} database")
    return DIALECTS[name]


def _statement(db: SQL, q: _Query, dialect: _Dialect) -> tuple[str, dict]:
    if q.terms:
        source, where, score, params = dialect.match(db, q)
        where = [where]
        if q.sort != "relevance":
            score = "0.0"  # scoring every match costs more than the rest of a search; not needed
    else:
        source, where, score, params = "search_adapters sa", [], "0.0", {}
    if q.kind is not None:
        where.append("sa.kind = :kind")
        params["kind"] = q.kind
    if q.base is not None:
        where.append("sa.base = :base")
        params["base"] = q.base
    if q.variant is not None:
        where.append("EXISTS (SELECT 1 FROM search_tags vt WHERE vt.adapter_id = sa.adapter_id "
                     "AND vt.tag = :variant_tag)")
        params["variant_tag"] = variant_tag(*q.variant.split("/", 1))
    params["variant_like"] = VARIANT_TAG + "%"
    for i, (key, value) in enumerate(q.tags):
        where.append(f"EXISTS (SELECT 1 FROM search_tags t WHERE t.adapter_id = sa.adapter_id AND t.tag = :tag{i})")
        params[f"tag{i}"] = f"{key}={value}"
    if q.alias is not None:
        where.append("EXISTS (SELECT 1 FROM aliases al WHERE al.adapter_id = sa.adapter_id AND al.name = :alias)")
        params["alias"] = q.alias
    if q.trigger is not None:
        where.append("EXISTS (SELECT 1 FROM search_versions sv WHERE sv.adapter_id = sa.adapter_id "
                     "AND sv.trigger_key LIKE :trigger_like)")
        params["trigger_like"] = "%\n" + " ".join(words(q.trigger)) + "\n%"  # one whole trigger
    if q.created_by is not None:
        where.append("EXISTS (SELECT 1 FROM versions v WHERE v.adapter_id = sa.adapter_id "
                     "AND v.deleted_at IS NULL AND v.created_by = :created_by)")
        params["created_by"] = q.created_by
    sort = "updated" if q.sort == "relevance" and not q.terms else q.sort
    order = {"relevance": f"score DESC, {dialect.name_order}", "updated": f"updated_at DESC, {dialect.name_order}",
             "name": dialect.name_order}[sort]
    params.update(limit=q.limit, offset=q.offset)
    sql = (
        f"WITH m AS {dialect.cte} (SELECT sa.adapter_id AS aid, sa.name AS name, sa.kind AS kind, sa.base AS base, "
        f"sa.updated_at AS updated_at, {score} AS score FROM {source}"
        + (" WHERE " + " AND ".join(where) if where else "") + ") "
        "SELECT 'hit' AS part, CAST(p.aid AS VARCHAR(20)) AS label, NULL AS label2, p.score AS n FROM "
        f"(SELECT aid, score FROM m ORDER BY {order} LIMIT :limit OFFSET :offset) p "
        "UNION ALL SELECT 'kind/base', kind, base, count(*) FROM m GROUP BY kind, base "
        "UNION ALL SELECT CASE WHEN t.tag LIKE :variant_like THEN 'variant' ELSE 'tag' END, t.tag, NULL, count(*) "
        "FROM m JOIN search_tags t ON t.adapter_id = m.aid GROUP BY t.tag "
        "UNION ALL SELECT 'alias', al.name, NULL, count(*) FROM m JOIN aliases al ON al.adapter_id = m.aid "
        "GROUP BY al.name"
    )  # the page comes back in no set order: _search sorts it again (the rows' order is not SQL's promise)
    return sql, params


def _ordered(counts: dict, keep: int | None = None) -> dict:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return dict(items[:keep] if keep else items)


_PAGE_ORDER = {
    "relevance": lambda hit: (-hit.score, hit.name),
    "updated": lambda hit: (-hit.updated_at.timestamp(), hit.name),
    "name": lambda hit: hit.name,  # str order is UTF-8 byte order, as the SQL's
}


def _search(db: SQL, q: _Query, raw_query: str) -> SearchResult:
    sql, params = _statement(db, q, _dialect(db))
    page: list[tuple[int, float]] = []
    facets: dict[str, dict] = {"kind": {}, "base": {}, "tag": {}, "alias": {}}
    total = 0
    for part, label, label2, n in db.rows(sql, params):
        if part == "hit":
            page.append((int(label), float(n or 0.0)))
        elif part == "kind/base":
            total += int(n)
            facets["kind"][label] = facets["kind"].get(label, 0) + int(n)
            facets["base"][label2] = facets["base"].get(label2, 0) + int(n)
        elif part == "variant":  # only present when some matching adapter has a variant
            facets.setdefault("variant", {})[label[len(VARIANT_TAG):]] = int(n)
        else:
            facets[part][label] = int(n)
    facets = {name: _ordered(counts, MAX_TAG_FACETS if name == "tag" else None) for name, counts in facets.items()}
    hits = sorted(_hits(db, q, page), key=_PAGE_ORDER["updated" if q.sort == "relevance" and not q.terms
                                                      else q.sort]) if page else []
    return SearchResult(raw_query[:MAX_QUERY_CHARS], q.terms, q.prefix, q.sort, q.limit, q.offset, total,
                        tuple(hits), facets)


_PAGE_ROWS = (
    "SELECT sa.adapter_id, sa.name, sa.kind, sa.base, sa.updated_at, sa.live_versions, a.description, a.tags, "
    "v.version, v.size, v.trigger_words FROM search_adapters sa JOIN adapters a ON a.id = sa.adapter_id "
    "JOIN versions v ON v.id = sa.latest_version_id WHERE sa.adapter_id IN :ids")
_PAGE_ALIASES = ("SELECT al.adapter_id, al.name, v.version FROM aliases al JOIN versions v ON v.id = al.version_id "
                 "WHERE al.adapter_id IN :ids ORDER BY al.name")
_PAGE_VERSIONS = (
    "SELECT sv.adapter_id, v.version, v.sort_key, v.created_by, sv.trigger_key, "
    + ", ".join(f"sv.{f}" for f in VERSION_FIELDS)
    + " FROM search_versions sv JOIN versions v ON v.id = sv.version_id WHERE sv.adapter_id IN :ids "
    "ORDER BY sv.adapter_id, v.sort_key DESC")


@dataclass(frozen=True)
class _PageRow:
    adapter_id: int
    name: str
    kind: str
    base: str
    updated_at: object  # a datetime, or its text from sqlite3 (see _utc)
    live_versions: int
    description: str | None
    tags: object  # JSON text, or the value on PostgreSQL
    version: str
    size: int
    trigger_words: object


def _hits(db: SQL, q: _Query, page: list[tuple[int, float]]) -> list[SearchHit]:
    ids = [aid for aid, _score in page]
    rows = {row.adapter_id: row for row in (_PageRow(*r) for r in db.rows(*_in(_PAGE_ROWS, ids)))}
    aliases: dict[int, dict] = {}
    for aid, name, version in db.rows(*_in(_PAGE_ALIASES, ids)):
        aliases.setdefault(aid, {})[name] = version
    matched = _matched_versions(db, q, rows)
    hits = []
    for aid, score in page:
        row = rows[aid]
        tags, triggers = _json(row.tags, {}), _json(row.trigger_words, [])
        found = matched.get(aid, [])
        hits.append(SearchHit(
            name=row.name, kind=row.kind, base=row.base, description=row.description or "",
            tags=tags if isinstance(tags, dict) else {}, latest_version=row.version, versions=row.live_versions,
            aliases=aliases.get(aid, {}), triggers=tuple(str(t) for t in triggers) if isinstance(triggers, list) else (),
            size=row.size, updated_at=_utc(row.updated_at), score=score,
            matched_versions=tuple(found[:MAX_MATCHED_SHOWN]), matched=len(found)))
    return hits


def _utc(at) -> datetime:
    """SQLite hands back the stored UTC time without its zone (as text through sqlite3)."""
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at


def _has_term(vocabulary: set[str], term: str, prefix: bool) -> bool:
    return term in vocabulary or (prefix and any(w.startswith(term) for w in vocabulary))


def _matched_versions(db: SQL, q: _Query, adapters: dict) -> dict[int, list[str]]:
    """Per adapter of the page: its live versions that pass the version filters and hold every
    query word (the adapter's own name, description and tags count for each version), the ones
    whose own text holds more of the words first, then the newest."""
    shared = {aid: set(" ".join(adapter_words(name=row.name, description=row.description, tags=row.tags)
                                .values()).split()) for aid, row in adapters.items()}
    trigger = "\n" + " ".join(words(q.trigger)) + "\n" if q.trigger is not None else None
    found: dict[int, list[tuple[int, str]]] = {}
    for aid, version, _sort_key, created_by, trigger_key, *fields in db.rows(*_in(_PAGE_VERSIONS, list(adapters))):
        if trigger is not None and trigger not in trigger_key:
            continue
        if q.created_by is not None and created_by != q.created_by:
            continue
        if not q.terms:
            found.setdefault(aid, []).append((0, version))
            continue
        own = set(" ".join(fields).split())
        vocabulary = own | shared[aid]
        last = len(q.terms) - 1
        if not all(_has_term(vocabulary, t, q.prefix and i == last) for i, t in enumerate(q.terms)):
            continue
        own_hits = sum(_has_term(own, t, q.prefix and i == last) for i, t in enumerate(q.terms))
        found.setdefault(aid, []).append((own_hits, version))  # rows come newest first
    return {aid: [v for _h, v in sorted(versions, key=lambda hv: -hv[0])] for aid, versions in found.items()}
