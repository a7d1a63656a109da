"""What probers see (a header view) and what they answer (verdicts with facts), plus their registry.

A prober reads a :class:`HeaderView` — tensor name → (dtype, shape), ``__metadata__``, sidecar
configs, a reader for a few scalars (kohya ``.alpha``) — never tensor data, and answers a
:class:`Verdict`: mine with :class:`ProbeFacts`, or not mine because …. A safetensors header
and a state dict loaded from a pickle become the same view, so one set of probers serves both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

# Module types whose weights are 3×3 convolutions in SD UNets (for LyCORIS factors that
# flatten the kernel, the name is the only hint).
CONV3_TYPES = frozenset({"conv1", "conv2", "conv", "conv_in", "conv_out", "op", "in_layers_2", "out_layers_3",
                         "downsamplers_0_conv", "upsamplers_0_conv"})


@dataclass(frozen=True)
class TensorMeta:
    dtype: str  # safetensors spelling: F32, F16, BF16...
    shape: tuple[int, ...]


@dataclass
class HeaderView:
    tensors: dict[str, TensorMeta]
    metadata: dict[str, str] = field(default_factory=dict)
    container: str = "safetensors"  # or torch-zip / torch-legacy / pickle
    source: str | None = None  # file path, when there is one
    stem: str | None = None  # file name without extension (A1111 uses it as the embedding token)
    sidecars: dict[str, dict] = field(default_factory=dict)  # "adapter_config" → parsed JSON
    extras: dict[str, object] = field(default_factory=dict)  # non-tensor leaves of a pickled dict
    scalar_reader: Callable[[list[str]], dict[str, float]] | None = None

    def scalars(self, names) -> dict[str, float]:
        names = [n for n in names if n in self.tensors]
        if not names or self.scalar_reader is None:
            return {}
        return self.scalar_reader(names)


@dataclass(frozen=True)
class Module:
    """One adapted layer, as far as the header tells."""

    component: str  # unet, text_encoder, text_encoder_2, text_encoder_3, transformer, model
    name: str  # the module path as the file spells it
    type: str | None  # to_q, to_k, ff_net_0_proj, fc1, conv1 ... (None when the file does not say)
    in_features: int | None
    out_features: int | None
    rank: int | None
    kernel: tuple[int, ...] = ()  # () for linear layers

    @property
    def conv(self) -> bool:
        """A spatial (k×k, k > 1) convolution LoRA, not a 1×1 one."""
        if self.kernel:
            return any(k > 1 for k in self.kernel)
        return self.type in CONV3_TYPES and self.component == "unet"


@dataclass
class ProbeFacts:
    kind: str  # lora | lycoris | embedding | checkpoint
    format: str
    algorithm: str | None = None
    modules: list[Module] = field(default_factory=list)
    alphas: list[float] = field(default_factory=list)  # explicit alphas only (absent = alpha is rank)
    explained: int = 0  # tensors this prober accounts for
    unexplained: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    n_vectors: int = 0
    embedding_widths: dict[str, int] = field(default_factory=dict)  # clip_l → 768 ...
    base_evidence: list[tuple[str, str, int]] = field(default_factory=list)  # (base, why, strength)
    components: list[str] = field(default_factory=list)  # extra components (embeddings, checkpoints)
    target_modules: list[str] = field(default_factory=list)  # when the file names them (safeloras, peft)
    dora: bool = False
    notes: list[str] = field(default_factory=list)
    training: dict = field(default_factory=dict)  # format-specific facts (peft config, A1111 .pt fields)
    base_from_config: tuple[str, str] | None = None  # (family, source) from a sidecar config
    problems: list[str] = field(default_factory=list)  # malformed modules (tensor_rules): refused
    convention: str | None = None  # the writers' key spelling when it says more than format (onetrainer …)


@dataclass(frozen=True)
class Verdict:
    prober: str
    matched: bool
    reason: str
    facts: ProbeFacts | None = None

    def to_dict(self) -> dict:
        return {"prober": self.prober, "matched": self.matched, "reason": self.reason,
                "format": self.facts.format if self.facts else None,
                "explained": self.facts.explained if self.facts else 0}


def no(prober: str, reason: str) -> Verdict:
    return Verdict(prober, False, reason)


Prober = Callable[[HeaderView], Verdict]
PROBERS: dict[str, Prober] = {}


def register_prober(name: str):
    """Register ``fn(view) -> Verdict`` under ``name``. Registration order breaks ties."""

    def deco(fn: Prober) -> Prober:
        if name in PROBERS:
            raise ValueError(f"prober {name!r} registered twice")
        PROBERS[name] = fn
        fn.prober_name = name
        return fn

    return deco


# --- module type names ------------------------------------------------------------------------
# Longest first: a kohya name ends with "_" + one of these (dots become "_" for dotted names).
_TYPE_TAILS = sorted({
    "ff_net_0_proj", "ff_net_2", "ff_context_net_0_proj", "ff_context_net_2", "to_out_0", "to_add_out",
    "add_q_proj", "add_k_proj", "add_v_proj", "to_q", "to_k", "to_v", "q_proj", "k_proj", "v_proj",
    "out_proj", "proj_in", "proj_out", "proj_mlp", "fc1", "fc2", "conv_shortcut", "conv1", "conv2", "conv_in",
    "conv_out", "time_emb_proj", "skip_connection", "in_layers_2", "out_layers_3", "emb_layers_1",
    "downsamplers_0_conv", "upsamplers_0_conv", "op", "conv", "img_attn_qkv", "img_attn_proj", "txt_attn_qkv",
    "txt_attn_proj", "img_mlp_0", "img_mlp_2", "txt_mlp_0", "txt_mlp_2", "img_mod_lin", "txt_mod_lin",
    "linear1", "linear2", "modulation_lin", "norm1_linear", "norm1_context_linear", "norm_linear",
    "SelfAttention_q", "SelfAttention_k", "SelfAttention_v", "SelfAttention_o", "DenseReluDense_wi_0",
    "DenseReluDense_wi_1", "DenseReluDense_wo", "qkv", "proj", "mlp_0", "mlp_2", "linear",
}, key=len, reverse=True)


def module_type(name: str) -> str | None:
    flat = name.replace(".", "_")
    for tail in _TYPE_TAILS:
        if flat == tail or flat.endswith("_" + tail):
            return tail
    parts = [p for p in flat.split("_") if p and not p.isdigit()]
    return parts[-1] if parts else None
