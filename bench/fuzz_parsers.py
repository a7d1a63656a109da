"""Fuzz campaign for the four parsers (issue 9) and for what remotes and folders send (issue 15:
untrusted JSON, YAML front matter, remote answers against their declared schemas, webui
sidecars; tests/_fuzz_untrusted.py): ≥ 100,000 inputs per parser, mutation-based from corpus
seeds (tests/_fuzz_fixtures.py) plus hypothesis-generated inputs, each checked by the same
oracles as tests/test_fuzz_parsers.py. Each parser runs in its own subprocess so peak memory is
per parser.

    python bench/fuzz_parsers.py [--inputs 100000] [--hypothesis 5000] [--targets a,b] [--seed 0]
        [--out bench/_work/fuzz_parsers.md]

Reports inputs/s, findings (uncaught exceptions, oracle failures, inputs over the time limit),
the slowest input, and the subprocess's peak RSS. atheris is not used (not installed).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import _fuzz_untrusted as untrusted_targets  # noqa: E402 - adds its targets to TARGETS
from _fuzz_fixtures import TARGETS, HeaderInput, Stats, load_seeds, mutation_input, run_input  # noqa: E402


def hypothesis_inputs(target: str, count: int, stats: Stats, limit: float) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    if target in untrusted_targets.NEW_TARGETS:
        strategy = untrusted_targets.hypothesis_strategy(target)
    elif target == "safetensors_header":
        spec = st.fixed_dictionaries({"dtype": st.text(max_size=6), "shape": st.lists(st.integers(-3, 2**70), max_size=4),
                                      "data_offsets": st.lists(st.integers(-3, 2**70), max_size=3)})
        strategy = st.one_of(
            st.tuples(st.dictionaries(st.text(max_size=6), spec, max_size=4), st.integers(0, 4096)).map(
                lambda t: _header(json.dumps(t[0]).encode(), t[1])),
            st.binary(max_size=600).map(_raw_header))
    elif target == "pickle_scan":
        strategy = st.binary(max_size=600)
    else:
        strategy = st.text(max_size=80)

    @settings(max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(inp):
        run_input(target, inp, stats, limit=limit)

    run()


def _header(head: bytes, data_len: int):
    from _fuzz_fixtures import header_file

    return header_file(head, data_len)


def _raw_header(data: bytes) -> HeaderInput:
    import struct

    n = struct.unpack("<Q", data[:8])[0] if len(data) >= 8 else 0
    return HeaderInput(data[8:8 + n], len(data), data)


def one_target(target: str, inputs: int, hyp: int, seed: int, limit: float) -> dict:
    new = target in untrusted_targets.NEW_TARGETS
    seeds = None if new else load_seeds()
    rng = random.Random(seed)
    stats = Stats()
    t = time.perf_counter()
    for _ in range(inputs):
        inp = untrusted_targets.mutation_input(target, rng) if new else mutation_input(target, rng, seeds)
        run_input(target, inp, stats, limit=limit)
    mutation_seconds = time.perf_counter() - t
    t2 = time.perf_counter()
    hypothesis_inputs(target, hyp, stats, limit)
    hyp_seconds = time.perf_counter() - t2
    kinds: dict[str, str] = {}
    for f in stats.findings:
        kinds.setdefault(f.split(" — ")[0][:160], f[:400])
    return {"target": target, "inputs": stats.inputs, "mutation_inputs": inputs, "hypothesis_inputs": stats.inputs - inputs,
            "ok": stats.ok, "typed": stats.typed, "findings": len(stats.findings), "finding_kinds": kinds,
            "seconds": round(mutation_seconds + hyp_seconds, 1),
            "inputs_per_s": round(stats.inputs / (mutation_seconds + hyp_seconds), 1),
            "max_seconds": round(stats.max_seconds, 3), "slowest": stats.slowest[:200],
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def markdown(rows: list[dict], argv: list[str]) -> str:
    lines = [f"# loradex parser fuzz campaign — {time.strftime('%Y-%m-%d %H:%M')}", "",
             f"Command: `python bench/fuzz_parsers.py {' '.join(argv)}`  ",
             f"Host: {platform.node()}, Python {platform.python_version()}", "",
             "| parser | inputs (mutation + hypothesis) | typed errors | correct results | findings | inputs/s | "
             "max s/input | peak RSS MiB |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['inputs']:,} ({r['mutation_inputs']:,} + {r['hypothesis_inputs']:,}) | "
                     f"{r['typed']:,} | {r['ok']:,} | {r['findings']:,} | {r['inputs_per_s']} | {r['max_seconds']} | "
                     f"{r['peak_rss_mib']} |")
    lines.append("")
    for r in rows:
        if r["finding_kinds"]:
            lines.append(f"## {r['target']}: {len(r['finding_kinds'])} kinds of finding")
            lines += [f"- `{k}`" for k in r["finding_kinds"]]
            lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=100_000, help="mutation inputs per parser")
    ap.add_argument("--hypothesis", type=int, default=5_000, help="hypothesis-generated inputs per parser")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=float, default=1.0, help="seconds per input before it counts as a hang")
    ap.add_argument("--out", type=Path, default=Path("bench/_work/fuzz_parsers.md"))
    ap.add_argument("--max-mib", type=int, default=4096, help="address-space cap per parser process")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:  # child: one parser, JSON on stdout; memory capped so a blow-up is a finding, not a dead host
        resource.setrlimit(resource.RLIMIT_AS, (args.max_mib << 20, args.max_mib << 20))
        print(json.dumps(one_target(args.one, args.inputs, args.hypothesis, args.seed, args.limit)))
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for target in args.targets.split(","):
        proc = subprocess.run([sys.executable, __file__, "--one", target, "--inputs", str(args.inputs),
                               "--hypothesis", str(args.hypothesis), "--seed", str(args.seed),
                               "--limit", str(args.limit), "--max-mib", str(args.max_mib)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            rows.append({"target": target, "inputs": 0, "mutation_inputs": 0, "hypothesis_inputs": 0, "ok": 0,
                         "typed": 0, "findings": 1, "finding_kinds": {"campaign crashed": proc.stderr[-400:]},
                         "inputs_per_s": 0, "max_seconds": 0, "peak_rss_mib": 0, "slowest": ""})
        else:
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "finding_kinds"}), flush=True)
        args.out.write_text(markdown(rows, argv))
    print(args.out.read_text())
    return 1 if any(r["findings"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
