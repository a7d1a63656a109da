"""Disk full (issue 9): adding a file when the blob directory is on a nearly full file system
fails with one actionable line, registers nothing and leaves no temp file; the home stays
verify-clean and the adapters already there are intact.

The blob directory is a 1 MiB tmpfs mounted by the test (needs root or CAP_SYS_ADMIN; skipped
with the reason otherwise). A 4 MiB copy chunk is bigger than the whole file system, so this also
covers the short write that an unbuffered ``write`` reports only in its return value."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from loradex.merge.synthetic_adapters import write_random_kohya_lora
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import CatalogError, NotFound
from loradex.registry.catalog.maintenance import verify

FS_BYTES = 1 << 20


@pytest.fixture
def small_blob_fs(loradex_home):
    blobs = loradex_home / "blobs"
    blobs.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no `mount` command: cannot make a small file system for the disk-full test")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", str(blobs)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a {FS_BYTES >> 20} MiB tmpfs (needs root or CAP_SYS_ADMIN): "
                    f"{made.stderr.strip() or made.returncode}")
    try:
        yield blobs
    finally:
        subprocess.run(["umount", "-l", str(blobs)], check=False)


def _temp_files(blobs):
    return sorted(p.name for p in blobs.rglob(".tmp-loradex-*"))


def test_add_on_a_full_blob_disk_fails_cleanly(small_blob_fs, tmp_path, loradex_home):
    from test_catalog import run_loradex

    small = write_random_kohya_lora(tmp_path / "small.safetensors", rank=4, seed=1)
    big = write_random_kohya_lora(tmp_path / "big.safetensors", rank=128, seed=2)
    assert small.stat().st_size < FS_BYTES // 4 and big.stat().st_size > FS_BYTES
    catalog = Catalog(loradex_home)
    kept = add_file(catalog, small, name="small").version  # the file system is now nearly full

    with pytest.raises(CatalogError) as info:
        add_file(catalog, big, name="big")
    message = str(info.value)
    assert "no space left" in message and "ENOSPC" in message and str(big) in message, message
    assert "nothing was added" in message and "\n" not in message
    with pytest.raises(NotFound):
        catalog.versions("big")
    assert _temp_files(small_blob_fs) == []

    # bytes stored from memory (records, previews) take the same path
    with pytest.raises(CatalogError, match="ENOSPC"):
        catalog.blobs.add_bytes(b"\0" * FS_BYTES)
    assert _temp_files(small_blob_fs) == []

    # the CLI: one line naming the problem and what to do, exit 1, nothing registered
    proc = run_loradex("add", str(big), "--name", "big", home=loradex_home)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: no space left") and "ENOSPC" in line and "loradex gc" in line, line
    assert _temp_files(small_blob_fs) == []

    assert [(a.name, a.latest) for a in catalog.list_adapters()] == [("small", "1.0.0")]
    report = verify(catalog)
    assert report.ok and report.checked_blobs == 1 and report.unreferenced == [], json.dumps(report.to_dict())
    assert catalog.resolve("small@1.0.0").sha256 == kept.sha256
