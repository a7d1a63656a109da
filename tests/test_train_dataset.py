"""Dataset check (corrupt, small, duplicates, captions, buckets, manifest), dHash known answers,
the config precedence (defaults < method < TOML < flags) and the `dataset check` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _train_fixtures import make_dataset


def test_dhash_known_answers():
    from PIL import Image

    from loradex.trainer.dataset import dhash, hamming

    # brightness falling left to right: every left pixel is brighter than its right neighbour
    falling = Image.new("L", (90, 80))
    falling.putdata([255 - x * 2 for _ in range(80) for x in range(90)])  # 255 on the left → 77 on the right
    assert dhash(falling) == (1 << 64) - 1
    assert dhash(falling.transpose(Image.Transpose.FLIP_LEFT_RIGHT)) == 0
    assert hamming(0b1011, 0b0001) == 2


def test_check_finds_every_problem(tmp_path):
    from PIL import Image

    from loradex.trainer.dataset import check_dataset

    folder = make_dataset(tmp_path / "set", n=4, size=64)
    (folder / "copy.png").write_bytes((folder / "img00.png").read_bytes())           # exact duplicate
    with Image.open(folder / "img01.png") as img:
        img.resize((72, 72)).save(folder / "bigger.png")                              # near duplicate
    Image.new("RGB", (16, 40), (9, 9, 9)).save(folder / "small.png")                   # too small, tall
    (folder / "img03.txt").unlink()                                                    # missing caption
    report = check_dataset(folder, resolution=64)
    assert report.ok and not report.corrupt
    assert report.exact_duplicates == [["copy.png", "img00.png"]]
    assert {"a": "bigger.png", "b": "img01.png"} in [{k: p[k] for k in ("a", "b")} for p in report.near_duplicates]
    assert [s["file"] for s in report.too_small] == ["small.png"]
    assert set(report.missing_captions) == {"bigger.png", "copy.png", "img03.png", "small.png"}
    assert sum(report.buckets.values()) == 7 and "64x64" in report.buckets
    assert any(b != "64x64" for b in report.buckets)  # the 16×40 image goes to a portrait bucket
    assert any("fewer than 30" in w for w in report.warnings)
    assert report.tag_frequency()["sks"] == 3

    first = report.manifest_sha256()
    assert first == check_dataset(folder, resolution=64).manifest_sha256()      # stable
    (folder / "img00.txt").write_text("sks, something else")
    assert check_dataset(folder, resolution=64).manifest_sha256() != first      # captions are in it


def test_buckets_keep_area_and_step():
    from loradex.trainer.dataset import make_buckets, nearest_bucket

    buckets = make_buckets(512)
    assert (512, 512) in buckets and (384, 640) in buckets and (640, 384) in buckets
    assert all(w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512 for w, h in buckets)
    assert nearest_bucket(1000, 1000, buckets) == (512, 512)
    assert nearest_bucket(600, 1000, buckets) == (384, 640)


def test_corrupt_image_is_refused_by_name(tmp_path):
    from loradex.registry.errors import InvalidFile
    from loradex.trainer.dataset import check_dataset
    from loradex.trainer.registration import train_and_register
    from loradex.trainer.train_config import resolve_config

    folder = make_dataset(tmp_path / "set", n=3)
    good = (folder / "img02.png").read_bytes()
    (folder / "broken.png").write_bytes(good[: len(good) // 2])  # truncated
    (folder / "notes.jpg").write_bytes(b"this is not a jpeg")
    report = check_dataset(folder, resolution=32)
    assert [c["file"] for c in report.corrupt] == ["broken.png", "notes.jpg"]
    cfg = resolve_config("lora", overrides=dict(base="tiny-sd1", data=str(folder), resolution=32, steps=1,
                                                output_dir=str(tmp_path / "out")))
    with pytest.raises(InvalidFile, match=r"broken\.png.*notes\.jpg"):
        train_and_register(cfg)

    from loradex.cli.app import app

    res = CliRunner().invoke(app, ["dataset", "check", str(folder), "--resolution", "32", "--json"])
    assert res.exit_code == 1
    assert "broken.png" in res.output and "notes.jpg" in res.output


def test_dataset_check_command_json(tmp_path):
    from loradex.cli.app import app

    folder = make_dataset(tmp_path / "set", n=3)
    res = CliRunner().invoke(app, ["dataset", "check", str(folder), "--resolution", "32", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["ok"] and data["num_images"] == 3 and data["buckets"] == {"32x32": 3}
    assert len(data["manifest_sha256"]) == 64


def test_config_precedence_and_print_config_round_trip(tmp_path):
    from loradex.registry.errors import UsageError
    from loradex.trainer.train_config import config_to_toml, resolve_config

    toml = tmp_path / "run.toml"
    toml.write_text('base = "tiny-sd1"\ndata = "d"\nrank = 8\nlr = 3e-4\n'
                    'sample-prompts = ["a", "b"]\nsample_every = 2\n')
    c = resolve_config("lora", toml_path=toml, overrides={"rank": 16, "steps": None})
    assert (c.rank, c.lr, c.alpha, c.steps) == (16, 3e-4, 16.0, 500)       # flag > file > method default
    assert c.sample_prompts == ["a", "b"] and c.format == "auto"  # kohya for SD, diffusers for Flux/SD3
    assert resolve_config("ti", toml_path=None, overrides={"base": "b", "data": "d", "token": "<t>"}).lr == 5e-3

    printed = tmp_path / "printed.toml"
    printed.write_text(config_to_toml(c))
    assert resolve_config("lora", toml_path=printed) == c

    toml.write_text('base = "x"\ndata = "d"\nrnak = 8\n')
    with pytest.raises(UsageError, match="rnak"):
        resolve_config("lora", toml_path=toml)
    with pytest.raises(UsageError, match="--token"):
        resolve_config("ti", overrides={"base": "b", "data": "d"})

    from loradex.cli.app import app

    res = CliRunner().invoke(app, ["train", "lora", "--config", str(tmp_path / "printed.toml"), "--rank", "2",
                                   "--sample-prompt", "x", "--print-config"])
    assert res.exit_code == 0, res.output
    assert "rank = 2\n" in res.output and 'sample_prompts = ["x"]' in res.output
