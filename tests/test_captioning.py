"""Captioners and caption refinement (trainer/captioning, registry/catalog/dataset_captions.py,
``loradex dataset caption`` / ``dataset captions``): tiny random BLIP / CLIP / ViT-tagger models
built from config objects (trainer/captioning/tiny.py), no downloads. The words are random; the
tests check the flow against the models run directly: captions written, kept, prefixed,
limited, recorded (model sha256 = sha256 of the weights file), versioned, edited, refused."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from loradex.registry.catalog import dataset_captions as DC
from loradex.registry.errors import InvalidFile, NotFound, UsageError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from loradex.trainer.captioning.tiny import save_tiny_blip, save_tiny_clip, save_tiny_tagger

    root = tmp_path_factory.mktemp("caption-models")
    return {"blip": save_tiny_blip(root / "blip"), "clip": save_tiny_clip(root / "clip"),
            "tags": save_tiny_tagger(root / "tagger")}


def shapes(folder: Path, n: int = 4) -> Path:
    from loradex.trainer.train_demo import write_demo_dataset

    return write_demo_dataset(folder, n=n)


@pytest.fixture
def cli(cli_main):
    return cli_main


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def blip_direct(model_dir: Path, images, *, max_new_tokens=40, num_beams=3) -> list[str]:
    """The tiny BLIP run straight through transformers (the known answer for the captioner)."""
    import torch
    from transformers import BlipForConditionalGeneration, BlipProcessor

    model = BlipForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = BlipProcessor.from_pretrained(model_dir)
    with torch.no_grad():
        out = model.generate(**processor(images=images, return_tensors="pt"), max_new_tokens=max_new_tokens,
                             num_beams=num_beams, do_sample=False)
    return [t.strip() for t in processor.batch_decode(out, skip_special_tokens=True)]


def open_rgb(path: Path):
    from PIL import Image

    with Image.open(path) as img:
        return img.convert("RGB")


# --- pure caption operations -----------------------------------------------------------------

def test_caption_text_operations():
    assert DC.limit_words("a red square on grey", 3) == "a red square"
    assert DC.limit_words("long hair, blue eyes, smile", 4, tags=True) == "long hair, blue eyes"
    assert DC.limit_words("long hair, blue eyes, smile", 3, tags=True) == "long hair"
    assert DC.limit_words("one two three four, x", 2, tags=True) == "one two"  # a first tag too long is cut
    assert DC.with_prefix("red square", "shp, ") == "shp, red square"
    assert DC.with_prefix("shp, red square", "shp, ") == "shp, red square"  # not doubled
    assert DC.with_prefix("", "shp, ") == "shp"
    assert DC.remove_tag("solo, Long Hair ,smile, long hair", "long hair") == "solo, smile"
    assert DC.replace_text("a  red square", "red", "crimson") == "a crimson square"
    edits = DC.bulk_edits(replace=["red=crimson"], remove_tags=["smile"], prepend="shp, ")
    assert DC.apply_bulk({"a.png": "red, smile", "b.png": None}, edits) == {"a.png": "shp, crimson", "b.png": "shp"}
    with pytest.raises(UsageError):
        DC.bulk_edits(replace=["no-equals-sign"])
    from loradex.trainer.captioning import printable

    assert printable("a\x1b[31mred\u202e\tsq\nuare") == "a[31mred sq uare"  # a model's bytes, made text


def test_caption_table_round_trip_and_hostile_tables():
    captions = {"b/2.png": "two", "a.png": "one\tsplit", "c.png": None}
    table = DC.format_caption_table(captions)
    assert DC.parse_caption_table(table, set(captions), "t") == {"a.png": "one split", "b/2.png": "two", "c.png": None}
    known = {"a.png", "b.png"}
    assert DC.parse_caption_table("# comment\n\na.png\tnew one\n", known, "t") == {"a.png": "new one"}
    hostile = {
        "a.png\tx\na.png\ty\n": "listed twice",
        "../etc/passwd\tx\n": "not an image of this dataset",
        "c.png\tx\n": "not an image of this dataset",
        "a.png no tab\n": "no TAB",
        "a.png\tbell\x07\n": "control characters",
        "a.png\t" + "w" * (DC.MAX_CAPTION_CHARS + 1) + "\n": "longer than",
    }
    for text, why in hostile.items():
        with pytest.raises(InvalidFile, match=why):
            DC.parse_caption_table(text, known, "t")
    with pytest.raises(InvalidFile, match="not UTF-8"):
        DC.parse_caption_table(b"a.png\t\xff\xfe\n", known, "t")
    with pytest.raises(InvalidFile, match="bytes"):
        DC.parse_caption_table(b"#" * (DC.MAX_TABLE_BYTES + 1), known, "t")


def test_rank_terms_is_cosine_top_k():
    import torch

    from loradex.trainer.captioning.interrogate import rank_terms, term_list

    image = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    text = torch.tensor([[0.0, 5.0], [1.0, 1.0], [3.0, 0.1], [-1.0, 0.0]])
    assert rank_terms(image, text, 2) == [[2, 1], [0, 1]]
    assert len(term_list("mediums")) >= 20 and "a watercolor painting" in term_list("mediums")


# --- captioners ------------------------------------------------------------------------------

def test_folder_captions_written_kept_prefixed_and_recorded(models, tmp_path, cli):
    from loradex.registry.catalog.dataset_captions import CAPTION_RECORDS_FILE as RECORDS_FILE

    data = shapes(tmp_path / "data")
    kept = (data / "img01.txt").read_bytes()
    for name in ("img00", "img02", "img03"):
        (data / f"{name}.txt").unlink()

    # an existing caption is never replaced unless asked
    refused = cli("dataset", "caption", data, "--captioner", "blip", "--model", models["blip"])
    assert refused.exit_code == 2 and "1 of 4 image(s) already have captions" in refused.output
    assert not (data / "img00.txt").exists()

    res = cli("dataset", "caption", data, "--captioner", "blip", "--model", models["blip"], "--missing-only",
              "--prefix", "shp, ", "--max-words", "3", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["captioned"] == 3 and out["kept"] == 1
    assert (data / "img01.txt").read_bytes() == kept
    images = [open_rgb(data / f"img{i:02d}.png") for i in (0, 2, 3)]
    expected = [DC.with_prefix(DC.limit_words(t, 3), "shp, ") for t in blip_direct(models["blip"], images)]
    assert [(data / f"img{i:02d}.txt").read_text() for i in (0, 2, 3)] == expected
    assert all(e.startswith("shp, ") and len(e.split()) <= 4 for e in expected)

    records = json.loads((data / RECORDS_FILE).read_text())["images"]
    assert sorted(records) == ["img00.png", "img02.png", "img03.png"]
    assert [records[f"img{i:02d}.png"]["caption"] for i in (0, 2, 3)] == expected  # the text written, to compare
    assert records["img00.png"]["caption_file"] == "img00.txt"
    record = records["img00.png"]["source"]
    assert record["captioner"] == "blip" and record["model"] == str(models["blip"])
    assert record["model_sha256"] == sha256_file(models["blip"] / "model.safetensors")
    assert record["settings"] == {"prefix": "shp, ", "max_words": 3, "max_new_tokens": 40, "num_beams": 3}

    (data / RECORDS_FILE).write_text('{"schema": "loradex.caption-records/2", "images": []}')  # damaged
    before = {p.name: p.read_bytes() for p in data.glob("*.txt")}
    res = cli("dataset", "caption", data, "--captioner", "blip", "--model", models["blip"], "--overwrite")
    assert res.exit_code == 1 and RECORDS_FILE in res.output
    assert {p.name: p.read_bytes() for p in data.glob("*.txt")} == before  # nothing written
    (data / RECORDS_FILE).write_text(json.dumps({"schema": "loradex.caption-records/2", "images": records}))
    res = cli("dataset", "caption", data, "--captioner", "blip", "--model", models["blip"], "--overwrite",
              "--max-words", "2")
    assert res.exit_code == 0, res.output
    assert json.loads((data / RECORDS_FILE).read_text())["images"]["img01.png"]["source"]["settings"]["max_words"] == 2
    assert (data / "img01.txt").read_text() == DC.limit_words(blip_direct(models["blip"], [open_rgb(data / "img01.png")])[0], 2)

    # `dataset add` keeps each captioner record, and records a caption file edited since as a hand edit
    records = json.loads((data / RECORDS_FILE).read_text())["images"]
    (data / "img02.txt").write_text("shp, fixed  by hand\n")
    (data / "img03.txt").write_text(records["img03.png"]["caption"] + "\n")  # whitespace only: the same caption
    (data / "extra.png").write_bytes((data / "img00.png").read_bytes())       # no record: a plain caption file
    (data / "extra.txt").write_text("plain")
    res = cli("dataset", "add", data, "--name", "captioned", "--json")
    assert res.exit_code == 0, res.output
    from loradex.registry.catalog.datasets import get_dataset_version
    from loradex.registry.catalog.store import Catalog

    added = {i.file: i for i in get_dataset_version(Catalog(), json.loads(res.stdout)["ref"]).images}
    for file in ("img00.png", "img01.png", "img03.png"):
        assert added[file].caption == records[file]["caption"] and added[file].caption_source == records[file]["source"]
    assert added["img02.png"].caption == "shp, fixed by hand"
    assert added["img02.png"].caption_source == {"kind": "manual", "via": "caption file edited after captioning",
                                                 "file": "img02.txt", "refined_from": records["img02.png"]["source"]}
    assert added["extra.png"].caption_source == {"kind": "sidecar", "file": "extra.txt"}


HOSTILE_RECORDS = [
    (lambda r: r["images"]["img00.png"]["source"].update(model_sha256="../../etc"), "model_sha256"),
    (lambda r: r["images"]["img00.png"]["source"].update(kind="manual"), "kind"),
    (lambda r: r["images"]["img00.png"].update(caption=["not", "text"]), "caption"),
    (lambda r: r["images"]["img00.png"]["source"].update(extra="x"), "Additional properties"),
    (lambda r: r["images"]["img00.png"]["source"]["settings"].update(nested={"a": 1}), "settings"),
    (lambda r: r.update(schema="loradex.caption-records/1"), "earlier loradex"),
]


def test_hostile_caption_records_stop_dataset_add(tmp_path):
    """The records file is outside data: a value of the wrong shape stops `dataset add` before it
    stores anything, naming the file."""
    import copy

    from loradex.registry.catalog.dataset_captions import CAPTION_RECORDS_FILE, read_caption_records
    from loradex.registry.catalog.datasets import add_dataset_version
    from loradex.registry.catalog.store import Catalog
    from loradex.registry.errors import UntrustedData

    data = shapes(tmp_path / "data", n=1)
    source = {"kind": "captioner", "captioner": "blip", "model": "m", "model_sha256": "ab" * 32,
              "settings": {"prefix": "", "max_words": None}, "libraries": {"torch": "2.13"}}
    good = {"schema": "loradex.caption-records/2",
            "images": {"img00.png": {"caption_file": "img00.txt", "caption": (data / "img00.txt").read_text(),
                                     "source": source}}}
    (data / CAPTION_RECORDS_FILE).write_text(json.dumps(good))
    assert read_caption_records(data)["img00.png"]["source"] == source
    for change, why in HOSTILE_RECORDS:
        bad = copy.deepcopy(good)
        change(bad)
        (data / CAPTION_RECORDS_FILE).write_text(json.dumps(bad))
        with pytest.raises(UntrustedData, match=why) as caught:
            read_caption_records(data)
        assert CAPTION_RECORDS_FILE in str(caught.value)
    catalog = Catalog(tmp_path / "home")
    with pytest.raises(UntrustedData, match="earlier loradex"):
        add_dataset_version(catalog, data, name="shapes", resolution=32)
    assert list(catalog.blobs.iter_entries()) == []  # refused before an image was stored


def test_tagger_keeps_tags_over_threshold_most_confident_first(models, tmp_path):
    import torch
    from transformers import ViTForImageClassification, ViTImageProcessorPil

    from loradex.trainer.captioning import CaptionSettings, load_captioner
    from loradex.trainer.captioning.tiny import TINY_TAGS

    images = [open_rgb(p) for p in sorted(shapes(tmp_path / "data", n=2).glob("*.png"))]
    model = ViTForImageClassification.from_pretrained(models["tags"]).eval()
    with torch.no_grad():
        probs = torch.sigmoid(model(**ViTImageProcessorPil.from_pretrained(models["tags"])(images=images,
                                                                                          return_tensors="pt")).logits)
    threshold = float(probs.median())
    tagger = load_captioner("tags", str(models["tags"]), settings=CaptionSettings(threshold=threshold))
    for row, caption in zip(probs.tolist(), tagger.caption(images)):
        ranked = sorted((p, i) for i, p in enumerate(row) if p >= threshold and TINY_TAGS[i] not in ("general", "sensitive"))
        assert caption == ", ".join(TINY_TAGS[i].replace("_", " ") for _, i in sorted(ranked, key=lambda t: (-t[0], t[1])))
    assert "general" not in " ".join(tagger.caption(images))  # ratings (selected_tags.csv category 9) left out
    assert tagger.record()["settings"]["threshold"] == threshold


def test_interrogate_appends_clip_ranked_terms(models, tmp_path):
    import torch
    from transformers import CLIPModel, CLIPProcessor

    from loradex.trainer.captioning import CaptionSettings, load_captioner
    from loradex.trainer.captioning.interrogate import term_list

    images = [open_rgb(p) for p in sorted(shapes(tmp_path / "data", n=2).glob("*.png"))]
    settings = CaptionSettings(max_new_tokens=4, num_beams=1, top_flavours=2)
    captioner = load_captioner("interrogate", str(models["blip"]), clip_model=str(models["clip"]), settings=settings)
    captions = captioner.caption(images)
    clip = CLIPModel.from_pretrained(models["clip"]).eval()
    processor = CLIPProcessor.from_pretrained(models["clip"])
    mediums = term_list("mediums")
    with torch.no_grad():
        img = clip.get_image_features(pixel_values=processor.image_processor(images=images, return_tensors="pt")["pixel_values"])
        txt = clip.get_text_features(**processor.tokenizer(mediums, padding=True, return_tensors="pt"))
    img, txt = (getattr(t, "pooler_output", t) for t in (img, txt))
    best = (torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).T).argmax(dim=-1)
    sentences = blip_direct(models["blip"], images, max_new_tokens=4, num_beams=1)
    for caption, sentence, medium in zip(captions, sentences, best.tolist()):
        parts = caption.split(", ")
        assert parts[0] == sentence and parts[1] == mediums[medium] and len(parts) == 6
    record = captioner.record()
    assert record["models"]["clip"]["model_sha256"] == sha256_file(models["clip"] / "model.safetensors")


def test_blip2_caption_is_the_models_generation(tmp_path):
    import torch
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    from loradex.trainer.captioning import CaptionSettings, load_captioner
    from loradex.trainer.captioning.tiny import save_tiny_blip2

    folder = save_tiny_blip2(tmp_path / "blip2")
    images = [open_rgb(p) for p in sorted(shapes(tmp_path / "data", n=2).glob("*.png"))]
    captions = load_captioner("blip", str(folder), settings=CaptionSettings(max_new_tokens=5, num_beams=2)).caption(images)
    model = Blip2ForConditionalGeneration.from_pretrained(folder).eval()
    processor = Blip2Processor.from_pretrained(folder)
    with torch.no_grad():
        out = model.generate(**processor(images=images, return_tensors="pt"), max_new_tokens=5, num_beams=2,
                             do_sample=False)
    assert captions == [DC.normal_caption(t) for t in processor.batch_decode(out, skip_special_tokens=True)]


def test_florence2_caption_is_the_task_answer(tmp_path):
    import torch
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    from loradex.trainer.captioning import CaptionSettings, load_captioner
    from loradex.trainer.captioning.tiny import save_tiny_florence2

    folder = save_tiny_florence2(tmp_path / "florence2")
    images = [open_rgb(p) for p in sorted(shapes(tmp_path / "data", n=2).glob("*.png"))]
    settings = CaptionSettings(task="<DETAILED_CAPTION>", max_new_tokens=6, num_beams=2, prefix="shp, ")
    captions = load_captioner("florence2", str(folder), settings=settings).caption(images)
    model = Florence2ForConditionalGeneration.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    for image, caption in zip(images, captions):  # one image per call: no padding in the answer
        with torch.no_grad():
            out = model.generate(**processor(text=["<DETAILED_CAPTION>"], images=[image], return_tensors="pt"),
                                 max_new_tokens=6, num_beams=2, do_sample=False)
        text = processor.batch_decode(out, skip_special_tokens=False)[0]
        answer = processor.post_process_generation(text, task="<DETAILED_CAPTION>", image_size=image.size)
        assert caption == DC.with_prefix(answer["<DETAILED_CAPTION>"], "shp, ")
    with pytest.raises(UsageError, match="not a caption task"):
        load_captioner("florence2", str(folder), settings=CaptionSettings(task="<OD>"))
    with pytest.raises(UsageError, match="not BLIP"):
        load_captioner("blip", str(folder))


def test_missing_model_is_one_line_naming_it(tmp_path, cli):
    from loradex.trainer.captioning import load_captioner

    with pytest.raises(NotFound, match="loradex-tests/not-a-cached-model.*downloads nothing"):
        load_captioner("blip", "loradex-tests/not-a-cached-model")
    with pytest.raises(InvalidFile, match="no weight files"):
        load_captioner("blip", str(tmp_path))
    res = cli("dataset", "caption", tmp_path, "--captioner", "nope", "--model", tmp_path)
    assert res.exit_code == 2 and "unknown captioner 'nope'" in res.output


# --- dataset versions ------------------------------------------------------------------------

@pytest.fixture
def dataset(tmp_path):
    from loradex.registry.catalog.datasets import add_dataset_version
    from loradex.registry.catalog.store import Catalog

    catalog = Catalog()
    data = shapes(tmp_path / "data")
    (data / "img02.txt").unlink()
    version = add_dataset_version(catalog, data, name="shapes", resolution=32)
    return catalog, version


def test_dataset_caption_saves_a_new_version_with_records(models, dataset, cli):
    from loradex.registry.catalog.datasets import get_dataset_version

    catalog, v1 = dataset
    res = cli("dataset", "caption", v1.ref, "--captioner", "tags", "--model", models["tags"], "--missing-only",
              "--prefix", "shp, ", "--threshold", "0.4", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["version"] == "dataset:shapes@1.1.0" and out["captioned"] == 1 and out["kept"] == 3
    v2 = get_dataset_version(catalog, out["version"])
    before, after = {i.file: i for i in v1.images}, {i.file: i for i in v2.images}
    assert after["img02.png"].caption == out["captions"]["img02.png"] and after["img02.png"].caption.startswith("shp")
    source = after["img02.png"].caption_source
    assert source["kind"] == "captioner" and source["captioner"] == "tags"
    assert source["model_sha256"] == sha256_file(models["tags"] / "model.safetensors")
    assert source["settings"] == {"prefix": "shp, ", "max_words": None, "threshold": 0.4}
    for file in ("img00.png", "img01.png", "img03.png"):  # kept: same caption, same source, same image
        assert after[file].caption == before[file].caption and after[file].caption_source == before[file].caption_source
    assert {i.sha256 for i in v1.images} == {i.sha256 for i in v2.images}
    assert get_dataset_version(catalog, v1.ref).manifest == v1.manifest  # versions are immutable


def test_recaptioning_to_the_same_texts_and_records_saves_nothing(models, dataset, cli, tmp_path):
    """--overwrite giving what the version already has (texts AND records) is no new version;
    the same texts from another model (new provenance) are one."""
    import shutil

    from loradex.registry.catalog.datasets import dataset_versions, diff_datasets, get_dataset_version

    catalog, v1 = dataset
    args = ("--captioner", "tags", "--model", models["tags"], "--overwrite", "--threshold", "0.4", "--json")
    first = json.loads(cli("dataset", "caption", v1.ref, *args).stdout)
    assert first["version"] == "dataset:shapes@1.1.0" and first["captioned"] == 4 and not first["unchanged"]
    again = cli("dataset", "caption", first["version"], *args[:-1])  # the human answer
    assert again.exit_code == 0 and "nothing changed" in again.output and "saved as" not in again.output
    assert [v.version for v in dataset_versions(catalog, "shapes")] == ["1.0.0", "1.1.0"]

    copy = shutil.copytree(models["tags"], tmp_path / "same-weights-elsewhere")  # same texts, another record
    moved = json.loads(cli("dataset", "caption", "dataset:shapes", *args[:3], copy, *args[4:]).stdout)
    assert moved["version"] == "dataset:shapes@1.2.0" and moved["captions"] == first["captions"]
    v3 = get_dataset_version(catalog, moved["version"])
    assert {i.caption_source["model"] for i in v3.images} == {str(copy)}
    assert diff_datasets(catalog, first["version"], v3.ref).recaptioned == []  # provenance changed, text did not


def test_edit_in_editor_saves_a_new_version(dataset, tmp_path, cli, monkeypatch):
    from loradex.registry.catalog.datasets import dataset_versions, get_dataset_version

    catalog, v1 = dataset
    script = tmp_path / "editor.py"
    script.write_text("import sys, pathlib\n"
                      "p = pathlib.Path(sys.argv[1])\n"
                      "lines = p.read_text().splitlines()\n"
                      "out = [l.split('\\t')[0] + '\\tshp, edited by hand' if l.startswith('img00.png') else l for l in lines]\n"
                      "out = [l for l in out if not l.startswith('img01.png')]\n"  # left out: kept
                      "p.write_text('\\n'.join(out) + '\\n')\n")
    monkeypatch.setenv("EDITOR", f"{sys.executable} {script}")
    monkeypatch.delenv("VISUAL", raising=False)
    res = cli("dataset", "captions", "dataset:shapes", "--edit", "--json")
    assert res.exit_code == 0, res.output
    saved = get_dataset_version(catalog, json.loads(res.stdout)["saved"])
    captions = {i.file: i for i in saved.images}
    assert captions["img00.png"].caption == "shp, edited by hand"
    assert captions["img00.png"].caption_source["kind"] == "manual"
    assert captions["img00.png"].caption_source["via"] == "editor"
    assert captions["img00.png"].caption_source["refined_from"]["kind"] == "sidecar"
    assert captions["img01.png"].caption == {i.file: i for i in v1.images}["img01.png"].caption

    listed = cli("dataset", "captions", saved.ref, "--json")
    assert {r["file"]: r["caption"] for r in json.loads(listed.stdout)["captions"]}["img00.png"] == "shp, edited by hand"

    # hostile tables come back refused, nothing saved
    count = len(dataset_versions(catalog, "shapes"))
    for body in ("img00.png\\tx\\nimg00.png\\ty\\n", "../../x.png\\tx\\n", "img00.png without a tab\\n"):
        script.write_text(f"import sys, pathlib\npathlib.Path(sys.argv[1]).write_text('{body}')\n")
        res = cli("dataset", "captions", "dataset:shapes", "--edit")
        assert res.exit_code == 1 and "edited caption table" in res.output, res.output
    assert len(dataset_versions(catalog, "shapes")) == count

    script.write_text("pass\n")  # closed without a change
    res = cli("dataset", "captions", "dataset:shapes", "--edit")
    assert res.exit_code == 0 and "nothing saved" in res.output
    assert len(dataset_versions(catalog, "shapes")) == count


def test_bulk_operations_save_a_new_version(dataset, cli):
    from loradex.registry.catalog.datasets import get_dataset_version

    catalog, v1 = dataset
    res = cli("dataset", "captions", v1.ref, "--replace", "shp=shape", "--remove-tag", "red square",
              "--prepend", "trg, ", "--json")
    assert res.exit_code == 0, res.output
    saved = get_dataset_version(catalog, json.loads(res.stdout)["saved"])
    expected = {i.file: DC.with_prefix(DC.remove_tag(DC.replace_text(i.caption or "", "shp", "shape"), "red square"),
                                       "trg, ") for i in v1.images}
    assert {i.file: i.caption for i in saved.images} == expected
    assert expected["img00.png"] == "trg, shape" and expected["img02.png"] == "trg"
    assert saved.images[0].caption_source["via"] == "replace 'shp' with 'shape'; remove tag 'red square'; prepend 'trg, '"
    again = cli("dataset", "captions", saved.ref, "--prepend", "trg, ")
    assert again.exit_code == 0 and "nothing saved" in again.output
    assert cli("dataset", "captions", saved.ref, "--edit", "--prepend", "x").exit_code == 2


# --- the web captions page -------------------------------------------------------------------

def test_web_captions_page_saves_a_new_version(dataset):
    sys.path.insert(0, str(Path(__file__).parent))
    from _web_fixtures import csrf_of, signed_in_client, web_app

    from loradex.registry.catalog.datasets import dataset_versions, get_dataset_version
    from loradex.registry.server.tokens import create_token

    catalog, v1 = dataset
    app = web_app(catalog)
    url = "/ui/datasets/shapes/1.0.0/captions"
    ns_writer = signed_in_client(app, create_token(catalog, "write", namespace="team", name="ns-writer").secret)
    reader = signed_in_client(app, create_token(catalog, "read", name="reader").secret)
    writer = signed_in_client(app, create_token(catalog, "write", name="writer").secret)

    assert 'href="/ui/datasets/shapes/1.0.0/captions"' in writer.get("/ui/datasets/shapes/1.0.0").text
    page = writer.get(url)
    assert page.status_code == 200 and 'name="caption-0"' in page.text and "shp, red square" in page.text
    assert 'name="caption-0"' not in reader.get(url).text  # a read token sees the captions, no form
    csrf = csrf_of(page.text)
    form = {"csrf": csrf, "page": "1", "caption-0": "shp, a <b>red</b> square", "caption-2": "shp, blue square",
            "message": "fixed two captions"}
    for client, fields, status in ((ns_writer, {**form, "csrf": csrf_of(ns_writer.get(url).text)}, 403),
                                   (writer, {**form, "csrf": "forged"}, 403),
                                   (writer, {**form, "caption-99": "x"}, 400)):
        assert client.post(url, data=fields, follow_redirects=False).status_code == status
    assert len(dataset_versions(catalog, "shapes")) == 1  # nothing saved by the refused posts

    answer = writer.post(url, data=form, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/datasets/shapes/1.1.0/captions")
    saved = get_dataset_version(catalog, "dataset:shapes@1.1.0")
    captions = {i.file: i for i in saved.images}
    assert captions["img00.png"].caption == "shp, a <b>red</b> square" and saved.message == "fixed two captions"
    assert captions["img02.png"].caption_source == {"kind": "manual", "via": "web", "by": "writer"}
    assert captions["img01.png"].caption == {i.file: i for i in v1.images}["img01.png"].caption
    shown = writer.get(answer.headers["location"]).text
    assert "shp, a &lt;b&gt;red&lt;/b&gt; square" in shown and "<b>red</b>" not in shown  # escaped
    # the old version's form is stale now: refused, nothing saved
    assert writer.post(url, data={**form, "caption-1": "x"}).status_code == 409
    assert len(dataset_versions(catalog, "shapes")) == 2
