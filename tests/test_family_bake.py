"""bake and extract on the DiT families (Flux.1, SD 3.5): diffusers folder → diffusers folder with
the transformer's weights = base + w·ΔW (closed form), loadable by diffusers; extract(base,
base + ΔW of a rank-2 LoRA) at rank 2 gives back ΔW, written in the diffusers convention that
diffusers' own loader takes with no missing or unexpected key; recognised-only families refused
in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from loradex.cli.app import app
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.store import Catalog

WEIGHT = 0.7
RANK, ALPHA = 2, 1.0
# diffusers' own test sizes (tests/pipelines/flux, tests/pipelines/stable_diffusion_3)
TRANSFORMERS = {
    "flux": ("FluxPipeline", "FluxTransformer2DModel",
             dict(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
                  num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8])),
    "sd3": ("StableDiffusion3Pipeline", "SD3Transformer2DModel",
            dict(sample_size=32, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=4,
                 caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64, out_channels=4)),
}
# what the LoRA touches: block linears of both kinds and one linear outside the blocks
TARGETS = ("attn.to_q", "attn.to_k", "attn.add_k_proj", "ff.net.2", "norm1.linear", "proj_mlp")
OUTSIDE = "norm_out.linear"  # outside the blocks; its native twin stores (shift, scale) swapped
TRANSFORMER_FILE = "transformer/diffusion_pytorch_model.safetensors"


def runner(*args: str, home: Path):
    return CliRunner().invoke(app, [*args, "--home", str(home)])


def write_transformer_folder(family: str, dest: Path, state: dict | None = None, seed: int = 0) -> Path:
    """A diffusers folder holding the tiny transformer (model_index names the family's pipeline)."""
    import diffusers

    pipeline_cls, model_cls, config = TRANSFORMERS[family]
    torch.manual_seed(seed)
    model = getattr(diffusers, model_cls)(**config)
    if state is not None:
        model.load_state_dict(state)
    model.save_pretrained(dest / "transformer")
    (dest / "model_index.json").write_text(json.dumps({"_class_name": pipeline_cls,
                                                      "transformer": ["diffusers", model_cls]}))
    return dest


def lora_targets(state: dict) -> list[str]:
    paths = [k.removesuffix(".weight") for k, v in state.items() if k.endswith(".weight") and v.dim() == 2]
    chosen = [p for p in paths if p.endswith(TARGETS) and "_blocks." in p]
    return sorted(chosen + [OUTSIDE])


def random_factors(state: dict, paths: list[str], seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for path in paths:
        rows, cols = state[path + ".weight"].shape
        out[path] = (torch.randn(RANK, cols, generator=gen) * 0.3, torch.randn(rows, RANK, generator=gen) * 0.3)
    return out


def write_diffusers_lora(dest: Path, factors: dict) -> Path:
    tensors = {}
    for path, (down, up) in factors.items():
        tensors[f"transformer.{path}.lora_A.weight"] = down.contiguous()
        tensors[f"transformer.{path}.lora_B.weight"] = up.contiguous()
    config = {"transformer.r": RANK, "transformer.lora_alpha": ALPHA, "transformer.target_modules": sorted(factors)}
    save_file(tensors, str(dest), metadata={"format": "pt", "lora_adapter_metadata": json.dumps(config)})
    return dest


@pytest.fixture(scope="module", params=sorted(TRANSFORMERS))
def dit(request, tmp_path_factory):
    """(family, base folder, base transformer state, LoRA factors, LoRA file)."""
    family = request.param
    root = tmp_path_factory.mktemp(f"bake-{family}")
    folder = write_transformer_folder(family, root / "base")
    state = load_file(str(folder / TRANSFORMER_FILE))
    factors = random_factors(state, lora_targets(state), seed=3)
    lora = write_diffusers_lora(root / "style.safetensors", factors)
    return family, folder, state, factors, lora


def delta(down, up, weight=1.0):
    return weight * (ALPHA / RANK) * (up.double() @ down.double())


def test_bake_gives_base_plus_delta_and_loads_in_diffusers(tmp_path, dit):
    import diffusers

    family, folder, state, factors, lora = dit
    home = tmp_path / "home"
    add_file(Catalog(home), lora, name="style", base=family)
    out = tmp_path / "baked"
    res = runner("bake", str(folder), f"style:{WEIGHT}", "-o", str(out), "--json", home=home)
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["format"] == "diffusers" and result["missing"] == [] and result["fused"] == len(factors)

    baked = load_file(str(out / TRANSFORMER_FILE))
    assert baked.keys() == state.keys()
    for key, tensor in state.items():
        path = key.removesuffix(".weight")
        assert baked[key].dtype == tensor.dtype, key
        if path in factors:
            expected = tensor.double() + delta(*factors[path], WEIGHT)
            assert torch.allclose(baked[key].double(), expected, atol=1e-6, rtol=0), key
            assert not torch.equal(baked[key], tensor), key
        else:
            assert torch.equal(baked[key], tensor), key  # untouched weights are the same bytes
    assert (out / "model_index.json").read_bytes() == (folder / "model_index.json").read_bytes()

    # diffusers reads the baked folder; it computes what the base does with the LoRA fused by diffusers
    _, model_cls, _ = TRANSFORMERS[family]
    loaded = getattr(diffusers, model_cls).from_pretrained(str(out / "transformer"))
    fused = getattr(diffusers, model_cls).from_pretrained(str(folder / "transformer"))
    fused.load_lora_adapter(load_file(str(lora)), prefix="transformer", adapter_name="style")
    fused.set_adapters(["style"], [WEIGHT * ALPHA / RANK])  # read without metadata: α = rank
    fused.fuse_lora(lora_scale=1.0, adapter_names=["style"])
    by_diffusers = {k.replace(".base_layer.", "."): v for k, v in fused.state_dict().items() if ".lora_" not in k}
    assert by_diffusers.keys() == loaded.state_dict().keys()
    for key, tensor in loaded.state_dict().items():
        assert torch.allclose(tensor, by_diffusers[key], atol=1e-5), key


def test_extract_recovers_a_rank_2_delta_in_the_diffusers_convention(tmp_path, dit):
    import diffusers

    family, folder, state, factors, _ = dit
    blocks_only = {p: f for p, f in factors.items() if p != OUTSIDE}  # extract reads block linears
    tuned_state = {k: v.clone() for k, v in state.items()}
    for path, (down, up) in blocks_only.items():
        tuned_state[path + ".weight"] = (state[path + ".weight"].double() + delta(down, up)).float()
    tuned = write_transformer_folder(family, tmp_path / "tuned", state=tuned_state)
    home = tmp_path / "home"
    res = runner("extract", "--base", str(folder), "--tuned", str(tuned), "--rank", "2", "--name", "extracted",
                 "--dtype", "fp32", "--json", home=home)
    assert res.exit_code == 0, res.output

    cat = Catalog(home)
    version = cat.resolve("extracted")
    assert [e.relation for e in cat.lineage(version.ref)] == ["extracted_from"]
    sd = load_file(str(cat.blobs.path_for(version.sha256)))
    assert all(k.startswith("transformer.") for k in sd)
    got = {k.removeprefix("transformer.").removesuffix(".lora_A.weight") for k in sd if k.endswith(".lora_A.weight")}
    assert got == set(blocks_only)  # the untouched linears are under min_diff: skipped, and listed
    skipped = version.extra["recipe_report"]["skipped"]
    assert skipped and all("min_diff" in why for why in skipped.values())
    for path, (down, up) in blocks_only.items():
        a, b = sd[f"transformer.{path}.lora_A.weight"], sd[f"transformer.{path}.lora_B.weight"]
        assert a.shape[0] == RANK  # extracted at α = rank (scale 1)
        assert torch.allclose(b.double() @ a.double(), delta(down, up), atol=1e-5, rtol=0), path

    # diffusers' own loader takes it whole: no missing or unexpected key, same ΔW
    _, model_cls, _ = TRANSFORMERS[family]
    model = getattr(diffusers, model_cls).from_pretrained(str(folder / "transformer"))
    from safetensors import safe_open

    with safe_open(str(cat.blobs.path_for(version.sha256)), framework="pt") as fh:
        adapter_config = json.loads(fh.metadata()["lora_adapter_metadata"])
    assert adapter_config["transformer.r"] == adapter_config["transformer.lora_alpha"] == RANK
    model.load_lora_adapter(sd, prefix="transformer", adapter_name="x")
    loaded = {n for n, _ in model.named_modules() if hasattr(_, "lora_A") and "x" in _.lora_A}
    assert loaded == set(blocks_only)


@pytest.mark.parametrize("dit", ["flux"], indirect=True)  # the refusal is the same for any base
def test_recognised_only_family_is_refused_in_one_line(tmp_path, dit):
    from test_catalog import run_loradex

    family, folder, _, _, lora = dit
    home = tmp_path / "home"
    add_file(Catalog(home), lora, name="wanstyle", base="wan-14b")  # catalogued as a Wan 2.x 14B LoRA
    proc = run_loradex("bake", str(folder), "wanstyle", "-o", str(tmp_path / "out"), home=home)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].endswith("bake for wan-14b is not supported yet; probe, catalog, search, push and pull are")
    assert not (tmp_path / "out").exists()


def test_single_file_layouts_are_refused_in_one_line_naming_what_works(tmp_path, dit):
    from loradex.merge.bake import bake
    from loradex.registry.errors import UnsupportedFormat, UsageError

    family, folder, state, _, lora = dit
    catalog = Catalog(tmp_path / "home")
    add_file(catalog, lora, name="style", base=family)
    with pytest.raises(UsageError) as refused:
        bake(catalog, str(folder), [("style", WEIGHT)], tmp_path / "out.safetensors", format="single-file")
    assert f"written for sd1 and sdxl only, and this base is {family}" in str(refused.value)
    assert "leave --format out" in refused.value.hint
    native = tmp_path / "native.safetensors"  # an original-layout (BFL / SAI) file: baked in its own layout only
    save_file(native_state(family, state), str(native))
    with pytest.raises(UsageError, match=f"written for sd1 and sdxl only, and this base is {family}"):
        bake(catalog, str(native), [("style", WEIGHT)], tmp_path / "out2", format="diffusers", config=str(folder))
    foreign = tmp_path / "foreign.safetensors"
    save_file({"blocks.0.attn.qkv.weight": torch.zeros(6, 2)}, str(foreign))
    with pytest.raises(UnsupportedFormat, match="nor a Flux.1 / SD 3 transformer in its original layout"):
        bake(catalog, str(foreign), [("style", WEIGHT)], tmp_path / "out3")
    assert not any((tmp_path / n).exists() for n in ("out.safetensors", "out2", "out3"))


# Flux's block names alone tell it; SD3's identity evidence needs a real width (1536 / 2432)
@pytest.mark.parametrize("dit", ["flux"], indirect=True)
def test_family_of_a_folder_from_its_pipeline_class_else_its_transformer(tmp_path, dit):
    import shutil

    from loradex.merge.model_weights import open_model

    family, folder, _, _, _ = dit
    assert open_model(folder).family == family  # the pipeline aspect that declares the class
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    index = json.loads((other / "model_index.json").read_text())
    (other / "model_index.json").write_text(json.dumps({**index, "_class_name": "SomeCommunityPipeline"}))
    assert open_model(other).family == family  # the transformer's names and widths (identity evidence)


def test_a_kohya_file_bakes_like_its_diffusers_twin(tmp_path, dit):
    """kohya's native names (Flux: fused qkv / linear1; SD3: joint_blocks) are split exactly on
    read: the same adapter in either convention bakes to the same weights."""
    from loradex.merge.bake import bake
    from loradex.merge.conventions.convert import convert_state_dict
    from safetensors import safe_open

    family, folder, _, _, lora = dit
    with safe_open(str(lora), framework="pt") as fh:
        state, metadata = {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata())
    kohya, kohya_meta, _ = convert_state_dict(state, to="kohya", metadata=metadata, base=family)
    assert all(k.startswith("lora_unet_") for k in kohya)
    save_file(kohya, str(tmp_path / "kohya.safetensors"), metadata=kohya_meta)
    catalog = Catalog(tmp_path / "home")
    add_file(catalog, lora, name="diffusers-style", base=family)
    add_file(catalog, tmp_path / "kohya.safetensors", name="kohya-style", base=family)
    for name in ("diffusers-style", "kohya-style"):
        bake(catalog, str(folder), [(name, WEIGHT)], tmp_path / name)
    a = load_file(str(tmp_path / "diffusers-style" / TRANSFORMER_FILE))
    b = load_file(str(tmp_path / "kohya-style" / TRANSFORMER_FILE))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=0), key


def native_state(family: str, state: dict) -> dict:
    """The transformer's linear weights in the original (BFL / SAI) single-file layout, built with
    the family's naming table: fused modules are their parts' rows in order, the final modulation
    with its halves swapped."""
    from loradex.families import get_family
    from loradex.families.dit_naming import swaps_halves

    table = get_family(family).aspect("naming").TABLE
    grouped: dict[str, tuple] = {}
    for key, tensor in state.items():
        owner = table.owner(key.removesuffix(".weight")) if key.endswith(".weight") and tensor.dim() == 2 else None
        if owner is not None:
            resolved, index = owner
            grouped.setdefault(resolved.native, (resolved, {}))[1][index] = tensor
    out = {}
    for native, (resolved, parts) in grouped.items():
        if len(parts) != len(resolved.parts):
            continue  # a fused module this tiny model does not have every part of
        fused = torch.cat([parts[i] for i in range(len(resolved.parts))])
        if swaps_halves(resolved, fused.shape[0], fused.shape[1]):
            fused = torch.cat(fused.chunk(2)[::-1])
        out[f"model.diffusion_model.{native}.weight"] = fused.contiguous()
    return out


def test_original_layout_single_file_bakes_in_its_own_layout(tmp_path, dit):
    """A BFL / SAI single-file transformer: each fused weight (qkv, linear1) gets its parts' ΔW in
    their rows; the result is the native file of the diffusers-baked weights (closed form)."""
    family, folder, state, factors, lora = dit
    native = tmp_path / "native.safetensors"
    save_file(native_state(family, state), str(native))
    catalog = Catalog(tmp_path / "home")
    add_file(catalog, lora, name="style", base=family)
    res = runner("bake", str(native), f"style:{WEIGHT}", "-o", str(tmp_path / "baked.safetensors"), "--json",
                 home=tmp_path / "home")
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["format"] == "single-file" and result["missing"] == [] and result["fused"] == len(factors)

    tuned = {k: v.double() for k, v in state.items()}
    for path, (down, up) in factors.items():
        tuned[path + ".weight"] = tuned[path + ".weight"] + delta(down, up, WEIGHT)
    expected = native_state(family, tuned)
    baked = load_file(str(tmp_path / "baked.safetensors"))
    assert baked.keys() == expected.keys()
    for key, tensor in baked.items():
        assert tensor.dtype == torch.float32
        assert torch.allclose(tensor.double(), expected[key], atol=1e-6, rtol=0), key

    # and extract reads the fused weights part by part: the block modules' ΔW come back (diffusers keys)
    res = runner("extract", "--base", str(native), "--tuned", str(tmp_path / "baked.safetensors"), "--rank", "2",
                 "--name", "back", "--dtype", "fp32", "--json", home=tmp_path / "home")
    assert res.exit_code == 0, res.output
    version = catalog.resolve("back")
    sd = load_file(str(catalog.blobs.path_for(version.sha256)))
    for path, (down, up) in factors.items():
        if path == OUTSIDE:  # not a block linear: extract leaves it out
            assert f"transformer.{path}.lora_A.weight" not in sd
            continue
        a, b = sd[f"transformer.{path}.lora_A.weight"], sd[f"transformer.{path}.lora_B.weight"]
        assert torch.allclose(b.double() @ a.double(), delta(down, up, WEIGHT), atol=1e-5, rtol=0), path
