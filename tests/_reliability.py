"""Crash-consistency harness: run a loradex command in a subprocess, kill it with SIGKILL (at a
named crash point or after a random delay), then check the home is consistent and that
re-running the command completes. Used by tests/test_reliability_crash.py (reduced) and
bench/reliability_full.py (≥ 100 kills per operation)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from loradex.merge.synthetic_adapters import write_random_kohya_lora
from loradex.registry.catalog.store import Catalog
from loradex.registry.files.atomic_files import TMP_PREFIX
from loradex.registry.crashpoints import GC_POINTS, POINTS
from loradex.registry.catalog.maintenance import verify
from loradex.registry.catalog.operations import REFUSED

LORADEX = str(Path(sys.executable).with_name("loradex"))


@dataclass
class Outcome:
    op: str
    trials: int = 0
    killed: int = 0
    inconsistencies: list[str] = field(default_factory=list)


def make_home(root: Path, files: Path, *, mirror_url: str | None = None,
              blobs_location: str | None = None) -> Path:
    """A home with style@1.0.0, style@1.1.0 and production → 1.1.0 (previously 1.0.0), the
    remote ``team`` when a mirror is running, and what earlier killed commands leave behind (see
    ``plant_leftovers``). ``blobs_location``: keep its blobs there (e.g. ``s3://bucket/home-…``,
    recorded in the home as ``blobs migrate`` does; the S3 settings come from the environment)."""
    from loradex.registry.catalog.adding import add_file
    from loradex.registry.catalog.operations import MoveAlias
    from loradex.registry.files.blob_backends import record_location
    from loradex.registry.remotes import add_remote

    home = root / f"home-{random.getrandbits(32):08x}"
    if blobs_location:
        home.mkdir(parents=True)
        record_location(home, f"{blobs_location.rstrip('/')}/{home.name}")
    catalog = Catalog(home)
    add_file(catalog, files / "a.safetensors", name="style")
    add_file(catalog, files / "b.safetensors", name="style")
    catalog.apply([MoveAlias("style@1.0.0", "production")])
    catalog.apply([MoveAlias("style@1.1.0", "production")])
    if mirror_url:
        add_remote(catalog, "team", f"{mirror_url}/team", "mirror")
    plant_leftovers(catalog)
    return home


def plant_leftovers(catalog) -> None:
    """Two unreferenced blobs (a killed add's, or a removed version's: gc has work to be killed
    in) and two temp files of dead writers, one in the blob store and one elsewhere in the home
    (an ``atomic_output`` file); nobody holds them locked, as after a kill -9."""
    for i in range(2):
        catalog.blobs.add_bytes(f"unreferenced blob {i} {random.getrandbits(64)}".encode())
    if catalog.blobs.shared:  # object storage: a killed writer's staged object and multipart upload
        client, bucket, prefix = catalog.blobs.client, catalog.blobs.bucket, catalog.blobs.key_prefix
        client.put_object(Bucket=bucket, Key=f"{prefix}uploads/killed-add", Body=b"half a blob")
        client.create_multipart_upload(Bucket=bucket, Key=f"{prefix}uploads/killed-multipart")
    else:
        (catalog.blobs.root / f"{TMP_PREFIX}killed-add").write_bytes(b"half a blob")
    elsewhere = catalog.home / "exports"
    elsewhere.mkdir(exist_ok=True)
    (elsewhere / f"{TMP_PREFIX}killed-export.safetensors").write_bytes(b"half an export")


def leftover_temp_files(home: Path) -> list[Path]:
    return sorted(p for p in home.rglob(f"{TMP_PREFIX}*") if p.is_file())


def leftover_uploads(home: Path) -> list[str]:
    """On object storage: staged objects, multipart uploads and upload records that outlive gc."""
    from sqlalchemy import text

    blobs = Catalog(home).blobs
    if not blobs.shared:
        return []
    prefix = f"{blobs.key_prefix}uploads/"
    left = [o["Key"] for o in blobs.client.list_objects_v2(Bucket=blobs.bucket, Prefix=prefix).get("Contents", [])]
    left += [f"multipart {u['Key']}" for u in
             blobs.client.list_multipart_uploads(Bucket=blobs.bucket, Prefix=prefix).get("Uploads", [])]
    rows = Catalog(home).read(lambda s: s.execute(text("SELECT count(*) FROM blob_uploads")).scalar())
    return left + ([f"{rows} blob_uploads row(s)"] if rows else [])


MIRROR_TOKEN = "reliability-token"


class Mirror:
    """`loradex serve` in a subprocess, holding team/style v1.2.0 (a file the trial homes lack)."""

    def __init__(self, root: Path, files: Path):
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "LORADEX_SERVE_TOKEN": MIRROR_TOKEN, "LORADEX_TOKEN_TEAM": MIRROR_TOKEN}
        os.environ["LORADEX_TOKEN_TEAM"] = MIRROR_TOKEN  # for the harness's own in-process calls
        self.proc = subprocess.Popen([LORADEX, "serve", "--port", str(self.port), "--home", str(root / "mirror-home")],
                                     env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self._wait_ready()
            publisher = make_home(root, files, mirror_url=self.url)
            from loradex.registry.catalog.adding import add_file

            add_file(Catalog(publisher), files / "d.safetensors", name="style", version="1.2.0")
            code, err = rerun(["push", "style@1.2.0", "team"], publisher)  # what `pull` fetches
            assert code == 0, err
        except BaseException:  # a mirror that failed to set up is stopped, not left serving
            self.proc.kill()
            self.proc.wait(timeout=30)
            raise

    def _wait_ready(self) -> None:
        import httpx

        for _ in range(300):
            try:
                httpx.get(f"{self.url}/api/whoami-v2", headers={"authorization": f"Bearer {MIRROR_TOKEN}"}, timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("loradex serve did not start")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def make_files(root: Path) -> Path:
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate("abcd"):
        write_random_kohya_lora(files / f"{name}.safetensors", seed=500 + i, rank=8)
    tree = files / "webui" / "models" / "Lora"  # what `import` walks
    tree.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(("ink", "neon", "clay")):
        write_random_kohya_lora(tree / f"{name}.safetensors", seed=600 + i, rank=4)
    return files


def operations(files: Path) -> dict[str, list[str]]:
    return {
        "add": ["add", str(files / "c.safetensors"), "--name", "style"],
        "alias-set": ["alias", "set", "style@1.0.0", "staging"],
        "rollback": ["rollback", "style"],
        "rm": ["rm", "style@1.0.0"],
        "gc": ["gc"],
        "merge": ["merge", "style@1.0.0:0.7", "style@1.1.0:-0.3", "--method", "concat", "--name", "blend"],
        "import": ["import", str(files / "webui")],
        "push": ["push", "style@1.1.0", "team"],
        "pull": ["pull", "mirror://team/style@1.2.0"],
    }


REMOTE_OPS = ("push", "pull")
# the named crash points each operation passes through (gc has its own; the rest share the
# write path's blob → row windows)
CRASH_POINTS = {"gc": GC_POINTS}


def crash_points(op: str) -> tuple[str, ...]:
    return CRASH_POINTS.get(op, POINTS)


def check_home(home: Path) -> list[str]:
    """Every way a home can be inconsistent after a crash; [] when healthy."""
    problems = []
    catalog = Catalog(home)
    report = verify(catalog)
    problems += [f"verify: {p}" for p in report.problems]
    for summary in catalog.list_adapters():
        for alias, version in summary.aliases.items():
            events = [e for e in catalog.alias_history(summary.name, alias) if e.action != REFUSED]
            if not events or events[-1].to_version != version:
                problems.append(f"{summary.name}@{alias} → {version} but history ends at "
                                f"{events[-1].to_version if events else None}")
            for prev, ev in zip(events, events[1:]):
                if ev.from_version != prev.to_version:
                    problems.append(f"{summary.name}@{alias}: broken history chain at event {ev.id}")
    final_names = [p for p in (home / "blobs" / "sha256").glob("??/*")]
    for path in final_names:
        if path.name.startswith(".tmp"):
            problems.append(f"temp file under a final folder: {path}")
    return problems


def run_killed(args: list[str], home: Path, *, crash_at: str | None, delay: float | None) -> bool:
    """Run ``loradex args`` and kill it; True if it was killed before finishing."""
    env = {**os.environ, "LORADEX_HOME": str(home), "LORADEX_TOKEN_TEAM": MIRROR_TOKEN}
    if crash_at:
        env["LORADEX_CRASH_AT"] = crash_at
    proc = subprocess.Popen([LORADEX, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if delay is not None:
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=120)
    return proc.returncode == -signal.SIGKILL


def rerun(args: list[str], home: Path) -> tuple[int, str]:
    env = {**os.environ, "LORADEX_HOME": str(home), "LORADEX_TOKEN_TEAM": MIRROR_TOKEN}
    env.pop("LORADEX_CRASH_AT", None)
    proc = subprocess.run([LORADEX, *args], env=env, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stderr


# An op "completes" on re-run when it succeeds or reports that its effect is already there.
ALREADY_DONE = ("already", "no earlier version", "was removed", "has no version")


def trial(op: str, args: list[str], root: Path, files: Path, *, crash_at: str | None,
          delay: float | None, outcome: Outcome, mirror_url: str | None = None,
          blobs_location: str | None = None) -> None:
    home = make_home(root, files, mirror_url=mirror_url, blobs_location=blobs_location)
    try:
        outcome.trials += 1
        outcome.killed += run_killed(args, home, crash_at=crash_at, delay=delay)
        problems = check_home(home)
        code, err = rerun(args, home)
        if code != 0 and not any(word in err for word in ALREADY_DONE):
            problems.append(f"re-run failed: {err.strip()}")
        problems += check_home(home)
        # the next gc must clean what the killed command (and the planted leftovers) left
        if blobs_location:  # S3 Last-Modified has whole seconds: gc keeps its cutoff's second
            time.sleep(1.05 - time.time() % 1)
        code, err = rerun(["gc"], home)
        if code != 0:
            problems.append(f"gc after the re-run failed: {err.strip()}")
        leftovers = leftover_temp_files(home)
        if leftovers:
            problems.append(f"temp files survive gc: {[str(p.relative_to(home)) for p in leftovers]}")
        uploads = leftover_uploads(home)
        if uploads:
            problems.append(f"uploads survive gc: {uploads}")
        unreferenced = verify(Catalog(home)).unreferenced
        if unreferenced:
            problems.append(f"unreferenced blobs survive gc: {unreferenced}")
        outcome.inconsistencies += [f"{op} ({crash_at or f'{delay:.2f}s'}): {p}" for p in problems]
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run_campaign(root: Path, per_op: int, *, seed: int = 0, ops: list[str] | None = None,
                 delay_max: float = 1.2, crash_points_first: bool = True,
                 blobs_location: str | None = None) -> list[Outcome]:
    """``per_op`` trials of each operation: first one per named crash point it passes (unless
    ``crash_points_first`` is off), then kills after a random delay in [0.05, ``delay_max``] s.
    ``blobs_location``: the trial homes keep their blobs under it (one prefix per home)."""
    rng = random.Random(seed)
    files = make_files(root)
    selected = {op: args for op, args in operations(files).items() if not ops or op in ops}
    mirror = Mirror(root, files) if set(selected) & set(REMOTE_OPS) else None
    outcomes = []
    try:
        for op, args in selected.items():
            outcome = Outcome(op)
            url = mirror.url if mirror else None
            points = crash_points(op) if crash_points_first else ()
            for i in range(per_op):
                if i < len(points):
                    trial(op, args, root, files, crash_at=points[i], delay=None, outcome=outcome, mirror_url=url,
                          blobs_location=blobs_location)
                else:
                    trial(op, args, root, files, crash_at=None, delay=rng.uniform(0.05, delay_max),
                          outcome=outcome, mirror_url=url, blobs_location=blobs_location)
            outcomes.append(outcome)
    finally:
        if mirror:
            mirror.close()
    return outcomes
