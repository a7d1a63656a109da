"""``loradex import DIR``: sidecars, duplicates, refusals, naming, and the incremental cache."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _webui_fixtures import A1111_JSON, CIVITAI_INFO, OpenCounter, make_webui_tree
from loradex.cli.app import app
from loradex.merge.synthetic_adapters import write_random_kohya_lora
from loradex.registry.catalog.store import Catalog
from loradex.registry.folders.webui_import import (
    _Found,
    assign_names,
    base_from_label,
    import_tree,
    name_candidates,
)

runner = CliRunner()


@pytest.fixture
def tree(tmp_path):
    return make_webui_tree(tmp_path / "webui")


def _items(report) -> dict:
    return {i.path: i for i in report.items}


def test_first_import_names_sidecars_duplicates_and_refusals(tree):
    catalog = Catalog()
    report = import_tree(catalog, tree.root)
    items = _items(report)
    assert set(items) == {
        "models/Lora/style.safetensors", "models/Lora/copy of style.safetensors",
        "models/Lora/anime/Char.safetensors", "models/Lora/real/Char.safetensors",
        "models/Lora/pointer.safetensors", "embeddings/neg.safetensors", "embeddings/old.pt",
    }  # models/VAE is not an adapter folder
    assert report.counts() == {"added": 4, "duplicate": 1, "refused": 2, "unchanged": 0}
    assert items["models/Lora/style.safetensors"].ref == "style@1.0.0"
    # The copy is named as a duplicate of the existing ref, not added again.
    dup = items["models/Lora/copy of style.safetensors"]
    assert (dup.status, dup.ref) == ("duplicate", "style@1.0.0")
    # Same file name in two folders: resolved by the folder name.
    assert items["models/Lora/anime/Char.safetensors"].ref == "char-anime@1.0.0"
    assert items["models/Lora/real/Char.safetensors"].ref == "char-real@1.0.0"
    assert items["embeddings/neg.safetensors"].ref == "neg@1.0.0"
    assert items["embeddings/neg.safetensors"].kind == "embedding"
    # Refusals carry their reason.
    assert "pickle" in items["embeddings/old.pt"].reason.lower()
    assert "lfs pointer" in items["models/Lora/pointer.safetensors"].reason.lower()
    assert report.stats.bytes_hashed == sum(
        (tree.root / p).stat().st_size for p, i in items.items() if i.status in ("added", "duplicate"))


def test_sidecars_land_in_the_catalog(tree):
    catalog = Catalog()
    import_tree(catalog, tree.root)
    v = catalog.resolve("style")
    civ = v.extra["civitai"]  # the shape `pull civitai:` stores
    assert (civ["versionId"], civ["modelId"], civ["modelName"]) == (1234, 99, "Watercolor Style")
    assert (civ["baseModel"], civ["fileId"], civ["via"]) == ("SD 1.5", 5, "sidecar")
    assert civ["trainedWords"] == ["wtrclr style"] and civ["info"] == CIVITAI_INFO
    assert civ["images"][0]["meta"]["prompt"] == "wtrclr style, a cat"
    assert v.extra["webui"] == A1111_JSON
    # Activation text first, then Civitai's trained words, then what the file's metadata says.
    assert list(v.trigger_words[:3]) == ["wtrclr", "soft", "wtrclr style"]
    assert catalog.get_adapter("style").description == CIVITAI_INFO["description"]
    assert catalog.get_adapter("style").base == "sd1"
    with catalog.blobs.open(v.extra["preview_sha256"]) as fh:
        assert fh.read() == tree.preview
    assert v.extra["preview_type"] == "png"
    assert catalog.resolve("char-anime").extra.get("civitai") is None  # no sidecar, no invention


def test_second_run_reads_nothing_and_adds_nothing(tree, monkeypatch):
    catalog = Catalog()
    first = import_tree(catalog, tree.root)
    versions_before = {a.name: a.latest for a in catalog.list_adapters()}

    counter = OpenCounter(monkeypatch, tree.root)
    from loradex.registry import probe
    from loradex.registry.files import blob_store

    def must_not_run(*a, **k):
        raise AssertionError("an unchanged file was read again")

    monkeypatch.setattr(blob_store.BlobStore, "add_file", must_not_run)
    monkeypatch.setattr(probe, "probe_path", must_not_run)
    second = import_tree(catalog, tree.root)
    assert counter.opened == []
    assert second.stats.bytes_hashed == 0 and second.stats.files_read == 0
    assert second.stats.cache_hits == second.stats.model_files == first.stats.model_files
    assert second.counts() == {"added": 0, "duplicate": 0, "refused": 2, "unchanged": 5}
    assert {a.name: a.latest for a in catalog.list_adapters()} == versions_before
    # Refusals are remembered with their reason, duplicates with the ref they duplicate.
    items = _items(second)
    assert "lfs pointer" in items["models/Lora/pointer.safetensors"].reason.lower()
    assert items["models/Lora/copy of style.safetensors"].ref == "style@1.0.0"


def test_cache_trusts_path_size_mtime_inode(tree):
    """Same size, mtime and inode: the cache answers without reading (the key the issue asks
    for); a new mtime makes it read the file again, and new content becomes a new version."""
    catalog = Catalog()
    import_tree(catalog, tree.root)
    style = tree.files["style"]
    st = style.stat()
    new_bytes = bytearray(style.read_bytes())
    new_bytes[-1] ^= 0xFF  # flip one tensor byte: same size
    with open(style, "r+b") as fh:  # in place: same inode
        fh.write(new_bytes)
    os.utime(style, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert import_tree(catalog, tree.root).counts()["added"] == 0

    os.utime(style, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    third = import_tree(catalog, tree.root)
    items = _items(third)
    assert items["models/Lora/style.safetensors"].ref == "style@1.1.0"  # same adapter, new version
    assert third.stats.files_read == 1 and third.stats.bytes_hashed == style.stat().st_size
    assert third.counts()["added"] == 1


def test_allow_pickle_retries_an_unchanged_refused_pickle(tree):
    catalog = Catalog()
    import_tree(catalog, tree.root)
    again = _items(import_tree(catalog, tree.root, allow_pickle=True))
    assert again["embeddings/old.pt"].status == "added", again["embeddings/old.pt"]
    assert catalog.resolve("old").probe["kind"] == "embedding"
    assert again["models/Lora/pointer.safetensors"].status == "refused"


def test_new_file_with_a_taken_name_gets_its_folder_suffix(tree):
    catalog = Catalog()
    import_tree(catalog, tree.root)
    sub = tree.root / "models" / "Lora" / "extra"
    sub.mkdir()
    write_random_kohya_lora(sub / "style.safetensors", rank=2, seed=9)
    items = _items(import_tree(catalog, tree.root))
    assert items["models/Lora/extra/style.safetensors"].ref == "style-extra@1.0.0"
    assert items["models/Lora/style.safetensors"].status == "unchanged"


def test_name_candidates_and_collisions_are_deterministic():
    assert name_candidates("models/Lora/My Style.v2.safetensors")[:3] == [
        "my-style", "my-style-lora", "my-style-models-lora"]
    rels = ["models/Lora/foo.safetensors", "models/Lora/sub/foo.safetensors",
            "models/LyCORIS/foo.safetensors", "models/Lora/a/x/bar.safetensors",
            "models/Lora/b/x/bar.safetensors", "embeddings/baz.pt", "models/Lora/foo-sub.safetensors"]
    results = []
    for seed in range(5):
        shuffled = rels[:]
        random.Random(seed).shuffle(shuffled)
        found = [_Found(Path(r), r, tuple(Path(r).parent.parts), "lora") for r in sorted(shuffled)]
        assign_names(found, {})
        results.append({f.rel: f.name for f in found})
    assert all(r == results[0] for r in results)
    names = results[0]
    assert len(set(names.values())) == len(rels)
    assert names["embeddings/baz.pt"] == "baz"
    assert names["models/Lora/foo-sub.safetensors"] == "foo-sub"  # a real name wins over a suffix
    assert names["models/Lora/foo.safetensors"] == "foo-lora"
    assert names["models/LyCORIS/foo.safetensors"] == "foo-lycoris"
    assert names["models/Lora/a/x/bar.safetensors"] == "bar-a-x"
    assert names["models/Lora/b/x/bar.safetensors"] == "bar-b-x"
    assert names["models/Lora/sub/foo.safetensors"] == "foo-lora-sub"


@pytest.mark.parametrize("label,base", [("SD 1.5", "sd1"), ("SDXL 1.0", "sdxl"), ("Pony", "sdxl"),
                                        ("SD 2.1 768", "sd2"), ("Flux.1 D", "flux"), ("SD1", "sd1"),
                                        ("SDXL", "sdxl"), ("Unknown", "unknown"), (None, "unknown")])
def test_base_labels(label, base):
    assert base_from_label(label) == base


def test_cli_import_json_twice(tree):
    first = runner.invoke(app, ["import", str(tree.root), "--json"])
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    assert data["counts"] == {"added": 4, "duplicate": 1, "refused": 2, "unchanged": 0}
    refused = {i["path"]: i["reason"] for i in data["items"] if i["status"] == "refused"}
    assert "--allow-pickle" in refused["embeddings/old.pt"]
    second = json.loads(runner.invoke(app, ["import", str(tree.root), "--json"]).stdout)
    assert second["counts"]["added"] == 0 and second["stats"]["bytes_hashed"] == 0
    human = runner.invoke(app, ["import", str(tree.root)])
    assert human.exit_code == 0 and "0 added" in human.stdout and "refused" in human.stdout


def test_import_of_a_missing_folder_is_one_line_error(tmp_path, capsys):
    from loradex.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["import", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert exit_info.value.code != 0 and "is not a folder" in err and err.count("\n") == 1


# --- real files -----------------------------------------------------------------------------------
CORPUS_KIND = {  # file → expected import status / kind (README table of the corpus)
    "lycoris_smart_falcon_4_lokr.safetensors": ("added", "lycoris"),
    "diffusers_timohavdk_2100-lora.safetensors": ("added", "lora"),
    "peft_sd15_text_encoder_adapter_model_hansjohn.safetensors": ("added", "lora"),
    "ti_a1111_EasyNegative_in_models-Lora_mayaru.safetensors": ("added", "embedding"),
    "ti_diffusers_learned_embeds_ttekcor.safetensors": ("added", "embedding"),
    "cloneofsimo_lora_kiriko2.ti.pt": ("refused", None),
    "ti_a1111_bad-hands-5_mayaru.pt": ("refused", None),
    "bad_lfs_pointer_learned_embeds.safetensors": ("refused", None),
    "bad_invokeai_fakeTensor_json_kohya_sd15_shinkai.safetensors": ("refused", None),
}


def test_corpus_files_in_a_webui_tree(corpus_dir, tmp_path):
    lora = tmp_path / "webui" / "models" / "Lora"
    lora.mkdir(parents=True)
    for name in CORPUS_KIND:
        shutil.copyfile(corpus_dir / "files" / name, lora / name)
    catalog = Catalog()
    items = _items(import_tree(catalog, tmp_path / "webui"))
    for name, (status, kind) in CORPUS_KIND.items():
        item = items[f"models/Lora/{name}"]
        assert item.status == status, (name, item)
        if kind:
            assert item.kind == kind, (name, item)
    assert "lfs pointer" in items["models/Lora/bad_lfs_pointer_learned_embeds.safetensors"].reason.lower()
    assert "json" in items["models/Lora/bad_invokeai_fakeTensor_json_kohya_sd15_shinkai.safetensors"].reason.lower()


def test_touched_file_with_same_bytes_is_unchanged(tree):
    catalog = Catalog()
    import_tree(catalog, tree.root)
    style = tree.files["style"]
    st = style.stat()
    os.utime(style, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    again = import_tree(catalog, tree.root)
    item = _items(again)["models/Lora/style.safetensors"]
    assert (item.status, item.ref, item.cached) == ("unchanged", "style@1.0.0", False)
    assert again.stats.files_read == 1 and again.counts()["added"] == 0
    assert import_tree(catalog, tree.root).stats.files_read == 0  # the new mtime is cached now


def test_allow_pickle_import_stores_what_add_stores(tree, tmp_path):
    """import --allow-pickle and add --allow-pickle share one conversion: same safetensors blob,
    same converted_from edge to the pickle's sha256; a second import reads nothing."""
    from loradex.merge.conventions.pickle_to_safetensors import add_adapter_file, convert_pickle_for_catalog
    from loradex.registry.files.hashing import hash_file

    catalog = Catalog()
    report = import_tree(catalog, tree.root, allow_pickle=True, pickle_converter=convert_pickle_for_catalog)
    assert _items(report)["embeddings/old.pt"].status == "added"
    imported = catalog.resolve("old")
    assert imported.file_name == "old.safetensors" and imported.probe["container"] == "safetensors"
    (edge,) = [e for e in catalog.lineage(imported.ref) if e.relation == "converted_from"]
    pickle_sha = hash_file(tree.files["old"]).sha256
    assert edge.parent == f"sha256:{pickle_sha}"

    other = Catalog(tmp_path / "other-home")
    added = add_adapter_file(other, tree.files["old"], allow_pickle=True).version
    assert added.sha256 == imported.sha256  # byte-identical conversion
    (add_edge,) = [e for e in other.lineage(added.ref) if e.relation == "converted_from"]
    assert add_edge.parent == edge.parent and add_edge.recipe == edge.recipe

    again = import_tree(catalog, tree.root, allow_pickle=True, pickle_converter=convert_pickle_for_catalog)
    assert _items(again)["embeddings/old.pt"].status == "unchanged" and again.stats.files_read == 0


def test_cli_import_allow_pickle_converts(tree):
    result = CliRunner().invoke(app, ["import", str(tree.root), "--allow-pickle"])
    assert result.exit_code == 0, result.output
    assert Catalog().resolve("old").file_name == "old.safetensors"
