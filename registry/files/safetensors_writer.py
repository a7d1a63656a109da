"""Byte-stable safetensors files: the same tensors and metadata give the same sha256 every run.

safetensors writes ``__metadata__`` from a hash map whose order changes from one process to the
next, so two saves of identical content can differ — which defeats content addressing (the same
adapter stored twice) and recipe replay. Here the tensor bytes come from safetensors itself and
the header is re-serialised with sorted keys, padded with spaces to 8 bytes as safetensors does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import threading
from pathlib import Path


def deterministic_safetensors_parts(state_dict: dict, metadata: dict[str, str] | None = None, *,
                                    hash_key: str | None = None) -> tuple[bytes, memoryview, str]:
    """(length prefix + header, data section, sha256 of the data section = AutoV3): the file is
    the first two joined. The data section is a view into safetensors' own buffer, so a writer can
    send it to disk without another copy of the tensors.

    The data section does not depend on the metadata, so its hash is known before the metadata is
    written; ``hash_key`` (e.g. ``"modelspec.hash_sha256"``) stores it there as ``0x<hex>``.
    """
    from safetensors.torch import save

    tensors = {k: state_dict[k].contiguous() for k in sorted(state_dict)}
    # AutoV3 is hashed from the tensors on a second thread while safetensors serialises them (it
    # releases the GIL), in the order its data section is expected to have; the header then
    # confirms the order, or the hash is taken from the serialised bytes.
    predicted = sorted(tensors, key=lambda k: _data_order_key(k, tensors[k]))
    early = hashlib.sha256()
    with _alongside(_hash_tensors, early, [tensors[k] for k in predicted]):
        blob = save(tensors)
    header_len = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + header_len])
    header.pop("__metadata__", None)
    data = memoryview(blob)[8 + header_len:]
    in_file_order = sorted(header, key=lambda k: header[k]["data_offsets"][0])
    if in_file_order == predicted:
        data_hash = early.hexdigest()
    else:
        data_hash = hashlib.sha256(data).hexdigest()
    meta = dict(metadata or {})
    if hash_key:
        meta[hash_key] = "0x" + data_hash
    if meta:
        header["__metadata__"] = dict(sorted(meta.items()))
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text, data, data_hash


# within one element size, the order safetensors gives dtypes in its data section (checked after
# every write; a dtype not listed only costs the early hash)
_DTYPE_ORDER = ("float64", "float32", "int32", "bfloat16", "float16")


def _data_order_key(name: str, tensor) -> tuple:
    dtype = str(tensor.dtype).removeprefix("torch.")
    rank = _DTYPE_ORDER.index(dtype) if dtype in _DTYPE_ORDER else len(_DTYPE_ORDER)
    return -tensor.element_size(), rank, name


@contextlib.contextmanager
def _alongside(target, *args):
    """Run ``target(*args)`` on a second thread for the duration of the block (hashlib releases
    the GIL on large buffers, so hashing overlaps safetensors' serialising or the disk write)."""
    thread = threading.Thread(target=target, args=args, name="loradex-hash")
    thread.start()
    try:
        yield
    finally:
        thread.join()


def _hash_tensors(hasher, tensors) -> None:
    import torch

    for tensor in tensors:
        hasher.update(tensor.detach().reshape(-1).view(torch.uint8).numpy())


def deterministic_safetensors(state_dict: dict, metadata: dict[str, str] | None = None, *,
                              hash_key: str | None = None) -> tuple[bytes, str]:
    """(file bytes, sha256 of the data section = AutoV3); see ``deterministic_safetensors_parts``."""
    head, data, data_hash = deterministic_safetensors_parts(state_dict, metadata, hash_key=hash_key)
    return head + data, data_hash


def save_safetensors(state_dict: dict, dest: str | Path, metadata: dict[str, str] | None = None, *,
                     hash_key: str | None = None) -> str:
    """Write ``dest`` atomically and byte-stably; returns the data-section sha256 (AutoV3).

    The whole-file hashes are computed on a second thread while the bytes go to disk and kept
    for ``hashes_of_written`` (the blob store then need not read the file again)."""
    from .atomic_files import atomic_output
    from .hashing import MultiHasher

    head, data, data_hash = deterministic_safetensors_parts(state_dict, metadata, hash_key=hash_key)
    hasher = MultiHasher()

    def hash_whole_file() -> None:  # sha256 + AutoV1; AutoV3 is data_hash
        for start, view in ((0, memoryview(head)), (len(head), data)):
            hasher.observe(view, start)
            hasher.update_main(view, start)

    with _alongside(hash_whole_file), atomic_output(dest) as fh:
        fh.write(head)
        fh.write(data)
    hashes = dataclasses.replace(hasher.result(), autov3=data_hash)
    stat = os.stat(dest)
    with _WRITTEN_LOCK:
        _WRITTEN[str(Path(dest).resolve())] = (_stat_key(stat), hashes)
        while len(_WRITTEN) > _WRITTEN_KEPT:  # a bulk export writes thousands: keep the latest few
            del _WRITTEN[next(iter(_WRITTEN))]
    return data_hash


# files this process wrote with save_safetensors → (their stat identity then, their hashes)
_WRITTEN: dict[str, tuple[tuple, object]] = {}
_WRITTEN_KEPT = 16
_WRITTEN_LOCK = threading.Lock()


def _stat_key(stat: os.stat_result) -> tuple:
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def hashes_of_written(path: str | Path):
    """The ``FileHashes`` of a file this process wrote with ``save_safetensors``, if it is still
    the same file (device, inode, size and mtime unchanged); else None. Each answer is given once."""
    key = str(Path(path).resolve())
    with _WRITTEN_LOCK:
        entry = _WRITTEN.pop(key, None)
    if entry is None:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    identity, hashes = entry
    return hashes if _stat_key(stat) == identity else None
