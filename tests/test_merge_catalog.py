"""Merging catalog versions: exact concat (ΔW and rendering), optimal svd, resize, extract, bake,
recipes replayed bit-exact, lineage, family checks, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from loradex.cli.app import app
from loradex.merge.conventions.adapter_io import open_adapter, open_version
from loradex.merge.catalog_merge import compat, merge_versions, resize_version
from loradex.merge.math.lora_module import delta_weight
from loradex.merge.recipes import replay_version, validate_recipe, version_recipe
from loradex.merge.synthetic_adapters import TINY_SD1_MODULES, write_random_kohya_lora
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import CoverageError, IncompatibleAdapters, NotFound, SchemaError, UsageError

WEIGHTS = {"a": 0.8, "b": -0.5, "c": 1.2}
SPECS = {"a": (4, 2.0, 1), "b": (8, 3.0, 2), "c": (16, 16.0, 3)}  # rank, alpha, seed


@pytest.fixture
def catalog(tmp_path):
    cat = Catalog(tmp_path / "home")
    for name, (rank, alpha, seed) in SPECS.items():
        path = write_random_kohya_lora(tmp_path / f"{name}.safetensors", rank=rank, alpha=alpha, seed=seed,
                                       trigger=f"trig{name}")
        add_file(cat, path, name=name)
    return cat


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def _expected_sum(cat):
    inputs = {n: open_version(cat, n)[1].load_all() for n in WEIGHTS}
    names = sorted(set().union(*inputs.values()))
    return {m: sum(delta_weight(inputs[n][m], w) for n, w in WEIGHTS.items()) for m in names}


def test_concat_merge_is_exact_and_renders_like_the_stack(catalog, tmp_path):
    result = merge_versions(catalog, list(WEIGHTS.items()), "concat", name="mix", dtype="fp32")
    v = result.version
    assert v.ref == "mix@1.0.0" and set(v.trigger_words) == {"triga", "trigb", "trigc"}
    merged = open_version(catalog, v.ref)[1].load_all()
    expected = _expected_sum(catalog)
    assert set(merged) == set(expected) == set(TINY_SD1_MODULES)
    assert max(_rel(delta_weight(merged[m]), expected[m]) for m in expected) < 1e-5
    assert {m.rank for m in merged.values()} == {28}
    meta = v.file_metadata
    assert meta["modelspec.hash_sha256"] == "0x" + v.autov3  # AutoV3 computed before writing the header
    assert meta["modelspec.merged_from"] == "a@1.0.0, b@1.0.0, c@1.0.0"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora" and meta["ss_base_model_version"] == "sd_v1"
    assert json.loads(meta["loradex.recipe"]) == version_recipe(catalog, v.ref)

    # rendering: merged file vs the three inputs stacked with set_adapters
    from loradex.trainer.tiny_pipeline import build_tiny_sd1_pipeline

    def render(pipe):
        gen = torch.Generator().manual_seed(0)
        return pipe("a photo", num_inference_steps=2, generator=gen, output_type="np", guidance_scale=1.0).images

    blob = Path(catalog.blobs.path_for(v.sha256))
    merged_file = tmp_path / "mix.safetensors"
    shutil.copyfile(blob, merged_file)
    pipe = build_tiny_sd1_pipeline(0)
    pipe.load_lora_weights(str(merged_file), adapter_name="mix")
    image_merged = render(pipe)
    pipe = build_tiny_sd1_pipeline(0)
    for name in WEIGHTS:
        pipe.load_lora_weights(str(tmp_path / f"{name}.safetensors"), adapter_name=name)
    pipe.set_adapters(list(WEIGHTS), list(WEIGHTS.values()))
    image_stack = render(pipe)
    pipe.disable_lora()
    image_base = render(pipe)
    assert abs(image_merged - image_base).max() > 1e-3  # the adapters change the image at all
    assert abs(image_merged - image_stack).max() < 1e-4


def test_svd_merge_residual_is_optimal(catalog):
    rank = 6
    result = merge_versions(catalog, list(WEIGHTS.items()), "svd", rank, name="svdmix", dtype="fp32")
    merged = open_version(catalog, result.version.ref)[1].load_all()
    for name, target in _expected_sum(catalog).items():
        matrix = target.reshape(target.shape[0], -1)
        S = torch.linalg.svdvals(matrix.double())
        optimal = float(S[rank:].square().sum().sqrt())
        got = float((matrix - delta_weight(merged[name]).reshape(matrix.shape)).norm())
        assert merged[name].rank == rank
        assert abs(got - optimal) <= 1e-4 * float(matrix.norm()), name
    assert result.version.extra["recipe_report"]["max_relative_residual"] > 0


def test_replay_gives_the_same_sha_and_lineage_has_recipes(catalog):
    result = merge_versions(catalog, [("a", 0.8), ("b@1.0.0", -0.5)], "dare-ties", 4, name="dare",
                            seed=7, options={"density": 0.5}, dtype="fp16")
    replay = replay_version(catalog, result.version.ref)
    assert replay["match"] and replay["replayed_sha256"] == result.version.sha256
    edges = [e for e in catalog.lineage(result.version.ref) if e.child == result.version.ref]
    assert [(e.relation, e.parent) for e in edges] == [("merged_from", "a@1.0.0"), ("merged_from", "b@1.0.0")]
    recipe = edges[0].recipe
    assert validate_recipe(recipe) is recipe
    assert recipe["inputs"][0]["sha256"] == catalog.resolve("a").sha256 and recipe["seed"] == 7
    assert recipe["options"] == {"density": 0.5} and recipe["output"]["dtype"] == "fp16"
    with safe_open(str(catalog.blobs.path_for(result.version.sha256)), "pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys() if not k.endswith(".alpha")} == {torch.float16}
    with pytest.raises(SchemaError):
        validate_recipe({**recipe, "op": "blend"})


def test_different_base_families_are_refused(catalog, tmp_path):
    path = write_random_kohya_lora(tmp_path / "xl.safetensors", rank=4, seed=9, base_version="sdxl_base_v1-0")
    add_file(catalog, path, name="xl", base="sdxl")
    with pytest.raises(IncompatibleAdapters, match="different base families"):
        merge_versions(catalog, [("a", 1.0), ("xl", 1.0)], "concat", name="bad")
    with pytest.raises(IncompatibleAdapters):
        compat(catalog, ["a", "xl"])
    with pytest.raises(NotFound):  # nothing was registered
        catalog.get_adapter("bad")


def test_diffusers_input_merges_like_its_kohya_twin(catalog, tmp_path):
    from loradex.merge.conventions.convert import convert_file

    convert_file(tmp_path / "b.safetensors", tmp_path / "b_diff.safetensors", "diffusers")
    add_file(catalog, tmp_path / "b_diff.safetensors", name="bdiff")
    kohya = open_version(catalog, "b")[1].load_all()
    diff = open_version(catalog, "bdiff")[1]
    assert diff.convention == "diffusers" and set(diff.names()) == set(kohya)
    r1 = merge_versions(catalog, [("a", 0.8), ("b", -0.5)], "concat", name="k1", dtype="fp32")
    r2 = merge_versions(catalog, [("a", 0.8), ("bdiff", -0.5)], "concat", name="k2", dtype="fp32")
    m1, m2 = (open_version(catalog, r.version.ref)[1].load_all() for r in (r1, r2))
    assert all(torch.equal(delta_weight(m1[n]), delta_weight(m2[n])) for n in m1)


def test_resize_keeps_scale_and_is_optimal(catalog):
    source = open_version(catalog, "c")[1].load_all()  # rank 16, alpha 16
    full = resize_version(catalog, "c", rank=16, dtype="fp32")
    assert full.version.ref == "c@1.1.0"
    kept = open_version(catalog, full.version.ref)[1].load_all()
    assert max(_rel(delta_weight(kept[n]), delta_weight(source[n])) for n in source) < 1e-5
    small = resize_version(catalog, "c@1.0.0", rank=4, dtype="fp32")
    out = open_version(catalog, small.version.ref)[1].load_all()
    for name, module in source.items():
        assert out[name].rank == 4 and out[name].scale == pytest.approx(module.scale)
        matrix = delta_weight(module).reshape(module.weight_shape[0], -1)
        optimal = float(torch.linalg.svdvals(matrix.double())[4:].square().sum().sqrt())
        assert float((matrix - delta_weight(out[name])).norm()) == pytest.approx(optimal, rel=1e-4, abs=1e-7)
    edges = catalog.lineage(small.version.ref)
    assert edges[0].relation == "resized_from" and edges[0].parent == "c@1.0.0" and edges[0].recipe["rank"] == 4
    assert replay_version(catalog, small.version.ref)["match"]
    dyn = resize_version(catalog, "c@1.0.0", dynamic=("sv_fro", 0.9), dtype="fp32")
    report = dyn.version.extra["recipe_report"]["modules"]
    assert all(m["retained_fro"] >= 0.9 - 1e-6 for m in report.values())


def _tiny_folders(tmp_path):
    from loradex.trainer.tiny_pipeline import save_tiny_pipeline

    base = save_tiny_pipeline("sd1", tmp_path / "base", seed=0)
    tuned = tmp_path / "tuned"
    shutil.copytree(base, tuned)
    unet_file = tuned / "unet" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(unet_file))
    gen = torch.Generator().manual_seed(5)
    injected = {}
    for key in ("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight",
                "up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight",
                "mid_block.attentions.0.transformer_blocks.0.ff.net.2.weight"):
        w = sd[key]
        delta = (torch.randn(w.shape[0], 3, generator=gen) @ torch.randn(3, w.shape[1], generator=gen)) * 0.05
        sd[key] = w + delta
        injected["lora_unet_" + key.removesuffix(".weight").replace(".", "_")] = sd[key] - load_file(
            str(base / "unet" / "diffusion_pytorch_model.safetensors"))[key]
    with safe_open(str(unet_file), "pt") as fh:
        meta = fh.metadata()
    save_file(sd, str(unet_file), metadata=meta)
    return base, tuned, injected


def test_extract_recovers_injected_low_rank_delta(tmp_path):
    from loradex.merge.extract import extract_version

    cat = Catalog(tmp_path / "home")
    base, tuned, injected = _tiny_folders(tmp_path)
    result = extract_version(cat, str(base), str(tuned), 3, name="ext", dtype="fp32")
    modules = open_version(cat, result.version.ref)[1].load_all()
    assert set(modules) == set(injected)
    for name, delta in injected.items():
        assert modules[name].rank == 3
        assert _rel(delta_weight(modules[name]), delta) < 1e-4
    skipped = result.version.extra["recipe_report"]["skipped"]
    te = [n for n in skipped if n.startswith("lora_te_")]
    assert te and all("min_diff" in skipped[n] for n in te)  # text encoder listed, not silently dropped
    edge = cat.lineage(result.version.ref)[0]
    assert edge.relation == "extracted_from" and edge.parent == f"file:{tuned.resolve()}"
    assert replay_version(cat, result.version.ref)["match"]


def test_bake_fuses_weighted_deltas(catalog, tmp_path):
    from loradex.merge.bake import bake

    from loradex.trainer.tiny_pipeline import save_tiny_pipeline

    base = save_tiny_pipeline("sd1", tmp_path / "bbase", seed=0)
    # an adapter naming a module the tiny UNet lacks (its up block 0 has 2 attentions) is refused
    extra = "lora_unet_up_blocks_0_attentions_2_transformer_blocks_0_attn1_to_q"
    odd = write_random_kohya_lora(tmp_path / "odd.safetensors", modules={**TINY_SD1_MODULES, extra: (64, 64)}, seed=4)
    add_file(catalog, odd, name="odd")
    with pytest.raises(CoverageError, match=extra):
        bake(catalog, str(base), [("odd", 0.8)], tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    partial = bake(catalog, str(base), [("odd", 0.8)], tmp_path / "partial", allow_missing=True)
    assert partial["missing"] == [extra] and partial["fused"] == len(TINY_SD1_MODULES)
    out = bake(catalog, str(base), [("a", 0.8), ("b", -0.5)], tmp_path / "baked")
    assert out["format"] == "diffusers" and out["fused"] == 2 * len(TINY_SD1_MODULES) and out["missing"] == []
    key = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    w0 = load_file(str(base / "unet" / "diffusion_pytorch_model.safetensors"))[key]
    w1 = load_file(str(tmp_path / "baked" / "unet" / "diffusion_pytorch_model.safetensors"))[key]
    name = "lora_unet_" + key.removesuffix(".weight").replace(".", "_")
    a, b = (open_version(catalog, r)[1].load(name) for r in ("a", "b"))
    assert torch.allclose(w1, w0 + delta_weight(a, 0.8) + delta_weight(b, -0.5), atol=1e-6)
    te_key = "encoder.layers.1.self_attn.v_proj.weight"  # transformers 5 drops "text_model."
    t0 = load_file(str(base / "text_encoder" / "model.safetensors"))[te_key]
    t1 = load_file(str(tmp_path / "baked" / "text_encoder" / "model.safetensors"))[te_key]
    assert not torch.equal(t0, t1)


def test_compat_cosines_against_closed_form(catalog):
    table = compat(catalog, ["a:0.8", "a@1.0.0:-0.5", "b", "c:0.9", "b:0.6"])
    same = [p for p in table["pairs"] if p["a"] == "a@1.0.0" and p["b"] == "a@1.0.0"]
    assert same and all(p["cosine"] == pytest.approx(-1.0, abs=1e-5) for p in same)
    assert table["family"] == "sd1" and len(table["warnings"]) == 1  # 5 strong adapters > 3
    ab: dict[str, float] = {}
    for p in table["pairs"]:  # the first a–b pair: a at 0.8, b at 1
        if p["a"] == "a@1.0.0" and p["b"] == "b@1.0.0":
            ab.setdefault(p["block"], p["cosine"])
    a, b = (open_version(catalog, r)[1].load_all() for r in ("a", "b"))
    mods = [m for m in a if m.startswith("lora_te")]
    da = torch.cat([delta_weight(a[m]).flatten() for m in mods])
    db = torch.cat([delta_weight(b[m]).flatten() for m in mods])
    assert ab["BASE"] == pytest.approx(float(da @ db / (da.norm() * db.norm())), abs=1e-5)


def test_cli_merge_and_recipe_replay(catalog, tmp_path):
    runner = CliRunner()
    home = str(catalog.home)
    res = runner.invoke(app, ["merge", "a:0.8", "b:-0.5", "--method", "svd", "--rank", "4", "--name", "climix",
                              "--home", home, "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["ref"] == "climix@1.0.0" and data["report"]["max_relative_residual"] > 0
    res = runner.invoke(app, ["recipe", "replay", "climix", "--home", home, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["match"] is True
    recipe_file = tmp_path / "r.json"
    recipe_file.write_text(json.dumps(version_recipe(catalog, "climix")))
    res = runner.invoke(app, ["merge", "--recipe", str(recipe_file), "--name", "climix2", "--home", home, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["ref"] == "climix2@1.0.0"
    res = runner.invoke(app, ["merge", "a:x", "--name", "z", "--home", home])
    assert res.exit_code == 1 and "not a number" in str(res.exception)


def test_open_adapter_expands_lycoris_to_dense(tmp_path):
    gen = torch.Generator().manual_seed(0)
    name = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    t = {f"{name}.hada_w1_a": torch.randn(64, 2, generator=gen), f"{name}.hada_w1_b": torch.randn(2, 64, generator=gen),
         f"{name}.hada_w2_a": torch.randn(64, 2, generator=gen), f"{name}.hada_w2_b": torch.randn(2, 64, generator=gen),
         f"{name}.alpha": torch.tensor(1.0)}
    save_file(t, str(tmp_path / "loha.safetensors"))
    source = open_adapter(tmp_path / "loha.safetensors", base="sd1")
    module = source.load(name)
    expected = (t[f"{name}.hada_w1_a"] @ t[f"{name}.hada_w1_b"]) * (t[f"{name}.hada_w2_a"] @ t[f"{name}.hada_w2_b"]) * 0.5
    assert module.source == "loha" and torch.allclose(module.delta, expected, rtol=1e-5, atol=1e-6)


def test_recipe_replay_under_the_same_name_reports_identical_or_both_hashes(catalog, tmp_path, monkeypatch):
    from loradex.merge import recipes

    runner = CliRunner()
    home = str(catalog.home)
    toml_file = tmp_path / "m2.toml"
    res = runner.invoke(app, ["merge", "a:0.8", "b@1.0.0:-0.5", "--method", "svd", "--rank", "4", "--name", "m2",
                              "--save-recipe", str(toml_file), "--home", home, "--json"])
    assert res.exit_code == 0, res.output
    first = json.loads(res.stdout)
    # the TOML file reads back as the stored recipe (nulls are left out: absent = null)
    stored = version_recipe(catalog, "m2@1.0.0")
    assert recipes.recipe_from_file(toml_file) == {k: v for k, v in stored.items() if v is not None}
    assert '[[inputs]]' in toml_file.read_text() and 'ref = "a@1.0.0"' in toml_file.read_text()

    res = runner.invoke(app, ["merge", "--recipe", str(toml_file), "--name", "m2", "--home", home, "--json"])
    assert res.exit_code == 0, res.output
    again = json.loads(res.stdout)
    assert again["identical_to"] == "m2@1.0.0" and again["sha256"] == first["sha256"] and again["registered"] is False
    assert [v.version for v in catalog.versions("m2")] == ["1.0.0"]
    res = runner.invoke(app, ["merge", "--recipe", str(toml_file), "--name", "m2", "--home", home])
    assert res.exit_code == 0 and f"identical to m2@1.0.0 (sha256 {first['sha256']})" in res.stdout

    # `recipe export` writes the same file; a JSON export replays the same way
    res = runner.invoke(app, ["recipe", "export", "m2", "-o", str(tmp_path / "e.toml"), "--home", home])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "e.toml").read_text() == toml_file.read_text()

    # a loradex that writes other bytes for the same recipe: an error naming both hashes, nothing added
    monkeypatch.setattr("loradex.merge.catalog_merge.loradex_version", lambda: "99.0.0")
    res = runner.invoke(app, ["merge", "--recipe", str(toml_file), "--name", "m2", "--home", home])
    assert res.exit_code != 0
    message = str(res.exception)
    assert first["sha256"] in message and "replaying the recipe of m2@1.0.0 gives sha256" in message
    assert [v.version for v in catalog.versions("m2")] == ["1.0.0"]
    # under another name it is simply a new version
    res = runner.invoke(app, ["merge", "--recipe", str(toml_file), "--name", "m3", "--home", home, "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["sha256"] != first["sha256"]


# SD1-shaped pieces of an original-layout single file (the bake reads only the keys it fuses)
_SINGLE_FILE_KEYS = {
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight":
        ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", (320, 320)),
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight":
        ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", (320, 768)),
    "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight":
        ("lora_te_text_model_encoder_layers_0_self_attn_q_proj", (768, 768)),
}


def test_bake_single_file_registers_a_checkpoint_and_replays_bit_exact(tmp_path):
    from loradex.merge.bake import bake

    gen = torch.Generator().manual_seed(11)
    base = {k: torch.randn(*shape, generator=gen).half() for k, (_, shape) in _SINGLE_FILE_KEYS.items()}
    base["first_stage_model.decoder.conv_in.bias"] = torch.randn(4, generator=gen).half()  # untouched
    save_file(base, str(tmp_path / "sd1-part.safetensors"))
    cat = Catalog(tmp_path / "home")
    modules = {name: (shape[1], shape[0]) for name, shape in _SINGLE_FILE_KEYS.values()}
    for tag, seed in (("s1", 21), ("s2", 22)):
        write_random_kohya_lora(tmp_path / f"{tag}.safetensors", modules=modules, rank=4, alpha=2.0, seed=seed)
        add_file(cat, tmp_path / f"{tag}.safetensors", name=tag)

    with pytest.raises(UsageError, match="stores single files"):  # a folder cannot be a version
        bake(cat, str(tmp_path / "sd1-part.safetensors"), [("s1", 1.0)], tmp_path / "x", format="diffusers",
             name="folder")
    assert not (tmp_path / "x").exists()
    out = bake(cat, str(tmp_path / "sd1-part.safetensors"), [("s1", 0.7), ("s2", -0.4)], tmp_path / "baked.safetensors",
               name="sd1-baked")
    assert out["format"] == "single-file" and out["fused"] == 6 and out["missing"] == []
    baked = load_file(str(tmp_path / "baked.safetensors"))
    s1, s2 = (open_version(cat, r)[1] for r in ("s1", "s2"))
    for key, (name, _) in _SINGLE_FILE_KEYS.items():
        expected = (base[key].float() + delta_weight(s1.load(name), 0.7) + delta_weight(s2.load(name), -0.4)).half()
        assert baked[key].dtype == torch.float16 and torch.equal(baked[key], expected)
    assert torch.equal(baked["first_stage_model.decoder.conv_in.bias"], base["first_stage_model.decoder.conv_in.bias"])

    version = cat.resolve("sd1-baked")
    assert cat.get_adapter("sd1-baked").kind == "checkpoint" and version.sha256 == out["sha256"]
    assert out["version"]["ref"] == "sd1-baked@1.0.0"
    edges = cat.lineage("sd1-baked@1.0.0")
    assert sorted(e.parent for e in edges) == ["s1@1.0.0", "s2@1.0.0"] and {e.relation for e in edges} == {"merged_from"}
    replay = replay_version(cat, "sd1-baked@1.0.0")
    assert replay["match"] and replay["replayed_sha256"] == out["sha256"]


def test_bake_diffusers_folder_refuses_name_with_the_reason(catalog, tmp_path):
    """(--format single-file from a folder: tests/test_bake_layouts.py)"""
    from loradex.merge.bake import bake
    from loradex.trainer.tiny_pipeline import save_tiny_pipeline

    base = save_tiny_pipeline("sd1", tmp_path / "fbase", seed=0)
    with pytest.raises(UsageError, match="stores single files"):
        bake(catalog, str(base), [("a", 0.8)], tmp_path / "out", name="folder-ckpt")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.safetensors").exists()
    out = bake(catalog, str(base), [("a", 0.8)], tmp_path / "out", format="diffusers")
    assert out["format"] == "diffusers" and (tmp_path / "out" / "model_index.json").is_file()
