"""Converted files carry correct ModelSpec keys: architecture, title, trigger phrase, hash_sha256.

``modelspec.hash_sha256`` is "0x" + sha256 of the tensor data section (after the 8-byte length
and the JSON header): the AutoV3 / addnet hash, the definition merged files use too."""

from __future__ import annotations

import hashlib
import json

import pytest
from _convert_fixtures import corpus_file

from loradex.merge.conventions.convert import convert_file
from loradex.merge.conventions.file_conversion import convert_path
from loradex.registry.files.hashing import hash_file
from loradex.registry.probe import probe_path


def _metadata_and_data_hash(path) -> tuple[dict[str, str], str]:
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    return header.get("__metadata__", {}), hashlib.sha256(blob[8 + n:]).hexdigest()


def _assert_modelspec(path, *, architecture: str, title: str, triggers: list[str]) -> dict[str, str]:
    meta, data_hash = _metadata_and_data_hash(path)
    assert meta["modelspec.architecture"] == architecture
    assert meta["modelspec.title"] == title
    if triggers:
        assert meta["modelspec.trigger_phrase"] == ", ".join(triggers)
    else:
        assert "modelspec.trigger_phrase" not in meta
    assert meta["modelspec.hash_sha256"] == "0x" + data_hash == "0x" + hash_file(path).autov3
    return meta


def test_lora_conversion_writes_modelspec_from_shapes_and_file_name(tmp_path):
    src = corpus_file("diffusers_timohavdk_2100-lora.safetensors")  # no metadata at all
    out = tmp_path / "timo.safetensors"
    convert_file(src, out, "kohya")
    _assert_modelspec(out, architecture="stable-diffusion-v1/lora", title="diffusers_timohavdk_2100-lora",
                      triggers=[])
    # the title of a source that has one is kept, through a second conversion too
    back = tmp_path / "back.safetensors"
    convert_file(out, back, "diffusers")
    _assert_modelspec(back, architecture="stable-diffusion-v1/lora", title="diffusers_timohavdk_2100-lora",
                      triggers=[])


def test_stale_hash_of_the_source_is_replaced_by_the_written_files_own(tmp_path):
    from safetensors.torch import load_file

    from loradex.registry.files.safetensors_writer import save_safetensors

    src = corpus_file("diffusers_timohavdk_2100-lora.safetensors")
    stale = tmp_path / "stale.safetensors"
    save_safetensors(load_file(str(src)), stale, {"modelspec.hash_sha256": "0xdeadbeef", "modelspec.title": "Timo",
                                                  "modelspec.trigger_phrase": "timo style, portrait"})
    out = tmp_path / "out.safetensors"
    convert_file(stale, out, "kohya")
    _assert_modelspec(out, architecture="stable-diffusion-v1/lora", title="Timo", triggers=["timo style", "portrait"])


@pytest.mark.parametrize("to", ["kohya", "diffusers"])
def test_lycoris_to_lora_writes_modelspec_with_the_sources_triggers(tmp_path, to):
    src = corpus_file("lycoris_smart_falcon_4_lokr.safetensors")
    source = probe_path(src)
    assert source.trigger_words  # from ss_tag_frequency
    out = tmp_path / "falcon.safetensors"
    convert_path(src, out, to, rank=1)
    meta = _assert_modelspec(out, architecture="stable-diffusion-v1/lora", title="smart_falcon_lokr_3.0e-4",
                             triggers=list(source.trigger_words))
    assert meta["ss_output_name"] == "smart_falcon_lokr_3.0e-4"
    assert "sshs_model_hash" not in meta  # the LoKr file's own AutoV3, wrong for this one
    assert list(probe_path(out).trigger_words) == list(source.trigger_words)


def test_embedding_conversion_writes_textual_inversion_modelspec(tmp_path):
    src = corpus_file("ti_diffusers_learned_embeds_ttekcor.safetensors")
    out = tmp_path / "schemas.safetensors"
    convert_path(src, out, "a1111")
    _assert_modelspec(out, architecture="stable-diffusion-v1/textual-inversion", title="detail-schemas",
                      triggers=["<detail-schemas>"])
    sdxl = corpus_file("ti_sdxl_clip_g_clip_l_kaleidia_SDXL-Detail.safetensors")
    convert_path(sdxl, tmp_path / "d.safetensors", "a1111")
    for half in ("clip_l", "clip_g"):
        _assert_modelspec(tmp_path / f"d.{half}.safetensors",
                          architecture="stable-diffusion-xl-v1-base/textual-inversion",
                          title="ti_sdxl_clip_g_clip_l_kaleidia_SDXL-Detail",
                          triggers=["ti_sdxl_clip_g_clip_l_kaleidia_SDXL-Detail"])
