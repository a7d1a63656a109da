"""Benchmark: SVD merge of 3 rank-32 LoRAs at SDXL shapes, streaming factored method vs full-matrix SVD.

    python bench/bench_svd_merge.py                 # all 986 modules (≈228 MB per input)
    python bench/bench_svd_merge.py --modules 60    # a quick run

Inputs are generated once (fp16 random, SDXL kohya layout from the corpus, rank dim set to
--in-rank) under bench/_work/svd/. The streaming merge runs in a fresh subprocess (read one module
from each input with safetensors' safe_open, merge, keep the fp16 result, write the output file),
so its wall time and peak RSS are those of the whole process; the same merge then runs as the
real command (``loradex merge --method svd`` in a fresh LORADEX_HOME holding the three inputs:
catalog, deterministic writer, hashing, registration), --cli-runs times (the median reported,
all runs must give the same sha256), each timed spawn → exit with its own peak RSS
(``os.wait4``). The full-matrix method (materialise ΣΔW, full torch.linalg.svd, truncate) is timed
on three modules of each distinct shape (median) and scaled by the number of modules of that
shape. peft's add_weighted_adapter(combination_type="svd") runs on a few modules for comparison.
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections import Counter, OrderedDict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYOUT = ROOT.parent / "shared" / "corpus" / "layouts" / "kohya_sdxl_lora_layout_AlienStyle.json"
WORK = ROOT / "bench" / "_work" / "svd"
ALPHAS = (16.0, 32.0, 8.0)
WEIGHTS = (0.8, -0.5, 1.2)


def layout_modules(limit: int | None) -> "OrderedDict[str, tuple[tuple[int, ...], tuple[int, ...]]]":
    """module name → (down shape, up shape) from the corpus layout, in file order."""
    raw = json.loads(LAYOUT.read_text())
    groups: OrderedDict[str, dict] = OrderedDict()
    for key, info in raw.items():
        name, suffix = key.split(".", 1)
        groups.setdefault(name, {})[suffix] = tuple(info["shape"])
    mods = OrderedDict(
        (n, (g["lora_down.weight"], g["lora_up.weight"])) for n, g in groups.items() if "lora_down.weight" in g
    )
    names = list(mods)[: limit or None]
    return OrderedDict((n, mods[n]) for n in names)


def generate_inputs(mods, ranks: list[int], work: Path = WORK) -> list[Path]:
    """One fp16 kohya LoRA per rank (alphas 16, 32, 8…), cached by module count and rank."""
    import torch
    from safetensors.torch import save_file

    work.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, rank in enumerate(ranks):
        path = work / f"in{i}_m{len(mods)}_r{rank}.safetensors"
        paths.append(path)
        if path.exists():
            continue
        gen = torch.Generator().manual_seed(100 + i)
        sd = {}
        for name, (down_shape, up_shape) in mods.items():
            down = (torch.randn(rank, *down_shape[1:], generator=gen) * 0.05).half()
            up = (torch.randn(up_shape[0], rank, *up_shape[2:], generator=gen) * 0.05).half()
            sd[f"{name}.lora_down.weight"] = down
            sd[f"{name}.lora_up.weight"] = up
            sd[f"{name}.alpha"] = torch.tensor(ALPHAS[i % len(ALPHAS)], dtype=torch.float16)
        save_file(sd, str(path))
    return paths


def read_module(handle, name):
    from loradex.merge.math.lora_module import LoraModule

    alpha = handle.get_tensor(f"{name}.alpha")
    return LoraModule(
        down=handle.get_tensor(f"{name}.lora_down.weight"),
        up=handle.get_tensor(f"{name}.lora_up.weight"),
        alpha=float(alpha.float()),
    )


def stream_merge(inputs: list[str], output: str, rank: int, threads: int) -> dict:
    """The streaming merge, as a whole process would run it. Returns timings and peak RSS."""
    t0 = time.perf_counter()
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from loradex.merge.math.lora_module import kohya_state_dict_from_modules
    from loradex.merge.math.merge_methods import merge_stream

    torch.set_num_threads(threads)
    handles = [safe_open(p, framework="pt") for p in inputs]
    names = [k[: -len(".lora_down.weight")] for k in handles[0].keys() if k.endswith(".lora_down.weight")]
    out: dict = {}
    residual_sq = energy_sq = 0.0
    max_rel = 0.0
    t_merge = time.perf_counter()
    for name, module, report in merge_stream(
        "svd", names, lambda n: [read_module(h, n) for h in handles], list(WEIGHTS), rank=rank
    ):
        out.update(kohya_state_dict_from_modules({name: module}, dtype=torch.float16))
        residual_sq += report.residual**2
        energy_sq += (report.residual / report.relative_residual) ** 2 if report.relative_residual else 0.0
        max_rel = max(max_rel, report.relative_residual)
    t_write = time.perf_counter()
    save_file(out, output)
    t_end = time.perf_counter()
    return {
        "modules": len(names),
        "wall_s": t_end - t0,
        "merge_s": t_write - t_merge,
        "write_s": t_end - t_write,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rel_residual_total": math.sqrt(residual_sq / energy_sq) if energy_sq else 0.0,
        "max_rel_residual": max_rel,
    }


def cli_merge_whole_process(inputs: list[Path], method: str, work: Path, *, rank: int | None = None,
                            threads: int = 2) -> dict:
    """``loradex merge`` exactly as a user runs it, timed as one process.

    The inputs are first registered (not timed) in a fresh LORADEX_HOME under ``work``; then one
    ``python -m loradex.cli merge in0:0.8 in1:-0.5 in2:1.2 --method METHOD [--rank R] --json``
    child runs: interpreter start, catalog, streaming merge, the deterministic writer, sha256 into
    the blob store and registration. Wall time is spawn → exit; peak RSS is that child's own
    (``os.wait4``, so earlier children do not count)."""
    import shutil
    import tempfile

    from loradex.registry.catalog.adding import add_file
    from loradex.registry.catalog.store import Catalog

    work.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="cli-home-", dir=work))
    try:
        catalog = Catalog(home)
        for i, path in enumerate(inputs):
            add_file(catalog, path, name=f"in{i}")
        cmd = [sys.executable, "-m", "loradex.cli", "merge", *(f"in{i}:{w}" for i, w in enumerate(WEIGHTS)),
               "--method", method, "--name", "merged", "--json", *(["--rank", str(rank)] if rank else [])]
        env = {**os.environ, "LORADEX_HOME": str(home), "OMP_NUM_THREADS": str(threads),
               "MKL_NUM_THREADS": str(threads), "PYTHONHASHSEED": "0"}
        out_path, err_path = home / "merge.stdout", home / "merge.stderr"
        with open(out_path, "w") as out_fh, open(err_path, "w") as err_fh:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=out_fh, stderr=err_fh, env=env)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"loradex merge exited {proc.returncode}: {err_path.read_text()[-2000:]}")
        data = json.loads(out_path.read_text())
        blob = catalog.blobs.path_for(data["sha256"])
        return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "sha256": data["sha256"],
                "out_mb": blob.stat().st_size / 2**20, "report": data.get("report", {})}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def full_matrix_module(modules, rank):
    """The full-matrix method on one module: materialise ΣΔW, full SVD, truncate."""
    import torch

    from loradex.merge.math.lora_module import delta_weight

    total = sum(delta_weight(m, w) for m, w in zip(modules, WEIGHTS))
    u, s, vh = torch.linalg.svd(total, full_matrices=False)
    up, down = u[:, :rank] * s[:rank], vh[:rank]
    residual = float(s[rank:].double().pow(2).sum().sqrt())
    return up, down, residual, float(total.double().norm())


def bench_full_matrix(inputs, mods, rank, samples: int = 3):
    """Time up to ``samples`` modules of each distinct shape (median); scale by the shape's count."""
    from statistics import median

    from safetensors import safe_open

    from loradex.merge.math.svd_merge import merge_svd_module

    import torch

    torch.linalg.svd(torch.randn(64, 64))  # load LAPACK before timing
    handles = [safe_open(str(p), framework="pt") for p in inputs]
    by_shape: dict = OrderedDict()
    counts = Counter()
    for name, (down_shape, up_shape) in mods.items():
        key = (up_shape[0], down_shape[1])
        counts[key] += 1
        if len(by_shape.setdefault(key, [])) < samples:
            by_shape[key].append(name)
    rows = []
    est_full = est_ours = 0.0
    worst_gap = 0.0
    for key, names in by_shape.items():
        full_times, our_times = [], []
        for name in names:
            modules = [read_module(h, name) for h in handles]
            t0 = time.perf_counter()
            _, _, opt_residual, norm = full_matrix_module(modules, rank)
            full_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _, report = merge_svd_module(name, modules, list(WEIGHTS), rank=rank)
            our_times.append(time.perf_counter() - t0)
            worst_gap = max(worst_gap, (report.residual - opt_residual) / norm)
        t_full, t_ours = median(full_times), median(our_times)
        est_full += t_full * counts[key]
        est_ours += t_ours * counts[key]
        rows.append((f"{key[0]}×{key[1]}", counts[key], t_full, t_ours, worst_gap))
    return rows, est_full, est_ours, worst_gap


def bench_peft(inputs, mods, rank, n_modules):
    """peft's add_weighted_adapter(svd) on the first n modules vs ours, same inputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors import safe_open

    from loradex.merge.math.lora_module import delta_weight
    from loradex.merge.math.svd_merge import merge_svd_module

    handles = [safe_open(str(p), framework="pt") for p in inputs]
    names = list(mods)[:n_modules]
    layers = torch.nn.Module()
    for i, name in enumerate(names):
        down_shape, up_shape = mods[name]
        layers.add_module(f"m{i}", torch.nn.Linear(down_shape[1], up_shape[0], bias=False))
    targets = [f"m{i}" for i in range(len(names))]
    model = None
    for a in range(3):
        cfg = LoraConfig(r=rank, lora_alpha=ALPHAS[a], target_modules=targets, init_lora_weights=False)
        if model is None:
            model = get_peft_model(layers, cfg, adapter_name=f"a{a}")
        else:
            model.add_adapter(f"a{a}", cfg)
    modules = {name: [read_module(h, name) for h in handles] for name in names}
    with torch.no_grad():
        for i, name in enumerate(names):
            layer = getattr(model.base_model.model, f"m{i}")
            for a in range(3):
                layer.lora_A[f"a{a}"].weight.copy_(modules[name][a].down.float())
                layer.lora_B[f"a{a}"].weight.copy_(modules[name][a].up.float())
    t0 = time.perf_counter()
    model.add_weighted_adapter(
        [f"a{a}" for a in range(3)], list(WEIGHTS), "merged", combination_type="svd", svd_rank=rank
    )
    t_peft = time.perf_counter() - t0
    t_ours = 0.0
    worst_peft = worst_ours = 0.0
    for i, name in enumerate(names):
        layer = getattr(model.base_model.model, f"m{i}")
        target = sum(delta_weight(m, w) for m, w in zip(modules[name], WEIGHTS)).double()
        peft_delta = layer.get_delta_weight("merged").double()
        t1 = time.perf_counter()
        merged, _ = merge_svd_module(name, modules[name], list(WEIGHTS), rank=rank)
        t_ours += time.perf_counter() - t1
        norm = float(target.norm())
        worst_peft = max(worst_peft, float((target - peft_delta).norm()) / norm)
        worst_ours = max(worst_ours, float((target - delta_weight(merged).double()).norm()) / norm)
    return len(names), t_peft, t_ours, worst_peft, worst_ours


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", type=int, default=None, help="use only the first N modules (default: all 986)")
    ap.add_argument("--rank", type=int, default=32, help="output rank")
    ap.add_argument("--in-rank", type=int, default=32, help="rank of each generated input")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--peft-modules", type=int, default=4, help="modules for the peft comparison (0: skip)")
    ap.add_argument("--cli-runs", type=int, default=3, help="`loradex merge` runs; the median is reported")
    ap.add_argument("--stream-child", nargs=4, metavar=("IN0", "IN1", "IN2", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.stream_child:
        print(json.dumps(stream_merge(args.stream_child[:3], args.stream_child[3], args.rank, args.threads)))
        return 0

    import torch

    torch.set_num_threads(args.threads)
    if not LAYOUT.exists():
        print(f"layout not found: {LAYOUT}", file=sys.stderr)
        return 2
    mods = layout_modules(args.modules)
    t0 = time.perf_counter()
    inputs = generate_inputs(mods, [args.in_rank] * 3)
    gen_s = time.perf_counter() - t0
    in_mb = sum(p.stat().st_size for p in inputs) / 2**20
    output = WORK / f"merged_m{len(mods)}_r{args.rank}.safetensors"
    child = subprocess.run(
        [sys.executable, __file__, "--rank", str(args.rank), "--threads", str(args.threads), "--stream-child",
         *map(str, inputs), str(output)],
        check=True, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    ours = json.loads(child.stdout.strip().splitlines()[-1])
    runs = sorted((cli_merge_whole_process(inputs, "svd", WORK, rank=args.rank, threads=args.threads)
                   for _ in range(max(1, args.cli_runs))), key=lambda r: r["wall_s"])
    cli = runs[len(runs) // 2]  # the median run
    assert len({r["sha256"] for r in runs}) == 1, "the same merge gave different bytes"
    rows, est_full, est_ours, worst_gap = bench_full_matrix(inputs, mods, args.rank)

    print(f"\n## SVD merge: 3 × rank-{args.in_rank} fp16 LoRAs → rank {args.rank}, {len(mods)} SDXL modules "
          f"({in_mb:.0f} MB of inputs; generated in {gen_s:.1f} s), torch threads {args.threads}\n")
    print("| method | wall s | peak RSS MB | relative residual (total) | note |")
    print("|---|---|---|---|---|")
    print(f"| loradex svd (streaming, whole process) | {ours['wall_s']:.2f} | {ours['peak_rss_mb']:.0f} | "
          f"{ours['rel_residual_total']:.6f} | merge {ours['merge_s']:.2f} s, write {ours['write_s']:.2f} s |")
    print(f"| `loradex merge --method svd` (CLI, whole process) | {cli['wall_s']:.2f} | {cli['peak_rss_mb']:.0f} | "
          f"max per module {cli['report'].get('max_relative_residual') or 0:.6f} | interpreter + catalog + "
          f"writer + hashing + registration; output {cli['out_mb']:.0f} MB; median of {len(runs)} runs "
          f"({runs[0]['wall_s']:.2f}–{runs[-1]['wall_s']:.2f} s, same sha256) |")
    print(f"| full-matrix SVD (estimated) | {est_full:.1f} | — | optimal | median of 3 modules per shape × count |")
    print(f"\nratio full-matrix / `loradex merge` CLI: **{est_full / cli['wall_s']:.1f}×** "
          f"(slowest run {est_full / runs[-1]['wall_s']:.1f}×); "
          f"full-matrix / library whole process: {est_full / ours['wall_s']:.1f}× "
          f"(math only, same per-shape scaling: {est_full / est_ours:.1f}×); "
          f"max (our residual − optimal residual)/‖ΣΔW‖ per module: {worst_gap:.2e}\n")
    print("| shape (out×in) | modules | full SVD s/module | loradex s/module | residual gap (rel) |")
    print("|---|---|---|---|---|")
    for shape, count, t_full, t_ours, gap in rows:
        print(f"| {shape} | {count} | {t_full:.3f} | {t_ours:.4f} | {gap:.1e} |")
    if args.peft_modules:
        n, t_peft, t_ours, r_peft, r_ours = bench_peft(inputs, mods, args.rank, args.peft_modules)
        print(f"\n| on {n} modules | s | max relative residual |\n|---|---|---|")
        print(f"| peft add_weighted_adapter(svd) | {t_peft:.2f} | {r_peft:.6f} |")
        print(f"| loradex svd | {t_ours:.3f} | {r_ours:.6f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
