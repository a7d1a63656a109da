"""``eval REF --prompts SUITE``: render a prompt suite with and without the adapter, compute the
metrics of ``eval_metrics`` with a pluggable embedder, run the failure checks, apply thresholds,
and store an evaluation card (``schemas/eval-card.schema.json``).

Every sample is a stored prompt record (source ``eval``), so ``render ID --check`` can replay
any image behind a number on the card.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from loradex.registry.catalog.review import card_verdict as verdict  # the rule review re-applies
from loradex.registry.errors import UsageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


@dataclass
class EvalOptions:
    base: str
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    steps: int | None = None   # None: the base family's default (trainer.render.RenderProfile)
    cfg: float | None = None
    width: int = 512
    height: int = 512
    weight: float = 1.0
    negative: str = ""
    scheduler: str | None = None
    references: str | None = None  # folder of reference images (style / subject)
    train_dir: str | None = None   # folder of the training images (memorization)
    embedder: str = "clip"
    thresholds: dict = field(default_factory=dict)  # metric -> {"min": x} / {"max": y}
    near_duplicate: float = 0.95   # cosine at which a sample counts as a copy of a training image
    drift_tolerance: float = 0.02  # clip_t may drop this much below the base before "prompt drift"


def load_suite(path) -> tuple[list[str], str]:
    """Prompts of a suite file (one per line; blank lines and ``#`` comments skipped) + sha256."""
    path = Path(path)
    data = path.read_bytes()
    prompts = [line.strip() for line in data.decode("utf-8").splitlines()
               if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise UsageError(f"{path}: the prompt suite is empty")
    return prompts, hashlib.sha256(data).hexdigest()


def load_images(folder) -> list[tuple[str, object, str]]:
    """(path, RGB image, file sha256) for every image in ``folder`` (sorted by name)."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder of images")
    out = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        data = path.read_bytes()
        with Image.open(path) as img:
            out.append((str(path), img.convert("RGB"), hashlib.sha256(data).hexdigest()))
    if not out:
        raise UsageError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return out


def vae_round_trip(vae, images) -> list:
    """Each image as the pipeline itself can reproduce it: ``decode(encode(x).latent_dist.mean)``
    at its own size (rounded down to a multiple of the VAE's downscale factor). A perfectly
    memorised latent decodes to this, not to ``x``: a real VAE returns ≈ ``x``, a random tiny one
    something only weakly related, so memorization compares samples with both."""
    import numpy as np
    import torch
    from PIL import Image

    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    param = next(vae.parameters())
    out = []
    for img in images:
        w, h = max(factor, img.width // factor * factor), max(factor, img.height // factor * factor)
        arr = np.asarray(img.convert("RGB").resize((w, h), Image.Resampling.BICUBIC) if (w, h) != img.size
                         else img.convert("RGB"), dtype=np.float32)
        x = torch.from_numpy(arr / 127.5 - 1.0).permute(2, 0, 1)[None].to(param.device, param.dtype)
        with torch.no_grad():
            y = vae.decode(vae.encode(x).latent_dist.mean).sample
        y = ((y[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        out.append(Image.fromarray(y))
    return out


def _memorization(M, emb, raw_emb, trip_emb, near_duplicate: float):
    """Value + details of one sample set against the training images (see METRIC_DEFINITIONS)."""
    raw = M.max_similarity(emb, raw_emb)
    trip = M.max_similarity(emb, trip_emb) if trip_emb is not None else raw
    best = raw.maximum(trip)
    dupes = [i for i, v in enumerate(best.tolist()) if v >= near_duplicate]
    return best.mean(), {"per_sample_max": best.tolist(), "max": float(best.max()),
                         "near_duplicate_threshold": near_duplicate, "near_duplicates": dupes,
                         "raw_mean": float(raw.mean()), "round_trip_mean": float(trip.mean()),
                         "round_trip": trip_emb is not None}


def _metric(value, model: str, name: str, details: dict | None = None, note: str = "") -> dict:
    from loradex.trainer.eval_metrics import METRIC_DEFINITIONS

    out = {"value": None if value is None else float(value),
           "status": "computed" if value is not None else "not-computed",
           "model": model, "definition": METRIC_DEFINITIONS[name]}
    if details:
        out["details"] = details
    if note or value is None:
        out["note"] = note or "not computed"
    return out


def compute_metrics(embedder, with_images, base_images, clean_prompts: list[str], prompt_index: list[int],
                    references=None, train_images=None, near_duplicate: float = 0.95,
                    train_round_trip=None) -> dict:
    """All card metrics from rendered samples (parallel lists: sample i was prompt
    ``prompt_index[i]``); reference- and training-based ones are not-computed without images.
    ``train_round_trip``: the training images through the base's VAE (``vae_round_trip``)."""
    from loradex.trainer import eval_metrics as M

    model = embedder.describe()["model"]
    emb, base_emb = embedder.images(with_images), embedder.images(base_images)
    text = embedder.texts(clean_prompts)
    clip_t = M.rowwise_cosine(emb, text)
    clip_t_base = M.rowwise_cosine(base_emb, text)
    per_prompt = M.group_means(clip_t, prompt_index)
    out = {
        "clip_t": _metric(clip_t.mean(), model, "clip_t", {"per_prompt": per_prompt}),
        "clip_t_base": _metric(clip_t_base.mean(), model, "clip_t_base",
                               {"per_prompt": M.group_means(clip_t_base, prompt_index),
                                "delta": float(clip_t.mean() - clip_t_base.mean())}),
        "style_consistency": (_metric(M.mean_pairwise_cosine(emb), model, "style_consistency",
                                      {"base": M.mean_pairwise_cosine(base_emb)}) if len(with_images) > 1
                              else _metric(None, model, "style_consistency", note="needs at least two samples")),
    }
    variance_details = {"clip_t_across_seeds": M.within_group_variance(clip_t, prompt_index)}
    if references:
        ref_emb = embedder.images(references)
        to_centre = M.centroid_similarity(emb, ref_emb)
        base_centre = M.centroid_similarity(base_emb, ref_emb)
        out["style_reference_similarity"] = _metric(
            to_centre.mean(), model, "style_reference_similarity", {"base": float(base_centre.mean())})
        out["subject_consistency"] = _metric(
            M.max_similarity(emb, ref_emb).mean(), model, "subject_consistency",
            {"base": float(M.max_similarity(base_emb, ref_emb).mean())})
        variance_details["reference_similarity_across_prompts"] = M.population_variance(
            list(M.group_means(to_centre, prompt_index).values()))
    else:
        for name in ("style_reference_similarity", "subject_consistency"):
            out[name] = _metric(None, model, name, note="no --references given")
    out["generalization_variance"] = _metric(M.population_variance(list(per_prompt.values())), model,
                                             "generalization_variance", variance_details)
    if train_images:
        train_emb = embedder.images(train_images)
        trip_emb = embedder.images(train_round_trip) if train_round_trip else None
        for name, e in (("memorization", emb), ("memorization_base", base_emb)):
            value, details = _memorization(M, e, train_emb, trip_emb, near_duplicate)
            out[name] = _metric(value, model, name, details)
        train_px = M.pixel_vectors(train_images)
        trip_px = M.pixel_vectors(train_round_trip) if train_round_trip else None
        for name, images in (("memorization_pixels", with_images), ("memorization_pixels_base", base_images)):
            value, details = _memorization(M, M.pixel_vectors(images), train_px, trip_px, near_duplicate)
            out[name] = _metric(value, M.PIXEL_MODEL, name, details)
    else:
        for name in ("memorization", "memorization_base"):
            out[name] = _metric(None, model, name, note="no --train-dir given")
        for name in ("memorization_pixels", "memorization_pixels_base"):
            out[name] = _metric(None, M.PIXEL_MODEL, name, note="no --train-dir given")
    if len(set(prompt_index)) < len(prompt_index):
        out["diversity"] = _metric(M.diversity(emb, prompt_index), model, "diversity",
                                   {"base": M.diversity(base_emb, prompt_index)})
    else:
        out["diversity"] = _metric(None, model, "diversity", note="needs at least two seeds per prompt")
    return out


def failure_checks(metrics: dict, with_images, record_ids: list[str], verdicts: list[dict],
                   drift_tolerance: float) -> dict:
    """The seed's failure list, each pass / fail / not-checked with a note saying why."""
    from loradex.trainer.eval_metrics import image_artifacts

    def check(status, note):
        return {"status": status, "note": note}

    t, tb = metrics["clip_t"]["value"], metrics["clip_t_base"]["value"]
    drift = check("fail" if t < tb - drift_tolerance else "pass",
                  f"clip_t {t:.4f} vs base {tb:.4f} (tolerance {drift_tolerance})")
    ref = metrics["style_reference_similarity"]
    if ref["value"] is None:
        style = check("not-checked", "no reference images")
    else:
        base = ref["details"]["base"]
        style = check("fail" if ref["value"] < base else "pass",
                      f"similarity to references {ref['value']:.4f} with adapter vs {base:.4f} without")
    bad = {rid: problems for rid, img in zip(record_ids, with_images) if (problems := image_artifacts(img))}
    artifacts = check("fail" if bad else "pass",
                      "; ".join(f"{rid}: {', '.join(p)}" for rid, p in bad.items())
                      or f"{len(with_images)} samples: none flat or clipped")
    mem = metrics["memorization"]
    if mem["value"] is None:
        copies = check("not-checked", "no training images to compare against")
    else:
        dupes = [record_ids[i] for i in mem["details"]["near_duplicates"]]
        copies = check("fail" if dupes else "pass",
                       f"near-duplicates of training images (cos ≥ {mem['details']['near_duplicate_threshold']}): "
                       + (", ".join(dupes) if dupes else "none") + " — a proxy; a person must still review "
                       "portraits and copyrighted material")
    rejected = [v for v in verdicts if v["verdict"] == "reject"]
    review = (check("not-checked", "no human verdicts recorded") if not verdicts else
              check("fail" if rejected else "pass",
                    f"{len(rejected)} of {len(verdicts)} samples rejected"
                    + (": " + "; ".join(f"{v['record_id']}: {v['reason']}" for v in rejected) if rejected else "")))
    return {"prompt_drift": drift, "style_mismatch": style, "artifacts": artifacts,
            "copyright_portrait": copies, "review_failure": review}


def technical_note(version) -> dict:
    probe = version.probe or {}
    training = probe.get("training") or {}
    ranks, alphas = probe.get("ranks") or [], probe.get("alphas") or []
    return {"method": probe.get("algorithm") or training.get("network_module") or probe.get("kind"),
            "rank": max(ranks) if ranks else None, "alpha": max(alphas) if alphas else None,
            "target_modules": list(probe.get("target_modules") or []),
            "steps": training.get("max_train_steps") or training.get("steps"),
            "format": probe.get("format"), "note": version.message or ""}


def known_base(catalog, ref: str) -> tuple[str, str] | None:
    """The base REF's version was used with before, and where that was found: the newest prompt
    record that rendered it (the exact base ref), else the base loradex trained it on (its training
    facts, then its ``trained_from`` lineage). None when nothing is known."""
    from loradex.registry.catalog.records import list_records

    version = catalog.resolve(ref)
    for record in list_records(catalog, version.ref, limit=1):
        return record.record["base"]["ref"], f"prompt record {record.id}"
    trained = ((version.extra or {}).get("training") or {}).get("base") or {}
    if trained.get("ref"):
        return trained["ref"], "its training base"
    for edge in catalog.lineage(version.ref):
        if edge.child == version.ref and edge.relation == "trained_from" and not edge.parent.startswith("dataset:"):
            parent = edge.parent
            if parent.startswith("base:"):
                parent = parent[len("base:"):].rpartition("@")[0] or parent[len("base:"):]
            return parent, f"its lineage ({edge.parent})"
    return None


def default_base(catalog, refs: list[str]) -> tuple[str, str]:
    """``--base`` when it was left out: the base every one of ``refs`` was used with before.
    One-line errors when none is known or the versions disagree."""
    found = {}
    for ref in (catalog.resolve(r).ref for r in refs):
        known = known_base(catalog, ref)
        if known is None:
            raise UsageError(f"{ref}: no base is known for this version (no prompt record, training base or "
                             f"lineage names one); pass --base BASE")
        found[ref] = known
    bases = {base for base, _ in found.values()}
    if len(bases) > 1:
        raise UsageError("the versions were used with different bases ("
                         + ", ".join(f"{r}: {b}" for r, (b, _) in found.items()) + "); pass --base BASE")
    base = bases.pop()
    return base, "; ".join(f"{r}: {why}" for r, (_, why) in found.items())


def evaluate(catalog, ref: str, prompts_file, options: EvalOptions, *, generator=None, embedder=None,
             progress: Callable[[int, int, str], None] | None = None):
    """Render, measure, judge, store. Returns the stored ``EvalCard``."""
    from loradex.registry.paths import current_user
    from loradex.registry.catalog.records import CARD_SCHEMA, now_iso, store_card
    from loradex.trainer.eval_metrics import get_embedder
    from loradex.trainer.generate import GenerateSettings, Generator

    version = catalog.resolve(ref)
    kind = catalog.get_adapter(version.adapter).kind
    if kind not in ("lora", "lycoris"):
        raise UsageError(f"eval renders LoRA/LyCORIS adapters; {version.ref} is a {kind}")
    prompts, suite_sha = load_suite(prompts_file)
    seeds = list(dict.fromkeys(int(s) for s in options.seeds))
    references = load_images(options.references) if options.references else []
    from .dataset import training_data_of

    data = training_data_of(catalog, version.ref)  # the data it was trained on: --train-dir's default
    train = load_images(options.train_dir) if options.train_dir else data.images(catalog) if data else []
    generator = generator or Generator(catalog, options.base)
    embedder = embedder or get_embedder(options.embedder)

    # the base family's defaults filled in once (steps, cfg, max_sequence_length …): the card says them
    common = generator.effective(GenerateSettings(
        negative=options.negative, steps=options.steps, cfg=options.cfg, width=options.width,
        height=options.height, scheduler=options.scheduler))
    settings = [replace(common, seed=s) for s in seeds]
    samples, with_images, base_images, clean, index = [], [], [], [], []
    total, done = 2 * len(prompts) * len(seeds), 0
    for i, prompt in enumerate(prompts):
        for s in settings:
            tagged = generator.generate(f"{prompt} <lora:{version.ref}:{options.weight}>", s, source="eval")
            plain = generator.generate(prompt, s, source="eval")
            samples.append({"prompt_index": i, "seed": s.seed, "with_adapter": tagged.record.id,
                            "without_adapter": plain.record.id})
            with_images.append(tagged.image)
            base_images.append(plain.image)
            clean.append(tagged.record.record["clean_prompt"])
            index.append(i)
            done += 2
            if progress:
                progress(done, total, f"prompt {i + 1}/{len(prompts)}")

    metrics = compute_metrics(embedder, with_images, base_images, clean, index,
                              [img for _, img, _ in references], [img for _, img, _ in train],
                              options.near_duplicate,
                              vae_round_trip(generator.pipe.vae, [img for _, img, _ in train]) if train else None)
    checks = failure_checks(metrics, with_images, [s["with_adapter"] for s in samples], [],
                            options.drift_tolerance)
    passed, reasons = verdict(metrics, checks, options.thresholds)
    card = {
        "schema": CARD_SCHEMA,
        "version": {"ref": version.ref, "sha256": version.sha256},
        "base": {"ref": generator.base.ref, "family": generator.base.family, "sha256": generator.base.hash},
        "prompt_suite": {"file": str(prompts_file), "sha256": suite_sha, "prompts": prompts},
        "seeds": seeds,
        "settings": {"steps": common.steps, "cfg": common.cfg, "width": options.width,
                     "height": options.height, "weight": float(options.weight),
                     "negative_prompt": options.negative},
        "embedder": embedder.describe(),
        "inputs": {"references": [{"sha256": sha, "path": p} for p, _, sha in references],
                   "train_images": [{"sha256": sha, "path": p} for p, _, sha in train],
                   **({"training_data": data.facts} if data else {})},
        "samples": samples,
        "metrics": metrics,
        "failure_checks": checks,
        "human_verdicts": [],
        "candidates": [],
        "technical_note": technical_note(version),
        "thresholds": {k: dict(v) for k, v in options.thresholds.items()},
        "passed": passed,
        "reasons": reasons,
        "created_at": now_iso(),
        "created_by": current_user(),
    }
    return store_card(catalog, card)


def parse_thresholds(minimums: list[str], maximums: list[str]) -> dict:
    """``["clip_t=0.25"]``, ``["memorization=0.9"]`` → ``{"clip_t": {"min": 0.25}, …}``."""
    out: dict[str, dict] = {}
    for bound, items in (("min", minimums), ("max", maximums)):
        for item in items:
            name, eq, value = item.partition("=")
            try:
                out.setdefault(name.strip(), {})[bound] = float(value)
            except ValueError:
                raise UsageError(f"--{bound} {item!r}: expected METRIC=NUMBER") from None
            if not eq or not name.strip():
                raise UsageError(f"--{bound} {item!r}: expected METRIC=NUMBER")
    return out
