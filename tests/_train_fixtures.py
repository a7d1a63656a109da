"""A tiny generated image+caption dataset for trainer tests (deterministic, 32×32 by default)."""

from __future__ import annotations

from pathlib import Path

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}
SHAPES = ("square", "circle")


def make_dataset(folder: Path, n: int = 8, size: int = 32, seed: int = 0, tag: str = "sks") -> Path:
    """``n`` images of coloured shapes on a grey gradient with captions "sks, red square"."""
    import random

    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    names = list(COLOURS)
    for i in range(n):
        colour = names[i % len(names)]
        shape = SHAPES[(i // len(names)) % len(SHAPES)]
        img = Image.new("RGB", (size, size))
        px = img.load()
        for y in range(size):
            for x in range(size):
                g = 60 + (x * 3 + y * 5 + i * 17) % 120
                px[x, y] = (g, g, g)
        draw = ImageDraw.Draw(img)
        a, b = rng.randint(2, size // 4), rng.randint(size // 2, size - 3)
        (draw.rectangle if shape == "square" else draw.ellipse)((a, a, b, b), fill=COLOURS[colour])
        img.save(folder / f"img{i:02d}.png")
        (folder / f"img{i:02d}.txt").write_text(f"{tag}, {colour} {shape}")
    return folder
