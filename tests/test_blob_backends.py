"""The blob store interface over both backends (the home's folder, and S3 served by moto on
127.0.0.1, see tests/_s3.py): streaming writes with the four hashes, the multipart path, no
half-written final key, the read-through cache (LRU, verification), gc's grace period and
uploads in progress, verify, ``blobs migrate`` (resumable), and a catalog end to end."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

import _s3
from _s3 import SMALL_THRESHOLD, bucket_and_prefix, make_bucket, raw_client, s3_environment
from loradex.cli.app import app
from loradex.merge.synthetic_adapters import write_random_kohya_lora
from loradex.registry.catalog.maintenance import gc, verify
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import CatalogError
from loradex.registry.files.blob_backends import BlobBackend, open_blob_store
from loradex.registry.files.hashing import hash_file

runner = CliRunner()
s3_server, s3_blobs = _s3.s3_server, _s3.s3_blobs  # the fixtures


@pytest.fixture(params=["local", "s3"])
def backend(request, monkeypatch) -> str:
    """Run the test on the home's own blob folder, then on an S3 bucket."""
    if request.param == "s3":
        request.getfixturevalue("s3_blobs")
        monkeypatch.setenv("LORADEX_GC_GRACE_SECONDS", "0")
    return request.param


def cli(*args: str, ok: bool = True):
    result = runner.invoke(app, list(args), catch_exceptions=True)
    if ok and result.exit_code != 0:
        raise AssertionError(f"loradex {' '.join(args)} failed: {result.output} {result.exception!r}")
    return result


def random_file(path: Path, size: int, seed: int) -> Path:
    import random

    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def damage(catalog: Catalog, sha256: str, data: bytes | None) -> None:
    """Replace a stored blob's bytes behind the store's back (``None``: delete it)."""
    if catalog.blobs.shared:
        client = raw_client(s3_env())
        if data is None:
            client.delete_object(Bucket=catalog.blobs.bucket, Key=catalog.blobs.key_for(sha256))
        else:
            client.put_object(Bucket=catalog.blobs.bucket, Key=catalog.blobs.key_for(sha256), Body=data)
        catalog.blobs.cache.drop(sha256)
        return
    path = catalog.blobs.path_for(sha256)
    if data is None:
        path.unlink()
        return
    os.chmod(path, 0o644)
    path.write_bytes(data)


def next_second() -> None:
    """S3's Last-Modified has whole seconds and gc keeps what was written in its cutoff's second
    (it cannot tell it from later): let a second boundary pass before a gc expected to delete."""
    import time

    time.sleep(1.05 - time.time() % 1)


def s3_env() -> dict:
    return {"LORADEX_S3_ENDPOINT_URL": os.environ["LORADEX_S3_ENDPOINT_URL"],
            "LORADEX_BLOBS": os.environ["LORADEX_BLOBS"]}


# --- the interface, both backends ------------------------------------------------------------
@pytest.mark.parametrize("size", [1000, SMALL_THRESHOLD * 2 + 12345])
def test_add_streams_and_hashes_then_reads_back(backend, size, tmp_path, loradex_home):
    catalog = Catalog(loradex_home)
    assert isinstance(catalog.blobs, BlobBackend)
    assert catalog.blobs.shared is (backend == "s3")
    src = random_file(tmp_path / "a.bin", size, seed=size)
    stored = catalog.blobs.add_file(src)
    assert stored.hashes == hash_file(src)  # all four hashes, from the one pass that stored it
    assert stored.existed is False
    sha = stored.hashes.sha256
    assert catalog.blobs.exists(sha) and catalog.blobs.size_of(sha) == size
    with catalog.blobs.open(sha) as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == sha
    assert catalog.blobs.path_for(sha).read_bytes() == src.read_bytes()
    assert [(e.sha256, e.size) for e in catalog.blobs.iter_entries()] == [(sha, size)]
    again = catalog.blobs.add_file(src)
    assert again.existed is True and again.hashes == stored.hashes
    missing = "0" * 64
    assert not catalog.blobs.exists(missing) and not catalog.blobs.path_for(missing).is_file()


def test_verify_finds_corrupted_and_missing_blobs(backend, tmp_path, loradex_home):
    files = [write_random_kohya_lora(tmp_path / f"s{i}.safetensors", seed=i, rank=4) for i in range(3)]
    for f in files:
        cli("add", str(f), "--name", "style")
    catalog = Catalog(loradex_home)
    assert verify(catalog).ok
    shas = [hash_file(f).sha256 for f in files]
    damage(catalog, shas[0], b"not the bytes it was")
    damage(catalog, shas[1], None)
    report = verify(catalog)
    problems = {(p["blob"], p["problem"].split(" (")[0].split("…")[0][:16]) for p in report.problems}
    assert (shas[0], "content hash is ") in problems
    assert any(p["blob"] == shas[1] and p["problem"] == "blob missing" for p in report.problems)
    assert all(p["blob"] != shas[2] for p in report.problems)
    failed = cli("verify", "--json", ok=False)
    assert failed.exit_code == 1 and not json.loads(failed.stdout)["ok"]


def test_catalog_end_to_end(backend, tmp_path, loradex_home):
    """add, show, export, rm, gc, verify through the CLI on each backend."""
    a = write_random_kohya_lora(tmp_path / "a.safetensors", seed=1, rank=4, trigger="wtrclr")
    b = write_random_kohya_lora(tmp_path / "b.safetensors", seed=2, rank=4)
    added = json.loads(cli("add", str(a), "--name", "style", "--json").stdout)
    json.loads(cli("add", str(b), "--name", "style", "--json").stdout)
    assert added["sha256"] == hashlib.sha256(a.read_bytes()).hexdigest()
    assert json.loads(cli("show", "style@1.0.0", "--json").stdout)["sha256"] == added["sha256"]
    webui = tmp_path / "webui"
    cli("export", "style@1.0.0", str(webui))
    exported = [p for p in webui.rglob("*.safetensors")]
    assert len(exported) == 1 and exported[0].read_bytes() == a.read_bytes()
    catalog = Catalog(loradex_home)
    assert catalog.read(lambda s: s.execute(__import__("sqlalchemy").text("SELECT count(*) FROM blob_uploads")).scalar()) == 0
    cli("rm", "style@1.0.0")
    next_second()
    report = json.loads(cli("gc", "--json").stdout)
    assert report["removed"] == [added["sha256"]] and report["bytes_freed"] == a.stat().st_size
    assert not Catalog(loradex_home).blobs.exists(added["sha256"])
    assert json.loads(cli("verify", "--json").stdout)["ok"] is True
    assert json.loads(cli("show", "style", "--json").stdout)["version"] == "1.1.0"


def test_unknown_scheme_is_one_line_error(monkeypatch, loradex_home):
    monkeypatch.setenv("LORADEX_BLOBS", "ftp://example/blobs")
    with pytest.raises(CatalogError, match="no blob store backend for ftp://"):
        Catalog(loradex_home)


def test_local_path_location_keeps_blobs_outside_the_home(monkeypatch, tmp_path, loradex_home):
    monkeypatch.setenv("LORADEX_BLOBS", str(tmp_path / "shared-blobs"))
    stored = Catalog(loradex_home).blobs.add_bytes(b"elsewhere")
    assert (tmp_path / "shared-blobs" / "sha256" / stored.hashes.sha256[:2] / stored.hashes.sha256[2:]).is_file()
    assert not (loradex_home / "blobs" / "sha256").exists()


# --- S3 only ---------------------------------------------------------------------------------
def _store(loradex_home):
    return Catalog(loradex_home).blobs


def test_s3_multipart_path_checks_every_part(s3_blobs, tmp_path, loradex_home):
    store = _store(loradex_home)
    calls = []
    real_upload_part = store.client.upload_part

    def counting(**kwargs):
        calls.append((kwargs["PartNumber"], len(kwargs["Body"]), kwargs["ChecksumSHA256"]))
        return real_upload_part(**kwargs)

    store.client.upload_part = counting
    src = random_file(tmp_path / "big.bin", SMALL_THRESHOLD * 2 + 7, seed=3)
    stored = store.add_file(src)
    assert sorted(n for n, _, _ in calls) == [1, 2, 3]
    assert sorted(size for _, size, _ in calls) == [7, SMALL_THRESHOLD, SMALL_THRESHOLD]
    bucket, prefix = bucket_and_prefix(s3_blobs)
    client = raw_client(s3_blobs)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    sha = stored.hashes.sha256
    assert keys == [f"{prefix}sha256/{sha[:2]}/{sha[2:]}"]  # the staging key is gone
    assert client.head_object(Bucket=bucket, Key=keys[0])["ContentLength"] == src.stat().st_size
    assert stored.hashes == hash_file(src)


def test_s3_bytes_damaged_in_transit_fail_the_add(s3_blobs, tmp_path, loradex_home):
    """A part whose bytes do not match its announced SHA-256 fails the add and leaves nothing:
    refused by the store's part check (AWS), or (moto, which does not check parts) by the
    full-object SHA-256 of the published copy, which is then deleted."""
    store = _store(loradex_home)
    real_upload_part = store.client.upload_part

    def lying(**kwargs):
        kwargs["Body"] = kwargs["Body"][:-1] + bytes([kwargs["Body"][-1] ^ 1])
        return real_upload_part(**kwargs)

    store.client.upload_part = lying
    with pytest.raises(CatalogError, match="object storage refused|the published copy of sha256:.* hashes to"):
        store.add_file(random_file(tmp_path / "big.bin", SMALL_THRESHOLD + 10, seed=4))
    assert store.ledger.active() == []
    bucket, _ = bucket_and_prefix(s3_blobs)
    assert not raw_client(s3_blobs).list_objects_v2(Bucket=bucket).get("Contents")


@pytest.mark.parametrize("size", [1000, SMALL_THRESHOLD * 2 + 5])
def test_s3_upload_failing_midway_publishes_nothing(s3_blobs, size, tmp_path, loradex_home):
    catalog = Catalog(loradex_home)
    store = catalog.blobs
    real_upload_part, real_put = store.client.upload_part, store.client.put_object

    def fail_second_part(**kwargs):
        if kwargs["PartNumber"] == 2:
            raise ConnectionResetError("the network went away")
        return real_upload_part(**kwargs)

    def fail_put(**kwargs):
        raise ConnectionResetError("the network went away")

    store.client.upload_part, store.client.put_object = fail_second_part, fail_put
    src = random_file(tmp_path / "f.bin", size, seed=5)
    with pytest.raises(ConnectionResetError):
        with store.writing():
            store.add_file(src)
    bucket, prefix = bucket_and_prefix(s3_blobs)
    client = raw_client(s3_blobs)
    assert not client.list_objects_v2(Bucket=bucket).get("Contents")  # no final key, no staging key
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")  # aborted
    assert store.ledger.active() == []
    store.client.upload_part, store.client.put_object = real_upload_part, real_put
    assert store.add_file(src).hashes.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()


def test_s3_cache_is_lru_capped_and_verified(s3_blobs, tmp_path, loradex_home):
    store = _store(loradex_home)
    shas = [store.add_bytes(bytes([i]) * 1000).hashes.sha256 for i in range(3)]
    store.cache.max_bytes = 2500  # room for two
    first, second = store.path_for(shas[0]), store.path_for(shas[1])
    assert first.read_bytes() == b"\0" * 1000 and second.read_bytes() == b"\1" * 1000
    os.utime(store.cache._stamp_of(shas[1]), (1, 1))  # shas[1] is now the least recently used
    store.path_for(shas[2])
    assert {sha for sha, _, _ in store.cache.entries()} == {shas[0], shas[2]}
    assert store.cache.total_bytes() <= 2500
    # a cache file changed behind its back is detected and fetched again
    cached = store.path_for(shas[0])
    os.chmod(cached, 0o644)
    cached.write_bytes(b"X" * 1000)
    refetched = store.path_for(shas[0])
    assert refetched.read_bytes() == b"\0" * 1000
    # a full re-hash catches what the stamp cannot (same size, same mtime)
    st = refetched.stat()
    os.chmod(refetched, 0o644)
    refetched.write_bytes(b"Y" * 1000)
    os.utime(refetched, ns=(st.st_atime_ns, st.st_mtime_ns))
    store.cache._stamp_of(shas[0]).write_text(f"{st.st_size} {refetched.stat().st_mtime_ns}\n")
    assert store.cache.verify_entry(shas[0]) is False
    assert store.path_for(shas[0]).read_bytes() == b"\0" * 1000
    # an object whose bytes are not its name never enters the cache
    raw_client(s3_blobs).put_object(Bucket=store.bucket, Key=store.key_for(shas[1]), Body=b"\7" * 1000)
    with pytest.raises(CatalogError, match="corrupted"):
        store.path_for(shas[1])
    assert not store.cache.path_of(shas[1]).exists()


def test_s3_gc_keeps_young_objects_and_uploads_in_progress(s3_blobs, monkeypatch, loradex_home):
    monkeypatch.delenv("LORADEX_GC_GRACE_SECONDS", raising=False)
    catalog = Catalog(loradex_home)
    store = catalog.blobs
    assert store.default_grace_seconds == 3600
    with store.writing():
        young = store.add_bytes(b"unreferenced, just written").hashes.sha256
    assert gc(catalog).removed == [] and store.exists(young)  # inside the grace period
    # an upload in progress (recorded in the database) names a blob: kept even with no grace
    with store.writing():
        in_flight = store.add_bytes(b"about to be named by a row").hashes.sha256
    upload = store.ledger.begin(None)
    store.ledger.name(upload, in_flight)
    next_second()
    report = gc(catalog, grace_seconds=0)
    assert report.removed == [young]
    assert store.exists(in_flight) and not store.exists(young)
    store.ledger.finish(upload)
    assert gc(catalog, grace_seconds=0).removed == [in_flight]
    # an upload record is retired by age alone (LORADEX_BLOB_UPLOAD_STALE_SECONDS), never by the grace
    kept = store.ledger.begin("some/staging/key")
    gc(catalog, grace_seconds=0)
    assert [rec.id for rec in store.ledger.active()] == [kept]
    store.settings.stale_upload_seconds = 0
    next_second()
    gc(catalog, grace_seconds=0)
    assert store.ledger.active() == []
    store.settings.stale_upload_seconds = 3600
    # what killed writers left: a staged object and a multipart upload; one still live is kept
    client = raw_client(s3_blobs)
    live_key, dead_key = f"{store.key_prefix}uploads/live", f"{store.key_prefix}uploads/dead"
    for key in (live_key, dead_key):
        client.put_object(Bucket=store.bucket, Key=key, Body=b"staged")
    store.ledger.begin(live_key)
    assert gc(catalog, grace_seconds=3600).temp_files_removed == 0  # all young
    # (made after that gc: moto reports every multipart upload as initiated in 2010)
    dead_mpu = client.create_multipart_upload(Bucket=store.bucket, Key=f"{store.key_prefix}uploads/dead-mpu")
    next_second()
    report = gc(catalog, grace_seconds=0)
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=store.bucket).get("Contents", [])}
    assert live_key in keys and dead_key not in keys
    assert report.temp_files_removed == 2
    assert not client.list_multipart_uploads(Bucket=store.bucket).get("Uploads")
    assert dead_mpu["UploadId"]


def test_s3_remove_respects_a_rewrite_during_the_grace_period(s3_blobs, loradex_home):
    """gc's delete re-checks the object's age: one written again after gc listed it stays."""
    store = _store(loradex_home)
    sha = store.add_bytes(b"listed old, then written again").hashes.sha256
    listed_cutoff = datetime.now(timezone.utc) - timedelta(seconds=30)
    assert store.remove(sha, older_than=listed_cutoff) is None and store.exists(sha)
    assert store.remove(sha, older_than=datetime.now(timezone.utc) + timedelta(seconds=5)) == 30
    assert not store.exists(sha)


def test_migrate_to_s3_is_resumable_and_switches_the_home(s3_server, monkeypatch, tmp_path, loradex_home):
    files = [write_random_kohya_lora(tmp_path / f"s{i}.safetensors", seed=10 + i, rank=4) for i in range(3)]
    for f in files:
        cli("add", str(f), "--name", "style")
    env = s3_environment(s3_server, make_bucket(s3_server), prefix="team")
    for key, value in env.items():
        if key != "LORADEX_BLOBS":
            monkeypatch.setenv(key, value)
    from loradex.registry.files.s3_blob_store import S3BlobStore

    real_add, sent = S3BlobStore.add_file, []

    def dies_after_one(self, src, **kw):
        if sent:
            raise ConnectionResetError("killed half-way")
        sent.append(src)
        return real_add(self, src, **kw)

    monkeypatch.setattr(S3BlobStore, "add_file", dies_after_one)
    failed = cli("blobs", "migrate", "--to", env["LORADEX_BLOBS"], ok=False)
    assert failed.exit_code != 0
    assert Catalog(loradex_home).blobs.shared is False  # nothing recorded: still the local store
    monkeypatch.setattr(S3BlobStore, "add_file", real_add)
    done = json.loads(cli("blobs", "migrate", "--to", env["LORADEX_BLOBS"], "--json").stdout)
    assert done == {"location": env["LORADEX_BLOBS"], "copied": 2, "already_there": 1,
                    "bytes_copied": done["bytes_copied"], "recorded": True}
    catalog = Catalog(loradex_home)
    assert catalog.blobs.shared is True and catalog.blobs.location == env["LORADEX_BLOBS"]
    assert sorted(e.sha256 for e in catalog.blobs.iter_entries()) == sorted(hash_file(f).sha256 for f in files)
    assert verify(catalog).ok
    again = cli("blobs", "migrate", "--to", env["LORADEX_BLOBS"], ok=False)
    assert again.exit_code == 1 and "already live" in str(again.exception)


def test_s3_location_settings_are_validated(monkeypatch, loradex_home):
    for bad in ("s3://", "s3://bucket/../x", "s3://bad bucket/x"):
        monkeypatch.setenv("LORADEX_BLOBS", bad)
        with pytest.raises(CatalogError):
            open_blob_store(loradex_home)
    monkeypatch.setenv("LORADEX_BLOBS", "s3://bucket/p")
    monkeypatch.setenv("LORADEX_S3_ADDRESSING", "sideways")
    with pytest.raises(CatalogError, match="LORADEX_S3_ADDRESSING"):
        open_blob_store(loradex_home)


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_s3_gc_with_no_grace_beside_concurrent_writers_loses_nothing(db, s3_blobs, tmp_path, loradex_home,
                                                                     request, monkeypatch):
    """Writers add versions (new bytes, and bytes already stored but unreferenced — the "publish
    rewrites the object" path) while gc runs again and again with a grace period of 0: only the
    upload records and the re-check before each delete protect them. Every committed version's
    blob must survive — on SQLite and on PostgreSQL (whose statements see their own snapshots)."""
    import threading
    import time

    from loradex.registry.catalog.adding import add_file

    if db == "postgres":
        monkeypatch.setenv("LORADEX_DB", request.getfixturevalue("pg_url"))

    catalog = Catalog(loradex_home)
    files = [write_random_kohya_lora(tmp_path / f"f{i}.safetensors", seed=100 + i, rank=2) for i in range(18)]
    with catalog.blobs.writing():
        for f in files[::2]:  # stored long ago, no row names them: gc's prey until a writer names them
            catalog.blobs.add_file(f)
    time.sleep(1.1)
    stop, errors, added = threading.Event(), [], []

    def writer(chunk):
        try:
            mine = Catalog(loradex_home)
            for f in chunk:
                added.append(add_file(mine, f, name=f"w-{f.stem}").version)
        except Exception as exc:  # noqa: BLE001 — reported below
            errors.append(exc)

    def collector():
        mine = Catalog(loradex_home)
        while not stop.is_set():
            try:
                gc(mine, grace_seconds=0)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(files[i::3],)) for i in range(3)]
    sweeper = threading.Thread(target=collector)
    sweeper.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    sweeper.join()
    assert errors == []
    assert len(added) == len(files)
    report = verify(Catalog(loradex_home))
    assert report.ok, report.problems
    assert {v.sha256 for v in added} == {e.sha256 for e in catalog.blobs.iter_entries()}


def test_migrate_to_a_missing_bucket_is_one_line_and_records_nothing(s3_server, monkeypatch, tmp_path, loradex_home):
    cli("add", str(write_random_kohya_lora(tmp_path / "a.safetensors", seed=3, rank=4)), "--name", "style")
    env = s3_environment(s3_server, "no-such-bucket-here")
    for key, value in env.items():
        if key != "LORADEX_BLOBS":
            monkeypatch.setenv(key, value)
    failed = cli("blobs", "migrate", "--to", env["LORADEX_BLOBS"], ok=False)
    assert failed.exit_code == 1
    assert "NoSuchBucket" in str(failed.exception) and "testing" not in str(failed.exception)
    assert Catalog(loradex_home).blobs.shared is False
    assert not (loradex_home / "blobs" / "location.json").exists()
