"""Merge and resize Flux.1 LoRAs through the catalog: files in different conventions (kohya with
fused qkv/linear1, diffusers split) meet on one module per projection, and the pure merge math does
the rest — concat is the exact sum of ΔW, svd and resize the optimal low-rank approximation."""

from __future__ import annotations

import pytest
import torch

from loradex.merge.catalog_merge import merge_versions, resize_version
from loradex.merge.conventions.adapter_io import open_version
from loradex.merge.conventions.convert import convert_state_dict, to_canonical
from loradex.merge.math.lora_module import delta_weight
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.store import Catalog
from loradex.registry.files.safetensors_writer import save_safetensors

H = 32  # the tiny Flux transformer's width (diffusers' test sizes): linear shapes (out, in)
SHAPES = {"x_embedder": (H, 4), "context_embedder": (H, H), "transformer_blocks.0.norm1.linear": (6 * H, H),
          **{f"transformer_blocks.0.attn.{p}": (H, H) for p in ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj",
                                                              "add_k_proj", "add_v_proj", "to_add_out")},
          "transformer_blocks.0.ff.net.0.proj": (4 * H, H), "transformer_blocks.0.ff.net.2": (H, 4 * H),
          **{f"single_transformer_blocks.0.attn.{p}": (H, H) for p in ("to_q", "to_k", "to_v")},
          "single_transformer_blocks.0.proj_mlp": (4 * H, H), "single_transformer_blocks.0.proj_out": (H, 5 * H),
          "norm_out.linear": (2 * H, H), "proj_out": (4, H)}
FUSED = {"to_q": "img", "to_k": "img", "to_v": "img", "add_q_proj": "txt", "add_k_proj": "txt", "add_v_proj": "txt"}


def _group(path: str) -> str:
    block, _, leaf = path.rpartition(".")
    if path.startswith("single_transformer_blocks") and (leaf in FUSED or leaf == "proj_mlp"):
        return "single.linear1"
    return f"{block}.{FUSED[leaf]}" if leaf in FUSED else path


def _diffusers_lora(rank: int, alpha: float, seed: int) -> tuple[dict, dict]:
    """Projections of one fused module share down and alpha, as trained on the fused model."""
    from loradex.merge.conventions.convert import from_canonical

    g = torch.Generator().manual_seed(seed)
    downs, sd = {}, {}
    for path, (out_f, in_f) in sorted(SHAPES.items()):
        down = downs.setdefault(_group(path), torch.randn(rank, in_f, generator=g) * 0.3)
        sd[f"transformer.{path}.lora_A.weight"] = down.clone()
        sd[f"transformer.{path}.lora_B.weight"] = torch.randn(out_f, rank, generator=g) * 0.3
    lora = to_canonical(sd, base="flux", convention="diffusers")
    for mod in lora.components["transformer"].values():
        mod.alpha = torch.tensor(alpha)
    return from_canonical(lora, "diffusers")


@pytest.fixture
def catalog(tmp_path):
    cat = Catalog(tmp_path / "home")
    a, a_meta = _diffusers_lora(rank=4, alpha=2.0, seed=1)
    b, b_meta = _diffusers_lora(rank=2, alpha=3.0, seed=2)
    kohya, k_meta, _ = convert_state_dict(b, to="kohya", metadata=b_meta)  # fused qkv / linear1
    assert "lora_unet_single_blocks_0_linear1.lora_up.weight" in kohya
    for name, sd, meta in (("a", a, a_meta), ("b", kohya, k_meta)):
        path = tmp_path / f"{name}.safetensors"
        save_safetensors(sd, path, meta)
        add_file(cat, path, name=name, base="flux")
    return cat


def _deltas(cat, ref: str) -> dict[str, torch.Tensor]:
    return {n: delta_weight(m).double() for n, m in open_version(cat, ref)[1].load_all().items()}


def test_concat_merge_of_kohya_and_diffusers_flux_is_the_exact_sum(catalog):
    a, b = _deltas(catalog, "a"), _deltas(catalog, "b")
    assert a.keys() == b.keys() and len(a) == len(SHAPES)  # the fused kohya modules were split on read
    result = merge_versions(catalog, [("a", 0.7), ("b", -1.3)], "concat", name="mix", dtype="fp32")
    merged = _deltas(catalog, result.version.ref)
    assert merged.keys() == a.keys()
    from safetensors import safe_open

    from loradex.merge.conventions.adapter_io import blob_path

    with safe_open(str(blob_path(catalog, result.version)), framework="pt") as fh:  # written fused, native names
        up = fh.get_tensor("lora_unet_single_blocks_0_linear1.lora_up.weight")
    assert up.shape == (7 * H, 4 + 2)  # the concat keeps one shared down per fused module: rank 4 + 2
    for name in a:
        torch.testing.assert_close(merged[name], 0.7 * a[name] - 1.3 * b[name], rtol=1e-5, atol=1e-6)
    assert catalog.get_adapter("mix").base == "flux"


def test_the_denoiser_weight_of_an_input_applies_to_the_flux_transformer(catalog):
    a = _deltas(catalog, "a")
    result = merge_versions(catalog, [("a", 1.0, 1.0, 0.25)], "concat", name="quarter", dtype="fp32")
    merged = _deltas(catalog, result.version.ref)
    assert merged.keys() == a.keys()
    for name in a:  # te weight 1.0, transformer (unet) weight 0.25
        torch.testing.assert_close(merged[name], 0.25 * a[name], rtol=1e-5, atol=1e-6)


def test_svd_merge_and_resize_are_optimal_on_flux(catalog):
    a, b = _deltas(catalog, "a"), _deltas(catalog, "b")
    result = merge_versions(catalog, [("a", 1.0), ("b", 1.0)], "svd", rank=3, name="svd3", dtype="fp32")
    merged = _deltas(catalog, result.version.ref)
    for name in a:
        target = a[name] + b[name]
        s = torch.linalg.svdvals(target)
        optimal = float(s[3:].square().sum().sqrt())  # Eckart–Young: the best rank-3 residual
        assert abs(float((merged[name] - target).norm()) - optimal) <= 1e-4 * float(s[0]) + 1e-6
    resized = resize_version(catalog, "a", rank=1, name="a1", dtype="fp32")
    small = _deltas(catalog, resized.version.ref)
    for name, d in a.items():
        s = torch.linalg.svdvals(d)
        assert abs(float((small[name] - d).norm()) - float(s[1:].square().sum().sqrt())) <= 1e-4 * float(s[0]) + 1e-6


def test_lycoris_flux_file_is_split_by_rows_and_merges(catalog, tmp_path):
    """A LoKr module on the fused ``img_attn.qkv`` (kohya names) is expanded and split by rows into
    to_q/to_k/to_v — each the matching rows of kron(w1, w2) — and merges with LoRA files by svd."""
    g = torch.Generator().manual_seed(5)
    w1, w2 = torch.randn(4, 4, generator=g), torch.randn(3 * H // 4, H // 4, generator=g) * 0.1
    lokr = {"lora_unet_double_blocks_0_img_attn_qkv.lokr_w1": w1, "lora_unet_double_blocks_0_img_attn_qkv.lokr_w2": w2,
            "lora_unet_double_blocks_0_img_attn_qkv.alpha": torch.tensor(1.0),
            "lora_unet_final_layer_adaLN_modulation_1.lora_down.weight": torch.randn(2, H, generator=g),
            "lora_unet_final_layer_adaLN_modulation_1.lora_up.weight": torch.randn(2 * H, 2, generator=g),
            "lora_unet_final_layer_adaLN_modulation_1.alpha": torch.tensor(2.0)}
    path = tmp_path / "lokr.safetensors"
    save_safetensors(lokr, path, {})
    add_file(catalog, path, name="k", base="flux")
    got = _deltas(catalog, "k")
    full = torch.kron(w1, w2).double()
    for i, proj in enumerate(("to_q", "to_k", "to_v")):
        assert torch.equal(got[f"lora_transformer_transformer_blocks_0_attn_{proj}"], full[i * H:(i + 1) * H])
    ada = (lokr["lora_unet_final_layer_adaLN_modulation_1.lora_up.weight"].double()
           @ lokr["lora_unet_final_layer_adaLN_modulation_1.lora_down.weight"].double())
    torch.testing.assert_close(got["lora_transformer_norm_out_linear"], torch.cat([ada[H:], ada[:H]]))  # swapped
    a = _deltas(catalog, "a")
    result = merge_versions(catalog, [("k", 1.0), ("a", 1.0)], "svd", rank=H, name="ka", dtype="fp32")
    merged = _deltas(catalog, result.version.ref)
    for name in merged:
        torch.testing.assert_close(merged[name], got.get(name, 0) + a[name], rtol=1e-4, atol=1e-5)
