"""Issue 22, "Sidecars other tools read and write": ComfyUI LoRA Manager's ``.metadata.json``,
Stability Matrix's ``.cm-info.json``, Civitai Helper's ``.civitai.info`` and A1111's ``.json`` are
read on import (triggers, base + variant, Civitai ids as a pulled_from edge when the SHA256 is the
file's), written by export / sync-folder ``--sidecars`` and read back to the same facts; hostile
sidecars are refused in one line or their field ignored with a note; diffusers'
``lora_adapter_metadata`` and ModelSpec prediction_type / timestep_range reach ``inspect --json``;
a pushed card says ``base_model_relation: adapter``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from loradex.cli.app import app
from loradex.merge.synthetic_adapters import write_random_kohya_lora
from loradex.registry.catalog.store import Catalog
from loradex.registry.files.safetensors_writer import save_safetensors
from loradex.registry.folders.webui_import import import_tree, read_sidecars

runner = CliRunner()
SDXL_MODULES = {"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k": (2048, 640),
                "lora_te2_text_model_encoder_layers_0_self_attn_q_proj": (1280, 1280)}
ALL = "civitai-helper,lora-manager,stability-matrix,a1111"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def civitai_version(vid: int, mid: int, file_name: str, sha256: str, base: str, words: list[str]) -> dict:
    """Civitai's model-version JSON, as LoRA Manager keeps it under ``civitai``."""
    return {"id": vid, "modelId": mid, "name": "v1", "baseModel": base, "trainedWords": words,
            "description": "<p>ink</p>", "model": {"name": "Ink Lines", "type": "LORA", "nsfw": False},
            "images": [], "files": [{"id": vid * 10, "name": file_name, "type": "Model", "primary": True,
                                     "sizeKB": 1.0, "hashes": {"SHA256": sha256.upper()}}]}


def lora_manager(model: Path, *, base: str, civitai: dict | None, **over) -> dict:
    """``<stem>.metadata.json`` in LoRA Manager's own shape (LoraMetadata.to_dict())."""
    return {"file_name": model.stem, "model_name": "Ink Lines", "file_path": f"C:/ComfyUI/models/loras/{model.name}",
            "size": model.stat().st_size, "modified": 1733500000.5, "sha256": sha(model), "base_model": base,
            "preview_url": "C:/ComfyUI/models/loras/secret.preview.png", "preview_nsfw_level": 0, "notes": "n",
            "from_civitai": civitai is not None, "civitai": civitai, "tags": ["style"], "modelDescription": "ink",
            "civitai_deleted": False, "favorite": True, "exclude": False, "db_checked": False,
            "last_checked_at": 0, "usage_tips": json.dumps({"strength": 0.6, "clip_strength": 1.0}), **over}


def stability_matrix(*, vid: int, sha256: str, base: str, words: list[str]) -> dict:
    """``<stem>.cm-info.json``: Stability Matrix's ConnectedModelInfo (PascalCase, nulls left out)."""
    return {"ModelId": 80, "ModelName": "Soft Light", "ModelDescription": "d", "Nsfw": False, "Tags": ["light"],
            "ModelType": "LORA", "VersionId": vid, "VersionName": "v2", "BaseModel": base,
            "RemoteFileName": "soft.safetensors", "RemoteFileId": 4, "ImportedAt": "2026-01-02T03:04:05+00:00",
            "Hashes": {"SHA256": sha256.upper(), "BLAKE3": "ab"}, "TrainedWords": words}


def _dump(path: Path, data) -> None:
    path.write_text(json.dumps(data))


@pytest.fixture
def tree(tmp_path) -> Path:
    """models/Lora with an SDXL LoRA under LoRA Manager's sidecar (Illustrious, Civitai 777, the
    file's own SHA256), an SD1 LoRA under Stability Matrix's (Civitai 888, another SHA256), and one
    under Civitai Helper + Stability Matrix sidecars that disagree."""
    lora = tmp_path / "webui" / "models" / "Lora"
    lora.mkdir(parents=True)
    lm = write_random_kohya_lora(lora / "ink.safetensors", modules=SDXL_MODULES, rank=2, seed=1,
                                 base_version="sdxl_base_v1-0")
    _dump(lora / "ink.metadata.json", lora_manager(lm, base="Illustrious", civitai=civitai_version(
        777, 70, lm.name, sha(lm), "Illustrious", ["inkline", "bold lines"])))
    sm = write_random_kohya_lora(lora / "soft.safetensors", rank=2, seed=2)
    _dump(lora / "soft.cm-info.json", stability_matrix(vid=888, sha256="ab" * 32, base="SD 1.5", words=["softlit"]))
    both = write_random_kohya_lora(lora / "both.safetensors", rank=2, seed=3)
    _dump(lora / "both.civitai.info", civitai_version(901, 90, both.name, sha(both), "SD 1.5", ["bothword"]))
    _dump(lora / "both.cm-info.json", stability_matrix(vid=902, sha256=sha(both), base="Pony", words=["smword"]))
    return tmp_path / "webui"


def _facts(catalog: Catalog, name: str) -> dict:
    v = catalog.resolve(name)
    return {"base": catalog.get_adapter(name).base, "variant": v.probe.get("variant"),
            "triggers": set(v.trigger_words), "civitai": (v.extra.get("civitai") or {}).get("versionId"),
            "lineage": sorted(e.parent for e in catalog.lineage(v.ref) if e.relation == "pulled_from"),
            "strength": (v.extra.get("lora_manager") or {}).get("strength")}


def test_import_reads_each_tools_sidecar_and_reports_conflicts(tree):
    catalog = Catalog()
    report = import_tree(catalog, tree)
    items = {i.path: i for i in report.items}
    assert report.counts() == {"added": 3, "duplicate": 0, "refused": 0, "unchanged": 0}

    ink = _facts(catalog, "ink")
    assert ink == {"base": "sdxl", "variant": "illustrious", "triggers": {"inkline", "bold lines"},
                   "civitai": 777, "lineage": ["civitai:777"], "strength": 0.6}
    assert "ink.metadata.json" in catalog.resolve("ink").probe["variant_evidence"]
    assert catalog.resolve("ink").extra["lora_manager"]["tags"] == ["style"]

    soft = _facts(catalog, "soft")  # Stability Matrix names version 888, but its SHA256 is another file's
    assert soft["base"] == "sd1" and soft["triggers"] >= {"softlit"} and soft["civitai"] == 888
    assert soft["lineage"] == []
    assert "soft.cm-info.json: Civitai version 888 not recorded as the source: its SHA256 is not the file's" \
        in items["models/Lora/soft.safetensors"].reason

    both = _facts(catalog, "both")  # Civitai Helper first; Stability Matrix's Pony / 902 reported
    assert both["civitai"] == 901 and both["triggers"] >= {"bothword", "smword"}
    assert both["lineage"] == ["civitai:901", "civitai:902"]  # both vouch for this very file
    reason = items["models/Lora/both.safetensors"].reason
    assert "both.cm-info.json says base sdxl (Pony), both.civitai.info says sd1; kept sd1" in reason
    assert "both.cm-info.json names Civitai version 902, another sidecar 901; kept 901" in reason


def test_the_variant_comes_from_the_first_sidecar_naming_one_and_a_different_one_is_noted(tmp_path):
    model = write_random_kohya_lora(tmp_path / "x.safetensors", modules=SDXL_MODULES, rank=1)
    _dump(tmp_path / "x.civitai.info", civitai_version(1, 2, model.name, sha(model), "SDXL 1.0", []))
    _dump(tmp_path / "x.metadata.json", lora_manager(model, base="Illustrious", civitai=None))
    _dump(tmp_path / "x.cm-info.json", stability_matrix(vid=1, sha256=sha(model), base="Pony", words=[]))
    facts = read_sidecars(model)
    assert (facts.base, facts.variant, facts.variant_source.file) == ("sdxl", "illustrious", "x.metadata.json")
    assert "x.cm-info.json says Pony, x.metadata.json Illustrious; kept illustrious" in facts.notes


def test_export_and_sync_write_each_sidecar_and_reimport_gives_the_same_facts(tree, tmp_path):
    catalog = Catalog()
    import_tree(catalog, tree)
    version = catalog.resolve("ink")
    dest = tmp_path / "out"
    result = runner.invoke(app, ["export", "ink", str(dest), "--layout", "comfyui", "--sidecars", ALL, "--json"])
    assert result.exit_code == 0, result.output
    folder = dest / "models" / "loras"
    assert sorted(p.name for p in folder.iterdir()) == [
        "ink.civitai.info", "ink.cm-info.json", "ink.json", "ink.metadata.json", "ink.safetensors"]
    lm = json.loads((folder / "ink.metadata.json").read_text())
    assert lm["sha256"] == version.sha256 == sha(folder / "ink.safetensors")
    assert lm["file_path"] == f"{dest.resolve()}/models/loras/ink.safetensors" and lm["file_name"] == "ink"
    assert lm["base_model"] == "Illustrious" and lm["civitai"]["id"] == 777 and lm["from_civitai"] is True
    assert set(lm["civitai"]["trainedWords"]) == {"inkline", "bold lines"}
    assert json.loads(lm["usage_tips"])["strength"] == 0.6
    sm = json.loads((folder / "ink.cm-info.json").read_text())
    assert sm["VersionId"] == 777 and sm["ModelId"] == 70 and sm["BaseModel"] == "Illustrious"
    assert sm["Hashes"]["SHA256"] == version.sha256.upper() and set(sm["TrainedWords"]) == {"inkline", "bold lines"}
    assert None not in sm.values()

    # each format alone carries the facts back into a fresh catalog
    expected = {"base": "sdxl", "triggers": {"inkline", "bold lines"}}
    carries = {"lora-manager": {"variant": "illustrious", "civitai": 777, "lineage": ["civitai:777"]},
               "stability-matrix": {"variant": "illustrious", "civitai": 777, "lineage": ["civitai:777"]},
               "civitai-helper": {"variant": "illustrious", "civitai": 777, "lineage": ["civitai:777"]},
               "a1111": {"variant": None, "civitai": None, "lineage": []}}
    for n, (fmt, more) in enumerate(carries.items()):
        out = tmp_path / f"only-{fmt}"
        assert runner.invoke(app, ["export", "ink", str(out), "--sidecars", fmt]).exit_code == 0
        again = Catalog(tmp_path / f"home-{n}")
        assert import_tree(again, out).counts()["added"] == 1
        got = _facts(again, "ink")
        assert {k: got[k] for k in ("base", "variant", "civitai", "lineage")} == {"base": expected["base"], **more}, fmt
        assert got["triggers"] == expected["triggers"], fmt

    # sync-folder: writes the chosen sidecars, rewrites nothing on a second run, drops a deselected one
    assert runner.invoke(app, ["alias", "set", "ink@1.0.0", "production"]).exit_code == 0
    synced = tmp_path / "synced"
    first = runner.invoke(app, ["sync-folder", str(synced), "--sidecars", "lora-manager,stability-matrix", "--json"])
    assert first.exit_code == 0, first.output
    lora_dir = synced / "models" / "Lora"
    assert {p.name for p in lora_dir.iterdir()} == {"ink.safetensors", "ink.metadata.json", "ink.cm-info.json"}
    second = json.loads(runner.invoke(app, ["sync-folder", str(synced), "--sidecars",
                                            "lora-manager,stability-matrix", "--json"]).stdout)
    assert second["counts"] == {"unchanged": 3}
    third = json.loads(runner.invoke(app, ["sync-folder", str(synced), "--sidecars", "a1111", "--json"]).stdout)
    assert third["counts"] == {"unchanged": 1, "added": 1, "removed": 2}
    assert {p.name for p in lora_dir.iterdir()} == {"ink.safetensors", "ink.json"}


def test_hostile_sidecars_are_refused_in_one_line_or_their_field_ignored(tmp_path):
    model = write_random_kohya_lora(tmp_path / "m.safetensors", rank=1)
    cases = {  # sidecar → (content, the one line it is skipped with)
        "m.metadata.json": ({"civitai": "not an object"}, "field civitai:"),
        "m.cm-info.json": ({"TrainedWords": 5}, "field TrainedWords:"),
    }
    for name, (data, _) in cases.items():
        _dump(tmp_path / name, data)
    facts = read_sidecars(model)
    assert sorted(n for n, _ in facts.skipped) == sorted(cases)
    assert all(why.startswith(cases[n][1]) and "\n" not in why for n, why in facts.skipped), facts.skipped
    assert facts.extra == {} and facts.triggers == []

    (tmp_path / "m.metadata.json").write_bytes(b'{"notes": "' + b"x" * (1 << 20) + b'"}')  # over 1 MiB
    _dump(tmp_path / "m.cm-info.json", {"Tags": ["x"], "Stats": json.loads("[" * 80 + "]" * 80)})  # too deep
    skipped = dict(read_sidecars(model).skipped)
    assert "over the 1048576-byte cap" in skipped["m.metadata.json"]
    assert "nested deeper than" in skipped["m.cm-info.json"]

    # fields ignored with a note; paths a sidecar names are never opened or kept
    (tmp_path / "secret.png").write_bytes(b"\x89PNG\r\n\x1a\nsecret")
    _dump(tmp_path / "m.metadata.json", lora_manager(
        model, base="SD 1.5", civitai=civitai_version(5, 6, model.name, sha(model), "SD 1.5", ["ok", "y" * 500]),
        usage_tips="{not json", file_path=str(tmp_path / "secret.png"), preview_url=str(tmp_path / "secret.png")))
    (tmp_path / "m.cm-info.json").unlink()
    facts = read_sidecars(model)
    assert facts.skipped == [] and facts.triggers == ["ok"] and facts.preview is None
    assert any("1 trigger word(s) dropped" in n for n in facts.notes)
    assert any(n.startswith("m.metadata.json: usage_tips ignored (not valid JSON") for n in facts.notes)
    assert "secret.png" not in json.dumps(facts.extra)

    # through the CLI: one warning line per skipped sidecar, exit 1; an unknown --sidecars name is a usage error
    _dump(tmp_path / "m.cm-info.json", {"VersionId": {"x": 1}})
    result = runner.invoke(app, ["import", str(tmp_path)])
    assert result.exit_code == 1
    assert "m.cm-info.json: skipped: field VersionId:" in result.output
    bad = runner.invoke(app, ["export", "m", str(tmp_path / "o"), "--sidecars", "lora-manager,bogus"])
    assert bad.exit_code != 0 and "unknown sidecar format 'bogus'" in f"{bad.output} {bad.exception}"
    assert not (tmp_path / "o").exists()


def test_lora_adapter_metadata_and_modelspec_reach_inspect_json(tmp_path):
    from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin
    from peft import LoraConfig
    import torch

    g = torch.Generator().manual_seed(0)
    layers = {}
    for mod, (inp, out, r) in {"down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q": (32, 32, 4),
                               "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k": (32, 32, 2)}.items():
        layers[f"{mod}.lora_A.weight"] = torch.randn(r, inp, generator=g)
        layers[f"{mod}.lora_B.weight"] = torch.randn(out, r, generator=g)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_k"], rank_pattern={"to_k": 2},
                        alpha_pattern={"to_k": 3}).to_dict()
    StableDiffusionLoraLoaderMixin.save_lora_weights(tmp_path, unet_lora_layers=layers,
                                                     unet_lora_adapter_metadata=config, safe_serialization=True)
    result = runner.invoke(app, ["inspect", str(tmp_path / "pytorch_lora_weights.safetensors"), "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["format"] == "diffusers" and facts["ranks"] == [2, 4]
    assert facts["alphas"] == [3.0, 8.0] and facts["target_modules"] == ["to_k", "to_q"]
    unet = facts["training"]["lora_adapter_metadata"]["unet"]
    assert unet["r"] == 4 and unet["lora_alpha"] == 8 and unet["rank_pattern"] == {"to_k": 2}
    assert not [n for n in facts["notes"] if "lora_adapter_metadata" in n]

    # exported for a webui it is converted to kohya: LoRA Manager's sidecar states the file written
    assert runner.invoke(app, ["add", str(tmp_path / "pytorch_lora_weights.safetensors"), "--name", "dfs"]).exit_code == 0
    out = json.loads(runner.invoke(app, ["export", "dfs", str(tmp_path / "w"), "--sidecars", "lora-manager",
                                         "--json"]).stdout)
    assert out["converted_to"] == "kohya"
    written = tmp_path / "w" / "models" / "Lora" / "dfs.safetensors"
    lm = json.loads(written.with_name("dfs.metadata.json").read_text())
    assert (lm["sha256"], lm["size"]) == (sha(written), written.stat().st_size)
    assert lm["sha256"] != Catalog().resolve("dfs").sha256  # the stored diffusers file is another

    # wrong types are ignored field by field, with a note
    save_safetensors({f"unet.{k}": v for k, v in layers.items()}, tmp_path / "bad.safetensors",
                     {"lora_adapter_metadata": json.dumps({"unet.r": "four", "unet.lora_alpha": 16,
                                                           "unet.target_modules": [1, 2]})})
    bad = json.loads(runner.invoke(app, ["inspect", str(tmp_path / "bad.safetensors"), "--json"]).stdout)
    assert bad["alphas"] == [16.0] and bad["training"]["lora_adapter_metadata"] == {"unet": {"lora_alpha": 16}}
    assert "lora_adapter_metadata: unet.r, unet.target_modules ignored (wrong type or too large)" in bad["notes"]

    # ModelSpec prediction_type / timestep_range
    v_lora = write_random_kohya_lora(tmp_path / "v.safetensors", rank=1, seed=5)
    from loradex.registry.files.safetensors_header import read_header
    from safetensors.torch import load_file

    def with_meta(src: Path, dest: Path, extra: dict) -> Path:
        save_safetensors(load_file(src), dest, {**read_header(src).metadata, **extra})
        return dest

    with_meta(v_lora, v_lora, {"modelspec.prediction_type": "v", "modelspec.timestep_range": "200,1000"})
    eps = with_meta(v_lora, tmp_path / "eps.safetensors", {"modelspec.prediction_type": "epsilon",
                                                           "modelspec.timestep_range": "1000,200"})
    shown = json.loads(runner.invoke(app, ["inspect", str(v_lora), "--json"]).stdout)
    assert shown["prediction_type"] == "v" and shown["timestep_range"] == [200, 1000]
    assert shown["training"]["prediction_type"] == "v"
    shown = json.loads(runner.invoke(app, ["inspect", str(eps), "--json"]).stdout)
    assert shown["prediction_type"] == "epsilon" and shown["timestep_range"] is None
    assert "modelspec.timestep_range '1000,200' is not 'LOW,HIGH' (two integers); ignored" in shown["notes"]

    # passed to compat: a v-prediction LoRA stacked with an epsilon one is a warning
    for path, name in ((v_lora, "vlora"), (eps, "epslora")):
        assert runner.invoke(app, ["add", str(path), "--name", name]).exit_code == 0
    table = json.loads(runner.invoke(app, ["compat", "vlora", "epslora", "--json"]).stdout)
    assert any("prediction types" in w and "modelspec.prediction_type=v" in w for w in table["warnings"]), table
    # … and so is a v-prediction LoRA on a base whose scheduler config says epsilon (an epsilon one is not)
    from types import SimpleNamespace

    from loradex.trainer.compat_check import stack_compat

    base = tmp_path / "eps-base"
    (base / "scheduler").mkdir(parents=True)
    _dump(base / "scheduler" / "scheduler_config.json", {"_class_name": "DDIMScheduler", "prediction_type": "epsilon"})
    catalog = Catalog()
    for name, expected in (("vlora", [f"vlora@1.0.0 was trained for v-prediction (modelspec.prediction_type=v) "
                                      f"but base {base} is epsilon"]), ("epslora", [])):
        stacked = SimpleNamespace(version=catalog.resolve(name), kind="lora", te_weight=1.0, unet_weight=0.8)
        assert stack_compat(catalog, str(base), "sd1", [stacked])["warnings"] == expected

    # and searchable: the header's prediction type is among the version's words
    for word, names in (("vpred", ["vlora"]), ("epsilon", ["epslora"])):
        found = json.loads(runner.invoke(app, ["search", word, "--json"]).stdout)
        assert [h["name"] for h in found["hits"]] == names, word


def test_pushed_card_says_base_model_relation_adapter(tmp_path):
    from loradex.registry.remotes.hub_manifest import stage_version

    lora = write_random_kohya_lora(tmp_path / "card.safetensors", rank=1, trigger="cardword")
    assert runner.invoke(app, ["add", str(lora), "--name", "card"]).exit_code == 0
    stage_version(Catalog(), "card", tmp_path / "stage")
    text = (tmp_path / "stage" / "README.md").read_text()
    front = yaml.safe_load(text.split("---")[1])
    assert front["base_model"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert front["base_model_relation"] == "adapter"
