"""render(): deterministic, scheduler by name for one call; image_sha256 ignores file metadata."""

from __future__ import annotations

import hashlib
import importlib.util

import pytest
from PIL import Image, PngImagePlugin

from loradex.registry.errors import UsageError
from loradex.trainer.render import SCHEDULERS, image_sha256, render
from loradex.trainer.tiny_pipeline import build_tiny_sd1_pipeline

ARGS = dict(seed=3, steps=2, cfg=5.0, width=32, height=32)


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_sd1_pipeline(seed=0)


def test_image_sha256_known_answer_and_metadata_free(tmp_path):
    img = Image.new("RGB", (2, 1))
    img.putpixel((0, 0), (1, 2, 3))
    img.putpixel((1, 0), (250, 251, 252))
    expected = hashlib.sha256(b"RGB 2x1\n" + bytes([1, 2, 3, 250, 251, 252])).hexdigest()
    assert image_sha256(img) == expected
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat, Steps: 2")
    img.save(tmp_path / "with_text.png", pnginfo=info, compress_level=9)
    img.save(tmp_path / "plain.png", compress_level=0)
    assert (tmp_path / "with_text.png").read_bytes() != (tmp_path / "plain.png").read_bytes()
    assert image_sha256(Image.open(tmp_path / "with_text.png")) == expected
    assert image_sha256(Image.open(tmp_path / "plain.png")) == expected
    img.putpixel((1, 0), (250, 251, 253))
    assert image_sha256(img) != expected


def test_render_is_deterministic_and_seed_sensitive(pipe):
    calls = []
    a = render(pipe, "the cat", negative="blurry", progress=lambda d, t, s: calls.append((d, t)), **ARGS)
    b = render(build_tiny_sd1_pipeline(seed=0), "the cat", negative="blurry", **ARGS)
    assert a.size == (32, 32) and a.mode == "RGB"
    assert image_sha256(a) == image_sha256(b)
    assert calls == [(1, 2), (2, 2)]
    assert image_sha256(render(pipe, "the cat", negative="blurry", **{**ARGS, "seed": 4})) != image_sha256(a)
    assert image_sha256(render(pipe, "the cat", **ARGS)) != image_sha256(a)  # the negative matters


def test_scheduler_by_name_for_one_call(pipe):
    original = pipe.scheduler
    default = image_sha256(render(pipe, "the cat", **ARGS))
    # the tiny SD1 pipeline's own scheduler is DDIM: naming it changes nothing
    assert image_sha256(render(pipe, "the cat", scheduler="ddim", **ARGS)) == default
    seen = {}
    for name in sorted(SCHEDULERS):
        if SCHEDULERS[name].needs and importlib.util.find_spec(SCHEDULERS[name].needs) is None:
            with pytest.raises(UsageError, match=f"needs the '{SCHEDULERS[name].needs}' package"):
                render(pipe, "the cat", scheduler=name, **ARGS)
            continue
        seen[name] = image_sha256(render(pipe, "the cat", scheduler=name, **ARGS))
        assert pipe.scheduler is original  # restored after the call
    assert seen["euler"] != seen["ddim"]
    with pytest.raises(UsageError, match="unknown scheduler"):
        render(pipe, "the cat", scheduler="k_heun_magic", **ARGS)
    with pytest.raises(UsageError):
        render(pipe, "the cat", **{**ARGS, "steps": 0})
