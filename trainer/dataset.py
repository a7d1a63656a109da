"""Training data: the check (``registry/catalog/dataset_check.py``, re-exported here) and the
bucketed dataset a run reads.

``ImageCaptionDataset`` holds the decoded, bucketed images (uint8) and hands out batches as a
pure function of (seed, micro-batch index), so a resumed run sees exactly the batches an
uninterrupted one would.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

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
