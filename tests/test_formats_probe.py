"""Probe: every corpus file gets the README's kind / format / base; generated files at real shapes."""

from __future__ import annotations

import json

import pytest
from _formats_fixtures import (CORPUS_FILES, SD15_LAYOUT, SDXL_LAYOUT, corpus_available, write_kohya_from_layout,
                               write_raw)

from loradex.registry.errors import InvalidFile, UnsafePickle, UnsupportedFormat
from loradex.registry.files.hashing import hash_file
from loradex.registry.probe import explain_path, probe_path

needs_corpus = pytest.mark.skipif(not corpus_available(), reason="../shared/corpus/files absent (a user's clone)")

# file → (kind, format, base, algorithm, pickle?) as the corpus README states them, in our spelling.
# The README's "diffusers" for the SD2 file is the legacy `unet.….lora.down` layout (checked below).
CORPUS_TABLE = {
    "cloneofsimo_analog_svd_rank4.safetensors": ("lora", "safeloras", "sd1", None, False),
    "cloneofsimo_lora_kiriko2.ti.pt": ("embedding", "diffusers-embedding", "sd1", None, True),
    "lycoris_smart_falcon_4_lokr.safetensors": ("lycoris", "lycoris", "sd1", "lokr", False),
    "diffusers_attnproc_catundchat_sd15_pytorch_lora_weights.safetensors":
        ("lora", "diffusers-legacy-attn-proc", "sd1", None, False),
    "diffusers_timohavdk_2100-lora.safetensors": ("lora", "diffusers-legacy", "sd1", None, False),
    "diffusers_sd2x_f32_JustinJiangNext_pytorch_lora_weights.safetensors":
        ("lora", "diffusers-legacy", "sd2", None, False),
    "peft_sd15_text_encoder_adapter_model_hansjohn.safetensors": ("lora", "peft", "sd1", None, False),
    "flux_aitoolkit_peft_lora_partial_leighwoods.safetensors": ("lora", "diffusers", "flux", None, False),
    "ti_a1111_EasyNegative_in_models-Lora_mayaru.safetensors": ("embedding", "a1111-embedding", "sd1", None, False),
    "ti_a1111_bad-hands-5_mayaru.pt": ("embedding", "a1111-embedding-pt", "sd1", None, True),
    "ti_sdxl_clip_g_clip_l_kaleidia_SDXL-Detail.safetensors": ("embedding", "sdxl-embedding", "sdxl", None, False),
    "ti_t5xxl_kaleidia_T5-CharDetail.safetensors": ("embedding", "t5-embedding", "flux", None, False),
    "ti_diffusers_learned_embeds_fastai_oldzip.bin": ("embedding", "diffusers-embedding", "sd1", None, True),
    "ti_diffusers_learned_embeds_ttekcor.safetensors": ("embedding", "diffusers-embedding", "sd1", None, False),
}
BAD_FILES = {
    "bad_lfs_pointer_learned_embeds.safetensors": "a Git LFS pointer, not the file",
    "bad_invokeai_fakeTensor_json_kohya_sd15_shinkai.safetensors": "is JSON text, not a model file",
}


@needs_corpus
def test_corpus_table_covers_every_file():
    names = {p.name for p in CORPUS_FILES.iterdir() if not p.name.endswith(".adapter_config.json")}
    assert names == set(CORPUS_TABLE) | set(BAD_FILES)


@needs_corpus
@pytest.mark.parametrize("name", sorted(CORPUS_TABLE))
def test_corpus_file_probes_as_readme_says(name):
    kind, fmt, base, algo, is_pickle = CORPUS_TABLE[name]
    r = probe_path(CORPUS_FILES / name, allow_pickle=is_pickle)
    assert (r.kind, r.format, r.base, r.algorithm) == (kind, fmt, base, algo)
    d = r.to_dict()
    json.dumps(d)  # JSON-safe
    assert d["container"] == ("torch-zip" if is_pickle else "safetensors")
    matched = [v.prober for v in explain_path(CORPUS_FILES / name, allow_pickle=is_pickle) if v.matched]
    assert r.prober in matched


@needs_corpus
@pytest.mark.parametrize("name", sorted(n for n, row in CORPUS_TABLE.items() if row[4]))
def test_corpus_pickles_refused_without_opt_in(name):
    with pytest.raises(UnsafePickle) as exc:
        probe_path(CORPUS_FILES / name)
    assert "--allow-pickle" in str(exc.value) and "\n" not in str(exc.value)


@needs_corpus
@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_corpus_bad_files_one_line_error(name):
    with pytest.raises(InvalidFile) as exc:
        probe_path(CORPUS_FILES / name, allow_pickle=True)
    msg = str(exc.value)
    assert BAD_FILES[name] in msg and "\n" not in msg


@needs_corpus
def test_corpus_facts_in_detail():
    f = CORPUS_FILES
    safe = probe_path(f / "cloneofsimo_analog_svd_rank4.safetensors")
    assert safe.ranks == (4,) and safe.components == ("unet", "text_encoder") and safe.module_count == 192
    assert safe.dtypes == ("F16",) and "CLIPAttention" in safe.target_modules

    lokr = probe_path(f / "lycoris_smart_falcon_4_lokr.safetensors")
    assert lokr.ranks == (4,) and lokr.alphas == (4.0,) and lokr.module_count == 350
    assert lokr.training["network_module"] == "lycoris.kohya" and lokr.training["seed"] == 42
    assert lokr.training["network_args"]["algo"] == "lokr" and lokr.training["epochs"] == 10
    assert lokr.trigger_words[0] == r"smart falcon \(umamusume\)"
    assert len([k for k in lokr.metadata if k.startswith(("ss_", "sshs_"))]) == 61

    sd2 = probe_path(f / "diffusers_sd2x_f32_JustinJiangNext_pytorch_lora_weights.safetensors")
    assert sd2.base_reason == "UNet cross-attention width 1024" and sd2.ranks == (4,)
    assert set(sd2.target_modules) == {"to_q", "to_k", "to_v", "to_out_0"}

    attn = probe_path(f / "diffusers_attnproc_catundchat_sd15_pytorch_lora_weights.safetensors")
    assert attn.ranks == (4,) and attn.components == ("unet",)

    peft = probe_path(f / "peft_sd15_text_encoder_adapter_model_hansjohn.safetensors")
    assert peft.components == ("text_encoder",) and peft.ranks == (8,) and peft.alphas == (8.0,)
    assert peft.target_modules == ("q_proj", "v_proj") and peft.base_from_metadata == "sd1"

    easy = probe_path(f / "ti_a1111_EasyNegative_in_models-Lora_mayaru.safetensors")
    assert easy.n_vectors == 8 and easy.tokens == ("ti_a1111_EasyNegative_in_models-Lora_mayaru",)

    sdxl = probe_path(f / "ti_sdxl_clip_g_clip_l_kaleidia_SDXL-Detail.safetensors")
    assert sdxl.n_vectors == 2
    t5 = probe_path(f / "ti_t5xxl_kaleidia_T5-CharDetail.safetensors")
    assert t5.n_vectors == 88 and any("t5" in n.lower() for n in t5.notes)
    ttek = probe_path(f / "ti_diffusers_learned_embeds_ttekcor.safetensors")
    assert ttek.tokens == ("<detail-schemas>",) and "<detail-schemas>" in ttek.trigger_words

    hands = probe_path(f / "ti_a1111_bad-hands-5_mayaru.pt", allow_pickle=True)  # saved on cuda:0
    assert hands.n_vectors == 2 and hands.training["name"] == "bad-hands-5" and hands.training["step"] == 1419
    kiriko = probe_path(f / "cloneofsimo_lora_kiriko2.ti.pt", allow_pickle=True)
    assert kiriko.tokens == ("<krk>",) and kiriko.n_vectors == 1


@needs_corpus
def test_flux_file_reports_metadata_disagreement_and_bogus_hash():
    r = probe_path(CORPUS_FILES / "flux_aitoolkit_peft_lora_partial_leighwoods.safetensors")
    assert r.base == "flux" and r.base_from_metadata == "sd1"
    assert any("metadata says sd1" in w and "flux" in w for w in r.warnings)
    assert any("sshs_model_hash" in w and "bogus" in w for w in r.warnings)
    assert "sshs_model_hash" not in r.header_hashes
    assert r.components == ("transformer",) and r.ranks == (16,) and r.module_count == 4
    assert r.trigger_words == ("YEW",)


@needs_corpus
def test_lokr_header_hash_is_autov3():
    path = CORPUS_FILES / "lycoris_smart_falcon_4_lokr.safetensors"
    r = probe_path(path)
    assert r.header_hashes["sshs_model_hash"] == hash_file(path).autov3


# --- generated files at real shapes ---------------------------------------------------------------
needs_layouts = pytest.mark.skipif(not SD15_LAYOUT.exists(), reason="../shared/corpus/layouts absent")


@needs_layouts
def test_full_size_kohya_sd15_from_layout(tmp_path):
    out = tmp_path / "sd15.safetensors"
    written = write_kohya_from_layout(SD15_LAYOUT, out, rank=2, alpha=1.0)
    assert len(written) == 792
    r = probe_path(out)
    assert (r.kind, r.format, r.base) == ("lora", "kohya", "sd1")
    assert r.module_count == 264 and r.ranks == (2,) and r.alphas == (1.0,)
    assert r.components == ("unet", "text_encoder") and r.dtypes == ("F16",)
    assert {"to_q", "to_k", "to_v", "to_out_0", "ff_net_0_proj", "ff_net_2", "q_proj", "fc1"} <= set(r.target_modules)
    assert not r.conv  # proj_in/proj_out are 1×1 convs in SD1: not a conv LoRA
    assert r.base_reason == "UNet cross-attention width 768"


@needs_layouts
def test_full_size_kohya_sdxl_sgm_names_from_layout(tmp_path):
    out = tmp_path / "sdxl.safetensors"
    write_kohya_from_layout(SDXL_LAYOUT, out, rank=2)
    r = probe_path(out)
    assert (r.kind, r.format, r.base) == ("lora", "kohya", "sdxl")
    assert r.module_count == 986 and r.ranks == (2,) and r.alphas == (2.0,) and r.dtypes == ("BF16",)
    assert r.components == ("unet", "text_encoder", "text_encoder_2")
    assert r.base_reason == "UNet cross-attention width 2048"


@needs_layouts
def test_sdxl_text_encoders_alone_are_sdxl(tmp_path):
    import json as _json

    layout = _json.loads(SDXL_LAYOUT.read_text())
    te_only = {k: v for k, v in layout.items() if k.startswith(("lora_te1_", "lora_te2_"))}
    src = tmp_path / "te.json"
    src.write_text(_json.dumps(te_only))
    write_kohya_from_layout(src, tmp_path / "te.safetensors", rank=2)
    r = probe_path(tmp_path / "te.safetensors")
    assert r.base == "sdxl" and r.base_reason == "second text encoder of width 1280"


# --- synthetic files for each remaining family ---------------------------------------------------------
def _kohya_pair(prefix, module, din, dout, r, dtype="F16", conv=None):
    down = (r, din, *conv) if conv else (r, din)
    up = (dout, r, 1, 1) if conv else (dout, r)
    return {f"{prefix}_{module}.lora_down.weight": (dtype, down), f"{prefix}_{module}.lora_up.weight": (dtype, up),
            f"{prefix}_{module}.alpha": (dtype, ())}


def test_kohya_conv_and_sd2_text_encoder(tmp_path):
    t = {}
    t.update(_kohya_pair("lora_te", "text_model_encoder_layers_0_self_attn_q_proj", 1024, 1024, 4))
    t.update(_kohya_pair("lora_unet", "down_blocks_0_resnets_0_conv1", 320, 320, 4, conv=(3, 3)))
    r = probe_path(write_raw(tmp_path / "k.safetensors", t, {"ss_v2": "True"}))
    assert (r.format, r.base, r.conv) == ("kohya", "sd2", True)
    assert r.base_from_metadata == "sd2" and not r.warnings
    assert r.alphas == (0.0,)  # zero-filled data: alpha 0 is stored (means alpha = rank)


def test_lycoris_loha_and_dora(tmp_path):
    p = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    t = {f"{p}.hada_w1_a": ("F32", (320, 8)), f"{p}.hada_w1_b": ("F32", (8, 768)),
         f"{p}.hada_w2_a": ("F32", (320, 8)), f"{p}.hada_w2_b": ("F32", (8, 768)),
         f"{p}.alpha": ("F32", ()), f"{p}.dora_scale": ("F32", (320, 1))}
    r = probe_path(write_raw(tmp_path / "h.safetensors", t))
    assert (r.kind, r.format, r.algorithm, r.base, r.ranks, r.dora) == ("lycoris", "lycoris", "loha", "sd1", (8,), True)
    kohya = [v for v in explain_path(tmp_path / "h.safetensors") if v.prober == "kohya"][0]
    assert not kohya.matched and "LyCORIS" in kohya.reason


def test_diffusers_current_sdxl_unet_and_peft_sidecar(tmp_path):
    t = {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": ("F16", (4, 2048)),
         "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight": ("F16", (640, 4)),
         "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight": ("F16", (4, 1280)),
         "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight": ("F16", (1280, 4))}
    r = probe_path(write_raw(tmp_path / "d.safetensors", t))
    assert (r.format, r.base, r.components) == ("diffusers", "sdxl", ("unet", "text_encoder_2"))

    peft = {"base_model.model.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight":
            ("F32", (16, 1024)),
            "base_model.model.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight":
            ("F32", (320, 16))}
    path = write_raw(tmp_path / "adapter_model.safetensors", peft)
    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"r": 16, "lora_alpha": 32, "target_modules": ["to_k"], "base_model_name_or_path": "sd-xl-base"}))
    r = probe_path(path)
    assert (r.format, r.base, r.alphas, r.components) == ("peft", "sd2", (32.0,), ("unet",))
    assert r.base_from_metadata == "sdxl" and any("metadata says sdxl" in w for w in r.warnings)


def test_safeloras_with_embedded_token(tmp_path):
    t = {"unet:0:down": ("F16", (4, 320)), "unet:0:up": ("F16", (320, 4)),
         "unet:1:down": ("F16", (4, 768)), "unet:1:up": ("F16", (320, 4)), "<s1>": ("F32", (768,))}
    md = {"unet": '["CrossAttention"]', "unet:0:rank": "4", "unet:1:rank": "4", "<s1>": "<embed>"}
    r = probe_path(write_raw(tmp_path / "s.safetensors", t, md))
    assert (r.format, r.base, r.tokens, r.n_vectors, r.module_count) == ("safeloras", "sd1", ("<s1>",), 1, 2)
    assert r.unexplained_keys == ()


def test_checkpoint_single_file(tmp_path):
    t = {"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": ("F16", (320, 1024)),
         "model.diffusion_model.input_blocks.0.0.weight": ("F16", (320, 4, 3, 3)),
         "first_stage_model.decoder.conv_in.weight": ("F16", (512, 4, 3, 3))}
    r = probe_path(write_raw(tmp_path / "c.safetensors", t))
    assert (r.kind, r.format, r.base, r.module_count) == ("checkpoint", "checkpoint", "sd2", 0)
    assert "vae" in r.components


def test_kohya_flux_names_and_modelspec_triggers(tmp_path):
    t = _kohya_pair("lora_unet", "double_blocks_0_img_attn_qkv", 3072, 9216, 8)
    md = {"modelspec.architecture": "flux-1-dev/lora", "modelspec.trigger_phrase": "ohwx man, portrait",
          "ss_tag_frequency": json.dumps({"5_ohwx": {"ohwx": 10, "man": 10, "hat": 2}})}
    r = probe_path(write_raw(tmp_path / "f.safetensors", t, md))
    assert (r.base, r.components, r.target_modules) == ("flux", ("transformer",), ("img_attn_qkv",))
    assert r.trigger_words == ("ohwx man", "portrait", "ohwx", "man") and not r.warnings


def test_unrecognised_and_empty_safetensors(tmp_path):
    with pytest.raises(UnsupportedFormat, match="no prober recognises"):
        probe_path(write_raw(tmp_path / "x.safetensors", {"foo.bar": ("F32", (3, 3))}))
    with pytest.raises(UnsupportedFormat, match="no tensors"):
        probe_path(write_raw(tmp_path / "e.safetensors", {}, {"a": "b"}))
