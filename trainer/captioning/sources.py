"""Where a captioning model comes from, and its hash.

``resolve_model(path_or_id)`` answers a local folder: the folder itself, or the snapshot of a Hub
id already in the Hugging Face cache (``snapshot_download(…, local_files_only=True)``). loradex
never downloads a captioning model; a missing one is a one-line error naming it and saying how
to get it.

``model_sha256`` is the sha256 of the weight files: of the file itself when the model has one
(``model.safetensors``), else of the lines ``<sha256>  <relative name>\\n`` of each weight file in
name order (``sha256sum``'s format), so the same weights give the same hash wherever they live.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from loradex.registry.errors import InvalidFile, NotFound

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".msgpack", ".h5")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
MAX_WEIGHT_FILES = 256


@dataclass(frozen=True)
class ModelSource:
    id: str          # what the user gave: a folder or a Hub id
    folder: Path     # the local folder transformers reads
    sha256: str      # see the module docstring

    def to_dict(self) -> dict:
        return {"model": self.id, "folder": str(self.folder), "model_sha256": self.sha256}


def resolve_model(path_or_id: str, what: str = "captioning model") -> ModelSource:
    folder = Path(path_or_id).expanduser()
    if folder.is_dir():
        return ModelSource(str(path_or_id), folder, weights_sha256(folder))
    if folder.exists():
        raise InvalidFile(folder, f"is a file; a {what} is a folder (config.json + weights) or a Hub id")
    if not HUB_ID.match(path_or_id):
        raise NotFound(f"{what} {path_or_id!r} is not a folder", hint="give a model folder or a Hub id (owner/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = Path(snapshot_download(path_or_id, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        raise NotFound(f"{what} {path_or_id!r} is not in the Hugging Face cache; loradex downloads nothing",
                       hint=f"run `hf download {path_or_id}` first, or pass a local folder") from None
    return ModelSource(path_or_id, snapshot, weights_sha256(snapshot))


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        while n := fh.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def weight_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if len(files) > MAX_WEIGHT_FILES:
        raise InvalidFile(folder, f"holds {len(files)} weight files; a captioning model has a few")
    return files


def weights_sha256(folder: Path) -> str:
    files = weight_files(folder)
    if not files:
        raise InvalidFile(folder, "has no weight files (" + ", ".join(WEIGHT_SUFFIXES) + ")",
                          hint="give the folder a model was saved to (save_pretrained) or a cached Hub id")
    if len(files) == 1:
        return _file_sha256(files[0])
    lines = "".join(f"{_file_sha256(p)}  {p.relative_to(folder).as_posix()}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def model_type(source: ModelSource) -> str:
    """``model_type`` of the folder's config.json (read as outside data: capped, schema-checked)."""
    from loradex.registry.untrusted import check_schema, read_json_file

    path = source.folder / "config.json"
    if not path.is_file():
        raise InvalidFile(path, "missing: not a transformers model folder")
    config = read_json_file(path, max_bytes=4 << 20)
    check_schema(config, {"type": "object", "required": ["model_type"],
                          "properties": {"model_type": {"type": "string", "maxLength": 64}}}, str(path))
    return config["model_type"]


@contextlib.contextmanager
def quiet_transformers():
    """transformers prints a load report and progress bars per model and warns that the image
    processors fall back to PIL without torchvision: noise in a caption run's output."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_failed(source: ModelSource, what: str, exc: Exception) -> InvalidFile:
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return InvalidFile(source.folder, f"could not be loaded as a {what}: {first}",
                       hint=f"give a {what} folder saved by transformers (save_pretrained)")
