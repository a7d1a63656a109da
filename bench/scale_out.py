"""Scale-out bench (issue 19): three stateless ``loradex serve`` replicas on one PostgreSQL and one
S3 bucket (moto's server, a subprocess) behind haproxy on loopback; N concurrent clients push,
pull, list, move aliases and review for a fixed time; one replica is killed with SIGKILL half-way
and restarted. Then the state is audited.

    python bench/scale_out.py [--clients 32] [--duration 60] [--replicas 3] [--kill-at 0.5]

Needs PostgreSQL at 127.0.0.1:5432 (trust auth, as for the tests), moto[server], haproxy
(``apt-get install -y haproxy``); skips with a message when one is missing. Clients are threads
of this process (the real ``huggingface_hub`` client for pushes, pulls and listings; ``httpx``
with a signed-in web session for the alias-move and review forms — the web app is the only
HTTP surface that moves an alias by name and stores a review). Each operation is retried once
when the answer is a connection failure or a 5xx/502/503 (what a client does behind a load
balancer): the report counts errors on the first try and errors left after the retry.

Operations (weights): push 30 % (``HfApi.upload_file`` of a fresh 64 KiB LFS file to one of 8
repos, so commits contend on each repo), pull 30 % (``hf_hub_download(force_download=True)`` of a
file some client pushed, checked against its sha256), list 20 % (``list_repo_files``), alias
move 10 % (web form ``/ui/aliases/style/prod/move``), review 10 % (web form ``/ui/review/style/…``).

Audit after the run: ``loradex verify`` on the shared catalog exits 0; every acknowledged push
is at its commit with the right sha256 (read back through the balancer); no ref names a missing
commit, no commit a missing parent or object; alias history is one chain (each event starts where
the one before ended, the alias is where the last event put it) with at least every acknowledged
move. Prints a markdown report.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-scale-out-admin-token"
REPOS = 8
WEIGHTS = {"push": 30, "pull": 30, "list": 20, "alias": 10, "review": 10}
PUSH_BYTES = 64 << 10
RETRYABLE = (502, 503, 504, 500)
STATS_FLUSH_S = 11  # an idle PostgreSQL backend flushes its statistics (pg_stat_database) within 10 s


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, seconds: float = 60) -> None:
    import httpx

    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


def skip(reason: str) -> None:
    print(f"SKIPPED: {reason}")
    sys.exit(0)


# --- the deployment -------------------------------------------------------------------------------
class Deployment:
    def __init__(self, work: Path, replicas: int):
        self.work, self.n = work, replicas
        self.procs: dict[int, subprocess.Popen] = {}
        self.ports = [free_port() for _ in range(replicas)]
        self.lb_port = free_port()
        self.lb_url = f"http://127.0.0.1:{self.lb_port}"

    def start(self) -> None:
        import boto3
        import psycopg

        try:
            self.pg = psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True,
                                      connect_timeout=3)
        except Exception as exc:  # noqa: BLE001
            skip(f"PostgreSQL not reachable at 127.0.0.1:5432 ({type(exc).__name__})")
        if shutil.which("haproxy") is None:
            skip("haproxy is not installed (apt-get install -y haproxy)")
        self.db = f"loradex_scale_{uuid.uuid4().hex[:8]}"
        self.pg.execute(f'CREATE DATABASE "{self.db}"')
        self.db_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.db}"
        moto_port = free_port()
        self.moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.s3 = f"http://127.0.0.1:{moto_port}"
        wait_http(self.s3)
        self.bucket = f"scale-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=self.s3, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=self.bucket)
        self.env = {**os.environ, "LORADEX_DB": self.db_url, "LORADEX_BLOBS": f"s3://{self.bucket}/blobs",
                    "LORADEX_S3_ENDPOINT_URL": self.s3, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                    "LORADEX_S3_ADDRESSING": "path", "LORADEX_SERVE_TOKEN": TOKEN}
        for key in ("HF_TOKEN", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            self.env.pop(key, None)
        os.environ.update({k: self.env[k] for k in ("LORADEX_DB", "LORADEX_BLOBS", "LORADEX_S3_ENDPOINT_URL",
                                                     "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                     "AWS_DEFAULT_REGION", "LORADEX_S3_ADDRESSING")})
        self.seed_home = self.work / "seed"
        self.seed()
        for i in range(self.n):
            self.start_replica(i)
        for i in range(self.n):
            wait_http(f"http://127.0.0.1:{self.ports[i]}/ui/login")
        servers = "\n".join(f"    server r{i} 127.0.0.1:{port} check inter 300 fall 1 rise 2"
                            for i, port in enumerate(self.ports))
        config = self.work / "haproxy.cfg"
        config.write_text(f"""global
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    option redispatch
    retries 3
frontend hub
    bind 127.0.0.1:{self.lb_port}
    default_backend replicas
backend replicas
    balance roundrobin
{servers}
""")
        self.haproxy = subprocess.Popen(["haproxy", "-f", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_http(f"{self.lb_url}/ui/login")
        from huggingface_hub import HfApi

        api = HfApi(endpoint=self.lb_url, token=TOKEN)
        for r in range(REPOS):
            api.create_repo(f"bench/repo{r}", exist_ok=True)

    def seed(self) -> None:
        """The adapter the alias moves and reviews are about: style 1.0.0 … 1.2.0 in the shared catalog."""
        from loradex.merge.synthetic_adapters import write_random_kohya_lora
        from loradex.registry.catalog.adding import add_file
        from loradex.registry.catalog.store import Catalog

        sys.path.insert(0, str(ROOT / "tests"))  # the tests' builders of evaluation records and cards
        from _evidence_fixtures import minimal_record
        from _hub_sync_fixtures import card_for, record_png
        from loradex.registry.catalog import records as R

        catalog = Catalog(self.seed_home, db_url=self.db_url)
        for i in range(3):
            lora = write_random_kohya_lora(self.work / f"style{i}.safetensors", seed=100 + i)
            v = add_file(catalog, lora, name="style", version=f"1.{i}.0").version
            with_rec = minimal_record(stack=[{"requested": "style", "ref": v.ref, "sha256": v.sha256,
                                              "te_weight": 1.0, "unet_weight": 1.0}])
            without_rec = minimal_record(prompt="a red fox")
            R.store_record(catalog, with_rec, record_png(with_rec, (200, 30, 30)))
            R.store_record(catalog, without_rec, record_png(without_rec, (30, 30, 200)))
            R.store_card(catalog, card_for(v.ref, v.sha256, with_rec["id"], without_rec["id"]))
        catalog.engine.dispose()

    def start_replica(self, i: int) -> None:
        home = self.work / f"replica{i}"
        log = open(self.work / f"replica{i}.log", "ab")
        self.procs[i] = subprocess.Popen(
            [str(Path(sys.executable).parent / "loradex"), "serve", "--home", str(home), "--host", "127.0.0.1",
             "--port", str(self.ports[i]), "--public-url", f"{self.lb_url}/", "--rate-limit", "off"],
            env=self.env, stdout=log, stderr=log)

    def cpu_seconds(self, i: int) -> float:
        """User + system CPU of replica ``i`` so far (from /proc)."""
        try:
            fields = Path(f"/proc/{self.procs[i].pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def db_counters(self) -> dict:
        row = self.pg.execute("SELECT xact_commit, tup_inserted, tup_updated, tup_fetched FROM pg_stat_database "
                              "WHERE datname = %s", (self.db,)).fetchone()
        return dict(zip(("transactions", "rows_inserted", "rows_updated", "rows_fetched"), row))

    def kill(self, i: int) -> None:
        self.killed_cpu = getattr(self, "killed_cpu", 0.0) + self.cpu_seconds(i)
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()

    def stop(self) -> None:
        for proc in [*self.procs.values(), getattr(self, "haproxy", None), getattr(self, "moto", None)]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if getattr(self, "db", None):
            self.pg.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')


# --- the clients ----------------------------------------------------------------------------------
class Results:
    def __init__(self):
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.first_errors: dict[str, int] = defaultdict(int)
        self.final_errors: dict[str, int] = defaultdict(int)
        self.error_kinds: dict[str, int] = defaultdict(int)
        self.pushed: list[tuple[str, str, str, str]] = []  # repo, path, sha256, commit
        self.alias_moves: list[str] = []  # acknowledged target versions
        self.reviews = 0
        self.pull_mismatches = 0


def retryable(exc: Exception) -> bool:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    transport = any(c.__name__ in ("TransportError", "ConnectError", "RemoteProtocolError", "ReadError")
                    for c in type(exc).__mro__)  # httpx's, and huggingface_hub's own httpx's
    return transport or isinstance(exc, (ConnectionError, OSError)) or status in RETRYABLE


class Client(threading.Thread):
    def __init__(self, n: int, lb_url: str, results: Results, stop_at: float, work: Path):
        super().__init__(daemon=True)
        self.n, self.url, self.results, self.stop_at = n, lb_url, results, stop_at
        self.rng = random.Random(n)
        self.cache = work / f"client{n}"
        self.count = 0

    def run(self) -> None:
        import httpx
        from huggingface_hub import HfApi

        self.api = HfApi(endpoint=self.url, token=TOKEN)
        self.web = httpx.Client(base_url=self.url, timeout=60, follow_redirects=False)
        self.csrf = None
        ops, weights = zip(*WEIGHTS.items())
        while time.time() < self.stop_at:
            op = self.rng.choices(ops, weights)[0]  # a weight of 0 (``--only``): never chosen
            self.timed(op, getattr(self, f"do_{op}"))

    def timed(self, op: str, fn) -> None:
        for attempt in (0, 1):
            started = time.perf_counter()
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 — every client-seen failure is counted
                with self.results.lock:
                    self.results.error_kinds[f"{op}: {type(exc).__name__} {str(exc).splitlines()[0][:80]}"] += 1
                    if attempt == 0:
                        self.results.first_errors[op] += 1
                    if attempt == 1 or not retryable(exc):
                        self.results.final_errors[op] += 1
                if attempt == 0 and retryable(exc):
                    if op in ("alias", "review"):
                        self.csrf = None  # sign in again (the session row is shared, but be safe)
                    time.sleep(0.2)
                    continue
                return
            with self.results.lock:
                self.results.latency[op].append(time.perf_counter() - started)
            return

    # operations
    def do_push(self) -> None:
        repo = f"bench/repo{self.rng.randrange(REPOS)}"
        data = self.rng.randbytes(PUSH_BYTES)
        self.count += 1
        path = f"c{self.n}/f{self.count}.safetensors"
        info = self.api.upload_file(path_or_fileobj=data, path_in_repo=path, repo_id=repo,
                                    commit_message=f"client {self.n} file {self.count}")
        with self.results.lock:
            self.results.pushed.append((repo, path, hashlib.sha256(data).hexdigest(), info.oid))

    def do_pull(self) -> None:
        from huggingface_hub import hf_hub_download

        with self.results.lock:
            if not self.results.pushed:
                return self.do_list()
            repo, path, sha, commit = self.rng.choice(self.results.pushed)
        got = hf_hub_download(repo, path, revision=commit, endpoint=self.url, token=TOKEN,
                              cache_dir=self.cache, force_download=True)
        if hashlib.sha256(Path(got).read_bytes()).hexdigest() != sha:
            with self.results.lock:
                self.results.pull_mismatches += 1
            raise AssertionError(f"{repo}/{path}@{commit[:8]}: wrong bytes")

    def do_list(self) -> None:
        self.api.list_repo_files(f"bench/repo{self.rng.randrange(REPOS)}")

    def sign_in(self) -> None:
        self.web.cookies.clear()
        page = self.web.get("/ui/login")
        page.raise_for_status()
        login_csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        answer = self.web.post("/ui/login", data={"csrf": login_csrf, "token": TOKEN, "next": "/"})
        if answer.status_code != 303:
            raise RuntimeError(f"sign-in answered {answer.status_code}")
        page = self.web.get("/ui/versions/style/1.0.0")
        page.raise_for_status()
        self.csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)

    def do_alias(self) -> None:
        if self.csrf is None:
            self.sign_in()
        version = f"1.{self.rng.randrange(3)}.0"
        answer = self.web.post("/ui/aliases/style/prod/move",
                               data={"csrf": self.csrf, "version": version, "reason": f"bench client {self.n}"})
        if answer.status_code != 303:
            answer.raise_for_status()
            raise RuntimeError(f"alias move answered {answer.status_code}")
        with self.results.lock:
            self.results.alias_moves.append(version)

    def do_review(self) -> None:
        if self.csrf is None:
            self.sign_in()
        version = f"1.{self.rng.randrange(3)}.0"
        answer = self.web.post(f"/ui/review/style/{version}",
                               data={"csrf": self.csrf, "check:artifacts": self.rng.choice(["pass", "fail"]),
                                     "check_note": f"bench client {self.n}"})
        if answer.status_code != 303:
            answer.raise_for_status()
            raise RuntimeError(f"review answered {answer.status_code}")
        with self.results.lock:
            self.results.reviews += 1


def profile_ops(dep: Deployment, results: Results, work: Path, rounds: int) -> dict:
    """Each operation ``rounds`` times by one client, one after the other, before the load: replica
    CPU and PostgreSQL work per operation, without contention (the per-request costs)."""
    import httpx
    from huggingface_hub import HfApi

    client = Client(10_000, dep.lb_url, results, 0, work)
    client.api = HfApi(endpoint=dep.lb_url, token=TOKEN)
    client.web = httpx.Client(base_url=dep.lb_url, timeout=60, follow_redirects=False)
    client.csrf = None
    client.sign_in()
    out = {}
    for op in WEIGHTS:
        fn = getattr(client, f"do_{op}")
        fn()  # warm
        time.sleep(STATS_FLUSH_S)
        cpu0, db0, t0 = sum(dep.cpu_seconds(i) for i in range(dep.n)), dep.db_counters(), time.perf_counter()
        for _ in range(rounds):
            fn()
        wall = time.perf_counter() - t0
        time.sleep(STATS_FLUSH_S)
        cpu1, db1 = sum(dep.cpu_seconds(i) for i in range(dep.n)), dep.db_counters()
        out[op] = {"wall_ms": round(wall * 1000 / rounds, 1), "replica_cpu_ms": round((cpu1 - cpu0) * 1000 / rounds, 1),
                   **{k: round((db1[k] - db0[k]) / rounds, 1) for k in db1}}
    return out  # its pushes, moves and reviews are acknowledged ones too: the audit counts them


# --- the audit ------------------------------------------------------------------------------------
def audit(dep: Deployment, results: Results) -> dict:
    import boto3
    import httpx
    import psycopg

    out: dict = {}
    verify = subprocess.run([str(Path(sys.executable).parent / "loradex"), "verify", "--home", str(dep.seed_home)],
                            env=dep.env, capture_output=True, text=True, timeout=600)
    out["verify_exit"] = verify.returncode
    out["verify_output"] = (verify.stdout + verify.stderr).strip().splitlines()[-1:] or [""]

    missing = 0
    with httpx.Client(base_url=dep.lb_url, timeout=60, headers={"authorization": f"Bearer {TOKEN}"}) as web:
        for repo, path, sha, commit in results.pushed:
            answer = web.get(f"/{repo}/resolve/{commit}/{path}")
            if answer.status_code != 200 or hashlib.sha256(answer.content).hexdigest() != sha:
                missing += 1
    out["acknowledged_pushes"] = len(results.pushed)
    out["acknowledged_pushes_missing_or_wrong"] = missing

    conn = psycopg.connect(dep.db_url.replace("postgresql+psycopg", "postgresql"))
    refs = conn.execute("SELECT repo_id, target FROM hub_refs").fetchall()
    commits = {(r, o): json.loads(d) for r, o, d in conn.execute("SELECT repo_id, oid, document FROM hub_commits")}
    out["refs_to_missing_commits"] = sum((r, t) not in commits for r, t in refs)
    out["commits_with_missing_parent"] = sum(any((r, p) not in commits for p in doc["parents"])
                                             for (r, _), doc in commits.items())
    s3 = boto3.client("s3", endpoint_url=dep.s3, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    keys = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=dep.bucket, Prefix="blobs/hub/sha256/"):
        keys.update(o["Key"] for o in page.get("Contents", []))
    named = {e["sha256"] for doc in commits.values() for e in doc["tree"].values()}
    stored = {k.split("/")[-2] + k.split("/")[-1] for k in keys}
    out["commit_entries_without_object"] = len(named - stored)
    out["objects_no_commit_names"] = len(stored - named)  # LFS uploads whose commit never came (a killed request)
    out["blob_upload_rows_left"] = conn.execute("SELECT count(*) FROM blob_uploads").fetchone()[0]

    events = conn.execute(
        "SELECT e.id, e.action, fv.version, tv.version FROM alias_events e "
        "LEFT JOIN versions fv ON fv.id = e.from_version_id LEFT JOIN versions tv ON tv.id = e.to_version_id "
        "JOIN adapters a ON a.id = e.adapter_id WHERE a.name = 'style' AND e.alias = 'prod' ORDER BY e.id").fetchall()
    chain_breaks = sum(1 for before, after in zip(events, events[1:]) if after[2] != before[3])
    current = conn.execute("SELECT v.version FROM aliases al JOIN versions v ON v.id = al.version_id "
                           "JOIN adapters a ON a.id = al.adapter_id WHERE a.name = 'style' AND al.name = 'prod'"
                           ).fetchone()
    out["alias_events"] = len(events)
    out["alias_moves_acknowledged"] = len(results.alias_moves)
    out["alias_chain_breaks"] = chain_breaks
    out["alias_at_last_event"] = bool(events) and current is not None and current[0] == events[-1][3]
    out["reviews_acknowledged"] = results.reviews
    conn.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--kill-at", type=float, default=0.5, help="fraction of the duration (negative: no kill)")
    parser.add_argument("--restart-after", type=float, default=3.0, help="seconds the killed replica stays down")
    parser.add_argument("--profile-rounds", type=int, default=20,
                        help="each operation this many times by one client before the load (0: skip)")
    parser.add_argument("--only", choices=sorted(WEIGHTS), help="run this operation alone (no mix)")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args()
    import importlib.util

    for module in ("boto3", "moto", "psycopg"):
        if importlib.util.find_spec(module) is None:
            skip(f"{module} is not installed (pip install 'moto[server]' boto3 psycopg)")
    if args.only:
        for op in WEIGHTS:
            WEIGHTS[op] = 1 if op == args.only else 0
    os.environ["HF_HUB_DISABLE_XET"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ.pop("HF_TOKEN", None)
    work = Path(tempfile.mkdtemp(prefix="loradex-scale-out-"))
    dep = Deployment(work, args.replicas)
    try:
        dep.start()
        results = Results()
        profile = profile_ops(dep, results, work, args.profile_rounds) if args.profile_rounds else {}
        cpu_before = sum(dep.cpu_seconds(i) for i in range(args.replicas))
        db_before = dep.db_counters()
        started = time.time()
        stop_at = started + args.duration
        clients = [Client(i, dep.lb_url, results, stop_at, work) for i in range(args.clients)]
        for c in clients:
            c.start()
        killed = None
        if args.kill_at >= 0:
            time.sleep(args.duration * args.kill_at)
            dep.kill(0)
            killed = time.time() - started
            time.sleep(args.restart_after)
            dep.start_replica(0)
        for c in clients:
            c.join(args.duration + 300)
        elapsed = time.time() - started
        time.sleep(1.5)  # the statistics flush
        db_after = dep.db_counters()
        cpu = sum(dep.cpu_seconds(i) for i in range(args.replicas)) + getattr(dep, "killed_cpu", 0.0) - cpu_before
        report = {"clients": args.clients, "replicas": args.replicas, "duration_s": round(elapsed, 1),
                  "killed_replica_at_s": killed and round(killed, 1), "ops": {},
                  "profile": profile}
        total = 0
        for op in WEIGHTS:
            lat = sorted(results.latency[op])
            total += len(lat)
            report["ops"][op] = {
                "ok": len(lat), "per_s": round(len(lat) / elapsed, 2),
                "p50_ms": round(statistics.median(lat) * 1000, 1) if lat else None,
                "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 1) if lat else None,
                "errors_first_try": results.first_errors[op], "errors_after_retry": results.final_errors[op]}
        report["ops_per_s"] = round(total / elapsed, 2)
        report["replica_cpu_ms_per_op"] = round(cpu * 1000 / max(total, 1), 1)
        report["db_per_op"] = {k: round((db_after[k] - db_before[k]) / max(total, 1), 1) for k in db_after}
        report["error_kinds"] = dict(sorted(results.error_kinds.items(), key=lambda kv: -kv[1])[:10])
        report["audit"] = audit(dep, results)
    finally:
        dep.stop()
    killing = (f"replica 0 SIGKILLed at {report['killed_replica_at_s']} s and restarted {args.restart_after} s later"
               if report["killed_replica_at_s"] is not None else "no replica killed")
    print(f"## scale_out: {args.clients} clients, {args.replicas} replicas behind haproxy, {report['duration_s']} s, "
          f"{killing}\n")
    print("| operation | ok | ops/s | p50 ms | p99 ms | errors (1st try) | errors (after retry) |")
    print("|---|---|---|---|---|---|---|")
    for op, row in report["ops"].items():
        print(f"| {op} | {row['ok']} | {row['per_s']} | {row['p50_ms']} | {row['p99_ms']} | "
              f"{row['errors_first_try']} | {row['errors_after_retry']} |")
    print(f"\nall operations: {report['ops_per_s']} ops/s; replica CPU {report['replica_cpu_ms_per_op']} ms/op; "
          f"PostgreSQL per op: {report['db_per_op']}\n")
    for kind, n in report["error_kinds"].items():
        print(f"- {n}× {kind}")
    if report["profile"]:
        print(f"\nper operation, one client alone ({args.profile_rounds} rounds each):\n")
        print("| operation | wall ms | replica CPU ms | PG transactions | rows fetched | rows inserted | rows updated |")
        print("|---|---|---|---|---|---|---|")
        for op, row in report["profile"].items():
            print(f"| {op} | {row['wall_ms']} | {row['replica_cpu_ms']} | {row['transactions']} | "
                  f"{row['rows_fetched']} | {row['rows_inserted']} | {row['rows_updated']} |")
    print("\naudit: " + json.dumps(report["audit"], indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
