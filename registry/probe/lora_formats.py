"""Probers for plain LoRA key conventions (see FORMATS.md, "LoRA key conventions")."""

from __future__ import annotations

import math
import re
from functools import lru_cache

from ..untrusted import parse_json
from .base_family import transformer_roots
from .facts import HeaderView, Module, ProbeFacts, Verdict, module_type, no, register_prober
from .tensor_rules import modules_problems, pair_problems

# kohya prefixes → component
KOHYA_PREFIXES = {"lora_unet": "unet", "lora_te": "text_encoder", "lora_te1": "text_encoder",
                  "lora_te2": "text_encoder_2", "lora_te3": "text_encoder_3", "lora_transformer": "transformer"}
_KOHYA_KEY = re.compile(r"^(lora_unet|lora_te[123]?|lora_transformer)_(.+?)\.(lora_down\.weight|lora_up\.weight|alpha)$")
_KOHYA_ANY = re.compile(r"^(lora_unet|lora_te[123]?|lora_transformer)_[^.]+\.(.+)$")
_BUNDLE_EMB = re.compile(r"^bundle_emb\.([^.]+)\.(string_to_param\.\*|emb_params|clip_l|clip_g)$")
LYCORIS_SUFFIX = re.compile(r"^(hada_|lokr_|oft_|lora_mid|dora_scale|diff|diff_b|w_norm|b_norm|on_input|"
                            r"a1\.weight|a2\.weight|b1\.weight|b2\.weight|weight$)")

_SD_UNET_PART = re.compile(r"^(down_blocks|up_blocks|mid_block|input_blocks|middle_block|output_blocks|conv_in|conv_out|"
                           r"time_embedding|time_embed|add_embedding|label_emb|conv_norm_out|out_\d)_")


def kohya_component(prefix: str, module: str) -> str:
    """kohya/musubi keep ``lora_unet_`` for DiT models too: a module under one of the families'
    transformer roots (``double_blocks``, ``joint_blocks``, Wan ``blocks`` …) is the transformer's."""
    component = KOHYA_PREFIXES[prefix]
    if component == "unet" and _transformer_root_rx().match(module):
        return "transformer"
    return component


@lru_cache(maxsize=1)
def _transformer_root_rx() -> re.Pattern:
    roots = sorted(transformer_roots(), key=len, reverse=True)
    return re.compile(r"^(" + "|".join(map(re.escape, roots)) + r")(_|$)")


def lora_module(component, name, down, up) -> Module:
    """Dimensions of a LoRA pair: down [r, in(, k, k)], up [out, r(, 1, 1)]."""
    rank = down[0] if down else None
    return Module(component=component, name=name, type=module_type(name),
                  in_features=down[1] if len(down) > 1 else None,
                  out_features=up[0] if up else None, rank=rank, kernel=tuple(down[2:]))


def _pairs(view: HeaderView, regex, groups) -> tuple[dict, set]:
    """{(component, module): {"down": shape, "up": shape}} and the explained keys."""
    found: dict = {}
    explained: set = set()
    for key, meta in view.tensors.items():
        m = regex.match(key)
        if not m:
            continue
        component, module, part = groups(m)
        found.setdefault((component, module), {})[part] = meta.shape
        explained.add(key)
    return found, explained


def _build(view, fmt, found, explained, *, kind="lora", alpha_keys=()) -> ProbeFacts | str:
    modules = []
    for (component, name), parts in sorted(found.items()):
        if "down" in parts and "up" in parts and not pair_problems(name, parts):
            modules.append(lora_module(component, name, parts["down"], parts["up"]))
    if not modules and not any("down" in p or "up" in p for p in found.values()):
        return "no complete down/up pair"
    facts = ProbeFacts(kind=kind, format=fmt, modules=modules, explained=len(explained),
                       unexplained=sorted(set(view.tensors) - explained))
    facts.problems = modules_problems({name: parts for (_, name), parts in found.items()})
    in_pairs = {k for k in alpha_keys if k.endswith(".alpha") and _KOHYA_KEY.match(k)}
    for key in sorted(set(alpha_keys) - in_pairs):  # diffusers-style alphas beside lora_A/lora_B
        shape = view.tensors[key].shape
        if math.prod(shape) != 1:
            facts.problems.append(f"{key}: alpha has shape {tuple(shape)}, not one value")
    if alpha_keys:
        scalars = view.scalars([k for k in alpha_keys if math.prod(view.tensors[k].shape) == 1])
        facts.alphas = sorted(set(round(v, 6) for v in scalars.values()))
    return facts


def _verdict(name, facts_or_reason, what) -> Verdict:
    if isinstance(facts_or_reason, str):
        return no(name, facts_or_reason)
    f = facts_or_reason
    reason = f"{len(f.modules)} {what} modules"
    if f.unexplained:
        reason += f"; {len(f.unexplained)} key(s) not understood, e.g. {f.unexplained[0]}"
    return Verdict(name, True, reason, f)


# --- kohya -----------------------------------------------------------------------------------
@register_prober("kohya")
def probe_kohya(view: HeaderView) -> Verdict:
    name = "kohya"
    module_md = view.metadata.get("ss_network_module", "")
    if module_md.startswith("lycoris"):
        return no(name, f"ss_network_module={module_md}: a LyCORIS file")
    lyco = [k for k in view.tensors if (m := _KOHYA_ANY.match(k)) and LYCORIS_SUFFIX.match(m.group(2))]
    if lyco:
        return no(name, f"LyCORIS keys present, e.g. {lyco[0]}")

    # A file whose lora_unet_ modules include a transformer root and no SD UNet part is a DiT
    # file throughout (musubi/kohya also adapt top-level layers: time_text_embed, norm_out …).
    unet_modules = {m.group(2) for k in view.tensors if (m := _KOHYA_KEY.match(k)) and m.group(1) == "lora_unet"}
    dit_file = any(kohya_component("lora_unet", mod) == "transformer" for mod in unet_modules) and \
        not any(_SD_UNET_PART.match(mod) for mod in unet_modules)

    def groups(m):
        prefix, module, part = m.groups()
        component = kohya_component(prefix, module)
        if dit_file and component == "unet":
            component = "transformer"
        return component, f"{prefix}_{module}", {"lora_down.weight": "down", "lora_up.weight": "up"}.get(part, part)

    found, explained = _pairs(view, _KOHYA_KEY, groups)
    if not found:
        return no(name, "no lora_unet_/lora_te*_ keys with .lora_down/.lora_up/.alpha")
    tokens, n_vectors = [], 0
    for key, meta in view.tensors.items():  # kohya can bundle embeddings: bundle_emb.<token>.*
        if m := _BUNDLE_EMB.match(key):
            explained.add(key)
            if m.group(1) not in tokens:
                tokens.append(m.group(1))
                n_vectors += meta.shape[0] if len(meta.shape) == 2 else 1
    alpha_keys = [k for k in explained if k.endswith(".alpha")]
    facts = _build(view, "kohya", found, explained, alpha_keys=alpha_keys)
    if isinstance(facts, ProbeFacts):
        facts.tokens, facts.n_vectors = tokens, n_vectors
        # OneTrainer spells DiT transformers lora_transformer_<diffusers path>; kohya/musubi lora_unet_
        if facts.modules and all(m.name.startswith("lora_transformer_") or m.component != "transformer"
                                 for m in facts.modules) and any(m.component == "transformer" for m in facts.modules):
            facts.convention = "onetrainer"
    return _verdict(name, facts, "kohya LoRA")


# --- diffusers / PEFT (current) ----------------------------------------------------------------
_COMPONENTS = r"(unet|text_encoder|text_encoder_2|text_encoder_3|transformer|prior)"
_DIFFUSERS_KEY = re.compile(rf"^{_COMPONENTS}\.(.+)\.(lora_A|lora_B)\.weight$")
_DIFFUSERS_EXTRA = re.compile(rf"^{_COMPONENTS}\.(.+)\.(lora_magnitude_vector(\.weight)?|alpha)$")


def _collect_alpha_values(obj, out: set) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            # diffusers packs each component's config with its prefix: "transformer.lora_alpha"
            leaf = k.rsplit(".", 1)[-1] if isinstance(k, str) else k
            if leaf in ("lora_alpha", "alpha") and isinstance(v, (int, float)) and not isinstance(v, bool):
                out.add(float(v))
            elif leaf == "alpha_pattern" and isinstance(v, dict):
                out.update(float(x) for x in v.values() if isinstance(x, (int, float)))
            else:
                _collect_alpha_values(v, out)


# diffusers' ``save_lora_weights(..., <component>_lora_adapter_metadata=LoraConfig.to_dict())`` stores each
# component's PEFT LoraConfig in ``__metadata__["lora_adapter_metadata"]``, keys prefixed with the
# component (``"unet.r"``, ``"transformer.lora_alpha"``); the fields loradex shows, and their types:
_ADAPTER_FIELDS = {"r": int, "lora_alpha": (int, float), "target_modules": (list, str), "rank_pattern": dict,
                   "alpha_pattern": dict, "use_dora": bool, "use_rslora": bool, "lora_bias": bool,
                   "init_lora_weights": (bool, str), "peft_type": str, "peft_version": str}
MAX_ADAPTER_TARGETS = 512  # target module names kept per component


def adapter_metadata(raw: str) -> tuple[dict[str, dict], list[str]]:
    """component → its LoraConfig fields (:data:`_ADAPTER_FIELDS`, type-checked) from diffusers'
    ``lora_adapter_metadata``, and notes for what was ignored. Keys without a component prefix
    (a bare ``LoraConfig.to_dict()``) are the ``model``'s."""
    notes: list[str] = []
    try:
        data = parse_json(raw, "metadata lora_adapter_metadata", max_depth=8)
    except ValueError as exc:
        return {}, [f"lora_adapter_metadata ignored: {str(exc).split(': ', 1)[-1]}"]
    if not isinstance(data, dict):
        return {}, ["lora_adapter_metadata ignored: not a JSON object"]
    out: dict[str, dict] = {}
    wrong: list[str] = []
    for key, value in data.items():
        component, _, leaf = key.rpartition(".") if "." in key else ("model", "", key)
        if leaf not in _ADAPTER_FIELDS:
            continue
        kind = _ADAPTER_FIELDS[leaf]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if leaf in ("r", "lora_alpha") and ok:
            ok = not isinstance(value, bool) and 0 < value < 1 << 20
        if leaf == "target_modules" and isinstance(value, list):
            ok = all(isinstance(t, str) for t in value) and len(value) <= MAX_ADAPTER_TARGETS
        if leaf in ("rank_pattern", "alpha_pattern") and ok:
            ok = len(value) <= MAX_ADAPTER_TARGETS and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values())
        if not ok:
            wrong.append(key)
            continue
        out.setdefault(component, {})[leaf] = value
    if wrong:
        notes.append(f"lora_adapter_metadata: {', '.join(sorted(wrong)[:5])} ignored (wrong type or too large)")
    return out, notes


def _apply_adapter_metadata(facts: ProbeFacts, raw: str) -> None:
    """Alphas, target modules and the per-component configs (shown by inspect/show as
    ``training.lora_adapter_metadata``) from diffusers' ``lora_adapter_metadata``."""
    configs, notes = adapter_metadata(raw)
    facts.notes += notes
    if not configs:
        return
    alphas: set = set()
    targets: set = set()
    for cfg in configs.values():
        _collect_alpha_values(cfg, alphas)
        t = cfg.get("target_modules")
        targets.update([t] if isinstance(t, str) else t or [])
    facts.alphas = sorted(set(facts.alphas) | alphas)
    facts.target_modules = sorted(set(facts.target_modules) | targets)
    facts.training["lora_adapter_metadata"] = configs
    ranks = {cfg["r"] for cfg in configs.values() if "r" in cfg}
    found = {m.rank for m in facts.modules if m.rank is not None}
    stated = ranks | {v for cfg in configs.values() for v in (cfg.get("rank_pattern") or {}).values()}
    if found and stated and not found <= stated:
        facts.notes.append(f"lora_adapter_metadata states rank(s) {sorted(stated)}, the tensors have {sorted(found)}")


@register_prober("diffusers")
def probe_diffusers(view: HeaderView) -> Verdict:
    name = "diffusers"

    def groups(m):
        return m.group(1), m.group(2), "down" if m.group(3) == "lora_A" else "up"

    found, explained = _pairs(view, _DIFFUSERS_KEY, groups)
    if not found:
        return no(name, "no unet./text_encoder*/transformer. keys ending .lora_A/.lora_B.weight")
    dora = False
    alpha_keys = []
    for key in view.tensors:
        if m := _DIFFUSERS_EXTRA.match(key):
            explained.add(key)
            if m.group(3).startswith("lora_magnitude_vector"):
                dora = True
            else:
                alpha_keys.append(key)
    facts = _build(view, "diffusers", found, explained, alpha_keys=alpha_keys)
    if isinstance(facts, ProbeFacts):
        facts.dora = dora
        raw = view.metadata.get("lora_adapter_metadata")
        if raw:
            _apply_adapter_metadata(facts, raw)
    return _verdict(name, facts, "diffusers LoRA")


# --- ComfyUI / ai-toolkit native: diffusion_model.<native path>.lora_A.weight ------------------------
# The model's own module paths under ComfyUI's ``diffusion_model.`` prefix (BFL Flux ``double_blocks``,
# MMDiT ``joint_blocks``, Wan ``blocks`` …), as ``lora_A/lora_B`` (ai-toolkit, diffusers' exports) or
# ``lora_down/lora_up`` + ``.alpha`` (ComfyUI's own saves); text encoders as
# ``text_encoders.<clip_l|clip_g|t5xxl>.transformer.<path>``.
_COMFY_KEY = re.compile(r"^diffusion_model\.(.+)\.(lora_A|lora_B|lora_down|lora_up)\.weight$")
_COMFY_TE_KEY = re.compile(r"^text_encoders\.(clip_l|clip_g|t5xxl)\.transformer\.(.+)\.(lora_A|lora_B|lora_down|lora_up)\.weight$")
_COMFY_ALPHA = re.compile(r"^(diffusion_model|text_encoders\.(clip_l|clip_g|t5xxl)\.transformer)\.(.+)\.alpha$")
# beside the pairs: full-weight differences for layers a LoRA cannot factor (norms, biases), DoRA scales
_COMFY_EXTRA = re.compile(r"^(diffusion_model|text_encoders\.\w+\.transformer)\.(?:.+)\.(diff|diff_b|dora_scale)$")
_COMFY_TE = {"clip_l": "text_encoder", "clip_g": "text_encoder_2", "t5xxl": "t5"}
_DOWN_PARTS = ("lora_A", "lora_down")


@register_prober("comfyui")
def probe_comfyui(view: HeaderView) -> Verdict:
    name = "comfyui"

    def groups(m):
        root = m.group(1).split(".", 1)[0]
        component = "unet" if root in ("input_blocks", "middle_block", "output_blocks") else "transformer"
        return component, f"diffusion_model.{m.group(1)}", "down" if m.group(2) in _DOWN_PARTS else "up"

    found, explained = _pairs(view, _COMFY_KEY, groups)
    if not found:
        return no(name, "no diffusion_model.<path>.lora_A/lora_B (or lora_down/lora_up).weight keys")
    te, te_keys = _pairs(view, _COMFY_TE_KEY, lambda m: (
        _COMFY_TE[m.group(1)], f"text_encoders.{m.group(1)}.{m.group(2)}", "down" if m.group(3) in _DOWN_PARTS else "up"))
    found.update(te)
    explained |= te_keys
    alpha_keys = [k for k in view.tensors if _COMFY_ALPHA.match(k)]
    explained.update(alpha_keys)
    extras = {k: m.group(2) for k in view.tensors if (m := _COMFY_EXTRA.match(k))}
    explained.update(extras)
    facts = _build(view, "comfyui", found, explained, alpha_keys=alpha_keys)
    if isinstance(facts, ProbeFacts):
        facts.dora = "dora_scale" in extras.values()
        diffs = sum(1 for v in extras.values() if v in ("diff", "diff_b"))
        if diffs:
            facts.notes.append(f"{diffs} full-weight difference tensor(s) (.diff / .diff_b: norms, biases)")
    return _verdict(name, facts, "ComfyUI-native LoRA")


# --- XLabs Flux: double_blocks.N.processor.qkv_lora1.down.weight --------------------------------------
# XLabs' trainer adapts the attention processors: ``qkv_lora1`` / ``proj_lora1`` the image stream,
# ``qkv_lora2`` / ``proj_lora2`` the text stream of a double block, ``qkv_lora`` / ``proj_lora`` a single block.
_XLABS_KEY = re.compile(r"^(?:diffusion_model\.)?((?:double|single)_blocks\.\d+\.processor\.(?:qkv|proj)_lora[12]?)\.(down|up)\.weight$")


@register_prober("xlabs")
def probe_xlabs(view: HeaderView) -> Verdict:
    name = "xlabs"
    found, explained = _pairs(view, _XLABS_KEY, lambda m: ("transformer", m.group(1), m.group(2)))
    if not found:
        return no(name, "no (double|single)_blocks.N.processor.{qkv,proj}_lora*.down/up.weight keys")
    return _verdict(name, _build(view, "xlabs", found, explained), "XLabs LoRA")


# --- diffusers legacy: unet.<path>.lora.down.weight ------------------------------------------------
_LEGACY_KEY = re.compile(rf"^{_COMPONENTS}\.(.+)\.(lora|lora_linear_layer)\.(down|up)\.weight$")
_LEGACY_ALPHA = re.compile(rf"^{_COMPONENTS}\.(.+)\.alpha$")


@register_prober("diffusers-legacy")
def probe_diffusers_legacy(view: HeaderView) -> Verdict:
    name = "diffusers-legacy"

    def groups(m):
        return m.group(1), m.group(2), m.group(4)

    found, explained = _pairs(view, _LEGACY_KEY, groups)
    if not found:
        return no(name, "no unet./text_encoder. keys ending .lora.down/.lora.up.weight")
    alpha_keys = [k for k in view.tensors if _LEGACY_ALPHA.match(k)]
    explained.update(alpha_keys)
    return _verdict(name, _build(view, "diffusers-legacy", found, explained, alpha_keys=alpha_keys),
                    "legacy diffusers LoRA")


# --- diffusers attention-processor era: <path>.processor.to_q_lora.down.weight ----------------------
_ATTN_PROC_KEY = re.compile(r"^(?!unet\.|text_encoder)(.+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$")
_ATTN_PROC_TE = re.compile(r"^(text_encoder|text_encoder_2)\.(.+)\.lora_linear_layer\.(down|up)\.weight$")


@register_prober("diffusers-legacy-attn-proc")
def probe_attn_proc(view: HeaderView) -> Verdict:
    name = "diffusers-legacy-attn-proc"

    def groups(m):
        path, proj, part = m.groups()
        return "unet", f"{path}.{proj}" + (".0" if proj == "to_out" else ""), part

    found, explained = _pairs(view, _ATTN_PROC_KEY, groups)
    if not found:
        return no(name, "no <path>.processor.to_{q,k,v,out}_lora.down/up.weight keys")
    te, te_keys = _pairs(view, _ATTN_PROC_TE, lambda m: (m.group(1), m.group(2), m.group(3)))
    found.update(te)
    explained |= te_keys
    return _verdict(name, _build(view, "diffusers-legacy-attn-proc", found, explained),
                    "attention-processor LoRA")


# --- PEFT: base_model.model.<path>.lora_A.weight ------------------------------------------------
_PEFT_KEY = re.compile(r"^base_model\.model\.(.+)\.(lora_A|lora_B)\.weight$")
_PEFT_EXTRA = re.compile(r"^base_model\.model\.(.+)\.(lora_magnitude_vector(\.weight)?|lora_embedding_[AB])$")


def _peft_component(path: str) -> str:
    head = path.split(".", 1)[0]
    if head == "text_model":
        return "text_encoder"
    if head in ("down_blocks", "up_blocks", "mid_block", "conv_in", "conv_out", "time_embedding"):
        return "unet"
    if head in transformer_roots() or head in ("x_embedder", "context_embedder", "proj_out", "norm_out"):
        return "transformer"
    return "model"


@register_prober("peft")
def probe_peft(view: HeaderView) -> Verdict:
    name = "peft"

    def groups(m):
        path = m.group(1)
        return _peft_component(path), path, "down" if m.group(2) == "lora_A" else "up"

    found, explained = _pairs(view, _PEFT_KEY, groups)
    if not found:
        return no(name, "no base_model.model.<path>.lora_A/lora_B.weight keys")
    dora = False
    for key in view.tensors:
        if m := _PEFT_EXTRA.match(key):
            explained.add(key)
            dora = dora or m.group(2).startswith("lora_magnitude_vector")
    facts = _build(view, "peft", found, explained)
    if isinstance(facts, ProbeFacts):
        facts.dora = dora
        # CLIPTextModelWithProjection (SDXL's second encoder) has the same names, width 1280
        facts.modules = [m if not (m.component == "text_encoder" and m.in_features == 1280)
                         else Module("text_encoder_2", m.name, m.type, m.in_features, m.out_features, m.rank,
                                     m.kernel) for m in facts.modules]
        cfg = view.sidecars.get("adapter_config")
        if cfg:
            _apply_peft_config(facts, cfg)
        else:
            facts.notes.append("no adapter_config.json next to the file: alpha unknown (PEFT default 8)")
    return _verdict(name, facts, "PEFT LoRA")


def _apply_peft_config(facts: ProbeFacts, cfg: dict) -> None:
    from .base_family import base_from_name_or_path

    alphas: set = set()
    if isinstance(cfg.get("lora_alpha"), (int, float)):
        alphas.add(float(cfg["lora_alpha"]))
    if isinstance(cfg.get("alpha_pattern"), dict):
        alphas.update(float(v) for v in cfg["alpha_pattern"].values() if isinstance(v, (int, float)))
    facts.alphas = sorted(alphas)
    targets = cfg.get("target_modules")
    if isinstance(targets, list):
        facts.target_modules = sorted(str(t) for t in targets)
    elif isinstance(targets, str):
        facts.target_modules = [targets]
    keep = ("r", "lora_alpha", "target_modules", "base_model_name_or_path", "peft_type", "peft_version",
            "use_dora", "use_rslora", "rank_pattern", "alpha_pattern", "init_lora_weights")
    facts.training = {"adapter_config": {k: cfg[k] for k in keep if k in cfg}}
    fam = base_from_name_or_path(cfg.get("base_model_name_or_path"))
    if fam:
        facts.base_from_config = (fam, f"adapter_config base_model_name_or_path={cfg['base_model_name_or_path']}")
    if cfg.get("use_dora"):
        facts.dora = True


# --- cloneofsimo safeloras: unet:12:down ------------------------------------------------------------
_SAFELORAS_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):(\d+):(down|up)$")
EMBED_FLAG = "<embed>"


@register_prober("safeloras")
def probe_safeloras(view: HeaderView) -> Verdict:
    name = "safeloras"
    md = view.metadata

    def groups(m):
        target, idx, part = m.groups()
        return ("unet" if target == "unet" else "text_encoder" if target == "text_encoder" else target,
                f"{target}:{idx}", part)

    found, explained = _pairs(view, _SAFELORAS_KEY, groups)
    if not found:
        return no(name, "no <target>:<index>:down/up keys")
    tokens, n_vectors = [], 0
    for key, meta in view.tensors.items():
        if md.get(key) == EMBED_FLAG:
            explained.add(key)
            tokens.append(key)
            n_vectors += meta.shape[0] if len(meta.shape) == 2 else 1
    facts = _build(view, "safeloras", found, explained)
    if isinstance(facts, ProbeFacts):
        # modules are numbered, not named: only the replaced classes are known
        facts.modules = [Module(m.component, m.name, None, m.in_features, m.out_features, m.rank, m.kernel)
                         for m in facts.modules]
        targets: set = set()
        for target in {m.name.split(":")[0] for m in facts.modules}:
            try:
                targets.update(parse_json(md.get(target, "[]"), f"metadata {target}"))
            except ValueError:
                pass
        facts.target_modules = sorted(str(t) for t in targets)
        meta_ranks = {int(v) for k, v in md.items() if k.endswith(":rank") and v.isdigit()}
        shape_ranks = {m.rank for m in facts.modules}
        if meta_ranks and meta_ranks != shape_ranks:
            facts.notes.append(f"metadata ranks {sorted(meta_ranks)} differ from shapes {sorted(shape_ranks)}")
        facts.tokens, facts.n_vectors = tokens, n_vectors
        for tok in tokens:
            facts.embedding_widths[tok] = view.tensors[tok].shape[-1]
    return _verdict(name, facts, "safeloras")
