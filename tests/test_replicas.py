"""Two stateless ``loradex serve`` replicas on one PostgreSQL and one S3 bucket (moto on
127.0.0.1): ``build_server_app`` twice, over two ``Catalog`` objects with homes of their own on
the same database URL, each under uvicorn on its own port. What one replica writes, the other
reads; two replicas racing on one push or one tag: exactly one wins and the other gets the Hub's
conflict answer; concurrent alias moves from two catalogs keep every event once; and a replica's
home can be wiped between requests without losing anything (it keeps no state on local disk)."""

from __future__ import annotations

import hashlib
import shutil
import threading

import pytest

import _hub_sync_fixtures
import _s3
from _hub_sync_fixtures import TOKEN
from _served_app import ServedApp
from loradex.merge.synthetic_adapters import write_random_kohya_lora
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.operations import move_alias
from loradex.registry.catalog.store import Catalog

pytestmark = pytest.mark.postgres
s3_server, s3_blobs = _s3.s3_server, _s3.s3_blobs  # the fixtures
_quiet_hub = _hub_sync_fixtures._quiet_hub  # autouse: no progress bars, no Xet, no ambient token

REPO = "team/style"


class Replica(ServedApp):
    def __init__(self, home, db_url: str):
        from loradex.registry.server.app import build_server_app

        self.home = home
        self.catalog = Catalog(home, db_url=db_url)
        super().__init__(build_server_app(self.catalog, TOKEN))

    def api(self):
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.url, token=TOKEN)

    def wipe_home(self) -> None:
        """Everything this replica ever wrote to its local disk, gone."""
        shutil.rmtree(self.home)
        self.home.mkdir()


@pytest.fixture
def replicas(pg_url, s3_blobs, tmp_path):
    with Replica(tmp_path / "r1", pg_url) as a, Replica(tmp_path / "r2", pg_url) as b:
        yield a, b


def race(*calls):
    """Run the calls at once (threads released together); each result or the exception raised."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i, fn):
        barrier.wait()
        try:
            results[i] = fn()
        except Exception as exc:  # noqa: BLE001 — the loser's answer is what we look at
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def status_of(exc) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def test_push_to_one_replica_read_from_the_other(replicas, tmp_path, s3_blobs):
    from huggingface_hub import hf_hub_download

    a, b = replicas
    lora = write_random_kohya_lora(tmp_path / "style.safetensors", seed=3)
    a.api().create_repo(REPO)
    a.api().upload_file(path_or_fileobj=str(lora), path_in_repo="style.safetensors", repo_id=REPO)
    a.api().upload_file(path_or_fileobj=b"# style\n", path_in_repo="README.md", repo_id=REPO)

    assert {f for f in b.api().list_repo_files(REPO)} == {".gitattributes", "style.safetensors", "README.md"}
    assert [c.commit_id for c in b.api().list_repo_commits(REPO)] == \
        [c.commit_id for c in a.api().list_repo_commits(REPO)]
    got = hf_hub_download(REPO, "style.safetensors", endpoint=b.url, token=TOKEN, cache_dir=tmp_path / "cache")
    assert hashlib.sha256(open(got, "rb").read()).digest() == hashlib.sha256(lora.read_bytes()).digest()
    # nothing of the repo on either replica's disk: refs and commits are database rows
    for replica in replicas:
        assert not (replica.home / "mirror" / "hub" / "repos").exists()


def test_racing_commits_with_one_parent_exactly_one_wins(replicas):
    from huggingface_hub import CommitOperationAdd

    a, b = replicas
    a.api().create_repo(REPO)
    head = a.api().list_repo_commits(REPO)[0].commit_id
    for attempt in range(5):  # several rounds: the race goes either way
        def push(replica, name):
            return replica.api().create_commit(
                REPO, [CommitOperationAdd(f"{name}-{attempt}.txt", name.encode())],
                commit_message=f"{name} {attempt}", parent_commit=head)

        results = race(lambda: push(a, "a"), lambda: push(b, "b"))
        won = [r for r in results if not isinstance(r, Exception)]
        lost = [r for r in results if isinstance(r, Exception)]
        assert len(won) == 1 and len(lost) == 1, results
        assert status_of(lost[0]) == 412, lost[0]
        # both replicas agree on the new head, which is the winner's commit, child of the old head
        commits_a = a.api().list_repo_commits(REPO)
        commits_b = b.api().list_repo_commits(REPO)
        assert [c.commit_id for c in commits_a] == [c.commit_id for c in commits_b]
        assert won[0].oid == commits_a[0].commit_id and commits_a[1].commit_id == head
        files = set(b.api().list_repo_files(REPO))
        winner = "a" if results[0] is won[0] else "b"
        loser = "b" if winner == "a" else "a"
        assert f"{winner}-{attempt}.txt" in files and f"{loser}-{attempt}.txt" not in files
        head = commits_a[0].commit_id


def test_racing_tags_exactly_one_wins(replicas, tmp_path):
    a, b = replicas
    lora = write_random_kohya_lora(tmp_path / "style.safetensors", seed=4)
    a.api().create_repo(REPO)
    a.api().upload_file(path_or_fileobj=str(lora), path_in_repo="style.safetensors", repo_id=REPO)
    results = race(lambda: a.api().create_tag(REPO, tag="v1.0.0"), lambda: b.api().create_tag(REPO, tag="v1.0.0"))
    lost = [r for r in results if isinstance(r, Exception)]
    assert len(lost) == 1 and status_of(lost[0]) == 409, results
    refs_a, refs_b = a.api().list_repo_refs(REPO), b.api().list_repo_refs(REPO)
    assert [t.name for t in refs_a.tags] == [t.name for t in refs_b.tags] == ["v1.0.0"]
    # the winner's tag registered the version once, in the one catalog both replicas serve
    versions = a.catalog.versions("style")
    assert [v.version for v in versions] == ["1.0.0"]
    assert versions[0].sha256 == hashlib.sha256(lora.read_bytes()).hexdigest()


def test_concurrent_alias_moves_through_the_promotion_gate_from_two_catalogs(replicas, tmp_path):
    """8 moves of one gated alias at once, 4 through each catalog: the versions with a passing
    evaluation card move it, the others are refused and recorded; every attempt is one event, and
    the events form one chain (each starts where the alias was after the one before)."""
    from _evidence_fixtures import minimal_record
    from _hub_sync_fixtures import card_for, record_png
    from loradex.registry.catalog import records as R
    from loradex.registry.catalog.records import PromotionRefused, set_alias_policy

    a, b = replicas
    for i in range(4):
        lora = write_random_kohya_lora(tmp_path / f"v{i}.safetensors", seed=10 + i)
        v = add_file(a.catalog, lora, name="style", version=f"1.{i}.0").version
        if i % 2 == 0:  # 1.0.0 and 1.2.0 pass the gate; 1.1.0 and 1.3.0 have no card
            with_rec = minimal_record(stack=[{"requested": "style", "ref": v.ref, "sha256": v.sha256,
                                              "te_weight": 1.0, "unet_weight": 1.0}])
            without_rec = minimal_record(prompt="a red fox")
            R.store_record(a.catalog, with_rec, record_png(with_rec, (200, 30, 30)))
            R.store_record(a.catalog, without_rec, record_png(without_rec, (30, 30, 200)))
            R.store_card(a.catalog, card_for(v.ref, v.sha256, with_rec["id"], without_rec["id"]))
    set_alias_policy(a.catalog, "style", "prod", require_pass=True)
    moves = [(catalog, f"style@1.{i}.0") for i in range(4) for catalog in (a.catalog, b.catalog)]
    results = race(*[lambda c=c, ref=ref: move_alias(c, ref, "prod", reason=f"{ref} via {id(c)}")
                     for c, ref in moves])
    refused = [r for r in results if isinstance(r, PromotionRefused)]
    assert len(refused) == 4 and len(results) - len(refused) == 4, results  # no other failure
    history = sorted(a.catalog.alias_history("style", "prod"), key=lambda e: e.id)
    assert len(history) == len(moves)  # every attempt recorded, once
    assert sorted(e.reason.split(" [")[0] for e in history) == sorted(f"{ref} via {id(c)}" for c, ref in moves)
    assert sorted(e.to_version for e in history if e.action == "refused") == ["1.1.0"] * 2 + ["1.3.0"] * 2
    current = None
    for event in history:  # one total order, no lost update
        assert event.from_version == current, history
        if event.action != "refused":
            current = event.to_version
    (alias,) = b.catalog.aliases("style")
    assert alias.version == current in ("1.0.0", "1.2.0")


def test_a_replica_keeps_nothing_on_local_disk(replicas, tmp_path):
    from huggingface_hub import hf_hub_download

    a, b = replicas
    lora = write_random_kohya_lora(tmp_path / "style.safetensors", seed=5)
    b.api().create_repo(REPO)
    b.wipe_home()
    b.api().upload_file(path_or_fileobj=str(lora), path_in_repo="style.safetensors", repo_id=REPO)
    b.wipe_home()
    b.api().create_tag(REPO, tag="v1.0.0")
    a.wipe_home()
    b.wipe_home()
    for replica, n in ((a, 1), (b, 2)):
        got = hf_hub_download(REPO, "style.safetensors", revision="v1.0.0", endpoint=replica.url, token=TOKEN,
                              cache_dir=tmp_path / f"cache{n}")
        assert hashlib.sha256(open(got, "rb").read()).hexdigest() == hashlib.sha256(lora.read_bytes()).hexdigest()
        assert [t.name for t in replica.api().list_repo_refs(REPO).tags] == ["v1.0.0"]
        assert len(replica.api().list_repo_commits(REPO)) == 2
    assert [v.version for v in b.catalog.versions("style")] == ["1.0.0"]


def test_a_ref_moved_behind_a_transaction_s_back_is_a_conflict_not_a_lost_update(pg_url, tmp_path):
    """The compare-and-swap holds on its own: a ref changed by another writer after this
    transaction read it (here behind the repo lock's back, straight in the table) fails the
    update with the Hub's stale-parent answer, and nothing of the transaction is kept."""
    import psycopg

    from loradex.registry.server.hub.object_store import ObjectStore
    from loradex.registry.server.hub.protocol_errors import StaleParent
    from loradex.registry.server.hub.repo_backends import DatabaseRepoBackend
    from loradex.registry.server.hub.repo_store import Commit, RepoStore

    catalog = Catalog(tmp_path / "home", db_url=pg_url)
    backend = DatabaseRepoBackend(catalog=catalog)
    store = RepoStore(tmp_path / "hub", ObjectStore(tmp_path / "hub"), backend=backend)
    first = store.create_repo(REPO, private=False, author="a")
    other = Commit.create([first.oid], "elsewhere", "", "b", first.tree)
    raw = psycopg.connect(pg_url.replace("postgresql+psycopg", "postgresql"), autocommit=True)
    with pytest.raises(StaleParent):
        with backend.transaction(REPO) as txn:
            refs = txn.refs()
            mine = Commit.create([first.oid], "mine", "", "a", first.tree)
            txn.put_commit(mine.oid, mine.document())
            raw.execute("UPDATE hub_refs SET target = %s WHERE repo_id = %s AND name = 'main'", (other.oid, REPO))
            refs["branches"]["main"] = mine.oid
            txn.put_refs(refs)
    assert store.refs(REPO).branches["main"] == other.oid  # the other writer's move stands
    count = raw.execute("SELECT count(*) FROM hub_commits WHERE repo_id = %s", (REPO,)).fetchone()[0]
    assert count == 1  # the failed transaction's commit row is gone with it
    raw.close()


def test_repo_backend_choice(pg_url, tmp_path, monkeypatch):
    from loradex.registry.errors import UsageError
    from loradex.registry.server.hub.repo_backends import HUB_REPOS_ENV, choose_repo_backend

    monkeypatch.delenv(HUB_REPOS_ENV, raising=False)
    monkeypatch.delenv("LORADEX_DB", raising=False)
    sqlite_home = Catalog(tmp_path / "local")
    assert choose_repo_backend(tmp_path / "hub", sqlite_home).name == "file"
    assert choose_repo_backend(tmp_path / "hub", Catalog(tmp_path / "pg", db_url=pg_url)).name == "database"
    monkeypatch.setenv(HUB_REPOS_ENV, "file")
    assert choose_repo_backend(tmp_path / "hub", Catalog(tmp_path / "pg", db_url=pg_url)).name == "file"
    monkeypatch.setenv(HUB_REPOS_ENV, "database")
    with pytest.raises(UsageError, match="needs a server database"):
        choose_repo_backend(tmp_path / "hub", sqlite_home)
    monkeypatch.setenv(HUB_REPOS_ENV, "etcd")
    with pytest.raises(UsageError, match="one of database, file"):
        choose_repo_backend(tmp_path / "hub", sqlite_home)
