"""`loradex serve` with LORADEX_BLOBS=s3://… (moto on 127.0.0.1): a push through the real
huggingface_hub client lands in the bucket — the Hub's objects under ``PREFIX/hub/sha256/…``,
the served catalog's blobs under ``PREFIX/sha256/…`` — nothing under the home's blob or object
folders; another home pulls it back byte for byte; the served catalog verifies clean and its gc
leaves the Hub's objects alone."""

from __future__ import annotations

import hashlib

import _s3
import _hub_sync_fixtures
from _hub_sync_fixtures import ThreadServer, publishing_home
from loradex.registry.catalog.maintenance import gc, verify
from loradex.registry.catalog.store import Catalog
from loradex.registry.remotes import add_remote, pull, push

s3_server, s3_blobs = _s3.s3_server, _s3.s3_blobs  # the fixtures
_quiet_hub = _hub_sync_fixtures._quiet_hub  # autouse: no progress bars, no Xet, the team token


def test_serve_on_s3_push_then_pull(s3_blobs, tmp_path, monkeypatch):
    monkeypatch.setenv("LORADEX_GC_GRACE_SECONDS", "0")
    with ThreadServer(tmp_path / "server-home") as server:
        pub = publishing_home(tmp_path / "a", tmp_path, evidence=False)
        remote = add_remote(pub.catalog, "team", f"{server.url}/team", "mirror")
        push(pub.catalog, pub.ref, "team")
        served = Catalog(server.home)
        v = served.resolve("style@1.0.0")
        assert served.blobs.shared and v.sha256 == pub.catalog.resolve(pub.ref).sha256
        bucket, prefix = _s3.bucket_and_prefix(s3_blobs)
        keys = {o["Key"] for o in _s3.raw_client(s3_blobs).list_objects_v2(Bucket=bucket).get("Contents", [])}
        tail = f"sha256/{v.sha256[:2]}/{v.sha256[2:]}"
        assert {f"{prefix}hub/{tail}", f"{prefix}{tail}"} <= keys
        assert not any(p.is_file() for p in (server.home / "mirror" / "hub" / "objects").rglob("*"))
        assert not any(p.is_file() for p in (server.home / "blobs").rglob("*"))

        catalog_b = Catalog(tmp_path / "b")
        add_remote(catalog_b, "team", remote.url, "mirror")
        got = pull(catalog_b, "team:style@v1.0.0").version
        assert got.sha256 == v.sha256
        with catalog_b.blobs.open(got.sha256) as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == v.sha256
        assert verify(served).ok
        gc(served)  # the catalog's gc lists only its own prefix: the Hub's objects stay
        keys = {o["Key"] for o in _s3.raw_client(s3_blobs).list_objects_v2(Bucket=bucket).get("Contents", [])}
        assert f"{prefix}hub/{tail}" in keys and f"{prefix}{tail}" in keys
