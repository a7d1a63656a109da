"""Training facts, trigger words and embedded hashes from kohya ``ss_*`` / ``modelspec.*`` metadata."""

from __future__ import annotations

from collections import Counter

from ..files.hashing import is_bogus_model_hash
from ..untrusted import parse_json

# friendly name → metadata keys, first present wins
TRAINING_KEYS: dict[str, tuple[str, ...]] = {
    "base_model_name": ("ss_sd_model_name", "modelspec.base_model"),
    "base_model_version": ("ss_base_model_version",),
    "base_model_hash": ("ss_new_sd_model_hash", "ss_sd_model_hash"),
    "architecture": ("modelspec.architecture",),
    "implementation": ("modelspec.implementation",),
    "network_module": ("ss_network_module",),
    "network_dim": ("ss_network_dim",),
    "network_alpha": ("ss_network_alpha",),
    "network_args": ("ss_network_args",),
    "steps": ("ss_steps", "ss_max_train_steps"),
    "max_train_steps": ("ss_max_train_steps",),
    "epochs": ("ss_epoch", "ss_num_epochs"),
    "learning_rate": ("ss_learning_rate",),
    "unet_lr": ("ss_unet_lr",),
    "text_encoder_lr": ("ss_text_encoder_lr",),
    "lr_scheduler": ("ss_lr_scheduler",),
    "optimizer": ("ss_optimizer",),
    "seed": ("ss_seed",),
    "resolution": ("ss_resolution", "modelspec.resolution"),
    "batch_size": ("ss_total_batch_size", "ss_batch_size_per_device"),
    "mixed_precision": ("ss_mixed_precision",),
    "num_train_images": ("ss_num_train_images",),
    "num_reg_images": ("ss_num_reg_images",),
    "clip_skip": ("ss_clip_skip",),
    "noise_offset": ("ss_noise_offset",),
    "output_name": ("ss_output_name", "name"),
    "training_comment": ("ss_training_comment",),
    "training_started_at": ("ss_training_started_at",),
    "training_finished_at": ("ss_training_finished_at",),
    "title": ("modelspec.title",),
    "author": ("modelspec.author",),
    "description": ("modelspec.description",),
    "date": ("modelspec.date",),
    "license": ("modelspec.license",),
    "usage_hint": ("modelspec.usage_hint",),
    "prediction_type": ("modelspec.prediction_type",),
    "timestep_range": ("modelspec.timestep_range",),
    "trigger_phrase": ("modelspec.trigger_phrase",),
    "merged_from": ("modelspec.merged_from",),
    "software": ("software",),
    "training_info": ("training_info",),
}
_JSON_VALUED = {"network_args", "software", "training_info"}


def _value(raw: str):
    """Metadata values are strings; give numbers and None back their type, keep the rest."""
    if raw in ("None", "null", ""):
        return None
    if raw in ("True", "False"):
        return raw == "True"
    for conv in (int, float):
        try:
            return conv(raw)
        except ValueError:
            pass
    return raw


def training_facts(md: dict[str, str]) -> dict:
    out: dict = {}
    for name, keys in TRAINING_KEYS.items():
        for key in keys:
            if key in md:
                raw = md[key]
                if name in _JSON_VALUED:
                    try:
                        out[name] = parse_json(raw, f"metadata {key}")
                    except ValueError:
                        out[name] = raw
                elif name in ("base_model_name", "base_model_version", "base_model_hash", "output_name",
                              "title", "author", "description", "license", "trigger_phrase", "date"):
                    out[name] = raw  # keep names/hashes verbatim ("1e-4"-like names must stay strings)
                else:
                    out[name] = _value(raw)
                break
    return out


def tag_frequency_triggers(md: dict[str, str], limit: int = 3) -> list[str]:
    """The most frequent tag(s) of ``ss_tag_frequency`` (the tags on the most training images)."""
    raw = md.get("ss_tag_frequency")
    if not raw:
        return []
    try:
        freq = parse_json(raw, "metadata ss_tag_frequency")
    except ValueError:
        return []
    counts: Counter = Counter()
    if isinstance(freq, dict):
        for tags in freq.values():
            if isinstance(tags, dict):
                for tag, n in tags.items():
                    if isinstance(n, (int, float)) and str(tag).strip():
                        counts[str(tag).strip()] += n
    if not counts:
        return []
    top = max(counts.values())
    return [tag for tag, n in counts.most_common() if n == top][:limit]


def trigger_words(md: dict[str, str], tokens: list[str]) -> list[str]:
    words: list[str] = []
    phrase = md.get("modelspec.trigger_phrase")
    if phrase:
        words += [p.strip() for p in phrase.split(",") if p.strip()]
    words += tag_frequency_triggers(md)
    words += tokens
    seen: set[str] = set()
    return [w for w in words if not (w in seen or seen.add(w))]


def header_hashes(md: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """(hashes worth keeping, warnings) from ``sshs_model_hash`` / ``sshs_legacy_hash``."""
    out: dict[str, str] = {}
    warnings: list[str] = []
    for key in ("sshs_model_hash", "sshs_legacy_hash"):
        value = md.get(key)
        if not value:
            continue
        if key == "sshs_model_hash" and is_bogus_model_hash(value):
            warnings.append(f"{key} is sha256 of empty input ({value[:12]}…): bogus, ignored")
            continue
        out[key] = value.lower()
    return out, warnings
