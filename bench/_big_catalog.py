"""A large, realistic catalog for the benches: by default 10,000 adapters × 10 versions = 100,000
versions, with descriptions, tags, trigger words, kohya/ModelSpec metadata, aliases with their
history, and prompt records (with prompts) linked to versions; the search index built over all
of it. Rows are bulk-inserted (no per-version transaction), then ``search_index.rebuild`` fills
the index exactly as migration 0004 does for an existing catalog.

    from bench._big_catalog import build_big_catalog
    catalog = build_big_catalog(home)                  # SQLite catalog.db in HOME
    catalog = build_big_catalog(home, db_url=PG_URL)   # an empty PostgreSQL database

A home already holding a catalog built with the same arguments is reused (``big-catalog.json``
in the home records them); ``reuse=False`` refuses a non-empty one instead. Words are drawn from
a fixed vocabulary with a Zipf-like frequency, so some words are in many documents and most in
few; ``WORDS`` and the name pattern let a bench pick queries with known selectivity:

* adapter ``i`` (0-based) is named ``{WORDS[..]}-{WORDS[..]}-{i:05d}``, its trigger word is
  ``trg{i:05d}`` (every version), its versions are ``1.0.0`` … ``1.{n-1}.0``;
* one prompt record per ``records_every`` versions, prompt ``"<words>, <lora:NAME@VER:0.8>"``;
* aliases: ``production`` on the latest version of every second adapter, ``staging`` on an
  earlier version of every fifth, each with its ``set`` event;
* 1 version in 50 is soft-deleted.
"""

from __future__ import annotations

import hashlib
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

KINDS = ("lora",) * 12 + ("lycoris",) * 4 + ("embedding",) * 3 + ("checkpoint",)
BASES = ("sd1",) * 5 + ("sdxl",) * 6 + ("flux",) * 3 + ("sd2", "sd3", "unknown")
TEAMS = ("art", "games", "film", "ads", "research", "ops", "mobile", "print")
USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")
MARKER = "big-catalog.json"
# Real words first (so the common ones read naturally), then made-up ones to reach 3,000.
_REAL = ("style portrait anime photo realistic painting watercolor neon city night forest castle "
         "character dragon armor sword cyberpunk fantasy landscape sunset ocean mountain flower "
         "girl boy knight robot cat dog bird pixel sketch ink oil cinematic lighting detailed "
         "soft sharp vintage retro futuristic gothic steampunk minimal abstract surreal dreamy "
         "glow rain snow desert jungle temple street market harbor lighthouse windmill bridge").split()


def _vocabulary(size: int = 3000) -> list[str]:
    rng = random.Random(1818)
    syllables = ["ka", "ri", "mo", "ta", "lun", "ve", "shi", "zor", "pa", "el", "dra", "qu", "xi", "bo",
                 "ne", "fa", "gri", "tho", "mi", "sa", "ul", "ko", "ra", "vin", "del", "phe", "yo", "cu"]
    words, seen = list(_REAL), set(_REAL)
    while len(words) < size:
        word = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


WORDS = _vocabulary()
_WEIGHTS = [1.0 / (rank + 1) for rank in range(len(WORDS))]  # Zipf: WORDS[0] is the most common


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(WORDS, weights=_WEIGHTS, k=n))


def _params(adapters: int, versions_per_adapter: int, records_every: int, seed: int) -> dict:
    return {"adapters": adapters, "versions_per_adapter": versions_per_adapter, "records_every": records_every,
            "seed": seed, "schema": "big-catalog/1"}


def build_big_catalog(home: str | Path, *, adapters: int = 10_000, versions_per_adapter: int = 10,
                      records_every: int = 5, db_url: str | None = None, seed: int = 18, reuse: bool = True,
                      log=None):
    """Build (or reuse) the big catalog in ``home`` (SQLite) or in ``db_url`` (an empty
    database); returns the open ``Catalog``. ``log``: a callable taking progress lines."""
    from sqlalchemy import text

    from loradex.registry.catalog.store import Catalog

    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    params = _params(adapters, versions_per_adapter, records_every, seed)
    catalog = Catalog(home, db_url=db_url)
    marker = home / MARKER
    recorded = json.loads(marker.read_text()) if marker.exists() else None
    count = catalog.read(lambda s: s.execute(text("SELECT count(*) FROM versions")).scalar())
    if count:
        if reuse and recorded == {**params, "db": catalog.url, "versions": count}:
            return catalog
        raise RuntimeError(f"{catalog.url} already holds {count} versions not built with these arguments")
    _populate(catalog, params, log or (lambda line: None))
    marker.write_text(json.dumps({**params, "db": catalog.url, "versions": adapters * versions_per_adapter}))
    return catalog


def _populate(catalog, params: dict, log) -> None:
    from sqlalchemy import text

    from loradex.registry.catalog import search_index
    from loradex.registry.catalog.db_schema import (AdapterRow, AliasEventRow, AliasRow, PromptRecordRow,
                                                    PromptRecordVersionRow, VersionRow)
    from loradex.registry.catalog.records import RECORD_SCHEMA
    from loradex.registry.catalog.refs import sort_key

    rng = random.Random(params["seed"])
    n_adapters, per, every = params["adapters"], params["versions_per_adapter"], params["records_every"]
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    adapters, versions, aliases, events, records, links = [], [], [], [], [], []
    vid = 0
    for a in range(n_adapters):
        aid = a + 1
        name = f"{rng.choice(WORDS[:400])}-{rng.choice(WORDS[:400])}-{a:05d}"
        kind, base = KINDS[a % len(KINDS)], BASES[a % len(BASES)]
        born = start + timedelta(minutes=rng.randint(0, 300 * 24 * 60))
        adapters.append({"id": aid, "name": name, "kind": kind, "base": base, "description": _text(rng, 12),
                         "tags": {"team": TEAMS[a % len(TEAMS)], "style": rng.choice(WORDS[:20])},
                         "created_at": born})
        ids = []
        for j in range(per):
            vid += 1
            ids.append(vid)
            version = f"1.{j}.0"
            sha = hashlib.sha256(f"big {aid} {j}".encode()).hexdigest()
            deleted = vid % 50 == 0 and j != per - 1
            at = born + timedelta(hours=j * rng.randint(1, 200))
            tags = {w: rng.randint(1, 40) for w in rng.choices(WORDS, weights=_WEIGHTS, k=12)}
            versions.append({
                "id": vid, "adapter_id": aid, "version": version, "sort_key": sort_key(version), "sha256": sha,
                "live_sha256": None if deleted else sha, "autov1": sha[:8], "autov2": sha[:10], "autov3": sha[:12],
                "size": rng.randint(1 << 20, 200 << 20), "file_format": "safetensors",
                "file_name": f"{name}-v{j}.safetensors", "probe": {"kind": kind, "base": base, "rank": 16},
                "file_metadata": {"ss_network_dim": "16", "ss_tag_frequency": json.dumps({"10_data": tags}),
                                  "modelspec.title": f"{name} {version}", "modelspec.description": _text(rng, 6)},
                "trigger_words": [f"trg{a:05d}"], "extra": {}, "message": _text(rng, 5), "created_at": at,
                "created_by": USERS[(a + j) % len(USERS)], "deleted_at": at if deleted else None,
                "deleted_by": "bench" if deleted else None,
            })
            if vid % every == 0 and not deleted:
                rid = f"{vid:016x}"
                prompt = f"{_text(rng, 8)}, <lora:{name}@{version}:0.8>"
                records.append({"id": rid, "image_sha256": None, "created_at": at, "created_by": "bench",
                                "record": _record(RECORD_SCHEMA, rid, prompt, name, version, sha, base, at)})
                links.append({"record_id": rid, "version_id": vid})
        live = [i for i in ids if versions[i - 1]["deleted_at"] is None]
        targets = []
        if a % 2 == 0:
            targets.append(("production", live[-1]))
        if a % 5 == 0 and len(live) > 1:
            targets.append(("staging", live[-2]))
        for alias, target in targets:
            aliases.append({"adapter_id": aid, "name": alias, "version_id": target})
            events.append({"adapter_id": aid, "alias": alias, "action": "set", "from_version_id": None,
                           "to_version_id": target, "at": versions[target - 1]["created_at"],
                           "by": USERS[a % len(USERS)], "reason": "bench"})
    log(f"inserting {len(adapters)} adapters, {len(versions)} versions, {len(records)} prompt records")
    with catalog.engine.connect().execution_options(loradex_write=True) as conn:
        for table, rows in ((AdapterRow, adapters), (VersionRow, versions), (AliasRow, aliases),
                            (AliasEventRow, events), (PromptRecordRow, records), (PromptRecordVersionRow, links)):
            for i in range(0, len(rows), 5000):
                conn.execute(table.__table__.insert(), rows[i:i + 5000])
        log("building the search index")
        search_index.rebuild(conn)
        conn.commit()
    # Planner statistics, and on PostgreSQL the visibility map a bulk load leaves unset (without
    # it every count and index-only scan reads the heap): what a catalog in use has.
    with catalog.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE" if conn.dialect.name == "postgresql" else "ANALYZE"))


def _record(schema, rid, prompt, name, version, sha, base, at) -> dict:
    return {
        "schema": schema, "id": rid, "source": "generate", "prompt": prompt, "clean_prompt": prompt.split(", <")[0],
        "negative_prompt": "blurry", "seed": int(rid, 16) % 100_000, "steps": 20, "cfg": 7.0, "width": 512,
        "height": 512, "scheduler": {"name": "DDIMScheduler", "config": {"num_train_timesteps": 1000}},
        "base": {"ref": f"base-{base}", "family": base, "sha256": "ab" * 32},
        "stack": [{"requested": f"{name}@{version}", "ref": f"{name}@{version}", "sha256": sha,
                   "te_weight": 0.8, "unet_weight": 0.8}],
        "embeddings": [], "dtype": "float16", "device": "cuda", "libraries": {"torch": "2", "loradex": "0.1.0"},
        "image_sha256": hashlib.sha256(rid.encode()).hexdigest(), "created_at": at.isoformat(),
        "created_by": "bench",
    }
