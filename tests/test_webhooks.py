"""Webhooks from the outbox (issue 22): a receiver on 127.0.0.1 checks every signature and fails
the first deliveries; time is an injected clock (no sleeps). Retries keep the delivery id and the
order, back off exponentially; a receiver that is down gets the event once it is up; an outbox row
exists iff its change committed; two workers on one PostgreSQL database never double-deliver."""

from __future__ import annotations

import json
import socket
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import func, select

from _hub_client_matrix import tiny_safetensors
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.db_events import OutboxRow
from loradex.registry.catalog.db_schema import VersionRow
from loradex.registry.catalog.operations import AddVersion, MoveAlias, move_alias
from loradex.registry.catalog.store import Catalog
from loradex.registry.remotes import webhooks as W

SECRET = "s3cret-for-the-test-receiver"


class Receiver:
    """A threaded HTTP server recording (delivery id, event, body, signature ok) per request;
    ``fail`` answers the next N requests with a 503."""

    def __init__(self, port: int = 0, secret: str = SECRET):
        self.seen: list[dict] = []
        self.fail = 0
        self.secret = secret
        self.arrived = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = W.verify_signature(receiver.secret, self.headers, body)
                with receiver.lock:
                    failing = receiver.fail > 0
                    receiver.fail -= failing
                    receiver.seen.append({"id": self.headers[W.HEADER_DELIVERY], "event": self.headers[W.HEADER_EVENT],
                                          "path": self.path,
                                          "body": body, "signed": ok, "failed": failing})
                self.send_response(503 if failing else (200 if ok else 401))
                self.send_header("Content-Length", "0")
                self.end_headers()
                receiver.arrived.set()

            def log_message(self, *args):
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Clock:
    def __init__(self):
        # starts a second ahead of the wall clock: events queued by the test are due at once
        self.now = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _add(catalog, tmp, version: str, seed: int):
    return add_file(catalog, tiny_safetensors(tmp / f"style-{version}.safetensors", seed), name="style",
                    version=version).version


def _pending(catalog) -> list[W.Delivery]:
    return [d for d in W.list_deliveries(catalog) if d.status == "pending"]


def test_signed_deliveries_retry_with_backoff_in_order_with_stable_ids(loradex_home, tmp_path, receiver):
    catalog = Catalog(loradex_home)
    created = W.add_hook(catalog, receiver.url, ["version.added,alias.moved"], secret=SECRET)
    assert created.secret == SECRET and "secret" not in created.hook.to_dict()
    _add(catalog, tmp_path, "1.0.0", 1)
    _add(catalog, tmp_path, "1.1.0", 2)
    move_alias(catalog, "style@1.1.0", "production", "ship")
    clock = Clock()
    receiver.fail = 2

    report = W.deliver_due(catalog, clock=clock)
    assert (report.delivered, report.failed) == (0, 1)  # the head failed: the later two wait (order)
    head = min(_pending(catalog), key=lambda d: d.outbox_id)
    assert (head.attempts, head.last_error, head.next_attempt_at) == (1, "HTTP 503", clock.now + timedelta(seconds=10))
    # the failed head waits for its back-off; the two behind it are due but held (order), not waiting
    assert (report.waiting, report.next_at) == (1, clock.now + timedelta(seconds=10))
    assert report.to_dict()["next_at"] == (clock.now + timedelta(seconds=10)).isoformat()
    again = W.deliver_due(catalog, clock=clock)
    assert again.failed == 0 and len(receiver.seen) == 1 and again.waiting == 1  # not due yet
    clock.advance(10)
    assert W.deliver_due(catalog, clock=clock).failed == 1  # second failure: back-off doubles
    head = min(_pending(catalog), key=lambda d: d.outbox_id)
    assert (head.attempts, head.next_attempt_at) == (2, clock.now + timedelta(seconds=20))
    clock.advance(19)
    assert W.deliver_due(catalog, clock=clock).delivered == 0
    clock.advance(1)
    done = W.deliver_due(catalog, clock=clock)
    assert (done.delivered, done.waiting, done.next_at) == (3, 0, None)
    assert _pending(catalog) == []

    seen = receiver.seen
    assert all(s["signed"] for s in seen)
    assert [s["event"] for s in seen] == ["version.added"] * 4 + ["alias.moved"]
    assert seen[0]["id"] == seen[1]["id"] == seen[2]["id"] and seen[0]["body"] == seen[2]["body"]
    assert len({s["id"] for s in seen}) == 3
    bodies = [json.loads(s["body"]) for s in seen[2:]]
    assert [b["data"].get("version") or b["data"]["to_version"] for b in bodies] == ["1.0.0", "1.1.0", "1.1.0"]
    assert bodies[2]["data"]["alias"] == "production" and bodies[2]["delivery_id"] == seen[4]["id"]
    assert [(d.status, d.attempts) for d in sorted(W.list_deliveries(catalog), key=lambda d: d.outbox_id)] == [
        ("delivered", 3), ("delivered", 1), ("delivered", 1)]
    assert [W.backoff(n) for n in (1, 2, 3, 20)] == [10, 20, 40, W.BACKOFF_CAP_S]
    # a tampered body or another secret fails the receiver's check
    headers = {W.HEADER_DELIVERY: "d", W.HEADER_TIMESTAMP: "1", W.HEADER_SIGNATURE: W.signature(SECRET, "d", "1", b"{}")}
    assert W.verify_signature(SECRET, headers, b"{}") and not W.verify_signature(SECRET, headers, b"{ }")
    assert not W.verify_signature("another-secret-of-16", headers, b"{}")


def test_a_receiver_that_is_down_gets_the_event_when_it_is_up(loradex_home, tmp_path):
    catalog = Catalog(loradex_home)
    with socket.socket() as s:  # a port nothing listens on (yet)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hook = W.add_hook(catalog, f"http://127.0.0.1:{port}/hook", ["version.added"], secret=SECRET).hook
    _add(catalog, tmp_path, "1.0.0", 1)
    clock = Clock()
    assert W.deliver_due(catalog, clock=clock, timeout=2).failed == 1
    (pending,) = _pending(catalog)
    assert pending.attempts == 1 and "Connect" in pending.last_error
    receiver = Receiver(port)
    try:
        clock.advance(W.backoff(1))
        assert W.deliver_due(catalog, clock=clock).delivered == 1
        assert [s["id"] for s in receiver.seen] == [pending.delivery_id] and receiver.seen[0]["signed"]
    finally:
        receiver.close()
    assert W.list_hooks(catalog)[0].pending == 0 and W.list_hooks(catalog)[0].id == hook.id


def test_an_outbox_row_is_written_iff_the_change_commits(loradex_home, tmp_path):
    catalog = Catalog(loradex_home)
    first = _add(catalog, tmp_path, "1.0.0", 1)
    count = lambda: catalog.read(lambda s: s.scalar(select(func.count(OutboxRow.id))))  # noqa: E731
    before = count()
    # a version added and an alias move that fails, in one transaction: neither commits, no event
    op = AddVersion(name="style", sha256="ab" * 32, autov1=None, autov2="ab" * 5, autov3=None, size=1,
                    file_format="kohya", kind="lora", version="2.0.0")
    with pytest.raises(Exception):
        catalog.apply([op, MoveAlias("style@9.9.9", "production")])
    assert count() == before
    assert catalog.read(lambda s: s.scalar(select(func.count(VersionRow.id)))) == 1
    catalog.apply([MoveAlias(first.ref, "production", "ok")])
    assert count() == before + 1
    events = catalog.read(lambda s: [r.event for r in s.scalars(select(OutboxRow).order_by(OutboxRow.id))])
    assert events == ["version.added", "alias.moved"]
    # an evaluation card is no event; a review revising it is review.added
    from _hub_sync_fixtures import card_for
    from loradex.registry.catalog import records as R
    from loradex.registry.catalog.review import apply_review, make_review

    R.store_card(catalog, card_for(first.ref, first.sha256, "record-with-01", "record-without-01"))
    assert count() == before + 1
    revised = apply_review(catalog, first.ref, make_review(checks=["review_failure=fail"], note="hands"), reviewer="rita")
    last = catalog.read(lambda s: s.scalar(select(OutboxRow).order_by(OutboxRow.id.desc()).limit(1)))
    assert (last.event, last.payload["card_id"], last.payload["by"], last.payload["passed"]) == (
        "review.added", revised.id, "rita", False)


def test_hooks_on_the_cli_never_print_the_secret_again(loradex_home, tmp_path, receiver, monkeypatch, capsys):
    from loradex.cli.main import main

    def run(*args):
        try:
            main(list(args))
        except SystemExit as exc:
            assert not exc.code, capsys.readouterr()
        return capsys.readouterr().out

    out = run("hooks", "add", receiver.url, "--events", "version.added", "--json")
    added = json.loads(out)
    secret = added["secret"]
    assert secret.startswith("whsec_") and len(secret) > 30
    receiver.secret = secret
    listed = run("hooks", "list", "--json")
    assert secret not in listed and json.loads(listed)[0]["url"] == receiver.url
    assert secret not in run("hooks", "list")
    for bad in ("ftp://x/y", "http://user:pw@127.0.0.1/x", "not a url"):
        with pytest.raises(SystemExit) as exc:
            main(["hooks", "add", bad])
        assert exc.value.code == 2  # a usage error, one line
    with pytest.raises(SystemExit):
        main(["hooks", "add", receiver.url, "--events", "version.deleted"])
    capsys.readouterr()

    tested = json.loads(run("hooks", "test", str(added["id"]), "--json"))
    assert tested["status"] == "delivered" and receiver.seen[-1]["event"] == "hook.test"
    # a CLI command that writes an event on this local home delivers it right after
    run("add", str(tiny_safetensors(tmp_path / "a.safetensors", 3)), "--name", "style")
    assert [s["event"] for s in receiver.seen] == ["hook.test", "version.added"]
    assert all(s["signed"] for s in receiver.seen)  # with the generated secret
    rows = json.loads(run("hooks", "deliveries", "--json"))
    assert [(r["event"], r["status"], r["attempts"]) for r in rows] == [("version.added", "delivered", 1),
                                                                        ("hook.test", "delivered", 1)]
    # a failed delivery waits for its back-off: `hooks deliver` says so (and when the next try is);
    # the real clock runs here, so the back-off is an hour: no slow machine reaches it mid-test
    from loradex.registry.remotes import webhooks

    monkeypatch.setattr(webhooks, "BACKOFF_BASE_S", 3600.0)
    receiver.fail = 1
    run("add", str(tiny_safetensors(tmp_path / "b.safetensors", 4)), "--name", "style")
    assert receiver.seen[-1]["failed"]
    (pending,) = [r for r in json.loads(run("hooks", "deliveries", "--json")) if r["status"] == "pending"]
    summary = json.loads(run("hooks", "deliver", "--json"))
    assert (summary["delivered"], summary["failed"], summary["waiting"]) == (0, 0, 1)
    assert datetime.fromisoformat(summary["next_at"]) == datetime.fromisoformat(pending["next_attempt_at"])
    assert run("hooks", "deliver").strip() == (
        f"delivered 0, failed 0, 1 waiting (next at {datetime.fromisoformat(summary['next_at']):%Y-%m-%d %H:%M:%S} UTC)")
    run("hooks", "rm", str(added["id"]))
    assert json.loads(run("hooks", "list", "--json")) == []


def test_two_workers_on_postgresql_never_double_deliver(pg_url, loradex_home, tmp_path, receiver):
    catalog = Catalog(loradex_home, db_url=pg_url)
    hooks = [W.add_hook(catalog, f"{receiver.url}/{i}", ["version.added"], secret=SECRET).hook for i in range(3)]
    for i in range(4):
        _add(catalog, tmp_path, f"1.{i}.0", i)
    receiver.fail = 3  # a few failures make the workers retry, keep order and race on the leases again
    clock = Clock()
    workers = [Catalog(loradex_home, db_url=pg_url) for _ in range(2)]
    errors: list[BaseException] = []

    def one_pass(c, name, start):
        try:
            start.wait()
            W.deliver_due(c, clock=clock, worker=name)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    # deterministic interleaving: while worker A holds the leases and is mid-POST, B runs a full pass
    nested: list[W.DeliveryReport] = []

    def post_a(url, body, headers, timeout):
        if not nested:
            nested.append(W.deliver_due(workers[1], clock=clock, worker="w1"))
        return W.httpx_post(url, body, headers, timeout)

    W.deliver_due(workers[0], clock=clock, worker="w0", post=post_a)
    assert nested[0].to_dict() == {"delivered": 0, "failed": 0, "hooks": 0, "errors": [],
                                  "waiting": 0, "next_at": None}
    clock.advance(W.BACKOFF_CAP_S)
    for _ in range(10):  # then rounds: both workers pass at once (threads), then the back-off elapses
        start = threading.Barrier(2)
        threads = [threading.Thread(target=one_pass, args=(c, f"w{i}", start)) for i, c in enumerate(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        if not _pending(catalog):
            break
        clock.advance(W.BACKOFF_CAP_S)
    assert not errors and not _pending(catalog)
    assert all(s["signed"] for s in receiver.seen)
    in_order = catalog.read(lambda s: [r.delivery_id for r in s.scalars(select(OutboxRow).order_by(OutboxRow.id))])
    for i, hook in enumerate(hooks):  # each hook got each event exactly once, in outbox order
        got = [s["id"] for s in receiver.seen if s["path"] == f"/hook/{i}" and not s["failed"]]
        assert got == in_order, (hook.id, got)
    assert sum(s["failed"] for s in receiver.seen) == 3


def test_the_serve_loop_delivers_in_the_background(loradex_home, tmp_path, receiver):
    catalog = Catalog(loradex_home)
    W.add_hook(catalog, receiver.url, ["version.added"], secret=SECRET)
    worker = W.DeliveryWorker(catalog, interval=0.05).start()
    try:
        _add(catalog, tmp_path, "1.0.0", 1)
        assert receiver.arrived.wait(30), "the background worker delivered nothing"
    finally:
        worker.stop()
    assert [(s["event"], s["signed"]) for s in receiver.seen] == [("version.added", True)]
