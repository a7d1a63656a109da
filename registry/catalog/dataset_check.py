"""The check of training data: images with sidecar captions, read once, judged, hashed.

``check_dataset(folder)`` is ``loradex dataset check``; it runs before every training run and on
``dataset add`` (the report is stored with the dataset version). ``check_items(items)`` is the
same check over (name, bytes, caption) triples, for dataset versions whose images are blobs.
Found: corrupt or unreadable images (an error naming them), images smaller than the training
resolution, exact duplicates (same bytes) and near duplicates (64-bit dHash within a Hamming
distance), missing captions, fewer than 30 images (a warning; 50–100 recommended), and the
aspect-ratio buckets the images fall into. Its manifest (file sha256, size, caption per image)
is serialised canonically and hashed; that hash goes into the lineage of the trained version.

Here (the registry) rather than in the trainer because a dataset version is a catalog object
and the catalog checks what it stores; PIL only, imported inside the functions.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import InvalidFile, UsageError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MIN_IMAGES = 30          # the seeds' rule of thumb: fewer is a warning
NEAR_DUPLICATE_BITS = 5  # dHash Hamming distance at or below which two images are near duplicates
MANIFEST_SCHEMA = "loradex.dataset-manifest/1"


# --- perceptual hash ------------------------------------------------------------------------

def dhash(image, size: int = 8) -> int:
    """Difference hash: grey, resize to (size+1)×size, one bit per horizontal neighbour pair
    (left brighter than right). 64 bits for size 8; robust to rescaling and re-encoding."""
    from PIL import Image

    grey = image.convert("L").resize((size + 1, size), Image.Resampling.LANCZOS)
    px = list(grey.getdata())
    bits = 0
    for row in range(size):
        for col in range(size):
            left, right = px[row * (size + 1) + col], px[row * (size + 1) + col + 1]
            bits = (bits << 1) | (1 if left > right else 0)
    return bits


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


# --- aspect buckets -------------------------------------------------------------------------

def bucket_step(resolution: int) -> int:
    # kohya uses 64-pixel steps at SD sizes; tiny test resolutions need finer steps
    return 64 if resolution >= 256 else 8


def make_buckets(resolution: int, *, max_ratio: float = 2.0) -> list[tuple[int, int]]:
    """(width, height) pairs, multiples of the bucket step, area ≤ resolution², aspect within
    [1/max_ratio, max_ratio]; each width paired with the tallest height that fits."""
    step = bucket_step(resolution)
    area = resolution * resolution
    buckets = set()
    width = step
    while width <= resolution * max_ratio:
        height = (area // width) // step * step
        height = min(height, int(resolution * max_ratio) // step * step)
        if height >= step and 1 / max_ratio <= width / height <= max_ratio:
            buckets.add((width, height))
            buckets.add((height, width))
        width += step
    return sorted(buckets)


def nearest_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    ratio = math.log(width / height)
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - ratio), -b[0] * b[1]))


def fit_to_bucket(image, bucket: tuple[int, int]):
    """Resize to cover the bucket, then centre-crop (no distortion)."""
    from PIL import Image

    bw, bh = bucket
    scale = max(bw / image.width, bh / image.height)
    w, h = max(bw, round(image.width * scale)), max(bh, round(image.height * scale))
    image = image.resize((w, h), Image.Resampling.LANCZOS)
    left, top = (w - bw) // 2, (h - bh) // 2
    return image.crop((left, top, left + bw, top + bh))


# --- the check ------------------------------------------------------------------------------

@dataclass
class ImageEntry:
    file: str            # relative to the dataset folder, posix
    sha256: str
    size: int
    width: int
    height: int
    caption: str | None  # None: no sidecar caption
    dhash: int
    format: str = ""     # what PIL decoded it as (PNG, JPEG, …); not in the manifest row (the
                         # trainer's manifest hash predates it)

    def manifest_row(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "size": self.size, "width": self.width,
                "height": self.height, "caption": self.caption}


@dataclass
class DatasetReport:
    folder: str
    resolution: int
    caption_ext: str
    images: list[ImageEntry] = field(default_factory=list)
    corrupt: list[dict[str, str]] = field(default_factory=list)       # {file, error}
    too_small: list[dict[str, Any]] = field(default_factory=list)     # {file, width, height}
    exact_duplicates: list[list[str]] = field(default_factory=list)   # groups of files
    near_duplicates: list[dict[str, Any]] = field(default_factory=list)  # {a, b, distance}
    missing_captions: list[str] = field(default_factory=list)
    buckets: dict[str, int] = field(default_factory=dict)             # "WxH" -> images
    warnings: list[str] = field(default_factory=list)
    # set when the folder is a materialised catalog dataset version (``dataset:NAME@X.Y.Z``):
    # the trained version's lineage then names it (trainer/registration.py)
    dataset_ref: str | None = None
    dataset_manifest_sha256: str | None = None

    @property
    def ok(self) -> bool:
        """No errors (corrupt images, no images at all); warnings do not count."""
        return not self.corrupt and bool(self.images)

    def manifest(self) -> dict[str, Any]:
        return {"schema": MANIFEST_SCHEMA, "caption_ext": self.caption_ext,
                "images": [e.manifest_row() for e in sorted(self.images, key=lambda e: e.file)]}

    def manifest_sha256(self) -> str:
        return manifest_sha256(self.manifest())

    def tag_frequency(self) -> dict[str, int]:
        """Comma-separated caption tags → number of images carrying each (kohya's ss_tag_frequency)."""
        counts: dict[str, int] = {}
        for entry in self.images:
            for tag in {t.strip() for t in (entry.caption or "").split(",") if t.strip()}:
                counts[tag] = counts.get(tag, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def to_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "ok": self.ok, "resolution": self.resolution,
                "num_images": len(self.images), "corrupt": self.corrupt, "too_small": self.too_small,
                "exact_duplicates": self.exact_duplicates, "near_duplicates": self.near_duplicates,
                "missing_captions": self.missing_captions, "buckets": self.buckets,
                "warnings": self.warnings, "manifest_sha256": self.manifest_sha256()}

    def raise_for_errors(self) -> None:
        if self.corrupt:
            names = ", ".join(f"{c['file']} ({c['error']})" for c in self.corrupt)
            raise InvalidFile(self.folder, f"{len(self.corrupt)} unreadable or corrupt image(s): {names}",
                              hint="remove or re-export them")
        if not self.images:
            raise UsageError(f"{self.folder}: no images ({', '.join(IMAGE_EXTS)})")


def manifest_sha256(manifest: dict[str, Any]) -> str:
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def read_caption(image_path: Path, caption_ext: str) -> str | None:
    sidecar = image_path.with_suffix(caption_ext)
    if not sidecar.is_file():
        return None
    return normal_caption(sidecar.read_text(encoding="utf-8", errors="replace"))


def check_dataset(folder: str | os.PathLike, *, resolution: int = 512, caption_ext: str = ".txt",
                  near_bits: int = NEAR_DUPLICATE_BITS, progress=None) -> DatasetReport:
    """Read every image once: decode fully (a truncated file fails here, not mid-training)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"dataset folder {folder} does not exist or is not a folder")
    caption_ext = normal_caption_ext(caption_ext)
    files = image_files(folder)
    items = ((path.relative_to(folder).as_posix(), path.read_bytes(), read_caption(path, caption_ext))
             for path in files)
    return check_items(items, folder=str(folder), total=len(files), resolution=resolution,
                       caption_ext=caption_ext, near_bits=near_bits, progress=progress)


CAPTION_EXT_RE = re.compile(r"\A\.[A-Za-z0-9]{1,16}\Z")


def normal_caption_ext(caption_ext: str) -> str:
    """``txt`` or ``.txt`` → ``.txt``; anything but a plain suffix (``../x``, ``.a.b``) is refused."""
    ext = caption_ext if caption_ext.startswith(".") else "." + caption_ext
    if not CAPTION_EXT_RE.match(ext):
        raise UsageError(f"caption extension {caption_ext!r} is not a plain file suffix",
                         hint="use e.g. .txt or .caption")
    return ext


def normal_caption(text: str) -> str:
    """A caption as training reads it: whitespace runs (newlines too) become one space."""
    return " ".join(text.split())


def check_items(items: Iterable[tuple[str, bytes, str | None]], *, folder: str, total: int,
                resolution: int = 512, caption_ext: str = ".txt", near_bits: int = NEAR_DUPLICATE_BITS,
                progress=None) -> DatasetReport:
    """The check over ``(relative name, image bytes, caption or None)``; ``folder`` names the
    data in messages (a folder, or a dataset ref)."""
    from PIL import Image

    report = DatasetReport(folder, resolution, normal_caption_ext(caption_ext))
    for i, (rel, data, caption) in enumerate(items):
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                image_format = img.format or ""
                rgb = img.convert("RGB")
        except Exception as exc:  # noqa: BLE001 - pillow raises many kinds for broken files
            report.corrupt.append({"file": rel, "error": f"{type(exc).__name__}: {exc}".strip()})
            continue
        entry = ImageEntry(rel, hashlib.sha256(data).hexdigest(), len(data), rgb.width, rgb.height,
                           caption, dhash(rgb), image_format)
        report.images.append(entry)
        if progress:
            progress(i + 1, total, rel)
    _find_problems(report, near_bits)
    return report


def _find_problems(report: DatasetReport, near_bits: int) -> None:
    res = report.resolution
    by_sha: dict[str, list[str]] = {}
    for e in report.images:
        by_sha.setdefault(e.sha256, []).append(e.file)
        if e.caption is None:
            report.missing_captions.append(e.file)
        if min(e.width, e.height) < res and e.width * e.height < res * res:
            report.too_small.append({"file": e.file, "width": e.width, "height": e.height})
    report.exact_duplicates = [files for files in by_sha.values() if len(files) > 1]
    # near duplicates among distinct files (pairwise: datasets are hundreds of images, not millions)
    unique = [e for e in report.images if by_sha[e.sha256][0] == e.file]
    for i, a in enumerate(unique):
        for b in unique[i + 1:]:
            d = hamming(a.dhash, b.dhash)
            if d <= near_bits:
                report.near_duplicates.append({"a": a.file, "b": b.file, "distance": d})
    buckets = make_buckets(res)
    for e in report.images:
        w, h = nearest_bucket(e.width, e.height, buckets)
        key = f"{w}x{h}"
        report.buckets[key] = report.buckets.get(key, 0) + 1
    report.buckets = dict(sorted(report.buckets.items()))
    n = len(report.images)
    if n < MIN_IMAGES:
        report.warnings.append(f"only {n} image(s): fewer than {MIN_IMAGES} rarely trains well "
                               "(50–100 are recommended)")
    if report.too_small:
        report.warnings.append(f"{len(report.too_small)} image(s) smaller than {res}px will be upscaled")
    if report.missing_captions:
        report.warnings.append(f"{len(report.missing_captions)} image(s) without a {report.caption_ext} caption")
    if report.exact_duplicates:
        report.warnings.append(f"{sum(len(g) - 1 for g in report.exact_duplicates)} exact duplicate(s)")
    if report.near_duplicates:
        report.warnings.append(f"{len(report.near_duplicates)} near-duplicate pair(s)")


