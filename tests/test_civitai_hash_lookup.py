"""By-hash look-ups of the Civitai-style mirror name one file or nothing (issue 8): AutoV1 is the
sha256 of the 64 KiB at 1 MiB, so files that share those bytes share it, and every file of at
most 1 MiB has the AutoV1 of no bytes (e3b0c442)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from loradex.merge.synthetic_adapters import write_random_kohya_lora
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.store import Catalog
from loradex.registry.server.civitai_api import create_civitai_app
from loradex.registry.files.hashing import hash_file
from loradex.registry.catalog.operations import SoftDeleteVersion

TOKEN = "lookup-token-0123"
NOT_FOUND = {"error": "Model not found"}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    root = tmp_path_factory.mktemp("lookup")
    big = [write_random_kohya_lora(root / f"big{i}.safetensors", rank=96, seed=40 + i) for i in range(2)]
    # the same first 1.06 MiB as big0, different bytes after: same AutoV1, another file
    data = bytearray(big[0].read_bytes())
    data[-4] ^= 0x01  # the lowest byte of the last float32
    twin = root / "twin.safetensors"
    twin.write_bytes(bytes(data))
    small = write_random_kohya_lora(root / "small.safetensors", rank=4, seed=50)
    catalog = Catalog(root / "home")
    versions = {name: add_file(catalog, path, name=name).version
                for name, path in (("big-a", big[0]), ("big-b", big[1]), ("small", small))}
    same_bytes = add_file(catalog, big[1], name="big-b-copy").version  # the same file under another name
    client = TestClient(create_civitai_app(catalog, token=TOKEN), headers={"Authorization": f"Bearer {TOKEN}"})
    return {"catalog": catalog, "v": versions, "copy": same_bytes, "twin": twin, "client": client}


def _lookup(home, value):
    r = home["client"].get(f"/api/v1/model-versions/by-hash/{value}")
    return r.status_code, r.json()


def test_distinct_autov1_finds_each_file(home):
    a, b = home["v"]["big-a"], home["v"]["big-b"]
    assert a.size > 0x110000 and b.size > 0x110000
    assert a.autov1 != b.autov1 and "e3b0c442" not in (a.autov1, b.autov1)
    assert _lookup(home, a.autov1.upper())[1]["id"] == a.id
    # b's bytes are in two versions: one file, so the answer is the oldest version holding it
    assert home["copy"].sha256 == b.sha256
    assert _lookup(home, b.autov1)[1]["id"] == b.id


def test_small_file_autov1_names_no_file(home):
    small = home["v"]["small"]
    assert small.size < 0x100000 and small.autov1 == "e3b0c442"
    assert _lookup(home, "E3B0C442") == (404, NOT_FOUND)
    assert _lookup(home, small.autov2)[1]["id"] == small.id  # its other hashes still find it


def test_ambiguous_autov1_is_not_found_until_unambiguous(home):
    catalog, a = home["catalog"], home["v"]["big-a"]
    twin_hashes = hash_file(home["twin"])
    assert twin_hashes.autov1 == a.autov1 and twin_hashes.sha256 != a.sha256
    twin = add_file(catalog, home["twin"], name="twin").version
    try:
        assert _lookup(home, a.autov1) == (404, NOT_FOUND)
        r = home["client"].post("/api/v1/model-versions/by-hash", json=[a.autov1, twin.autov2])
        assert [d["id"] for d in r.json()] == [twin.id]  # the batch skips the ambiguous one
        # the longer hashes still tell the two apart
        assert _lookup(home, a.autov2)[1]["id"] == a.id and _lookup(home, twin.sha256)[1]["id"] == twin.id
    finally:
        catalog.apply([SoftDeleteVersion(twin.ref)])
    assert _lookup(home, a.autov1)[1]["id"] == a.id  # a removed twin no longer competes


def test_malformed_hashes_are_not_found(home):
    for value in ("xyz", "abc", "0" * 9, "g" * 10, "0" * 65):
        assert _lookup(home, value) == (404, NOT_FOUND), value
