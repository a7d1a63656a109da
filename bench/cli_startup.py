"""The read commands as whole processes: `loradex list`, `show`, `versions` (and `search` when
it exists), human and --json, on a catalog of 100,000 versions in 10,000 adapters (target:
each ≤ 300 ms median). Reference in the same run: a bare interpreter start (`python -c pass`).

Runs are interleaved (one of each command per round) so that a change of machine load touches
every command alike; the median of the rounds is reported with its ratio to the bare start.
Besides wall time, each process's CPU time (user + system, from wait4) is reported: on a shared
machine under load the wall time also counts the waits for a CPU, the CPU time does not (the
commands are single-threaded, and their files are in the page cache after the first run).

    python bench/cli_startup.py [--rounds 11] [--home DIR] [--adapters 10000] [--per 10]
                                [--before PYTHONPATH] [--other-home DIR] [--only COMMAND]…

``--home`` reuses (or creates once) a catalog there; without it a temporary one is built.
``--pythonpath DIR`` runs the commands with ``PYTHONPATH=DIR``: a folder holding ``loradex`` as
another checkout's package. ``--before DIR`` times such a checkout's commands too, in the same
rounds (how bench/RESULTS.md compares before and after), and ``--other-home DIR`` this
checkout's commands on another copy of the catalog (e.g. one with an extra index).
"""

from __future__ import annotations

import argparse
import json
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
    """The shared realistic catalog of the benches (bench/_big_catalog.py)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _big_catalog import build_big_catalog

    build_big_catalog(home, adapters=adapters, versions_per_adapter=per).engine.dispose()


def _has_search(exe: str, env: dict) -> bool:
    """`loradex search` exists and answers on this catalog (an older checkout given with
    --pythonpath may not know the catalog's search tables)."""
    out = subprocess.run([exe, "--help"], env=env, capture_output=True, text=True).stdout
    if not any(line.split()[:1] == ["search"] for line in out.splitlines()):
        return False
    probe = subprocess.run([exe, "search", "style", "--json"], env=env, capture_output=True, text=True)
    if probe.returncode != 0:
        print(f"`loradex search` left out: {probe.stderr.strip()[:200]}", file=sys.stderr)
    return probe.returncode == 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--home", type=Path)
    ap.add_argument("--adapters", type=int, default=10_000)
    ap.add_argument("--per", type=int, default=10)
    ap.add_argument("--pythonpath", help="PYTHONPATH for the timed commands (another checkout)")
    ap.add_argument("--before", metavar="PYTHONPATH",
                    help="also time the commands of another checkout, in the same rounds")
    ap.add_argument("--other-home", type=Path, metavar="HOME",
                    help="also time the commands on a copy of the catalog in HOME (e.g. with an index)")
    ap.add_argument("--only", action="append", metavar="COMMAND",
                    help="time only this read command (e.g. 'list --json'; repeatable; default: all)")
    args = ap.parse_args()

    temp = None
    home = args.home
    if home is None:
        temp = home = Path(tempfile.mkdtemp(prefix="loradex-bench-cli-"))
    t = time.perf_counter()
    build_catalog(home, args.adapters, args.per)  # reused when the home holds it already
    print(f"catalog of {args.adapters * args.per:,} versions in {args.adapters:,} adapters ready "
          f"in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    env = {**os.environ, "LORADEX_HOME": str(home)}
    env.pop("LORADEX_DB", None)
    # as installed (pip compiles .pyc at install): the first, untimed run of each command writes
    # the bytecode of an editable checkout, which PYTHONDONTWRITEBYTECODE would forbid
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath
    exe = str(Path(sys.executable).with_name("loradex"))
    probe = subprocess.run([exe, "list", "--json"], env=env, capture_output=True, text=True, check=True)
    names = [row["name"] for row in json.loads(probe.stdout)]
    some = names[len(names) // 2]
    reads = {
        "list": ["list"],
        "list --json": ["list", "--json"],
        f"show {some}": ["show", some],
        f"show {some} --json": ["show", some, "--json"],
        f"versions {some}": ["versions", some],
        f"versions {some} --json": ["versions", some, "--json"],
    }
    if args.only:
        reads = {label: argv for label, argv in reads.items() if label in args.only}
    variants = {"": env}
    if args.before:
        variants["before: "] = {**env, "PYTHONPATH": args.before}
    if args.other_home:
        variants[f"{args.other_home.name}: "] = {**env, "LORADEX_HOME": str(args.other_home)}
    commands: dict[str, tuple[list[str], dict]] = {"bare `python -c pass`": ([sys.executable, "-c", "pass"], env)}
    for prefix, variant_env in variants.items():
        for label, argv in reads.items():
            commands[f"{prefix}`loradex {label}`"] = ([exe, *argv], variant_env)
        if (not args.only or any(o.startswith("search") for o in args.only)) and _has_search(exe, variant_env):  # the middle adapter's trigger word (see _big_catalog)
            trigger = f"trg{some.rsplit('-', 1)[1]}"
            commands[f"{prefix}`loradex search {trigger}`"] = ([exe, "search", trigger], variant_env)
            commands[f"{prefix}`loradex search {trigger} --json`"] = ([exe, "search", trigger, "--json"], variant_env)
    load_before = os.getloadavg()
    samples: dict[str, list[float]] = {label: [] for label in commands}
    cpu: dict[str, list[float]] = {label: [] for label in commands}
    for label, (cmd, cmd_env) in commands.items():  # one untimed run each: page cache and .pyc warm
        subprocess.run(cmd, env=cmd_env, check=True, stdout=subprocess.DEVNULL)
    for _ in range(args.rounds):
        for label, (cmd, cmd_env) in commands.items():
            t = time.perf_counter()
            proc = subprocess.Popen(cmd, env=cmd_env, stdout=subprocess.DEVNULL)
            _, status, usage = os.wait4(proc.pid, 0)
            samples[label].append(time.perf_counter() - t)
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"{' '.join(cmd)} exited {os.waitstatus_to_exitcode(status)}")
            cpu[label].append(usage.ru_utime + usage.ru_stime)

    bare = statistics.median(samples["bare `python -c pass`"])
    bare_cpu = statistics.median(cpu["bare `python -c pass`"])
    load_after = os.getloadavg()
    print(f"{len(names):,} adapters; median of {args.rounds} interleaved rounds; {os.cpu_count()} CPUs, "
          f"load average (1 min / 5 min) {load_before[0]:.1f} / {load_before[1]:.1f} before the rounds, "
          f"{load_after[0]:.1f} / {load_after[1]:.1f} after; python {platform.python_version()}")
    print("| command | wall median | wall min | ÷ bare | CPU median | ÷ bare CPU | ≤ 300 ms |")
    print("|---|---:|---:|---:|---:|---:|:-:|")
    for label, values in samples.items():
        med, med_cpu = statistics.median(values), statistics.median(cpu[label])
        verdict = "" if label.startswith("bare") else ("✔" if med <= TARGET_S else "✘")
        print(f"| {label} | {med * 1000:.0f} ms | {min(values) * 1000:.0f} ms | {med / bare:.1f}× | "
              f"{med_cpu * 1000:.0f} ms | {med_cpu / bare_cpu:.1f}× | {verdict} |")
    for prefix in variants:
        mine = [label for label in samples if label.startswith(f"{prefix}`")]
        worst = max(mine, key=lambda label: statistics.median(samples[label]))
        worst_cpu = max(statistics.median(cpu[label]) for label in mine)
        print(f"{prefix or 'this checkout: '}slowest read command {worst}: "
              f"{statistics.median(samples[worst]) * 1000:.0f} ms wall; slowest CPU {worst_cpu * 1000:.0f} ms "
              f"(target ≤ {TARGET_S * 1000:.0f} ms)")
    if temp is not None:
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
