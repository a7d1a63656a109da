"""The read commands as whole processes: `loradex list`, `show`, `versions` (and `search` when
it exists), human and --json, on a catalog of 100,000 versions in 10,000 adapters (target:
each ≤ 300 ms median). Reference in the same run: a bare interpreter start (`python -c pass`).

Runs are interleaved (one of each command per round) so that a change of machine load touches
every command alike; the median of the rounds is reported with its ratio to the bare start.

    python bench/cli_startup.py [--rounds 11] [--home DIR] [--adapters 10000] [--per 10]

``--home`` reuses (or creates once) a catalog there; without it a temporary one is built.
``--pythonpath DIR`` runs the commands with ``PYTHONPATH=DIR``: a folder holding ``loradex`` as
another checkout's package (how the "before" numbers of bench/RESULTS.md were taken).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 0.300


def build_catalog(home: Path, adapters: int, per: int) -> None:
    """The shared 100k builder (bench/_big_catalog.py) when present, else bulk rows like it."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        import _big_catalog  # noqa: F401  (the search bench's builder)
    except ImportError:
        _big_catalog = None
    if _big_catalog is not None and hasattr(_big_catalog, "build_sqlite"):
        _big_catalog.build_sqlite(home, adapters=adapters, versions_per_adapter=per)
        return
    _populate(home, adapters, per)


def _populate(home: Path, adapters: int, per: int) -> None:
    from datetime import datetime, timezone

    from loradex.registry.catalog.db_schema import AdapterRow, AliasRow, VersionRow
    from loradex.registry.catalog.refs import sort_key
    from loradex.registry.catalog.store import Catalog

    catalog = Catalog(home)
    now = datetime.now(timezone.utc)
    tags = {f"tag{i}": 100 - i for i in range(40)}  # a kohya ss_tag_frequency-sized dict
    with catalog.engine.begin() as conn:
        conn.execute(AdapterRow.__table__.insert(), [
            {"id": a + 1, "name": f"adapter-{a:05d}", "kind": "lora", "base": "sdxl",
             "description": f"adapter number {a}", "tags": {"team": f"t{a % 7}"}, "created_at": now}
            for a in range(adapters)])
        vid = 0
        for start in range(0, adapters, 1000):
            rows = []
            for a in range(start, min(adapters, start + 1000)):
                for v in range(per):
                    vid += 1
                    version = f"{v // 10 + 1}.{v % 10}.0"
                    sha = f"{vid:064x}"
                    rows.append({
                        "id": vid, "adapter_id": a + 1, "version": version, "sort_key": sort_key(version),
                        "sha256": sha, "live_sha256": sha, "autov1": sha[:8], "autov2": sha[:10],
                        "autov3": sha, "size": 100_000 + v, "file_format": "kohya",
                        "file_name": f"adapter-{a:05d}-{version}.safetensors",
                        "probe": {"kind": "lora", "base": "sdxl", "ranks": [16], "module_count": 722},
                        "file_metadata": {"ss_network_dim": "16", "ss_network_alpha": "8",
                                          "ss_tag_frequency": {"set": tags}},
                        "trigger_words": [f"trig{a}"], "extra": {}, "message": f"version {version}",
                        "created_at": now, "created_by": "bench"})
            conn.execute(VersionRow.__table__.insert(), rows)
        conn.execute(AliasRow.__table__.insert(), [
            {"adapter_id": a + 1, "name": "production", "version_id": a * per + 1} for a in range(adapters)])
    catalog.engine.dispose()


def _has_search(exe: str, env: dict) -> bool:
    out = subprocess.run([exe, "--help"], env=env, capture_output=True, text=True).stdout
    return any(line.split()[:1] == ["search"] for line in out.splitlines())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--home", type=Path)
    ap.add_argument("--adapters", type=int, default=10_000)
    ap.add_argument("--per", type=int, default=10)
    ap.add_argument("--pythonpath", help="PYTHONPATH for the timed commands (another checkout)")
    args = ap.parse_args()

    temp = None
    home = args.home
    if home is None:
        temp = home = Path(tempfile.mkdtemp(prefix="loradex-bench-cli-"))
    if not (home / "catalog.db").exists():
        t = time.perf_counter()
        build_catalog(home, args.adapters, args.per)
        print(f"built {args.adapters * args.per:,} versions in {args.adapters:,} adapters "
              f"in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    env = {**os.environ, "LORADEX_HOME": str(home)}
    env.pop("LORADEX_DB", None)
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath
    exe = str(Path(sys.executable).with_name("loradex"))
    probe = subprocess.run([exe, "list", "--json"], env=env, capture_output=True, text=True, check=True)
    names = [row["name"] for row in __import__("json").loads(probe.stdout)]
    some = names[len(names) // 2]
    commands = {
        "bare `python -c pass`": [sys.executable, "-c", "pass"],
        "list": [exe, "list"],
        "list --json": [exe, "list", "--json"],
        f"show {some}": [exe, "show", some],
        f"show {some} --json": [exe, "show", some, "--json"],
        f"versions {some}": [exe, "versions", some],
        f"versions {some} --json": [exe, "versions", some, "--json"],
    }
    if _has_search(exe, env):
        commands[f"search trig{names.index(some)}"] = [exe, "search", f"trig{names.index(some)}"]
        commands[f"search trig{names.index(some)} --json"] = [exe, "search", f"trig{names.index(some)}", "--json"]
    samples: dict[str, list[float]] = {label: [] for label in commands}
    for label, cmd in commands.items():  # one untimed run each: page cache and .pyc warm
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    for _ in range(args.rounds):
        for label, cmd in commands.items():
            t = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
            samples[label].append(time.perf_counter() - t)

    bare = statistics.median(samples["bare `python -c pass`"])
    print(f"{len(names):,} adapters; median of {args.rounds} interleaved rounds; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; python {platform.python_version()}")
    print("| command | median | min | ÷ bare start | ≤ 300 ms |")
    print("|---|---:|---:|---:|:-:|")
    worst = 0.0
    for label, values in samples.items():
        med = statistics.median(values)
        is_bare = label.startswith("bare")
        worst = worst if is_bare else max(worst, med)
        print(f"| {'' if is_bare else '`loradex '}{label}{'' if is_bare else '`'} | {med * 1000:.0f} ms | "
              f"{min(values) * 1000:.0f} ms | {med / bare:.1f}× | "
              f"{'' if is_bare else ('✔' if med <= TARGET_S else '✘')} |")
    print(f"slowest read command: {worst * 1000:.0f} ms (target ≤ {TARGET_S * 1000:.0f} ms)")
    if temp is not None:
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
