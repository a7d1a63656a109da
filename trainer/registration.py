"""A finished run becomes catalog versions, with what is needed to reproduce and judge it.

- the file carries kohya ``ss_*`` and ``modelspec.*`` metadata (base name and hash, seed, steps,
  dataset facts, ``ss_tag_frequency`` from the captions → trigger words);
- the version has lineage ``trained_from`` the base: a catalog ref when the base is a catalog
  version, else the external ``base:<ref>@<sha256>``; the edge's recipe holds the resolved
  config, the dataset manifest and its sha256, the seed, library versions and the loss curve;
- ``version.extra["training"]`` repeats the facts a later run needs (the base, whether the file
  is a bare state dict) and the sample prompt-record ids;
- every sample (``--sample-every`` and final) is stored as a prompt record (``source =
  "train-sample"``, PNG blob with the record in its text chunks) naming the file its image was
  made with: the version, or the pre-release of its step (see ``store_sample_records``);
- with ``register_checkpoints``, intermediate exports become pre-releases ``X.Y.Z-step.N`` of the
  version the final file gets.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from loradex.families import find_family
from loradex.families.vocabulary import kohya_base_model_version, modelspec_architecture
from loradex.registry.errors import NotFound

# ModelSpec's prediction types (sd-scripts writes these two only); a flow-matching family records
# none rather than a wrong one
MODELSPEC_PREDICTION = {"v_prediction": "v", "epsilon": "epsilon"}


# --- file metadata ---------------------------------------------------------------------------

def _kohya_ss_v2(family: str | None) -> bool:
    """kohya's ``ss_v2`` flag: what the family's vocabulary declares (SD 2.x: True)."""
    found = find_family(family)
    vocab = found.aspect("vocabulary") if found is not None else None
    return bool(getattr(vocab, "KOHYA_SS_V2", False))


def _common_facts(run, step: int) -> dict[str, str]:
    c = run.config
    report = run.report
    return {
        "ss_output_name": c.output_name,
        "ss_sd_model_name": run.base.ref,
        "ss_new_sd_model_hash": run.base.hash,
        "ss_seed": str(c.seed),
        "ss_steps": str(step),
        "ss_max_train_steps": str(step),
        "ss_learning_rate": str(c.lr),
        "ss_lr_scheduler": c.lr_scheduler,
        "ss_lr_warmup_steps": str(c.lr_warmup_steps),
        "ss_optimizer": "torch.optim.AdamW",
        "ss_batch_size_per_device": str(c.batch_size),
        "ss_gradient_accumulation_steps": str(c.grad_accum),
        "ss_total_batch_size": str(c.batch_size * c.grad_accum * run.accelerator.num_processes),
        "ss_resolution": f"({c.resolution}, {c.resolution})",
        "ss_mixed_precision": c.mixed_precision,
        "ss_gradient_checkpointing": str(c.gradient_checkpointing),
        "ss_noise_offset": str(c.noise_offset) if c.noise_offset else "None",
        "ss_min_snr_gamma": str(c.snr_gamma) if c.snr_gamma else "None",
        "ss_num_train_images": str(len(report.images)),
        "ss_num_reg_images": str(run.extra.get("num_class_images", 0)),
        "ss_dataset_dirs": json.dumps({Path(report.folder).name: {"n_repeats": 1, "img_count": len(report.images)}}),
        "ss_tag_frequency": json.dumps({Path(report.folder).name: report.tag_frequency()}, ensure_ascii=False),
        "ss_v2": str(_kohya_ss_v2(run.family)),
        "ss_training_comment": f"loradex {c.method}",
        "loradex.dataset_manifest_sha256": report.manifest_sha256(),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.implementation": "https://github.com/huggingface/diffusers",
        "modelspec.title": c.output_name,
        "modelspec.date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
        "modelspec.resolution": f"{c.resolution}x{c.resolution}",
        **({"modelspec.prediction_type": MODELSPEC_PREDICTION[run.prediction_type]}
           if run.prediction_type in MODELSPEC_PREDICTION else {}),
        **({"ss_base_model_version": version} if (version := kohya_base_model_version(run.family)) else {}),
        **run.objective.kohya_metadata,  # the family objective's own facts (Flux/SD3: timestep sampling …)
    }


def _architecture(run, kind: str) -> dict[str, str]:
    """``modelspec.architecture`` of the family for an output of ``kind`` (lora, embedding, checkpoint)."""
    arch = modelspec_architecture(run.family, kind)
    return {"modelspec.architecture": arch} if arch else {}


def lora_training_metadata(run, step: int) -> dict[str, str]:
    c = run.config
    args = {"conv_dim": str(c.conv_rank), "conv_alpha": str(c.conv_alpha)} if c.conv_rank else {}
    meta = {**_common_facts(run, step), **_architecture(run, "lora"),
            "ss_network_module": "networks.lora",
            "ss_network_dim": str(c.rank),
            "ss_network_alpha": str(c.alpha),
            "ss_unet_lr": str(c.lr),
            "ss_text_encoder_lr": str(c.text_encoder_lr or c.lr) if c.train_text_encoder else "None",
            "ss_network_train_unet_only": str(not c.train_text_encoder)}
    if args:
        meta["ss_network_args"] = json.dumps(args)
    if c.method == "dreambooth-lora":
        meta["modelspec.trigger_phrase"] = c.instance_prompt
    return meta


def embedding_training_metadata(run, step: int) -> dict[str, str]:
    c = run.config
    return {**_common_facts(run, step), **_architecture(run, "embedding"),
            "ss_token": c.token, "ss_init_token": c.init_token, "ss_num_vectors": str(c.num_vectors),
            "modelspec.trigger_phrase": c.token}


def checkpoint_training_metadata(run, step: int) -> dict[str, str]:
    c = run.config
    return {**_common_facts(run, step), **_architecture(run, "checkpoint"),
            "ss_train_text_encoder": str(c.train_text_encoder),
            "modelspec.trigger_phrase": c.instance_prompt or "",
            "loradex.layout": "diffusers-unet+text_encoder" if c.train_text_encoder else "diffusers-unet"}


# --- registering ---------------------------------------------------------------------------

def target_version(catalog, name: str, bump: str | None) -> str:
    """The release the final file will get: bump the highest release (pre-releases ignored)."""
    from loradex.registry.catalog.refs import parse_version

    try:
        versions = catalog.versions(name)
    except NotFound:
        return "1.0.0"
    releases = [parse_version(v.version) for v in versions if not parse_version(v.version).prerelease]
    if not releases:
        return "1.0.0"
    top = max(releases)
    return str({"major": top.bump_major, "patch": top.bump_patch}.get(bump or "minor", top.bump_minor)())


def lineage_edge(result, version_ref_hint: str | None = None) -> dict[str, Any]:
    recipe = {
        "method": result.config.method,
        "config": result.config.to_dict(),
        "seed": result.config.seed,
        "steps": result.steps,
        "base": result.base.to_dict(),
        "dataset": {"manifest_sha256": result.dataset.manifest_sha256(), "manifest": result.dataset.manifest(),
                    "num_images": len(result.dataset.images), "warnings": result.dataset.warnings},
        "libraries": result.libraries,
        "loss": result.loss_summary(),
        "prediction_type": result.prediction_type,
        "seconds": round(result.seconds, 3),
    }
    if result.base_catalog_ref:
        return {"relation": "trained_from", "parent": result.base_catalog_ref, "recipe": recipe}
    return {"relation": "trained_from", "external_parent": f"base:{result.base.ref}@{result.base.hash}",
            "recipe": recipe}


def _training_extra(result, step: int, weights: str) -> dict[str, Any]:
    base = result.base.to_dict()
    if result.base_catalog_ref:
        base["ref"] = result.base_catalog_ref
    return {"training": {"method": result.config.method, "step": step, "seed": result.config.seed,
                         "base": base, "weights": weights,
                         "dataset_manifest_sha256": result.dataset.manifest_sha256(),
                         "token": result.config.token}}


def register_run(catalog, result, *, progress=None) -> list:
    """Add the checkpoints (if asked) and the final file; store the samples as prompt records.
    Returns the ``AddResult``s, final version last."""
    from loradex.registry.catalog.adding import add_file

    c = result.config
    version = c.version or target_version(catalog, c.name, c.bump)
    weights = "state_dict" if result.output.kind == "checkpoint" else "adapter"
    edge = lineage_edge(result)
    from .dataset import dataset_lineage_edges

    data_edges = dataset_lineage_edges(result.dataset)  # trained_from dataset:NAME@X.Y.Z, when it was one
    added, by_step = [], {}
    if c.register_checkpoints:
        for ckpt in result.checkpoints:
            export = ckpt["export"]
            by_step[ckpt["step"]] = add_file(
                catalog, export["path"], name=c.name, version=f"{version}-step.{ckpt['step']}",
                kind=export["kind"], base=result.base.family, triggers=export["triggers"] or None,
                message=f"{c.method} checkpoint at step {ckpt['step']}",
                extra=_training_extra(result, ckpt["step"], weights),
                lineage=[{**edge, "recipe": {**edge["recipe"], "steps": ckpt["step"]}}, *data_edges],
                progress=progress)
            added.append(by_step[ckpt["step"]])
    final = add_file(catalog, result.output.path, name=c.name, version=version, kind=result.output.kind,
                     base=result.base.family, triggers=result.output.triggers or None,
                     message=c.message or f"trained: {c.method}, {result.steps} steps, seed {c.seed}",
                     extra=_training_extra(result, result.steps, weights), lineage=[edge, *data_edges],
                     progress=progress)
    records = store_sample_records(catalog, final.version, result,
                                   {step: a.version for step, a in by_step.items()})
    for i, a in enumerate(added):  # a pre-release lists the samples made with its weights
        ids = [r.id for r in records if a.version.ref in r.versions]
        if ids:
            _set_sample_ids(catalog, a.version, ids)
            added[i] = dataclasses.replace(a, version=catalog.resolve(a.version.ref))
    if records:  # the release lists every sample of the run
        _set_sample_ids(catalog, final.version, [r.id for r in records])
        final = dataclasses.replace(final, version=catalog.resolve(final.version.ref))
    added.append(final)
    return added


def train_and_register(config, *, catalog=None, progress=None, log=None):
    """``train`` then, when ``catalog`` is given and ``config.register``, ``register_run`` (by the
    main process only, in a multi-process run): (TrainResult, [AddResult])."""
    from .train_loop import train

    result = train(config, catalog=catalog, progress=progress, log=log)
    registering = catalog is not None and config.register and result.main_process
    added = register_run(catalog, result) if registering else []
    return result, added


def _set_sample_ids(catalog, version, ids: list[str]) -> None:
    from loradex.registry.catalog.db_schema import VersionRow

    def write(s):
        row = s.get(VersionRow, version.id)
        extra = dict(row.extra or {})
        training = dict(extra.get("training") or {})
        training["sample_records"] = ids
        extra["training"] = training
        row.extra = extra

    catalog.transact(write)


def store_sample_records(catalog, version, result, step_versions: dict | None = None) -> list:
    """One prompt record per sample (``--sample-every`` ones first, then the final ones), its
    PNG stored as a blob. A final sample names ``version``; an intermediate one names the
    pre-release registered at its step (``step_versions``, from ``--register-checkpoints``), else
    — its weights were never registered — only the final ref as ``requested``, with no exact
    ref, so it is kept as evidence but ``render`` says it cannot be re-rendered."""
    from PIL import Image

    from loradex.registry.paths import current_user
    from loradex.registry.catalog.records import (RECORD_SCHEMA, new_record_id, now_iso, pixel_sha256,
                                          png_with_record, store_record)
    from loradex.trainer.generate import LIBRARIES as RENDER_LIBRARIES
    from loradex.trainer.render import render_profile

    step_versions = step_versions or {}
    out = []
    kind = result.output.kind
    for sample in result.intermediate_samples + result.samples:
        made_by = version if sample.step == result.steps else step_versions.get(sample.step)
        notes = f"training sample at step {sample.step}"
        if sample.step != result.steps:
            notes += f" of {result.steps}"
            if made_by is None:
                notes += (": those weights were not registered (train with --save-every and "
                          "--register-checkpoints to keep them), so it cannot be re-rendered")
        exact = {"ref": made_by.ref, "sha256": made_by.sha256} if made_by else {"ref": None, "sha256": None}
        with Image.open(sample.path) as img:
            image = img.convert("RGB")
        stack_entry = {"requested": version.ref, **exact, "kind": kind, "te_weight": 1.0, "unet_weight": 1.0,
                       "autov3": made_by.autov3 if made_by else None}
        record = {
            "schema": RECORD_SCHEMA, "id": new_record_id(), "source": "train-sample",
            "prompt": sample.prompt, "clean_prompt": sample.prompt, "negative_prompt": "",
            "seed": sample.seed, "steps": sample.steps, "cfg": sample.cfg,
            "width": sample.width, "height": sample.height,
            # as generate records it: name None = the base's own sampler, which the samples used
            "scheduler": {"name": None, "config": {"class": result.scheduler["name"], **result.scheduler["config"]}},
            "base": {"ref": result.base_catalog_ref or result.base.ref, "family": result.base.family,
                     "sha256": result.base.hash},
            "stack": [stack_entry],
            "embeddings": ([{"token": result.config.token, **exact}] if kind == "embedding" else []),
            "dtype": "float32" if result.config.mixed_precision == "no" else result.config.mixed_precision,
            "device": "cpu" if not _cuda() else "cuda",
            # the libraries render --check compares (the run's own list has more)
            "libraries": {k: v for k, v in result.libraries.items() if k in RENDER_LIBRARIES},
            "image_sha256": pixel_sha256(image),
            "created_at": now_iso(), "created_by": current_user(),
            "notes": notes,
        }
        family_settings = render_profile(result.base.family).record_fields(sample.fields)
        if family_settings is not None:  # Flux/SD3: what the sample was rendered with beyond the common fields
            record["family_settings"] = family_settings
        out.append(store_record(catalog, record, png_with_record(image, record)))
    return out


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
