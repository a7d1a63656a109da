"""Issue 17, "files other tools load": every format loradex writes is checked with the loaders
that read it — ComfyUI's key mapping and patching (``_loader_checks.comfyui_patches``, our own
statement of ``comfy/lora.py``'s rule), kohya sd-scripts' ``create_network_from_weights``
(``_loader_checks.sd_scripts_load``, our own statement of ``networks/lora.py``) and diffusers' ``load_lora_weights`` + ``fuse_lora`` at the
newest (installed, in-process) and oldest declared versions (``make test`` builds the latter in
``.venv/oldest-diffusers``). Weights are checked against the closed form W + α/r · up @ down;
factors are small dyadic numbers, so every product and sum is exact and "equal" means equal."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from _convert_fixtures import SDXL_LAYOUT, corpus_file, kohya_from_layout, layout
from _loader_checks import (
    comfyui_map_for,
    comfyui_patches,
    fused_weights,
    kohya_deltas,
    sd1_meta_targets,
    sd_scripts_load,
    sd_scripts_modules,
    sd_scripts_sai_renamed,
    sdxl_meta_parts,
    tiny_sd1_targets,
)
from loradex.cli.app import app
from loradex.merge.conventions.convert import convert_file
from loradex.merge.conventions.file_conversion import convert_path
from loradex.merge.conventions.lycoris_to_lora import lycoris_to_lora
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.operations import MoveAlias
from loradex.registry.catalog.store import Catalog
from loradex.registry.files.safetensors_writer import save_safetensors
from loradex.registry.folders.folder_sync import sync_folder
from loradex.registry.folders.webui_export import export_version
from loradex.registry.probe import probe_path

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
OLDEST_PYTHON = Path(os.environ.get("LORADEX_OLDEST_DIFFUSERS_PYTHON")
                     or REPO / ".venv" / "oldest-diffusers" / "bin" / "python")
RANK = 4
ALPHAS = (2.0, 1.0, 3.0, 4.0)  # scales 1/2, 1/4, 3/4, 1: a loader that drops alpha gets other weights
runner = CliRunner()


# --- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def targets():
    from loradex.trainer.tiny_pipeline import build_tiny_sd1_pipeline

    return tiny_sd1_targets(build_tiny_sd1_pipeline(seed=0))


def _dyadic(gen, *shape) -> torch.Tensor:
    return torch.randint(-4, 5, shape, generator=gen).float() / 8


def _lora_modules(targets) -> dict[str, str]:
    """kohya name → target: the tiny UNet's attention Linears, its 1×1 convs (proj_in/out,
    conv_shortcut), one 3×3 conv, and the text encoder layers' CLIP projections."""
    picked = {}
    for target in targets:
        component, _, path = target.partition(".")
        if component == "unet" and (".attentions." in path and not path.endswith((".proj_in", ".proj_out"))
                                    or path == "down_blocks.0.resnets.0.conv1"):
            picked["lora_unet_" + path.replace(".", "_")] = target
        elif component == "text_encoder" and re.search(r"\.(self_attn\.[qkv]_proj|self_attn\.out_proj|mlp\.fc[12])$", path):
            picked["lora_te_" + path.replace(".", "_")] = target
    return picked


def dyadic_kohya(targets, seed: int = 0, alphas=ALPHAS) -> tuple[dict, dict[str, str]]:
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    names = _lora_modules(targets)
    for i, (name, target) in enumerate(sorted(names.items())):
        shape = targets[target]
        sd[f"{name}.lora_down.weight"] = _dyadic(gen, RANK, *shape[1:])
        sd[f"{name}.lora_up.weight"] = _dyadic(gen, shape[0], RANK, *([1, 1] if len(shape) == 4 else []))
        sd[f"{name}.alpha"] = torch.tensor(alphas[i % len(alphas)])
    return sd, names


def _written(targets, folder: Path, alphas) -> dict:
    sd, names = dyadic_kohya(targets, alphas=alphas)
    source = folder / "source.safetensors"
    save_file(sd, str(source))
    diffusers_file = folder / "diffusers.safetensors"
    convert_file(source, diffusers_file, "diffusers", base="sd1")
    kohya_file = folder / "kohya.safetensors"
    convert_file(diffusers_file, kohya_file, "kohya", base="sd1")  # loradex's kohya writer
    return {"kohya": kohya_file, "diffusers": diffusers_file, "expected": kohya_deltas(sd, names, targets)}


@pytest.fixture(scope="module")
def kohya(targets, tmp_path_factory):
    """A kohya file and its diffusers conversion, both written by loradex, per-module alphas
    (none = rank), and the closed form ΔW of each module."""
    return _written(targets, tmp_path_factory.mktemp("mixed"), ALPHAS)


@pytest.fixture(scope="module")
def uniform(targets, tmp_path_factory):
    """The same with one alpha (≠ rank) for all modules: diffusers' own kohya loader gives a
    module another module's alpha when they differ (see tests/test_convert_load.py), a bug of
    that loader and not of the file, so kohya files meet diffusers with one alpha."""
    return _written(targets, tmp_path_factory.mktemp("uniform"), (2.0,))


def assert_fused_exactly(weights: dict, expected: dict, label: str) -> None:
    for target, delta in expected.items():
        before, after = weights[f"before.{target}"], weights[f"after.{target}"]
        want = before + delta.to(before.dtype)
        assert torch.equal(after, want), (
            f"{label}: {target}: fused weight is not W + α/r·up@down "
            f"(max diff {(after - want).abs().max().item():.3g}; ratio to ΔW "
            f"{((after - before).norm() / delta.norm()).item():.3g})")


# --- ComfyUI ------------------------------------------------------------------------------------------
def test_comfyui_applies_every_key_of_loradex_kohya_exactly(kohya, targets):
    sd = load_file(str(kohya["kohya"]))
    patches, not_loaded, failed = comfyui_patches(sd, comfyui_map_for(targets), targets)
    assert not_loaded == [] and failed == []
    assert set(patches) == set(kohya["expected"])
    for target, delta in kohya["expected"].items():
        assert torch.equal(patches[target], delta), target


def test_comfyui_would_apply_only_part_of_a_diffusers_file(kohya, targets):
    """Why a webui export converts: ComfyUI maps diffusers attention layers only in the
    attention-processor spelling and reads no lora_adapter_metadata."""
    sd = load_file(str(kohya["diffusers"]))
    patches, not_loaded, _ = comfyui_patches(sd, comfyui_map_for(targets), targets)
    assert not_loaded and len(patches) < len(kohya["expected"])


# --- kohya sd-scripts (create_network_from_weights) ---------------------------------------------------
@pytest.fixture(scope="module")
def sd_scripts_sd1():
    from loradex.trainer.tiny_pipeline import build_tiny_sd1_pipeline

    return sd_scripts_modules(build_tiny_sd1_pipeline(seed=0))


def test_sd_scripts_module_names_are_those_its_network_creates(sd_scripts_sd1, targets):
    """Known answers of the rule: which layers get a LoRAModule, under which name and kernel."""
    m = sd_scripts_sd1
    assert m["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_out_0"].kernel == ()
    assert m["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_ff_net_0_proj"].kernel == ()
    assert m["lora_unet_down_blocks_1_attentions_0_proj_in"].kernel == (1, 1)        # SD1: a 1×1 conv
    assert m["lora_unet_up_blocks_0_resnets_0_conv_shortcut"].kernel == (1, 1)
    assert m["lora_unet_down_blocks_0_resnets_0_conv1"].kernel == (3, 3)
    assert m["lora_unet_down_blocks_0_downsamplers_0_conv"].kernel == (3, 3)
    assert m["lora_unet_down_blocks_0_resnets_0_time_emb_proj"].kernel == ()
    assert m["lora_te_text_model_encoder_layers_1_self_attn_out_proj"].target == \
        "text_encoder.text_model.encoder.layers.1.self_attn.out_proj"
    # layers outside its target classes get none: conv_in/out, the time embedding
    wrapped = {mod.target for mod in m.values()}
    for outside in ("unet.conv_in", "unet.conv_out", "unet.time_embedding.linear_1"):
        assert outside in targets and outside not in wrapped
    assert not any(n.startswith(("lora_te1_", "lora_te2_")) for n in m)  # one encoder: plain lora_te_
    for name, mod in m.items():  # every module wraps a real layer of the model, with its shape
        assert targets[mod.target] == (mod.out_dim, mod.in_dim, *mod.kernel), name


def assert_sd_scripts_loads(path: Path, modules, expected, *, exact: bool = True, sdxl: bool = False) -> None:
    """Every key of ``path`` is taken by a LoRAModule sd-scripts creates, with its shape, and the ΔW
    its merge_to adds is ``expected`` (target → ΔW, or the ``SdScriptsLoad`` of a reference file)
    and the one loradex computes (``delta_weight``). ``sdxl``: full-size SDXL, where ΔW is compared
    through random probes (ΔW·x, factors never multiplied out: 2.6 G weights in float64 would not fit)."""
    from loradex.merge.math.lora_module import LoraModule, delta_weight

    sd = load_file(str(path))
    if sdxl:
        sd = sd_scripts_sai_renamed(sd)
    got = sd_scripts_load(sd, modules)
    assert got.not_loaded == [] and got.mismatched == [], (path.name, got.not_loaded[:3], got.mismatched[:3])
    assert set(got.merged) == set(expected.merged if sdxl else expected)

    def same(a, b):
        return torch.equal(a, b) if exact else torch.allclose(a, b, rtol=1e-5, atol=1e-6)

    gen = torch.Generator().manual_seed(0)
    for name in got.dims:
        target = modules[name].target
        alpha = sd.get(f"{name}.alpha")
        ours = LoraModule(sd[f"{name}.lora_down.weight"], sd[f"{name}.lora_up.weight"],
                          None if alpha is None else float(alpha))
        if sdxl:
            x = torch.randn(ours.down_matrix().shape[1], 3, generator=gen, dtype=torch.float64)
            ours_x = ours.scale * (ours.up_matrix().double() @ (ours.down_matrix().double() @ x))
            assert same(got.probe(target, x), expected.probe(target, x)), target
            assert same(ours_x, got.probe(target, x)), name
        else:
            assert same(got.delta(target), expected[target]), target
            assert same(delta_weight(ours).double(), got.delta(target)), name


def test_sd_scripts_loads_a_kohya_file_written_by_convert_exactly(kohya, sd_scripts_sd1):
    assert_sd_scripts_loads(kohya["kohya"], sd_scripts_sd1, kohya["expected"])


def test_sd_scripts_loads_export_format_kohya_exactly(kohya, sd_scripts_sd1, tmp_path):
    add_file(Catalog(), kohya["diffusers"], name="exported")
    result = runner.invoke(app, ["export", "exported", str(tmp_path / "webui"), "--format", "kohya"])
    assert result.exit_code == 0, result.output
    written = tmp_path / "webui" / "models" / "Lora" / "exported.safetensors"
    assert probe_path(written).format == "kohya"
    assert_sd_scripts_loads(written, sd_scripts_sd1, kohya["expected"])


def test_sd_scripts_loads_a_merge_exactly(targets, sd_scripts_sd1, tmp_path):
    """concat of two kohya versions: the merge's ΔW is the sum of both."""
    expected = {}
    for seed, label in ((0, "first"), (1, "second")):
        sd, names = dyadic_kohya(targets, seed=seed)
        path = tmp_path / f"{label}.safetensors"
        save_file(sd, str(path))
        add_file(Catalog(), path, name=label)
        for target, delta in kohya_deltas(sd, names, targets).items():
            expected[target] = expected.get(target, 0) + delta
    result = runner.invoke(app, ["merge", "first", "second", "--name", "merged", "--dtype", "fp32"])
    assert result.exit_code == 0, result.output
    catalog = Catalog()
    merged = catalog.resolve("merged")
    assert merged.file_format == "kohya"
    assert_sd_scripts_loads(Path(catalog.blobs.path_for(merged.sha256)), sd_scripts_sd1, expected, exact=False)


def test_sd_scripts_loads_lycoris_to_lora_output(lycoris_lora, targets, sd_scripts_sd1):
    from loradex.merge.math.lycoris_math import lycoris_delta

    dest, groups = lycoris_lora
    expected = {sd_scripts_sd1[name].target: lycoris_delta(group, name=name).double().reshape(
        targets[sd_scripts_sd1[name].target]) for name, group in groups.items()}
    assert_sd_scripts_loads(dest, sd_scripts_sd1, expected, exact=False)


def test_sd_scripts_check_catches_what_sd_scripts_would_not_load(kohya, sd_scripts_sd1):
    """The check can fail: a diffusers-format file names no LoRAModule (nothing loaded), and 2-D
    factors on a 1×1 conv (what LyCORIS→LoRA wrote before) are a size mismatch, for which
    load_state_dict refuses the whole file."""
    diffusers_sd = load_file(str(kohya["diffusers"]))
    assert sd_scripts_load(diffusers_sd, sd_scripts_sd1).not_loaded == sorted(diffusers_sd)
    name = "lora_unet_down_blocks_1_attentions_0_proj_in"
    flat = {f"{name}.lora_down.weight": torch.ones(2, 64), f"{name}.lora_up.weight": torch.ones(64, 2),
            f"{name}.alpha": torch.tensor(2.0)}
    got = sd_scripts_load(flat, sd_scripts_sd1)
    assert got.mismatched == [f"{name}.lora_down.weight", f"{name}.lora_up.weight"] and got.merged == {}


@pytest.fixture(scope="module")
def sd_scripts_sdxl():
    return sd_scripts_modules(sdxl_meta_parts())


@pytest.mark.slow  # a full-size SDXL UNet and two text encoders (meta device)
def test_sd_scripts_sdxl_module_names_are_those_of_its_sai_unet(sd_scripts_sdxl):
    m = sd_scripts_sdxl
    assert m["lora_unet_input_blocks_4_1_proj_in"].kernel == ()          # SDXL: linear projections
    assert m["lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k"].in_dim == 2048
    assert m["lora_unet_middle_block_1_transformer_blocks_9_ff_net_2"].target == \
        "unet.mid_block.attentions.0.transformer_blocks.9.ff.net.2"
    assert m["lora_unet_input_blocks_1_0_in_layers_2"].target == "unet.down_blocks.0.resnets.0.conv1"
    assert m["lora_unet_input_blocks_3_0_op"].target == "unet.down_blocks.0.downsamplers.0.conv"
    assert m["lora_unet_output_blocks_2_2_conv"].target == "unet.up_blocks.0.upsamplers.0.conv"
    assert m["lora_unet_output_blocks_2_0_skip_connection"].kernel == (1, 1)
    assert m["lora_te2_text_model_encoder_layers_31_mlp_fc2"].in_dim == 5120
    assert "lora_te1_text_model_encoder_layers_11_self_attn_q_proj" in m
    assert not any(n.startswith("lora_te_") or "down_blocks" in n for n in m)


@pytest.mark.slow  # a full-size SDXL UNet and two text encoders (meta device)
def test_sd_scripts_sdxl_modules_take_every_key_of_a_file_sd_scripts_trained(sd_scripts_sdxl):
    """A real SDXL LoRA trained with sd-scripts (the corpus layout, 986 modules): every module of
    it is one our statement of the rule creates, with the same shapes — the rule checked against
    sd-scripts' own output."""
    spec = layout(SDXL_LAYOUT)
    sd = {k: torch.zeros(v["shape"]) for k, v in spec.items()}
    got = sd_scripts_load(sd, sd_scripts_sdxl)
    assert got.not_loaded == [] and got.mismatched == [] and len(got.merged) == 986


@pytest.fixture(scope="module")
def sdxl_kohya(tmp_path_factory, sd_scripts_sdxl):
    """The corpus SDXL layout with random rank-2 factors, converted by loradex to diffusers and
    back to kohya; the ΔW sd-scripts gets from the source is the known answer."""
    folder = tmp_path_factory.mktemp("sdxl")
    sd = kohya_from_layout(SDXL_LAYOUT)
    source = folder / "source.safetensors"
    save_file(sd, str(source))
    diffusers_file = folder / "diffusers.safetensors"
    convert_file(source, diffusers_file, "diffusers", base="sdxl")
    kohya_file = folder / "kohya.safetensors"
    convert_file(diffusers_file, kohya_file, "kohya", base="sdxl")
    expected = sd_scripts_load(sd, sd_scripts_sdxl)
    assert expected.not_loaded == [] and expected.mismatched == []
    return {"kohya": kohya_file, "diffusers": diffusers_file, "expected": expected}


@pytest.mark.slow  # a full-size SDXL UNet and two text encoders (meta device)
def test_sd_scripts_loads_an_sdxl_kohya_file_written_by_convert(sdxl_kohya, sd_scripts_sdxl):
    assert_sd_scripts_loads(sdxl_kohya["kohya"], sd_scripts_sdxl, sdxl_kohya["expected"], exact=False, sdxl=True)


@pytest.mark.slow  # a full-size SDXL UNet and two text encoders (meta device)
def test_sd_scripts_loads_sdxl_export_format_kohya(sdxl_kohya, sd_scripts_sdxl, tmp_path):
    add_file(Catalog(), sdxl_kohya["diffusers"], name="xlexport")
    result = runner.invoke(app, ["export", "xlexport", str(tmp_path / "webui"), "--format", "kohya"])
    assert result.exit_code == 0, result.output
    written = tmp_path / "webui" / "models" / "Lora" / "xlexport.safetensors"
    assert_sd_scripts_loads(written, sd_scripts_sdxl, sdxl_kohya["expected"], exact=False, sdxl=True)


@pytest.mark.slow  # a full-size SDXL UNet and two text encoders (meta device)
def test_sd_scripts_renames_diffusers_named_sdxl_keys_as_its_loader_does(sd_scripts_sdxl):
    """convert_diffusers_to_sai_if_needed: a diffusers-named SDXL kohya key lands on the SAI module."""
    name = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_1_attn1_to_q"
    renamed = sd_scripts_sai_renamed({f"{name}.alpha": torch.tensor(1.0),
                                      "lora_unet_up_blocks_0_resnets_2_conv_shortcut.alpha": torch.tensor(1.0),
                                      "lora_unet_up_blocks_1_upsamplers_0_conv.alpha": torch.tensor(1.0)})
    assert sorted(renamed) == ["lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q.alpha",
                               "lora_unet_output_blocks_2_0_skip_connection.alpha",
                               "lora_unet_output_blocks_5_2_conv.alpha"]
    assert all(k.split(".")[0] in sd_scripts_sdxl for k in renamed)


# --- diffusers, newest (installed) and oldest declared ----------------------------------------------
def _case(fmt, kohya, uniform) -> dict:
    return uniform if fmt == "kohya" else kohya


@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_newest_diffusers_fuses_loradex_files_exactly(kohya, uniform, fmt):
    case = _case(fmt, kohya, uniform)
    weights = fused_weights(str(case[fmt]), sorted(case["expected"]))
    assert_fused_exactly(weights, case["expected"], f"{fmt} file, installed diffusers")


def _declared_floor(package: str) -> str:
    text = (REPO / "pyproject.toml").read_text()
    match = re.search(rf'"{package}>=([0-9.]+)', text)
    assert match, f"pyproject.toml declares no {package} floor"
    return match.group(1)


def _oldest_diffusers_weights(lora: Path, expected: dict, tmp_path: Path) -> dict:
    if not OLDEST_PYTHON.is_file():
        pytest.skip(f"{OLDEST_PYTHON} absent: `make oldest-diffusers` (part of `make test`) builds the "
                    "venv with the oldest diffusers pyproject.toml declares")
    out = tmp_path / "fused.safetensors"
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    run = subprocess.run([str(OLDEST_PYTHON), str(TESTS / "_loader_checks.py"), str(lora),
                          json.dumps(sorted(expected)), str(out)], capture_output=True, text=True, env=env,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as fh:
        version = fh.metadata()["diffusers"]
    floor = _declared_floor("diffusers")
    assert version.startswith(floor), f"{OLDEST_PYTHON} has diffusers {version}, the declared floor is {floor}"
    return load_file(str(out))


@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_oldest_declared_diffusers_fuses_loradex_files_exactly(kohya, uniform, fmt, tmp_path):
    case = _case(fmt, kohya, uniform)
    weights = _oldest_diffusers_weights(case[fmt], case["expected"], tmp_path)
    assert_fused_exactly(weights, case["expected"], f"{fmt} file, oldest declared diffusers")


# --- LyCORIS → LoRA --------------------------------------------------------------------------------
ONE_BY_ONE = ("down_blocks.1.attentions.0.proj_in", "down_blocks.1.attentions.0.proj_out",
              "up_blocks.0.resnets.0.conv_shortcut")


@pytest.fixture(scope="module")
def lycoris_lora(targets, tmp_path_factory):
    """A LoHa on 1×1 convs (factors flattened, as LyCORIS stores them) and one Linear, converted at
    full rank: ΔW is kept exactly up to float rounding."""
    folder = tmp_path_factory.mktemp("lycoris")
    gen = torch.Generator().manual_seed(1)
    groups = {}
    for path in (*ONE_BY_ONE, "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"):
        out, inn = targets[f"unet.{path}"][:2]
        groups["lora_unet_" + path.replace(".", "_")] = {
            "hada_w1_a": _dyadic(gen, out, 2), "hada_w1_b": _dyadic(gen, 2, inn),
            "hada_w2_a": _dyadic(gen, out, 2), "hada_w2_b": _dyadic(gen, 2, inn), "alpha": torch.tensor(2.0)}
    src = folder / "loha.safetensors"
    save_safetensors({f"{m}.{s}": t for m, g in groups.items() for s, t in g.items()}, src,
                     {"ss_network_module": "lycoris.kohya"})
    dest = folder / "lora.safetensors"
    lycoris_to_lora(src, dest, rank=64, dtype="fp32", base="sd1")
    return dest, groups


def test_lycoris_to_lora_keeps_1x1_convs_4d(lycoris_lora, targets):
    dest, _ = lycoris_lora
    sd = load_file(str(dest))
    for path in ONE_BY_ONE:
        name = "lora_unet_" + path.replace(".", "_")
        out, inn = targets[f"unet.{path}"][:2]
        rank = sd[f"{name}.lora_down.weight"].shape[0]
        assert tuple(sd[f"{name}.lora_down.weight"].shape) == (rank, inn, 1, 1), name
        assert tuple(sd[f"{name}.lora_up.weight"].shape) == (out, rank, 1, 1), name
    assert sd["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight"].dim() == 2


def test_lycoris_to_lora_output_loads_in_diffusers_and_comfyui(lycoris_lora, targets):
    from loradex.merge.math.lycoris_math import lycoris_delta

    dest, groups = lycoris_lora
    expected = {f"unet.{name.removeprefix('lora_unet_')}": None for name in groups}
    expected = {}
    for name, group in groups.items():
        target = next(t for t in targets if t.startswith("unet.") and "lora_unet_" + t[5:].replace(".", "_") == name)
        expected[target] = lycoris_delta(group, name=name).double().reshape(targets[target])
    weights = fused_weights(str(dest), sorted(expected))  # raised "size mismatch" for 2-D 1×1 factors
    for target, delta in expected.items():
        got = (weights[f"after.{target}"] - weights[f"before.{target}"]).double()
        torch.testing.assert_close(got, delta, atol=1e-5, rtol=1e-5, msg=target)
    patches, not_loaded, failed = comfyui_patches(load_file(str(dest)), comfyui_map_for(targets), targets)
    assert not_loaded == [] and failed == []
    for target, delta in expected.items():
        torch.testing.assert_close(patches[target], delta, atol=1e-5, rtol=1e-5, msg=target)


# --- webui exports and sync ------------------------------------------------------------------------
def _export(catalog, ref, dest, **options):
    return export_version(catalog, ref, dest, converter=convert_path, **options)


def _sd1_corpus_sources(tmp_path) -> dict[str, Path]:
    """Real SD1 files in formats ComfyUI does not (fully) read, from the shared corpus."""
    return {"diffusers-attn-proc": corpus_file("diffusers_attnproc_catundchat_sd15_pytorch_lora_weights.safetensors"),
            "safeloras": corpus_file("cloneofsimo_analog_svd_rank4.safetensors"),
            "peft": corpus_file("peft_sd15_text_encoder_adapter_model_hansjohn.safetensors")}


@pytest.fixture(scope="module")
def sd1_targets():
    return sd1_meta_targets()


def _assert_comfyui_loads_all(path: Path, targets) -> None:
    sd = load_file(str(path))
    patches, not_loaded, failed = comfyui_patches(sd, comfyui_map_for(targets), targets)
    assert not_loaded == [] and failed == [] and patches, (path.name, not_loaded[:3], failed[:3])


@pytest.mark.parametrize("layout,folder", [("comfyui", "models/loras"), ("a1111", "models/Lora")])
def test_webui_export_converts_what_the_webui_would_not_load(layout, folder, tmp_path, kohya, sd1_targets):
    catalog = Catalog()
    sources = {"loradex-diffusers": kohya["diffusers"], **_sd1_corpus_sources(tmp_path)}
    for label, src in sources.items():
        version = add_file(catalog, src, name=label.replace("-", "")).version
        result = _export(catalog, version.ref, tmp_path / layout / label, layout=layout)
        assert result.converted_to == "kohya", label
        written = tmp_path / layout / label / folder / f"{version.adapter}.safetensors"
        assert probe_path(written).format == "kohya", label
        if label != "loradex-diffusers":  # the tiny model's names are checked below
            _assert_comfyui_loads_all(written, sd1_targets)


def test_exported_diffusers_version_loads_exactly_in_comfyui(kohya, targets, tmp_path):
    catalog = Catalog()
    version = add_file(catalog, kohya["diffusers"], name="style").version
    _export(catalog, version.ref, tmp_path / "comfy", layout="comfyui")
    written = tmp_path / "comfy" / "models" / "loras" / "style.safetensors"
    patches, not_loaded, failed = comfyui_patches(load_file(str(written)), comfyui_map_for(targets), targets)
    assert not_loaded == [] and failed == []
    assert all(torch.equal(patches[t], d) for t, d in kohya["expected"].items())
    # --format as-is: the stored bytes, as asked
    _export(catalog, version.ref, tmp_path / "raw", layout="comfyui", to_format="as-is")
    assert (tmp_path / "raw" / "models" / "loras" / "style.safetensors").read_bytes() == kohya["diffusers"].read_bytes()


def test_token_riding_in_a_safeloras_file_lands_in_the_embedding_folder(tmp_path, sd1_targets):
    from safetensors import safe_open

    src = corpus_file("cloneofsimo_analog_svd_rank4.safetensors")
    with safe_open(str(src), framework="pt") as fh:
        sd, meta = {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata())
    token = torch.randn(768, generator=torch.Generator().manual_seed(3))
    path = tmp_path / "analog.safetensors"
    save_file({**sd, "<krk>": token}, str(path), {**meta, "<krk>": "<embed>"})
    catalog = Catalog()
    add_file(catalog, path, name="analog")
    result = _export(catalog, "analog", tmp_path / "comfy", layout="comfyui")
    lora, emb = tmp_path / "comfy" / "models" / "loras", tmp_path / "comfy" / "models" / "embeddings"
    assert sorted(p.name for p in lora.glob("*.safetensors")) == ["analog.safetensors"]
    _assert_comfyui_loads_all(lora / "analog.safetensors", sd1_targets)
    assert [p.name for p in emb.iterdir()] == ["analog.krk.safetensors"]
    assert probe_path(emb / "analog.krk.safetensors").kind == "embedding"
    assert torch.equal(load_file(str(emb / "analog.krk.safetensors"))["<krk>"], token)
    assert str(emb / "analog.krk.safetensors") in result.files


def test_exported_peft_version_keeps_the_alpha_of_its_adapter_config(kohya, targets, tmp_path):
    """A PEFT file as peft saves it: no alphas in the file, lora_alpha ≠ r in adapter_config.json."""
    from loradex.merge.conventions.convert import convert_state_dict

    sd = load_file(str(kohya["kohya"]))
    unet = {k: v for k, v in sd.items() if k.startswith("lora_unet_")}
    for key in [k for k in unet if k.endswith(".alpha")]:
        unet[key] = torch.tensor(2.0)  # r = 4: scale 1/2
    peft, meta, _ = convert_state_dict(unet, to="peft", base="sd1")
    path = tmp_path / "adapter_model.safetensors"
    save_file(peft, str(path))  # no loradex metadata: the alphas are only in the sidecar
    (tmp_path / "adapter_config.json").write_text(meta["loradex.peft_adapter_config"])
    catalog = Catalog()
    version = add_file(catalog, path, name="peftstyle").version
    assert version.file_format == "peft"
    _export(catalog, version.ref, tmp_path / "comfy", layout="comfyui")
    written = load_file(str(tmp_path / "comfy" / "models" / "loras" / "peftstyle.safetensors"))
    patches, not_loaded, _ = comfyui_patches(written, comfyui_map_for(targets), targets)
    names = {k.split(".")[0]: "unet." + k.split(".")[0][len("lora_unet_"):] for k in unet}
    names = {n: next(t for t in targets if t.startswith("unet.") and "lora_unet_" + t[5:].replace(".", "_") == n)
             for n in names}
    expected = kohya_deltas(unet, names, targets)
    assert not_loaded == [] and set(patches) == set(expected)
    assert all(torch.equal(patches[t], d) for t, d in expected.items())


def test_peft_version_without_its_config_is_refused_not_guessed(kohya, tmp_path, capsys):
    """Without adapter_config.json a PEFT file's alpha is unknown (peft's default is 8, not r):
    a kohya file claiming one would load at a guessed strength."""
    from loradex.cli.main import main
    from loradex.merge.conventions.convert import convert_state_dict

    sd = load_file(str(kohya["kohya"]))
    peft, _, _ = convert_state_dict({k: v for k, v in sd.items() if k.startswith("lora_unet_")}, to="peft")
    path = tmp_path / "bare" / "adapter_model.safetensors"
    path.parent.mkdir()
    save_file(peft, str(path))
    version = add_file(Catalog(), path, name="bare").version
    with pytest.raises(SystemExit) as exc:
        main(["export", "bare", str(tmp_path / "comfy"), "--layout", "comfyui"])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and err.count("\n") == 1 and "adapter_config.json" in err, err
    assert not (tmp_path / "comfy" / "models").exists()
    _export(Catalog(), "bare", tmp_path / "raw", layout="comfyui", to_format="as-is")
    copied = tmp_path / "raw" / "models" / "loras" / "bare.safetensors"
    assert hashlib.sha256(copied.read_bytes()).hexdigest() == version.sha256


def _unconvertible(tmp_path, kohya) -> Path:
    """A diffusers-format file with a key no convention reads: converting it would drop it."""
    sd = load_file(str(kohya["diffusers"]))
    sd["unet.mid_block.attentions.0.proj_in.lora_magnitude_vector"] = torch.ones(4)
    path = tmp_path / "odd.safetensors"
    from safetensors import safe_open

    with safe_open(str(kohya["diffusers"]), framework="pt") as fh:
        meta = fh.metadata()
    save_file(sd, str(path), meta)
    return path


def test_export_refuses_in_one_line_what_it_cannot_convert(tmp_path, kohya, capsys):
    from loradex.cli.main import main

    add_file(Catalog(), _unconvertible(tmp_path, kohya), name="odd")
    dest = tmp_path / "comfy"
    with pytest.raises(SystemExit) as exc:
        main(["export", "odd", str(dest), "--layout", "comfyui"])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and err.startswith("error:") and err.count("\n") == 1, err
    assert "lora_magnitude_vector" in err
    assert not (dest / "models" / "loras" / "odd.safetensors").exists()


def test_sync_folder_converts_refuses_and_stays_stable(tmp_path, kohya, targets):
    catalog = Catalog()
    good = add_file(catalog, kohya["diffusers"], name="style").version
    odd = add_file(catalog, _unconvertible(tmp_path, kohya), name="odd").version
    catalog.apply([MoveAlias(good.ref, "production"), MoveAlias(odd.ref, "production")])
    webui = tmp_path / "webui"
    args = ["sync-folder", str(webui), "--layout", "comfyui", "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 1, first.output  # one adapter refused
    lora = webui / "models" / "loras"
    assert sorted(p.name for p in lora.iterdir()) == ["style.json", "style.safetensors"]
    patches, not_loaded, _ = comfyui_patches(load_file(str(lora / "style.safetensors")),
                                             comfyui_map_for(targets), targets)
    assert not_loaded == [] and all(torch.equal(patches[t], d) for t, d in kohya["expected"].items())
    report = sync_folder(Catalog(), webui, layout="comfyui", converter=convert_path)
    actions = {a.path: a.action for a in report.actions}
    assert actions == {"models/loras/style.safetensors": "unchanged", "models/loras/style.json": "unchanged",
                       "models/loras/odd.safetensors": "refused"}
    assert any("odd" in w and "refused" in w for w in report.warnings)
    # --format as-is: the stored bytes replace the converted file loradex manages
    again = runner.invoke(app, [*args, "--format", "as-is"])
    assert again.exit_code == 0, again.output
    assert (lora / "style.safetensors").read_bytes() == kohya["diffusers"].read_bytes()
    assert hashlib.sha256((lora / "odd.safetensors").read_bytes()).hexdigest() == odd.sha256


# --- embeddings --------------------------------------------------------------------------------------
def test_two_tensors_768_and_1280_under_any_names_are_an_sdxl_embedding(tmp_path):
    gen = torch.Generator().manual_seed(0)
    path = tmp_path / "detail.safetensors"
    l, g = torch.randn(2, 768, generator=gen), torch.randn(2, 1280, generator=gen)
    save_file({"te2": g, "te1": l}, str(path))
    probe = probe_path(path)
    assert (probe.kind, probe.format, probe.base) == ("embedding", "sdxl-embedding", "sdxl")
    assert probe.n_vectors == 2 and set(probe.components) == {"text_encoder", "text_encoder_2"}
    # a webui export writes the names A1111 and ComfyUI look for
    catalog = Catalog()
    add_file(catalog, path, name="detail")
    _export(catalog, "detail", tmp_path / "a1111", layout="a1111")
    written = load_file(str(tmp_path / "a1111" / "embeddings" / "detail.safetensors"))
    assert set(written) == {"clip_l", "clip_g"}
    assert torch.equal(written["clip_l"], l) and torch.equal(written["clip_g"], g)


def test_diffusers_embedding_is_exported_as_a1111(tmp_path):
    path = tmp_path / "tok.safetensors"
    vectors = torch.randn(3, 768, generator=torch.Generator().manual_seed(2))
    save_file({"<tok>": vectors}, str(path))
    catalog = Catalog()
    add_file(catalog, path, name="tok")
    result = _export(catalog, "tok", tmp_path / "comfy", layout="comfyui")
    assert result.converted_to == "a1111"
    written = load_file(str(tmp_path / "comfy" / "models" / "embeddings" / "tok.safetensors"))
    assert list(written) == ["emb_params"] and torch.equal(written["emb_params"], vectors)


# --- hostile header JSON on the conversion path (convert, and now every webui export) --------------
@pytest.mark.parametrize("key,value,says", [
    ("lora_adapter_metadata", "{bad", "not valid JSON"),
    ("lora_adapter_metadata", "[1, 2]", "not of type 'object'"),
    ("lora_adapter_metadata", '{"unet.lora_alpha": "x"}', "unet.lora_alpha"),
    ("lora_adapter_metadata", '{"unet.alpha_pattern": {"(": 1.0}}', "not a regular expression"),
    ("loradex.alpha_dtypes", '{"unet": {"x": "int8"}}', "unet/x"),
])
def test_malformed_alpha_json_is_a_one_line_refusal(kohya, tmp_path, capsys, key, value, says):
    from safetensors import safe_open

    from loradex.cli.main import main

    with safe_open(str(kohya["diffusers"]), framework="pt") as fh:
        meta = dict(fh.metadata())
    path = tmp_path / "bad.safetensors"
    save_file(load_file(str(kohya["diffusers"])), str(path), {**meta, key: value})
    for argv in (["convert", str(path), "--to", "kohya", "-o", str(tmp_path / "o.safetensors")],
                 ["export", "bad", str(tmp_path / "comfy"), "--layout", "comfyui"]):
        if argv[0] == "export":
            add_file(Catalog(), path, name="bad")
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 1 and err.startswith("error:") and err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "o.safetensors").exists() and not (tmp_path / "comfy" / "models" / "loras").exists()


def test_malformed_adapter_config_sidecar_is_a_one_line_refusal(kohya, tmp_path, capsys):
    from loradex.cli.main import main
    from loradex.merge.conventions.convert import convert_state_dict

    sd = load_file(str(kohya["kohya"]))
    peft, _, _ = convert_state_dict({k: v for k, v in sd.items() if k.startswith("lora_unet_")}, to="peft")
    save_file(peft, str(tmp_path / "adapter_model.safetensors"))
    (tmp_path / "adapter_config.json").write_text('{"r": 4, "lora_alpha": [8]}')
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(tmp_path / "adapter_model.safetensors"), "--to", "kohya", "-o", str(tmp_path / "o.safetensors")])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and err.count("\n") == 1 and "lora_alpha" in err, err
