"""Datasets as versioned catalog objects (issue 21): add/show/versions/diff/export round trip,
images stored once, gc and rm, hostile names, training from ``dataset:NAME@X.Y.Z`` (the lineage
edge, ``lineage``, eval's default training images, the card's data warnings) and the web pages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from _train_fixtures import make_dataset
from loradex.registry.catalog import datasets as D
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import AlreadyExists, Conflict, NotFound, UntrustedData, UsageError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()
_COMMAND = []


def loradex_command():
    """The whole app's click command, built once: typer's CliRunner rebuilds it on every call
    (~0.3 s each, resolving every command's annotations)."""
    if not _COMMAND:
        import typer

        from loradex.cli.app import app

        _COMMAND.append(typer.main.get_command(app))
    return _COMMAND[0]


def cli(home: Path, *args: str, ok: bool = True):
    result = runner.invoke(loradex_command(), [*args, "--home", str(home)], catch_exceptions=True)
    if ok and result.exit_code != 0:
        raise AssertionError(f"loradex {' '.join(args)} failed: {result.output} {result.exception!r}")
    return result


def cli_json(home: Path, *args: str):
    return json.loads(cli(home, *args, "--json").stdout)


def blobs_of(catalog) -> set[str]:
    return {e.sha256 for e in catalog.blobs.iter_entries()}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("datasets") / "shapes", n=4)


def folder_copy(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for path in src.iterdir():
        (dest / path.name).write_bytes(path.read_bytes())
    return dest


# --- versions, diff, export -------------------------------------------------------------------

def test_add_show_versions_diff_export_round_trip(shapes, tmp_path):
    from loradex.trainer.dataset import check_dataset

    home = tmp_path / "home"
    first = cli_json(home, "dataset", "add", str(shapes), "--name", "shapes", "-m", "first")
    assert first["ref"] == "dataset:shapes@1.0.0" and first["num_images"] == 4
    assert any("fewer than 30" in w for w in first["warnings"])  # the check ran and was stored

    shown = cli_json(home, "dataset", "show", "dataset:shapes@1.0.0")
    rows = {r["file"]: r for r in shown["manifest"]["images"]}
    assert rows["img00.png"]["caption"] == "sks, red square"
    assert rows["img00.png"]["caption_source"] == {"kind": "sidecar", "file": "img00.txt"}
    assert (rows["img00.png"]["width"], rows["img00.png"]["format"]) == (32, "PNG")
    assert shown["report"]["num_images"] == 4 and shown["report"]["warnings"] == first["warnings"]

    # the same data again is refused; changed data is the next minor version
    with pytest.raises(AlreadyExists):
        D.add_dataset_version(Catalog(home), shapes, name="shapes")
    changed = folder_copy(shapes, tmp_path / "changed")
    (changed / "img01.txt").write_text("sks, a  green\nsquare ")  # whitespace is normalised as training reads it
    (changed / "img03.png").unlink()
    (changed / "img03.txt").unlink()
    (changed / "extra.png").write_bytes(make_dataset(tmp_path / "more", n=5, seed=3).joinpath("img04.png").read_bytes())
    cli(home, "dataset", "add", str(changed), "--name", "shapes")
    assert [v["version"] for v in cli_json(home, "dataset", "versions", "shapes")] == ["1.0.0", "1.1.0"]

    diff = cli_json(home, "dataset", "diff", "shapes@1.0.0", "dataset:shapes")
    assert [i["file"] for i in diff["added"]] == ["extra.png"]
    assert [i["file"] for i in diff["removed"]] == ["img03.png"]
    assert diff["recaptioned"] == [{"sha256": rows["img01.png"]["sha256"], "file": "img01.png",
                                    "before": "sks, green square", "after": "sks, a green square"}]
    assert diff["renamed"] == []

    out = tmp_path / "export"
    cli(home, "dataset", "export", "dataset:shapes@1.0.0", str(out))
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in shapes.iterdir())
    for path in shapes.iterdir():
        assert (out / path.name).read_bytes() == path.read_bytes(), path.name  # images and captions, bytes identical
    version = D.get_dataset_version(Catalog(home), "dataset:shapes@1.0.0")
    assert check_dataset(out, resolution=32).manifest_sha256() == version.training_sha256
    refused = cli(home, "dataset", "export", "dataset:shapes@1.0.0", str(out), ok=False)
    assert isinstance(refused.exception, UsageError) and "not an empty folder" in str(refused.exception)


def test_captions_and_entries_make_a_new_version(shapes, tmp_path):
    catalog = Catalog(tmp_path / "home")
    v1 = D.add_dataset_version(catalog, shapes, name="shapes")
    entries = D.dataset_entries(catalog, v1.ref)
    record = {"kind": "captioner", "captioner": "blip", "model_sha256": "ab" * 32, "settings": {"max_words": 8}}
    v2 = D.add_dataset_version(catalog, entries[:3], name="shapes", captions={"img00.png": "sks, a red block"},
                               caption_records={"img00.png": record}, bump="major")
    assert v2.version == "2.0.0" and v2.num_images == 3
    by_file = {i.file: i for i in v2.images}
    assert by_file["img00.png"].caption == "sks, a red block" and by_file["img00.png"].caption_source == record
    assert by_file["img01.png"].caption_source == {"kind": "sidecar", "file": "img01.txt"}
    with pytest.raises(UsageError, match="not in the dataset"):
        D.add_dataset_version(catalog, entries, name="shapes", captions={"nope.png": "x"})


def test_images_are_stored_once_across_versions_and_datasets(shapes, tmp_path):
    catalog = Catalog(tmp_path / "home")
    D.add_dataset_version(catalog, shapes, name="a")
    D.add_dataset_version(catalog, D.dataset_entries(catalog, "dataset:a")[:2], name="a")
    D.add_dataset_version(catalog, shapes, name="b", caption_ext=".caption")  # no captions: another manifest
    assert blobs_of(catalog) == {i.sha256 for i in D.dataset_entries(catalog, "dataset:a@1.0.0")}
    assert len(blobs_of(catalog)) == 4


def test_gc_keeps_images_of_live_versions_and_frees_the_rest(shapes, tmp_path):
    """The second gc in a fresh process (``python -m loradex.cli``): the dataset images' referencer
    must be loaded there too, or gc would delete every training image."""
    home = tmp_path / "home"
    catalog = Catalog(home)
    v1 = D.add_dataset_version(catalog, shapes, name="shapes", alias="prod")
    v2 = D.add_dataset_version(catalog, v1.images[1:], name="shapes")
    only_v1 = v1.images[0].sha256

    def gc() -> dict:
        env = {**os.environ, "LORADEX_HOME": str(home)}
        done = subprocess.run([sys.executable, "-m", "loradex.cli", "gc", "--json"], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    from loradex.registry.catalog.maintenance import gc as gc_here

    assert gc_here(catalog).removed == []
    with pytest.raises(Conflict, match="alias"):
        D.remove_dataset_version(catalog, v1.ref)
    D.remove_dataset_version(catalog, v1.ref, force=True)
    assert gc()["removed"] == [only_v1]
    assert blobs_of(catalog) == {i.sha256 for i in v2.images}
    assert D.get_dataset_version(catalog, "dataset:shapes").version == "1.1.0"
    with pytest.raises(NotFound, match="removed"):
        D.get_dataset_version(catalog, v1.ref)
    assert [(e.action, e.from_version, e.to_version) for e in D.dataset_alias_history(catalog, "shapes", "prod")] == [
        ("set", None, "1.0.0"), ("remove", "1.0.0", None)]
    # a removed number is never handed out again
    assert D.add_dataset_version(catalog, shapes, name="shapes").version == "1.2.0"


def test_aliases_resolve_move_and_keep_history(shapes, tmp_path):
    home = tmp_path / "home"
    catalog = Catalog(home)
    v1 = D.add_dataset_version(catalog, shapes, name="shapes")
    v2 = D.add_dataset_version(catalog, v1.images[:2], name="shapes")
    cli(home, "dataset", "alias", "set", "shapes@1.0.0", "prod", "--reason", "first")
    assert D.get_dataset_version(catalog, "dataset:shapes@prod").id == v1.id
    cli(home, "dataset", "alias", "set", v2.ref, "prod")
    assert D.get_dataset_version(catalog, "dataset:shapes@prod").id == v2.id
    listed = cli_json(home, "dataset", "list")
    assert listed == [{"name": "shapes", "ref": "dataset:shapes", "latest": "1.1.0", "versions": 2,
                       "aliases": {"prod": "1.1.0"}, "num_images": 2}]
    history = cli_json(home, "dataset", "alias", "history", "shapes", "prod")
    assert [(e["from_version"], e["to_version"], e["reason"]) for e in history] == [(None, "1.0.0", "first"),
                                                                                    ("1.0.0", "1.1.0", "")]


# --- hostile names ----------------------------------------------------------------------------

def manifest_with(*files: str) -> dict:
    row = {"sha256": "0" * 64, "size": 1, "width": 1, "height": 1, "format": "PNG", "caption": None}
    return {"schema": D.MANIFEST_FORMAT, "caption_ext": ".txt", "images": [{"file": f, **row} for f in files]}


@pytest.mark.parametrize("files, why", [
    (["../evil.png"], "safe"), (["/etc/evil.png"], "safe"), (["a/../../evil.png"], "safe"),
    (["C:\\evil.png"], "safe"), (["a\x00.png"], "safe"), ([".hidden/x.png"], "hidden"),
    (["notes.txt"], "image suffix"), (["A.png", "a.png"], "same file"), (["a.png", "a.jpg"], "same file"),
    (["a.png", "a.png/b.png"], "both a file and a folder"), (["a.png", "a.txt/x.png"], "both a file and a folder"),
])
def test_hostile_manifest_names_are_refused(files, why):
    with pytest.raises(UntrustedData, match=why):
        D.check_manifest(manifest_with(*files), "test manifest")


def test_hostile_manifest_shapes_are_refused():
    bad = manifest_with("a.png")
    bad["images"][0]["sha256"] = "../../x"
    with pytest.raises(UntrustedData, match="sha256"):
        D.check_manifest(bad, "m")
    with pytest.raises(UntrustedData):
        D.check_manifest({**manifest_with("a.png"), "extra": 1}, "m")
    with pytest.raises(UntrustedData):
        D.check_manifest({**manifest_with("a.png"), "caption_ext": "/../x"}, "m")


def test_export_of_a_tampered_manifest_writes_nothing_outside(shapes, tmp_path):
    from loradex.registry.catalog.db_schema import DatasetVersionRow

    catalog = Catalog(tmp_path / "home")
    version = D.add_dataset_version(catalog, shapes, name="shapes")

    def tamper(s):
        row = s.get(DatasetVersionRow, version.id)
        manifest = json.loads(json.dumps(row.manifest))
        manifest["images"][0]["file"] = "../../escaped.png"
        row.manifest = manifest

    catalog.transact(tamper)
    dest = tmp_path / "a" / "b" / "out"
    with pytest.raises(UntrustedData, match="safe"):
        D.export_dataset(catalog, version.ref, dest)
    assert not (tmp_path / "escaped.png").exists() and not (tmp_path / "a" / "escaped.png").exists()
    assert not (tmp_path / "a").exists()  # refused before anything was made
    with pytest.raises(UntrustedData):  # entries from outside go through the same check before any read
        D.add_dataset_version(catalog, [{**version.images[1].to_dict(), "file": "../x.png"}], name="other")


def test_corrupt_images_are_left_out_with_a_warning(shapes, tmp_path):
    data = folder_copy(shapes, tmp_path / "data")
    (data / "broken.png").write_bytes((data / "img00.png").read_bytes()[:60])
    version = D.add_dataset_version(Catalog(tmp_path / "home"), data, name="shapes")
    assert version.num_images == 4 and "broken.png" not in {i.file for i in version.images}
    assert version.warnings[0].startswith("1 corrupt or unreadable image(s) left out: broken.png")
    assert version.report["corrupt"][0]["file"] == "broken.png"


# --- training from a dataset ref ----------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    """One tiny SD1 LoRA run (2 steps) from dataset:shapes@prod, with a corrupt file left out on add."""
    from loradex.trainer.registration import train_and_register
    from loradex.trainer.train_config import resolve_config

    root = tmp_path_factory.mktemp("trained")
    data = folder_copy(shapes, root / "data")
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    catalog = Catalog(root / "home")
    dataset = D.add_dataset_version(catalog, data, name="shapes", alias="prod")
    config = resolve_config("lora", overrides=dict(base="tiny-sd1", data="dataset:shapes@prod",
                                                   output_dir=str(root / "out"), resolution=32, batch_size=2,
                                                   steps=2, rank=1, lr=1e-2))
    result, added = train_and_register(config, catalog=catalog)
    return catalog, dataset, added[-1].version, result


def test_training_from_a_dataset_ref_records_the_edge(trained):
    from loradex.trainer.dataset import training_data_of

    catalog, dataset, version, result = trained
    assert version.ref == "shapes-lora@1.0.0"  # named after the dataset, not the ref's text
    assert result.dataset.dataset_ref == dataset.ref == "dataset:shapes@1.0.0"  # the alias resolved at the start
    edges = [e for e in catalog.lineage(version.ref) if e.child == version.ref]
    assert [(e.relation, e.parent.split("@")[0]) for e in edges] == [("trained_from", "base:tiny-sd1"),
                                                                     ("trained_from", "dataset:shapes")]
    recorded = edges[1].recipe["dataset"]
    assert recorded["dataset_manifest_sha256"] == dataset.manifest_sha256
    assert recorded["manifest_sha256"] == dataset.training_sha256 == edges[0].recipe["dataset"]["manifest_sha256"]
    assert D.trained_versions(catalog, dataset) == [version.ref]
    assert [t["version"].id for t in D.trained_on(catalog, version.ref)] == [dataset.id]

    lineage = cli(catalog.home, "lineage", version.ref)
    assert "dataset:shapes@1.0.0" in lineage.output
    shown = cli_json(catalog.home, "dataset", "show", "dataset:shapes@prod")
    assert shown["trained"] == [version.ref]

    data = training_data_of(catalog, version.ref)
    assert data.facts["ref"] == dataset.ref and data.facts["num_images"] == 4
    assert any("broken.png" in w for w in data.facts["warnings"])       # from dataset add
    assert any("fewer than 30" in w for w in data.facts["warnings"])    # from the run's check
    assert [sha for _, _, sha in data.images(catalog)] == [i.sha256 for i in dataset.images]


def test_eval_defaults_to_the_dataset_and_the_card_carries_its_warnings(trained, tmp_path):
    from loradex.registry.catalog.records import card_markdown
    from loradex.schemas import validate
    from loradex.trainer.evaluate import EvalOptions, evaluate

    catalog, dataset, version, _ = trained
    suite = tmp_path / "suite.txt"
    suite.write_text("sks, red square\n")
    options = EvalOptions(base="tiny-sd1", seeds=[0], steps=2, cfg=1.0, width=32, height=32, embedder="tiny-clip")
    card = evaluate(catalog, version.ref, suite, options).card
    validate("eval-card", card)
    assert [t["sha256"] for t in card["inputs"]["train_images"]] == [i.sha256 for i in dataset.images]
    assert card["metrics"]["memorization"]["value"] is not None  # computed against the dataset's images
    data = card["inputs"]["training_data"]
    assert data["ref"] == dataset.ref and any("broken.png" in w for w in data["warnings"])
    text = card_markdown(card)
    assert "Training data: dataset:shapes@1.0.0 (4 images)" in text and "- warning: 1 corrupt" in text


def test_web_version_page_shows_the_training_set(trained):
    from _web_fixtures import signed_in_client, web_app

    catalog, dataset, version, _ = trained
    client = signed_in_client(web_app(catalog))
    page = client.get("/ui/versions/shapes-lora/1.0.0")
    assert page.status_code == 200
    assert 'id="trained-on"' in page.text and 'href="/ui/datasets/shapes/1.0.0"' in page.text
    for image in dataset.images:
        assert f'src="/ui/thumbs/{image.sha256}.webp"' in page.text
    assert "left out: broken.png" in page.text
    thumb = client.get(f"/ui/thumbs/{dataset.images[0].sha256}.webp")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
    listing = client.get("/ui/datasets/shapes/prod")
    assert listing.status_code == 200 and 'href="/ui/versions/shapes-lora/1.0.0"' in listing.text
    assert "sks, red square" in listing.text
    assert client.get("/ui/datasets/shapes/9.9.9").status_code == 404
    adapter_page = client.get("/ui/adapters/shapes-lora").text  # the lineage graph links the dataset
    assert '<a href="/ui/datasets/shapes/1.0.0"><g class="node dataset">' in adapter_page
    assert client.get("/ui/thumbs/" + "0" * 64 + ".webp").status_code == 404

    # anonymous visitors: a private server shows them no training image; --public-read does
    from fastapi.testclient import TestClient

    image = f"/ui/blobs/{dataset.images[0].sha256}"
    assert TestClient(web_app(catalog)).get(image, follow_redirects=False).status_code == 401  # sign in first
    public = TestClient(web_app(catalog, public_read=True))
    assert public.get(image).status_code == 200 and public.get(image).content == catalog.blobs.path_for(
        dataset.images[0].sha256).read_bytes()
    assert public.get("/ui/datasets/shapes/1.0.0").status_code == 200


def test_training_data_of_a_folder_run_and_of_an_unknown_one(tmp_path):
    from loradex.merge.synthetic_adapters import write_random_kohya_lora
    from loradex.registry.catalog.adding import add_file
    from loradex.trainer.dataset import training_data_of

    catalog = Catalog(tmp_path / "home")
    recorded = {"manifest_sha256": "ab" * 32, "num_images": 3, "warnings": ["only 3 image(s): fewer than 30"]}
    for i, recipe in enumerate(({"dataset": recorded}, {})):
        path = write_random_kohya_lora(tmp_path / f"lora{i}.safetensors", rank=1, seed=i)
        add_file(catalog, path, name=f"run{i}", kind="lora", base="sd1",
                 lineage=[{"relation": "trained_from", "external_parent": "base:x@" + "0" * 64, "recipe": recipe}])
    data = training_data_of(catalog, "run0")
    assert data.facts == recorded and data.version is None and data.images(catalog) == []
    assert training_data_of(catalog, "run1") is None


def test_datasets_on_postgresql(shapes, tmp_path, pg_url):
    """The same store on PostgreSQL: versions, aliases, rm, the gc referencer and the web app's
    look-up of a training image (its manifest searched as text)."""
    from loradex.registry.catalog.maintenance import referenced_blobs
    from loradex.registry.server.web.dataset_pages import dataset_image_adapters

    catalog = Catalog(tmp_path / "home", db_url=pg_url)
    v1 = D.add_dataset_version(catalog, shapes, name="shapes", alias="prod")
    v2 = D.add_dataset_version(catalog, v1.images[1:], name="shapes", captions={"img01.png": None})
    assert D.get_dataset_version(catalog, "dataset:shapes@prod").id == v1.id
    assert [i.caption for i in v2.images][0] is None
    assert catalog.read(lambda s: dataset_image_adapters(s, v1.images[0].sha256)) == (set(), True)
    D.remove_dataset_version(catalog, v1.ref, force=True)
    assert catalog.read(referenced_blobs) >= {i.sha256 for i in v2.images}
    assert v1.images[0].sha256 not in catalog.read(referenced_blobs)
    assert catalog.read(lambda s: dataset_image_adapters(s, v1.images[0].sha256)) == (set(), False)


@pytest.mark.parametrize("ext", ["../x", ".a.b", ".", "/txt"])
def test_a_caption_extension_must_be_a_plain_suffix(shapes, tmp_path, ext):
    with pytest.raises(UsageError, match="plain file suffix"):
        D.add_dataset_version(Catalog(tmp_path / "home"), shapes, name="shapes", caption_ext=ext)
