"""Run N concurrent writers (tests/_concurrency_worker.py) and check the final state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from loradex.merge.synthetic_adapters import write_random_kohya_lora
from loradex.registry.catalog.store import Catalog
from loradex.registry.catalog.operations import REFUSED

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
            events = [e for e in catalog.alias_history(name, alias) if e.action != REFUSED]
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
    problems += serial_replay_problems(catalog, entries)
    if added != in_db:
        problems.append(f"versions: {len(added)} adds recorded, {len(in_db)} in the catalog "
                        f"(lost: {sorted(set(added) - set(in_db))[:5]}, phantom: {sorted(set(in_db) - set(added))[:5]})")
    if removed != deleted_in_db:
        problems.append(f"removals recorded {sorted(removed)} ≠ removed in catalog {sorted(deleted_in_db)}")
    return problems


def serial_replay_problems(catalog: Catalog, entries: list[dict]) -> list[str]:
    """Replay the recorded operations one at a time, in the order the catalog committed them, and
    compare with the final state.

    Commit order: versions by row id (a writer allocates its number under the adapter's lock, so
    ids follow commits), alias moves and rollbacks by alias-event id. A serial run of the adds
    numbers each adapter's versions 1.0.0, 1.1.0, 1.2.0… in that order (a removal never frees a
    number). A serial run of the alias events (a set pushes its target; a rollback pops back to
    the newest earlier target that is live and not the current one, as ``RollbackAlias`` does)
    must send every rollback where the catalog sent it, and end where the alias points now; the
    events replayed must be exactly the moves the writers recorded."""
    from sqlalchemy import select

    from loradex.registry.catalog.db_schema import AdapterRow, AliasEventRow, AliasRow, VersionRow

    problems: list[str] = []
    logged = Counter((e["name"], e["alias"], "rollback" if e["op"] == "rollback" else "set", e["to"])
                     for e in entries if e["ok"] and e["op"] in ("alias", "rollback"))
    replayed: Counter = Counter()

    def run(s):
        for adapter in s.scalars(select(AdapterRow).order_by(AdapterRow.id)):
            rows = s.scalars(select(VersionRow).where(VersionRow.adapter_id == adapter.id)
                             .order_by(VersionRow.id)).all()
            in_commit_order = [r.version for r in rows]
            if in_commit_order != [f"1.{i}.0" for i in range(len(rows))]:
                problems.append(f"{adapter.name}: versions in commit order {in_commit_order[:8]}… are not "
                                "what a serial run numbers (1.0.0, 1.1.0, …)")
            version = {r.id: r.version for r in rows}
            deleted = {r.id for r in rows if r.deleted_at is not None}
            aliases = sorted(set(s.scalars(select(AliasEventRow.alias).where(AliasEventRow.adapter_id == adapter.id))))
            for alias in aliases:
                stack: list[int] = []
                for ev in s.scalars(select(AliasEventRow).where(AliasEventRow.adapter_id == adapter.id,
                                                                AliasEventRow.alias == alias).order_by(AliasEventRow.id)):
                    if ev.action == REFUSED:
                        continue
                    if ev.action == "remove":
                        stack = []
                        continue
                    if ev.action == "rollback":
                        earlier = stack[:-1]
                        while earlier and (earlier[-1] in deleted or earlier[-1] == ev.from_version_id) \
                                and earlier[-1] != ev.to_version_id:
                            earlier.pop()  # skipped by the rollback: removed, or the current target
                        if not earlier or earlier[-1] != ev.to_version_id:
                            problems.append(f"{adapter.name}@{alias}: rollback #{ev.id} went to "
                                            f"{version.get(ev.to_version_id)}, not to an earlier target a serial "
                                            "replay reaches")
                        stack = stack[:-1]
                        if not stack or stack[-1] != ev.to_version_id:
                            stack.append(ev.to_version_id)
                        replayed[(adapter.name, alias, "rollback", version.get(ev.to_version_id))] += 1
                    else:
                        stack.append(ev.to_version_id)
                        replayed[(adapter.name, alias, "set", version.get(ev.to_version_id))] += 1
                now = s.scalar(select(AliasRow.version_id).where(AliasRow.adapter_id == adapter.id,
                                                                 AliasRow.name == alias))
                if now != (stack[-1] if stack else None):
                    problems.append(f"{adapter.name}@{alias} points at {version.get(now)}; the serial replay "
                                    f"ends at {version.get(stack[-1]) if stack else None}")

    catalog.read(run)
    if logged != replayed:
        problems.append(f"recorded alias operations ≠ the history replayed (recorded only: "
                        f"{dict(logged - replayed)}, history only: {dict(replayed - logged)})")
    return problems
