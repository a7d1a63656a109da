"""Memorization against training images as the pipeline reproduces them (issue 6, acceptance 3).

A perfectly memorised latent decodes to decode(encode(x).latent_dist.mean), not to x; on the tiny
pipeline's random VAE the two differ a lot, so the metric compares with both. The first tests pin the
definition with known answers; the last trains a LoRA that really memorises its image and checks the
pixel-space memorization sees it (the random tiny CLIP does not: see docs/EVIDENCE.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from loradex.trainer import eval_metrics as M
from loradex.trainer.evaluate import compute_metrics, vae_round_trip
from loradex.trainer.tiny_pipeline import build_tiny_sd1_pipeline


@pytest.fixture(scope="module")
def vae():
    return build_tiny_sd1_pipeline().vae


@pytest.fixture(scope="module")
def embedder():
    return M.get_embedder("tiny-clip")


def blocks(i: int, size: int = 32) -> Image.Image:
    rng = np.random.default_rng(i)
    arr = np.repeat(np.repeat(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), size // 4, 0), size // 4, 1)
    return Image.fromarray(arr)


def test_round_trip_is_decode_of_the_posterior_mean(vae):
    img = blocks(0)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    with torch.no_grad():
        want = vae.decode(vae.encode(x).latent_dist.mean).sample[0]
    want = ((want.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    (got,) = vae_round_trip(vae, [img])
    assert np.array_equal(np.asarray(got), want)
    # deterministic (the mean, not a sample of the posterior), and not the image itself here
    assert np.array_equal(np.asarray(vae_round_trip(vae, [img])[0]), want)
    assert not np.array_equal(np.asarray(got), np.asarray(img))
    # odd sizes are rounded down to the VAE's downscale factor (2 for the tiny VAE)
    assert vae_round_trip(vae, [blocks(1).resize((33, 35))])[0].size == (32, 34)


def test_memorization_scores_copies_of_either_form_and_keeps_both_means(vae, embedder):
    train = [blocks(i) for i in range(3)]
    trip = vae_round_trip(vae, train)
    others = [blocks(10 + i) for i in range(3)]
    # adapter samples: two round-trip copies and one raw copy; base samples: unrelated images
    with_images = [trip[0], trip[2], train[1]]
    metrics = compute_metrics(embedder, with_images, others, ["a"] * 3, [0, 1, 2],
                              train_images=train, train_round_trip=trip, near_duplicate=0.999)
    mem, base = metrics["memorization"], metrics["memorization_base"]
    assert mem["status"] == "computed" and "decode(encode(x).latent_dist.mean)" in mem["definition"]
    d = mem["details"]
    assert d["per_sample_max"] == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    assert d["near_duplicates"] == [0, 1, 2] and d["round_trip"] is True
    assert mem["value"] == pytest.approx(1.0, abs=1e-5) and mem["value"] > base["value"]

    # the two one-sided means, recomputed by hand
    emb = embedder.images(with_images)
    raw_best = M.max_similarity(emb, embedder.images(train))
    trip_best = M.max_similarity(emb, embedder.images(trip))
    assert d["raw_mean"] == pytest.approx(float(raw_best.mean()), abs=1e-6)
    assert d["round_trip_mean"] == pytest.approx(float(trip_best.mean()), abs=1e-6)
    assert d["per_sample_max"] == pytest.approx(raw_best.maximum(trip_best).tolist(), abs=1e-6)
    # the round-trip copies are not copies of the raw images under this embedder: the raw-only
    # mean misses them, which is what the old (raw-only) definition reported
    assert d["raw_mean"] < mem["value"] - 1e-3

    # without round trips the metric falls back to the raw images and says so
    raw_only = compute_metrics(embedder, with_images, others, ["a"] * 3, [0, 1, 2], train_images=train,
                               near_duplicate=0.999)["memorization"]
    assert raw_only["details"]["round_trip"] is False
    assert raw_only["value"] == pytest.approx(d["raw_mean"], abs=1e-6)
    assert raw_only["details"]["near_duplicates"] == [2]


# --- a really trained adapter (issue 6, acceptance 3) ----------------------------------------------

# LoRA wide enough to memorise one image on the tiny UNet: attention alone cannot (docs/EVIDENCE.md)
WIDE_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "conv_in", "conv_out", "proj_in", "proj_out",
                "time_emb_proj", "linear_1", "linear_2", "ff.net.0.proj", "ff.net.2"]
PROMPT = "sks pattern"


def train_memorising_lora(root, seed: int, *, steps: int = 200, lr: float = 5e-3):
    """Train (the project's trainer) a rank-64 LoRA + LoCon on 4 copies of one block pattern, on the
    calibrated tiny base; returns (catalog, version, base folder, training folder)."""
    from _evidence_fixtures import block_pattern, calibrated_tiny_base
    from loradex.registry.catalog.adding import add_file
    from loradex.registry.catalog.store import Catalog
    from loradex.trainer.train_config import resolve_config
    from loradex.trainer.train_loop import train

    base = root / "base"
    if not base.is_dir():
        calibrated_tiny_base(base)
    data = root / "train"
    data.mkdir(exist_ok=True)
    for i in range(4):  # batch 4 of the same image: four timesteps per step
        block_pattern(100).save(data / f"p{i}.png")
        (data / f"p{i}.txt").write_text(PROMPT)
    config = resolve_config("lora", overrides=dict(
        base=str(base), data=str(data), output_dir=str(root / f"out-{seed}"), resolution=32, batch_size=4,
        steps=steps, lr=lr, rank=64, conv_rank=64, target_modules=WIDE_TARGETS, seed=seed, sample_steps=2,
        register=False))
    result = train(config)
    catalog = Catalog()
    version = add_file(catalog, result.output.path, name=f"memorised-{seed}").version
    return catalog, version, base, data


def eval_memorisation(catalog, version, base, data, suite):
    from loradex.trainer.evaluate import EvalOptions, evaluate

    options = EvalOptions(base=str(base), seeds=[0, 1, 2, 3], steps=20, cfg=1.0, width=32, height=32,
                          train_dir=str(data), embedder="tiny-clip")
    return evaluate(catalog, version.ref, suite, options).card["metrics"]


@pytest.mark.slow  # ~25-30 s: 200 training steps at batch 4
def test_trained_lora_memorises_its_training_image_in_pixels(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny models are faster on one thread
    try:
        catalog, version, base, data = train_memorising_lora(tmp_path, seed=0)
        suite = tmp_path / "suite.txt"
        suite.write_text(PROMPT + "\n")
        metrics = eval_memorisation(catalog, version, base, data, suite)
    finally:
        torch.set_num_threads(before)
    px, px_base = metrics["memorization_pixels"], metrics["memorization_pixels_base"]
    assert px["status"] == px_base["status"] == "computed" and px["details"]["round_trip"] is True
    # measured over training seeds 0-4 (docs/EVIDENCE.md): margins +0.23…+0.48 (seed 0: +0.31); the
    # adapter's samples correlate with the training image as the VAE reproduces it, the base's do not
    assert px["value"] > px_base["value"] + 0.15
    assert px["details"]["round_trip_mean"] > px["details"]["raw_mean"]  # it copies the latent, not x
    # the embedding metric is computed too, but tiny-clip cannot see this copy (see docs/EVIDENCE.md)
    assert metrics["memorization"]["status"] == "computed"
