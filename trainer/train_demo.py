"""The training part of ``loradex demo``: a tiny LoRA and a tiny textual-inversion embedding,
trained on a generated 8-image dataset against the in-process tiny SD1 base and registered
with their evidence (lineage, config, samples). A few seconds of training on 2 CPU cores.

``build_demo_dataset`` makes the training set a catalog dataset version and captions it with a
tiny random tagger (``demo-shapes@1.0.0`` without captions, ``@1.1.0`` captioned, each caption
recorded with the tagger's hash and settings); ``trainer/demo.py`` then calls
``train_demo_adapters(catalog, workdir, log, data="dataset:demo-shapes@1.1.0")``, so both trained
versions' lineage names that dataset version. Without ``data`` the generated folder (with its
hand-written captions) is used.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

DEMO_COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}


def write_demo_dataset(folder: Path, n: int = 8, size: int = 32, seed: int = 0, tag: str = "shp",
                       captions: bool = True) -> Path:
    """``n`` coloured squares/circles on grey gradients, each with a caption "shp, red square"
    (``captions=False``: images only)."""
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
        if captions:
            (folder / f"img{i:02d}.txt").write_text(f"{tag}, {colour} {shape}")
    return folder


DEMO_DATASET = "demo-shapes"


def build_demo_dataset(catalog, workdir, log: Callable[[str], None] = print):
    """The demo's training set as dataset versions: the generated images alone (1.0.0), then
    captioned by a tiny random WD14-style tagger saved under ``workdir/models`` with the trigger
    as prefix (1.1.0). Answers the captioned ``DatasetVersion``."""
    from loradex.registry.catalog.datasets import add_dataset_version

    from .captioning import CaptionSettings, load_captioner
    from .captioning.run import caption_dataset
    from .captioning.tiny import save_tiny_tagger

    workdir = Path(workdir)
    images = write_demo_dataset(workdir / "dataset-images" / "shapes", captions=False)
    bare = add_dataset_version(catalog, images, name=DEMO_DATASET, resolution=32,
                               message="loradex demo: 8 generated images, not captioned yet")
    log(f"dataset {bare.ref}: {bare.num_images} images, {len(bare.warnings)} warning(s) (no captions yet)")
    tagger = save_tiny_tagger(workdir / "models" / "tiny-tagger")
    captioner = load_captioner("tags", str(tagger), settings=CaptionSettings(prefix="shp, ", threshold=0.5, max_words=4))
    run = caption_dataset(catalog, bare.ref, captioner, message="loradex demo: captioned by a tiny random tagger")
    first = next(iter(run.captions.items()))
    log(f"captioned {bare.ref} → {run.version.ref} with {captioner.name} "
        f"(model sha256 {run.record['model_sha256'][:12]}…, threshold 0.5): {first[0]}: {first[1]!r}")
    return run.version


def train_demo_adapters(catalog, workdir, log: Callable[[str], None] = print, data: str | None = None) -> list:
    """Train and register ``demo-shapes-lora`` and ``demo-shapes-ti`` on ``data`` (a folder or a
    ``dataset:`` ref; default: a generated captioned folder); returns their AddResults."""
    from loradex.merge.math.torch_threads import single_torch_thread

    from .registration import train_and_register
    from .train_config import resolve_config

    workdir = Path(workdir)
    data = data or str(write_demo_dataset(workdir / "train-data" / "shapes"))
    common = dict(base="tiny-sd1", data=data, resolution=32, batch_size=2, steps=30, sample_steps=4,
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
            log(f"training {method} on {data} ({config.steps} steps, tiny-sd1)…")
            result, results = train_and_register(config, catalog=catalog)
            final = results[-1].version
            log(f"trained {final.ref}: fixed-batch loss {result.eval_loss_before:.4f} → "
                f"{result.eval_loss_after:.4f} in {result.seconds:.1f} s; triggers={list(final.trigger_words)}; "
                f"{len(result.samples)} sample record(s)")
            added += results
    return added
