"""Run N concurrent writers (tests/_concurrency_worker.py) and check the final state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from loradex.merge.synthetic_adapters import write_random_kohya_lora
from loradex.registry.catalog import Catalog

WORKER = Path(__file__).with_name("_concurrency_worker.py")


def run_writers(root: Path, env: dict, *, writers: int = 16, seconds: float = 6.0, files_each: int = 12) -> list[dict]:
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    for w in range(writers):
        for i in range(files_each):
            write_random_kohya_lora(files / f"w{w:02d}_{i:03d}.safetensors", seed=w * 1000 + i, rank=1,
                                    modules={"lora_unet_x_to_q": (8, 8)})
    subprocess.run([str(Path(sys.executable).with_name("loradex")), "init"], env=env, check=True,
                   capture_output=True)
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(w), str(files), str(seconds),
                               str(root / f"log{w}.jsonl")], env=env, stderr=subprocess.PIPE, text=True)
             for w in range(writers)]
    for p in procs:
        _, err = p.communicate(timeout=seconds + 300)
        assert p.returncode == 0, err
    entries = []
    for w in range(writers):
        entries += [json.loads(line) for line in (root / f"log{w}.jsonl").read_text().splitlines()]
    return entries


def check_final_state(entries: list[dict], env: dict) -> list[str]:
    problems = [f"error reached the user: {e['error']}" for e in entries if e.get("fatal")]
    catalog = Catalog(env["LORADEX_HOME"], db_url=env.get("LORADEX_DB"))
    added = {e["ref"]: e["sha256"] for e in entries if e["op"] == "add" and e["ok"]}
    removed = {e["ref"] for e in entries if e["op"] == "rm" and e["ok"]}
    in_db, deleted_in_db = {}, set()
    for name in ("alpha", "beta"):
        try:
            versions = catalog.versions(name, include_deleted=True)
        except LookupError:
            continue
        for v in versions:
            in_db[v.ref] = v.sha256
            if v.deleted:
                deleted_in_db.add(v.ref)
        if len({v.version for v in versions}) != len(versions):
            problems.append(f"{name}: duplicate version numbers")
        for alias in ("production", "staging"):
            events = [e for e in catalog.alias_history(name, alias) if e.action != "refused"]
            for prev, ev in zip(events, events[1:]):
                if ev.from_version != prev.to_version:
                    problems.append(f"{name}@{alias}: history chain broken at event {ev.id}")
            current = {a.name: a.version for a in catalog.aliases(name)}.get(alias)
            if events and current != events[-1].to_version:
                problems.append(f"{name}@{alias} is {current}, history ends at {events[-1].to_version}")
            moves = [e for e in entries if e["ok"] and e["op"] in ("alias", "rollback")
                     and e["name"] == name and e["alias"] == alias]
            recorded = Counter(e["to"] for e in moves)
            logged = Counter(ev.to_version for ev in events)
            if recorded != logged:
                problems.append(f"{name}@{alias}: recorded moves {dict(recorded)} ≠ history {dict(logged)}")
    if added != in_db:
        problems.append(f"versions: {len(added)} adds recorded, {len(in_db)} in the catalog "
                        f"(lost: {sorted(set(added) - set(in_db))[:5]}, phantom: {sorted(set(in_db) - set(added))[:5]})")
    if removed != deleted_in_db:
        problems.append(f"removals recorded {sorted(removed)} ≠ removed in catalog {sorted(deleted_in_db)}")
    return problems
