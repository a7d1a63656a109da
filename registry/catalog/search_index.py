"""The search index: what ``search.search_catalog`` reads, kept current by the operations that
change indexed text, in their own transaction.

Three structures (created by migration ``0004_search_index``, which fills them with ``rebuild``):

* ``search_docs``: one row per *live* version (``version_id``, ``adapter_id``, ``trigger_key``
  for the exact ``--trigger`` filter); on PostgreSQL it also holds ``document``, a weighted
  ``tsvector`` with a GIN index.
* ``search_fts`` (SQLite only): an FTS5 table whose rowid is the version id, one column per field.
* ``search_adapters``: one row per adapter with at least one live version: its newest live
  version, when that was added (``updated_at``) and how many live versions it has. A search
  without words reads this instead of aggregating every version.

Documents are built here, in Python, from the same words on both databases: text is lower-cased,
accents folded, and split into runs of letters and digits (``words``). The search side splits the
user's query the same way, so a query can never carry FTS5 or tsquery syntax.

Callers: ``refresh_versions(s, ids)`` after a version's indexed text changed (added, removed,
new prompt records, trigger words attached), ``refresh_adapter(s, adapter_id)`` after an
adapter's name, description or tags changed. ``rebuild(conn)`` refills everything (the
migration, and ``loradex verify``-style repairs).
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Callable, Iterable

from sqlalchemy import bindparam, text

from ..errors import UntrustedData
from ..untrusted import parse_json

# Field → (SQLite FTS5 bm25 weight, PostgreSQL tsvector weight class).
FIELDS: dict[str, tuple[float, str]] = {
    "name": (10.0, "A"),
    "triggers": (8.0, "A"),
    "description": (4.0, "B"),
    "tags": (4.0, "B"),
    "metadata": (2.0, "C"),
    "message": (2.0, "C"),
    "prompts": (1.0, "D"),
}
MAX_FIELD_CHARS = 20_000  # of normalised words per field (a prompt list, a tag-frequency table)
MAX_PROMPT_RECORDS = 200  # newest records whose prompts a version's document holds
MAX_TAG_FREQUENCY_BYTES = 1 << 20

_WORD = re.compile(r"[^\W_]+")


def words(value: str) -> list[str]:
    """Lower-case, accent-folded runs of letters and digits: how documents and queries split."""
    if not value:
        return []
    folded = unicodedata.normalize("NFKD", value.replace("\x00", "").lower())
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return _WORD.findall(folded)


def _field(*parts: str) -> str:
    out = " ".join(w for part in parts for w in words(part))
    return out[:MAX_FIELD_CHARS].rsplit(" ", 1)[0] if len(out) > MAX_FIELD_CHARS else out


def trigger_key(triggers: Iterable[str]) -> str:
    """``\\n`` + each trigger word (its words, space-joined) + ``\\n``: ``--trigger`` matches one
    whole trigger with ``LIKE '%\\nW\\n%'``."""
    keys = [" ".join(words(str(t))) for t in triggers]
    keys = [k for k in keys if k]
    return "\n" + "\n".join(keys) + "\n" if keys else ""


def _tag_frequency_words(raw) -> str:
    """``ss_tag_frequency`` (kohya: JSON text ``{dataset: {tag: count}}``) → its tags, most
    frequent first. It comes from a file header: parsed with caps, anything odd ignored."""
    if isinstance(raw, str):
        if len(raw) > MAX_TAG_FREQUENCY_BYTES:
            return ""
        try:
            raw = parse_json(raw, "ss_tag_frequency", max_bytes=MAX_TAG_FREQUENCY_BYTES)
        except UntrustedData:
            return ""
    if not isinstance(raw, dict):
        return ""
    counts: dict[str, float] = {}
    for tags in raw.values():
        if isinstance(tags, dict):
            for tag, count in tags.items():
                n = count if isinstance(count, (int, float)) and not isinstance(count, bool) else 0
                counts[str(tag)] = counts.get(str(tag), 0) + n
    return " ".join(sorted(counts, key=lambda t: (-counts[t], t)))


def _json(value, default):
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except ValueError:
            return default
    return default if value is None else value


def document(*, name: str, description: str, tags, message: str, trigger_words, file_metadata,
             prompts: Iterable[str]) -> dict[str, str]:
    """The indexed words of one version, per field of ``FIELDS``."""
    tags = _json(tags, {})
    meta = _json(file_metadata, {})
    meta = meta if isinstance(meta, dict) else {}
    triggers = _json(trigger_words, [])
    triggers = [str(t) for t in triggers] if isinstance(triggers, list) else []
    tag_text = " ".join(f"{k} {v}" for k, v in tags.items()) if isinstance(tags, dict) else ""
    meta_parts = [_tag_frequency_words(meta.get("ss_tag_frequency"))]
    for key in ("modelspec.title", "modelspec.description"):
        if isinstance(meta.get(key), str):
            meta_parts.append(meta[key])
    return {
        "name": _field(name),
        "triggers": _field(*triggers),
        "description": _field(description or ""),
        "tags": _field(tag_text),
        "metadata": _field(*meta_parts),
        "message": _field(message or ""),
        "prompts": _field(*prompts),
    }


# --- reading what the documents are made of (plain SQL: the migration uses it too) -------------

_VERSION_FACTS = text(
    "SELECT v.id, v.adapter_id, a.name, a.description, a.tags, v.message, v.trigger_words, "
    "v.file_metadata FROM versions v JOIN adapters a ON a.id = v.adapter_id "
    "WHERE v.deleted_at IS NULL AND v.id IN :ids"
).bindparams(bindparam("ids", expanding=True))
_VERSION_PROMPTS = text(
    "SELECT l.version_id, r.record FROM prompt_record_versions l "
    "JOIN prompt_records r ON r.id = l.record_id WHERE l.version_id IN :ids "
    "ORDER BY l.version_id, r.created_at DESC, r.id"
).bindparams(bindparam("ids", expanding=True))


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


# --- writing: one implementation per database ---------------------------------------------------

def _fts_write(conn, rows: list[tuple[int, int, str, dict]]) -> None:
    if rows:
        conn.execute(text("INSERT INTO search_fts (rowid, " + ", ".join(FIELDS) + ") VALUES (:id, "
                          + ", ".join(f":{f}" for f in FIELDS) + ")"),
                     [{"id": vid, **doc} for vid, _aid, _key, doc in rows])


def _fts_delete(conn, ids: list[int]) -> None:
    conn.execute(text("DELETE FROM search_fts WHERE rowid IN :ids").bindparams(bindparam("ids", expanding=True)),
                 {"ids": ids})


_PG_VECTOR = " || ".join(f"setweight(to_tsvector('simple', :{f}), '{w}')" for f, (_b, w) in FIELDS.items())


def _pg_write_docs(conn, rows: list[tuple[int, int, str, dict]]) -> None:
    if rows:
        conn.execute(text("INSERT INTO search_docs (version_id, adapter_id, trigger_key, document) "
                          f"VALUES (:id, :adapter_id, :trigger_key, {_PG_VECTOR})"),
                     [{"id": vid, "adapter_id": aid, "trigger_key": key, **doc} for vid, aid, key, doc in rows])


def _plain_write_docs(conn, rows: list[tuple[int, int, str, dict]]) -> None:
    if rows:
        conn.execute(text("INSERT INTO search_docs (version_id, adapter_id, trigger_key) "
                          "VALUES (:id, :adapter_id, :trigger_key)"),
                     [{"id": vid, "adapter_id": aid, "trigger_key": key} for vid, aid, key, _doc in rows])
        _fts_write(conn, rows)


# dialect → (write rows, delete what the dialect keeps outside search_docs by version id)
WRITERS: dict[str, tuple[Callable, Callable | None]] = {
    "sqlite": (_plain_write_docs, _fts_delete),
    "postgresql": (_pg_write_docs, None),  # the document is a column of search_docs
}


def _writers(conn) -> tuple[Callable, Callable | None]:
    name = conn.dialect.name
    if name not in WRITERS:
        raise NotImplementedError(f"no search index for the {name} database")
    return WRITERS[name]


def _connection(s_or_conn):
    """A Session's connection (flushed first: the rows just added must be visible) or a Connection."""
    if hasattr(s_or_conn, "flush"):
        s_or_conn.flush()
        return s_or_conn.connection()
    return s_or_conn


def refresh_versions(s_or_conn, version_ids: Iterable[int]) -> None:
    """Re-index these versions (a removed one leaves the index) and their adapters' summaries."""
    conn = _connection(s_or_conn)
    ids = sorted({int(i) for i in version_ids})
    if not ids:
        return
    write, delete = _writers(conn)
    adapters = {aid for (aid,) in conn.execute(
        text("SELECT adapter_id FROM versions WHERE id IN :ids").bindparams(bindparam("ids", expanding=True)),
        {"ids": ids})}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        conn.execute(text("DELETE FROM search_docs WHERE version_id IN :ids")
                     .bindparams(bindparam("ids", expanding=True)), {"ids": chunk})
        if delete is not None:
            delete(conn, chunk)
        write(conn, _documents(conn, chunk))
    _refresh_summaries(conn, adapters)


def refresh_adapter(s_or_conn, adapter_id: int) -> None:
    """Re-index every version of an adapter (its name, description or tags changed)."""
    conn = _connection(s_or_conn)
    ids = [vid for (vid,) in conn.execute(text("SELECT id FROM versions WHERE adapter_id = :a"),
                                          {"a": adapter_id})]
    refresh_versions(conn, ids)


def _documents(conn, ids: list[int]) -> list[tuple[int, int, str, dict]]:
    prompts = _prompts_by_version(conn, ids)
    rows = []
    for vid, aid, name, description, tags, message, triggers, meta in conn.execute(_VERSION_FACTS, {"ids": ids}):
        trig = _json(triggers, [])
        rows.append((vid, aid, trigger_key(trig if isinstance(trig, list) else []),
                     document(name=name, description=description, tags=tags, message=message,
                              trigger_words=trig, file_metadata=meta, prompts=prompts.get(vid, []))))
    return rows


_SUMMARY_SELECT = (
    "SELECT v.adapter_id, "
    "(SELECT v2.id FROM versions v2 WHERE v2.adapter_id = v.adapter_id AND v2.deleted_at IS NULL "
    "ORDER BY v2.sort_key DESC LIMIT 1), max(v.created_at), count(*) "
    "FROM versions v WHERE v.deleted_at IS NULL"
)


def _refresh_summaries(conn, adapter_ids: set[int]) -> None:
    if not adapter_ids:
        return
    ids = sorted(adapter_ids)
    expanding = bindparam("ids", expanding=True)
    conn.execute(text("DELETE FROM search_adapters WHERE adapter_id IN :ids").bindparams(expanding), {"ids": ids})
    conn.execute(text("INSERT INTO search_adapters (adapter_id, latest_version_id, updated_at, live_versions) "
                      + _SUMMARY_SELECT + " AND v.adapter_id IN :ids GROUP BY v.adapter_id")
                 .bindparams(bindparam("ids", expanding=True)), {"ids": ids})


def rebuild(conn, *, batch: int = 2000) -> int:
    """Empty and refill the whole index from the catalog's rows; returns the versions indexed."""
    write, _delete = _writers(conn)
    conn.execute(text("DELETE FROM search_docs"))
    if conn.dialect.name == "sqlite":
        conn.execute(text("DELETE FROM search_fts"))
    conn.execute(text("DELETE FROM search_adapters"))
    ids = [vid for (vid,) in conn.execute(text("SELECT id FROM versions WHERE deleted_at IS NULL ORDER BY id"))]
    for start in range(0, len(ids), batch):
        write(conn, _documents(conn, ids[start:start + batch]))
    conn.execute(text("INSERT INTO search_adapters (adapter_id, latest_version_id, updated_at, live_versions) "
                      + _SUMMARY_SELECT + " GROUP BY v.adapter_id"))
    return len(ids)
