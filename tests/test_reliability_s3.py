"""The kill -9 campaign (tests/_reliability.py) on homes whose blobs live in S3 (moto on
127.0.0.1, tests/_s3.py): add, gc, push and pull killed at each crash point and at random
times; after each kill the home must verify clean, the re-run must complete, and the next gc
must leave no unreferenced object, staged upload, multipart upload or upload record."""

from __future__ import annotations

import os

import pytest

import _s3
from _reliability import run_campaign

PER_OP = int(os.environ.get("LORADEX_RELIABILITY_TRIALS", "5"))
s3_server = _s3.s3_server  # the fixture


@pytest.mark.reliability
@pytest.mark.parametrize("op", ["add", "gc", "push", "pull"])
def test_kill_minus_nine_leaves_an_s3_home_consistent(op, tmp_path, s3_server, monkeypatch):
    env = _s3.s3_environment(s3_server, _s3.make_bucket(s3_server))
    for key, value in env.items():
        if key != "LORADEX_BLOBS":  # each home records its own prefix under the bucket
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("LORADEX_GC_GRACE_SECONDS", "0")  # one process at a time: no grace needed
    monkeypatch.setenv("LORADEX_BLOB_UPLOAD_STALE_SECONDS", "0")  # a killed writer's record goes at the next gc
    (outcome,) = run_campaign(tmp_path, PER_OP, seed=sum(map(ord, op)), ops=[op],
                              blobs_location=env["LORADEX_BLOBS"])
    assert outcome.trials == PER_OP
    assert outcome.inconsistencies == []
    assert outcome.killed >= {"add": 4, "pull": 4}.get(op, 2)
