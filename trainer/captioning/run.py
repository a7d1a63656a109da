"""A caption run: a captioner over a folder (``.txt`` sidecars written) or over a dataset version
(a NEW version saved with the captions and their records).

Which images get a caption: with ``mode="overwrite"`` every image; with ``"missing-only"`` the
images without one; with no mode every image too, but only when none has a caption yet — an
existing caption is never replaced unless asked (the run stops before captioning anything,
naming how many there are and the two flags).

A folder run writes each caption atomically (temporary file + rename) and records the run in
``.loradex-captions.json`` beside the images (file → caption file, caption text and
``caption_source``, merged with earlier runs; see ``registry.catalog.dataset_captions``): a later
``dataset add DIR`` keeps each record, or marks a caption edited by hand since. A dataset run
stores the records in the new version's manifest (``caption_source`` per image); a run that
yields the captions and records the version already has saves nothing (``CaptionRun.unchanged``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from loradex.registry.errors import UsageError

MODES = ("missing-only", "overwrite")


@dataclass
class CaptionRun:
    target: str                          # the folder, or the dataset version captioned
    captioner: str
    record: dict                         # the caption_source of every caption written
    captions: dict[str, str] = field(default_factory=dict)   # file → new caption
    kept: list[str] = field(default_factory=list)            # files whose caption was kept
    version: object | None = None        # the new DatasetVersion (dataset runs)
    unchanged: bool = False              # dataset run: every caption and record as the version had them

    def to_dict(self) -> dict:
        out = {"target": self.target, "captioner": self.captioner, "record": self.record,
               "captioned": len(self.captions), "kept": len(self.kept), "captions": self.captions,
               "unchanged": self.unchanged}
        if self.version is not None:
            out["version"] = self.version.ref
        return out


def images_to_caption(existing: dict[str, str | None], mode: str | None, where: str) -> list[str]:
    """The files a run captions (see the module docstring), in name order."""
    if mode is not None and mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    have = sorted(f for f, c in existing.items() if c)
    if mode is None and have:
        raise UsageError(f"{where}: {len(have)} of {len(existing)} image(s) already have captions",
                         hint="pass --missing-only to caption the others, or --overwrite to replace them")
    if mode == "missing-only":
        return sorted(f for f, c in existing.items() if not c)
    return sorted(existing)


def caption_images(captioner, files: list[str], open_image: Callable[[str], object],
                   progress: Callable | None = None) -> dict[str, str]:
    """file → caption, in batches of ``settings.batch_size``; ``open_image(file)`` gives a PIL image."""
    out: dict[str, str] = {}
    size = captioner.settings.batch_size
    for start in range(0, len(files), size):
        batch = files[start:start + size]
        images = [open_image(f) for f in batch]
        for f, caption in zip(batch, captioner.caption(images)):
            out[f] = caption
        if progress:
            progress(len(out), len(files), "captioning")
    return out


def _open_file(path: Path):
    from PIL import Image

    with Image.open(path) as img:
        return img.convert("RGB")


def caption_folder(folder, captioner, *, mode: str | None = None, caption_ext: str = ".txt",
                   progress: Callable | None = None) -> CaptionRun:
    """Caption the images of ``folder`` (sidecar ``caption_ext`` files)."""
    from loradex.registry.catalog.dataset_captions import read_caption_records, write_caption_records
    from loradex.registry.catalog.dataset_check import image_files, normal_caption_ext, read_caption
    from loradex.registry.files.atomic_files import atomic_output

    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder", hint="give an image folder or a dataset:NAME ref")
    caption_ext = normal_caption_ext(caption_ext)
    paths = {p.relative_to(folder).as_posix(): p for p in image_files(folder)}
    if not paths:
        raise UsageError(f"{folder}: no images to caption")
    existing = {rel: read_caption(p, caption_ext) for rel, p in paths.items()}
    todo = images_to_caption(existing, mode, str(folder))
    earlier = read_caption_records(folder)  # a damaged records file stops the run before any caption
    record = captioner.record()
    captions = caption_images(captioner, todo, lambda rel: _open_file(paths[rel]), progress)
    written = {}
    for rel, caption in captions.items():
        sidecar = paths[rel].with_suffix(caption_ext)
        with atomic_output(sidecar, "w") as fh:
            fh.write(caption)
        written[rel] = {"caption_file": sidecar.relative_to(folder).as_posix(), "caption": caption, "source": record}
    if written:
        write_caption_records(folder, {**earlier, **written})
    return CaptionRun(str(folder), captioner.name, record, captions,
                      kept=sorted(set(existing) - set(captions)))


def caption_dataset(catalog, ref: str, captioner, *, mode: str | None = None, message: str = "",
                    progress: Callable | None = None) -> CaptionRun:
    """Caption the images of dataset version ``ref`` and save a new version of the same dataset
    with the captions and their records. Nothing to caption, or every caption and record as
    ``ref`` has them (``run.unchanged``): no version is saved."""
    import io

    from PIL import Image

    from loradex.registry.catalog.dataset_check import normal_caption
    from loradex.registry.catalog.datasets import add_dataset_version, get_dataset_version

    version = get_dataset_version(catalog, ref)
    images = {image.file: image for image in version.images}
    todo = images_to_caption({f: i.caption for f, i in images.items()}, mode, version.ref)
    record = captioner.record()

    def open_image(file: str):
        with catalog.blobs.open(images[file].sha256) as fh:
            data = fh.read()
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB")

    captions = caption_images(captioner, todo, open_image, progress)
    run = CaptionRun(version.ref, captioner.name, record, captions, kept=sorted(set(images) - set(captions)))
    # the same texts from the same captioner, model and settings: a version identical to ``ref``
    # would say nothing (another model giving the same texts is new provenance: a new version)
    run.unchanged = bool(captions) and all(
        normal_caption(text) == images[f].caption and images[f].caption_source == record for f, text in captions.items())
    if captions and not run.unchanged:
        model = record["model"]
        run.version = add_dataset_version(
            catalog, version.images, name=version.dataset, captions=captions,
            caption_records={f: record for f in captions},
            message=message or f"captioned by {captioner.name} ({model}) from {version.ref}: {len(captions)} image(s)",
            caption_ext=version.manifest.get("caption_ext", ".txt"),
            resolution=int(version.report.get("resolution") or 512))
    return run


def caption_target(target: str, captioner_name: str, model: str, *, clip_model: str | None = None,
                   settings=None, mode: str | None = None, caption_ext: str = ".txt", message: str = "",
                   home=None, progress: Callable | None = None) -> CaptionRun:
    """``loradex dataset caption TARGET``: a ``dataset:`` ref names a dataset version; otherwise an
    existing folder is captioned in place, and anything else is read as a dataset ref."""
    from loradex.registry.catalog.datasets import is_dataset_ref

    from . import load_captioner

    from loradex.registry.catalog.dataset_check import image_files, normal_caption_ext, read_caption

    # refused targets and modes fail before a model loads (seconds to minutes)
    is_folder = not is_dataset_ref(target) and Path(target).is_dir()
    if is_folder:
        ext = normal_caption_ext(caption_ext)
        images_to_caption({p.relative_to(target).as_posix(): read_caption(p, ext) for p in image_files(Path(target))},
                          mode, target)
    else:
        from loradex.registry.catalog.datasets import get_dataset_version
        from loradex.registry.catalog.store import Catalog

        catalog = Catalog(home)
        version = get_dataset_version(catalog, target)
        ref = version.ref
        images_to_caption({i.file: i.caption for i in version.images}, mode, ref)
    captioner = load_captioner(captioner_name, model, clip_model=clip_model, settings=settings)
    if is_folder:
        return caption_folder(target, captioner, mode=mode, caption_ext=caption_ext, progress=progress)
    return caption_dataset(catalog, ref, captioner, mode=mode, message=message, progress=progress)
