"""``export REF DEST --layout`` (A1111 sidecars) and ``convert PATH --to``."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from _webui_fixtures import A1111_JSON, CIVITAI_INFO, make_webui_tree
from loradex.cli.app import app
from loradex.merge.synthetic_adapters import write_random_embedding, write_random_kohya_lora
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import UsageError
from loradex.registry.folders.webui_export import LAYOUTS, export_version
from loradex.registry.folders.webui_import import import_tree

runner = CliRunner()


def _ok(*args):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture
def imported(tmp_path):
    tree = make_webui_tree(tmp_path / "webui")
    catalog = Catalog()
    import_tree(catalog, tree.root)
    return catalog, tree


def test_export_a1111_writes_model_and_the_sidecars_a1111_reads(imported, tmp_path):
    catalog, tree = imported
    dest = tmp_path / "other-webui"
    result = export_version(catalog, "style", dest, layout="a1111")
    lora = dest / "models" / "Lora"
    assert sorted(p.name for p in lora.iterdir()) == [
        "style.civitai.info", "style.json", "style.preview.png", "style.safetensors"]
    assert (lora / "style.safetensors").read_bytes() == tree.files["style"].read_bytes()
    meta = json.loads((lora / "style.json").read_text())
    assert meta["activation text"] == A1111_JSON["activation text"]
    assert meta["preferred weight"] == 0.7
    assert meta["sd version"] == "SD1"
    assert meta["description"] == A1111_JSON["description"]
    assert meta["notes"].startswith(A1111_JSON["notes"]) and "loradex style@1.0.0" in meta["notes"]
    assert json.loads((lora / "style.civitai.info").read_text()) == CIVITAI_INFO
    assert (lora / "style.preview.png").read_bytes() == tree.preview
    assert len(result.files) == 4
    assert not [p for p in lora.iterdir() if p.name.startswith(".tmp-loradex")]


def test_export_round_trips_through_import(imported, tmp_path):
    """What export writes, import reads back to the same facts."""
    catalog, _ = imported
    dest = tmp_path / "round"
    export_version(catalog, "style", dest, layout="comfyui")
    original = catalog.resolve("style")
    fresh = Catalog(tmp_path / "home2")
    report = import_tree(fresh, dest)
    assert [i.ref for i in report.items] == ["style@1.0.0"]
    back = fresh.resolve("style")
    assert back.sha256 == original.sha256
    assert back.extra["civitai"] == original.extra["civitai"]
    assert back.extra["preview_sha256"] == original.extra["preview_sha256"]
    assert back.extra["webui"]["activation text"] == "wtrclr, soft"
    assert back.extra["webui"]["preferred weight"] == 0.7


def test_comfyui_layout_for_an_embedding_without_civitai(imported, tmp_path):
    catalog, tree = imported
    dest = tmp_path / "comfy"
    export_version(catalog, "neg", dest, layout="comfyui")
    folder = dest / "models" / "embeddings"
    assert sorted(p.name for p in folder.iterdir()) == ["neg.json", "neg.safetensors"]
    assert (folder / "neg.safetensors").read_bytes() == tree.files["neg"].read_bytes()
    # No A1111 sidecar was imported: the activation text comes from the version's trigger words.
    words = catalog.resolve("neg").trigger_words
    assert json.loads((folder / "neg.json").read_text())["activation text"] == ", ".join(words)


def test_civitai_info_is_rebuilt_from_ids_when_only_ids_are_known(tmp_path):
    catalog = Catalog()
    src = write_random_kohya_lora(tmp_path / "x.safetensors", rank=2, seed=5, trigger="xx")
    v = add_file(catalog, src, name="x", extra={"civitai": {"versionId": 77, "modelId": 7,
                                                             "modelName": "X", "baseModel": "SD 1.5"}}).version
    export_version(catalog, "x", tmp_path / "out")
    info = json.loads((tmp_path / "out" / "models" / "Lora" / "x.civitai.info").read_text())
    assert (info["id"], info["modelId"], info["baseModel"]) == (77, 7, "SD 1.5")
    assert info["files"][0]["hashes"]["SHA256"] == v.sha256.upper()
    assert info["files"][0]["hashes"]["AutoV2"] == v.autov2.upper()
    assert info["model"]["name"] == "X" and info["trainedWords"] == list(v.trigger_words)


def test_unknown_layout_is_a_usage_error(imported, tmp_path):
    catalog, _ = imported
    with pytest.raises(UsageError, match="unknown layout"):
        export_version(catalog, "style", tmp_path / "x", layout="invoke-classic")
    assert set(LAYOUTS) >= {"a1111", "comfyui"}


def test_export_with_format_converts_and_back_is_bit_exact(imported, tmp_path):
    catalog, tree = imported
    dest = tmp_path / "conv"
    data = json.loads(_ok("export", "style", str(dest), "--format", "diffusers", "--json").stdout)
    assert data["converted_to"] == "diffusers"
    out = dest / "models" / "Lora" / "style.safetensors"
    converted = load_file(str(out))
    assert all(not k.startswith("lora_unet_") for k in converted)
    assert (dest / "models" / "Lora" / "style.json").is_file()
    back = tmp_path / "back.safetensors"
    _ok("convert", str(out), "--to", "kohya", "-o", str(back))
    original = load_file(str(tree.files["style"]))
    again = load_file(str(back))
    assert set(again) == set(original)
    for key, tensor in original.items():
        assert again[key].dtype == tensor.dtype and bool((again[key] == tensor).all()), key


def test_convert_embedding_a1111_to_diffusers_and_back(tmp_path):
    src = write_random_embedding(tmp_path / "neg.safetensors", n_vectors=3, dim=768, seed=2)
    mid = tmp_path / "neg-diffusers.safetensors"
    _ok("convert", str(src), "--to", "diffusers", "-o", str(mid))
    as_diffusers = load_file(str(mid))
    # keyed by the file name, as A1111 names embeddings (and as the catalog lists its trigger)
    assert list(as_diffusers) == ["neg"] and tuple(as_diffusers["neg"].shape) == (3, 768)
    back = tmp_path / "neg-a1111.safetensors"
    _ok("convert", str(mid), "--to", "a1111", "-o", str(back))
    assert bool((load_file(str(back))["emb_params"] == load_file(str(src))["emb_params"]).all())


def test_convert_refuses_what_it_cannot_convert(tmp_path, capsys):
    from loradex.cli.main import main

    src = write_random_kohya_lora(tmp_path / "l.safetensors", rank=2, seed=1)
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(src), "--to", "nonsense", "-o", str(tmp_path / "o.safetensors")])
    assert exc.value.code != 0 and capsys.readouterr().err.startswith("error:")
    assert not (tmp_path / "o.safetensors").exists()
