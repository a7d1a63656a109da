"""16 processes doing mixed adds, alias moves, rollbacks and removals on one home (issue 9).
CI runs a few seconds per database; bench/reliability_full.py runs ≥ 60 s."""

from __future__ import annotations

import os

import pytest

from _concurrency_check import check_final_state, run_writers

SECONDS = float(os.environ.get("LORADEX_CONCURRENCY_SECONDS", "5"))


@pytest.mark.reliability
def test_mixed_writers_sqlite(tmp_path, loradex_home):
    env = {**os.environ, "LORADEX_HOME": str(loradex_home)}
    entries = run_writers(tmp_path, env, seconds=SECONDS)
    assert sum(e["ok"] for e in entries) > 16, "the writers did almost nothing"
    assert check_final_state(entries, env) == []


@pytest.mark.reliability
@pytest.mark.postgres
def test_mixed_writers_postgres(tmp_path, loradex_home, pg_url):
    env = {**os.environ, "LORADEX_HOME": str(loradex_home), "LORADEX_DB": pg_url}
    entries = run_writers(tmp_path, env, seconds=SECONDS)
    assert sum(e["ok"] for e in entries) > 16
    assert check_final_state(entries, env) == []
