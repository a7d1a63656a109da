"""Flux.1 by shape and name (dev, schnell, Kontext, Krea: all key-identical).

BFL names (kohya ``lora_unet_``, ComfyUI ``diffusion_model.``, XLabs): 19 ``double_blocks``
(``img_attn.qkv`` 3 × 3072 rows, ``img_mlp.0`` 4 × 3072, ``img_mod.lin`` 6 × 3072) and 38
``single_blocks`` (``linear1`` = q, k, v and the 4× MLP: 7 × 3072 rows; ``linear2`` reads 5 × 3072;
``modulation.lin`` 3 × 3072). diffusers names: ``transformer_blocks`` + ``single_transformer_blocks``
(``proj_mlp`` 4 × 3072, ``norm1.linear`` 6 × 3072). Look-alikes, told apart by the rules of their
own families: HunyuanVideo (same diffusers names, 20 + 40 blocks, ``img_mlp.fc1``, token refiner),
Chroma (no modulation layers, a ``distilled_guidance_layer``), Flux.2 (SwiGLU MLPs, shared
``*_stream_modulation``), Qwen-Image (60 ``transformer_blocks``, no single blocks).
"""

from __future__ import annotations

from ..identity_rules import MARKER, NAMING, STRONG, any_name, in_widths, matching, max_index, out_widths, width_of

WIDTH = 3072
DOUBLE, SINGLE = 19, 38
EMBEDDING_WIDTHS = {4096: "T5-XXL embedding width 4096"}
CHECKPOINT_MARKERS = [(r"^(model\.diffusion_model\.)?double_blocks\.\d+\.img_mod\.lin\.",
                       "Flux.1 double blocks with per-block modulation"),
                      (r"^single_transformer_blocks\.\d+\.norm\.linear\.", "Flux.1 single transformer blocks")]
# kohya sd-scripts name Flux's T5 ``lora_te3_`` (SD3's third encoder); in diffusers it is text_encoder_2.
COMPONENT_ALIASES = {"text_encoder_3": "text_encoder_2"}
TRANSFORMER_ROOTS = ("double_blocks", "single_blocks", "transformer_blocks", "single_transformer_blocks")

_DOUBLE = r"double_blocks_(\d+)_"
_SINGLE = r"single_blocks_(\d+)_"
_D_DOUBLE = r"transformer_blocks_(\d+)_"
_D_SINGLE = r"single_transformer_blocks_(\d+)_"
# Per-block modulation in every spelling (BFL img_mod.lin / modulation.lin, diffusers norm1.linear …).
MODULATION = r"(_mod_lin|modulation_lin|norm1(_context)?_linear|single_transformer_blocks_\d+_norm_linear)"
# Names Flux.1 never has: each belongs to a look-alike's own rule.
_NOT_FLUX1 = (r"distilled_guidance_layer|token_refiner|img_mlp_fc|txt_mlp_fc|_mod_linear|modulation_linear|"
              r"stream_modulation|to_qkv_mlp_proj|linear_in|linear_out|img_mlp_net|txt_mlp_net|img_mod_1|txt_mod_1")


def _width(modules) -> int | None:
    return (width_of(modules, _DOUBLE + r"(img|txt)_attn_qkv") or width_of(modules, _SINGLE + r"linear1")
            or width_of(modules, r"double_blocks_\d+_processor_qkv_lora")
            or width_of(modules, _D_DOUBLE + r"attn_(to_q|to_k|to_v|add_q_proj)")
            or width_of(modules, _D_SINGLE + r"attn_to_q")
            or _out_width(modules, r"(" + _SINGLE + r"linear2|" + _D_SINGLE + r"proj_out)$"))


def _out_width(modules, pattern: str) -> int | None:
    widths = out_widths(matching(modules, pattern))
    return widths.pop() if len(widths) == 1 else None


def evidence(modules) -> list[tuple[str, str, int]]:
    native = matching(modules, _DOUBLE) + matching(modules, _SINGLE)
    diffusers = matching(modules, _D_DOUBLE) + matching(modules, _D_SINGLE)
    if not native and not diffusers or any_name(modules, _NOT_FLUX1):
        return []
    w = _width(modules)
    ev: list[tuple[str, str, int]] = []
    if native or matching(modules, _D_SINGLE):
        ev.append(("flux", "Flux double/single block names", NAMING))
    if w != WIDTH:
        return ev
    too_many = ((max_index(modules, _DOUBLE) or 0) >= DOUBLE or (max_index(modules, _SINGLE) or 0) >= SINGLE
                or (max_index(modules, _D_DOUBLE) or 0) >= DOUBLE or (max_index(modules, _D_SINGLE) or 0) >= SINGLE)
    if too_many:
        return ev  # more blocks than Flux.1 has (HunyuanVideo has 20 + 40)
    mlp = out_widths(matching(modules, _DOUBLE + r"(img|txt)_mlp_0") + matching(modules, _D_SINGLE + "proj_mlp")
                     + matching(modules, _D_DOUBLE + r"ff(_context)?_net_0_proj"))
    linear1 = out_widths(matching(modules, _SINGLE + "linear1"))
    linear2 = in_widths(matching(modules, r"(" + _SINGLE + r"linear2|" + _D_SINGLE + r"proj_out)$"))
    mod = out_widths(matching(modules, _DOUBLE + r"(img|txt)_mod_lin")
                     + matching(modules, _D_DOUBLE + r"norm1(_context)?_linear"))
    if 4 * WIDTH in mlp or 7 * WIDTH in linear1 or 5 * WIDTH in linear2 or 6 * WIDTH in mod:
        ev.append(("flux", "3072-wide blocks with Flux.1's MLP / modulation shapes", MARKER))
    else:
        ev.append(("flux", "3072-wide double/single-stream attention (Flux.1 shapes)", STRONG))
    return ev


def notes(modules) -> list[str]:
    out = ["Flux.1 dev, schnell, Kontext and Krea files are key-identical: the variant comes from metadata"]
    if not any_name(modules, MODULATION):
        out.append("no modulation layers trained: a Chroma file would have the same keys (metadata decides)")
    if not matching(modules, r"(double|single)_blocks_"):
        out.append("diffusers names: a HunyuanVideo file adapting only Flux.1's block range (19 + 38) would have "
                   "the same keys")
    if not any_name(modules, r"(mlp|linear1|linear2|proj_mlp|proj_out|ff)"):
        out.append("attention layers only: HunyuanVideo and Flux.2 Klein 4B have the same attention shapes "
                   "in their first blocks")
    return out
