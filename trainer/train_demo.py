"""The training part of ``loradex demo``: a tiny LoRA and a tiny textual-inversion embedding,
trained on a generated 8-image dataset against the in-process tiny SD1 base and registered
with their evidence (lineage, config, samples). A few seconds of training on 2 CPU cores.

The lead's ``trainer/demo.py`` calls ``train_demo_adapters(catalog, workdir, log)``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

DEMO_COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}


def write_demo_dataset(folder: Path, n: int = 8, size: int = 32, seed: int = 0, tag: str = "shp") -> Path:
    """``n`` coloured squares/circles on grey gradients, each with a caption "shp, red square"."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    names = list(DEMO_COLOURS)
    for i in range(n):
        colour, shape = names[i % len(names)], ("square", "circle")[(i // len(names)) % 2]
        img = Image.new("L", (size, size))
        img.putdata([60 + (x * 3 + y * 5 + i * 17) % 120 for y in range(size) for x in range(size)])
        img = img.convert("RGB")
        a, b = rng.randint(2, size // 4), rng.randint(size // 2, size - 3)
        draw = ImageDraw.Draw(img)
        (draw.rectangle if shape == "square" else draw.ellipse)((a, a, b, b), fill=DEMO_COLOURS[colour])
        img.save(folder / f"img{i:02d}.png")
        (folder / f"img{i:02d}.txt").write_text(f"{tag}, {colour} {shape}")
    return folder


def train_demo_adapters(catalog, workdir, log: Callable[[str], None] = print) -> list:
    """Train and register ``demo-shapes-lora`` and ``demo-shapes-ti``; returns their AddResults."""
    from loradex.merge.math.torch_threads import single_torch_thread

    from .registration import train_and_register
    from .train_config import resolve_config

    workdir = Path(workdir)
    data = write_demo_dataset(workdir / "train-data" / "shapes")
    common = dict(base="tiny-sd1", data=str(data), resolution=32, batch_size=2, steps=30, sample_steps=4,
                  seed=0, message="loradex demo: trained on 8 generated images")
    runs = [
        ("lora", dict(name="demo-shapes-lora", output_dir=str(workdir / "train-lora"), lr=1e-2, rank=4,
                      sample_prompts=["shp, red square", "shp, blue circle"])),
        ("ti", dict(name="demo-shapes-ti", output_dir=str(workdir / "train-ti"), lr=5e-2, token="<shp>",
                    init_token="a", sample_prompts=["a photo of <shp>"])),
    ]
    added = []
    with single_torch_thread():
        for method, values in runs:
            config = resolve_config(method, overrides={**common, **values})
            log(f"training {method} on {len(list(data.glob('*.png')))} images ({config.steps} steps, tiny-sd1)…")
            result, results = train_and_register(config, catalog=catalog)
            final = results[-1].version
            log(f"trained {final.ref}: fixed-batch loss {result.eval_loss_before:.4f} → "
                f"{result.eval_loss_after:.4f} in {result.seconds:.1f} s; triggers={list(final.trigger_words)}; "
                f"{len(result.samples)} sample record(s)")
            added += results
    return added
