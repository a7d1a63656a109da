"""Training data: the check (``registry/catalog/dataset_check.py``, re-exported here) and the
bucketed dataset a run reads.

``ImageCaptionDataset`` holds the decoded, bucketed images (uint8) and hands out batches as a
pure function of (seed, micro-batch index), so a resumed run sees exactly the batches an
uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from loradex.registry.errors import UsageError

from loradex.registry.catalog.dataset_check import (  # noqa: F401 - the trainer's names for them
    IMAGE_EXTS, MANIFEST_SCHEMA, MIN_IMAGES, NEAR_DUPLICATE_BITS, DatasetReport, ImageEntry, bucket_step,
    check_dataset, check_items, dhash, fit_to_bucket, hamming, image_files, make_buckets, manifest_sha256,
    nearest_bucket, read_caption)


# --- the training dataset -------------------------------------------------------------------

class ImageCaptionDataset:
    """Decoded images fitted to their buckets, kept as uint8 CHW tensors, with captions.

    Batches come from one bucket each (same size). ``epoch_batches(seed, epoch)`` shuffles
    within buckets and the batch order with a generator seeded from (seed, epoch) only.
    """

    def __init__(self, folder: str | os.PathLike, report: DatasetReport, *, batch_size: int):
        import numpy as np
        import torch
        from PIL import Image

        self.folder = Path(folder)
        self.batch_size = batch_size
        buckets = make_buckets(report.resolution)
        self.pixels: list[torch.Tensor] = []
        self.captions: list[str | None] = []
        self.bucket_of: list[tuple[int, int]] = []
        for entry in sorted(report.images, key=lambda e: e.file):
            with Image.open(self.folder / entry.file) as img:
                rgb = img.convert("RGB")
            bucket = nearest_bucket(rgb.width, rgb.height, buckets)
            fitted = fit_to_bucket(rgb, bucket)
            self.pixels.append(torch.from_numpy(np.asarray(fitted, dtype=np.uint8).copy()).permute(2, 0, 1))
            self.captions.append(entry.caption)
            self.bucket_of.append(bucket)
        self.groups: dict[tuple[int, int], list[int]] = {}
        for i, bucket in enumerate(self.bucket_of):
            self.groups.setdefault(bucket, []).append(i)
        self.batches_per_epoch = sum(math.ceil(len(ix) / batch_size) for ix in self.groups.values())

    def __len__(self) -> int:
        return len(self.pixels)

    def epoch_batches(self, seed: int, epoch: int) -> list[list[int]]:
        import torch

        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        batches = []
        for bucket in sorted(self.groups):
            ix = self.groups[bucket]
            order = [ix[j] for j in torch.randperm(len(ix), generator=gen).tolist()]
            batches += [order[k:k + self.batch_size] for k in range(0, len(order), self.batch_size)]
        perm = torch.randperm(len(batches), generator=gen).tolist()
        return [batches[j] for j in perm]

    def batch(self, seed: int, index: int) -> tuple["torch.Tensor", list[str | None]]:
        """Micro-batch number ``index`` (counting across epochs): pixels in [-1, 1], captions."""
        import torch

        epoch, k = divmod(index, self.batches_per_epoch)
        if getattr(self, "_order_key", None) != (seed, epoch):
            self._order_key, self._order = (seed, epoch), self.epoch_batches(seed, epoch)
        ids = self._order[k]
        pixels = torch.stack([self.pixels[i] for i in ids]).float() / 127.5 - 1.0
        return pixels, [self.captions[i] for i in ids]


# --- data given as a catalog dataset ref ------------------------------------------------------

def data_stem(data: str | None) -> str:
    """The name a run's outputs take after its data: the folder's name, or the dataset's."""
    from loradex.registry.catalog.datasets import is_dataset_ref, parse_dataset_ref

    if not data:
        return "run"
    if is_dataset_ref(data):
        return parse_dataset_ref(data).name
    return Path(data).name


@contextlib.contextmanager
def materialised_dataset(catalog, ref: str) -> Iterator[tuple[Path, Any]]:
    """(folder, DatasetVersion): the version exported under ``<home>/tmp`` (a held work folder,
    removed on exit; a killed run's is freed by ``gc``)."""
    from loradex.registry.catalog.datasets import export_dataset, get_dataset_version
    from loradex.registry.files.atomic_files import held_work_dir

    version = get_dataset_version(catalog, ref)
    with held_work_dir(Path(catalog.home) / "tmp", "dataset-") as work:
        folder = work / "data"
        export_dataset(catalog, version, folder)
        yield folder, version


def load_training_data(data: str, *, resolution: int, caption_ext: str, batch_size: int,
                       catalog=None) -> tuple[DatasetReport, "ImageCaptionDataset"]:
    """Check and load ``data``: a folder, or a dataset ref (``dataset:NAME@X.Y.Z``) exported for
    the run. A dataset's report names it (``dataset_ref``: the exact version, an alias resolved
    now), so the trained version's lineage can point at it."""
    from loradex.registry.catalog.datasets import is_dataset_ref
    from loradex.registry.errors import Conflict

    if not is_dataset_ref(data):
        report = check_dataset(data, resolution=resolution, caption_ext=caption_ext)
        report.raise_for_errors()
        return report, ImageCaptionDataset(data, report, batch_size=batch_size)
    if catalog is None:
        raise UsageError(f"--data {data}: a dataset ref needs the catalog (train through `loradex train`)")
    with materialised_dataset(catalog, data) as (folder, version):
        report = check_dataset(folder, resolution=resolution, caption_ext=version.manifest["caption_ext"])
        report.raise_for_errors()
        if report.manifest_sha256() != version.training_sha256:
            raise Conflict(f"{version.ref}: the exported folder does not match the stored manifest "
                           f"({report.manifest_sha256()[:12]}… vs {version.training_sha256[:12]}…)",
                           hint="run `loradex verify`")
        report.folder, report.dataset_ref = version.ref, version.ref
        report.dataset_manifest_sha256 = version.manifest_sha256
        return report, ImageCaptionDataset(folder, report, batch_size=batch_size)


def dataset_lineage_edges(report: DatasetReport) -> list[dict[str, Any]]:
    """The ``trained_from`` edge to the dataset version a run read, when it read one."""
    if not report.dataset_ref:
        return []
    return [{"relation": "trained_from", "external_parent": report.dataset_ref,
             "recipe": {"dataset": {"ref": report.dataset_ref,
                                    "dataset_manifest_sha256": report.dataset_manifest_sha256,
                                    "manifest_sha256": report.manifest_sha256(),
                                    "num_images": len(report.images), "warnings": report.warnings}}}]


# --- what a trained version was trained on (eval) ---------------------------------------------

@dataclass
class TrainingData:
    """The data behind a trained version, as its lineage records it."""

    facts: dict[str, Any]            # the card's inputs.training_data
    version: Any = None              # the DatasetVersion, when trained from a live one

    def images(self, catalog) -> list[tuple[str, Any, str]]:
        """(label, RGB image, sha256) of every image of the dataset version (``--train-dir``'s
        default); empty when the version was trained from a folder."""
        import io

        from PIL import Image

        out = []
        for image in (self.version.images if self.version else []):
            with catalog.blobs.open(image.sha256) as fh, Image.open(io.BytesIO(fh.read())) as img:
                out.append((f"{self.version.ref}/{image.file}", img.convert("RGB"), image.sha256))
        return out


def training_data_of(catalog, ref: str) -> TrainingData | None:
    """From ``ref``'s own ``trained_from`` edges: the dataset facts a run recorded (manifest hash,
    image count, the check's warnings) and, when it read a catalog dataset version, that version
    (its warnings from ``dataset add`` joined in: e.g. corrupt images left out). None when the
    version was not trained by loradex."""
    from loradex.registry.catalog.datasets import get_dataset_version, is_dataset_ref
    from loradex.registry.errors import NotFound

    version = catalog.resolve(ref)
    facts: dict[str, Any] = {}
    dataset_version = None
    for edge in catalog.lineage(version.ref):
        if edge.child != version.ref or edge.relation != "trained_from":
            continue
        recorded = (edge.recipe or {}).get("dataset") or {}
        if not recorded and not is_dataset_ref(edge.parent):
            continue  # e.g. a hand-made edge with no recipe: nothing known about the data
        if is_dataset_ref(edge.parent):
            facts["ref"] = edge.parent
            facts["dataset_manifest_sha256"] = recorded.get("dataset_manifest_sha256")
            try:
                dataset_version = get_dataset_version(catalog, edge.parent)
            except NotFound as exc:
                facts["note"] = str(exc)
        for key in ("manifest_sha256", "num_images"):
            if recorded.get(key) is not None:
                facts.setdefault(key, recorded[key])
        facts["warnings"] = list(dict.fromkeys([*facts.get("warnings", []), *(recorded.get("warnings") or [])]))
    if not facts:
        return None
    if dataset_version is not None:
        facts["warnings"] = list(dict.fromkeys([*dataset_version.warnings, *facts["warnings"]]))
    return TrainingData({k: v for k, v in facts.items() if v is not None}, dataset_version)
