"""16 processes adding versions to one adapter at once: 16 distinct versions, no error (issue 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loradex.merge.synthetic_adapters import write_random_kohya_lora

WRITERS = 16


def _spawn_adds(files, env):
    exe = str(Path(sys.executable).with_name("loradex"))
    procs = [subprocess.Popen([exe, "add", str(f), "--name", "shared", "--json"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for f in files]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert "locked" not in err and "Traceback" not in err
        results.append(json.loads(out))
    return results


def _files(tmp_path):
    return [write_random_kohya_lora(tmp_path / f"f{i}.safetensors", seed=100 + i, rank=2) for i in range(WRITERS)]


def _check(results, env):
    versions = [r["version"] for r in results]
    assert len(set(versions)) == WRITERS
    exe = str(Path(sys.executable).with_name("loradex"))
    listed = json.loads(subprocess.run([exe, "versions", "shared", "--json"], env=env, capture_output=True,
                                       text=True, check=True).stdout)
    assert sorted(v["version"] for v in listed) == sorted(versions)
    assert subprocess.run([exe, "verify"], env=env, capture_output=True).returncode == 0


def test_sixteen_writers_sqlite_racing_on_first_use(tmp_path, loradex_home):
    """16 `loradex add` processes on a home that does not exist yet: the schema is created once,
    16 distinct versions, no error surfaces."""
    env = {**os.environ, "LORADEX_HOME": str(loradex_home)}
    _check(_spawn_adds(_files(tmp_path), env), env)


@pytest.mark.postgres
def test_sixteen_writers_postgres(tmp_path, loradex_home, pg_url):
    env = {**os.environ, "LORADEX_HOME": str(loradex_home), "LORADEX_DB": pg_url}
    _check(_spawn_adds(_files(tmp_path), env), env)
