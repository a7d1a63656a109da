"""Prompt records in the catalog, PNG text chunks, A1111/ComfyUI import, record schema (issue 6)."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from _evidence_fixtures import minimal_record
from loradex.merge.synthetic_adapters import write_random_kohya_lora
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import SchemaError, UnsupportedFormat
from loradex.registry.catalog import records as R
from loradex.schemas import load_schema, validate


def _png(text: dict[str, str] | None = None, color=(10, 200, 30)) -> bytes:
    info = PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def test_schemas_have_versioned_ids():
    for name in ("prompt-record", "eval-card"):
        schema = load_schema(name)
        assert schema["$id"].endswith(f"/{name}/1.json")


def test_record_schema_accepts_minimal_and_names_path_of_error():
    record = minimal_record(stack=[{"requested": "style@1.0.0", "ref": "style@1.0.0", "sha256": "ef" * 32,
                                    "te_weight": 0.8, "unet_weight": 0.8}])
    assert validate("prompt-record", record) is record
    broken = json.loads(json.dumps(record))
    broken["stack"][0]["unet_weight"] = "strong"
    with pytest.raises(SchemaError) as err:
        validate("prompt-record", broken)
    assert err.value.path == "$.stack[0].unet_weight"
    assert "$.stack[0].unet_weight" in str(err.value)
    del broken["seed"]
    with pytest.raises(SchemaError) as err:
        validate("prompt-record", broken)
    assert err.value.path == "$"  # a missing required key is reported at its parent
    assert "'seed' is a required property" in str(err.value)


def test_png_carries_record_and_a1111_parameters():
    record = minimal_record(stack=[{"requested": "style@production", "ref": "style@1.2.0", "sha256": "ef" * 32,
                                    "autov3": "0123456789ab", "te_weight": 0.5, "unet_weight": 0.8}])
    data = R.png_with_record(Image.new("RGB", (32, 32), (1, 2, 3)), record)
    assert R.record_from_png(data) == record
    params = R.parse_a1111_parameters(R.png_text(data)["parameters"])
    assert params["prompt"] == record["prompt"]
    assert params["negative_prompt"] == "blurry"
    s = params["settings"]
    assert (s["Steps"], s["Seed"], s["CFG scale"], s["Size"], s["Sampler"]) == ("2", "7", "5.0", "32x32", "DDIMScheduler")
    assert s["Model hash"] == "ab" * 5
    assert s["Lora hashes"] == "style_1.2.0: 0123456789ab"


def test_store_get_list_records_by_exact_version(tmp_path):
    catalog = Catalog()
    v1 = add_file(catalog, write_random_kohya_lora(tmp_path / "a.safetensors", seed=1), name="style").version
    v2 = add_file(catalog, write_random_kohya_lora(tmp_path / "b.safetensors", seed=2), name="style").version
    r1 = minimal_record(stack=[{"requested": "style", "ref": v1.ref, "sha256": v1.sha256, "te_weight": 1.0, "unet_weight": 1.0}])
    r2 = minimal_record(stack=[{"requested": "style", "ref": v2.ref, "sha256": v2.sha256, "te_weight": 1.0, "unet_weight": 1.0}])
    png = R.png_with_record(Image.new("RGB", (4, 4)), r1)
    s1 = R.store_record(catalog, r1, png)
    R.store_record(catalog, r2)
    assert s1.versions == (v1.ref,)
    assert catalog.blobs.path_for(s1.image_blob).read_bytes() == png
    assert [r.id for r in R.list_records(catalog, v1.ref)] == [r1["id"]]
    assert [r.id for r in R.list_records(catalog, "style@1.1.0")] == [r2["id"]]
    assert {r.id for r in R.list_records(catalog)} == {r1["id"], r2["id"]}
    assert R.get_record(catalog, r1["id"][:6]).record == r1
    with pytest.raises(SchemaError):
        R.store_record(catalog, minimal_record(seed=-1))


def test_import_a1111_png_resolves_lora_by_short_hash(tmp_path):
    catalog = Catalog()
    version = add_file(catalog, write_random_kohya_lora(tmp_path / "a.safetensors", seed=1), name="wc").version
    text = ("masterpiece, a castle <lora:watercolor_v2:0.7>\nNegative prompt: lowres, bad hands\n"
            f'Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234, Size: 512x768, '
            f'Model hash: 6ce0161689, Model: v1-5-pruned, Lora hashes: "watercolor_v2: {version.autov3[:12]}", '
            'Version: v1.9.4')
    png = tmp_path / "a1111.png"
    png.write_bytes(_png({"parameters": text}))
    rec = R.import_png(catalog, png)
    r = rec.record
    assert r["source"] == "import-a1111"
    assert (r["seed"], r["steps"], r["cfg"], r["width"], r["height"]) == (1234, 25, 6.5, 512, 768)
    assert r["negative_prompt"] == "lowres, bad hands"
    assert r["clean_prompt"] == "masterpiece, a castle"
    assert r["scheduler"] == {"name": "DPM++ 2M", "config": {"Schedule type": "Karras"}}
    assert r["base"] == {"ref": "v1-5-pruned", "family": None, "sha256": "6ce0161689"}
    assert r["stack"] == [{"requested": "watercolor_v2", "ref": version.ref, "sha256": version.sha256,
                           "te_weight": 0.7, "unet_weight": 0.7}]
    assert rec.versions == (version.ref,)
    import hashlib

    assert r["image_sha256"] == hashlib.sha256(b"RGB 8x8\n" + Image.open(png).convert("RGB").tobytes()).hexdigest()


def test_import_comfyui_png(tmp_path):
    graph = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
        "10": {"class_type": "LoraLoader", "inputs": {"lora_name": "Pixel_Art.safetensors", "strength_model": 0.9,
                                                      "strength_clip": 0.6, "model": ["4", 0], "clip": ["4", 1]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "pixel art of a cat", "clip": ["10", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["10", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 20, "cfg": 8, "sampler_name": "euler",
                                                   "scheduler": "normal", "denoise": 1, "model": ["10", 0],
                                                   "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0]}},
    }
    png = tmp_path / "comfy.png"
    png.write_bytes(_png({"prompt": json.dumps(graph), "workflow": json.dumps({"nodes": []})}))
    r = R.import_png(Catalog(), png).record
    assert r["source"] == "import-comfyui"
    assert (r["prompt"], r["negative_prompt"], r["seed"], r["steps"], r["cfg"]) == ("pixel art of a cat", "blurry", 42, 20, 8.0)
    assert (r["width"], r["height"]) == (1024, 1024)
    assert r["base"]["ref"] == "sd_xl_base_1.0.safetensors"
    assert r["scheduler"]["name"] == "euler"
    assert r["stack"] == [{"requested": "pixel_art", "ref": None, "sha256": None, "te_weight": 0.6, "unet_weight": 0.9}]
    assert r["imported"]["extra"]["workflow"] == {"nodes": []}


def test_import_plain_png_refused(tmp_path):
    png = tmp_path / "plain.png"
    png.write_bytes(_png())
    with pytest.raises(UnsupportedFormat):
        R.import_png(Catalog(), png)


def test_generate_reference_images_and_notes_are_stored(tmp_path):
    import hashlib

    from typer.testing import CliRunner

    from loradex.cli.app import app
    from loradex.registry.errors import InvalidFile

    runner = CliRunner()
    catalog = Catalog()
    sketch, photo = tmp_path / "sketch.png", tmp_path / "photo.jpg"
    sketch.write_bytes(_png(color=(200, 10, 10)))
    Image.new("RGB", (16, 12), (30, 40, 250)).save(photo, format="JPEG")
    out = tmp_path / "out.png"
    args = ["generate", "a fox", "--base", "tiny-sd1", "--size", "32x32", "--steps", "2", "-o", str(out),
            "--reference", str(sketch), "--reference", str(photo), "--notes", " pose from the sketch ", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)["record"]
    validate("prompt-record", record)
    want = [{"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "path": str(p)} for p in (sketch, photo)]
    assert record["references"] == want and record["notes"] == "pose from the sketch"
    for ref, path in zip(want, (sketch, photo)):  # each image is a blob, byte for byte
        assert catalog.blobs.path_for(ref["sha256"]).read_bytes() == path.read_bytes()
    assert R.record_from_png(out)["references"] == want  # the PNG carries them too
    assert R.get_record(catalog, record["id"]).record == record

    # gc keeps what a record names; verify is clean
    gc = runner.invoke(app, ["gc", "--json"])
    assert gc.exit_code == 0 and json.loads(gc.stdout)["blobs_removed"] == 0, gc.output
    assert all(catalog.blobs.path_for(r["sha256"]).is_file() for r in want)
    assert runner.invoke(app, ["verify"]).exit_code == 0

    # a file that is not an image: one line naming it, nothing rendered or stored
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    before = {sha for sha, _ in catalog.blobs.iter_blobs()}
    for path, expect in ((bad, "is not a readable image"), (tmp_path / "missing.png", "not found")):
        refused = runner.invoke(app, [*args[:8], "-o", str(tmp_path / "x.png"), "--reference", str(path)])
        assert refused.exit_code == 1 and isinstance(refused.exception, InvalidFile)
        assert str(path) in str(refused.exception) and expect in str(refused.exception)
    assert not (tmp_path / "x.png").exists() and len(R.list_records(catalog)) == 1
    assert {sha for sha, _ in catalog.blobs.iter_blobs()} == before
