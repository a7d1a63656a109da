"""`loradex resolve` (issue 22): every model a ComfyUI workflow, a PNG, A1111 parameters, Civitai
generation data or a template needs, matched to the catalog or to where it can be had; `--pull`
from a Civitai-style server on 127.0.0.1; and the way back (`export-workflow`, `generate
--save-workflow`) resolving to the same versions."""

from __future__ import annotations

import json
import zlib

import pytest
from typer.testing import CliRunner

from _civitai_fixtures import MODEL_ID, VERSION_ID, FakeCivitai, ServedApp
from _workflow_fixtures import (a1111_parameters, api_prompt, civitai_generation, template_models, text_chunk,
                                tiny_png, ui_workflow, write)
from loradex.cli.app import app
from loradex.merge.synthetic_adapters import TINY_SD1_MODULES, write_random_embedding, write_random_kohya_lora
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.store import Catalog
from loradex.registry.folders.model_needs import resolve_file
from loradex.registry.remotes import add_remote, pull
from loradex.registry.remotes.resolve import ModelNeed, resolve_needs

runner = CliRunner()
TOKEN = "resolve-mirror-token"
AIR = f"urn:air:sd1:lora:civitai:{MODEL_ID}@{VERSION_ID}"
MODULES = {k: v for k, v in TINY_SD1_MODULES.items() if "attentions_2" not in k}  # the tiny UNet's modules


def cli(*args, ok=True):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=True)
    if ok and result.exit_code != 0:
        raise AssertionError(f"loradex {' '.join(map(str, args))} failed: {result.output} {result.exception!r}")
    return result


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """Two LoRAs, an embedding and a version pulled from (fake) Civitai, no remotes."""
    root = tmp_path_factory.mktemp("resolve")
    catalog = Catalog(root / "home")
    a = add_file(catalog, write_random_kohya_lora(root / "ink0.safetensors", modules=MODULES, rank=2, seed=1),
                 name="ink-wash").version
    b = add_file(catalog, write_random_kohya_lora(root / "soft.safetensors", modules=MODULES, rank=2, seed=2),
                 name="soft-light").version
    emb = add_file(catalog, write_random_embedding(root / "emb.safetensors", n_vectors=1, dim=32),
                   name="tiny-emb").version
    wc = write_random_kohya_lora(root / "wc.safetensors", modules=MODULES, rank=2, seed=3)
    pulled = pull(catalog, f"civitai:{VERSION_ID}", transport=FakeCivitai(wc).transport()).version
    return {"root": root, "catalog": catalog, "a": a, "b": b, "emb": emb, "pulled": pulled}


def by_name(report) -> dict:
    return {e["name"] or e["air"] or f"civitai:{e['civitai_version_id']}": e for e in report.to_dict()["models"]}


def answer(entry) -> tuple:
    return entry["kind"], entry["identified_by"], entry["status"], entry["catalog_ref"], entry["matched_by"]


def test_ui_workflow_every_loader_and_stack(home, tmp_path):
    a, b, emb, pulled = home["a"], home["b"], home["emb"], home["pulled"]
    path = write(tmp_path / "wf.json", ui_workflow("ink0.safetensors", a.sha256, "soft.safetensors", "tiny-emb", AIR))
    report = resolve_file(home["catalog"], path)
    got = by_name(report)
    assert report.format == "comfyui-ui"
    assert {k: answer(v) for k, v in got.items()} == {
        "sd15/v1-5-pruned-emaonly.safetensors": ("checkpoint", "name", "unknown", None, None),
        # the node and its template entry are one model: the SHA256 decides
        "ink0.safetensors": ("lora", "sha256", "in_catalog", a.ref, "sha256"),
        "soft.safetensors": ("lora", "name", "in_catalog", b.ref, "file_name"),
        "manager-pick": ("lora", "name", "unknown", None, None),
        AIR: ("lora", "air", "in_catalog", pulled.ref, "civitai_version"),
        "tiny-emb": ("embedding", "name", "in_catalog", emb.ref, "name"),
    }  # the muted node and the switched-off rows are not needed
    assert got["ink0.safetensors"]["weight"] == 0.8 and got["soft.safetensors"]["weight"] == 0.6
    assert got[AIR]["civitai_model_id"] == MODEL_ID and got["manager-pick"]["weight"] == 0.4
    assert "bytes were not compared" in got["soft.safetensors"]["notes"][0]


def test_png_with_both_comfyui_chunks(home, tmp_path):
    a, b = home["a"], home["b"]
    png = tiny_png({"prompt": json.dumps(api_prompt("ink0.safetensors", "soft.safetensors", "tiny-emb")),
                    "workflow": json.dumps(ui_workflow("ink0.safetensors", a.sha256, "soft.safetensors",
                                                       "tiny-emb", AIR))})
    result = cli("resolve", write(tmp_path / "comfy.png", png), "--json", "--home", home["catalog"].home)
    data = json.loads(result.stdout)
    assert data["format"] == "comfyui-ui+comfyui-api"
    got = {m["name"] or m["air"]: m for m in data["models"]}
    # the API graph's entries merged into the UI's: one row per model, the hash kept
    assert len(got) == 6 and data["counts"] == {"unknown": 2, "in_catalog": 4}
    assert answer(got["ink0.safetensors"]) == ("lora", "sha256", "in_catalog", a.ref, "sha256")
    assert got["soft.safetensors"]["catalog_ref"] == b.ref


def test_api_workflow_alone(home, tmp_path):
    path = write(tmp_path / "api.json", api_prompt("ink0.safetensors", "soft.safetensors", "tiny-emb"))
    got = by_name(resolve_file(home["catalog"], path))
    assert sorted(got) == ["ink0.safetensors", "manager-pick", "soft.safetensors", "tiny-emb",
                           "v1-5-pruned-emaonly.safetensors"]
    assert answer(got["ink0.safetensors"]) == ("lora", "name", "in_catalog", home["a"].ref, "file_name")
    assert got["ink0.safetensors"]["weight"] == 0.8 and got["soft.safetensors"]["weight"] == 0.6


def test_a1111_png_parameters_hashes(home, tmp_path):
    a, emb = home["a"], home["emb"]
    text = a1111_parameters("ink0", a.autov3[:12], "tiny-emb", emb.sha256[:12], "6ce0161689")
    got = by_name(resolve_file(home["catalog"], write(tmp_path / "a1111.png", tiny_png({"parameters": text}))))
    assert {k: answer(v) for k, v in got.items()} == {
        "v1-5-pruned-emaonly": ("checkpoint", "autov2", "unknown", None, None),
        "ink0": ("lora", "autov3", "in_catalog", a.ref, "autov3"),  # A1111's LoRA hash: AutoV3, 12 hex
        "tiny-emb": ("embedding", "sha256", "in_catalog", emb.ref, "sha256"),  # TI hash: SHA256, 12 hex
        "no-hash-given": ("lora", "name", "unknown", None, None),
    }
    assert got["ink0"]["weight"] == 0.8 and got["no-hash-given"]["weight"] == 0.3


def test_civitai_generation_data(home, tmp_path):
    b, pulled = home["b"], home["pulled"]
    path = write(tmp_path / "image.json", civitai_generation(AIR, VERSION_ID, b.autov2))
    report = resolve_file(home["catalog"], path)
    assert report.format == "civitai-generation"
    rows = report.to_dict()["models"]
    # the resource by version id and the AIR name the same Civitai version: one row
    assert [answer(r) for r in rows] == [
        ("checkpoint", "civitai_version", "unknown", None, None),
        ("lora", "air", "in_catalog", pulled.ref, "civitai_version"),
        ("lora", "autov2", "in_catalog", b.ref, "autov2"),
    ]
    assert rows[1]["air"] == AIR and rows[1]["weight"] == 0.9


def test_template_models_and_hf_urls(home, tmp_path):
    path = write(tmp_path / "template.json", template_models("ink0.safetensors", home["a"].sha256))
    rows = resolve_file(home["catalog"], path).to_dict()["models"]
    assert answer(rows[1]) == ("lora", "sha256", "in_catalog", home["a"].ref, "sha256")
    assert (rows[0]["status"], rows[0]["kind"]) == ("available", "checkpoint")
    assert rows[0]["sources"][0]["ref"] == "hf://Comfy-Org/stable-diffusion-v1-5-archive@main"


def _hostile(tmp_path):
    big = b"\x00" * (40 << 20)
    good = text_chunk("workflow", b"{}")
    crc_broken = good[:-1] + bytes([good[-1] ^ 1])
    return {
        "huge-chunk.png": (tiny_png(extra_chunks=[(200 << 20).to_bytes(4, "big") + b"tEXt" + b"x" * 64]),
                           "over the"),
        "bomb.png": (tiny_png(extra_chunks=[text_chunk("workflow", b"\0" + zlib.compress(big, 9), b"zTXt")]),
                     "inflating past"),
        "not-utf8.png": (tiny_png(extra_chunks=[text_chunk("workflow", b"\0\0\0\0" + b"{\xff\xfe}", b"iTXt")]),
                         "not UTF-8"),
        "bad-crc.png": (tiny_png(extra_chunks=[crc_broken]), "wrong CRC"),
        "deep.json": (b"[" * 5000 + b"]" * 5000, "nested deeper"),
        "latin1.txt": (b"a cat\nSteps: 20, Model: caf\xe9", "not UTF-8"),
        "other.json": (b'{"hello": "world"}', "not a ComfyUI workflow"),
        "bad-hash.json": (json.dumps({"models": [{"name": "x", "hash": "zz", "hash_type": "SHA256"}]}).encode(),
                          "hash must be 64 hex"),
    }


def test_hostile_inputs_refused_in_one_line(home, tmp_path, capsys):
    """Through the console script's own main(): exit 1 and one stderr line naming the file."""
    from loradex.cli.main import main

    for name, (data, words) in _hostile(tmp_path).items():
        path = write(tmp_path / name, data)
        with pytest.raises(SystemExit) as exit_:
            main(["resolve", str(path), "--home", str(home["catalog"].home)])
        lines = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 1 and len(lines) == 1, (name, lines)
        assert str(path) in lines[0] and words in lines[0], (name, lines[0])


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    """A team's `loradex serve` (its Civitai-style API) holding a LoRA the user does not have."""
    root = tmp_path_factory.mktemp("team")
    catalog = Catalog(root / "team-home")
    only_there = add_file(catalog, write_random_kohya_lora(root / "far.safetensors", modules=MODULES, rank=2,
                                                           seed=9), name="far-away").version
    from loradex.registry.server.civitai_api import create_civitai_app

    with ServedApp(create_civitai_app(catalog, token=TOKEN)) as server:
        yield server, only_there


def test_pull_missing_lora_from_a_civitai_style_remote(team_server, tmp_path, monkeypatch):
    server, far = team_server
    monkeypatch.setenv("CIVITAI_TOKEN", TOKEN)
    catalog = Catalog(tmp_path / "mine")
    add_remote(catalog, "team", server.url, kind="civitai")
    text = a1111_parameters("far", far.autov3[:12], "x", "0" * 12, "6ce0161689")
    path = write(tmp_path / "needs.txt", text)
    far_row = by_name(resolve_file(catalog, path))["far"]
    assert far_row["status"] == "available" and far_row["catalog_ref"] is None
    source = far_row["sources"][0]
    assert (source["remote"], source["via"], source["sha256"]) == ("team", "autov3", far.sha256)
    assert source["ref"] == f"team:{source['version_id']}"
    # the same server as a `mirror` remote: asked through its Civitai-style API with the mirror's token
    monkeypatch.setenv("LORADEX_TOKEN_TEAMMIRROR", TOKEN)
    add_remote(catalog, "teammirror", f"{server.url}/team", kind="mirror")
    only_mirror = by_name(resolve_file(catalog, path, remote="teammirror"))["far"]
    assert [s["ref"] for s in only_mirror["sources"]] == [f"mirror://teammirror/far-away@{far.version}"]

    result = cli("resolve", path, "--pull", "--json", "--home", catalog.home)
    pulled = {m["name"]: m for m in json.loads(result.stdout)["models"]}["far"]
    assert pulled["status"] == "pulled" and pulled["matched_by"] == "autov3"
    assert catalog.resolve(pulled["catalog_ref"]).sha256 == far.sha256  # the same bytes, verified
    again = by_name(resolve_file(catalog, path))["far"]
    assert (again["status"], again["catalog_ref"]) == ("in_catalog", pulled["catalog_ref"])


def _check_links(workflow: dict) -> None:
    """Every link as ComfyUI's frontend reads it: both ends name it, types agree, ids are counted."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for link_id, origin, origin_slot, target, target_slot, kind in workflow["links"]:
        out = nodes[origin]["outputs"][origin_slot]
        assert link_id in out["links"] and out["type"] == kind
        assert nodes[target]["inputs"][target_slot]["link"] == link_id
        assert nodes[target]["inputs"][target_slot]["type"] == kind
    assert all(i["link"] is not None for n in workflow["nodes"] for i in n["inputs"])
    assert workflow["last_node_id"] == max(nodes) and workflow["last_link_id"] == len(workflow["links"])


def test_export_workflow_round_trip(home, tmp_path):
    catalog = Catalog(tmp_path / "export-home")
    a = add_file(catalog, home["root"] / "ink0.safetensors", name="ink-wash", alias="production").version
    b = add_file(catalog, home["root"] / "soft.safetensors", name="soft-light").version
    emb = add_file(catalog, home["root"] / "emb.safetensors", name="tiny-emb").version
    add_remote(catalog, "teamhub", "http://127.0.0.1:9/team", kind="mirror")
    out = tmp_path / "wf.json"
    cli("export-workflow", "a cat <lora:ink-wash@production:0.8>, <lora:soft-light:0.5:0.25>, <tiny-emb>",
        "--base", "v1-5-pruned-emaonly.safetensors", "--seed", "42", "--steps", "12", "--cfg", "6.5",
        "-o", out, "--home", catalog.home)
    wf = json.loads(out.read_text())
    _check_links(wf)
    types = [n["type"] for n in wf["nodes"]]
    assert types == ["CheckpointLoaderSimple", "LoraLoader", "LoraLoader", "CLIPTextEncode", "CLIPTextEncode",
                     "EmptyLatentImage", "KSampler", "VAEDecode", "SaveImage"]
    loras = [n for n in wf["nodes"] if n["type"] == "LoraLoader"]
    assert [l["widgets_values"] for l in loras] == [["ink-wash.safetensors", 0.8, 0.8],
                                                   ["soft-light.safetensors", 0.25, 0.5]]  # model=UNet, clip=TE
    assert loras[0]["properties"]["models"] == [{
        "name": "ink-wash.safetensors", "directory": "loras", "hash": a.sha256, "hash_type": "SHA256",
        "url": "http://127.0.0.1:9/team/ink-wash/resolve/v1.0.0/ink-wash.safetensors"}]
    assert wf["nodes"][3]["widgets_values"] == ["a cat, embedding:tiny-emb.safetensors"]  # ComfyUI's syntax
    assert wf["nodes"][6]["widgets_values"] == [42, "fixed", 12, 6.5, "euler", "normal", 1.0]
    # the model chain runs checkpoint → LoRA → LoRA → KSampler
    link = {(l[3], l[4]): l[1] for l in wf["links"]}
    assert link[(2, 0)] == 1 and link[(3, 0)] == 2 and link[(7, 0)] == 3

    rows = {m["name"]: m for m in resolve_file(catalog, out).to_dict()["models"]}
    assert answer(rows["ink-wash.safetensors"]) == ("lora", "sha256", "in_catalog", a.ref, "sha256")
    assert answer(rows["soft-light.safetensors"]) == ("lora", "sha256", "in_catalog", b.ref, "sha256")
    assert rows["v1-5-pruned-emaonly.safetensors"]["status"] == "unknown"
    assert answer(rows["tiny-emb.safetensors"]) == ("embedding", "sha256", "in_catalog", emb.ref, "sha256")
    assert len(rows) == 4
    # a mirror URL without a hash still says where the file is: the mirror's pull ref
    need = ModelNeed(kind="lora", name="elsewhere.safetensors", url=rows["ink-wash.safetensors"]["url"])
    entry = resolve_needs(catalog, [need]).entries[0]
    assert entry.status == "available" and entry.sources[0]["ref"] == "mirror://teamhub/ink-wash@v1.0.0"


def test_generate_save_workflow_resolves_to_the_same_versions(home, tmp_path):
    """What `generate --save-workflow` writes for its prompt record (the record's exact versions,
    weights and settings), without rendering: the tiny render is tested elsewhere."""
    from loradex.registry.folders.comfyui_workflow_export import workflow_from_record, write_workflow

    catalog, a, b = home["catalog"], home["a"], home["b"]
    record = {"prompt": "a cat <lora:ink-wash:0.7> <lora:soft-light:0.4:0.9> <tiny-emb>",
              "clean_prompt": "a cat <tiny-emb>",
              "embeddings": [{"token": "<tiny-emb>", "ref": home["emb"].ref, "sha256": home["emb"].sha256}],
              "negative_prompt": "blurry", "seed": 5, "steps": 2, "cfg": 7.5, "width": 32, "height": 48,
              "scheduler": {"name": "dpm++2m_karras"}, "base": {"ref": "tiny-sd1", "sha256": "ab" * 32},
              "stack": [{"ref": a.ref, "te_weight": 0.7, "unet_weight": 0.7},
                        {"ref": b.ref, "te_weight": 0.4, "unet_weight": 0.9}]}
    wf_path = write_workflow(tmp_path / "gen.json", workflow_from_record(catalog, record))
    wf = json.loads(wf_path.read_text())
    _check_links(wf)
    nodes = {n["type"]: n for n in wf["nodes"]}
    assert nodes["KSampler"]["widgets_values"] == [5, "fixed", 2, 7.5, "dpmpp_2m", "karras", 1.0]
    assert nodes["EmptyLatentImage"]["widgets_values"] == [32, 48, 1]
    assert nodes["CheckpointLoaderSimple"]["properties"]["models"] == [
        {"name": "tiny-sd1.safetensors", "directory": "checkpoints", "hash": "ab" * 32, "hash_type": "SHA256"}]
    rows = {m["name"]: m for m in resolve_file(catalog, wf_path).to_dict()["models"]}
    assert answer(rows["ink-wash.safetensors"]) == ("lora", "sha256", "in_catalog", a.ref, "sha256")
    assert answer(rows["soft-light.safetensors"]) == ("lora", "sha256", "in_catalog", b.ref, "sha256")
    assert rows["ink-wash.safetensors"]["weight"] == 0.7 and rows["soft-light.safetensors"]["weight"] == 0.9
    assert rows["tiny-sd1.safetensors"]["status"] == "unknown"
    texts = [n["widgets_values"] for n in wf["nodes"] if n["type"] == "CLIPTextEncode"]
    assert texts == [["a cat embedding:tiny-emb.safetensors"], ["blurry"]]
    assert answer(rows["tiny-emb.safetensors"]) == ("embedding", "sha256", "in_catalog", home["emb"].ref, "sha256")


def test_generate_has_the_save_workflow_option():
    result = cli("generate", "--help")
    assert "--save-workflow" in result.output


def test_mutated_documents_are_read_or_refused_in_one_line(tmp_path):
    """Each fixture with values swapped for ones of other types (150 seeded cases): every reader
    either reads it or raises a LoradexError of one line, never anything else."""
    import copy
    import random

    from loradex.registry.errors import LoradexError
    from loradex.registry.folders.model_needs import read_needs

    rng = random.Random(22)
    seeds = [ui_workflow("a.safetensors", "ab" * 32, "b.safetensors", "emb", AIR), api_prompt("a", "b", "e"),
             civitai_generation(AIR, 5, "0123456789"), template_models("a", "ab" * 32)]
    values = [None, True, -1, 1.5, "", "zz", AIR, [], {}, [1], {"__value__": [{"name": 1}]},
              {"lora": 5, "on": "yes"}, 2**60, "ab" * 40]

    def paths(value, at=()):
        yield at
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, sub in items:
            yield from paths(sub, at + (key,))

    for i in range(150):
        doc = copy.deepcopy(rng.choice(seeds))
        at = rng.choice(list(paths(doc))[1:])
        parent = doc
        for key in at[:-1]:
            parent = parent[key]
        parent[at[-1]] = copy.deepcopy(rng.choice(values))
        path = write(tmp_path / f"m{i}.json", doc)
        try:
            read_needs(path)
        except LoradexError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc), str(exc)


def test_flux_export_loads_the_base_in_parts_and_resolves_back(home, tmp_path):
    """A Flux.1 base (tiny-flux) as ComfyUI loads one: UNETLoader + DualCLIPLoader (type flux) +
    VAELoader, the LoRA on MODEL and CLIP, the record's guidance on FluxGuidance, sampler cfg 1.0."""
    catalog, a = home["catalog"], home["a"]
    out = tmp_path / "flux.json"
    cli("export-workflow", "a fox <lora:ink-wash:0.6:0.3>", "--base", "tiny-flux", "--cfg", "3.5",
        "-o", out, "--home", catalog.home)
    wf = json.loads(out.read_text())
    _check_links(wf)
    nodes = {n["type"]: n for n in wf["nodes"]}
    assert sorted(nodes) == sorted(["UNETLoader", "DualCLIPLoader", "VAELoader", "LoraLoader", "CLIPTextEncode",
                                    "FluxGuidance", "EmptyLatentImage", "KSampler", "VAEDecode", "SaveImage"])
    assert nodes["DualCLIPLoader"]["widgets_values"] == ["clip_l.safetensors", "t5xxl_fp16.safetensors", "flux"]
    assert nodes["FluxGuidance"]["widgets_values"] == [3.5]
    assert nodes["KSampler"]["widgets_values"][3] == 1.0
    link = {(l[3], l[4]): l[1] for l in wf["links"]}
    ids = {t: n["id"] for t, n in nodes.items()}
    lora = ids["LoraLoader"]
    assert link[(lora, 0)] == ids["UNETLoader"] and link[(lora, 1)] == ids["DualCLIPLoader"]
    assert link[(ids["KSampler"], 0)] == lora and link[(ids["KSampler"], 1)] == ids["FluxGuidance"]
    assert link[(ids["VAEDecode"], 1)] == ids["VAELoader"]
    assert nodes["UNETLoader"]["properties"]["models"] == [{"name": "tiny-flux.safetensors",
                                                           "directory": "diffusion_models"}]
    rows = {m["name"]: m for m in resolve_file(catalog, out).to_dict()["models"]}
    assert answer(rows["ink-wash.safetensors"]) == ("lora", "sha256", "in_catalog", a.ref, "sha256")
    assert rows["ink-wash.safetensors"]["weight"] == 0.3  # strength_model: the UNet weight
    assert {name: rows[name]["kind"] for name in rows if name != "ink-wash.safetensors"} == {
        "tiny-flux.safetensors": "unet", "clip_l.safetensors": "clip", "t5xxl_fp16.safetensors": "clip",
        "ae.safetensors": "vae"}


def test_sd3_diffusers_folder_gets_triple_clip_and_keeps_cfg(home, tmp_path):
    from loradex.registry.folders.comfyui_workflow_export import workflow_from_record

    (tmp_path / "sd35").mkdir()
    folder = write(tmp_path / "sd35" / "model_index.json",
                   {"_class_name": "StableDiffusion3Pipeline", "_diffusers_version": "0.30.0"}).parent
    record = {"clean_prompt": "a fox", "negative_prompt": "blurry", "seed": 1, "steps": 4, "cfg": 4.5,
              "base": {"ref": str(folder), "sha256": None}, "stack": []}
    wf = workflow_from_record(home["catalog"], record)
    _check_links(wf)
    nodes = {n["type"]: n for n in wf["nodes"]}
    assert "FluxGuidance" not in nodes and "CheckpointLoaderSimple" not in nodes
    assert nodes["TripleCLIPLoader"]["widgets_values"] == ["clip_l.safetensors", "clip_g.safetensors",
                                                           "t5xxl_fp16.safetensors"]
    assert nodes["UNETLoader"]["widgets_values"] == ["sd35.safetensors", "default"]
    assert nodes["KSampler"]["widgets_values"][3] == 4.5
    # a prompt record names its base's family: a single file of a Flux base is loaded in parts too
    record["base"] = {"ref": "/models/flux1-dev.safetensors", "family": "flux", "sha256": "cd" * 32}
    types = {n["type"] for n in workflow_from_record(home["catalog"], record)["nodes"]}
    assert {"UNETLoader", "DualCLIPLoader", "FluxGuidance"} <= types and "CheckpointLoaderSimple" not in types
