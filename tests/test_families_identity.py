"""Every family told by shape and name, in every convention its writers use (issue 20).

Files are written at the REAL widths of each model (tests/_family_layouts.py instantiates the
diffusers transformer from its real config on the meta device; native names come from its
mapping table), rank 1, one file per (model, convention) per module. The probe must name the
family, the format and convention, the components and the rank — and say what keys cannot tell.
"""

from __future__ import annotations

import json
import warnings

import pytest
from _family_layouts import FAMILY_MODEL, write_lora
from _formats_fixtures import CORPUS_FILES, corpus_available, write_raw

from loradex.families import family_names
from loradex.registry.probe import probe_path

# (model, convention) → (family, format, convention, components). Rank is 1 everywhere.
ROWS = {
    # Flux.1 and SD 3.5: every convention
    ("flux1-dev", "kohya"): ("flux", "kohya", "kohya", ["transformer"]),
    ("flux1-dev", "comfy"): ("flux", "comfyui", "comfyui", ["transformer"]),
    ("flux1-dev", "comfy-down-up"): ("flux", "comfyui", "comfyui", ["transformer"]),
    ("flux1-dev", "diffusers"): ("flux", "diffusers", "diffusers", ["transformer"]),
    ("flux1-dev", "onetrainer"): ("flux", "kohya", "onetrainer", ["transformer"]),
    ("flux1-dev", "peft"): ("flux", "peft", "peft", ["transformer"]),
    ("flux1-dev", "lycoris"): ("flux", "lycoris", "lycoris", ["transformer"]),
    ("flux1-dev", "lycoris-comfy"): ("flux", "lycoris", "comfyui", ["transformer"]),
    ("flux1-dev", "xlabs"): ("flux", "xlabs", "xlabs", ["transformer"]),
    ("sd3.5-large", "kohya"): ("sd3", "kohya", "kohya", ["transformer"]),
    ("sd3.5-large", "comfy"): ("sd3", "comfyui", "comfyui", ["transformer"]),
    ("sd3.5-large", "diffusers"): ("sd3", "diffusers", "diffusers", ["transformer"]),
    ("sd3.5-large", "onetrainer"): ("sd3", "kohya", "onetrainer", ["transformer"]),
    ("sd3.5-large", "peft"): ("sd3", "peft", "peft", ["transformer"]),
    ("sd3.5-large", "lycoris"): ("sd3", "lycoris", "lycoris", ["transformer"]),
    ("sd3.5-medium", "kohya"): ("sd3", "kohya", "kohya", ["transformer"]),
    ("sd3.5-medium", "comfy-down-up"): ("sd3", "comfyui", "comfyui", ["transformer"]),
    # the recognised families: their trainers' conventions
    ("chroma", "comfy"): ("chroma", "comfyui", "comfyui", ["transformer"]),
    ("chroma", "diffusers"): ("chroma", "diffusers", "diffusers", ["transformer"]),
    ("flux2-klein-4b", "kohya"): ("flux2", "kohya", "kohya", ["transformer"]),
    ("flux2-klein-4b", "diffusers"): ("flux2", "diffusers", "diffusers", ["transformer"]),
    ("flux2-dev", "comfy"): ("flux2", "comfyui", "comfyui", ["transformer"]),
    ("qwen-image", "kohya"): ("qwen-image", "kohya", "kohya", ["transformer"]),
    ("qwen-image", "diffusers"): ("qwen-image", "diffusers", "diffusers", ["transformer"]),
    ("qwen-image", "onetrainer"): ("qwen-image", "kohya", "onetrainer", ["transformer"]),
    ("z-image-turbo", "comfy"): ("z-image", "comfyui", "comfyui", ["transformer"]),
    ("z-image-turbo", "diffusers"): ("z-image", "diffusers", "diffusers", ["transformer"]),
    ("z-image-turbo", "lycoris-comfy"): ("z-image", "lycoris", "comfyui", ["transformer"]),
    ("hidream-i1", "comfy"): ("hidream", "comfyui", "comfyui", ["transformer"]),
    ("hidream-i1", "diffusers"): ("hidream", "diffusers", "diffusers", ["transformer"]),
    ("lumina2", "comfy"): ("lumina2", "comfyui", "comfyui", ["transformer"]),
    ("lumina2", "diffusers"): ("lumina2", "diffusers", "diffusers", ["transformer"]),
    ("auraflow", "comfy"): ("auraflow", "comfyui", "comfyui", ["transformer"]),
    ("auraflow", "diffusers"): ("auraflow", "diffusers", "diffusers", ["transformer"]),
    ("auraflow", "peft"): ("auraflow", "peft", "peft", ["transformer"]),
    ("wan2.1-1.3b", "kohya"): ("wan-1.3b", "kohya", "kohya", ["transformer"]),
    ("wan2.2-5b", "comfy"): ("wan-5b", "comfyui", "comfyui", ["transformer"]),
    ("wan2.1-14b", "kohya"): ("wan-14b", "kohya", "kohya", ["transformer"]),
    ("wan2.1-14b", "diffusers"): ("wan-14b", "diffusers", "diffusers", ["transformer"]),
    ("wan2.1-14b", "lycoris"): ("wan-14b", "lycoris", "lycoris", ["transformer"]),
    ("hunyuan-video", "kohya"): ("hunyuan-video", "kohya", "kohya", ["transformer"]),
    ("hunyuan-video", "comfy"): ("hunyuan-video", "comfyui", "comfyui", ["transformer"]),
    ("hunyuan-video", "diffusers"): ("hunyuan-video", "diffusers", "diffusers", ["transformer"]),
    ("ltx-video", "comfy"): ("ltx-video", "comfyui", "comfyui", ["transformer"]),
    ("ltx-video", "diffusers"): ("ltx-video", "diffusers", "diffusers", ["transformer"]),
}
# Conventions whose files store an alpha per module (kohya, ComfyUI down/up, LyCORIS) or in metadata.
STORED_ALPHA = {"kohya", "comfy-down-up", "onetrainer", "lycoris", "lycoris-comfy", "diffusers"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(model, convention) → path, each written once (lazily: rows share nothing else)."""
    tmp = tmp_path_factory.mktemp("families")
    cache: dict = {}

    def get(model, convention, **kw):
        key = (model, convention, json.dumps(kw, sort_keys=True))
        if key not in cache:
            name = f"{model}-{convention}-{len(cache)}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # diffusers' deprecation notes while building layouts
                cache[key] = write_lora(tmp, model, convention, name=name, **kw)
        return cache[key]

    return get


@pytest.mark.parametrize("model,convention", sorted(ROWS), ids=[f"{m}-{c}" for m, c in sorted(ROWS)])
def test_family_convention_components_rank(files, model, convention):
    family, fmt, conv, components = ROWS[(model, convention)]
    r = probe_path(files(model, convention)).to_dict()
    assert (r["base"], r["format"], r["convention"], r["components"]) == (family, fmt, conv, components), r["base_reason"]
    assert r["ranks"] == [1]
    assert r["alphas"] == ([1.0] if convention in STORED_ALPHA else [])
    assert r["unexplained_keys"] == [] and not [w for w in r["warnings"] if "not understood" in w]
    assert r["module_count"] > 0


def test_every_recognised_family_has_a_row():
    families = {row[0] for row in ROWS.values()}
    assert families == set(family_names()) - {"sd1", "sd2", "sdxl"}  # the SD UNets: test_formats_probe
    assert set(FAMILY_MODEL) == families


def test_wan_sizes_by_width(files):
    notes = {}
    for model, family in (("wan2.1-1.3b", "wan-1.3b"), ("wan2.2-5b", "wan-5b"), ("wan2.1-14b", "wan-14b")):
        r = probe_path(files(model, "kohya")).to_dict()
        assert r["base"] == family and r["base_reason"].startswith({"wan-1.3b": "1536", "wan-5b": "3072",
                                                                   "wan-14b": "5120"}[family])
        notes[family] = " ".join(r["notes"])
    assert "30 blocks" in notes["wan-5b"] and "1.3B" in notes["wan-1.3b"]
    assert "key-identical" in notes["wan-14b"] and "2.2" in notes["wan-14b"]


def test_sd3_sizes_are_notes(files):
    large = probe_path(files("sd3.5-large", "kohya")).to_dict()
    medium = probe_path(files("sd3.5-medium", "kohya")).to_dict()
    plain = probe_path(files("sd3-medium", "diffusers")).to_dict()
    assert all(r["base"] == "sd3" for r in (large, medium, plain))
    assert any("SD3.5 large (2432 wide" in n for n in large["notes"])
    assert any("SD3.5 medium" in n and "attn2" in n for n in medium["notes"])
    assert any("cannot tell" in n for n in plain["notes"])  # 1536 wide without attn2: SD3 or SD3.5 medium


def test_flux_lookalikes_told_apart(files):
    """Flux.1, HunyuanVideo, Chroma and Flux.2 Klein 4B are all 3072 wide with double/single blocks."""
    assert probe_path(files("hunyuan-video", "diffusers")).base == "hunyuan-video"  # diffusers names: 20 + 40
    assert probe_path(files("flux2-klein-4b", "kohya")).base == "flux2"
    # Flux.2 by shapes alone (no shared-modulation names): SwiGLU MLP rows 6 × width
    klein = probe_path(files("flux2-klein-4b", "kohya", exclude="stream_modulation")).to_dict()
    assert klein["base"] == "flux2" and "SwiGLU" in klein["base_reason"] and "Klein 4B" in " ".join(klein["notes"])
    # HunyuanVideo in diffusers names, only Flux.1's block range, no token refiner: keys cannot tell — say so
    short = probe_path(files("hunyuan-video", "diffusers", exclude=r"token_refiner|^transformer_blocks\.19\.|"
                                                                   r"single_transformer_blocks\.3[89]\.")).to_dict()
    assert short["base"] == "flux" and any("HunyuanVideo" in n for n in short["notes"])
    # Chroma: the distilled guidance network tells; without it (no modulation either) metadata decides
    assert probe_path(files("chroma", "kohya")).base == "chroma"
    bare = probe_path(files("chroma", "kohya", exclude="distilled_guidance_layer")).to_dict()
    assert bare["base"] == "flux" and any("Chroma" in n for n in bare["notes"])
    told = probe_path(files("chroma", "kohya", exclude="distilled_guidance_layer",
                            metadata={"modelspec.architecture": "chroma/lora"})).to_dict()
    assert told["base"] == "chroma" and "metadata" in told["base_reason"] and not told["warnings"]
    # a Flux.1 file WITH modulation layers cannot be Chroma whatever its metadata says
    flux = probe_path(files("flux1-dev", "comfy", metadata={"modelspec.architecture": "chroma/lora"})).to_dict()
    assert flux["base"] == "flux" and any("metadata says chroma" in w for w in flux["warnings"])


def test_flux_variant_from_metadata_and_text_encoder(files):
    r = probe_path(files("flux1-dev", "kohya", te="clip-l",
                         metadata={"modelspec.architecture": "flux-1-dev/lora"})).to_dict()
    assert r["base"] == "flux" and r["components"] == ["transformer", "text_encoder"]
    assert r["variant"] == "dev" and "modelspec.architecture" in r["variant_evidence"]
    assert any("Kontext" in n and "key-identical" in n for n in r["notes"])


@pytest.mark.skipif(not corpus_available(), reason="../shared/corpus/files absent (a user's clone)")
def test_corpus_flux_file_still_flux_with_the_metadata_conflict():
    (path,) = CORPUS_FILES.glob("flux_aitoolkit_peft_lora_partial_*.safetensors")
    r = probe_path(path).to_dict()
    assert (r["base"], r["format"], r["components"], r["ranks"]) == ("flux", "diffusers", ["transformer"], [16])
    assert any(w.startswith("metadata says sd1") and "trusting shapes" in w for w in r["warnings"])


def _sd_unet_file(tmp, family, width, sgm=False):
    """A two-module kohya SD file: one cross-attention to_k of the family's context width."""
    stem = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k" if sgm else \
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    tensors = {f"{stem}.lora_down.weight": ("F16", (1, width)), f"{stem}.lora_up.weight": ("F16", (640, 1)),
               f"{stem}.alpha": ("F16", ())}
    return write_raw(tmp / f"{family}.safetensors", tensors, {})


def test_inspect_json_names_every_family(files, tmp_path, capsys):
    from loradex.cli.main import main

    paths = {"sd1": _sd_unet_file(tmp_path, "sd1", 768), "sd2": _sd_unet_file(tmp_path, "sd2", 1024),
             "sdxl": _sd_unet_file(tmp_path, "sdxl", 2048, sgm=True)}
    for (model, convention), row in ROWS.items():
        paths.setdefault(row[0], files(model, convention))
    seen = {}
    for family, path in paths.items():
        with pytest.raises(SystemExit) as exit_:
            main(["inspect", str(path), "--json"])
        assert exit_.value.code == 0
        seen[family] = json.loads(capsys.readouterr().out)["base"]
    assert seen == {f: f for f in family_names()}


@pytest.mark.parametrize("model,family", [("flux1-dev", "flux"), ("wan2.1-14b", "wan-14b"),
                                          ("hunyuan-video", "hunyuan-video"), ("sd3.5-large", "sd3")])
def test_full_weights_read_through_the_same_identity_rules(model, family):
    """A native (original-layout) checkpoint's 2-D weights are modules to the identity rules: meta
    tensors carry the real shapes without the gigabytes."""
    import torch

    from _family_layouts import native_layout
    from loradex.registry.probe.probing import probe_view, state_dict_view

    with torch.device("meta"):
        sd = {f"{path}.weight": torch.empty(shape, dtype=torch.bfloat16) for path, shape in native_layout(model).items()}
    r = probe_view(state_dict_view(sd, container="safetensors")).to_dict()
    assert (r["kind"], r["format"], r["base"], r["components"]) == ("checkpoint", "checkpoint", family, ["transformer"])


def test_comfyui_extras_and_kohya_t5_are_understood(tmp_path):
    """ComfyUI saves full-weight diffs (.diff / .diff_b) beside the pairs; kohya's lora_te3_ on Flux is
    the T5 encoder, diffusers' text_encoder_2."""
    wan = write_raw(tmp_path / "wan.safetensors", {
        "diffusion_model.blocks.0.self_attn.q.lora_A.weight": ("BF16", (1, 5120)),
        "diffusion_model.blocks.0.self_attn.q.lora_B.weight": ("BF16", (5120, 1)),
        "diffusion_model.blocks.0.cross_attn.k_img.lora_A.weight": ("BF16", (1, 5120)),
        "diffusion_model.blocks.0.cross_attn.k_img.lora_B.weight": ("BF16", (5120, 1)),
        "diffusion_model.blocks.0.norm3.diff": ("BF16", (5120,)),
        "diffusion_model.blocks.0.self_attn.q.diff_b": ("BF16", (5120,))}, {})
    r = probe_path(wan).to_dict()
    assert (r["base"], r["format"], r["unexplained_keys"]) == ("wan-14b", "comfyui", [])
    assert any("2 full-weight difference" in n for n in r["notes"]) and any("image-to-video" in n for n in r["notes"])
    t5 = "lora_te3_encoder_block_0_layer_0_SelfAttention_q"
    flux = write_raw(tmp_path / "flux.safetensors", {
        "lora_unet_single_blocks_0_linear1.lora_down.weight": ("BF16", (1, 3072)),
        "lora_unet_single_blocks_0_linear1.lora_up.weight": ("BF16", (21504, 1)),
        f"{t5}.lora_down.weight": ("BF16", (1, 4096)), f"{t5}.lora_up.weight": ("BF16", (4096, 1))}, {})
    r = probe_path(flux).to_dict()
    assert (r["base"], r["components"]) == ("flux", ["transformer", "text_encoder_2"])


def test_layout_fixtures_have_the_real_widths():
    """Spot checks against the published architectures, and the committed kohya layouts are what
    the generator writes (tests/fixtures/layouts/make_layouts.py)."""
    from pathlib import Path

    from _family_layouts import kohya_layout, native_layout, real_linear_layout

    flux = native_layout("flux1-dev")
    assert flux["single_blocks.37.linear1"] == (3 * 3072 + 4 * 3072, 3072)  # q, k, v + 4x MLP fused
    assert flux["double_blocks.18.img_mod.lin"] == (6 * 3072, 3072) and "double_blocks.19.img_attn.qkv" not in flux
    large = native_layout("sd3.5-large")
    assert large["joint_blocks.37.context_block.adaLN_modulation.1"] == (2 * 2432, 2432)  # pre-only last block
    assert "joint_blocks.37.context_block.attn.proj" not in large and "joint_blocks.38.x_block.attn.qkv" not in large
    medium = native_layout("sd3.5-medium")
    assert {int(k.split(".")[1]) for k in medium if ".attn2." in k} == set(range(13))
    assert real_linear_layout("wan2.2-5b")["blocks.29.attn1.to_q"] == (3072, 3072)
    assert "blocks.30.attn1.to_q" not in real_linear_layout("wan2.2-5b")
    assert native_layout("hunyuan-video")["single_blocks.39.linear1"] == (3 * 3072 + 4 * 3072, 3072)
    here = Path(__file__).parent / "fixtures" / "layouts"
    for name, model, te in (("flux1-dev.json", "flux1-dev", ("clip-l",)),
                            ("sd3.5-large.json", "sd3.5-large", ("clip-l", "clip-g")),
                            ("sd3.5-medium.json", "sd3.5-medium", ("clip-l", "clip-g"))):
        assert json.loads((here / name).read_text()) == kohya_layout(model, rank=16, te=te), name
