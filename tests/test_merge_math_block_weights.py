"""LBW block mapping for SD1 / SDXL kohya names, and block-weighted merges."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from loradex.families import get_family
from loradex.merge.conventions.lbw_blocks import block_map
from loradex.merge.math.block_weights import block_multiplier, block_name, module_weights_from_vectors
from loradex.merge.math.lora_module import LoraModule, delta_weight
from loradex.merge.math.merge_methods import merge_adapters
from loradex.registry.errors import UsageError

LAYOUTS = {f: get_family(f).aspect("blocks").LAYOUTS for f in ("sd1", "sdxl")}
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


@pytest.mark.parametrize(
    "name, block",
    [
        ("lora_te_text_model_encoder_layers_0_mlp_fc1", "BASE"),
        ("lora_te2_text_model_encoder_layers_0_mlp_fc1", "BASE"),
        ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", "IN01"),
        ("lora_unet_down_blocks_1_attentions_1_proj_in", "IN05"),
        ("lora_unet_down_blocks_2_downsamplers_0_conv", "IN09"),
        ("lora_unet_down_blocks_3_resnets_1_conv2", "IN11"),
        ("lora_unet_mid_block_attentions_0_proj_out", "MID"),
        ("lora_unet_up_blocks_0_resnets_2_conv1", "OUT02"),
        ("lora_unet_up_blocks_1_attentions_0_proj_in", "OUT03"),
        ("lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2", "OUT11"),
        ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", "IN04"),
        ("lora_unet_middle_block_1_proj_in", "MID"),
        ("lora_unet_output_blocks_5_1_proj_out", "OUT05"),
        ("lora_unet_conv_out", None),
    ],
)
def test_block_names(name, block):
    assert block_name(name) == block


def test_vector_lengths_and_errors():
    assert len(LAYOUTS["sd1"][17]) == 17 and len(LAYOUTS["sdxl"][12]) == 12
    assert len(LAYOUTS["sd1"][26]) == 26 and len(LAYOUTS["sdxl"][20]) == 20
    vec = [float(i) for i in range(17)]
    assert block_multiplier("lora_te_text_model_encoder_layers_0_mlp_fc1", vec, block_map("sd1")) == 0.0
    assert block_multiplier("lora_unet_mid_block_attentions_0_proj_out", vec, block_map("sd1")) == 7.0
    assert block_multiplier("lora_unet_up_blocks_3_attentions_2_proj_out", vec, block_map("sd1")) == 16.0
    with pytest.raises(UsageError):
        block_multiplier("lora_unet_down_blocks_3_resnets_1_conv2", vec, block_map("sd1"))  # IN11 needs 26
    with pytest.raises(UsageError):
        block_multiplier("lora_unet_mid_block_attentions_0_proj_out", [1.0] * 13, block_map("sd1"))


def test_every_sdxl_layout_module_lands_in_a_12_vector_block():
    layout = CORPUS / "layouts" / "kohya_sdxl_lora_layout_AlienStyle.json"
    if not layout.exists():
        pytest.skip(f"corpus layout absent: {layout}")
    names = {k.split(".", 1)[0] for k in json.loads(layout.read_text())}
    blocks = {block_name(n) for n in names}
    assert blocks == set(LAYOUTS["sdxl"][12])


def test_block_weighted_concat():
    gen = torch.Generator().manual_seed(0)
    te = "lora_te_text_model_encoder_layers_0_mlp_fc1"
    mid = "lora_unet_mid_block_attentions_0_proj_out"

    def mod():
        return LoraModule(torch.randn(2, 6, generator=gen), torch.randn(5, 2, generator=gen), 1.0)

    a, b = {te: mod(), mid: mod()}, {te: mod(), mid: mod()}
    vec = [0.0] * 17
    vec[7] = 0.5  # MID only
    merged, _ = merge_adapters("concat", [a, b], [1.0, 2.0], module_weights=module_weights_from_vectors([vec, None], block_map("sd1")))
    assert torch.allclose(delta_weight(merged[mid]), delta_weight(a[mid], 0.5) + delta_weight(b[mid], 2.0), atol=1e-5)
    assert torch.allclose(delta_weight(merged[te]), delta_weight(b[te], 2.0), atol=1e-5)


# --- presets (sd-webui-lora-block-weight's default list) ------------------------------------------
def test_presets_resolve_to_the_extensions_vectors():
    from loradex.merge.math.block_weights import resolve_block_weights

    sd1 = list(LAYOUTS["sd1"][17])

    def blocks_on(name):
        return [b for b, v in zip(sd1, resolve_block_weights(name, block_map("sd1"))) if v == 1.0]

    assert blocks_on("INALL") == ["BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08"]
    assert blocks_on("ins") == ["BASE", "IN01", "IN02", "IN04"]  # names are case-insensitive
    assert blocks_on("IND") == ["BASE", "IN05", "IN07", "IN08"]
    assert blocks_on("MIDD") == ["BASE", "IN05", "IN07", "IN08", "MID", "OUT03", "OUT04", "OUT05", "OUT06"]
    assert blocks_on("OUTD") == ["BASE", "OUT03", "OUT04", "OUT05", "OUT06"]
    assert blocks_on("OUTS") == ["BASE", "OUT07", "OUT08", "OUT09", "OUT10", "OUT11"]
    assert blocks_on("OUTALL") == ["BASE", *sd1[8:]]
    assert blocks_on("ALL") == sd1 and blocks_on("NONE") == []
    assert resolve_block_weights("ALL0.5", block_map("sd1")) == [0.5] * 17
    assert resolve_block_weights("ALL0.5", block_map("sdxl")) == [0.5] * 12  # uniform presets fit any layout
    assert resolve_block_weights("1, 0.5,-1", block_map("sd1")) == [1.0, 0.5, -1.0]
    with pytest.raises(UsageError, match="sd1 only"):
        resolve_block_weights("INALL", block_map("sdxl"))  # the extension defines no SDXL version
    with pytest.raises(UsageError, match="INALL"):  # the hint lists the presets
        resolve_block_weights("INNALL", block_map("sd1"))


def test_cli_merge_with_a_preset_weights_blocks_and_pins_numbers_in_the_recipe(tmp_path):
    from typer.testing import CliRunner

    from loradex.cli.app import app
    from loradex.merge.conventions.adapter_io import open_version
    from loradex.merge.synthetic_adapters import write_random_kohya_lora
    from loradex.registry.catalog.adding import add_file
    from loradex.registry.catalog.store import Catalog

    modules = {  # one module per block kind the 17-number vector covers
        "lora_te_text_model_encoder_layers_0_mlp_fc1": (32, 64),  # BASE
        "lora_unet_down_blocks_1_attentions_1_proj_in": (64, 64),  # IN05
        "lora_unet_mid_block_attentions_0_proj_out": (64, 64),  # MID
        "lora_unet_up_blocks_1_attentions_0_proj_in": (64, 64),  # OUT03
    }
    catalog = Catalog(tmp_path / "home")
    for name, seed in (("a", 1), ("b", 2)):
        add_file(catalog, write_random_kohya_lora(tmp_path / f"{name}.safetensors", modules=modules, rank=2,
                                                  seed=seed), name=name)
    result = CliRunner().invoke(app, ["merge", "a:1", "b:0.5", "--method", "concat", "--name", "m", "--dtype", "fp32",
                                      "--block-weights", "INALL", "--block-weights", "OUTD",
                                      "--home", str(tmp_path / "home")])
    assert result.exit_code == 0, result.output
    merged = open_version(catalog, "m")[1].load_all()
    a, b = (open_version(catalog, n)[1].load_all() for n in "ab")
    # INALL keeps a's BASE and IN blocks; OUTD keeps b's BASE and OUT03–06
    expected = {"lora_te_text_model_encoder_layers_0_mlp_fc1": (1.0, 1.0),
                "lora_unet_down_blocks_1_attentions_1_proj_in": (1.0, 0.0),
                "lora_unet_mid_block_attentions_0_proj_out": (0.0, 0.0),
                "lora_unet_up_blocks_1_attentions_0_proj_in": (0.0, 1.0)}
    for name, (wa, wb) in expected.items():
        want = delta_weight(a[name], wa) + delta_weight(b[name], 0.5 * wb)
        got = delta_weight(merged[name]) if name in merged else torch.zeros_like(want)
        assert torch.allclose(got, want, atol=1e-6, rtol=1e-5), name
    recipe = json.loads(catalog.resolve("m").file_metadata["loradex.recipe"])
    assert recipe["inputs"][0]["block_weights_preset"] == "INALL"
    assert recipe["inputs"][0]["block_weights"] == [1.0] * 7 + [0.0] * 10
