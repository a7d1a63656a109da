"""Reduced crash-consistency run (issue 9): every op killed at each crash point plus random times.
The full run (≥ 100 kills per op) is bench/reliability_full.py."""

from __future__ import annotations

import os

import pytest

from _reliability import run_campaign

PER_OP = int(os.environ.get("LORADEX_RELIABILITY_TRIALS", "5"))  # the crash points, then random kills


@pytest.mark.reliability
@pytest.mark.parametrize("op", ["add", "alias-set", "rollback", "rm", "gc", "merge", "import", "push", "pull"])
def test_kill_minus_nine_leaves_home_consistent(op, tmp_path):
    (outcome,) = run_campaign(tmp_path, PER_OP, seed=sum(map(ord, op)), ops=[op])
    assert outcome.trials == PER_OP
    assert outcome.inconsistencies == []
    # the crash points must really have killed it (otherwise the test proves nothing)
    # (add, merge, import and pull pass all four write-path crash points; alias moves, rollback,
    # rm and push (its sync state) the two around the commit; gc its own two: after deleting one
    # of the home's two unreferenced blobs, and before sweeping the dead writers' temp files)
    assert outcome.killed >= {"add": 4, "merge": 4, "import": 4, "pull": 4}.get(op, 2)
