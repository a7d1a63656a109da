"""cloneofsimo/lora "safeloras": ``unet:12:up`` / ``text_encoder:0:down`` keys.

The file does not name modules: index N is the N-th ``nn.Linear`` met while walking
``model.modules()`` and, inside every module whose class is listed in the header (``"unet":
'["CrossAttention", "Attention", "GEGLU"]'``), its named Linear children (see lora_diffusion
``_find_modules`` / ``save_safeloras_with_embeds``). Ranks sit in ``unet:N:rank``; the scale is
1 (``LoraInjectedLinear`` multiplies by 1.0). Embeddings trained with the LoRA are stored as
plain tensors whose header metadata value is ``"<embed>"``; they are split out as embeddings.

The walk order depends on the diffusers version the file was trained with: ``BasicTransformerBlock``
registered ``ff`` before ``attn2`` in the diffusers of lora_diffusion's time and after it later.
The reader picks the order the tensor shapes agree with (GEGLU's up projection is 8× its input
width, no attention projection is), and refuses if neither does.
"""

from __future__ import annotations

import json
import re

from loradex.families import assumed
from loradex.merge.conventions.lora_canonical import (
    CanonicalLora,
    LoraConvention,
    CanonicalModule,
    ReadContext,
    ReadResult,
    WriteContext,
    register_convention,
)
from loradex.merge.conventions.module_layouts import ATTENTION_LINEARS, UNetLayout, unet_naming
from loradex.registry.errors import UnsupportedFormat

EMBED_FLAG = "<embed>"
_KEY_RE = re.compile(r"^(?P<component>[a-z_0-9]+):(?P<index>\d+):(?P<part>up|down)$")
_SRC = "<state dict>"
_GEGLU = "ff.net.0.proj"
_ORDERS = {"ff-before-attn2": ("attn1", "ff", "attn2"), "attn2-before-ff": ("attn1", "attn2", "ff")}
_DEFAULT_TARGETS = {"unet": ["CrossAttention", "Attention", "GEGLU"], "text_encoder": ["CLIPAttention"]}
_TARGETS_SCHEMA = {"type": ["array", "null"], "items": {"type": "string", "maxLength": 200}}


def _targets(metadata: dict[str, str], component: str) -> list[str] | None:
    """The module classes a safeloras file says it wrapped for ``component`` (header JSON, checked)."""
    from .lora_conventions import header_json

    return header_json(metadata.get(component, "null"), f"metadata {component}", _TARGETS_SCHEMA)


def _transformer_blocks(layout: UNetLayout) -> list[str]:
    """Transformer blocks in ``UNet2DConditionModel.modules()`` order: down, up, then mid
    (``up_blocks`` is registered before ``mid_block`` is assigned)."""
    blocks = []
    lpb = layout.layers_per_block
    for b, has in enumerate(layout.down_has_attention):
        if has:
            blocks += [f"down_blocks.{b}.attentions.{j}.transformer_blocks.{t}"
                       for j in range(lpb) for t in range(layout.transformer_layers[b])]
    for b, has in enumerate(layout.up_has_attention):
        if has:
            blocks += [f"up_blocks.{b}.attentions.{j}.transformer_blocks.{t}"
                       for j in range(lpb + 1) for t in range(layout.up_transformer_layers[b])]
    blocks += [f"mid_block.attentions.0.transformer_blocks.{t}" for t in range(layout.mid_transformer_layers)]
    return blocks


def unet_walk(layout: UNetLayout, targets: list[str], order: str) -> list[str]:
    with_geglu = "GEGLU" in targets
    paths = []
    for block in _transformer_blocks(layout):
        for part in _ORDERS[order]:
            if part == "ff":
                if with_geglu:
                    paths.append(f"{block}.{_GEGLU}")
            else:
                paths += [f"{block}.{part}.{lin}" for lin in ATTENTION_LINEARS]
    return paths


def text_encoder_walk(num_layers: int, targets: list[str]) -> list[str]:
    paths = []
    for i in range(num_layers):
        layer = f"text_model.encoder.layers.{i}"
        if "CLIPAttention" in targets:
            # CLIPAttention registers k_proj, v_proj, q_proj, out_proj in that order
            paths += [f"{layer}.self_attn.{p}" for p in ("k_proj", "v_proj", "q_proj", "out_proj")]
        if "CLIPMLP" in targets:
            paths += [f"{layer}.mlp.fc1", f"{layer}.mlp.fc2"]
    return paths


def _per_text_layer(targets: list[str]) -> int:
    return 4 * ("CLIPAttention" in targets) + 2 * ("CLIPMLP" in targets)


def _shapes_fit(paths: list[str], pairs: dict[int, dict[str, object]]) -> bool:
    for i, path in enumerate(paths):
        down, up = pairs[i]["down"], pairs[i]["up"]
        is_geglu = up.shape[0] == 8 * down.shape[1]
        if is_geglu != path.endswith(_GEGLU):
            return False
    return True


def _unet_layout(base: str | None) -> UNetLayout:
    naming = unet_naming(base or assumed.UNET_LORA)
    if naming is None or not naming.SAFELORAS_MODULE_ORDER:
        raise UnsupportedFormat(_SRC, f"safeloras module order is known for SD1/SD2 UNets, not {base}")
    return naming.UNET


@register_convention("safeloras")
class SafelorasConvention(LoraConvention):
    description = "cloneofsimo/lora: unet:N:up / text_encoder:N:down, ranks and targets in metadata"

    def recognizes(self, key, metadata):
        return _KEY_RE.match(key) is not None or metadata.get(key) == EMBED_FLAG

    def read(self, state_dict, ctx: ReadContext) -> ReadResult:
        lora = CanonicalLora(base=ctx.base)
        consumed: set[str] = set()
        by_component: dict[str, dict[int, dict[str, object]]] = {}
        keys_of: dict[tuple[str, int], list[str]] = {}
        for key, tensor in state_dict.items():
            if ctx.metadata.get(key) == EMBED_FLAG:
                lora.embeddings[key] = tensor
                consumed.add(key)
                continue
            m = _KEY_RE.match(key)
            if m:
                idx = int(m["index"])
                by_component.setdefault(m["component"], {}).setdefault(idx, {})[m["part"]] = tensor
                keys_of.setdefault((m["component"], idx), []).append(key)
        for component, pairs in by_component.items():
            complete = {i: p for i, p in pairs.items() if "up" in p and "down" in p}
            if sorted(complete) != list(range(len(complete))):
                continue  # gaps: the walk cannot be aligned; leave unconsumed
            targets = _targets(ctx.metadata, component) or _DEFAULT_TARGETS.get(component, [])
            paths = self._walk(component, targets, complete, ctx.base)
            if paths is None:
                continue
            for i, path in enumerate(paths):
                lora.add(component, path, CanonicalModule(complete[i]["down"], complete[i]["up"], None))
                consumed.update(keys_of[(component, i)])
        return ReadResult(lora, consumed)

    @staticmethod
    def _walk(component: str, targets: list[str], pairs: dict[int, dict[str, object]], base: str | None):
        n = len(pairs)
        if component == "text_encoder":
            per = _per_text_layer(targets)
            if per == 0 or n % per:
                return None
            return text_encoder_walk(n // per, targets)
        if component == "unet":
            layout = _unet_layout(base)
            for order in _ORDERS:
                paths = unet_walk(layout, targets, order)
                if len(paths) == n and _shapes_fit(paths, pairs):
                    return paths
        return None

    def write(self, lora: CanonicalLora, ctx: WriteContext):
        out, metadata = {}, {}
        for component, mods in lora.components.items():
            scaled = [p for p, m in mods.items() if m.scale != 1.0]
            if scaled:
                raise UnsupportedFormat(_SRC, f"safeloras store no alpha (scale 1); {component}.{scaled[0]} "
                                              f"has scale {mods[scaled[0]].scale:g}")
            targets, paths = self._targets_for(component, set(mods), lora.base)
            metadata[component] = json.dumps(targets)
            for i, path in enumerate(paths):
                mod = mods[path]
                out[f"{component}:{i}:up"] = mod.up
                out[f"{component}:{i}:down"] = mod.down
                metadata[f"{component}:{i}:rank"] = str(mod.rank)
        for token, tensor in lora.embeddings.items():
            out[token] = tensor
            metadata[token] = EMBED_FLAG
        return out, metadata

    @staticmethod
    def _targets_for(component: str, present: set[str], base: str | None) -> tuple[list[str], list[str]]:
        if component == "unet":
            layout = _unet_layout(base)
            candidates = [["CrossAttention", "Attention", "GEGLU"], ["CrossAttention", "Attention"]]
            walks = [(t, unet_walk(layout, t, "ff-before-attn2")) for t in candidates]
        elif component == "text_encoder":
            layers = 1 + max((int(p.split(".")[3]) for p in present), default=-1)
            candidates = [["CLIPAttention"], ["CLIPAttention", "CLIPMLP"]]
            walks = [(t, text_encoder_walk(layers, t)) for t in candidates]
        else:
            walks = []
        for targets, paths in walks:
            if set(paths) == present:
                return targets, paths
        raise UnsupportedFormat(_SRC, f"safeloras can only hold whole attention/GEGLU module sets; "
                                      f"{component} has {len(present)} modules that match none")
