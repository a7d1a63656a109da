"""``sync-folder DIR --alias production``: a webui folder follows the alias, rollbacks included,
and files loradex does not manage are never touched."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from loradex.cli.app import app
from loradex.merge.synthetic_adapters import write_random_embedding, write_random_kohya_lora
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import InvalidFile
from loradex.registry.folders.folder_sync import MANIFEST, read_manifest, sync_folder
from loradex.registry.catalog.operations import MoveAlias, RemoveAlias, RollbackAlias

runner = CliRunner()


@pytest.fixture
def setup(tmp_path):
    catalog = Catalog()
    src = tmp_path / "src"
    src.mkdir()
    v1 = add_file(catalog, write_random_kohya_lora(src / "a.safetensors", rank=2, seed=1, trigger="aa"),
                  name="style").version
    v2 = add_file(catalog, write_random_kohya_lora(src / "b.safetensors", rank=2, seed=2, trigger="bb"),
                  name="style").version
    neg = add_file(catalog, write_random_embedding(src / "neg.safetensors", n_vectors=2, dim=768),
                   name="neg").version
    catalog.apply([MoveAlias(v1.ref, "production"), MoveAlias(v2.ref, "production"),
                   MoveAlias(neg.ref, "production")])
    webui = tmp_path / "webui"
    lora = webui / "models" / "Lora"
    lora.mkdir(parents=True)
    mine = write_random_kohya_lora(lora / "mine.safetensors", rank=2, seed=7)  # the artist's own
    (lora / "mine.json").write_text('{"activation text": "mine"}')
    return catalog, webui, v1, v2, neg, mine


def _blob(catalog, version) -> bytes:
    with catalog.blobs.open(version.sha256) as fh:
        return fh.read()


def _snapshot(path):
    st = path.stat()
    return path.read_bytes(), st.st_mtime_ns, st.st_ino


def test_sync_then_rollback_replaces_the_file_and_leaves_unmanaged_alone(setup):
    catalog, webui, v1, v2, neg, mine = setup
    mine_before, mine_json_before = _snapshot(mine), _snapshot(mine.with_suffix(".json"))
    report = sync_folder(catalog, webui, layout="a1111", alias="production")
    style = webui / "models" / "Lora" / "style.safetensors"
    assert style.read_bytes() == _blob(catalog, v2)
    assert (webui / "embeddings" / "neg.safetensors").read_bytes() == _blob(catalog, neg)
    assert json.loads((webui / "models" / "Lora" / "style.json").read_text())["activation text"] == "bb"
    assert report.count("added") == 4  # two models, two .json sidecars
    manifest = read_manifest(webui)
    assert manifest["models/Lora/style.safetensors"]["sha256"] == v2.sha256
    assert "models/Lora/mine.safetensors" not in manifest

    assert sync_folder(catalog, webui).changed() == []  # nothing moved: nothing to do

    inode_before = style.stat().st_ino
    catalog.apply([RollbackAlias("style", "production")])
    after = sync_folder(catalog, webui)
    assert style.read_bytes() == _blob(catalog, v1)
    assert style.stat().st_ino != inode_before  # replaced by rename, never rewritten in place
    changed = {a.path: a for a in after.changed()}
    assert set(changed) == {"models/Lora/style.safetensors", "models/Lora/style.json"}
    assert changed["models/Lora/style.safetensors"].action == "updated"
    assert changed["models/Lora/style.safetensors"].ref == v1.ref
    assert json.loads((webui / "models" / "Lora" / "style.json").read_text())["activation text"] == "aa"
    assert read_manifest(webui)["models/Lora/style.safetensors"]["sha256"] == v1.sha256
    assert _snapshot(mine) == mine_before and _snapshot(mine.with_suffix(".json")) == mine_json_before
    assert not list(webui.rglob(".tmp-loradex*"))


def test_hand_edited_managed_file_is_reported_and_kept_unless_forced(setup):
    catalog, webui, v1, v2, neg, mine = setup
    sync_folder(catalog, webui)
    meta = webui / "models" / "Lora" / "style.json"
    meta.write_text('{"activation text": "my own words"}')
    catalog.apply([RollbackAlias("style", "production")])
    report = sync_folder(catalog, webui)
    actions = {a.path: a.action for a in report.actions}
    assert actions["models/Lora/style.json"] == "kept-modified"
    assert actions["models/Lora/style.safetensors"] == "updated"
    assert json.loads(meta.read_text()) == {"activation text": "my own words"}
    assert sync_folder(catalog, webui).count("kept-modified") == 1  # still reported next time
    forced = sync_folder(catalog, webui, force=True)
    assert {a.path: a.action for a in forced.actions}["models/Lora/style.json"] == "updated"
    assert json.loads(meta.read_text())["activation text"] == "aa"


def test_alias_removed_removes_only_managed_files(setup):
    catalog, webui, v1, v2, neg, mine = setup
    sync_folder(catalog, webui)
    catalog.apply([RemoveAlias("neg", "production")])
    report = sync_folder(catalog, webui)
    assert {a.path for a in report.actions if a.action == "removed"} == {
        "embeddings/neg.safetensors", "embeddings/neg.json"}
    assert not (webui / "embeddings" / "neg.safetensors").exists()
    assert mine.exists() and (webui / "models" / "Lora" / "style.safetensors").exists()
    assert "embeddings/neg.safetensors" not in read_manifest(webui)


def test_unmanaged_file_in_the_way_is_never_touched_even_with_force(setup, tmp_path):
    catalog, webui, v1, v2, neg, mine = setup
    other = add_file(catalog, write_random_kohya_lora(tmp_path / "src" / "o.safetensors", rank=2, seed=3),
                     name="mine", alias="production").version
    before = _snapshot(mine)
    report = sync_folder(catalog, webui, force=True)
    actions = {a.path: a for a in report.actions}
    assert actions["models/Lora/mine.safetensors"].action == "blocked-unmanaged"
    assert actions["models/Lora/mine.json"].action == "blocked-unmanaged"
    assert _snapshot(mine) == before
    assert "models/Lora/mine.safetensors" not in read_manifest(webui)
    assert other.ref == "mine@1.0.0"


def test_identical_unmanaged_file_is_adopted(setup):
    """A sync killed after writing files but before its manifest: the next one takes them over."""
    catalog, webui, v1, v2, neg, mine = setup
    sync_folder(catalog, webui)
    (webui / MANIFEST).unlink()
    report = sync_folder(catalog, webui)
    assert report.count("adopted") == 4 and report.count("blocked-unmanaged") == 0
    assert len(read_manifest(webui)) == 4


def test_deleted_managed_file_is_recreated_and_comfyui_layout(setup):
    catalog, webui, v1, v2, neg, mine = setup
    comfy = webui.parent / "comfy"
    sync_folder(catalog, comfy, layout="comfyui")
    target = comfy / "models" / "loras" / "style.safetensors"
    assert target.read_bytes() == _blob(catalog, v2)
    assert (comfy / "models" / "embeddings" / "neg.safetensors").is_file()
    target.unlink()
    report = sync_folder(catalog, comfy, layout="comfyui")
    assert {a.path: a.action for a in report.changed()} == {"models/loras/style.safetensors": "added"}
    assert target.read_bytes() == _blob(catalog, v2)


def test_corrupt_manifest_is_a_clear_error(setup):
    catalog, webui, *_ = setup
    (webui / MANIFEST).write_text("not json")
    with pytest.raises(InvalidFile, match="not a loradex sync manifest"):
        sync_folder(catalog, webui)


def test_cli_sync_folder_json_and_dry_run(setup):
    catalog, webui, *_ = setup
    dry = runner.invoke(app, ["sync-folder", str(webui), "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["counts"] == {"added": 4}
    assert not (webui / "models" / "Lora" / "style.safetensors").exists()
    real = runner.invoke(app, ["sync-folder", str(webui), "--layout", "a1111", "--alias", "production"])
    assert real.exit_code == 0 and "4 added" in real.stdout
    assert (webui / "models" / "Lora" / "style.safetensors").exists()
