"""Issue 15, folders: a hostile or clumsy webui folder (hand-edited state files, symlinks, FIFOs,
over-long names, bad sidecars) and files sharing a blob by hardlink.

- ``sync-folder`` / ``export`` delete or overwrite only what loradex wrote there, checked by the
  content's sha256 right before, never a path outside the folder;
- ``import`` skips what it cannot read safely, one warning line each, and goes on (exit 1);
- a blob stored with ``--link`` is read-only and ``verify`` names the outside path sharing it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from loradex.merge.synthetic_adapters import write_random_embedding, write_random_kohya_lora
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.store import Catalog
from loradex.registry.folders.folder_sync import MANIFEST, read_manifest, sync_folder
from loradex.registry.catalog.operations import MoveAlias, RemoveAlias
from loradex.registry.folders.webui_export import export_version

@pytest.fixture
def cli(cli_main):
    return cli_main


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _entry(path: Path) -> dict:
    st = path.stat()
    return {"sha256": _sha(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ref": "x@1.0.0"}


def _write_manifest(webui: Path, files: dict) -> None:
    (webui / MANIFEST).write_text(json.dumps({"format": 1, "tool": "loradex", "layout": "a1111",
                                              "alias": "production", "files": files}))


@pytest.fixture
def synced(tmp_path):
    """A catalog with ``neg@production``, a webui folder synced once, and files outside it."""
    catalog = Catalog()
    src = tmp_path / "src"
    src.mkdir()
    neg = add_file(catalog, write_random_embedding(src / "neg.safetensors", n_vectors=2, dim=768),
                   name="neg", alias="production").version
    webui = tmp_path / "webui"
    (webui / "models" / "Lora").mkdir(parents=True)
    sync_folder(catalog, webui)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("not loradex's")
    return catalog, webui, outside, neg


# --- sync-folder: the manifest is data from outside ---------------------------------------------------
@pytest.mark.parametrize("name", ["../outside/victim.txt", "{outside}/victim.txt",
                                  "models/../../outside/victim.txt", "models/Lora/out/victim.txt"])
def test_manifest_naming_a_path_outside_the_folder_deletes_nothing(synced, name, cli):
    catalog, webui, outside, _ = synced
    victim = outside / "victim.txt"
    (webui / "models" / "Lora" / "out").symlink_to(outside)  # a symlinked subfolder leading out
    rel = name.format(outside=outside)
    files = read_manifest(webui)
    files[rel] = _entry(victim)  # the right hash, size and mtime: only the path check stops it
    _write_manifest(webui, files)
    result = cli("sync-folder", webui)
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "not loradex's"
    assert ("ignored" in result.stderr or "outside the folder" in result.stderr) and "victim.txt" in result.stderr
    assert rel not in read_manifest(webui)


def test_size_and_mtime_never_justify_a_delete(synced):
    """A manifest entry for the user's own file with its size and mtime but another hash: the old
    size+mtime shortcut took the recorded hash on trust and deleted the file."""
    catalog, webui, _, _ = synced
    mine = write_random_kohya_lora(webui / "models" / "Lora" / "mine.safetensors", rank=2, seed=7)
    before = mine.read_bytes()
    files = read_manifest(webui)
    files["models/Lora/mine.safetensors"] = {**_entry(mine), "sha256": "ab" * 32}
    _write_manifest(webui, files)
    report = sync_folder(catalog, webui)
    assert {a.path: a.action for a in report.actions}["models/Lora/mine.safetensors"] == "kept-modified"
    assert mine.read_bytes() == before
    assert any("mine.safetensors" in w for w in report.warnings)


def test_overwrite_needs_the_recorded_hash_too(synced, tmp_path):
    """An alias moves, the managed file was changed by hand keeping size and mtime: kept."""
    catalog, webui, _, neg = synced
    target = webui / "embeddings" / "neg.safetensors"
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    v2 = add_file(catalog, write_random_embedding(tmp_path / "src" / "neg2.safetensors", n_vectors=2, dim=768,
                                                  seed=9), name="neg").version
    catalog.apply([MoveAlias(v2.ref, "production")])
    report = sync_folder(catalog, webui)
    assert {a.path: a.action for a in report.actions}["embeddings/neg.safetensors"] == "kept-modified"
    assert target.read_bytes() == bytes(data)


def test_symlink_where_a_managed_file_was_is_left_alone(synced):
    catalog, webui, outside, _ = synced
    target = webui / "embeddings" / "neg.safetensors"
    target.unlink()
    target.symlink_to(outside / "victim.txt")
    catalog.apply([RemoveAlias("neg", "production")])
    report = sync_folder(catalog, webui)
    assert {a.path: a.action for a in report.actions}["embeddings/neg.safetensors"] == "blocked-outside"
    assert target.is_symlink() and (outside / "victim.txt").read_text() == "not loradex's"


@pytest.mark.parametrize("files", [
    {"embeddings/neg.safetensors": {"sha256": 5}},
    {"embeddings/neg.safetensors": "not an object"},
    {"embeddings/neg.safetensors": {"sha256": "../" * 20, "size": "big"}},
    {"a\x00b": {}},
    {".loradex-sync.lock": {"sha256": hashlib.sha256(b"").hexdigest()}},  # its own lock: empty, hash known
])
def test_malformed_manifest_entries_are_warnings_not_crashes(synced, files, cli):
    catalog, webui, _, _ = synced
    _write_manifest(webui, files)
    result = cli("sync-folder", webui)
    assert result.exit_code == 0, result.output
    assert "ignored" in result.stderr
    assert (webui / "embeddings" / "neg.safetensors").is_file() and (webui / ".loradex-sync.lock").is_file()


@pytest.mark.parametrize("text", ['{"files": []}', "[1, 2]", '{"files": {}}' + " " * (17 << 20), "\x00\xff",
                                  '{"files": ' * 100 + "{}" + "}" * 100])
def test_manifest_that_is_not_one_is_a_one_line_error(synced, text, cli):
    catalog, webui, _, _ = synced
    (webui / MANIFEST).write_text(text)
    result = cli("sync-folder", webui)
    assert result.exit_code == 1
    assert "not a loradex sync manifest" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_entries_without_a_hash_are_not_removed(synced):
    """Backward compatibility: an entry with no recorded sha256 is never taken as loradex's."""
    catalog, webui, _, _ = synced
    target = webui / "embeddings" / "neg.safetensors"
    files = read_manifest(webui)
    files["embeddings/neg.safetensors"] = {"ref": "neg@1.0.0"}
    _write_manifest(webui, files)
    catalog.apply([RemoveAlias("neg", "production")])
    report = sync_folder(catalog, webui)
    assert {a.path: a.action for a in report.actions}["embeddings/neg.safetensors"] == "kept-unverified"
    assert target.is_file()


# --- export: overwrites only its own files --------------------------------------------------------------
@pytest.fixture
def styled(tmp_path):
    catalog = Catalog()
    src = tmp_path / "src"
    src.mkdir()
    v1 = add_file(catalog, write_random_kohya_lora(src / "a.safetensors", rank=2, seed=1, trigger="aa"),
                  name="style").version
    v2 = add_file(catalog, write_random_kohya_lora(src / "b.safetensors", rank=2, seed=2, trigger="bb"),
                  name="style").version
    return catalog, v1, v2, tmp_path / "webui"


def test_export_leaves_the_users_own_file_alone(styled, cli):
    catalog, v1, v2, webui = styled
    meta = webui / "models" / "Lora" / "style.json"
    meta.parent.mkdir(parents=True)
    meta.write_text('{"activation text": "my own words"}')
    result = cli("export", v1.ref, webui)
    assert result.exit_code == 1
    assert "models/Lora/style.json" in result.stderr and "left alone" in result.stderr
    assert json.loads(meta.read_text()) == {"activation text": "my own words"}
    assert (webui / "models" / "Lora" / "style.safetensors").is_file()  # the rest was written
    forced = cli("export", v1.ref, webui, "--force")
    assert forced.exit_code == 0, forced.output
    assert json.loads(meta.read_text())["activation text"] == "aa"


def test_export_overwrites_what_it_wrote_but_not_a_hand_edit(styled):
    catalog, v1, v2, webui = styled
    export_version(catalog, v1.ref, webui)
    model = webui / "models" / "Lora" / "style.safetensors"
    again = export_version(catalog, v2.ref, webui)  # ours, unchanged: replaced
    assert again.skipped == [] and _sha(model) == v2.sha256
    meta = webui / "models" / "Lora" / "style.json"
    meta.write_text('{"activation text": "edited"}')
    third = export_version(catalog, v1.ref, webui)
    assert [s["path"] for s in third.skipped] == ["models/Lora/style.json"]
    assert json.loads(meta.read_text()) == {"activation text": "edited"} and _sha(model) == v1.sha256


def test_export_through_a_symlinked_subfolder_writes_nothing_outside(styled, tmp_path):
    catalog, v1, _, webui = styled
    outside = tmp_path / "outside"
    outside.mkdir()
    (webui / "models").mkdir(parents=True)
    (webui / "models" / "Lora").symlink_to(outside)
    result = export_version(catalog, v1.ref, webui)
    assert list(outside.iterdir()) == []
    assert {s["reason"] for s in result.skipped} == {"the path leads outside the folder"}


# --- import: what cannot be read safely is skipped, one line each -------------------------------------
@pytest.fixture
def hostile_tree(tmp_path):
    """models/Lora with one good adapter and every kind of file that must be skipped."""
    lora = tmp_path / "webui" / "models" / "Lora"
    lora.mkdir(parents=True)
    write_random_kohya_lora(lora / "good.safetensors", rank=2, seed=1)
    os.mkfifo(lora / "fifo.safetensors")  # opening it for reading would block forever
    (lora / "loop.safetensors").symlink_to(lora / "loop2.safetensors")
    (lora / "loop2.safetensors").symlink_to(lora / "loop.safetensors")
    (lora / "dangling.safetensors").symlink_to(tmp_path / "nowhere.safetensors")
    write_random_kohya_lora(lora / ("x" * 230 + ".pt"), rank=2, seed=2)  # name fits 255, sidecars would not
    (lora / "loopdir").symlink_to(lora)  # a folder symlinked into itself: not followed
    return tmp_path / "webui"


def test_import_skips_fifos_symlink_loops_dangling_links_and_long_names(hostile_tree, cli):
    result = cli("import", hostile_tree, "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    skipped = {i["path"]: i["reason"] for i in data["items"] if i["status"] == "skipped"}
    assert set(skipped) == {"models/Lora/fifo.safetensors", "models/Lora/loop.safetensors",
                            "models/Lora/loop2.safetensors", "models/Lora/dangling.safetensors",
                            "models/Lora/" + "x" * 230 + ".pt"}
    assert "FIFO" in skipped["models/Lora/fifo.safetensors"]
    assert skipped["models/Lora/loop.safetensors"] == "symlink loop"
    assert skipped["models/Lora/dangling.safetensors"].startswith("dangling symlink")
    assert skipped["models/Lora/" + "x" * 230 + ".pt"].startswith("over-long name")
    assert data["counts"] == {"added": 1, "duplicate": 0, "refused": 0, "unchanged": 0, "skipped": 5}
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 5 and all("skipped" in w for w in warnings)
    human = cli("import", hostile_tree)  # the good one is unchanged now; the rest skipped again
    assert human.exit_code == 1 and "5 skipped" in human.stdout and "1 unchanged" in human.stdout


BAD_JSON_SIDECARS = {
    "not json": b"{not json",
    "deep": b"[" * 100_000 + b"]" * 100_000,
    "wrong types": json.dumps({"trainedWords": 5, "model": "x", "files": [{"hashes": []}]}).encode(),
    "not an object": b"[1, 2, 3]",
    "over the cap": b'{"description": "' + b"a" * (1 << 20) + b'"}',
    "bad utf-8": b'{"description": "\xff\xfe"}',
    "NaN": b'{"id": NaN}',
}


@pytest.mark.parametrize("case", sorted(BAD_JSON_SIDECARS))
def test_malformed_sidecars_are_skipped_and_the_model_imported(tmp_path, case, cli):
    lora = tmp_path / "webui" / "models" / "Lora"
    lora.mkdir(parents=True)
    write_random_kohya_lora(lora / "style.safetensors", rank=2, seed=1)
    (lora / "style.civitai.info").write_bytes(BAD_JSON_SIDECARS[case])
    (lora / "style.json").write_bytes(json.dumps({"activation text": 7}).encode())  # a number: wrong type
    result = cli("import", tmp_path / "webui", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    items = {i["path"]: i for i in data["items"]}
    assert items["models/Lora/style.safetensors"]["status"] == "added"
    assert items["models/Lora/style.civitai.info"]["status"] == "skipped"
    assert items["models/Lora/style.json"]["status"] == "skipped"
    assert "activation text" in items["models/Lora/style.json"]["reason"]
    version = Catalog().resolve("style")
    assert "civitai" not in version.extra and "webui" not in version.extra  # nothing of them stored


def test_special_and_oversized_sidecars_are_not_read(tmp_path, cli):
    lora = tmp_path / "webui" / "models" / "Lora"
    lora.mkdir(parents=True)
    write_random_kohya_lora(lora / "style.safetensors", rank=2, seed=1)
    os.mkfifo(lora / "style.civitai.info")  # must not block the import
    (lora / "style.json").symlink_to(lora / "style.json")  # a loop
    (lora / "style.preview.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (17 << 20))  # over the cap
    result = cli("import", tmp_path / "webui", "--json")
    assert result.exit_code == 1
    items = {i["path"]: i for i in json.loads(result.stdout)["items"]}
    assert "FIFO" in items["models/Lora/style.civitai.info"]["reason"]
    assert items["models/Lora/style.json"]["reason"] == "symlink loop"
    assert "cap" in items["models/Lora/style.preview.png"]["reason"]
    version = Catalog().resolve("style")
    assert "preview_sha256" not in version.extra


def test_good_sidecars_still_land(tmp_path, cli):
    from _webui_fixtures import A1111_JSON, CIVITAI_INFO, png_bytes

    lora = tmp_path / "webui" / "models" / "Lora"
    lora.mkdir(parents=True)
    write_random_kohya_lora(lora / "style.safetensors", rank=2, seed=1)
    (lora / "style.civitai.info").write_text(json.dumps(CIVITAI_INFO))
    (lora / "style.json").write_text(json.dumps(A1111_JSON))
    (lora / "style.preview.png").write_bytes(png_bytes())
    result = cli("import", tmp_path / "webui")
    assert result.exit_code == 0 and "skipped" not in result.output
    version = Catalog().resolve("style")
    assert version.extra["civitai"]["info"] == CIVITAI_INFO and version.extra["webui"] == A1111_JSON
    assert version.extra["preview_type"] == "png"


# --- linked blobs: read-only, and verify names the outside path ----------------------------------------
def _blob_path(sha: str) -> Path:
    return Path(os.environ["LORADEX_HOME"]) / "blobs" / "sha256" / sha[:2] / sha[2:]


def test_add_link_makes_the_shared_inode_read_only_and_verify_names_the_outside_path(tmp_path, cli):
    src = write_random_kohya_lora(tmp_path / "style.safetensors", rank=2, seed=1)
    os.chmod(src, 0o640)
    added = cli("add", src, "--name", "style", "--link", "--json")
    assert added.exit_code == 0, added.output
    data = json.loads(added.stdout)
    blob = _blob_path(data["sha256"])
    assert data["linked"] is True and blob.stat().st_ino == src.stat().st_ino
    assert stat.S_IMODE(src.stat().st_mode) & 0o222 == 0  # chmod a-w, as DVC does
    assert str(src) in added.stderr and "read-only" in added.stderr
    assert cli("verify").exit_code == 0

    os.chmod(src, 0o644)  # the user insists: edits the outside file in place
    with open(src, "r+b") as fh:
        fh.seek(-1, os.SEEK_END)
        last = fh.read(1)
        fh.seek(-1, os.SEEK_END)
        fh.write(bytes([last[0] ^ 0xFF]))
    result = cli("verify", "--json")
    assert result.exit_code == 1
    problem = json.loads(result.stdout)["problems"][0]
    assert problem["blob"] == data["sha256"] and problem["shared_with"] == [str(src)]
    assert str(src) in problem["problem"] and "corrupted" in problem["problem"]
    human = cli("verify")
    assert human.exit_code == 1 and str(src) in human.stdout


def test_link_record_does_not_name_a_replaced_file_and_gc_gives_the_mode_back(tmp_path, cli):
    src = write_random_kohya_lora(tmp_path / "style.safetensors", rank=2, seed=1)
    os.chmod(src, 0o640)
    data = json.loads(cli("add", src, "--name", "style", "--link", "--json").stdout)
    blob = _blob_path(data["sha256"])
    # corrupt the blob itself (not through the outside file): verify names no outside path
    other = tmp_path / "unrelated.safetensors"
    os.chmod(blob, 0o644)
    other.write_bytes(src.read_bytes())
    os.replace(other, src)  # an editor's save: a new inode at the same path
    with open(blob, "r+b") as fh:
        fh.write(b"x")
    problem = json.loads(cli("verify", "--json").stdout)["problems"][0]
    assert "shared_with" not in problem and "hardlink" not in problem["problem"]
    # the outside file shares the blob again; gc frees the blob and gives the file its mode back
    fresh = write_random_kohya_lora(tmp_path / "fresh.safetensors", rank=2, seed=5)
    os.chmod(fresh, 0o640)
    fresh_data = json.loads(cli("add", fresh, "--name", "fresh", "--link", "--json").stdout)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o440
    assert cli("rm", "fresh@1.0.0").exit_code == 0 and cli("gc").exit_code == 0
    assert not _blob_path(fresh_data["sha256"]).exists()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o640
    assert not list((Path(os.environ["LORADEX_HOME"]) / "blobs" / "links").rglob(fresh_data["sha256"][2:] + "*"))


def test_damaged_link_record_is_not_trusted(tmp_path, cli):
    src = write_random_kohya_lora(tmp_path / "style.safetensors", rank=2, seed=1)
    data = json.loads(cli("add", src, "--name", "style", "--link", "--json").stdout)
    sha = data["sha256"]
    record = Path(os.environ["LORADEX_HOME"]) / "blobs" / "links" / sha[:2] / f"{sha[2:]}.json"
    assert json.loads(record.read_text())["links"][0]["path"] == str(src)
    record.write_text('{"links": [{"path": 5}]}')
    os.chmod(src, 0o644)
    with open(src, "r+b") as fh:
        fh.write(b"x")
    result = cli("verify", "--json")
    assert result.exit_code == 1 and "corrupted" in json.loads(result.stdout)["problems"][0]["problem"]


@pytest.mark.parametrize("command", ["sync-folder", "export"])
def test_a_folder_that_cannot_be_made_is_a_one_line_error(styled, tmp_path, command, cli):
    catalog, v1, _, _ = styled
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    args = [command, v1.ref, blocker / "webui"] if command == "export" else [command, blocker / "webui"]
    result = cli(*args)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "a-file" in lines[0]


def test_lock_file_symlinked_out_creates_nothing_outside(synced, cli):
    catalog, webui, outside, _ = synced
    (webui / ".loradex-sync.lock").unlink()
    (webui / ".loradex-sync.lock").symlink_to(outside / "created-by-loradex")
    result = cli("sync-folder", webui)
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert not (outside / "created-by-loradex").exists()
