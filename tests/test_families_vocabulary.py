"""One normalisation of base-model spellings (issue 20, "Vocabularies" and "SDXL's sub-families"):
kohya ``ss_base_model_version``, ModelSpec ``architecture``, Civitai ``baseModel``, AIR ecosystems,
Hub ids → (family, variant) and back; a file's variant from its metadata with the evidence;
``compat`` warnings across sub-families and prediction types; search and the web catalog facets.
"""

from __future__ import annotations

import html
import json
import re
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from loradex.cli.app import app
from loradex.families import family_names, get_family
from loradex.families import vocabulary as V
from loradex.merge.synthetic_adapters import random_kohya_state_dict
from loradex.registry.catalog import search_index
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.search import search_catalog
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import UsageError

runner = CliRunner()

# --- spellings → (family, variant) -----------------------------------------------------------------
CASES = [
    # Civitai baseModel (every value Civitai lists for a family loradex knows)
    ("civitai", "SD 1.4", "sd1", None), ("civitai", "SD 1.5", "sd1", None), ("civitai", "SD 1.5 LCM", "sd1", None),
    ("civitai", "SD 1.5 Hyper", "sd1", None), ("civitai", "SD 2.0", "sd2", None), ("civitai", "SD 2.1", "sd2", None),
    ("civitai", "SD 2.1 768", "sd2", "768-v"), ("civitai", "SDXL 1.0", "sdxl", None),
    ("civitai", "SDXL Lightning", "sdxl", None), ("civitai", "SDXL Hyper", "sdxl", None),
    ("civitai", "Pony", "sdxl", "pony"), ("civitai", "Illustrious", "sdxl", "illustrious"),
    ("civitai", "NoobAI", "sdxl", "noobai"), ("civitai", "SD 3", "sd3", "3-medium"), ("civitai", "SD 3.5", "sd3", None),
    ("civitai", "SD 3.5 Medium", "sd3", "3.5-medium"), ("civitai", "SD 3.5 Large", "sd3", "3.5-large"),
    ("civitai", "SD 3.5 Large Turbo", "sd3", "3.5-large"), ("civitai", "Flux.1 D", "flux", "dev"),
    ("civitai", "Flux.1 S", "flux", "schnell"), ("civitai", "Flux.1 Kontext", "flux", "kontext"),
    ("civitai", "Flux.1 Krea", "flux", "krea"), ("civitai", "Flux.2 D", "flux2", "dev"),
    ("civitai", "Flux.2 Klein 9B", "flux2", "klein-9b"), ("civitai", "Flux.2 Klein 4B-base", "flux2", "klein-4b-base"),
    ("civitai", "Chroma", "chroma", None), ("civitai", "Qwen", "qwen-image", None),
    ("civitai", "ZImageTurbo", "z-image", "turbo"), ("civitai", "ZImageBase", "z-image", "base"),
    ("civitai", "HiDream", "hidream", None), ("civitai", "Lumina", "lumina2", None),
    ("civitai", "AuraFlow", "auraflow", None), ("civitai", "Pony V7", "auraflow", "pony-v7"),
    ("civitai", "Wan Video 1.3B t2v", "wan-1.3b", "2.1-t2v"), ("civitai", "Wan Video 14B t2v", "wan-14b", "2.1-t2v"),
    ("civitai", "Wan Video 14B i2v 480p", "wan-14b", "2.1-i2v-480p"),
    ("civitai", "Wan Video 14B i2v 720p", "wan-14b", "2.1-i2v-720p"),
    ("civitai", "Wan Video 2.2 TI2V-5B", "wan-5b", "2.2-ti2v"), ("civitai", "Wan Video 2.2 T2V-A14B", "wan-14b", "2.2-t2v"),
    ("civitai", "Wan Video 2.2 I2V-A14B", "wan-14b", "2.2-i2v"), ("civitai", "Hunyuan Video", "hunyuan-video", None),
    ("civitai", "LTXV", "ltx-video", None), ("civitai", "  pony ", "sdxl", "pony"),  # case and spaces
    # kohya ss_base_model_version (sd-scripts: sd_v1, sd_v2, sdxl_base_v1-0, flux1, chroma, lumina2)
    ("kohya", "sd_v1", "sd1", None), ("kohya", "sd_v2", "sd2", None), ("kohya", "sdxl_base_v1-0", "sdxl", None),
    ("kohya", "flux1", "flux", None), ("kohya", "chroma", "chroma", None), ("kohya", "lumina2", "lumina2", None),
    ("kohya", "sd3", "sd3", None), ("kohya", "flux2_klein_9b", "flux2", "klein-9b"),
    # ModelSpec architecture (sd-scripts / musubi-tuner sai_model_spec ids, adapter suffix ignored)
    ("modelspec", "stable-diffusion-v1/lora", "sd1", None), ("modelspec", "stable-diffusion-v2-512/lora", "sd2", "512"),
    ("modelspec", "stable-diffusion-v2-768-v/lora", "sd2", "768-v"),
    ("modelspec", "stable-diffusion-xl-v1-base/lora", "sdxl", None),
    ("modelspec", "stable-diffusion-xl-v1-base/textual-inversion", "sdxl", None),
    ("modelspec", "stable-diffusion-3-5-large/lora", "sd3", "3.5-large"),
    ("modelspec", "stable-diffusion-3-medium", "sd3", "3-medium"), ("modelspec", "stable-diffusion-v3-medium", "sd3", "3-medium"),
    ("modelspec", "flux-1-dev/lora", "flux", "dev"), ("modelspec", "flux-1-schnell/lora", "flux", "schnell"),
    ("modelspec", "flux-1/lora", "flux", None), ("modelspec", "chroma/lora", "chroma", None),
    ("modelspec", "lumina-2/lora", "lumina2", None), ("modelspec", "hunyuan-video/lora", "hunyuan-video", None),
    ("modelspec", "Qwen-Image/lora", "qwen-image", None), ("modelspec", "Qwen-Image-Edit/lora", "qwen-image", "edit"),
    # AIR ecosystems: a closed list (urn:air:<ecosystem>:…)
    ("air", "sd1", "sd1", None), ("air", "sdxl", "sdxl", None), ("air", "flux1", "flux", None),
    ("air", "urn:air:sdxl:lora:civitai:1@2", "sdxl", None), ("air", "flux1kontext", "flux", "kontext"),
    ("air", "wanvideo-22-i2v-a14b", "wan-14b", "2.2-i2v"), ("air", "zimagebase", "z-image", "base"),
    # Hub repo ids
    ("hub", "black-forest-labs/FLUX.1-schnell", "flux", "schnell"),
    ("hub", "stabilityai/stable-diffusion-xl-base-1.0", "sdxl", None),
    ("hub", "stabilityai/stable-diffusion-3.5-large", "sd3", "3.5-large"),
    ("hub", "runwayml/stable-diffusion-v1-5", "sd1", None), ("hub", "someone/my-sdxl-finetune", "sdxl", None),
    ("hub", "Wan-AI/Wan2.2-I2V-A14B-Diffusers", "wan-14b", "2.2-i2v"),
    ("a1111", "SDXL", "sdxl", None), ("a1111", "SD1", "sd1", None),
    # free text: checkpoint file names (kohya ss_sd_model_name)
    ("text", "ponyDiffusionV6XL_v6StartWithThisOne.safetensors", "sdxl", "pony"),
    ("text", "illustriousXL_v01.safetensors", "sdxl", "illustrious"),
    ("text", "noobaiXLNAIXL_vPred10Version.safetensors", "sdxl", "noobai-vpred"),
    ("text", "noobaiXLNAIXL_epsilonPred11Version.safetensors", "sdxl", "noobai"),
    ("text", "v1-5-pruned-emaonly.safetensors", "sd1", None), ("text", "sd_xl_base_1.0.safetensors", "sdxl", None),
    ("text", "flux1-dev-fp8.safetensors", "flux", "dev"), ("text", "flux1-kontext-dev.safetensors", "flux", "kontext"),
    ("text", "flux2-klein-4b.safetensors", "flux2", "klein-4b"), ("text", "sd3.5_medium.safetensors", "sd3", "3.5-medium"),
    ("text", "v2-1_768-ema-pruned.ckpt", "sd2", "768-v"), ("text", "wan2.1_t2v_14B_bf16.safetensors", "wan-14b", "2.1-t2v"),
    ("text", "wan2.2_ti2v_5B_fp16.safetensors", "wan-5b", "2.2-ti2v"),
]
NOTHING = [("civitai", "Other"), ("civitai", "Wan Video"), ("civitai", "LTXV2"), ("civitai", ""),
           ("modelspec", "wan2.1/lora"),  # musubi's Wan architecture names no width: the shapes tell
           ("air", "pony"), ("text", "pixel art"), ("text", "xlabs lora"), ("kohya", None)]


@pytest.mark.parametrize("source,text,family,variant", CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_each_spelling_names_its_family_and_variant(source, text, family, variant):
    assert V.normalise(text, source) == (family, variant)


@pytest.mark.parametrize("source,text", NOTHING)
def test_spellings_of_no_known_family_name_none(source, text):
    assert V.normalise(text, source) is None


def test_an_unknown_vocabulary_is_refused():
    with pytest.raises(ValueError, match="unknown vocabulary"):
        V.normalise("SDXL 1.0", "comfy")


def test_every_family_round_trips_through_every_vocabulary():
    assert set(V._index().by_family) == set(family_names())  # every registered family has its spellings
    for name in family_names():
        for variant in (None, *V.variant_names(name)):
            civitai = V.civitai_base_model(name, variant)
            assert V.normalise(civitai, "civitai")[0] == name, (name, variant, civitai)
            declared = get_variant(name, variant)
            if declared is not None and declared.civitai:
                assert V.normalise(civitai, "civitai") == (name, variant)
            assert V.normalise(V.air_ecosystem(name, variant), "air")[0] == name
            arch = V.modelspec_architecture(name, "lora", variant)
            assert arch.endswith("/lora") and V.normalise(arch, "modelspec")[0] == name
            assert V.family_from_hub_id(V.default_hub_repo(name, variant)) == name
        kohya = V.kohya_base_model_version(name)
        assert kohya is None or V.normalise(kohya, "kohya") == (name, None)
    assert V.civitai_base_model("unknown") == "Other" and V.air_ecosystem(None) == "other"
    assert V.modelspec_architecture("sdxl", "embedding") == "stable-diffusion-xl-v1-base/textual-inversion"
    assert V.modelspec_architecture("sdxl", "checkpoint") == "stable-diffusion-xl-v1-base"
    assert [V.kohya_base_model_version(f) for f in ("sd1", "sd2", "sdxl", "flux")] == \
        ["sd_v1", "sd_v2", "sdxl_base_v1-0", "flux1"]
    assert V.kohya_base_model_version("wan-14b") is None  # no trainer's value known: none written


def get_variant(family, variant):
    return V.vocabulary(family).variant(variant)


# --- a file's variant from its metadata, with the evidence ----------------------------------------
VARIANT_CASES = [
    ("sdxl", {"ss_sd_model_name": "ponyDiffusionV6XL_v6StartWithThisOne.safetensors",
              "ss_base_model_version": "sdxl_base_v1-0"}, None,
     ("pony", "ss_sd_model_name=ponyDiffusionV6XL_v6StartWithThisOne.safetensors")),
    ("sdxl", {"ss_sd_model_name": "noobaiXLNAIXL_vPred10Version.safetensors"}, None,
     ("noobai-vpred", "ss_sd_model_name=noobaiXLNAIXL_vPred10Version.safetensors")),
    # a stated prediction type picks the v-prediction sibling
    ("sdxl", {"ss_sd_model_name": "NoobAI-XL-1.1.safetensors", "modelspec.prediction_type": "v"}, None,
     ("noobai-vpred", "ss_sd_model_name=NoobAI-XL-1.1.safetensors; modelspec.prediction_type=v")),
    ("sdxl", {"ss_sd_model_name": "noobai_xl_1.1.safetensors", "ss_v_parameterization": "True"}, None,
     ("noobai-vpred", "ss_sd_model_name=noobai_xl_1.1.safetensors; ss_v_parameterization=True")),
    # the Civitai label is trusted before the checkpoint name
    ("sdxl", {"ss_sd_model_name": "ponyDiffusionV6XL.safetensors"}, {"baseModel": "Illustrious"},
     ("illustrious", "Civitai baseModel=Illustrious")),
    ("flux", {"modelspec.architecture": "flux-1-schnell/lora"}, None,
     ("schnell", "modelspec.architecture=flux-1-schnell/lora")),
    ("flux", {}, {"baseModel": "Flux.1 Kontext"}, ("kontext", "Civitai baseModel=Flux.1 Kontext")),
    ("sd3", {"modelspec.architecture": "stable-diffusion-3-5-large/lora"}, None,
     ("3.5-large", "modelspec.architecture=stable-diffusion-3-5-large/lora")),
    ("wan-14b", {"ss_sd_model_name": "wan2.2_i2v_high_noise_14B_fp16.safetensors"}, None,
     ("2.2-i2v", "ss_sd_model_name=wan2.2_i2v_high_noise_14B_fp16.safetensors")),
    # nothing, or a spelling of another family, tells nothing
    ("sdxl", {"ss_sd_model_name": "sd_xl_base_1.0.safetensors"}, None, None),
    ("sdxl", {"ss_sd_model_name": "flux1-dev.safetensors"}, {"baseModel": "Flux.1 D"}, None),
    ("sd1", {"ss_sd_model_name": "ponyDiffusionV6XL.safetensors"}, None, None),  # sd1 has no variants
    ("sdxl", {"ss_sd_model_name": 5, "modelspec.architecture": ["x"]}, "not a dict", None),
    ("unknown", {"ss_sd_model_name": "pony.safetensors"}, None, None),
]


@pytest.mark.parametrize("family,metadata,info,expected", VARIANT_CASES)
def test_variant_from_metadata_with_evidence(family, metadata, info, expected):
    assert V.variant_from_metadata(family, metadata, info) == expected


def test_long_metadata_values_are_cut_before_matching():
    assert V.variant_from_metadata("sdxl", {"ss_sd_model_name": "x" * 10_000 + "pony"}) is None
    assert V.variant_from_metadata("sdxl", {"ss_sd_model_name": "pony" + "x" * 10_000})[0] == "pony"


def test_stored_variant_prefers_the_probe_then_metadata_then_civitai_info():
    probe = {"variant": "illustrious", "variant_evidence": "ss_sd_model_name=illustriousXL.safetensors"}
    assert V.stored_variant("sdxl", probe=probe, metadata={"ss_sd_model_name": "pony.safetensors"}) == \
        ("illustrious", "ss_sd_model_name=illustriousXL.safetensors")
    assert V.stored_variant("sdxl", probe={"variant": "made-up"}, metadata={"ss_sd_model_name": "pony"})[0] == "pony"
    assert V.stored_variant("sdxl", probe={"metadata": {"ss_sd_model_name": "noobai-vpred"}}) == \
        ("noobai-vpred", "ss_sd_model_name=noobai-vpred")
    assert V.stored_variant("sdxl", extra={"civitai": {"baseModel": "Pony"}}) == ("pony", "Civitai baseModel=Pony")


# --- compat: different sub-families or prediction types stacked ----------------------------------
SDXL_MODULES = {  # UNet cross-attention from a 2048-wide context: the probe says sdxl by shape
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k": (2048, 16),
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_q": (16, 16),
}


def write_sdxl_lora(path, seed, metadata):
    from loradex.registry.files.safetensors_writer import save_safetensors

    sd = random_kohya_state_dict(SDXL_MODULES, rank=2, alpha=2.0, seed=seed)
    save_safetensors(sd, path, {"ss_network_module": "networks.lora", "ss_base_model_version": "sdxl_base_v1-0",
                                **metadata})
    return path


@pytest.fixture(scope="module")
def sub_families(tmp_path_factory):
    """One catalog of tiny SDXL LoRAs of each sub-family: pony (checkpoint name), illustrious (a
    Civitai info's baseModel, as pull/import keep it), noobai eps and v-pred, plain sdxl."""
    home = tmp_path_factory.mktemp("vocab-home")
    tmp = tmp_path_factory.mktemp("vocab-files")
    catalog = Catalog(home)
    files = {
        "pony-style": ({"ss_sd_model_name": "ponyDiffusionV6XL_v6StartWithThisOne.safetensors"}, None),
        "illu-style": ({"ss_sd_model_name": "some_merge.safetensors"}, {"baseModel": "Illustrious"}),
        "noob-eps": ({"ss_sd_model_name": "noobaiXLNAIXL_epsilonPred11Version.safetensors"}, None),
        "noob-vpred": ({"ss_sd_model_name": "noobaiXLNAIXL_vPred10Version.safetensors"}, None),
        "plain-xl": ({"ss_sd_model_name": "sd_xl_base_1.0.safetensors"}, None),
    }
    for seed, (name, (meta, info)) in enumerate(files.items()):
        path = write_sdxl_lora(tmp / f"{name}.safetensors", seed, meta)
        add_file(catalog, path, name=name, extra={"civitai": info} if info else None)
    return SimpleNamespace(catalog=catalog, home=home)


def compat_json(home, *refs):
    result = runner.invoke(app, ["compat", *refs, "--home", str(home), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_compat_warns_across_sub_families(sub_families):
    assert all(sub_families.catalog.get_adapter(n).base == "sdxl" for n in ("pony-style", "illu-style"))
    table = compat_json(sub_families.home, "pony-style", "illu-style")
    assert table["family"] == "sdxl"
    assert table["variants"]["pony-style@1.0.0"]["variant"] == "pony"
    assert table["variants"]["illu-style@1.0.0"]["variant_evidence"] == "Civitai baseModel=Illustrious"
    (warning,) = table["warnings"]
    assert "different sdxl sub-families" in warning
    assert "pony-style@1.0.0: Pony Diffusion V6" in warning and "illu-style@1.0.0: Illustrious-XL" in warning
    # a plain SDXL LoRA (no variant told) beside Pony: nothing to warn about
    assert compat_json(sub_families.home, "pony-style", "plain-xl")["warnings"] == []


def test_compat_warns_across_prediction_types(sub_families):
    table = compat_json(sub_families.home, "noob-eps", "noob-vpred")
    (warning,) = table["warnings"]  # one line (NoobAI both): only the prediction type differs
    assert "different prediction types" in warning
    assert "noob-eps@1.0.0: epsilon" in warning and "noob-vpred@1.0.0: v-prediction" in warning


def test_generate_warns_when_the_base_name_tells_another_sub_family(sub_families):
    from loradex.trainer.compat_check import stack_compat

    def stacked(*names):
        return [SimpleNamespace(version=sub_families.catalog.resolve(n), kind="lora", te_weight=0.8, unet_weight=0.8)
                for n in names]

    section = stack_compat(sub_families.catalog, "ponyDiffusionV6XL_v6.safetensors", "sdxl",
                           stacked("illu-style"))
    assert section["warnings"] == [
        "illu-style@1.0.0 is for Illustrious-XL (Civitai baseModel=Illustrious) but base "
        "ponyDiffusionV6XL_v6.safetensors is Pony Diffusion V6: expect weaker or broken results"]
    section = stack_compat(sub_families.catalog, "noobaiXLNAIXL_vPred10Version.safetensors", "sdxl",
                           stacked("noob-vpred", "noob-eps"))
    assert [w for w in section["warnings"] if "but base" in w] == [
        "noob-eps@1.0.0 was trained for epsilon (ss_sd_model_name=noobaiXLNAIXL_epsilonPred11Version.safetensors) "
        "but base noobaiXLNAIXL_vPred10Version.safetensors is v-prediction"]
    assert stack_compat(sub_families.catalog, "sd_xl_base_1.0.safetensors", "sdxl",
                        stacked("pony-style"))["warnings"] == []  # a plain SDXL base tells nothing


def test_civitai_mirror_answers_from_family_and_variant(sub_families):
    from loradex.registry.remotes.civitai import base_family_and_variant
    from loradex.registry.server.civitai_api import air, base_model_name

    adapter = SimpleNamespace(id=3, base="sdxl", kind="lora")
    pony = SimpleNamespace(id=9, probe={}, file_metadata={"ss_sd_model_name": "ponyDiffusionV6XL.safetensors"},
                           extra={})
    assert base_model_name(pony, adapter) == "Pony" and air(pony, adapter) == "urn:air:sdxl:lora:civitai:3@9"
    kept = SimpleNamespace(id=9, probe={}, file_metadata={}, extra={"civitai": {"baseModel": "NoobAI"}})
    assert base_model_name(kept, adapter) == "NoobAI"  # the label it was pulled with, of the same family
    wrong = SimpleNamespace(id=9, probe={}, file_metadata={}, extra={"civitai": {"baseModel": "Flux.1 D"}})
    assert base_model_name(wrong, adapter) == "SDXL 1.0"  # the probed family wins over a label of another
    flux = SimpleNamespace(id=1, base="flux", kind="lora")
    kontext = SimpleNamespace(id=2, probe={}, file_metadata={"ss_sd_model_name": "flux1-kontext-dev.safetensors"},
                              extra={})
    assert base_model_name(kontext, flux) == "Flux.1 Kontext"
    assert air(kontext, flux) == "urn:air:flux1kontext:lora:civitai:1@2"
    other = SimpleNamespace(id=1, base="unknown", kind="lora")
    assert base_model_name(SimpleNamespace(id=1, probe={}, file_metadata={}, extra={}), other) == "Other"
    assert base_family_and_variant("Pony") == ("sdxl", "pony")
    assert mirror_names(sub_families.catalog, "Pony") == ["pony-style"]  # GET /api/v1/models?baseModels=Pony
    assert mirror_names(sub_families.catalog, "NoobAI", "Illustrious") == ["illu-style", "noob-eps"]
    assert len(mirror_names(sub_families.catalog, "SDXL 1.0")) == 5 and mirror_names(sub_families.catalog, "Other") == []
    assert base_family_and_variant("Wan Video 2.2 I2V-A14B") == ("wan-14b", "2.2-i2v")
    assert base_family_and_variant(None) == ("unknown", None)


def mirror_names(catalog, *base_models):
    from loradex.registry.server.civitai_query import ModelFilter, model_page

    want = ModelFilter(bases={b.lower() for b in base_models})
    return sorted(a.name for a in catalog.read(lambda s: model_page(s, want, limit=50)[0]))


# --- search and the web catalog facets ------------------------------------------------------------
def names(result):
    return sorted(h.name for h in result.hits)


def test_search_finds_versions_by_variant_and_family(sub_families):
    catalog = sub_families.catalog
    assert names(search_catalog(catalog, "pony")) == ["pony-style"]
    assert names(search_catalog(catalog, "illustrious")) == ["illu-style"]
    assert names(search_catalog(catalog, "noobai")) == ["noob-eps", "noob-vpred"]
    assert names(search_catalog(catalog, "vpred")) == ["noob-vpred"]
    assert len(search_catalog(catalog, "sdxl").hits) == 5
    assert names(search_catalog(catalog, base="pony")) == ["pony-style"]  # a variant's name as --base
    assert names(search_catalog(catalog, base="Illustrious")) == ["illu-style"]  # a Civitai name
    assert len(search_catalog(catalog, base="SDXL 1.0").hits) == 5
    assert names(search_catalog(catalog, variant="sdxl/noobai-vpred")) == ["noob-vpred"]
    facets = search_catalog(catalog).facets
    assert facets["variant"] == {"sdxl/illustrious": 1, "sdxl/noobai": 1, "sdxl/noobai-vpred": 1, "sdxl/pony": 1}
    assert facets["base"] == {"sdxl": 5} and facets["tag"] == {}  # variant rows are not user tags
    with pytest.raises(UsageError, match="unknown base"):
        search_catalog(catalog, base="no-such-model")
    with pytest.raises(UsageError, match="several families"):
        search_catalog(catalog, variant="dev")  # Flux.1, Flux.2 and HiDream all have a dev
    cli = runner.invoke(app, ["search", "--variant", "noobai-vpred", "--home", str(sub_families.home), "--json"])
    assert cli.exit_code == 0, cli.output
    assert [h["name"] for h in json.loads(cli.stdout)["hits"]] == ["noob-vpred"]
    cli = runner.invoke(app, ["search", "--variant", "dev", "--home", str(sub_families.home)])
    assert isinstance(cli.exception, UsageError) and "several families" in str(cli.exception)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_documents_indexed_before_the_family_words_are_rewritten_on_the_next_write(backend, tmp_path, request):
    from sqlalchemy import text

    db_url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    catalog = Catalog(tmp_path / "home", db_url=db_url)
    add_file(catalog, write_sdxl_lora(tmp_path / "a.safetensors", 1, {"ss_sd_model_name": "pony_v6.safetensors"}),
             name="old-style")

    def forget_the_words(s):  # what an index written before the family/variant words holds
        conn = s.connection()
        conn.execute(text("UPDATE search_versions SET metadata = ''"))
        if backend == "postgres":
            conn.execute(text("UPDATE search_docs SET document = to_tsvector('simple', 'old style'), "
                              "head = to_tsvector('simple', 'old style')"))
        else:
            conn.execute(text("DELETE FROM search_fts"))
            conn.execute(text("INSERT INTO search_fts (rowid, name, triggers, description, tags, metadata, message, "
                              "prompts) SELECT adapter_id, name, '', '', '', '', '', '' FROM search_adapters"))
        conn.execute(text("DELETE FROM search_tags"))

    catalog.transact(forget_the_words)
    search_index._CHECKED.clear()  # as a new process finds it
    assert names(search_catalog(catalog, "pony")) == [] and names(search_catalog(catalog, "old")) == ["old-style"]
    add_file(catalog, write_sdxl_lora(tmp_path / "b.safetensors", 2, {}), name="unrelated")  # any write
    assert names(search_catalog(catalog, "pony")) == ["old-style"]
    assert search_catalog(catalog).facets["variant"] == {"sdxl/pony": 1}
    if db_url:
        catalog.engine.dispose()


def facet(page_html: str, key: str) -> dict[str, tuple[str, int]]:
    section = re.search(rf'<section id="facet-{key}".*?</section>', page_html, re.S)
    if section is None:
        return {}
    return {html.unescape(v): (html.unescape(label), int(n)) for v, label, n in re.findall(
        r'data-value="([^"]*)">([^<]*)</a> <span class="count">(\d+)</span>', section.group(0))}


def test_web_catalog_page_has_family_and_variant_facets(sub_families):
    from _web_fixtures import signed_in_client, web_app

    client = signed_in_client(web_app(sub_families.catalog))
    page = client.get("/").text
    assert facet(page, "base") == {"sdxl": ("Stable Diffusion XL", 5)}
    assert facet(page, "variant") == {"sdxl/illustrious": ("Illustrious-XL", 1), "sdxl/noobai": ("NoobAI-XL (epsilon)", 1),
                                      "sdxl/noobai-vpred": ("NoobAI-XL (v-prediction)", 1),
                                      "sdxl/pony": ("Pony Diffusion V6", 1)}
    narrowed = client.get("/", params={"variant": "sdxl/pony"}).text
    assert re.findall(r'data-adapter="([^"]+)"', narrowed) == ["pony-style"]
    assert facet(narrowed, "variant") == {"sdxl/pony": ("Pony Diffusion V6", 1)}
    # anonymous visitors of a public catalog get the same facet through the Python matcher
    public = web_app(sub_families.catalog, public_read=True)
    from fastapi.testclient import TestClient

    anon = TestClient(public).get("/", params={"base": "pony"}).text
    assert re.findall(r'data-adapter="([^"]+)"', anon) == ["pony-style"]
