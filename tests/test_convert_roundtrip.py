"""kohya ↔ diffusers ↔ peft ↔ legacy conversions are bit-exact and never drop a key."""

from __future__ import annotations

import json
import re

import pytest
import torch
from _convert_fixtures import SD15_LAYOUT, SDXL_LAYOUT, assert_same_state_dict, kohya_from_layout

from loradex.merge.conventions.convert import convert_state_dict, detect_base, detect_convention, to_canonical
from loradex.merge.conventions.lora_conventions import LORA_ADAPTER_METADATA_KEY
from loradex.registry.errors import CoverageError, UnsupportedFormat


@pytest.fixture(scope="module")
def sd15_kohya():
    return kohya_from_layout(SD15_LAYOUT, rank=2)


@pytest.fixture(scope="module")
def sdxl_kohya():
    return kohya_from_layout(SDXL_LAYOUT, rank=2)


def _peft_alphas(config: dict, component: str, paths) -> dict[str, float]:
    """What peft's get_pattern_key gives each module (the rule diffusers' loader applies)."""
    compiled = [(re.compile(rf"(.*\.)?({p})$"), v) for p, v in config[f"{component}.alpha_pattern"].items()]
    out = {}
    for path in paths:
        names = [path, path.removeprefix("text_model.")]
        hits = [v for rx, v in compiled if any(rx.match(n) for n in names)]
        out[path] = hits[0] if hits else config[f"{component}.lora_alpha"]
    return out


@pytest.mark.parametrize("which,base", [("sd15", "sd1"), ("sdxl", "sdxl")])
def test_kohya_diffusers_kohya_is_bit_exact(which, base, sd15_kohya, sdxl_kohya):
    src = sd15_kohya if which == "sd15" else sdxl_kohya
    assert detect_convention(src) == "kohya"
    assert detect_base(src) == base
    diff, meta, report = convert_state_dict(src, to="diffusers")
    assert report.unconsumed == [] and report.tensors_out == len(src) * 2 // 3  # alphas → metadata
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in diff)
    # every alpha, as diffusers' loader will resolve it from lora_adapter_metadata
    config = json.loads(meta[LORA_ADAPTER_METADATA_KEY])
    lora = to_canonical(src)
    for component, mods in lora.components.items():
        resolved = _peft_alphas(config, component, mods)
        assert resolved == {path: float(mod.alpha.item()) for path, mod in mods.items()}
    back, back_meta, _ = convert_state_dict(diff, to="kohya", metadata=meta)
    assert_same_state_dict(src, back)  # names (SGM for SDXL), tensors, alphas and dtypes
    assert back_meta["modelspec.architecture"].startswith({"sd1": "stable-diffusion-v1",
                                                          "sdxl": "stable-diffusion-xl-v1-base"}[base])


def test_sdxl_layout_maps_every_key_to_a_known_diffusers_module(sdxl_kohya):
    lora = to_canonical(sdxl_kohya)
    assert lora.notes == []  # nothing needed the greedy fallback: all names are in the tables
    unet = lora.components["unet"]
    assert "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k" in unet
    assert "mid_block.attentions.0.transformer_blocks.9.ff.net.0.proj" in unet
    assert "up_blocks.1.attentions.2.transformer_blocks.1.attn1.to_out.0" in unet
    assert lora.module_count() == len(sdxl_kohya) // 3
    # SGM input_blocks_4_1 is diffusers down_blocks.1.attentions.0 (as in diffusers' own map)
    src = sdxl_kohya["lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight"]
    assert unet["down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"].down is src


def test_sdxl_diffusers_spelling_in_kohya_files_also_maps(sdxl_kohya):
    diff_spelled, _, _ = convert_state_dict(sdxl_kohya, to="kohya", sdxl_unet_names="diffusers")
    assert any(k.startswith("lora_unet_down_blocks_1_attentions_0") for k in diff_spelled)
    back, _, _ = convert_state_dict(diff_spelled, to="kohya")  # default: SGM names again
    assert_same_state_dict(sdxl_kohya, back)


def test_sd15_kohya_peft_and_legacy_round_trips(sd15_kohya):
    unet_only = {k: v for k, v in sd15_kohya.items() if k.startswith("lora_unet_")}
    peft, peft_meta, _ = convert_state_dict(unet_only, to="peft")
    assert all(k.startswith("base_model.model.") for k in peft)
    back, _, _ = convert_state_dict(peft, to="kohya", metadata=peft_meta)
    assert_same_state_dict(unet_only, back)
    # legacy has no alpha: refused rather than approximated
    with pytest.raises(UnsupportedFormat, match="store no alpha"):
        convert_state_dict(sd15_kohya, to="diffusers-legacy")


def test_unknown_key_is_refused_and_named(sd15_kohya):
    sd = dict(sd15_kohya)
    sd["lora_unet_down_blocks_0_attentions_0_proj_in.dora_scale"] = torch.ones(1, 320)
    with pytest.raises(CoverageError) as err:
        convert_state_dict(sd, to="diffusers")
    assert err.value.dropped == ["lora_unet_down_blocks_0_attentions_0_proj_in.dora_scale"]
    assert "dora_scale" in str(err.value)
    out, _, report = convert_state_dict(sd, to="diffusers", allow_partial=True)
    assert report.unconsumed == ["lora_unet_down_blocks_0_attentions_0_proj_in.dora_scale"]
    assert len(out) == (len(sd) - 1) * 2 // 3


def test_down_without_up_is_refused():
    sd = {"lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": torch.zeros(2, 8),
          "lora_unet_mid_block_attentions_0_proj_in.alpha": torch.tensor(1.0)}
    with pytest.raises(CoverageError) as err:
        convert_state_dict(sd, to="diffusers")
    assert sorted(err.value.dropped) == sorted(sd)


def test_greedy_fallback_resolves_unknown_block_counts_and_reports_it():
    # a tiny UNet's down_blocks.1 attention with 3 transformer layers: not in the SD tables
    name = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_2_ff_net_0_proj"
    sd = {f"{name}.lora_down.weight": torch.randn(2, 64), f"{name}.lora_up.weight": torch.randn(512, 2),
          f"{name}.alpha": torch.tensor(1.0)}
    lora = to_canonical(sd)
    assert list(lora.components["unet"]) == ["down_blocks.1.attentions.0.transformer_blocks.2.ff.net.0.proj"]
    assert lora.notes and "token split" in lora.notes[0]


def test_kohya_metadata_is_carried_and_stale_hashes_dropped(sd15_kohya):
    meta = {"ss_network_dim": "2", "ss_tag_frequency": "{}", "sshs_model_hash": "abc",
            "modelspec.title": "t"}
    _, out_meta, report = convert_state_dict(sd15_kohya, to="diffusers", metadata=meta)
    assert out_meta["ss_network_dim"] == "2" and out_meta["modelspec.title"] == "t"
    assert out_meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert "sshs_model_hash" not in out_meta and report.dropped_metadata == ["sshs_model_hash"]
