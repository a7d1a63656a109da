"""Benchmark: exact concat merge of three ~100 MB SDXL LoRAs vs plain read+write of the same bytes.

    python bench/bench_concat_merge.py                  # ranks 12, 14, 16 at all 986 modules (~300 MB)
    python bench/bench_concat_merge.py --modules 100    # a quick run

Inputs are generated once under bench/_work/concat/ (fp16 random, SDXL kohya layout from the
corpus). The merge streams modules with safetensors' safe_open, concatenates factors (exact), and
writes an fp16 file. The baseline reads the three files and writes as many bytes as the merge
writes. Each is run twice; the faster run counts. The real command, ``loradex merge --method
concat`` on the same three files registered in a fresh LORADEX_HOME, is timed once as a whole
process (interpreter start, catalog, writer, hashing, registration; ``bench_svd_merge.
cli_merge_whole_process``). Prints a markdown table with MB/s (input + output
bytes per second) and the worst relative ΔW error of the fp16 output on a few modules.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench_svd_merge import ROOT, WEIGHTS, cli_merge_whole_process, generate_inputs, layout_modules, read_module

WORK = ROOT / "bench" / "_work" / "concat"


def concat_merge_files(inputs: list[Path], output: Path) -> None:
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from loradex.merge.math.lora_module import kohya_state_dict_from_modules
    from loradex.merge.math.merge_methods import merge_stream

    handles = [safe_open(str(p), framework="pt") for p in inputs]
    names: dict[str, None] = {}
    for h in handles:
        names.update(dict.fromkeys(k.split(".", 1)[0] for k in h.keys()))
    out: dict = {}
    for name, module, _ in merge_stream(
        "concat", names, lambda n: [read_module(h, n) for h in handles], list(WEIGHTS), dtype=torch.float16
    ):
        out.update(kohya_state_dict_from_modules({name: module}, dtype=torch.float16))
    save_file(out, str(output))


def plain_copy(inputs: list[Path], output: Path, out_bytes: int) -> None:
    """Read every input byte; write out_bytes (the size the merge writes)."""
    chunks = [p.read_bytes() for p in inputs]
    data = b"".join(chunks)
    with open(output, "wb") as f:
        while out_bytes > 0:
            piece = data[: min(out_bytes, len(data))]
            f.write(piece)
            out_bytes -= len(piece)


def check_exactness(inputs: list[Path], output: Path, sample: int = 8) -> float:
    """Worst ‖ΔW_merged − Σ w·ΔW_i‖/‖Σ w·ΔW_i‖ over a few modules (fp16 storage rounding)."""
    from safetensors import safe_open

    from loradex.merge.math.lora_module import delta_weight

    handles = [safe_open(str(p), framework="pt") for p in inputs]
    merged = safe_open(str(output), framework="pt")
    names = sorted({k.split(".", 1)[0] for k in merged.keys()})
    step = max(1, len(names) // sample)
    worst = 0.0
    for name in names[::step][:sample]:
        target = sum(delta_weight(read_module(h, name), w) for h, w in zip(handles, WEIGHTS)).double()
        got = delta_weight(read_module(merged, name)).double()
        worst = max(worst, float((got - target).norm() / target.norm()))
    return worst


def best_of(fn, runs=2) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", type=int, default=None, help="use only the first N modules (default: all 986)")
    ap.add_argument("--ranks", type=int, nargs=3, default=[12, 14, 16], help="input ranks (≈100 MB each at 14)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    mods = layout_modules(args.modules)
    inputs = generate_inputs(mods, args.ranks, WORK)
    in_bytes = sum(p.stat().st_size for p in inputs)
    merged = WORK / f"merged_m{len(mods)}.safetensors"
    copied = WORK / f"copied_m{len(mods)}.bin"
    t_merge = best_of(lambda: concat_merge_files(inputs, merged))
    out_bytes = merged.stat().st_size
    t_copy = best_of(lambda: plain_copy(inputs, copied, out_bytes))
    worst = check_exactness(inputs, merged)
    cli = cli_merge_whole_process(inputs, "concat", WORK, threads=args.threads)
    cli_mb = (in_bytes + cli["out_mb"] * 2**20) / 2**20
    copied.unlink()
    mb = (in_bytes + out_bytes) / 2**20
    print(f"\n## concat merge: ranks {args.ranks} → {sum(args.ranks)}, {len(mods)} SDXL modules, "
          f"inputs {in_bytes / 2**20:.0f} MB, output {out_bytes / 2**20:.0f} MB\n")
    print("| operation | s | MB/s (read + written) |")
    print("|---|---|---|")
    print(f"| loradex concat merge | {t_merge:.2f} | {mb / t_merge:.0f} |")
    print(f"| plain read + write of the same bytes | {t_copy:.2f} | {mb / t_copy:.0f} |")
    print(f"| `loradex merge --method concat` (CLI, whole process; peak RSS {cli['peak_rss_mb']:.0f} MB) | "
          f"{cli['wall_s']:.2f} | {cli_mb / cli['wall_s']:.0f} |")
    print(f"\nmerge / plain copy time: {t_merge / t_copy:.2f}×; worst relative ΔW error of the fp16 output "
          f"(sampled modules): {worst:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
