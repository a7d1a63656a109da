"""Real files from the corpus convert without dropping a key and come back bit-exact."""

from __future__ import annotations

import json

import pytest
import torch
from _convert_fixtures import SD15_LAYOUT, assert_same_state_dict, corpus_file, layout
from safetensors import safe_open
from safetensors.torch import load_file

from loradex.merge.conventions.convert import convert_file, convert_state_dict, detect_convention, to_canonical
from loradex.merge.conventions.module_layouts import UNET_LAYOUTS, sgm_to_diffusers, unet_module_paths


def _load(name: str):
    path = corpus_file(name)
    with safe_open(str(path), framework="pt") as fh:
        return load_file(str(path)), dict(fh.metadata() or {})


# file, convention it is in, base family, {component: module count}
CASES = [
    ("cloneofsimo_analog_svd_rank4.safetensors", "safeloras", "sd1", {"unet": 144, "text_encoder": 48}),
    ("diffusers_attnproc_catundchat_sd15_pytorch_lora_weights.safetensors", "diffusers-attn-proc", "sd1", {"unet": 128}),
    ("diffusers_timohavdk_2100-lora.safetensors", "diffusers-legacy", "sd1", {"unet": 128}),
    ("diffusers_sd2x_f32_JustinJiangNext_pytorch_lora_weights.safetensors", "diffusers-legacy", "sd2", {"unet": 128}),
    ("peft_sd15_text_encoder_adapter_model_hansjohn.safetensors", "peft", "sd1", {"text_encoder": 24}),
]


@pytest.mark.parametrize("name,convention,base,modules", CASES)
def test_corpus_file_to_kohya_and_back_is_bit_exact(name, convention, base, modules):
    sd, meta = _load(name)
    assert detect_convention(sd, meta) == convention
    kohya, kohya_meta, report = convert_state_dict(sd, to="kohya", metadata=meta)
    assert report.unconsumed == [] and report.base == base and report.modules == modules
    assert len(kohya) == 3 * sum(modules.values())  # down, up, alpha per module
    original = to_canonical(sd, metadata=meta)
    via_kohya = to_canonical(kohya, metadata=kohya_meta)
    for component, mods in original.components.items():
        for path, mod in mods.items():
            other = via_kohya.components[component][path]
            assert torch.equal(other.down, mod.down) and torch.equal(other.up, mod.up)
            assert other.scale == mod.scale == 1.0  # none of these formats stores alpha
    back, _, _ = convert_state_dict(kohya, to=convention, metadata=kohya_meta)
    assert_same_state_dict(sd, back)


def test_safeloras_walk_order_matches_shapes():
    sd, meta = _load("cloneofsimo_analog_svd_rank4.safetensors")
    lora = to_canonical(sd, metadata=meta)
    unet = lora.components["unet"]
    # index 4 is the GEGLU projection (up 8× wider than down's input), 6 and 7 the cross-attn k/v
    assert unet["down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj"].down is sd["unet:4:down"]
    assert unet["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"].down is sd["unet:6:down"]
    assert unet["mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0"].up is sd["unet:143:up"]
    te = lora.components["text_encoder"]
    assert te["text_model.encoder.layers.0.self_attn.k_proj"].down is sd["text_encoder:0:down"]


def test_peft_file_with_sidecar_config(tmp_path):
    src = corpus_file("peft_sd15_text_encoder_adapter_model_hansjohn.safetensors")
    report = convert_file(src, tmp_path / "te.safetensors", "kohya")
    out = load_file(str(tmp_path / "te.safetensors"))
    assert report.notes == []  # adapter_config.json was found: lora_alpha 8 = r 8
    assert {float(v) for k, v in out.items() if k.endswith(".alpha")} == {8.0}
    peft_report = convert_file(tmp_path / "te.safetensors", tmp_path / "adapter_model.safetensors", "peft")
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 8 and peft_report.unconsumed == []
    assert_same_state_dict(load_file(str(src)), load_file(str(tmp_path / "adapter_model.safetensors")))


def test_safeloras_embeddings_are_split_out(tmp_path):
    sd, meta = _load("cloneofsimo_analog_svd_rank4.safetensors")
    sd = dict(sd, **{"<krk>": torch.randn(768)})
    meta = dict(meta, **{"<krk>": "<embed>"})
    out, out_meta, report = convert_state_dict(sd, to="diffusers", metadata=meta)
    assert "<krk>" not in out and "<krk>" not in out_meta
    assert torch.equal(report.split_embeddings["<krk>"], sd["<krk>"])
    back, back_meta, _ = convert_state_dict(sd, to="safeloras", metadata=meta)
    assert back_meta["<krk>"] == "<embed>"
    assert_same_state_dict(sd, back)


def test_lycoris_is_refused_not_silently_dropped():
    sd, meta = _load("lycoris_smart_falcon_4_lokr.safetensors")
    from loradex.registry.errors import CoverageError

    with pytest.raises(CoverageError) as err:
        convert_state_dict(sd, to="diffusers", metadata=meta)
    assert any(".lokr_w1" in k for k in err.value.dropped)


def test_sd15_layout_maps_completely():
    spec = layout(SD15_LAYOUT)
    sd = {k: torch.zeros(v["shape"]) for k, v in spec.items()}
    lora = to_canonical(sd)
    assert lora.notes == [] and lora.unconsumed == [] and lora.module_count() == 264


@pytest.mark.slow
def test_generated_unet_tables_match_diffusers_modules():
    """The hand-free tables equal the Linear/Conv modules of diffusers' own UNets (meta device)."""
    from diffusers import UNet2DConditionModel

    configs = {
        "sd1": dict(block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768),
        "sdxl": dict(block_out_channels=(320, 640, 1280),
                     down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                     up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                     transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048,
                     addition_embed_type="text_time", addition_time_embed_dim=256,
                     projection_class_embeddings_input_dim=2816, attention_head_dim=(5, 10, 20),
                     use_linear_projection=True),
    }
    for name, config in configs.items():
        with torch.device("meta"):
            unet = UNet2DConditionModel(**config)
        real = {n for n, m in unet.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}
        assert set(unet_module_paths(UNET_LAYOUTS[name])) == real
    # every SDXL diffusers module has exactly one SGM name
    sgm = sgm_to_diffusers(UNET_LAYOUTS["sdxl"])
    assert sorted(sgm.values()) == sorted(unet_module_paths(UNET_LAYOUTS["sdxl"]))
    assert sgm["input_blocks.4.1.proj_in"] == "down_blocks.1.attentions.0.proj_in"
    assert sgm["output_blocks.5.2.conv"] == "up_blocks.1.upsamplers.0.conv"
    assert sgm["input_blocks.3.0.op"] == "down_blocks.0.downsamplers.0.conv"
    assert sgm["output_blocks.2.0.skip_connection"] == "up_blocks.0.resnets.2.conv_shortcut"
