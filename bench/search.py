"""``search_catalog`` on 100,000 versions in 10,000 adapters (issue 18: ≤ 50 ms median in the
library), on SQLite (FTS5) and on PostgreSQL (tsvector + GIN) when one answers at 127.0.0.1:5432.

The catalog comes from ``bench/_big_catalog.py`` (bulk-inserted rows, prompt records with
prompts, the index built by ``search_index.rebuild``). Each query runs ``--repeat`` times after
two warm-up runs; the report gives median and p95 per query and, as the reference measured in
the same run on the same database, the median of an un-indexed scan for the same words (``LIKE``
over adapter names, descriptions and version messages only: a fraction of what the index covers)
and of a plain ``SELECT count(*) FROM versions``.

    .venv/bin/python bench/search.py [--adapters 10000] [--versions-per-adapter 10] [--repeat 30]
        [--home DIR] [--no-postgres | --no-sqlite]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._big_catalog import WORDS, build_big_catalog  # noqa: E402

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def queries(adapters: int) -> list[tuple[str, str, dict, list[str]]]:
    """(label, query, filters, the words for the LIKE reference)."""
    rare, mid = WORDS[2500], WORDS[300]
    trigger = f"trg{adapters * 42 // 100:05d}"
    return [
        ("trigger word (1 adapter)", trigger, {}, [trigger]),
        (f"rare word '{rare}'", rare, {}, [rare]),
        (f"mid word '{mid}'", mid, {}, [mid]),
        ("common word 'lighthouse'", "lighthouse", {}, ["lighthouse"]),
        ("very common 'portrait'", "portrait", {}, ["portrait"]),
        ("two words, prefix 'neon cit'", "neon cit", {}, ["neon", "cit"]),
        ("word + kind/base filters", "castle", {"kind": "lora", "base": "sdxl"}, ["castle"]),
        ("word + tag + alias", "style", {"tags": {"team": "art"}, "alias": "production"}, ["style"]),
        ("no words, kind filter", "", {"kind": "lycoris"}, []),
        ("no words (newest first)", "", {}, []),
    ]


def _timed(fn, repeat: int) -> tuple[float, float, object]:
    result = fn()  # warm-up (and the answer)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))], result


def _like_scan(catalog, terms: list[str]):
    """Adapters whose name, description or version messages hold every word, found without the
    index (the reference: what a search over only those columns costs without one)."""
    from sqlalchemy import text

    if not terms:
        sql, params = "SELECT count(DISTINCT adapter_id) FROM versions WHERE deleted_at IS NULL", {}
    else:
        blob = "lower(a.name || ' ' || a.description || ' ' || v.message)"
        where = " AND ".join(f"{blob} LIKE :w{i}" for i in range(len(terms)))
        sql = (f"SELECT count(DISTINCT v.adapter_id) FROM versions v JOIN adapters a ON a.id = v.adapter_id "
               f"WHERE v.deleted_at IS NULL AND {where}")
        params = {f"w{i}": f"%{t}%" for i, t in enumerate(terms)}
    return lambda: catalog.read(lambda s: s.execute(text(sql), params).scalar())


def run(catalog, label: str, args) -> list[dict]:
    from sqlalchemy import text

    from loradex.registry.catalog.search import search_catalog

    count_median, _p95, _r = _timed(lambda: catalog.read(
        lambda s: s.execute(text("SELECT count(*) FROM versions")).scalar()), args.repeat)
    print(f"\n{label}: reference SELECT count(*) FROM versions: median {count_median:.2f} ms")
    print(f"{'query':34} {'hits':>6} {'median':>9} {'p95':>9} {'LIKE scan':>10} {'scan/search':>11}")
    rows = []
    for name, query, filters, terms in queries(args.adapters):
        median, p95, result = _timed(lambda: search_catalog(catalog, query, **filters), args.repeat)
        scan_median, _p, _ = _timed(_like_scan(catalog, terms), 3)
        rows.append({"db": label, "query": name, "total": result.total, "median_ms": median, "p95_ms": p95,
                     "scan_ms": scan_median})
        print(f"{name:34} {result.total:>6} {median:>7.1f}ms {p95:>7.1f}ms {scan_median:>8.1f}ms "
              f"{scan_median / median:>10.1f}x")
    medians = [r["median_ms"] for r in rows]
    print(f"{label}: median of the query medians {statistics.median(medians):.1f} ms, worst {max(medians):.1f} ms "
          f"(target ≤ 50 ms median)")
    return rows


def postgres_url():
    try:
        import psycopg

        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except Exception as exc:  # noqa: BLE001
        return None, None, f"PostgreSQL not reachable at 127.0.0.1:5432 ({type(exc).__name__})"
    name = f"loradex_bench_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')

    def drop():
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", drop, None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, default=10_000)
    parser.add_argument("--versions-per-adapter", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--home", type=Path, help="build (or reuse) the SQLite catalog here")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="loradex-search-bench-"))

    if not args.no_sqlite:
        t0 = time.perf_counter()
        catalog = build_big_catalog(home, adapters=args.adapters, versions_per_adapter=args.versions_per_adapter,
                                    log=lambda line: print(f"sqlite: {line}", flush=True))
        print(f"sqlite catalog ready in {time.perf_counter() - t0:.1f} s ({home})")
        run(catalog, "SQLite", args)

    if args.no_postgres:
        print("\nPostgreSQL: skipped (--no-postgres)")
        return 0
    url, drop, why = postgres_url()
    if url is None:
        print(f"\nPostgreSQL: skipped ({why})")
        return 0
    try:
        t0 = time.perf_counter()
        pg = build_big_catalog(Path(tempfile.mkdtemp(prefix="loradex-search-bench-pg-")), db_url=url,
                               adapters=args.adapters, versions_per_adapter=args.versions_per_adapter,
                               log=lambda line: print(f"postgres: {line}", flush=True))
        print(f"postgres catalog ready in {time.perf_counter() - t0:.1f} s")
        run(pg, "PostgreSQL", args)
        pg.engine.dispose()
    finally:
        drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
