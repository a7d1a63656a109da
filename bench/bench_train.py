"""`train lora` (the loradex engine) vs a minimal hand-written diffusers + peft loop doing the
same steps (same base, data, batch, LoRA config, AdamW, grad clipping, VAE + text encoding every
step), in the same run. Target: engine steps/s ≥ 0.95× the hand loop's; peak memory no higher.

Each variant runs in its own subprocess (peak RSS is per process), alternating, ``--repeats``
times; the table shows medians. Steps/s is timed from the end of step 1 to the end of the last
step (setup, export and samples excluded; both sides do the same per-step work), in wall time
and in this process's CPU time (steadier on a shared machine).

    python bench/bench_train.py [--steps 40] [--batch 2] [--resolution 32] [--threads 1] [--repeats 3]
    python bench/bench_train.py --shapes sd15 --resolution 512 --batch 1   # GPU: SD1.5 shapes, random weights
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def make_data(folder: Path, n: int, size: int) -> Path:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = Image.new("RGB", (size, size), (40 + 20 * i % 200, 90, 140))
        ImageDraw.Draw(img).ellipse((size // 8, size // 8, size // 2 + i, size // 2 + i), fill=(230, 40, 40))
        img.save(folder / f"img{i:02d}.png")
        (folder / f"img{i:02d}.txt").write_text(f"sks, shape {i % 3}")
    return folder


def sd15_folder(dest: Path) -> Path:
    """A diffusers folder with SD 1.5 component shapes and random weights (tiny tokenizer)."""
    if (dest / "model_index.json").is_file():
        return dest
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from loradex.trainer.tiny_pipeline import build_tiny_tokenizer

    torch.manual_seed(0)
    tok = build_tiny_tokenizer()
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=2)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=3072,
                                      num_attention_heads=12, num_hidden_layers=12, max_position_embeddings=77,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id))
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=te, tokenizer=tok, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(dest))
    return dest


# --- the two variants ------------------------------------------------------------------------

def run_engine(args, data: Path, out: Path) -> dict:
    from loradex.trainer.train_config import resolve_config
    from loradex.trainer.train_loop import train

    stamps = []
    cfg = resolve_config("lora", overrides=dict(
        base=args.base, data=str(data), output_dir=str(out), resolution=args.resolution, batch_size=args.batch,
        steps=args.steps, lr=1e-4, rank=4, seed=0, register=False, sample_steps=1,
        mixed_precision=args.mixed_precision, sample_prompts=["sks"]))
    train(cfg, progress=lambda step, total, info: stamps.append((time.perf_counter(), time.process_time())))
    return rates(stamps)


def run_manual(args, data: Path, out: Path) -> dict:
    """What a user would write from the diffusers LoRA example, minus its argument parsing."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from peft import LoraConfig
    from PIL import Image

    from loradex.trainer.base_loader import load_base

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.mixed_precision, torch.float32)
    torch.manual_seed(0)
    pipe, _ = load_base(args.base, dtype=dtype)
    pipe.to(device)
    unet, vae, te, tok = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    for m in (unet, vae, te):
        m.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    files = sorted(data.glob("*.png"))
    images = [torch.from_numpy(__import__("numpy").asarray(Image.open(f).convert("RGB").resize(
        (args.resolution, args.resolution)))).permute(2, 0, 1).float() / 127.5 - 1 for f in files]
    captions = [f.with_suffix(".txt").read_text() for f in files]
    gen = torch.Generator().manual_seed(0)
    unet.train()
    stamps = []
    for step in range(args.steps):
        ix = torch.randint(0, len(images), (args.batch,), generator=gen).tolist()
        pixels = torch.stack([images[i] for i in ix]).to(device, dtype)
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample(generator=gen) * vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=gen).to(device, latents.dtype)
        t = torch.randint(0, sched.config.num_train_timesteps, (args.batch,), generator=gen).to(device)
        noisy = sched.add_noise(latents, noise, t)
        ids = tok([captions[i] for i in ix], padding="max_length", max_length=tok.model_max_length,
                  truncation=True, return_tensors="pt").input_ids.to(device)
        with torch.no_grad():
            embeds = te(ids)[0]
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype != torch.float32):
            pred = unet(noisy, t, encoder_hidden_states=embeds).sample
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss.item())
        stamps.append((time.perf_counter(), time.process_time()))
    return rates(stamps)


def rates(stamps: list[tuple[float, float]]) -> dict:
    """Steps per wall second and per CPU second of this process (the latter is steadier on a
    shared machine: other processes' load stretches wall time, not our CPU time)."""
    n = len(stamps) - 1
    return {"steps_per_s": n / (stamps[-1][0] - stamps[0][0]), "steps_per_cpu_s": n / (stamps[-1][1] - stamps[0][1])}


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    data = make_data(Path(args.work) / "data", 8, max(args.resolution, 32))
    out = Path(tempfile.mkdtemp(dir=args.work))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = (run_engine if args.variant == "engine" else run_manual)(args, data, out)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        result["device"] = torch.cuda.get_device_name()
    else:
        result["device"] = f"cpu ({args.threads} thread(s))"
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shapes", choices=("tiny", "sd15"), default="tiny")
    ap.add_argument("--mixed-precision", default="no")
    ap.add_argument("--variant", choices=("engine", "manual"), help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        child(args)
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-train-"))
    base = "tiny-sd1" if args.shapes == "tiny" else str(sd15_folder(HERE / "_work" / "sd15-random"))
    runs: dict[str, list[dict]] = {"engine": [], "manual": []}
    for r in range(args.repeats):
        for variant in (("engine", "manual") if r % 2 == 0 else ("manual", "engine")):
            cmd = [sys.executable, __file__, "--variant", variant, "--base", base, "--work", str(work),
                   "--steps", str(args.steps), "--batch", str(args.batch), "--resolution", str(args.resolution),
                   "--threads", str(args.threads), "--mixed-precision", args.mixed_precision]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{variant} failed:\n{proc.stderr[-3000:]}")
            runs[variant].append(json.loads(line[7:]))
    med = {v: {k: statistics.median(r[k] for r in rs) for k in rs[0] if isinstance(rs[0][k], float)}
           for v, rs in runs.items()}
    device = runs["engine"][0]["device"]
    ratio = med["engine"]["steps_per_s"] / med["manual"]["steps_per_s"]
    cpu_ratio = med["engine"]["steps_per_cpu_s"] / med["manual"]["steps_per_cpu_s"]
    print(f"`train lora` vs hand-written diffusers+peft loop — {args.shapes} shapes, {args.resolution}px, "
          f"batch {args.batch}, {args.steps} steps, {device}, median of {args.repeats}\n")
    mem_key = "cuda_peak_mib" if "cuda_peak_mib" in med["engine"] else "peak_rss_mib"
    print(f"| variant | steps/s (wall) | steps per CPU-s | {mem_key} |\n|---|---|---|---|")
    for v in ("engine", "manual"):
        print(f"| {v} | {med[v]['steps_per_s']:.2f} | {med[v]['steps_per_cpu_s']:.2f} | {med[v][mem_key]:.0f} |")
    print(f"\nratio engine/manual: wall {ratio:.3f}×, CPU {cpu_ratio:.3f}× (target ≥ 0.95×); "
          f"memory engine/manual: {med['engine'][mem_key] / med['manual'][mem_key]:.3f}×")
    print("all runs (wall, CPU): " + json.dumps({v: [(round(r["steps_per_s"], 2), round(r["steps_per_cpu_s"], 2))
                                                   for r in rs] for v, rs in runs.items()}))


if __name__ == "__main__":
    main()
