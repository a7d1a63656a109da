"""`loradex list --json` with 100,000 versions in 1,000 adapters (target ≤ 200 ms).

Populates a fresh SQLite catalog with bulk inserts, then times the library call
(`Catalog.list_adapters`) and the whole CLI process, against the reference of a bare
`python -c pass` process start in the same run.

    python bench/bench_list.py [--adapters 1000] [--versions-per-adapter 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path


def populate(home: Path, adapters: int, per: int) -> None:
    from loradex.registry.catalog.store import Catalog
    from loradex.registry.catalog.db_schema import AdapterRow, AliasRow, VersionRow
    from loradex.registry.catalog.refs import sort_key

    catalog = Catalog(home)
    now = datetime.now(timezone.utc)
    with catalog.engine.begin() as conn:
        conn.execute(AdapterRow.__table__.insert(), [
            {"id": a + 1, "name": f"adapter-{a:04d}", "kind": "lora", "base": "sd1", "description": "",
             "tags": {}, "created_at": now} for a in range(adapters)])
        rows, vid = [], 0
        for a in range(adapters):
            for v in range(per):
                vid += 1
                version = f"{v // 10 + 1}.{v % 10}.0"
                sha = f"{vid:064x}"
                rows.append({"id": vid, "adapter_id": a + 1, "version": version, "sort_key": sort_key(version),
                             "sha256": sha, "live_sha256": sha, "autov1": None, "autov2": sha[:10],
                             "autov3": None, "size": 1000 + v, "file_format": "kohya", "file_name": "x.safetensors",
                             "probe": {}, "file_metadata": {}, "trigger_words": [], "extra": {}, "message": "",
                             "created_at": now, "created_by": "bench"})
        conn.execute(VersionRow.__table__.insert(), rows)
        conn.execute(AliasRow.__table__.insert(), [
            {"adapter_id": a + 1, "name": "production", "version_id": a * per + 1} for a in range(adapters)])


def timed(cmd, env, runs=7) -> float:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--adapters", type=int, default=1000)
    ap.add_argument("--versions-per-adapter", type=int, default=100)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="loradex-bench-list-"))
    os.environ["LORADEX_HOME"] = str(home)
    populate(home, args.adapters, args.versions_per_adapter)

    from loradex.registry.catalog.store import Catalog

    catalog = Catalog(home)
    lib = []
    for _ in range(7):
        t = time.perf_counter()
        rows = catalog.list_adapters()
        lib.append(time.perf_counter() - t)
    assert len(rows) == args.adapters and rows[0].latest == f"{args.versions_per_adapter // 10}.9.0"
    env = {**os.environ, "LORADEX_HOME": str(home)}
    exe = str(Path(sys.executable).with_name("loradex"))
    cli = timed([exe, "list", "--json"], env)
    bare = timed([sys.executable, "-c", "pass"], env)
    n = args.adapters * args.versions_per_adapter
    print(f"| measure ({n:,} versions, {args.adapters:,} adapters) | median |")
    print("|---|---|")
    print(f"| Catalog.list_adapters() | {statistics.median(lib) * 1000:.1f} ms |")
    print(f"| `loradex list --json` whole process | {cli * 1000:.1f} ms |")
    print(f"| reference: bare `python -c pass` | {bare * 1000:.1f} ms |")
    print(f"| CLI ÷ bare interpreter start | {cli / bare:.1f}× |")


if __name__ == "__main__":
    main()
