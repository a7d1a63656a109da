"""Full reliability run (issue 9): kill -9 campaign (≥ 100 kills per operation) and 16 mixed writers
for ≥ 60 s on SQLite and on PostgreSQL. Uses the same harnesses as the reduced CI tests
(tests/_reliability.py, tests/_concurrency_check.py) and writes a markdown summary.

    python bench/reliability_full.py [--per-op 100] [--seconds 60] [--writers 16]
        [--parts crash,sqlite,postgres] [--ops add,alias-set,...] [--out bench/_work/reliability_full.md]
        [--blobs s3]   # the crash homes keep their blobs in S3 (moto on 127.0.0.1)

Progress is appended to <out>.jsonl as each part finishes, so a run cut short still leaves
exactly what ran.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _concurrency_check import check_final_state, run_writers  # noqa: E402
from _reliability import run_campaign  # noqa: E402

OPS = ["add", "alias-set", "rollback", "rm", "gc", "merge", "import", "push", "pull"]
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def record(progress: Path, row: dict) -> None:
    with open(progress, "a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def crash_part(per_op: int, ops: list[str], seed: int, progress: Path, delay_max: float | None = None,
               blobs_location: str | None = None) -> list[dict]:
    rows = []
    for op in ops:
        with tempfile.TemporaryDirectory(prefix=f"loradex-crash-{op}-") as tmp:
            t = time.perf_counter()
            # --delay-max: random kills only, spread over [0.05, delay_max] s (the harness's own
            # 0.05-1.2 s lands mostly in interpreter start-up on a loaded machine)
            (outcome,) = run_campaign(Path(tmp), per_op, seed=seed + sum(map(ord, op)), ops=[op],
                                      delay_max=delay_max or 1.2, crash_points_first=not delay_max,
                                      blobs_location=blobs_location)
            row = {"part": "crash", "op": op + (" (S3 blobs)" if blobs_location else ""), "delays": f"0.05-{delay_max} s" if delay_max else "points + 0.05-1.2 s", "trials": outcome.trials, "killed": outcome.killed,
                   "inconsistencies": len(outcome.inconsistencies),
                   "examples": outcome.inconsistencies[:5], "seconds": round(time.perf_counter() - t, 1)}
        record(progress, row)
        rows.append(row)
    return rows


def fresh_pg_database():
    import psycopg

    conn = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    name = f"loradex_bench_{uuid.uuid4().hex[:10]}"
    conn.execute(f'CREATE DATABASE "{name}"')
    return conn, name


def concurrency_part(db: str, writers: int, seconds: float, progress: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"loradex-conc-{db}-") as tmp:
        root = Path(tmp)
        env = {**os.environ, "LORADEX_HOME": str(root / "home")}
        conn = name = None
        if db == "postgres":
            try:
                conn, name = fresh_pg_database()
            except Exception as exc:  # noqa: BLE001 - report why the part did not run
                row = {"part": "concurrency", "db": db, "skipped": f"{type(exc).__name__}: {exc}"}
                record(progress, row)
                return row
            env["LORADEX_DB"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        try:
            t = time.perf_counter()
            entries = run_writers(root / "run", env, writers=writers, seconds=seconds)
            wall = time.perf_counter() - t
            problems = check_final_state(entries, env)
        finally:
            if conn is not None:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                conn.close()
    ops = {}
    for e in entries:
        key = e["op"]
        ops.setdefault(key, {"ok": 0, "refused": 0})
        ops[key]["ok" if e["ok"] else "refused"] += 1
    row = {"part": "concurrency", "db": db, "writers": writers, "seconds": seconds,
           "wall_seconds": round(wall, 1), "operations": len(entries),
           "succeeded": sum(e["ok"] for e in entries), "by_op": ops,
           "fatal_errors": sum(bool(e.get("fatal")) for e in entries),
           "problems": len(problems), "examples": problems[:5]}
    record(progress, row)
    return row


def markdown(rows: list[dict], argv: list[str]) -> str:
    lines = [f"# loradex full reliability run — {time.strftime('%Y-%m-%d %H:%M')}", "",
             f"Command: `python bench/reliability_full.py {' '.join(argv)}`  ",
             f"Host: {platform.node()} ({os.cpu_count()} CPUs), Python {platform.python_version()}", ""]
    crash = [r for r in rows if r["part"] == "crash"]
    if crash:
        lines += ["## kill -9 campaign", "", "| operation | kill times | trials | killed before finishing | inconsistencies | wall s |",
                  "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {r['op']} | {r.get('delays', '')} | {r['trials']} | {r['killed']} | {r['inconsistencies']} | "
                  f"{r['seconds']} |" for r in crash]
        for r in crash:
            lines += [f"- {r['op']}: {x}" for x in r["examples"]]
        lines.append("")
    conc = [r for r in rows if r["part"] == "concurrency"]
    if conc:
        lines += ["## concurrent writers", "", "| database | writers | seconds | operations | succeeded | "
                  "errors reaching the user | final-state problems |", "|---|---:|---:|---:|---:|---:|---:|"]
        for r in conc:
            if "skipped" in r:
                lines.append(f"| {r['db']} | skipped: {r['skipped']} | | | | | |")
            else:
                lines.append(f"| {r['db']} | {r['writers']} | {r['seconds']} | {r['operations']} | "
                             f"{r['succeeded']} | {r['fatal_errors']} | {r['problems']} |")
        for r in conc:
            if "by_op" in r:
                lines.append(f"- {r['db']} by operation: " + ", ".join(
                    f"{k} {v['ok']} ok / {v['refused']} refused" for k, v in sorted(r["by_op"].items())))
            lines += [f"- {r['db']}: {x}" for x in r.get("examples", [])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-op", type=int, default=100)
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--writers", type=int, default=16)
    ap.add_argument("--parts", default="crash,sqlite,postgres")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--delay-max", type=float, default=None,
                    help="random kills only, uniform in [0.05, DELAY_MAX] s (default: the harness's crash points + 0.05-1.2 s)")
    ap.add_argument("--blobs", choices=["local", "s3"], default="local",
                    help="s3: the crash homes keep their blobs in a bucket of moto's server (a subprocess on 127.0.0.1)")
    ap.add_argument("--out", type=Path, default=Path("bench/_work/reliability_full.md"))
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    progress = args.out.with_suffix(".jsonl")
    parts = args.parts.split(",")
    rows: list[dict] = []
    for db in ("sqlite", "postgres"):
        if db in parts:
            rows.append(concurrency_part(db, args.writers, args.seconds, progress))
            args.out.write_text(markdown(rows, argv))
    if "crash" in parts:
        import contextlib

        from _s3 import MotoProcess, make_bucket, s3_environment

        with MotoProcess() if args.blobs == "s3" else contextlib.nullcontext() as endpoint:
            location = None
            if endpoint:
                env = s3_environment(endpoint, make_bucket(endpoint))
                location = env.pop("LORADEX_BLOBS")
                os.environ.update(env, LORADEX_GC_GRACE_SECONDS="0", LORADEX_BLOB_UPLOAD_STALE_SECONDS="0")
            for op in args.ops.split(","):
                rows += crash_part(args.per_op, [op], args.seed, progress, args.delay_max, location)
                args.out.write_text(markdown(rows, argv))
    print(args.out.read_text())
    bad = sum(r.get("inconsistencies", 0) + r.get("problems", 0) + r.get("fatal_errors", 0) for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
