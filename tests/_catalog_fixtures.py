"""Catalog fixture databases: one SQLite catalog per released schema revision (issue 9,
"a database created by the first released schema upgrades to head with data intact").

Each fixture is made by running alembic up to that revision only, then inserting rows with plain
SQL against the tables *as they were at that revision* (reflected from the database, not taken
from today's ORM), so a fixture keeps describing the old schema whatever ``db_schema.py`` becomes.
The committed files live in tests/fixtures/catalog-<revision>.sqlite; tests/test_migrations.py
copies each, opens it with ``Catalog`` (which migrates to head) and reads it back.

Regenerate (e.g. after adding a migration, make the fixture of the revision that is no longer
head)::

    .venv/bin/python tests/_catalog_fixtures.py                # every revision
    .venv/bin/python tests/_catalog_fixtures.py 0002_alias_policies

The blobs are not stored in the fixtures: ``BLOBS`` holds their bytes (tiny safetensors files) and
the test writes them into the home, so ``verify`` can re-hash them.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent
FIXTURES = ROOT / "fixtures"
MIGRATIONS = ROOT.parent / "registry" / "catalog" / "migrations"


def fixture_path(revision: str) -> Path:
    return FIXTURES / f"catalog-{revision}.sqlite"


def tiny_safetensors(tensor: str, values: tuple[float, ...], metadata: dict[str, str]) -> bytes:
    """A valid one-tensor F32 safetensors file, byte-stable (sorted keys, padded header)."""
    header = {"__metadata__": metadata,
              tensor: {"dtype": "F32", "shape": [len(values)], "data_offsets": [0, 4 * len(values)]}}
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + struct.pack(f"<{len(values)}f", *values)


BLOBS: dict[str, bytes] = {
    "style@1.0.0": tiny_safetensors("lora_unet_down.lora_down.weight", (0.5, -0.25), {"ss_network_dim": "1"}),
    "style@1.1.0": tiny_safetensors("lora_unet_down.lora_down.weight", (0.75, -0.5), {"ss_network_dim": "1"}),
    "neg@1.0.0": tiny_safetensors("emb_params", (0.125, 0.0, -1.0), {}),
    "blend@1.0.0": tiny_safetensors("lora_unet_down.lora_down.weight", (0.125, 0.0), {"ss_network_dim": "2"}),
}
# style@2.0.0 was removed and its blob freed by gc before the fixture was taken: no blob.
REMOVED_SHA = hashlib.sha256(b"style 2.0.0, removed").hexdigest()


def sha(ref: str) -> str:
    return hashlib.sha256(BLOBS[ref]).hexdigest()


def _at(day: int, hour: int = 9) -> datetime:
    return datetime(2025, 1, day, hour, 0, tzinfo=timezone.utc)


def _version(vid: int, adapter_id: int, version: str, sort_key: str, digest: str, *, kind: str,
             file_format: str, file_name: str, day: int, deleted: bool = False, **extra) -> dict:
    return {
        "id": vid, "adapter_id": adapter_id, "version": version, "sort_key": sort_key,
        "sha256": digest, "live_sha256": None if deleted else digest, "autov1": None,
        "autov2": digest[:10], "autov3": None,
        "size": len(BLOBS.get(f"{_NAMES[adapter_id]}@{version}", b"")) or 2048,  # removed: blob gone
        "file_format": file_format, "file_name": file_name,
        "probe": {"format": file_format, "kind": kind, "base": "sd1", "warnings": []},
        "file_metadata": {}, "trigger_words": extra.get("trigger_words", []), "extra": {},
        "message": extra.get("message", ""), "created_at": _at(day), "created_by": "alice",
        "deleted_at": _at(day + 1) if deleted else None, "deleted_by": "bob" if deleted else None,
    }


_NAMES = {1: "style", 2: "neg", 3: "blend"}
_R = "0000000001.{:010d}.0000000000.~"  # refs.sort_key of 1.N.0

ROWS: dict[str, list[dict]] = {
    "adapters": [
        {"id": 1, "name": "style", "kind": "lora", "base": "sd1", "description": "watercolour style",
         "tags": {"team": "art"}, "created_at": _at(2)},
        {"id": 2, "name": "neg", "kind": "embedding", "base": "sd1", "description": "", "tags": {},
         "created_at": _at(3)},
        {"id": 3, "name": "blend", "kind": "lora", "base": "sd1", "description": "", "tags": {},
         "created_at": _at(6)},
    ],
    "versions": [
        _version(1, 1, "1.0.0", _R.format(0), sha("style@1.0.0"), kind="lora", file_format="kohya-lora",
                 file_name="style_v1.safetensors", day=2, trigger_words=["wtrclr"], message="first cut"),
        _version(2, 1, "1.1.0", _R.format(1), sha("style@1.1.0"), kind="lora", file_format="kohya-lora",
                 file_name="style_v2.safetensors", day=4, trigger_words=["wtrclr"]),
        _version(3, 1, "2.0.0", "0000000002.0000000000.0000000000.~", REMOVED_SHA, kind="lora",
                 file_format="kohya-lora", file_name="style_v3.safetensors", day=5, deleted=True),
        _version(4, 2, "1.0.0", _R.format(0), sha("neg@1.0.0"), kind="embedding",
                 file_format="diffusers-embedding", file_name="neg.safetensors", day=3),
        _version(5, 3, "1.0.0", _R.format(0), sha("blend@1.0.0"), kind="lora", file_format="kohya-lora",
                 file_name="blend.safetensors", day=6),
    ],
    "aliases": [
        {"id": 1, "adapter_id": 1, "name": "production", "version_id": 2},
        {"id": 2, "adapter_id": 1, "name": "staging", "version_id": 1},
    ],
    "alias_events": [
        {"id": 1, "adapter_id": 1, "alias": "production", "action": "set", "from_version_id": None,
         "to_version_id": 1, "at": _at(2, 10), "by": "alice", "reason": ""},
        {"id": 2, "adapter_id": 1, "alias": "production", "action": "set", "from_version_id": 1,
         "to_version_id": 2, "at": _at(4, 10), "by": "alice", "reason": "sharper"},
        {"id": 3, "adapter_id": 1, "alias": "staging", "action": "set", "from_version_id": None,
         "to_version_id": 1, "at": _at(4, 11), "by": "bob", "reason": ""},
        {"id": 4, "adapter_id": 1, "alias": "production", "action": "rollback", "from_version_id": 2,
         "to_version_id": 1, "at": _at(5, 10), "by": "bob", "reason": "colour shift"},
        {"id": 5, "adapter_id": 1, "alias": "production", "action": "set", "from_version_id": 1,
         "to_version_id": 2, "at": _at(5, 12), "by": "alice", "reason": "fixed upstream"},
    ],
    "lineage": [
        {"id": 1, "child_version_id": 5, "parent_version_id": 1, "parent_ref": None, "relation": "merged_from",
         "recipe": {"method": "concat", "weight": 0.7}, "created_at": _at(6)},
        {"id": 2, "child_version_id": 5, "parent_version_id": 2, "parent_ref": None, "relation": "merged_from",
         "recipe": {"method": "concat", "weight": -0.3}, "created_at": _at(6)},
        {"id": 3, "child_version_id": 4, "parent_version_id": None, "parent_ref": "hf://someone/neg@abc123",
         "relation": "pulled_from", "recipe": {}, "created_at": _at(3)},
    ],
    "prompt_records": [
        {"id": "0123456789abcdef", "image_sha256": None, "created_at": _at(7), "created_by": "alice",
         "record": {"id": "0123456789abcdef", "prompt": "a harbour, <lora:style:0.8>",
                    "stack": [{"ref": "style@1.1.0", "sha256": sha("style@1.1.0"), "weight": 0.8}],
                    "seed": 7, "created_at": "2025-01-07T09:00:00+00:00", "created_by": "alice"}},
    ],
    "prompt_record_versions": [{"record_id": "0123456789abcdef", "version_id": 2}],
    "eval_cards": [
        {"id": 1, "version_id": 2, "passed": True, "created_at": _at(4, 9), "created_by": "ci",
         "card": {"version": {"ref": "style@1.1.0", "sha256": sha("style@1.1.0")}, "passed": True,
                  "reasons": [], "metrics": {"clip_score": {"value": 0.31}}}},
    ],
    "remotes": [
        {"id": 1, "name": "team", "kind": "mirror", "url": "http://127.0.0.1:8765/team", "settings": {},
         "created_at": _at(2)},
    ],
    "sync_state": [
        {"id": 1, "remote_id": 1, "version_id": 2, "direction": "push", "remote_ref": "team/style@1.1.0",
         "remote_oid": sha("style@1.1.0"), "at": _at(4, 12)},
    ],
    "file_cache": [
        {"path": "/models/Lora/style_v1.safetensors", "size": len(BLOBS["style@1.0.0"]), "mtime_ns": 1,
         "inode": 42, "sha256": sha("style@1.0.0"), "outcome": {"ref": "style@1.0.0"}},
    ],
    # since 0002_alias_policies: production needs a passing eval card with clip_score >= 0.25
    "alias_policies": [
        {"id": 1, "adapter_id": 1, "alias": "production", "require_pass": True,
         "minimums": {"clip_score": 0.25}, "maximums": {}, "updated_at": _at(4, 8), "updated_by": "alice"},
    ],
}


def revisions() -> list[str]:
    """Every migration revision, oldest first."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return [s.revision for s in reversed(list(ScriptDirectory.from_config(cfg).walk_revisions()))]


def make_fixture(revision: str, dest: Path) -> Path:
    """A SQLite catalog at ``revision`` holding ``ROWS`` (tables the revision lacks are skipped)."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import MetaData, create_engine

    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    url = f"sqlite:///{dest}"
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, revision)
    engine = create_engine(url)
    tables = MetaData()
    tables.reflect(engine)
    with engine.begin() as conn:
        for name, rows in ROWS.items():
            if name in tables.tables:
                conn.execute(tables.tables[name].insert(), rows)
    with engine.connect() as conn:
        conn.exec_driver_sql("VACUUM")
    engine.dispose()
    return dest


def main(argv: list[str]) -> int:
    for revision in argv or revisions():
        print(make_fixture(revision, fixture_path(revision)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
