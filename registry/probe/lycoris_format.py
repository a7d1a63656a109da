"""LyCORIS (kohya module names, algorithm-specific tensor suffixes).

LoHa ``hada_w1_a/_b, hada_w2_a/_b`` (+ ``hada_t1/_t2`` tucker); LoKr ``lokr_w1`` or
``lokr_w1_a/_b``, ``lokr_w2`` or ``lokr_w2_a/_b`` (+ ``lokr_t2``); LoCon ``lora_down/lora_up``
(+ ``lora_mid`` tucker) when the metadata says LyCORIS; GLoRA ``a1,a2,b1,b2``; full ``diff``;
norm ``w_norm``; OFT ``oft_blocks``; (IA)³ ``weight`` + ``on_input``; any may add ``dora_scale``.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from ..untrusted import parse_json
from .facts import HeaderView, Module, ProbeFacts, Verdict, module_type, no, register_prober
from .base_family import transformer_roots
from .lora_formats import kohya_component

# kohya names (lora_unet_…, OneTrainer lora_transformer_…) and LyCORIS's own ``lycoris_<name>``
# (its standalone wrapper on DiT models: the transformer's modules).
_KEY = re.compile(r"^(lora_unet|lora_te[123]?|lora_transformer|lycoris)_([^.]+)\.(.+)$")

# suffix → (algorithm, part)
SUFFIXES = {
    "hada_w1_a": ("loha", "w1a"), "hada_w1_b": ("loha", "w1b"), "hada_w2_a": ("loha", "w2a"),
    "hada_w2_b": ("loha", "w2b"), "hada_t1": ("loha", "t1"), "hada_t2": ("loha", "t2"),
    "lokr_w1": ("lokr", "w1"), "lokr_w1_a": ("lokr", "w1a"), "lokr_w1_b": ("lokr", "w1b"),
    "lokr_w2": ("lokr", "w2"), "lokr_w2_a": ("lokr", "w2a"), "lokr_w2_b": ("lokr", "w2b"),
    "lokr_t2": ("lokr", "t2"),
    "lora_down.weight": ("locon", "down"), "lora_up.weight": ("locon", "up"), "lora_mid.weight": ("locon", "mid"),
    "a1.weight": ("glora", "a1"), "a2.weight": ("glora", "a2"), "b1.weight": ("glora", "b1"),
    "b2.weight": ("glora", "b2"),
    "diff": ("full", "diff"), "diff_b": ("full", "diff_b"),
    "w_norm": ("norm", "w"), "b_norm": ("norm", "b"),
    "oft_blocks": ("oft", "blocks"), "oft_diag": ("oft", "blocks"), "rescale": ("oft", "rescale"),
    "weight": ("ia3", "weight"), "on_input": ("ia3", "on_input"),
    "alpha": (None, "alpha"), "dora_scale": (None, "dora"),
}
# ComfyUI / ai-toolkit spell LyCORIS on DiT models with dotted native paths:
# ``diffusion_model.double_blocks.0.img_attn.qkv.lokr_w1`` (not a bare ``.weight``: that is any tensor).
_DOTTED = re.compile(r"^(diffusion_model|transformer)\.(.+?)\.(" + "|".join(
    re.escape(k) for k in sorted(set(SUFFIXES) - {"weight", "on_input"}, key=len, reverse=True)) + ")$")


def _key_parts(key: str) -> tuple[str, str, str, str] | None:
    """(component, module name as spelled, suffix, convention) of a LyCORIS key, or None."""
    if m := _KEY.match(key):
        prefix, module, suffix = m.groups()
        if suffix in SUFFIXES:
            component = "transformer" if prefix == "lycoris" else kohya_component(prefix, module)
            convention = {"lycoris": "lycoris", "lora_transformer": "onetrainer"}.get(prefix, "kohya")
            return component, f"{prefix}_{module}", suffix, convention
    if m := _DOTTED.match(key):
        prefix, path, suffix = m.groups()
        root = path.split(".", 1)[0]
        component = "transformer" if prefix == "transformer" or root in transformer_roots() else "unet"
        return component, f"{prefix}.{path}", suffix, "comfyui" if prefix == "diffusion_model" else "diffusers"
    return None


def _dims(algo: str, p: dict) -> tuple[int | None, int | None, int | None, tuple, bool]:
    """(in, out, rank, kernel, tucker) of one module from its factor shapes."""
    if algo == "loha":
        # w1a [out, r], w1b [r, in·k·k]; with tucker: w1a [r, out], w1b [r, in], t1 [r, r, k, k]
        w1a, w1b = p.get("w1a"), p.get("w1b")
        tucker = "t1" in p
        kernel = tuple(p["t1"][2:]) if tucker else ()
        if not (w1a and w1b and len(w1a) > 1 and len(w1b) > 1):
            return None, None, None, kernel, tucker
        return w1b[1], (w1a[1] if tucker else w1a[0]), w1b[0], kernel, tucker
    if algo == "lokr":
        w1 = p.get("w1") or ((p["w1a"][0], p["w1b"][1]) if "w1a" in p and "w1b" in p else None)
        if "w2" in p:
            w2 = p["w2"]
        elif "w2a" in p and "w2b" in p:
            w2 = (p["w2a"][0], p["w2b"][1]) if "t2" not in p else (p["w2a"][1], p["w2b"][1])
        else:
            w2 = None
        rank = (p["w1b"][0] if "w1b" in p else None) or (p["w2b"][0] if "w2b" in p else None)
        kernel = tuple(p["t2"][2:]) if "t2" in p else tuple(p["w2"][2:]) if "w2" in p else ()
        if not (w1 and w2):
            return None, None, rank, kernel, "t2" in p
        return w1[1] * w2[1], w1[0] * w2[0], rank, kernel, "t2" in p
    if algo == "locon":
        down, up = p.get("down"), p.get("up")
        tucker = "mid" in p
        kernel = tuple(p["mid"][2:]) if tucker else tuple(down[2:]) if down else ()
        return (down[1] if down and len(down) > 1 else None), (up[0] if up else None), \
            (down[0] if down else None), kernel, tucker
    if algo == "glora":
        a1, b2 = p.get("a1"), p.get("b2")
        return (a1[1] if a1 and len(a1) > 1 else None), (b2[0] if b2 else None), (a1[0] if a1 else None), (), False
    if algo == "full":
        d = p.get("diff")
        return (d[1] if d and len(d) > 1 else None), (d[0] if d else None), None, tuple(d[2:]) if d else (), False
    if algo == "oft":
        b = p.get("blocks")
        width = math.prod(b[:2]) if b and len(b) >= 2 else None
        return width, width, None, (), False
    if algo in ("ia3", "norm"):
        w = p.get("weight") or p.get("w")
        return None, (w[0] if w else None), None, (), False
    return None, None, None, (), False


# Factors each algorithm cannot do without (part names of SUFFIXES); any one of a tuple's
# alternatives will do (LoKr: a full w1 or its w1a/w1b pair).
_NEEDED = {"loha": [("w1a",), ("w1b",), ("w2a",), ("w2b",)], "locon": [("down",), ("up",)],
           "lokr": [("w1", "w1a"), ("w1", "w1b"), ("w2", "w2a"), ("w2", "w2b")]}


def _missing_factors(algo: str, p: dict) -> list[str]:
    return [alts[-1] for alts in _NEEDED.get(algo, []) if not any(a in p for a in alts)]


# (a, b): a's last dim and b's first are the same rank (not with tucker cores, whose layout differs).
_PAIRED = {"loha": [("w1a", "w1b"), ("w2a", "w2b")], "locon": [("up", "down")],
           "lokr": [("w1a", "w1b"), ("w2a", "w2b")]}


def _unpaired(algo: str, p: dict) -> str | None:
    if any(t in p for t in ("t1", "t2", "mid")):
        return None
    for a, b in _PAIRED.get(algo, []):
        if a in p and b in p and len(p[a]) >= 2 and len(p[b]) >= 1:
            rank_a = p[a][1] if algo == "locon" else p[a][-1]
            if rank_a != p[b][0]:
                return f"{a}/{b}"
    return None


@register_prober("lycoris")
def probe_lycoris(view: HeaderView) -> Verdict:
    name = "lycoris"
    md = view.metadata
    parts: dict[tuple[str, str], dict] = {}
    algos: dict[tuple[str, str], str] = {}
    explained: set = set()
    dora = False
    conventions: Counter = Counter()
    for key, meta in view.tensors.items():
        found = _key_parts(key)
        if found is None:
            continue
        component, module_name, suffix, convention = found
        algo, part = SUFFIXES[suffix]
        conventions[convention] += 1
        k = (component, module_name)
        parts.setdefault(k, {})[part] = meta.shape
        if algo:
            algos[k] = algo
        dora = dora or part == "dora"
        explained.add(key)
    if not algos:
        return no(name, "no LyCORIS module keys (hada_*, lokr_*, lora_down/up+lycoris metadata, diff, oft_blocks…)")
    counts = Counter(algos.values())
    network_module = md.get("ss_network_module", "")
    tucker_any = any("mid" in p or "t1" in p or "t2" in p for p in parts.values())
    if set(counts) == {"locon"} and not (network_module.startswith("lycoris") or tucker_any or dora):
        return no(name, "only lora_down/lora_up keys and no LyCORIS metadata: a plain kohya LoRA")
    if set(counts) == {"ia3"} and not network_module.startswith("lycoris") and \
            not any("on_input" in p for p in parts.values()):
        return no(name, "only .weight keys: not an (IA)³ file")

    modules: list[Module] = []
    tucker = False
    problems: list[str] = []
    for k, algo in sorted(algos.items()):
        try:
            in_f, out_f, rank, kernel, tk = _dims(algo, parts[k])
        except IndexError:  # a factor with fewer dims than its algorithm needs (a 0-dim lokr_w1_a…)
            problems.append(f"{k[1]}: {algo} factors with too few dimensions")
            continue
        if rank == 0 or 0 in [d for shape in parts[k].values() for d in shape]:
            problems.append(f"{k[1]}: rank 0 or an empty factor")
        if missing := _missing_factors(algo, parts[k]):
            problems.append(f"{k[1]}: {algo} module without {' / '.join(missing)}")
        elif bad := _unpaired(algo, parts[k]):
            problems.append(f"{k[1]}: {algo} factors {bad} have different ranks")
        tucker = tucker or tk
        modules.append(Module(component=k[0], name=k[1], type=module_type(k[1]),
                              in_features=in_f, out_features=out_f, rank=rank, kernel=kernel))
    problems += [f"{name}: alpha has shape {tuple(p['alpha'])}, not one value"
                 for (_, name), p in sorted(parts.items()) if "alpha" in p and math.prod(p["alpha"]) != 1]
    algo_from_md = None
    try:
        args = parse_json(md.get("ss_network_args", "{}"), "metadata ss_network_args")
        algo_from_md = args.get("algo") if isinstance(args, dict) else None
    except ValueError:
        pass
    algorithm = counts.most_common(1)[0][0]
    facts = ProbeFacts(kind="lycoris", format="lycoris", algorithm=algorithm, modules=modules,
                       explained=len(explained), unexplained=sorted(set(view.tensors) - explained), dora=dora)
    facts.problems = problems
    facts.convention = conventions.most_common(1)[0][0]
    if len(counts) > 1:
        facts.notes.append("mixed algorithms: " + ", ".join(f"{a} ×{n}" for a, n in counts.most_common()))
    if tucker:
        facts.notes.append("tucker decomposition (lora_mid / hada_t / lokr_t2)")
    if algo_from_md and str(algo_from_md).lower() not in counts and not (
            str(algo_from_md).lower() in ("lora", "locon") and "locon" in counts):
        facts.notes.append(f"ss_network_args algo={algo_from_md} but the keys say {algorithm}")
    alpha_keys = [k for k in explained if k.endswith(".alpha") and math.prod(view.tensors[k].shape) == 1]
    facts.alphas = sorted(set(round(v, 6) for v in view.scalars(alpha_keys).values()))
    reason = f"{len(modules)} LyCORIS {algorithm} modules"
    if facts.unexplained:
        reason += f"; {len(facts.unexplained)} key(s) not understood, e.g. {facts.unexplained[0]}"
    return Verdict(name, True, reason, facts)
