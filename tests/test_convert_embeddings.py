"""Textual-inversion embeddings: A1111 ↔ diffusers ↔ SDXL split/join, multi-vector kept."""

from __future__ import annotations

import pytest
import torch
from _convert_fixtures import corpus_file
from safetensors.torch import load_file

from loradex.merge.conventions.embedding_convert import (
    convert_embedding,
    detect_embedding_format,
    join_sdxl,
    split_sdxl,
    to_embedding,
)
from loradex.registry.errors import UnsupportedFormat, UsageError


def test_a1111_multi_vector_to_diffusers_and_back():
    sd = load_file(str(corpus_file("ti_a1111_EasyNegative_in_models-Lora_mayaru.safetensors")))
    assert detect_embedding_format(sd) == "a1111"
    diff = convert_embedding(sd, "diffusers", token="easynegative")
    assert list(diff) == ["easynegative"] and diff["easynegative"].shape == (8, 768)
    back = convert_embedding(diff, "a1111")
    assert torch.equal(back["emb_params"], sd["emb_params"])
    with pytest.raises(UsageError, match="token"):
        convert_embedding(sd, "diffusers")


def test_diffusers_token_is_kept():
    sd = load_file(str(corpus_file("ti_diffusers_learned_embeds_ttekcor.safetensors")))
    assert detect_embedding_format(sd) == "diffusers"
    a1111 = convert_embedding(sd, "a1111")
    assert torch.equal(a1111["emb_params"], sd["<detail-schemas>"])
    assert torch.equal(convert_embedding(a1111, "diffusers", token="<detail-schemas>")["<detail-schemas>"],
                       sd["<detail-schemas>"])


def test_single_vector_1d_becomes_one_row():
    vec = torch.randn(768)
    assert convert_embedding({"<tok>": vec}, "a1111")["emb_params"].shape == (1, 768)
    assert to_embedding({"<tok>": vec}).num_vectors == 1


def test_sdxl_split_and_join_are_exact():
    sd = load_file(str(corpus_file("ti_sdxl_clip_g_clip_l_kaleidia_SDXL-Detail.safetensors")))
    assert detect_embedding_format(sd) == "sdxl"
    parts = split_sdxl(sd, token="<detail>")
    assert torch.equal(parts["text_encoder"]["<detail>"], sd["clip_l"])
    assert torch.equal(parts["text_encoder_2"]["<detail>"], sd["clip_g"])
    joined = join_sdxl(parts["text_encoder"], parts["text_encoder_2"])
    assert set(joined) == {"clip_l", "clip_g"}
    assert all(torch.equal(joined[k], sd[k]) for k in sd)
    a1111_parts = split_sdxl(sd, to="a1111")
    assert a1111_parts["text_encoder_2"]["emb_params"].shape == (2, 1280)


def test_join_refuses_mismatched_vector_counts():
    with pytest.raises(UnsupportedFormat, match="number of vectors"):
        join_sdxl({"emb_params": torch.zeros(2, 768)}, {"emb_params": torch.zeros(3, 1280)})


def test_t5_embedding_is_named_and_refused():
    sd = load_file(str(corpus_file("ti_t5xxl_kaleidia_T5-CharDetail.safetensors")))
    with pytest.raises(UnsupportedFormat, match="T5"):
        detect_embedding_format(sd)


def test_a1111_pt_structure_already_loaded():
    # what the safe pickle loader returns for an A1111 .pt
    tensor = torch.randn(5, 768)
    pt = {"string_to_token": {"*": 265}, "string_to_param": {"*": tensor}, "name": "bad-hands-5", "step": 1}
    emb = to_embedding(pt)
    assert emb.token == "bad-hands-5" and emb.num_vectors == 5
    assert torch.equal(convert_embedding(pt, "diffusers")["bad-hands-5"], tensor)


def test_convert_embedding_file_splits_sdxl_and_names_the_token(tmp_path):
    from loradex.merge.conventions.embedding_convert import convert_embedding_file

    src = corpus_file("ti_sdxl_clip_g_clip_l_kaleidia_SDXL-Detail.safetensors")
    report = convert_embedding_file(src, tmp_path / "detail.safetensors", "diffusers")
    assert report.num_vectors == 2 and report.token == src.stem
    l_out = load_file(str(tmp_path / "detail.clip_l.safetensors"))
    g_out = load_file(str(tmp_path / "detail.clip_g.safetensors"))
    original = load_file(str(src))
    assert torch.equal(l_out[src.stem], original["clip_l"]) and torch.equal(g_out[src.stem], original["clip_g"])


# --- one conversion path for `convert` and `export --format` (CLI) ------------------------------
SDXL_TI = "ti_sdxl_clip_g_clip_l_kaleidia_SDXL-Detail.safetensors"


def _cli(*args):
    from typer.testing import CliRunner

    from loradex.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _ok(*args):
    result = _cli(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def _refused(*args):
    from loradex.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    assert exc.value.code != 0
    return exc


def test_cli_convert_sdxl_splits_then_joins_back_bit_exact(tmp_path, capsys):
    src = corpus_file(SDXL_TI)
    original = load_file(str(src))
    _ok("convert", src, "--to", "a1111", "-o", tmp_path / "half.safetensors")
    clip_l, clip_g = tmp_path / "half.clip_l.safetensors", tmp_path / "half.clip_g.safetensors"
    assert torch.equal(load_file(str(clip_l))["emb_params"], original["clip_l"])
    assert torch.equal(load_file(str(clip_g))["emb_params"], original["clip_g"])
    # halves given in either order: their widths say which is clip_l and which clip_g
    _ok("convert", clip_g, "--join", clip_l, "--to", "sdxl", "-o", tmp_path / "joined.safetensors")
    joined = load_file(str(tmp_path / "joined.safetensors"))
    assert set(joined) == {"clip_l", "clip_g"} and all(torch.equal(joined[k], original[k]) for k in original)

    _refused("convert", clip_l, "--to", "sdxl", "-o", tmp_path / "no.safetensors")
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--join" in err and len(err.strip().splitlines()) == 1
    _refused("convert", clip_l, "--join", clip_l, "--to", "sdxl", "-o", tmp_path / "no.safetensors")
    assert "768-wide" in capsys.readouterr().err
    assert not (tmp_path / "no.safetensors").exists()


def test_cli_convert_sdxl_to_diffusers_keys_both_halves_by_the_token(tmp_path):
    src = corpus_file(SDXL_TI)
    original = load_file(str(src))
    _ok("convert", src, "--to", "diffusers", "--token", "<detail>", "-o", tmp_path / "d.safetensors")
    assert torch.equal(load_file(str(tmp_path / "d.clip_l.safetensors"))["<detail>"], original["clip_l"])
    assert torch.equal(load_file(str(tmp_path / "d.clip_g.safetensors"))["<detail>"], original["clip_g"])


def test_cli_convert_refuses_pickles_and_points_to_a_route_that_works(tmp_path, capsys):
    pt = corpus_file("ti_a1111_bad-hands-5_mayaru.pt")
    _refused("convert", pt, "--to", "diffusers", "-o", tmp_path / "o.safetensors")
    err = capsys.readouterr().err
    assert "add --allow-pickle" in err and "export" in err and not (tmp_path / "o.safetensors").exists()


def test_export_format_converts_an_added_pickle_embedding_and_an_sdxl_one(tmp_path):
    """The route the pickle refusal names: add --allow-pickle (stored as safetensors), export --format."""
    from loradex.registry.catalog.store import Catalog

    _ok("add", corpus_file("ti_a1111_bad-hands-5_mayaru.pt"), "--allow-pickle", "--name", "bad-hands")
    _ok("add", corpus_file(SDXL_TI), "--name", "detail")
    catalog = Catalog()
    stored = load_file(str(catalog.blobs.path_for(catalog.resolve("bad-hands").sha256)))["emb_params"]
    assert stored.shape == (2, 768)

    webui = tmp_path / "webui"
    _ok("export", "bad-hands", webui, "--format", "diffusers")
    out = load_file(str(webui / "embeddings" / "bad-hands.safetensors"))
    # keyed by the stored file's name, as A1111 names embeddings
    assert list(out) == ["ti_a1111_bad-hands-5_mayaru"] and torch.equal(out["ti_a1111_bad-hands-5_mayaru"], stored)

    _ok("export", "detail", webui, "--format", "diffusers")
    original = load_file(str(corpus_file(SDXL_TI)))
    for half in ("clip_l", "clip_g"):
        (tensor,) = load_file(str(webui / "embeddings" / f"detail.{half}.safetensors")).values()
        assert torch.equal(tensor, original[half])
