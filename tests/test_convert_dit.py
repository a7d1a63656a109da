"""Flux.1 and SD 3.5 LoRAs convert exactly between kohya (fused native names), diffusers (split
``transformer.`` paths) and ComfyUI-native (``diffusion_model.``) files, and the files load in the
loaders people use: diffusers' own Flux/SD3 loaders (into tiny transformers built from config,
diffusers' test sizes) and ComfyUI's key mapping as stated in tests/_loader_checks.py."""

from __future__ import annotations

import pytest
import torch
from _convert_fixtures import assert_same_state_dict
from _loader_checks import (
    comfyui_dit_key_map,
    comfyui_dit_patches,
    comfyui_flux_diffusers_map,
    comfyui_sd3_diffusers_map,
)
from safetensors.torch import save_file

from loradex.merge.conventions.convert import convert_state_dict, detect_base, detect_convention, to_canonical
from loradex.merge.math.fused_projections import Factors, delta, fuse_rows, split_rows, swap_halves
from loradex.registry.errors import UnsupportedFormat

RANK = 2
ALPHAS = (1.0, 3.0, 0.5, 6.0)  # per fused group, none equal to the rank
FLUX_HIDDEN = 32


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- pure math: split and fuse ------------------------------------------------------------------
def test_split_then_fuse_is_bit_exact_and_delta_rows_match():
    g = _gen(0)
    fused = Factors(torch.randn(4, 8, generator=g), torch.randn(3 * 6, 4, generator=g), torch.tensor(3.0))
    parts = split_rows(fused, (6, 6, 6))
    assert all(torch.equal(p.down, fused.down) for p in parts)
    assert torch.equal(torch.cat([p.up for p in parts]), fused.up)
    whole = delta(fused)
    for k, p in enumerate(parts):  # each part's ΔW is the fused ΔW's row block
        torch.testing.assert_close(delta(p), whole[6 * k:6 * (k + 1)], rtol=0, atol=1e-12)
    back = fuse_rows(parts, (6, 6, 6))
    assert back.form == "shared" and back.missing == 0
    assert torch.equal(back.factors.down, fused.down) and torch.equal(back.factors.up, fused.up)
    assert back.factors.alpha_value == 3.0


def test_fuse_different_downs_block_diagonal_and_back():
    g = _gen(1)
    parts = [Factors(torch.randn(r, 8, generator=g), torch.randn(5, r, generator=g), torch.tensor(a))
             for r, a in ((2, 1.0), (3, 1.5), (1, 0.5))]  # one scale, 0.5, for all three
    fused = fuse_rows(parts, (5, 5, 5))
    assert fused.form == "block" and fused.factors.rank == 6 and not fused.folded
    assert fused.factors.alpha_value == 0.5 * 6
    want = torch.cat([delta(p) for p in parts])
    torch.testing.assert_close(delta(fused.factors), want, rtol=0, atol=1e-12)
    again = split_rows(fused.factors, (5, 5, 5))  # block form is recognised: the parts come back
    for p, q in zip(parts, again):
        assert torch.equal(p.down, q.down) and torch.equal(p.up, q.up) and q.alpha_value == p.alpha_value


def test_fuse_unequal_scales_folds_and_missing_part_is_zero_rows():
    g = _gen(2)
    a = Factors(torch.randn(2, 8, generator=g), torch.randn(4, 2, generator=g), torch.tensor(1.0))
    b = Factors(torch.randn(2, 8, generator=g), torch.randn(4, 2, generator=g), torch.tensor(4.0))
    fused = fuse_rows([a, None, b], (4, 4, 4))
    assert fused.form == "block" and fused.folded and fused.missing == 1
    got = delta(fused.factors)
    torch.testing.assert_close(got[:4], delta(a), rtol=1e-6, atol=1e-6)
    assert torch.equal(got[4:8], torch.zeros(4, 8, dtype=torch.float64))  # the missing projection: ΔW 0 exactly
    torch.testing.assert_close(got[8:], delta(b), rtol=1e-6, atol=1e-6)
    shared = fuse_rows([a, None, Factors(a.down.clone(), b.up, torch.tensor(1.0))], (4, 4, 4))
    assert shared.form == "shared" and shared.factors.rank == 2 and shared.missing == 1
    assert torch.equal(shared.factors.up[4:8], torch.zeros(4, 2))
    assert torch.equal(swap_halves(swap_halves(b.up)), b.up)


# --- tiny models (diffusers' own test sizes) ------------------------------------------------------
@pytest.fixture(scope="module")
def flux():
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    return FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                  attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                  pooled_projection_dim=32, axes_dims_rope=[4, 4, 8])


@pytest.fixture(scope="module")
def sd3():
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    return SD3Transformer2DModel(sample_size=32, patch_size=1, in_channels=4, num_layers=2, attention_head_dim=8,
                                 num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32,
                                 pooled_projection_dim=64, out_channels=4, dual_attention_layers=(0,))


def _linears(model) -> dict[str, tuple[int, int]]:
    """Linear layers by path (a layer that carried a deleted adapter is a peft wrapper around
    ``base_layer``: named by the wrapper's path)."""
    return {n.removesuffix(".base_layer"): tuple(m.weight.shape) for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and ".lora_" not in n}


def _random_lora(shapes: dict[str, tuple[int, int]], group_of, seed: int) -> dict[str, torch.Tensor]:
    """A diffusers-convention LoRA over ``shapes``: projections of one fused native module share
    their down and alpha (as a kohya-trained file split by a converter does)."""
    g = _gen(seed)
    downs: dict[str, torch.Tensor] = {}
    sd = {}
    for path, (out_f, in_f) in sorted(shapes.items()):
        group = group_of(path)
        if group not in downs:
            downs[group] = torch.randn(RANK, in_f, generator=g) * 0.3
        sd[f"transformer.{path}.lora_A.weight"] = downs[group].clone()
        sd[f"transformer.{path}.lora_B.weight"] = torch.randn(out_f, RANK, generator=g) * 0.3
    return sd


def _with_alphas(sd: dict[str, torch.Tensor], group_of) -> tuple[dict, dict]:
    """Give every fused group its own alpha (≠ rank): written through a kohya round trip."""
    from loradex.merge.conventions.convert import from_canonical

    lora = to_canonical(sd, base=None, convention="diffusers")
    groups = sorted({group_of(p) for p in lora.components["transformer"]})
    for path, mod in lora.components["transformer"].items():
        mod.alpha = torch.tensor(ALPHAS[groups.index(group_of(path)) % len(ALPHAS)])
    return from_canonical(lora, "diffusers")


def _flux_group(path: str) -> str:
    target = comfyui_flux_diffusers_map(1, 1, FLUX_HIDDEN).get(path)
    return target.weight if target is not None else path


def _sd3_group(path: str) -> str:
    from loradex.families import get_family

    owner = get_family("sd3").aspect("naming").TABLE.owner(path)
    return owner[0].native if owner else path


@pytest.fixture(scope="module")
def flux_lora(flux):
    return _with_alphas(_random_lora(_linears(flux), _flux_group, seed=3), _flux_group)


@pytest.fixture(scope="module")
def sd3_lora(sd3):
    return _with_alphas(_random_lora(_linears(sd3), _sd3_group, seed=4), _sd3_group)


def _deltas(sd, metadata=None, base=None) -> dict[str, torch.Tensor]:
    lora = to_canonical(sd, metadata=metadata, base=base)
    return {f"{c}.{p}": m.scale * (m.up.double() @ m.down.double())
            for c, mods in lora.components.items() for p, m in mods.items()}


# --- conversions ----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_round_trips_are_bit_exact(family, flux_lora, sd3_lora):
    diff, meta = flux_lora if family == "flux" else sd3_lora
    assert detect_base(diff) == family
    kohya, kmeta, report = convert_state_dict(diff, to="kohya", metadata=meta)
    assert report.base == family and report.unconsumed == [] and report.notes == []  # shared downs: no rank growth
    assert detect_convention(kohya) == "kohya" and detect_base(kohya) == family
    back, bmeta, _ = convert_state_dict(kohya, to="diffusers", metadata=kmeta)
    assert_same_state_dict(diff, back)
    comfy, cmeta, _ = convert_state_dict(kohya, to="comfyui", metadata=kmeta)
    assert detect_convention(comfy) == "comfyui" and all(k.startswith("diffusion_model.") for k in comfy)
    assert_same_state_dict(kohya, convert_state_dict(comfy, to="kohya", metadata=cmeta)[0])
    assert_same_state_dict(diff, convert_state_dict(comfy, to="diffusers", metadata=cmeta)[0])
    peft, pmeta, _ = convert_state_dict(diff, to="peft", metadata=meta)  # raw PEFT: base_model.model.<path>
    pmeta = {k: v for k, v in pmeta.items() if k != "loradex.peft_component"}  # as other writers leave it
    assert_same_state_dict(kohya, convert_state_dict(peft, to="kohya", metadata=pmeta, base=family)[0])
    # ΔW per module is the same through every layout
    want = _deltas(diff, meta)
    for sd, m in ((kohya, kmeta), (comfy, cmeta)):
        got = _deltas(sd, m)
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_flux_native_names_fused_sizes_and_final_swap(flux_lora):
    diff, meta = flux_lora
    kohya, _, _ = convert_state_dict(diff, to="kohya", metadata=meta)
    up = kohya["lora_unet_single_blocks_0_linear1.lora_up.weight"]
    assert up.shape == (3 * FLUX_HIDDEN + 4 * FLUX_HIDDEN, RANK)  # q, k, v, mlp rows, read from the shapes
    assert torch.equal(up[3 * FLUX_HIDDEN:], diff["transformer.single_transformer_blocks.0.proj_mlp.lora_B.weight"])
    assert kohya["lora_unet_double_blocks_0_txt_attn_qkv.lora_up.weight"].shape == (3 * FLUX_HIDDEN, RANK)
    ada = kohya["lora_unet_final_layer_adaLN_modulation_1.lora_up.weight"]
    norm = diff["transformer.norm_out.linear.lora_B.weight"]
    assert torch.equal(ada, torch.cat([norm[FLUX_HIDDEN:], norm[:FLUX_HIDDEN]]))  # (shift, scale) ↔ (scale, shift)


def test_sd3_pre_only_last_context_modulation_is_swapped(sd3_lora):
    diff, meta = sd3_lora
    kohya, _, _ = convert_state_dict(diff, to="kohya", metadata=meta)
    last = kohya["lora_unet_joint_blocks_1_context_block_adaLN_modulation_1.lora_up.weight"]
    norm = diff["transformer.transformer_blocks.1.norm1_context.linear.lora_B.weight"]
    assert torch.equal(last, torch.cat([norm[32:], norm[:32]]))
    first = kohya["lora_unet_joint_blocks_0_context_block_adaLN_modulation_1.lora_up.weight"]  # 6·width: as is
    assert torch.equal(first, diff["transformer.transformer_blocks.0.norm1_context.linear.lora_B.weight"])
    assert "lora_unet_joint_blocks_0_x_block_attn2_qkv.lora_up.weight" in kohya


def test_different_downs_grow_the_rank_and_come_back(flux_lora):
    diff, meta = flux_lora
    diff = dict(diff)
    key = "transformer.transformer_blocks.0.attn.to_k.lora_A.weight"
    diff[key] = torch.randn(diff[key].shape, generator=_gen(9))
    kohya, kmeta, report = convert_state_dict(diff, to="kohya", metadata=meta)
    assert any("rank grows 2 → 6 on 1 fused module" in n for n in report.notes)
    assert kohya["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"].shape[0] == 3 * RANK
    assert_same_state_dict(diff, convert_state_dict(kohya, to="diffusers", metadata=kmeta)[0])


def test_text_encoders_use_the_family_prefixes():
    g = _gen(5)
    sd = {"lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.randn(2, 32, generator=g),
          "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.randn(32, 2, generator=g),
          "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.alpha": torch.tensor(1.0),
          "lora_te3_encoder_block_0_layer_1_DenseReluDense_wi_0.lora_down.weight": torch.randn(2, 32, generator=g),
          "lora_te3_encoder_block_0_layer_1_DenseReluDense_wi_0.lora_up.weight": torch.randn(64, 2, generator=g),
          "lora_te3_encoder_block_0_layer_1_DenseReluDense_wi_0.alpha": torch.tensor(4.0),
          "lora_unet_double_blocks_0_img_attn_proj.lora_down.weight": torch.randn(2, 32, generator=g),
          "lora_unet_double_blocks_0_img_attn_proj.lora_up.weight": torch.randn(32, 2, generator=g),
          "lora_unet_double_blocks_0_img_attn_proj.alpha": torch.tensor(2.0)}
    diff, meta, _ = convert_state_dict(sd, to="diffusers")
    assert "text_encoder_2.encoder.block.0.layer.1.DenseReluDense.wi_0.lora_A.weight" in diff
    assert "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight" in diff
    comfy, cmeta, _ = convert_state_dict(sd, to="comfyui")
    assert "text_encoders.t5xxl.transformer.encoder.block.0.layer.1.DenseReluDense.wi_0.lora_down.weight" in comfy
    assert "text_encoders.clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.alpha" in comfy
    assert_same_state_dict(sd, convert_state_dict(comfy, to="kohya", metadata=cmeta)[0])
    assert_same_state_dict(sd, convert_state_dict(diff, to="kohya", metadata=meta)[0])


def test_unknown_module_is_a_coverage_error_and_sd1_kohya_untouched():
    from loradex.registry.errors import CoverageError

    g = _gen(6)
    sd = {"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.randn(2, 8, generator=g),
          "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": torch.randn(24, 2, generator=g),
          "lora_unet_double_blocks_0_img_attn_norm.lora_down.weight": torch.randn(2, 8, generator=g),
          "lora_unet_double_blocks_0_img_attn_norm.lora_up.weight": torch.randn(8, 2, generator=g)}
    with pytest.raises(CoverageError, match="img_attn_norm"):
        convert_state_dict(sd, to="diffusers")
    out, _, report = convert_state_dict(sd, to="diffusers", allow_partial=True)
    assert len(out) == 6 and len(report.unconsumed) == 2
    bad = {"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.randn(2, 8, generator=g),
           "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": torch.randn(25, 2, generator=g)}
    with pytest.raises(UnsupportedFormat, match="25 rows"):
        convert_state_dict(bad, to="diffusers")


# --- oracles: diffusers' loaders ------------------------------------------------------------------
def _diffusers_load(pipeline_cls, models: dict, path, name) -> dict[str, torch.Tensor]:
    """Load ``path`` with the pipeline class's own lora_state_dict + load_lora_weights into a
    pipeline holding ``models`` (component → model, the rest None); → "component.path" → ΔW of
    adapter ``name`` (float64; CLIP paths with their ``text_model.`` level). Every key of the
    converted state dict must name a LoRA layer (no unexpected keys)."""
    import inspect

    others = [p for p in inspect.signature(pipeline_cls.__init__).parameters if p != "self" and p not in models]
    pipe = pipeline_cls(**models, **dict.fromkeys(others))
    state = pipeline_cls.lora_state_dict(str(path))
    state = state[0] if isinstance(state, tuple) else state
    pipe.load_lora_weights(str(path), adapter_name=name)
    got = {}
    for component, model in models.items():
        for path_, mod in model.named_modules():
            if hasattr(mod, "lora_A") and name in mod.lora_A:
                if component.startswith("text_encoder") and not path_.startswith("text_model."):
                    path_ = "text_model." + path_  # transformers 5 flattened CLIPTextModel
                got[f"{component}.{path_}"] = mod.scaling[name] * (
                    mod.lora_B[name].weight.double() @ mod.lora_A[name].weight.double())
        if hasattr(model, "delete_adapters"):
            model.delete_adapters(name)
    stems = {k.rsplit(".lora_", 1)[0] for k in state if k.startswith("transformer.")}
    assert stems == {k for k in got if k.startswith("transformer.")}, sorted(stems ^ set(got))[:5]
    # text-encoder keys come in diffusers' older spellings (…to_q_lora.down.weight): counted
    assert sum(k.startswith("text_encoder") for k in state) == 2 * sum(k.startswith("text_encoder") for k in got)
    assert all(k.startswith(("transformer.", "text_encoder")) for k in state)
    if "text_encoder" in models:
        pipe.delete_adapters(name)
    return got


def _compare(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)


def test_flux_files_load_in_diffusers(flux, flux_lora, tmp_path):
    from diffusers import FluxPipeline

    diff, meta = flux_lora
    want = _deltas(diff, meta)
    path = tmp_path / "d.safetensors"
    save_file(diff, str(path), meta)
    _compare(_diffusers_load(FluxPipeline, {"transformer": flux}, path, "diffusers"), want)
    # diffusers' kohya/ComfyUI Flux path (diffusers 0.42 _convert_kohya_flux_lora_to_diffusers)
    # hard-codes the real single-block widths (3072 ×3, 12288) for linear1, and names the non-block
    # modules (img_in, txt_in, time_in, vector_in, final_layer) without the ``transformer.`` prefix,
    # so load_lora_weights drops them: the tiny files hold the rest here; ComfyUI's rule below
    # checks every module.
    dropped_by_diffusers = ("linear1", "img_in", "txt_in", "time_in", "vector_in", "final_layer")
    for to in ("kohya", "comfyui"):
        out, ometa, _ = convert_state_dict(diff, to=to, metadata=meta)
        out = {k: v for k, v in out.items() if not any(d in k for d in dropped_by_diffusers)}
        path = tmp_path / f"{to}.safetensors"
        save_file(out, str(path), ometa)
        _compare(_diffusers_load(FluxPipeline, {"transformer": flux}, path, to), _deltas(out, ometa))


def test_sd3_diffusers_file_loads_in_diffusers(sd3, sd3_lora, tmp_path):
    from diffusers import StableDiffusion3Pipeline

    diff, meta = sd3_lora
    path = tmp_path / "d.safetensors"
    save_file(diff, str(path), meta)
    _compare(_diffusers_load(StableDiffusion3Pipeline, {"transformer": sd3}, path, "diffusers"), _deltas(diff, meta))


def test_flux_clip_text_encoder_loads_in_diffusers_from_every_convention(flux, tmp_path):
    """CLIP-L LoRA modules (kohya ``lora_te1_``, ComfyUI ``text_encoders.clip_l.transformer.``,
    diffusers ``text_encoder.``) load into the Flux pipeline's text encoder with their own alphas.
    (diffusers' Flux loader takes no T5 LoRA in any convention: FluxPipeline loads transformer and
    text_encoder only.)"""
    from diffusers import FluxPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    clip = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                        num_hidden_layers=1, vocab_size=100, bos_token_id=0, eos_token_id=1,
                                        pad_token_id=1))
    g = _gen(11)
    kohya = {}
    for i, (name, mod) in enumerate((n, m) for n, m in clip.named_modules() if isinstance(m, torch.nn.Linear)):
        stem = "lora_te1_text_model_" + name.removeprefix("text_model.").replace(".", "_")
        kohya[f"{stem}.lora_down.weight"] = torch.randn(RANK, mod.in_features, generator=g) * 0.3
        kohya[f"{stem}.lora_up.weight"] = torch.randn(mod.out_features, RANK, generator=g) * 0.3
        kohya[f"{stem}.alpha"] = torch.tensor(ALPHAS[i % len(ALPHAS)])
    for stem, (out_f, in_f) in (("lora_unet_double_blocks_0_img_attn_proj", (32, 32)),):  # a block: the Flux path
        kohya[f"{stem}.lora_down.weight"] = torch.randn(RANK, in_f, generator=g)
        kohya[f"{stem}.lora_up.weight"] = torch.randn(out_f, RANK, generator=g)
        kohya[f"{stem}.alpha"] = torch.tensor(1.0)
    want = _deltas(kohya)
    assert sum(k.startswith("text_encoder.") for k in want) == 6
    for to in ("kohya", "comfyui", "diffusers"):
        out, ometa, _ = convert_state_dict(kohya, to=to)
        path = tmp_path / f"{to}.safetensors"
        save_file(out, str(path), ometa)
        _compare(_diffusers_load(FluxPipeline, {"transformer": flux, "text_encoder": clip}, path, to), want)


# --- oracle: ComfyUI's key mapping ------------------------------------------------------------------
def _check_comfyui(model, lora, diffusers_map, base: str) -> None:
    """The kohya and comfyui files loradex writes load completely under ComfyUI's rule (no "lora
    key not loaded") and patch every native weight with the ΔW diffusers loads from the diffusers
    file, placed by ComfyUI's own table (row offsets into fused weights, swapped halves)."""
    shapes = _linears(model)
    native_shapes: dict[str, tuple] = {}
    for path, target in diffusers_map.items():
        if path in shapes:
            offset, length = target.rows or (0, shapes[path][0])
            rows = max(native_shapes.get(target.weight, (0,))[0], offset + length)
            native_shapes[target.weight] = (rows, shapes[path][1])
    key_map = comfyui_dit_key_map(native_shapes, diffusers_map)
    diff, meta = lora
    # ComfyUI takes every key of the diffusers file too, but reads no lora_adapter_metadata: it
    # applies those modules at scale 1 whatever their alpha (the kohya and comfyui files store
    # .alpha per module). The reference is the ΔW diffusers loads, placed by ComfyUI's own table.
    _, not_loaded, failed = comfyui_dit_patches(diff, key_map, native_shapes)
    assert not_loaded == [] and failed == []
    reference: dict[str, torch.Tensor] = {}
    for key, value in _deltas(diff, meta, base).items():
        target = diffusers_map[key.removeprefix("transformer.")]
        offset, length = target.rows or (0, value.shape[0])
        if target.swap:
            value = torch.cat([value[length // 2:], value[:length // 2]])
        acc = reference.setdefault(target.weight, torch.zeros(native_shapes[target.weight], dtype=torch.float64))
        acc[offset:offset + length] += value
    assert len(reference) == len(native_shapes)
    for to in ("kohya", "comfyui"):
        out, _, _ = convert_state_dict(diff, to=to, metadata=meta, base=base)  # 128 wide: no width tells SD3
        patches, not_loaded, failed = comfyui_dit_patches(out, key_map, native_shapes)
        assert not_loaded == [] and failed == [], (to, not_loaded[:3], failed[:3])
        assert patches.keys() == reference.keys()
        for weight in reference:
            torch.testing.assert_close(patches[weight], reference[weight], rtol=0, atol=1e-12)


def test_flux_files_follow_comfyui_key_mapping(flux, flux_lora):
    _check_comfyui(flux, flux_lora, comfyui_flux_diffusers_map(1, 1, FLUX_HIDDEN), "flux")


def test_sd3_files_follow_comfyui_key_mapping():
    """ComfyUI's SD3 table assumes width = 64 × depth: a 2-block, 128-wide MMDiT (no attn2, which
    the ComfyUI version read does not map)."""
    from diffusers import SD3Transformer2DModel

    model = SD3Transformer2DModel(sample_size=32, patch_size=1, in_channels=4, num_layers=2, attention_head_dim=64,
                                  num_attention_heads=2, caption_projection_dim=128, joint_attention_dim=32,
                                  pooled_projection_dim=64, out_channels=4)
    lora = _with_alphas(_random_lora(_linears(model), _sd3_group, seed=8), _sd3_group)
    _check_comfyui(model, lora, comfyui_sd3_diffusers_map(2), "sd3")


# --- real widths (tests/_family_layouts.py: real configs on the meta device) ---------------------------
REAL = {"flux1-dev": "flux", "sd3.5-medium": "sd3", "sd3.5-large": "sd3"}


@pytest.mark.parametrize("model", ["flux1-dev", "sd3.5-medium"])  # sd3.5-large: same names, other widths
def test_real_width_files_of_every_convention_map_to_the_same_modules(model, tmp_path):
    """Files as each trainer writes them at real widths (names and shapes from the real models,
    zero factors) read with full coverage — a stray key would raise CoverageError — onto one
    set of canonical modules, whatever the convention."""
    from _family_layouts import write_lora
    from safetensors import safe_open
    from safetensors.torch import load_file

    seen = {}
    for convention in ("kohya", "comfy", "comfy-down-up", "diffusers", "onetrainer", "peft"):
        path = write_lora(tmp_path, model, convention, rank=1)
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
        lora = to_canonical(load_file(str(path)), metadata=meta, base=REAL[model])
        assert lora.unconsumed == [] and not any("token split" in n for n in lora.notes)
        seen[convention] = set(lora.components["transformer"])
    assert all(modules == seen["diffusers"] for modules in seen.values())
    if REAL[model] == "flux":
        xlabs = write_lora(tmp_path, model, "xlabs", rank=1)
        lora = to_canonical(load_file(str(xlabs)))
        assert lora.base == "flux" and len(lora.components["transformer"]) == 19 * 8  # q,k,v,out × 2 streams


@pytest.mark.parametrize("model", sorted(REAL))
def test_real_width_kohya_layout_round_trips(model):
    from _convert_fixtures import kohya_from_layout

    from pathlib import Path

    layout = Path(__file__).parent / "fixtures" / "layouts" / f"{model}.json"
    if not layout.is_file():
        pytest.skip(f"{layout} not generated")
    kohya = kohya_from_layout(layout, rank=1)
    diff, meta, report = convert_state_dict(kohya, to="diffusers")
    assert report.base == REAL[model] and report.unconsumed == [] and report.notes == []
    assert_same_state_dict(kohya, convert_state_dict(diff, to="kohya", metadata=meta)[0])
    if REAL[model] == "flux":
        sizes = [diff[f"transformer.single_transformer_blocks.0.{p}.lora_B.weight"].shape[0]
                 for p in ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")]
        assert sizes == [3072, 3072, 3072, 12288]


def test_real_width_flux_kohya_file_reads_the_same_in_diffusers(tmp_path):
    """diffusers' own kohya Flux converter (FluxPipeline.lora_state_dict) on the kohya file
    loradex writes, at real widths, gives every block module loradex's ΔW (checked on random
    vectors: the matrices are up to 12288 × 3072)."""
    from diffusers import FluxPipeline

    from _convert_fixtures import kohya_from_layout
    from pathlib import Path

    layout = Path(__file__).parent / "fixtures" / "layouts" / "flux1-dev.json"
    if not layout.is_file():
        pytest.skip(f"{layout} not generated")
    kohya = {k: v.float() for k, v in kohya_from_layout(layout, rank=1).items() if not k.startswith("lora_te")}
    diff, meta, _ = convert_state_dict(kohya, to="diffusers")
    ours = to_canonical(diff, metadata=meta).components["transformer"]
    path = tmp_path / "k.safetensors"
    save_file(kohya, str(path))
    theirs = FluxPipeline.lora_state_dict(str(path))
    theirs = theirs[0] if isinstance(theirs, tuple) else theirs
    stems = {k.removeprefix("transformer.").rsplit(".lora_", 1)[0] for k in theirs}
    assert stems == set(ours)
    g = _gen(7)
    for module_path, mod in ours.items():
        key = f"transformer.{module_path}" if f"transformer.{module_path}.lora_A.weight" in theirs else module_path
        a, b = theirs[f"{key}.lora_A.weight"].double(), theirs[f"{key}.lora_B.weight"].double()
        x = torch.randn(a.shape[1], 2, generator=g, dtype=torch.float64)
        torch.testing.assert_close(b @ (a @ x), mod.scale * (mod.up.double() @ (mod.down.double() @ x)),
                                   rtol=1e-5, atol=1e-6)


def test_convert_command_writes_comfyui_and_reports_rank_growth(flux_lora, tmp_path):
    import json

    from typer.testing import CliRunner

    from loradex.cli.app import app
    from loradex.registry.files.safetensors_writer import save_safetensors

    diff, meta = flux_lora
    diff = dict(diff)
    key = "transformer.single_transformer_blocks.0.proj_mlp.lora_A.weight"
    diff[key] = torch.randn(diff[key].shape, generator=_gen(10))  # linear1's parts no longer share a down
    src = tmp_path / "split.safetensors"
    save_safetensors(diff, src, meta)
    runner = CliRunner()
    kohya = tmp_path / "fused.safetensors"
    result = runner.invoke(app, ["convert", str(src), "--to", "kohya", "-o", str(kohya), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["base"] == "flux" and data["target_convention"] == "kohya"
    assert any("rank grows 2 → 8 on 1 fused module" in n for n in data["notes"])
    comfy = tmp_path / "comfy.safetensors"
    result = runner.invoke(app, ["convert", str(kohya), "--to", "comfyui", "-o", str(comfy)])
    assert result.exit_code == 0, result.output
    back = tmp_path / "back.safetensors"
    assert runner.invoke(app, ["convert", str(comfy), "--to", "diffusers", "-o", str(back)]).exit_code == 0
    from safetensors.torch import load_file

    assert_same_state_dict(diff, load_file(str(back)))  # block form recognised: the parts come back


def test_convert_refuses_a_recognised_only_family(tmp_path):
    from _family_layouts import write_lora
    from typer.testing import CliRunner

    from loradex.cli.app import app

    path = write_lora(tmp_path, "wan2.1-14b", "comfy-down-up", rank=1, limit=4)
    from loradex.families import FamilyNotSupported

    result = CliRunner().invoke(app, ["convert", str(path), "--to", "kohya", "-o", str(tmp_path / "out.safetensors")])
    # main() prints a FamilyNotSupported as its one-line message, exit 1
    assert isinstance(result.exception, FamilyNotSupported) and result.exception.exit_code == 1
    assert str(result.exception).startswith("convert for wan-14b is not supported yet")
    assert not (tmp_path / "out.safetensors").exists()
