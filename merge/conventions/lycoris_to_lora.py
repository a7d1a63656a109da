"""LyCORIS file (LoHa, LoKr, LoCon/Tucker, full) → plain kohya LoRA of a given rank, by SVD.

Each LyCORIS module's ΔW (``lycoris_math.lycoris_delta``) is replaced by its best rank-R
approximation (Eckart–Young: the truncated SVD), written as ``up = U·√S``, ``down = √S·Vh`` with
α = R, so the scale is 1; the per-module relative error ‖ΔW − ΔW_R‖_F / ‖ΔW‖_F is reported.
Modules that already are plain LoRA (``lora_down``/``lora_up``/``alpha`` only) are copied as
they are, tensors and dtypes untouched.

The SVD is exact in every case, but built from the factors where their structure allows, so a
large layer never needs an m×n SVD:
- LoKr: ΔW = γ·kron(W1, W2); the singular triplets of a Kronecker product are the products of
  the factors' triplets (σ = σ1_i·σ2_j, u = u1_i ⊗ u2_j, v = v1_i ⊗ v2_j).
- LoHa: (A1·B1) ⊙ (A2·B2) = Σ_pq (a1_p ⊙ a2_q)(b1_p ⊙ b2_q)ᵀ, a product of [out, r1·r2] and
  [r1·r2, in] matrices → ``lowrank_svd.factored_svd``.
- LoCon with a Tucker core: up · (core ×₂ down) is already a rank-r product → ``factored_svd``.
- everything else (LoHa Tucker, full ``diff``): the dense ΔW → ``lycoris_math.to_lora_via_svd``.

LyCORIS stores a non-Tucker conv factor flattened ([r, in·k·k]), so its ΔW comes out 2-D; a
kohya conv LoRA needs the 4-D kernel, which is read from the module's name (UNet ``conv1``,
``conv2``, ``conv``, ``conv_in``, ``conv_out`` are 3×3 in every SD UNet; ``conv_shortcut`` is 1×1
in every one, ``proj_in`` / ``proj_out`` of the attention blocks in SD 1.x — SD 2.x and SDXL made
them Linear). A 1×1 conv keeps 4-D factors, down [r, in, 1, 1] and up [out, r, 1, 1]: diffusers and
sd-scripts build a Conv2d LoRA layer there and refuse the whole file for a 2-D one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..math.lora_module import DOWN_SUFFIX, PLAIN_LORA_SUFFIXES, UP_SUFFIX, LoraModule, lora_from_factors, matrix_shape
from ..math.lowrank_svd import ThinSVD, dense_svd, factored_svd, select_rank, split_factors, tail_norm
from ..math.lycoris_math import NOT_ADDITIVE_KEYS, _matmul_kernel, _normalise, _scale, _tucker, lycoris_delta, lycoris_kind, to_lora_via_svd
from ..math.torch_threads import single_torch_thread

if TYPE_CHECKING:
    import torch

Progress = Callable[[int, int, str], None]
RECIPE_OP = "lycoris-to-lora"

# Suffixes (without ".weight") each kind's expansion reads; anything else in a group would be lost.
KIND_SUFFIXES = {
    "loha": {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2", "alpha"},
    "lokr": {"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2", "alpha"},
    "locon": {"lora_down", "lora_up", "lora_mid", "alpha"},
    "full": {"diff", "alpha"},
}
# Module leaves that are 3×3 convolutions in SD1/SD2/SDXL UNets (diffusers naming).
CONV3X3_LEAVES = {"conv1": (3, 3), "conv2": (3, 3), "conv": (3, 3), "conv_in": (3, 3), "conv_out": (3, 3)}
# Source metadata that described the LyCORIS network or the old bytes.
_STALE_PREFIXES = ("sshs_", "modelspec.hash", "ss_network_", "loradex.recipe")


def _conv1x1_leaves(base: str | None) -> frozenset[str]:
    """Module leaves that are 1×1 convolutions, as the UNet family declares them (SD 1.x:
    conv_shortcut, proj_in, proj_out; 2.x / XL: conv_shortcut); a base of no UNet family: the
    leaves every one shares."""
    from .module_layouts import unet_naming, unet_namings

    naming = unet_naming(base)
    if naming is not None:
        return frozenset(naming.CONV1X1_LEAVES)
    return frozenset.intersection(*(frozenset(n.CONV1X1_LEAVES) for _, n in unet_namings()))


@dataclass
class ModuleResult:
    kind: str  # "lora" (copied), "loha", "lokr", "locon", "full"
    rank: int
    relative_error: float  # 0 for copied modules
    method: str  # "copied", "kron-svd", "factored-svd", "dense-svd"
    alpha: float  # as written: the copied module's own, the new rank for converted ones

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class LycorisConversionReport:
    source: str
    rank: int
    dtype: str
    modules: dict[str, ModuleResult] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def converted(self) -> dict[str, ModuleResult]:
        return {n: m for n, m in self.modules.items() if m.kind != "lora"}

    def max_relative_error(self) -> float:
        return max((m.relative_error for m in self.converted().values()), default=0.0)

    def mean_relative_error(self) -> float:
        errs = [m.relative_error for m in self.converted().values()]
        return sum(errs) / len(errs) if errs else 0.0

    def to_dict(self) -> dict[str, Any]:
        conv = self.converted()
        return {"source": self.source, "rank": self.rank, "dtype": self.dtype,
                "converted": len(conv), "copied": len(self.modules) - len(conv),
                "kinds": sorted({m.kind for m in conv.values()}),
                "max_relative_error": self.max_relative_error(), "mean_relative_error": self.mean_relative_error(),
                "dropped": list(self.dropped), "files": list(self.files),
                "modules": {n: m.to_dict() for n, m in sorted(self.modules.items())}}


# --- exact thin SVDs from the factors -------------------------------------------------------------
# kind → fn(normalised tensors, alpha, rank) → (ThinSVD of the 2-D ΔW, ΔW shape) or None (use the
# dense path). S holds every singular value (for the error); U / Vh at least the leading ``rank``.
STRUCTURED_SVD: dict[str, Callable[[dict, float | None, int], tuple[ThinSVD, tuple[int, ...]] | None]] = {}


def register_structured_svd(kind: str):
    def decorate(fn):
        STRUCTURED_SVD[kind] = fn
        return fn

    return decorate


def _signed(svd: ThinSVD, gamma: float) -> ThinSVD:
    """SVD of γ·M from that of M (a negative γ flips the left vectors)."""
    sign = -1.0 if gamma < 0 else 1.0
    return ThinSVD(U=svd.U * sign, S=svd.S * abs(gamma), Vh=svd.Vh)


SMALL_FACTOR = 1 << 20  # elements: below this a factor's product is built and SVD'd directly (the factored SVD's overhead dominates)


def _factor_svd(a, b) -> ThinSVD:
    """Thin SVD of the factor a @ b ([m, r] @ [r, n])."""
    if a.shape[0] * b.shape[1] <= SMALL_FACTOR:
        with single_torch_thread():
            return dense_svd(a @ b)
    return factored_svd(a, b)


@register_structured_svd("lokr")
def _lokr_svd(t: dict, alpha: float | None, rank_wanted: int):
    import torch

    rank = None
    if "lokr_w1" in t:
        w1 = t["lokr_w1"]
        s1 = dense_svd(w1) if w1.dim() == 2 else None
    else:
        rank = int(t["lokr_w1_b"].shape[0])
        w1 = None
        s1 = _factor_svd(t["lokr_w1_a"], t["lokr_w1_b"])
    if s1 is None:
        return None  # a 4-D w1: not a plain Kronecker product of matrices
    if "lokr_w2" in t:
        w2 = t["lokr_w2"]
        s2 = dense_svd(w2.reshape(w2.shape[0], -1))
    else:
        if rank is None:
            rank = int(t["lokr_w2_b"].shape[0])
        if "lokr_t2" in t:
            w2 = _tucker(t["lokr_t2"], t["lokr_w2_a"], t["lokr_w2_b"])
            s2 = dense_svd(w2.reshape(w2.shape[0], -1))
        else:
            w2 = _matmul_kernel(t["lokr_w2_a"], t["lokr_w2_b"])
            s2 = _factor_svd(t["lokr_w2_a"], t["lokr_w2_b"].reshape(rank, -1))
    gamma = _scale(alpha, rank) if rank is not None else 1.0  # as lycoris_math._lokr
    o1 = int(s1.U.shape[0])
    i1 = int(s1.Vh.shape[1])
    o2, c2 = int(s2.U.shape[0]), int(s2.Vh.shape[1])
    products = torch.outer(s1.S.double(), s2.S.double()).reshape(-1)
    order = torch.sort(products, descending=True, stable=True).indices
    p2 = int(s2.S.shape[0])
    top = order[: max(1, rank_wanted)]  # only the vectors that will be kept are built
    i_idx, j_idx = top // p2, top % p2
    u = torch.einsum("ak,bk->abk", s1.U[:, i_idx], s2.U[:, j_idx]).reshape(o1 * o2, -1)
    vh = torch.einsum("ka,kb->kab", s1.Vh[i_idx], s2.Vh[j_idx]).reshape(-1, i1 * c2)
    svd = ThinSVD(U=u, S=products[order].to(torch.float32), Vh=vh)
    shape = (o1 * o2, i1 * int(w2.shape[1]), *w2.shape[2:]) if w2.dim() == 4 else (o1 * o2, i1 * c2)
    return _signed(svd, gamma), tuple(int(s) for s in shape)


@register_structured_svd("loha")
def _loha_svd(t: dict, alpha: float | None, rank_wanted: int):
    import torch

    if "hada_t1" in t or "hada_t2" in t:
        return None  # Tucker LoHa: the Hadamard of two 4-D kernels has no handy factor form
    a1, b1, a2, b2 = t["hada_w1_a"], t["hada_w1_b"], t["hada_w2_a"], t["hada_w2_b"]
    r1, r2 = int(b1.shape[0]), int(b2.shape[0])
    out = int(a1.shape[0])
    up = torch.einsum("op,oq->opq", a1.reshape(out, r1), a2.reshape(out, r2)).reshape(out, r1 * r2)
    down = torch.einsum("pi,qi->pqi", b1.reshape(r1, -1), b2.reshape(r2, -1)).reshape(r1 * r2, -1)
    shape = (out, *b1.shape[1:])
    return _signed(factored_svd(up, down), _scale(alpha, r1)), tuple(int(s) for s in shape)


@register_structured_svd("locon")
def _locon_svd(t: dict, alpha: float | None, rank_wanted: int):
    import torch

    down, up = t["lora_down"], t["lora_up"]
    r = int(down.shape[0])
    up2d = up.reshape(up.shape[0], r)
    if "lora_mid" in t:
        # ΔW[i, j, k, l] = Σ_nm mid[n, m, k, l]·up[i, n]·down[m, j]: fold the core into down
        folded = torch.einsum("n m k l, m j -> n j k l", t["lora_mid"], down.reshape(r, -1))
        shape = (int(up.shape[0]), *folded.shape[1:])
        down2d = folded.reshape(r, -1)
    else:
        shape = (int(up.shape[0]), *down.shape[1:])
        down2d = down.reshape(r, -1)
    return _signed(factored_svd(up2d, down2d), _scale(alpha, r)), tuple(int(s) for s in shape)


def _kohya_weight_shape(name: str, shape: tuple[int, ...], base: str | None) -> tuple[int, ...]:
    """The 4-D kernel shape of a 3×3 or 1×1 conv module whose ΔW came out flattened; else ``shape``."""
    from .kohya_names import resolve_kohya_module, split_kohya_name

    if len(shape) != 2:
        return shape
    split = split_kohya_name(name)
    if split is None or split[0] != "unet":
        return shape
    try:
        leaf = resolve_kohya_module(split[0], split[1], base).path.rsplit(".", 1)[-1]
    except (KeyError, ValueError):
        return shape
    if leaf in _conv1x1_leaves(base):
        return (shape[0], shape[1], 1, 1)
    kernel = CONV3X3_LEAVES.get(leaf)
    if kernel is None or shape[1] % (kernel[0] * kernel[1]):
        return shape
    return (shape[0], shape[1] // (kernel[0] * kernel[1]), *kernel)


def lycoris_module_to_lora(name: str, tensors: dict, rank: int, *, base: str | None = None,
                           dynamic: tuple[str, float] | None = None) -> tuple[LoraModule, ModuleResult]:
    """One LyCORIS module group (suffix → tensor) → (rank-≤R LoraModule with α = its rank, result).
    ``dynamic``: a ``lowrank_svd.select_rank`` rule choosing each module's rank, capped by ``rank``."""
    from loradex.registry.errors import UnsupportedFormat

    kind = lycoris_kind(tensors)
    t = _normalise(tensors)
    for key, why in NOT_ADDITIVE_KEYS.items():
        if key in t:  # DoRA / (IA)³: no LoRA of any rank reproduces them
            raise UnsupportedFormat(name, f"{key}: not additive ({why}); it has no plain-LoRA form")
    alpha = float(t["alpha"].float().item()) if "alpha" in t else None
    structured = STRUCTURED_SVD.get(kind)
    found = structured(t, alpha, rank) if structured else None
    if found is None:
        delta = lycoris_delta(tensors, name=name)
        delta = delta.reshape(_kohya_weight_shape(name, tuple(int(s) for s in delta.shape), base))
        module, rel = to_lora_via_svd(delta, rank, dynamic)
        return module, ModuleResult(kind, module.rank, rel, "dense-svd", float(module.rank))
    svd, shape = found
    shape = _kohya_weight_shape(name, shape, base)
    assert matrix_shape(shape) == (svd.U.shape[0], svd.Vh.shape[1]), (name, shape)
    k = select_rank(svd.S, rank, dynamic)
    up, down = split_factors(ThinSVD(svd.U[:, :k], svd.S[:k], svd.Vh[:k]), k)
    energy = float(svd.S.double().pow(2).sum())
    rel = tail_norm(svd.S, k) / energy**0.5 if energy > 0 else 0.0
    method = "kron-svd" if kind == "lokr" else "factored-svd"
    return lora_from_factors(up, down, shape, alpha=float(k)), ModuleResult(kind, k, rel, method, float(k))


# --- files ------------------------------------------------------------------------------------------
class _Shape:
    def __init__(self, shape):
        self.shape = tuple(shape)


def _header_base(fh) -> str | None:
    """The base family from the open file's names and tensor shapes (``convert.detect_base``)."""
    from .convert import detect_base

    return detect_base({key: _Shape(fh.get_slice(key).get_shape()) for key in fh.keys()})


def _carried_metadata(metadata: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in metadata.items() if not k.startswith(_STALE_PREFIXES)}


def _network_value(values: set) -> str:
    return f"{values.pop():g}" if len(values) == 1 else "Dynamic"


def lycoris_to_lora(src, dest, rank: int, *, dtype: str = "fp16", base: str | None = None,
                    allow_partial: bool = False, progress: Progress | None = None,
                    dynamic: tuple[str, float] | None = None) -> LycorisConversionReport:
    """Convert the kohya-named LyCORIS ``.safetensors`` file ``src`` to a plain kohya LoRA at ``dest``.

    ``rank``: the rank of each converted module (capped by the module's own size), or with
    ``dynamic`` (a ``lowrank_svd.select_rank`` rule such as ``("sv_fro", p)``) the cap of the
    rank that rule picks per module; ``dtype``:
    fp16 / bf16 / fp32 for the new factors (copied plain-LoRA modules keep theirs). Keys no
    expansion reads (bias diffs, bundled embeddings…) raise CoverageError unless ``allow_partial``.
    """
    import torch
    from safetensors import safe_open

    from loradex.registry.errors import CoverageError, UnsupportedFormat, UsageError
    from loradex.registry.files.safetensors_writer import save_safetensors

    from .convert import detect_base
    from .kohya_names import split_kohya_name
    from ..math.lora_module import kohya_state_dict_from_modules
    from .modelspec import HASH_KEY, modelspec_metadata, source_title, source_triggers
    from .encoding import canonical_json, torch_dtype

    src, dest = Path(src), Path(dest)
    if rank is None or int(rank) < 1:
        raise UsageError("converting LyCORIS to LoRA needs a rank ≥ 1", hint="pass --rank R, e.g. --rank 16")
    rank = int(rank)
    out_dtype = torch_dtype(dtype)
    if src.suffix != ".safetensors":
        raise UnsupportedFormat(src, "only .safetensors LyCORIS files are converted here")
    report = LycorisConversionReport(source=str(src), rank=rank, dtype=dtype)
    with safe_open(str(src), framework="pt") as fh:
        metadata = dict(fh.metadata() or {})
        groups: dict[str, dict[str, str]] = {}
        for key in fh.keys():
            module, _, suffix = key.partition(".")
            if not suffix or split_kohya_name(module) is None:
                report.dropped.append(key)
                continue
            groups.setdefault(module, {})[suffix] = key
        base = base or _header_base(fh)  # which family decides which modules are 1×1 convs
        out: dict[str, "torch.Tensor"] = {}
        converted: dict[str, LoraModule] = {}
        for done, (name, keys) in enumerate(sorted(groups.items())):
            if progress:
                progress(done, len(groups), name)
            suffixes = set(keys)
            if suffixes <= PLAIN_LORA_SUFFIXES and {DOWN_SUFFIX, UP_SUFFIX} <= suffixes:
                for key in keys.values():  # a plain LoRA module: the very same tensors
                    out[key] = fh.get_tensor(key)
                down = out[keys[DOWN_SUFFIX]]
                alpha = out.get(keys.get("alpha", ""))
                alpha = float(alpha.float().item()) if alpha is not None else 0.0
                report.modules[name] = ModuleResult("lora", int(down.shape[0]), 0.0, "copied",
                                                    alpha or float(down.shape[0]))
                continue
            tensors = {suffix: fh.get_tensor(key) for suffix, key in keys.items()}
            kind = lycoris_kind(tensors)
            unread = sorted(keys[s] for s in suffixes
                            if (s[: -len(".weight")] if s.endswith(".weight") else s) not in KIND_SUFFIXES[kind])
            report.dropped += unread
            module, result = lycoris_module_to_lora(name, tensors, rank, base=base, dynamic=dynamic)
            converted[name] = module
            report.modules[name] = result
        if progress:
            progress(len(groups), len(groups), "written")
    if report.dropped and not allow_partial:
        raise CoverageError(f"converting {src.name} to LoRA", report.dropped,
                            hint="these tensors have no LoRA equivalent; pass --allow-partial to convert the rest")
    if not report.modules:
        raise UnsupportedFormat(src, "no kohya-named LyCORIS or LoRA module found")
    out.update(kohya_state_dict_from_modules(converted, dtype=out_dtype))
    ranks = {m.rank for m in report.modules.values()}
    alphas = {m.alpha for m in report.modules.values()}
    recipe = {"op": RECIPE_OP, "rank": rank, "dtype": dtype, "source_file": src.name,
              **({"dynamic": list(dynamic)} if dynamic else {}),
              "max_relative_error": report.max_relative_error(), "mean_relative_error": report.mean_relative_error()}
    meta = {**_carried_metadata(metadata), "ss_network_module": "networks.lora",
            "ss_network_dim": _network_value(set(ranks)), "ss_network_alpha": _network_value(alphas),
            "loradex.recipe": canonical_json(recipe),
            **modelspec_metadata(metadata, base=base or detect_base(out), title=source_title(metadata, src.stem),
                                 triggers=source_triggers(metadata))}
    save_safetensors(out, dest, meta, hash_key=HASH_KEY)
    report.files.append(str(dest))
    return report


def convert_lycoris_file(src, dest, to: str, *, rank: int | None, dtype: str = "fp16", base: str | None = None,
                         allow_partial: bool = False, progress: Progress | None = None) -> dict:
    """``loradex convert`` for LyCORIS sources: to kohya directly, to another LoRA convention
    through a kohya file in a temporary folder. Returns the report as a dict."""
    from loradex.registry.errors import UsageError

    if rank is None:
        raise UsageError("a LyCORIS file (LoHa/LoKr/LoCon/full) has no exact plain-LoRA form; converting it needs --rank R",
                         hint="e.g. `loradex convert FILE --to kohya --rank 16 -o OUT`; the approximation error is reported")
    if to == "kohya":
        return lycoris_to_lora(src, dest, rank, dtype=dtype, base=base, allow_partial=allow_partial,
                               progress=progress).to_dict()
    from .convert import convert_file

    with tempfile.TemporaryDirectory(prefix="loradex-lycoris-") as tmp:
        kohya = Path(tmp) / "kohya.safetensors"
        report = lycoris_to_lora(src, kohya, rank, dtype=dtype, base=base, allow_partial=allow_partial,
                                 progress=progress).to_dict()
        second = convert_file(kohya, dest, to, base=base, allow_partial=allow_partial)
    report["files"] = list(second.files)
    report["target_convention"] = to
    return report
