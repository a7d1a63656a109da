"""The SD UNet families' naming and blocks aspects: every field the conventions read is declared,
the tables built from them are the ones the conversions always used, and the defaults for files
without a family name registered families that can serve them."""

from __future__ import annotations

import pytest

from loradex.families import all_families, assumed, get_family
from loradex.merge.conventions.module_layouts import BASE_COMPONENTS, unet_namings

UNET_FIELDS = ("UNET", "TEXT_ENCODERS", "KOHYA_UNET_NAMES", "KOHYA_TEXT_ENCODER_PREFIXES", "KOHYA_MARKERS",
               "LDM_TEXT_ENCODER_PREFIXES", "CONV1X1_LEAVES", "SAFELORAS_MODULE_ORDER")


def test_every_unet_family_declares_each_naming_field():
    namings = unet_namings()
    assert [f for f, _ in namings] == ["sd1", "sd2", "sdxl"]
    for family, naming in namings:
        missing = [f for f in UNET_FIELDS if not hasattr(naming, f)]
        assert not missing, f"families/{family}/naming.py lacks {missing}"
        assert naming.KOHYA_UNET_NAMES in ("sgm", "diffusers")
        assert set(naming.KOHYA_TEXT_ENCODER_PREFIXES) == set(naming.TEXT_ENCODERS)
        assert set(naming.LDM_TEXT_ENCODER_PREFIXES) <= set(naming.TEXT_ENCODERS)
        assert set(get_family(family).components) == {"unet", *naming.TEXT_ENCODERS}


def test_the_tables_built_from_the_declarations():
    from loradex.merge.conventions.checkpoint_layout import LDM_FAMILIES, TEXT_ENCODER_PREFIXES, ldm_family
    from loradex.merge.conventions.kohya_names import kohya_module_name, kohya_prefix, writes_sgm_unet

    assert BASE_COMPONENTS == {"sd1": {"unet": "sd1", "text_encoder": "clip-l"},
                               "sd2": {"unet": "sd2", "text_encoder": "openclip-h"},
                               "sdxl": {"unet": "sdxl", "text_encoder": "clip-l", "text_encoder_2": "openclip-g"}}
    assert [f for f in ("sd1", "sd2", "sdxl", "flux", None) if writes_sgm_unet(f)] == ["sdxl"]
    assert [kohya_prefix("text_encoder", f) for f in ("sd1", "sd2", "sdxl", "flux", None)] == \
        ["lora_te_", "lora_te_", "lora_te1_", "lora_te_", "lora_te_"]
    assert kohya_prefix("text_encoder_2", "sdxl") == "lora_te2_"
    path = "down_blocks.1.attentions.0.proj_in"
    assert kohya_module_name("unet", path, "sdxl", sgm_unet=True) == "lora_unet_input_blocks_4_1_proj_in"
    assert kohya_module_name("unet", path, "sd1", sgm_unet=False) == "lora_unet_down_blocks_1_attentions_0_proj_in"
    assert set(LDM_FAMILIES) == {"sd1", "sdxl"}  # 2.x's 24-layer OpenCLIP-H is not written
    assert ldm_family(["conditioner.embedders.1.model.ln_final.weight"]) == "sdxl"
    assert ldm_family(["cond_stage_model.transformer.text_model.final_layer_norm.weight"]) == "sd1"
    assert TEXT_ENCODER_PREFIXES["sdxl"]["text_encoder_2"] == "conditioner.embedders.1.model."


@pytest.mark.parametrize("base, shape, kernel", [
    ("sd1", (8, 4), (8, 4, 1, 1)),     # SD 1.x proj_in is a 1×1 convolution
    ("sd2", (8, 4), (8, 4)),           # 2.x made it Linear
    ("sdxl", (8, 4), (8, 4)),
    (None, (8, 4), (8, 4)),            # unknown: only the leaves every UNet shares
])
def test_lycoris_conv_leaves_follow_the_family(base, shape, kernel):
    from loradex.merge.conventions.lycoris_to_lora import _kohya_weight_shape

    assert _kohya_weight_shape("lora_unet_down_blocks_1_attentions_0_proj_in", shape, base) == kernel
    assert _kohya_weight_shape("lora_unet_down_blocks_1_resnets_0_conv_shortcut", shape, base) == (8, 4, 1, 1)


def test_block_maps_come_from_the_families_blocks_aspect():
    from loradex.merge.conventions.lbw_blocks import block_map, preset_names
    from loradex.registry.errors import UsageError

    with_blocks = [f.name for f in all_families() if f.aspect("blocks") is not None]
    assert with_blocks == ["sd1", "sdxl"]
    assert sorted(block_map("sd1").layouts) == [17, 26] and sorted(block_map("sdxl").layouts) == [12, 20]
    assert block_map(None).family == assumed.UNET_LORA
    assert "INALL" in preset_names() and "INALL" not in block_map("sdxl").presets
    from loradex.merge.math.block_weights import block_multiplier, resolve_block_weights

    with pytest.raises(UsageError, match="flux"):  # a family without a block map: one line, no crash
        resolve_block_weights("INALL", block_map("flux"))
    with pytest.raises(UsageError, match="flux"):
        block_multiplier("lora_unet_mid_block_attentions_0_proj_out", [1.0] * 17, block_map("flux"))


def test_the_assumed_families_can_serve_what_they_stand_in_for():
    unet = get_family(assumed.UNET_LORA)
    assert hasattr(unet.aspect("naming"), "UNET") and unet.aspect("blocks") is not None
    assert unet.aspect("naming").SAFELORAS_MODULE_ORDER
    assert hasattr(get_family(assumed.DIT_TRANSFORMER).aspect("naming"), "TABLE")
