"""SD3 / SD3.5 (MMDiT): ``joint_blocks.N.{x_block,context_block}`` in the original (kohya
``lora_unet_joint_blocks_…``, ComfyUI ``diffusion_model.joint_blocks…``) and
``transformer_blocks.N.attn.{to_q,add_q_proj…}`` in diffusers, 64 × heads wide: SD3 medium 1536
(24 blocks), SD3.5 medium 1536 (24 blocks, dual attention ``attn2`` in blocks 0-12), SD3.5 large
2432 (38 blocks). Three text encoders: CLIP-L, CLIP-G (1280) and T5-XXL."""

from __future__ import annotations

from ..identity_rules import MARKER, NAMING, STRONG, any_name, in_widths, matching, max_index, width_of

WIDTHS = {1536: "medium", 2432: "large"}
TRANSFORMER_ROOTS = ("joint_blocks", "x_embedder", "context_embedder", "pos_embed")
CHECKPOINT_MARKERS = [(r"^(model\.diffusion_model\.)?joint_blocks\.\d+\.", "MMDiT joint_blocks")]

_NATIVE = r"joint_blocks_(\d+)_(x_block|context_block)_"
_DIFFUSERS = r"transformer_blocks_(\d+)_(attn_(to_q|to_k|to_v|to_out_0|add_[qkv]_proj|to_add_out)|attn2_|norm1|ff)"


def _width(modules) -> int | None:
    return width_of(modules, _NATIVE + r"attn_qkv") or width_of(modules, r"transformer_blocks_\d+_attn2?_to_[qkv]")


def evidence(modules) -> list[tuple[str, str, int]]:
    ev = []
    native = matching(modules, _NATIVE)
    diffusers = [m for m in matching(modules, _DIFFUSERS) if m.component in ("transformer", "model")]
    w = _width(modules)
    if native:
        ev.append(("sd3", "MMDiT joint_blocks names", NAMING))
    if (native or diffusers) and w in WIDTHS and not any_name(modules, r"^(single_transformer_blocks|.*img_mlp)"):
        ev.append(("sd3", f"{w}-wide MMDiT joint blocks", MARKER))
    te2 = in_widths([m for m in modules if m.component == "text_encoder_2"])
    if 1280 in te2 and any(m.component == "text_encoder_3" for m in modules):
        ev.append(("sd3", "CLIP-G and a third (T5) text encoder", STRONG))
    return ev


def notes(modules) -> list[str]:
    w = _width(modules)
    blocks = max(max_index(modules, _NATIVE) or -1, max_index(modules, r"transformer_blocks_(\d+)_") or -1) + 1
    dual = any_name(modules, r"(joint_blocks_\d+_x_block_attn2_|transformer_blocks_\d+_attn2_)")
    if w == 2432:
        return [f"size: SD3.5 large (2432 wide, 38 blocks; {blocks} adapted)"]
    if w == 1536 and dual:
        return ["size: SD3.5 medium (1536 wide, dual attention attn2 in blocks 0-12)"]
    if w == 1536:
        return ["size: SD3 medium or SD3.5 medium (1536 wide, 24 blocks; no attn2 trained, so the keys cannot tell)"]
    return []
