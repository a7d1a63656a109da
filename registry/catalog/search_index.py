"""The search index: what ``search.search_catalog`` reads, kept current by the operations that
change indexed text, inside their own transaction.

Search answers per adapter, so the full-text document is per adapter: its name, description and
tags plus the words of its live versions (trigger words, kohya ``ss_tag_frequency`` tags,
ModelSpec title/description, version messages, prompts of their prompt records). Created by
migration ``0004_search_index``, which fills it with ``rebuild``:

* ``search_versions``: one row per *live* version: its own words per field (what the adapter's
  document is assembled from, and what tells which versions matched) and ``trigger_key`` for the
  exact ``--trigger`` filter;
* ``search_adapters``: one row per adapter with a live version: name, kind, base, newest live
  version, when it was added (``updated_at``), how many live versions;
* ``search_tags``: the adapter's tags as ``key=value`` rows (filter and facet in SQL);
* the document: an FTS5 table ``search_fts`` (rowid = adapter id, one column per field) on
  SQLite; ``search_docs.document``, a weighted ``tsvector`` with a GIN index, on PostgreSQL
  (with ``search_docs.head``, the name/triggers/description/tags part, which is what is ranked).

Text is lower-cased, accents folded and split into runs of letters and digits (``words``) here,
in Python, the same way for both databases and for queries, so a query never carries FTS5 or
tsquery syntax and both databases find the same adapters.

Callers: ``refresh_versions(s, ids)`` after a version's indexed text changed (added, removed,
new prompt records, trigger words attached); ``refresh_adapter(s, adapter_id)`` after an
adapter's description or tags changed; ``rebuild(conn)`` refills everything.
"""

from __future__ import annotations

from typing import Callable, Iterable

from sqlalchemy import bindparam, text

from .search_words import FIELDS, INDEX_MARK, MAX_FIELD_CHARS, MAX_PROMPT_RECORDS, VERSION_FIELDS, _cap, _json, \
    adapter_words, tag_rows, trigger_key, variant_tag, version_variant, version_words


def _in(sql: str):
    return text(sql).bindparams(bindparam("ids", expanding=True))


# --- versions -----------------------------------------------------------------------------------

_VERSION_FACTS = _in(
    "SELECT v.id, v.adapter_id, v.message, v.trigger_words, v.file_metadata, a.base, v.extra, v.probe "
    "FROM versions v JOIN adapters a ON a.id = v.adapter_id WHERE v.deleted_at IS NULL AND v.id IN :ids")
_VERSION_PROMPTS = _in(
    "SELECT l.version_id, r.record FROM prompt_record_versions l "
    "JOIN prompt_records r ON r.id = l.record_id WHERE l.version_id IN :ids "
    "ORDER BY l.version_id, r.created_at DESC, r.id")


def _prompts_by_version(conn, ids: list[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for vid, record in conn.execute(_VERSION_PROMPTS, {"ids": ids}):
        kept = out.setdefault(vid, [])
        if len(kept) >= MAX_PROMPT_RECORDS:
            continue
        record = _json(record, {})
        prompt = record.get("prompt") if isinstance(record, dict) else None
        if isinstance(prompt, str) and prompt:
            kept.append(prompt)
    return out


def _write_versions(conn, ids: list[int]) -> None:
    """(Re)write ``search_versions`` rows of these versions (none for a removed one)."""
    conn.execute(_in("DELETE FROM search_versions WHERE version_id IN :ids"), {"ids": ids})
    prompts = _prompts_by_version(conn, ids)
    rows = []
    for vid, aid, message, triggers, meta, base, extra, probe in conn.execute(_VERSION_FACTS, {"ids": ids}):
        trig = _json(triggers, [])
        trig = trig if isinstance(trig, list) else []
        variant = version_variant(base, file_metadata=meta, extra=extra, probe=probe)
        rows.append({"version_id": vid, "adapter_id": aid, "trigger_key": trigger_key(trig),
                     **version_words(message=message, trigger_words=trig, file_metadata=meta,
                                     prompts=prompts.get(vid, []), family=base, variant=variant)})
    if rows:
        conn.execute(text("INSERT INTO search_versions (version_id, adapter_id, trigger_key, "
                          + ", ".join(VERSION_FIELDS) + ") VALUES (:version_id, :adapter_id, :trigger_key, "
                          + ", ".join(f":{f}" for f in VERSION_FIELDS) + ")"), rows)


# --- adapters: summary, tags, document -----------------------------------------------------------

def _sqlite_write_docs(conn, docs: list[dict]) -> None:
    conn.execute(_in("DELETE FROM search_fts WHERE rowid IN :ids"), {"ids": [d["id"] for d in docs]})
    live = [d for d in docs if d["live"]]
    if live:
        conn.execute(text("INSERT INTO search_fts (rowid, " + ", ".join(FIELDS) + ") VALUES (:id, "
                          + ", ".join(f":{f}" for f in FIELDS) + ")"), live)


def _pg_vector(fields) -> str:
    return " || ".join(f"setweight(to_tsvector('simple', :{f}), '{FIELDS[f][1]}')" for f in fields)


# PostgreSQL: ``document`` (every field) is what the GIN index matches; ``head`` (the adapter's
# name, trigger words, description and tags) is what ts_rank scores. A whole document is
# TOASTed, and ranking thousands of them costs more than the rest of a search together.
HEAD_FIELDS = ("name", "triggers", "description", "tags")


def _postgresql_write_docs(conn, docs: list[dict]) -> None:
    conn.execute(_in("DELETE FROM search_docs WHERE adapter_id IN :ids"), {"ids": [d["id"] for d in docs]})
    live = [d for d in docs if d["live"]]
    if live:
        conn.execute(text(f"INSERT INTO search_docs (adapter_id, document, head) VALUES (:id, "
                          f"{_pg_vector(FIELDS)}, {_pg_vector(HEAD_FIELDS)})"), live)


# database → (the table holding adapters' documents, how documents are written to it)
DOCUMENT_WRITERS: dict[str, tuple[str, Callable[[object, list[dict]], None]]] = {
    "sqlite": ("search_fts", _sqlite_write_docs),
    "postgresql": ("search_docs", _postgresql_write_docs),
}

_ADAPTER_ROWS = _in("SELECT id, name, description, tags FROM adapters WHERE id IN :ids")
_ADAPTER_VERSION_WORDS = _in(
    "SELECT sv.adapter_id, " + ", ".join(f"sv.{f}" for f in VERSION_FIELDS) + " FROM search_versions sv "
    "JOIN versions v ON v.id = sv.version_id WHERE sv.adapter_id IN :ids ORDER BY sv.adapter_id, v.sort_key DESC")
_SUMMARY = (
    "INSERT INTO search_adapters (adapter_id, name, kind, base, latest_version_id, updated_at, live_versions) "
    "SELECT a.id, a.name, a.kind, a.base, "
    "(SELECT v2.id FROM versions v2 WHERE v2.adapter_id = a.id AND v2.deleted_at IS NULL "
    "ORDER BY v2.sort_key DESC LIMIT 1), max(v.created_at), count(*) "
    "FROM adapters a JOIN versions v ON v.adapter_id = a.id WHERE v.deleted_at IS NULL"
)


def _write_adapters(conn, adapter_ids: list[int]) -> None:
    """(Re)write the summary, tag rows and document of these adapters from ``search_versions``."""
    _table, writer = _document_writer(conn)
    for start in range(0, len(adapter_ids), 500):
        ids = adapter_ids[start:start + 500]
        for table in ("search_adapters", "search_tags"):
            conn.execute(_in(f"DELETE FROM {table} WHERE adapter_id IN :ids"), {"ids": ids})
        conn.execute(_in(_SUMMARY + " AND a.id IN :ids GROUP BY a.id, a.name, a.kind, a.base"), {"ids": ids})
        per_version: dict[int, dict[str, list[str]]] = {}
        for aid, *fields in conn.execute(_ADAPTER_VERSION_WORDS, {"ids": ids}):
            parts = per_version.setdefault(aid, {f: [] for f in VERSION_FIELDS})
            for name, value in zip(VERSION_FIELDS, fields):
                if value:
                    parts[name].append(value)
        docs, tags = [], []
        variants = _adapter_variants(conn, ids)
        for aid, name, description, adapter_tags in conn.execute(_ADAPTER_ROWS, {"ids": ids}):
            doc = {"id": aid, "live": aid in per_version, **adapter_words(name=name, description=description,
                                                                          tags=adapter_tags)}
            for field, values in per_version.get(aid, {f: [] for f in VERSION_FIELDS}).items():
                doc[field] = _cap(" ".join(values), MAX_FIELD_CHARS)
            docs.append(doc)
            if aid in per_version:
                tags += [{"adapter_id": aid, "tag": tag} for tag in tag_rows(adapter_tags) + variants.get(aid, [])]
        if tags:
            conn.execute(text("INSERT INTO search_tags (adapter_id, tag) VALUES (:adapter_id, :tag)"), tags)
        if docs:
            writer(conn, docs)


_VARIANT_FACTS = _in(
    "SELECT v.adapter_id, a.base, v.file_metadata, v.extra, v.probe FROM versions v "
    "JOIN adapters a ON a.id = v.adapter_id WHERE v.deleted_at IS NULL AND v.adapter_id IN :ids "
    "AND a.base IN :bases")


def _adapter_variants(conn, adapter_ids: list[int]) -> dict[int, list[str]]:
    """adapter → its ``search_tags`` variant rows (``variant_tag``): the variants its live versions'
    metadata tell (the variant facet and filter). Only families that have variants are read."""
    from loradex.families import all_families
    from loradex.families.vocabulary import variant_names

    bases = [f.name for f in all_families() if variant_names(f.name)]
    out: dict[int, set[str]] = {}
    stmt = _VARIANT_FACTS.bindparams(bindparam("bases", expanding=True))
    for aid, base, meta, extra, probe in conn.execute(stmt, {"ids": adapter_ids, "bases": bases}):
        variant = version_variant(base, file_metadata=meta, extra=extra, probe=probe)
        if variant:
            out.setdefault(aid, set()).add(variant_tag(base, variant))
    return {aid: sorted(rows) for aid, rows in out.items()}


def _document_writer(conn) -> tuple[str, Callable]:
    name = conn.dialect.name
    if name not in DOCUMENT_WRITERS:
        raise NotImplementedError(f"no search index for the {name} database")
    return DOCUMENT_WRITERS[name]


def _connection(s_or_conn):
    """A Session's connection (flushed first: the rows just added must be visible) or a Connection."""
    if hasattr(s_or_conn, "flush"):
        s_or_conn.flush()
        return s_or_conn.connection()
    return s_or_conn


def refresh_versions(s_or_conn, version_ids: Iterable[int]) -> None:
    """Re-index these versions (a removed one leaves the index) and their adapters."""
    conn = _connection(s_or_conn)
    ids = sorted({int(i) for i in version_ids})
    if not ids:
        return
    reindex_if_stale(conn)
    adapters = sorted({aid for (aid,) in conn.execute(_in("SELECT DISTINCT adapter_id FROM versions WHERE id IN :ids"),
                                                      {"ids": ids})})
    ids = sorted(set(ids) | set(_unmarked_versions(conn, adapters)))  # their older words, rewritten too
    for start in range(0, len(ids), 500):
        _write_versions(conn, ids[start:start + 500])
    _write_adapters(conn, adapters)


def refresh_adapter(s_or_conn, adapter_id: int) -> None:
    """Re-index an adapter whose name, description or tags changed (its versions' words stand)."""
    conn = _connection(s_or_conn)
    reindex_if_stale(conn)
    _write_adapters(conn, [int(adapter_id)])


# --- documents written before the family/variant words (no migration: rewritten on a write) -----
# database → (documents holding INDEX_MARK, adapters whose document lacks it)
_MARKED = {
    "sqlite": ("SELECT count(*) FROM search_fts WHERE search_fts MATCH :mark",
               "SELECT adapter_id FROM search_adapters WHERE adapter_id NOT IN "
               "(SELECT rowid FROM search_fts WHERE search_fts MATCH :mark)"),
    "postgresql": ("SELECT count(*) FROM search_docs WHERE document @@ to_tsquery('simple', :mark)",
                   "SELECT adapter_id FROM search_adapters WHERE adapter_id NOT IN "
                   "(SELECT adapter_id FROM search_docs WHERE document @@ to_tsquery('simple', :mark))"),
}


_CHECKED: set[str] = set()  # databases this process found current: every document it writes is


def reindex_if_stale(conn) -> int:
    """Rewrite the index rows of adapters whose document predates the family/variant words
    (``INDEX_MARK`` missing): once, on the first write after an upgrade, those adapters only.
    Otherwise two counts over the word index (12-25 ms at 100,000 adapters on SQLite), once
    per process and database. Returns the versions rewritten."""
    counted, stale_sql = _MARKED[conn.dialect.name] if conn.dialect.name in _MARKED else (None, None)
    database = conn.engine.url.render_as_string(hide_password=True)
    if counted is None or database in _CHECKED:
        return 0
    mark = {"mark": f'"{INDEX_MARK}"' if conn.dialect.name == "sqlite" else INDEX_MARK}
    marked = conn.execute(text(counted), mark).scalar() or 0
    total = conn.execute(text("SELECT count(*) FROM search_adapters")).scalar() or 0
    if marked >= total:
        _CHECKED.add(database)
        return 0
    adapters = sorted(aid for (aid,) in conn.execute(text(stale_sql), mark))
    ids = []
    for start in range(0, len(adapters), 500):
        ids += [vid for (vid,) in conn.execute(
            _in("SELECT id FROM versions WHERE deleted_at IS NULL AND adapter_id IN :ids ORDER BY id"),
            {"ids": adapters[start:start + 500]})]
    for start in range(0, len(ids), 500):
        _write_versions(conn, ids[start:start + 500])
    _write_adapters(conn, adapters)  # not marked checked: the next write counts again (a rollback undoes this)
    return len(ids)


def _unmarked_versions(conn, adapter_ids: list[int]) -> list[int]:
    """Live versions of these adapters whose index row predates the family/variant words."""
    if not adapter_ids:
        return []
    return [vid for (vid,) in conn.execute(
        _in("SELECT version_id FROM search_versions WHERE adapter_id IN :ids AND metadata NOT LIKE :mark"),
        {"ids": adapter_ids, "mark": INDEX_MARK + "%"})]


def rebuild(conn, *, batch: int = 2000) -> int:
    """Empty and refill the whole index from the catalog's rows; returns the versions indexed."""
    documents, _writer = _document_writer(conn)
    for table in ("search_versions", "search_adapters", "search_tags", documents):
        conn.execute(text(f"DELETE FROM {table}"))
    ids = [vid for (vid,) in conn.execute(text("SELECT id FROM versions WHERE deleted_at IS NULL ORDER BY id"))]
    for start in range(0, len(ids), batch):
        _write_versions(conn, ids[start:start + batch])
    adapters = [aid for (aid,) in conn.execute(text("SELECT DISTINCT adapter_id FROM search_versions ORDER BY 1"))]
    for start in range(0, len(adapters), batch):
        _write_adapters(conn, adapters[start:start + batch])
    return len(ids)
