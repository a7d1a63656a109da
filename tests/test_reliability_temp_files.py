"""Temp files of killed writers (issue 9: "temp files left by killed writers are cleaned by the
next run or gc"). ``atomic_output``/``atomic_path`` temp files are flock'ed by their writer like
the blob store's, so gc (over the whole home) and the next writer into the same directory remove
exactly the ones whose writer is dead, and never a live writer's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from loradex.registry.files import atomic_files
from loradex.registry.files.atomic_files import TMP_PREFIX, atomic_output, atomic_path, locked_temp_file
from loradex.registry.catalog.store import Catalog
from loradex.registry.catalog.maintenance import gc

KILLED_WRITER = """
import os, signal, sys
from loradex.registry.files.atomic_files import atomic_output
with atomic_output(sys.argv[1]) as fh:
    fh.write(b"x" * 1000)
    fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _kill_a_writer_of(dest: Path) -> Path:
    """Run an ``atomic_output`` writer of ``dest`` in a subprocess that SIGKILLs itself mid-write;
    returns the temp file it left."""
    before = set(dest.parent.glob(f"{TMP_PREFIX}*")) if dest.parent.is_dir() else set()
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(dest)], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not dest.exists()
    (left,) = set(dest.parent.glob(f"{TMP_PREFIX}*")) - before
    assert left.stat().st_size == 1000
    return left


def _temps(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(f"{TMP_PREFIX}*"))


def test_gc_removes_dead_writers_temp_files_anywhere_in_the_home_but_not_live_ones(loradex_home):
    catalog = Catalog(loradex_home)
    dead_export = _kill_a_writer_of(loradex_home / "exports" / "style.safetensors")
    catalog.blobs.root.mkdir(parents=True, exist_ok=True)
    dead_blob = catalog.blobs.root / f"{TMP_PREFIX}killed-add"  # what a killed add leaves
    dead_blob.write_bytes(b"y" * 24)
    temp_dir = loradex_home / "exports" / f"{TMP_PREFIX}dir"  # temp directories are not swept
    temp_dir.mkdir()

    with atomic_output(loradex_home / "records" / "live.json", "w") as fh:
        fh.write("{}")
        (live,) = (loradex_home / "records").glob(f"{TMP_PREFIX}*")
        report = gc(catalog)
        assert (report.temp_files_removed, report.temp_bytes_freed) == (2, 1024)
        assert not dead_export.exists() and not dead_blob.exists() and live.exists() and temp_dir.is_dir()
    assert (loradex_home / "records" / "live.json").read_text() == "{}"
    assert _temps(loradex_home) == [f"exports/{TMP_PREFIX}dir"]
    assert gc(catalog).temp_files_removed == 0


def test_next_writer_into_a_directory_removes_dead_temp_files_only(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    live_fd, live = locked_temp_file(out)  # another process's writer, still at work
    try:
        dead = _kill_a_writer_of(out / "a.safetensors")
        with atomic_path(out / "c.safetensors") as path:  # the next run: sweeps, then writes
            assert not dead.exists() and live.exists()
            path.write_bytes(b"c")
        assert (out / "c.safetensors").read_bytes() == b"c"
        assert _temps(out) == [live.name]
    finally:
        os.close(live_fd)


def test_a_temp_file_swept_before_its_writer_locked_it_is_replaced(tmp_path, monkeypatch):
    """The instant between creating a temp file and locking it: a sweeper may delete the file; the
    writer notices its file has no name and makes another, instead of writing into nowhere."""
    made = []
    real_mkstemp = atomic_files.tempfile.mkstemp

    def mkstemp_swept_once(**kwargs):
        fd, name = real_mkstemp(**kwargs)
        made.append(Path(name))
        if len(made) == 1:
            Path(name).unlink()  # the sweeper got there first
        return fd, name

    monkeypatch.setattr(atomic_files.tempfile, "mkstemp", mkstemp_swept_once)
    fd, path = locked_temp_file(tmp_path)
    try:
        assert len(made) == 2 and path == made[1] and path.is_file() and not made[0].exists()
    finally:
        os.close(fd)


KILLED_MERGE_WORK = """
import os, signal, sys
from pathlib import Path
from loradex.registry.files.atomic_files import held_work_dir
with held_work_dir(Path(sys.argv[1]), prefix="merge-") as work:
    (work / "mix.safetensors").write_bytes(b"z" * 4096)  # a finished output not yet moved
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_gc_removes_the_work_folder_of_a_killed_merge_but_not_a_live_one(loradex_home):
    """A merge writes its output in a held work folder under <home>/tmp and moves it into the
    store; killed in between, the folder (with a whole output in it) is gc's to remove."""
    from loradex.registry.files.atomic_files import held_work_dir

    catalog = Catalog(loradex_home)
    work_root = loradex_home / "tmp"
    proc = subprocess.run([sys.executable, "-c", KILLED_MERGE_WORK, str(work_root)], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (dead,) = work_root.iterdir()
    assert (dead / "mix.safetensors").stat().st_size == 4096
    other = work_root / "hub-push-abc"  # a folder without a work lock: not ours to judge
    other.mkdir()
    with held_work_dir(work_root, prefix="merge-") as live:
        (live / "out.safetensors").write_bytes(b"w" * 10)
        report = gc(catalog)
        assert report.work_dirs_removed == 1 and report.temp_bytes_freed >= 4096
        assert not dead.exists() and live.is_dir() and other.is_dir()
        assert (live / "out.safetensors").exists()
    assert not live.exists()
    assert gc(catalog).work_dirs_removed == 0
