"""generate → record → render (bit-identical), eval cards, galleries, gated promotion (issues 4 and 6)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from loradex.cli.app import app
from loradex.merge.synthetic_adapters import TINY_SD1_MODULES, random_kohya_state_dict
from loradex.registry.catalog import records as R
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import SchemaError
from loradex.schemas import validate

runner = CliRunner()
TINY = ["--base", "tiny-sd1", "--size", "32x32", "--steps", "2"]
# the tiny UNet has two attention blocks in up_blocks.0 (TINY_SD1_MODULES lists three)
MODULES = {k: v for k, v in TINY_SD1_MODULES.items() if "attentions_2" not in k}


def cli(*args, ok=True):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=True)
    if ok and result.exit_code != 0:
        raise AssertionError(f"loradex {' '.join(map(str, args))} failed: {result.output} {result.exception!r}")
    return result


def cli_json(*args):
    return json.loads(cli(*args, "--json").stdout)


def write_lora(path, seed, scale=0.1):
    from safetensors.torch import save_file

    save_file(random_kohya_state_dict(MODULES, rank=4, alpha=4.0, seed=seed, scale=scale), str(path),
              metadata={"ss_base_model_version": "sd_v1", "ss_network_module": "networks.lora",
                        "ss_network_dim": "4", "ss_network_alpha": "4.0"})
    return path


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture
def two_loras(tmp_path):
    catalog = Catalog()
    style = add_file(catalog, write_lora(tmp_path / "style.safetensors", 1), name="style").version
    char = add_file(catalog, write_lora(tmp_path / "char.safetensors", 2), name="char").version
    return catalog, style, char


def test_generate_two_stacked_refs_then_render_is_bit_identical(tmp_path, two_loras):
    catalog, style, char = two_loras
    out = tmp_path / "out.png"
    result = cli_json("generate", "a cat, <lora:style@1.0.0:0.8> <lora:char:0.3:0.6>", *TINY, "--seed", 3,
                      "--negative", "blurry", "-o", out)
    record = result["record"]
    validate("prompt-record", record)
    assert record["clean_prompt"] == "a cat"
    assert [(e["requested"], e["ref"], e["sha256"], e["te_weight"], e["unet_weight"]) for e in record["stack"]] == [
        ("style@1.0.0", "style@1.0.0", style.sha256, 0.8, 0.8), ("char@latest", "char@1.0.0", char.sha256, 0.3, 0.6)]
    assert record["base"]["ref"] == "tiny-sd1" and len(record["base"]["sha256"]) == 64
    assert record["libraries"]["torch"] and record["device"] == "cpu" and record["dtype"] == "float32"
    assert record["scheduler"]["config"]["class"] == "DDIMScheduler"
    # the PNG carries the record (our JSON + A1111 parameters) and the pixels it hashes
    assert R.record_from_png(out) == record
    assert "Seed: 3" in R.png_text(out.read_bytes())["parameters"]
    assert R.pixel_sha256(Image.open(out)) == record["image_sha256"]
    assert sorted(result["versions"]) == ["char@1.0.0", "style@1.0.0"]
    assert [r["id"] for r in cli_json("records", "list", "style@1.0.0")] == [record["id"]]
    assert cli_json("records", "show", record["id"][:8])["record"] == record
    assert cli_json("records", "import", out)["id"] == record["id"]  # already known: same record

    again = tmp_path / "again.png"
    check = cli_json("render", record["id"], "-o", again, "--check")
    assert check["identical"] is True and check["max_abs_diff"] == 0 and check["differences"] == {}
    assert np.array_equal(pixels(again), pixels(out))

    # a record whose stack says another weight re-renders differently: --check says by how much
    changed = {**record, "id": R.new_record_id(),
               "stack": [{**record["stack"][0], "unet_weight": 3.0}, record["stack"][1]]}
    R.store_record(catalog, changed, out.read_bytes())
    differs = cli("render", changed["id"], "--check", "--json", ok=False)
    assert differs.exit_code == 1
    report = json.loads(differs.stdout)
    assert report["identical"] is False and report["max_abs_diff"] > 0


def test_generate_refuses_unknown_ref_at_its_column(two_loras, tmp_path):
    bad = cli("generate", "a cat <lora:ghost@2.0.0:1>", *TINY, "-o", tmp_path / "x.png", ok=False)
    assert bad.exit_code == 1 and "column 13" in str(bad.exception)
    assert not (tmp_path / "x.png").exists()


def _suite(tmp_path, *prompts):
    path = tmp_path / "suite.txt"
    path.write_text("# suite\n" + "\n".join(prompts) + "\n")
    return path


def test_eval_card_has_every_metric_computed_and_memorization_direction(tmp_path):
    from loradex.trainer.evaluate import EvalOptions, evaluate
    from loradex.trainer.generate import GenerateSettings, Generator

    catalog = Catalog()
    strong = add_file(catalog, write_lora(tmp_path / "strong.safetensors", 5, scale=0.6), name="strong").version
    gen = Generator(catalog, "tiny-sd1")
    # Stand-in for a fully overfit adapter: its "training set" is exactly what it renders for two
    # of the suite's samples. (Really training one is the trainer's job and too slow for this test.)
    train = tmp_path / "train"
    train.mkdir()
    for i, prompt in enumerate(["a red fox", "an old house"]):
        img = gen.generate(f"{prompt} <lora:{strong.ref}:3.0>", GenerateSettings(seed=i, steps=2, width=32,
                                                                                  height=32), store=False).image
        img.save(train / f"{i}.png")
    refs = tmp_path / "refs"
    refs.mkdir()
    Image.open(train / "0.png").save(refs / "ref.png")
    options = EvalOptions(base="tiny-sd1", seeds=[0, 1], steps=2, width=32, height=32, weight=3.0,
                          references=str(refs), train_dir=str(train), embedder="tiny-clip",
                          thresholds={"clip_t": {"min": -1.0}})
    card = evaluate(catalog, "strong", _suite(tmp_path, "a red fox", "an old house"), options, generator=gen)
    c = card.card
    validate("eval-card", c)
    assert set(c["metrics"]) == {"clip_t", "clip_t_base", "style_consistency", "style_reference_similarity",
                                 "subject_consistency", "generalization_variance", "memorization",
                                 "memorization_base", "memorization_pixels", "memorization_pixels_base",
                                 "diversity"}
    for name, metric in c["metrics"].items():
        assert metric["status"] == "computed" and isinstance(metric["value"], float), name
        assert metric["definition"] and ("tiny-clip" in metric["model"]
                                         or name.startswith("memorization_pixels") and "Pearson" in metric["model"])
    mem, mem_base = c["metrics"]["memorization"], c["metrics"]["memorization_base"]
    assert mem["value"] > mem_base["value"]
    # samples 0 (fox, seed 0) and 3 (house, seed 1) are the training images themselves
    assert mem["details"]["per_sample_max"][0] == pytest.approx(1.0, abs=1e-5)
    assert mem["details"]["per_sample_max"][3] == pytest.approx(1.0, abs=1e-5)
    assert {0, 3} <= set(mem["details"]["near_duplicates"])
    assert c["failure_checks"]["copyright_portrait"]["status"] == "fail"
    assert c["passed"] is False
    assert len(c["samples"]) == 4 and {s["seed"] for s in c["samples"]} == {0, 1}
    sample_ids = {s["with_adapter"] for s in c["samples"]} | {s["without_adapter"] for s in c["samples"]}
    assert {r.id for r in R.list_records(catalog)} >= sample_ids
    assert {r.id for r in R.list_records(catalog, strong.ref)} == {s["with_adapter"] for s in c["samples"]}
    assert c["technical_note"]["rank"] == 4 and c["version"]["ref"] == "strong@1.0.0"
    # kohya keys name no module types; the probe derives them from the key names (…_attn1_to_q → to_q)
    assert c["technical_note"]["format"] == "kohya"
    assert c["technical_note"]["target_modules"] == ["k_proj", "out_proj", "q_proj", "to_k", "to_out_0", "to_q",
                                                     "to_v", "v_proj"]
    assert set(c["failure_checks"]) == {"prompt_drift", "style_mismatch", "artifacts", "copyright_portrait",
                                        "review_failure"}
    assert c["failure_checks"]["review_failure"]["status"] == "not-checked"
    assert c["passed"] == (not c["reasons"])
    assert R.latest_card(catalog, "strong").id == card.id
    md = R.card_markdown(c)
    assert "| memorization |" in md and "strong@1.0.0" in md

    # a hand-broken card is rejected with the path of the error, by validate and by store_card
    broken = json.loads(json.dumps(c))
    broken["metrics"]["clip_t"]["value"] = "high"
    with pytest.raises(SchemaError) as err:
        validate("eval-card", broken)
    assert err.value.path == "$.metrics.clip_t.value"
    broken = json.loads(json.dumps(c))
    broken["failure_checks"]["artifacts"]["status"] = "maybe"
    with pytest.raises(SchemaError) as err:
        R.store_card(catalog, broken)
    assert err.value.path == "$.failure_checks.artifacts.status"


def test_gallery_grid_size_labels_and_records(tmp_path, two_loras):
    from loradex.trainer.gallery import LABEL_PAD, grid_geometry

    catalog, style, char = two_loras
    out = tmp_path / "sheet.png"
    layout = cli_json("gallery", "style@1.0.0", "char@1.0.0", "--prompts", _suite(tmp_path, "a cat", "a dog"),
                      *TINY, "--seeds", 2, "-o", out)
    sheet = Image.open(out)
    side, header, label_w = layout["cell_size"], layout["header_height"], layout["row_label_width"]
    assert side == 128 and header > 2 * LABEL_PAD
    assert sheet.size == grid_geometry(4, 2, (side, side), label_w, header) == (label_w + 2 * 132 + 4, header + 4 * 132 + 4)
    assert layout["columns"] == ["style@1.0.0", "char@1.0.0"]
    assert layout["rows"] == ["a cat · seed 0", "a cat · seed 1", "a dog · seed 0", "a dog · seed 1"]
    assert json.loads(sheet.text["loradex-gallery"])["records"] == layout["records"]
    arr = np.asarray(sheet.convert("RGB"))
    # labels are drawn: dark pixels in the header and in the row-label column
    assert (arr[:header, label_w:] < 100).any() and (arr[header:, :label_w] < 100).any()
    # each cell is its record's image, upscaled
    for r, row in enumerate(layout["records"]):
        for c, rid in enumerate(row):
            rec = R.get_record(catalog, rid)
            assert rec.record["stack"][0]["ref"] == layout["columns"][c]
            img = Image.open(catalog.blobs.path_for(rec.image_blob)).convert("RGB").resize((side, side), Image.Resampling.NEAREST)
            x, y = label_w + LABEL_PAD + c * (side + LABEL_PAD), header + r * (side + LABEL_PAD)
            assert np.array_equal(arr[y:y + side, x:x + side], np.asarray(img))
    # one version's stored records: rows = prompts, columns = seeds
    single = cli_json("gallery", "style@1.0.0", "-o", tmp_path / "one.png")
    assert single["rows"] == ["a cat", "a dog"] and single["columns"] == ["seed 0", "seed 1"]


def test_promotion_gate_refuses_failing_card_and_records_force(tmp_path, two_loras):
    from loradex.trainer.evaluate import EvalOptions, evaluate
    from loradex.trainer.generate import Generator

    catalog, style, _ = two_loras
    v2 = add_file(catalog, write_lora(tmp_path / "style2.safetensors", 3), name="style").version
    cli("alias", "policy", "style", "production", "--require", "eval.pass", "--min", "clip_t=-1")
    missing = cli("alias", "set", "style@1.0.0", "production", ok=False)
    assert missing.exit_code == 1 and "no evaluation card" in str(missing.exception)

    gen = Generator(catalog, "tiny-sd1")
    suite = _suite(tmp_path, "a cat")
    base = dict(base="tiny-sd1", seeds=[0], steps=2, width=32, height=32, embedder="tiny-clip",
                drift_tolerance=10.0)
    failing = evaluate(catalog, style.ref, suite, EvalOptions(**base, thresholds={"clip_t": {"min": 2.0}}),
                       generator=gen)
    assert failing.passed is False and any("clip_t" in r for r in failing.card["reasons"])
    refused = cli("alias", "set", "style@1.0.0", "production", "--reason", "ship it", ok=False)
    assert refused.exit_code == 1 and "failed" in str(refused.exception)
    cli("alias", "set", "style@1.0.0", "production", "--reason", "ship it", "--force")
    assert cli_json("show", "style@production")["version"] == "1.0.0"

    passing = evaluate(catalog, v2.ref, suite, EvalOptions(**base), generator=gen)
    assert passing.passed is True, passing.card["reasons"]
    cli("alias", "set", "style@1.1.0", "production", "--reason", "better")
    cli("alias", "set", "style@1.0.0", "staging")  # no policy on staging: not gated
    history = cli_json("alias", "history", "style", "production")
    # both refusals are in the history (the alias did not move), then the forced move, then the pass
    assert [e["action"] for e in history] == ["refused", "refused", "set", "set"]
    assert history[0]["from"] is None and history[0]["to"] == "1.0.0"
    assert "[gate refused:" in history[0]["reason"] and "no evaluation card" in history[0]["reason"]
    assert history[1]["reason"].startswith("ship it [gate refused:") and "failed" in history[1]["reason"]
    forced, passed = history[2], history[3]
    assert forced["from"] is None and forced["to"] == "1.0.0"
    assert forced["reason"].startswith("ship it [gate overridden with --force:") and "failed" in forced["reason"]
    assert passed["from"] == "1.0.0" and passed["to"] == "1.1.0"
    assert f"[gate passed: eval card #{passing.id}]" in passed["reason"]
    # a refused attempt is not a move: rollback goes back past it to the forced 1.0.0
    cli("rollback", "style")
    assert cli_json("show", "style@production")["version"] == "1.0.0"
    assert cli_json("card", "style@1.1.0")["passed"] is True
    assert "**Overall: PASS**" in cli("card", "style@1.1.0", "--markdown").stdout
