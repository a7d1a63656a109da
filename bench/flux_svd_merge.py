"""Benchmark: SVD merge of 3 rank-16 Flux.1 LoRAs at real Flux.1-dev shapes, loradex's low-rank
SVD vs the full-matrix method, in the same run.

    python bench/flux_svd_merge.py                    # all 376 modules, reference on 1 module per shape
    python bench/flux_svd_merge.py --ref-samples 3    # reference: median of 3 modules per shape
    python bench/flux_svd_merge.py --modules 40 --ref-samples 0 --cli-runs 1   # a smoke run

Inputs: three fp16 kohya LoRAs of rank 16 (alphas 16, 32, 8) laid out as sd-scripts writes a
Flux.1-dev LoRA on every block linear (tests/fixtures/layouts/flux1-dev.json: double blocks
img/txt attn qkv + proj, mlp 0/2, mod lin; single blocks linear1 (fused q, k, v, mlp:
21504×3072), linear2 (3072×15360), modulation lin; CLIP-L ``lora_te1_``), random factors,
generated once under bench/_work/flux_svd/. Weights 0.8, -0.5, 1.2, output rank 16.

Measured, as bench/bench_svd_merge.py does for SDXL (its helpers are reused):

* the command: ``loradex merge in0:0.8 in1:-0.5 in2:1.2 --method svd --rank 16`` as one process
  in a fresh home holding the inputs (interpreter, catalog, streaming merge, deterministic writer,
  hashing, registration), ``--cli-runs`` times, median reported, its own peak RSS (``os.wait4``);
  every run must give the same sha256;
* the reference, kohya's full-matrix method: ΣΔW materialised (out×in, float32), full
  ``torch.linalg.svd`` (of the transpose when ΣΔW is wide: LAPACK's faster orientation),
  truncated to rank 16. A full-matrix SVD of a 3072×15360 matrix takes
  minutes on 2 cores, so the whole 376-module reference is not run: ``--ref-samples`` modules of
  each of the 9 distinct shapes are timed (median) and each shape's time is scaled by its module
  count. The ratio is that estimate over the command's median wall time;
* optimality: on every sampled module, loradex's residual ‖ΣΔW − merged‖_F against the optimal
  one (the truncated full SVD's), relative to ‖ΣΔW‖_F.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter, OrderedDict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_svd_merge as S  # noqa: E402  (the SDXL bench: input generation, timing of the command)

ROOT = HERE.parent
LAYOUT = ROOT / "tests" / "fixtures" / "layouts" / "flux1-dev.json"
WORK = ROOT / "bench" / "_work" / "flux_svd"


def flux_modules(limit: int | None) -> "OrderedDict[str, tuple[tuple[int, ...], tuple[int, ...]]]":
    """module → (down shape, up shape), every module of the Flux.1-dev layout in file order."""
    S.LAYOUT = LAYOUT
    return S.layout_modules(limit)


def cli_merge(inputs, rank: int, threads: int) -> dict:
    """``loradex merge in0:0.8 in1:-0.5 in2:1.2 --method svd --rank R`` as one process in a fresh
    home holding the inputs (registered first, not timed), as bench_svd_merge times it: wall time
    spawn → exit and the child's own peak RSS (``os.wait4``), plus its CPU time (user + system),
    which a machine shared with other work inflates far less than the wall time."""
    import shutil
    import tempfile

    from loradex.registry.catalog.adding import add_file
    from loradex.registry.catalog.store import Catalog

    WORK.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="cli-home-", dir=WORK))
    try:
        catalog = Catalog(home)
        for i, path in enumerate(inputs):
            add_file(catalog, path, name=f"in{i}")
        cmd = [sys.executable, "-m", "loradex.cli", "merge", *(f"in{i}:{w}" for i, w in enumerate(S.WEIGHTS)),
               "--method", "svd", "--name", "merged", "--json", "--rank", str(rank)]
        env = {**os.environ, "LORADEX_HOME": str(home), "OMP_NUM_THREADS": str(threads),
               "MKL_NUM_THREADS": str(threads), "PYTHONHASHSEED": "0"}
        with open(home / "merge.stdout", "w") as out_fh, open(home / "merge.stderr", "w") as err_fh:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=out_fh, stderr=err_fh, env=env)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"loradex merge failed: {(home / 'merge.stderr').read_text()[-2000:]}")
        data = json.loads((home / "merge.stdout").read_text())
        return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024,
                "sha256": data["sha256"], "out_mb": catalog.blobs.path_for(data["sha256"]).stat().st_size / 2**20,
                "report": data.get("report", {})}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def full_matrix_module(modules, rank: int):
    """kohya's full-matrix method on one module: ΣΔW materialised (float32), full SVD, truncated.
    A wide ΣΔW (linear2: 3072×15360) is decomposed as its transpose, the orientation LAPACK is
    fastest in (several times faster here): the reference is timed at its best, so the ratio is
    not flattered."""
    import torch

    from loradex.merge.math.lora_module import delta_weight

    total = sum(delta_weight(m, w) for m, w in zip(modules, S.WEIGHTS))
    wide = total.shape[0] < total.shape[1]
    u, s, vh = torch.linalg.svd(total.T if wide else total, full_matrices=False)
    if wide:
        u, vh = vh.T, u.T
    up, down = u[:, :rank] * s[:rank], vh[:rank]
    residual = float(s[rank:].double().pow(2).sum().sqrt())
    return up, down, residual, float(total.double().norm())


def reference(inputs, mods, rank: int, samples: int):
    """Per distinct shape: the full-matrix method and loradex's on ``samples`` modules (median
    times), scaled by the shape's count; the worst (ours − optimal)/‖ΣΔW‖ on the sampled modules."""
    from statistics import median

    import torch
    from safetensors import safe_open

    from loradex.merge.math.svd_merge import merge_svd_module

    torch.linalg.svd(torch.randn(64, 64))  # load LAPACK before timing
    handles = [safe_open(str(p), framework="pt") for p in inputs]
    by_shape: dict = OrderedDict()
    counts: Counter = Counter()
    for name, (down_shape, up_shape) in mods.items():
        key = (up_shape[0], down_shape[1])
        counts[key] += 1
        if len(by_shape.setdefault(key, [])) < samples:
            by_shape[key].append(name)
    rows, est_full, est_ours, est_full_cpu, worst_gap = [], 0.0, 0.0, 0.0, float("-inf")
    for key, names in by_shape.items():
        full_times, full_cpu, our_times, gaps = [], [], [], []
        for name in names:
            modules = [S.read_module(h, name) for h in handles]
            t0, c0 = time.perf_counter(), time.process_time()
            _, _, optimal, norm = full_matrix_module(modules, rank)
            full_times.append(time.perf_counter() - t0)
            full_cpu.append(time.process_time() - c0)
            t0 = time.perf_counter()
            _, report = merge_svd_module(name, modules, list(S.WEIGHTS), rank=rank)
            our_times.append(time.perf_counter() - t0)
            gaps.append((report.residual - optimal) / norm)
            print(f"  {key[0]}×{key[1]} {name}: full {full_times[-1]:.2f} s ({full_cpu[-1]:.2f} s CPU), "
                  f"loradex {our_times[-1]:.4f} s, "
                  f"residual {report.residual:.6g} vs optimal {optimal:.6g}", file=sys.stderr, flush=True)
        if not names:
            continue
        est_full += median(full_times) * counts[key]
        est_full_cpu += median(full_cpu) * counts[key]
        est_ours += median(our_times) * counts[key]
        worst_gap = max(worst_gap, *gaps)
        rows.append((f"{key[0]}×{key[1]}", counts[key], median(full_times), median(our_times), max(gaps)))
    return rows, est_full, est_full_cpu, est_ours, worst_gap


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", type=int, default=None, help="only the first N modules (default: all 376)")
    ap.add_argument("--rank", type=int, default=16, help="output rank")
    ap.add_argument("--in-rank", type=int, default=16, help="rank of each generated input")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--ref-samples", type=int, default=1,
                    help="modules per distinct shape timed with the full-matrix method (0: skip the reference)")
    ap.add_argument("--cli-runs", type=int, default=3, help="`loradex merge` runs; the median is reported")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    if not LAYOUT.exists():
        print(f"layout not found: {LAYOUT}", file=sys.stderr)
        return 2
    mods = flux_modules(args.modules)
    t0 = time.perf_counter()
    inputs = S.generate_inputs(mods, [args.in_rank] * 3, WORK)
    gen_s = time.perf_counter() - t0
    in_mb = sum(p.stat().st_size for p in inputs) / 2**20
    output = WORK / f"merged_m{len(mods)}_r{args.rank}.safetensors"
    child = subprocess.run(
        [sys.executable, str(HERE / "bench_svd_merge.py"), "--rank", str(args.rank), "--threads", str(args.threads),
         "--stream-child", *map(str, inputs), str(output)],
        check=True, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    ours = json.loads(child.stdout.strip().splitlines()[-1])
    runs = sorted((cli_merge(inputs, args.rank, args.threads) for _ in range(max(1, args.cli_runs))),
                  key=lambda r: r["wall_s"])
    cli = runs[len(runs) // 2]
    assert len({r["sha256"] for r in runs}) == 1, "the same merge gave different bytes"

    print(f"\n## Flux.1 SVD merge: 3 × rank-{args.in_rank} fp16 LoRAs → rank {args.rank}, {len(mods)} Flux.1-dev "
          f"modules ({in_mb:.0f} MB of inputs; generated in {gen_s:.1f} s), torch threads {args.threads}\n")
    print("| method | wall s | peak RSS MB | residual | note |")
    print("|---|---|---|---|---|")
    print(f"| loradex svd (streaming, whole process) | {ours['wall_s']:.2f} | {ours['peak_rss_mb']:.0f} | "
          f"total relative {ours['rel_residual_total']:.6f} | merge {ours['merge_s']:.2f} s, write {ours['write_s']:.2f} s |")
    cpu = sorted(r["cpu_s"] for r in runs)[len(runs) // 2]
    print(f"| `loradex merge --method svd` (CLI, whole process; CPU {cpu:.2f} s) | {cli['wall_s']:.2f} | "
          f"{cli['peak_rss_mb']:.0f} | "
          f"max relative per module {cli['report'].get('max_relative_residual') or 0:.6f} | output {cli['out_mb']:.0f} MB; "
          f"median of {len(runs)} runs ({runs[0]['wall_s']:.2f}–{runs[-1]['wall_s']:.2f} s, same sha256) |")
    if args.ref_samples:
        rows, est_full, est_full_cpu, est_ours, worst_gap = reference(inputs, mods, args.rank, args.ref_samples)
        print(f"| full-matrix SVD (kohya's method, estimated; CPU {est_full_cpu:.1f} s) | {est_full:.1f} | — | optimal | "
              f"median of {args.ref_samples} module(s) per shape × the shape's count |")
        print(f"\nratio full-matrix / `loradex merge` CLI: **{est_full / cli['wall_s']:.1f}×** "
              f"(slowest run {est_full / runs[-1]['wall_s']:.1f}×; CPU time {est_full_cpu / cpu:.1f}×); "
              f"full-matrix / library whole process: "
              f"{est_full / ours['wall_s']:.1f}× (math only, same per-shape scaling: {est_full / est_ours:.1f}×); "
              f"max (our residual − optimal residual)/‖ΣΔW‖ per sampled module: {worst_gap:.2e}\n")
        print("| shape (out×in) | modules | full SVD s/module | loradex s/module | residual gap (rel) |")
        print("|---|---|---|---|---|")
        for shape, count, t_full, t_ours, gap in rows:
            print(f"| {shape} | {count} | {t_full:.3f} | {t_ours:.4f} | {gap:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
