"""Changing the weights of two loaded LoRAs vs unloading and reloading both (tiny SD1 pipeline).

Target (issue 4): a weight change through ``AdapterStack.set_weights`` (diffusers
``set_adapters`` only) is ≥ 10× faster than reloading the two adapters. Two reload baselines
are timed in the same run: loradex's own (``AdapterStack.apply`` after removing both, which
includes the coverage check) and bare diffusers (``delete_adapters`` + 2× ``load_lora_weights``
+ ``set_adapters``).

    python bench/bench_stack_weights.py [--rank 16] [--reps 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def timed(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()

    import torch

    from loradex.merge.synthetic_adapters import write_random_kohya_lora
    from loradex.trainer.stacking import AdapterStack, StackEntry, _quiet_library_logs
    from loradex.trainer.tiny_pipeline import build_tiny_sd1_pipeline, kohya_module_shapes

    torch.set_num_threads(1)  # a shared machine: keep timings comparable between the two paths
    work = Path(tempfile.mkdtemp(prefix="loradex-bench-stack-"))
    pipe = build_tiny_sd1_pipeline(seed=0)
    modules = kohya_module_shapes(pipe)
    files = {name: write_random_kohya_lora(work / f"{name}.safetensors", modules=modules, rank=args.rank,
                                           alpha=args.rank / 2, seed=i)
             for i, name in enumerate(("style", "character"))}
    stack = AdapterStack(pipe)
    entries = [StackEntry("style", files["style"], 0.8, 0.8), StackEntry("character", files["character"], -0.5, -0.5)]
    stack.apply(entries)

    flip = [0]

    def change_weights():
        flip[0] ^= 1
        w = 0.8 if flip[0] else 0.6
        stack.set_weights({"style": (w, w), "character": (-0.5, 0.3 * w)})

    def reload_loradex():
        stack.remove(["style", "character"])
        stack.apply(entries)

    def reload_diffusers():
        pipe.delete_adapters(["style", "character"])
        with _quiet_library_logs():
            pipe.load_lora_weights(str(files["style"]), adapter_name="style")
            pipe.load_lora_weights(str(files["character"]), adapter_name="character")
        pipe.set_adapters(["style", "character"], adapter_weights=[{"unet": 0.8, "text_encoder": 0.8},
                                                                   {"unet": -0.5, "text_encoder": -0.5}])

    loads_before = stack.load_calls
    change_weights()  # warm-up
    t_set = timed(change_weights, args.reps * 5)
    assert stack.load_calls == loads_before, "a weight change must not reload"
    reload_loradex()  # warm-up
    t_reload = timed(reload_loradex, args.reps)
    stack.clear()
    with _quiet_library_logs():
        pipe.load_lora_weights(str(files["style"]), adapter_name="style")
        pipe.load_lora_weights(str(files["character"]), adapter_name="character")
    t_bare = timed(reload_diffusers, args.reps)

    set_med = statistics.median(t_set)
    rows = [("change weights (set_adapters)", t_set), ("reload both: loradex AdapterStack", t_reload),
            ("reload both: bare diffusers", t_bare)]
    print(f"tiny SD1 pipeline, 2 kohya LoRAs × {len(modules)} modules, rank {args.rank}, "
          f"torch threads 1, reps {args.reps} (weights: {args.reps * 5})\n")
    print("| operation | median ms | p90 ms | × slower than a weight change |")
    print("|---|---:|---:|---:|")
    for label, ts in rows:
        p90 = sorted(ts)[int(0.9 * (len(ts) - 1))]
        print(f"| {label} | {statistics.median(ts) * 1e3:.2f} | {p90 * 1e3:.2f} | "
              f"{statistics.median(ts) / set_med:.1f} |")
    ratio = min(statistics.median(t_reload), statistics.median(t_bare)) / set_med
    print(f"\nratio (fastest reload / weight change): {ratio:.1f}× — target ≥ 10×: "
          f"{'PASS' if ratio >= 10 else 'FAIL'}")


if __name__ == "__main__":
    main()
