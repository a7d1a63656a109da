"""Shared builders for the evidence tests (records, cards)."""

from __future__ import annotations

import copy
from datetime import datetime, timezone

from loradex.registry.records import RECORD_SCHEMA, new_record_id


def minimal_record(**overrides) -> dict:
    record = {
        "schema": RECORD_SCHEMA, "id": new_record_id(), "source": "generate",
        "prompt": "a red fox <lora:style@1.0.0:0.8>", "clean_prompt": "a red fox",
        "negative_prompt": "blurry", "seed": 7, "steps": 2, "cfg": 5.0, "width": 32, "height": 32,
        "scheduler": {"name": "DDIMScheduler", "config": {"num_train_timesteps": 1000}},
        "base": {"ref": "tiny-sd1", "family": "sd1", "sha256": "ab" * 32},
        "stack": [], "embeddings": [], "dtype": "float32", "device": "cpu",
        "libraries": {"torch": "2", "loradex": "0.1.0"}, "image_sha256": "cd" * 32,
        "created_at": datetime.now(timezone.utc).isoformat(), "created_by": "tester",
    }
    record.update(copy.deepcopy(overrides))
    return record
