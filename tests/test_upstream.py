"""Upstream watch (issue 22): `loradex outdated` and `pull --update` against a fake upstream on
127.0.0.1 (tests/_fake_upstream.py) that adds versions, changes base model and deletes versions
and the model between calls; deleted upstream in `show`; the token never sent to another site;
Civitai's hosts."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from _fake_upstream import FakeUpstream
from loradex.cli.app import app
from loradex.merge.synthetic_adapters import write_random_kohya_lora
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import UsageError
from loradex.registry.files.hashing import hash_file
from loradex.registry.remotes import guess_kind, pull
from loradex.registry.remotes.civitai import parse_civitai_ref
from loradex.registry.remotes.civitai_client import _site, _without_token
from loradex.registry.remotes.upstream import outdated, pull_update

TOKEN = "civ-upstream-secret-42"
runner = CliRunner()


def cli(*args, code=0):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=True)
    assert result.exit_code == code, f"loradex {' '.join(map(str, args))}: {result.output} {result.exception!r}"
    return result


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    root = tmp_path_factory.mktemp("upstream")
    return {i: write_random_kohya_lora(root / f"v{i}.safetensors", rank=1, seed=i, base_version="sdxl_base_v1-0")
            for i in range(1, 6)}


@pytest.fixture
def fake():
    server = FakeUpstream()
    yield server
    server.close()


def _status(catalog, **kw):
    (s,) = outdated(catalog, ["fake-style"], **kw)
    return s


def test_outdated_and_update_follow_the_upstream(fake, loras, monkeypatch):
    monkeypatch.setenv("CIVITAI_TOKEN", TOKEN)
    catalog = Catalog()
    fake.add_version(1001, "v1.0", "Pony", "2024-01-01T00:00:00.000Z", loras[1])
    first = pull(catalog, "civitai:1001", endpoint=fake.endpoint).version
    assert first.ref == "fake-style@1.0.0"

    s = _status(catalog)
    assert (s.state, s.newest, s.current, s.source) == ("up-to-date", None, "fake-style@1.0.0", "civitai:1001")

    # a newer version for Illustrious: same family (sdxl), another variant — not "newer" for a Pony LoRA
    fake.add_version(1002, "v1.5", "Illustrious", "2024-02-01T00:00:00.000Z", loras[2])
    s = _status(catalog)
    assert (s.state, s.newest, s.other_base) == ("up-to-date", None, "civitai:1002")
    assert "--any-base" in s.detail
    assert (_status(catalog, any_base=True).state, _status(catalog, any_base=True).newest) == ("newer", "civitai:1002")
    with pytest.raises(UsageError, match="any-base"):
        pull_update(catalog, "fake-style")
    assert [v.version for v in catalog.versions("fake-style")] == ["1.0.0"]

    # then a Pony release: newer, and pull --update takes it as 1.1.0 with lineage, bytes verified
    fake.add_version(1003, "v2.0", "Pony", "2024-03-01T00:00:00.000Z", loras[3])
    s = _status(catalog)
    assert (s.state, s.newest) == ("newer", "civitai:1003")
    done = pull_update(catalog, "fake-style")
    new = done.pulled.version
    assert new.ref == "fake-style@1.1.0"
    assert new.sha256 == hash_file(loras[3]).sha256
    edges = catalog.lineage(new.ref)
    assert [(e.relation, e.parent) for e in edges] == [("pulled_from", "civitai:1003")]
    assert [v.version for v in catalog.versions("fake-style")] == ["1.0.0", "1.1.0"]  # nothing replaced

    # nothing newer: says so, adds nothing
    again = pull_update(catalog, "fake-style")
    assert again.pulled is None and again.message.startswith("nothing to do: fake-style@1.1.0 is up to date")
    assert len(catalog.versions("fake-style")) == 2

    # the token went to the API site (both hops), never to the storage site, nor a token= there
    downloads = [r for r in fake.api.log if r["path"].startswith("/api/download/")]
    assert downloads and all(r["authorization"] == f"Bearer {TOKEN}" for r in downloads)
    assert {r["path"].split("/")[3] for r in downloads} == {"models", "files"}
    assert fake.storage.log and all(r["authorization"] is None for r in fake.storage.log)
    assert all("token" not in r["query"] and "sig=abc" in r["query"] for r in fake.storage.log)
    assert all(r["host"].startswith("localhost:") for r in fake.storage.log)

    # Illustrious only, with --any-base: taken as 1.2.0
    fake.add_version(1004, "v3.0", "Illustrious", "2024-04-01T00:00:00.000Z", loras[4])
    assert pull_update(catalog, "fake-style", any_base=True).pulled.version.ref == "fake-style@1.2.0"

    # the first version deleted upstream: recorded, kept, current still fine
    fake.delete_version(1001)
    s = _status(catalog)
    assert s.state == "up-to-date"
    assert [(d["ref"], d["source"]) for d in s.deleted] == [("fake-style@1.0.0", "civitai:1001")]
    day = s.deleted[0]["deleted_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", day)
    kept = catalog.resolve("fake-style@1.0.0")
    assert kept.extra["upstream"]["state"] == "deleted" and not kept.deleted
    assert catalog.resolve("fake-style@1.1.0").extra["upstream"]["state"] == "present"

    # the whole model gone (410): every pulled version is deleted upstream, the current one too
    fake.delete_model()
    s = _status(catalog)
    assert s.state == "deleted"
    assert {d["ref"] for d in s.deleted} == {"fake-style@1.0.0", "fake-style@1.1.0", "fake-style@1.2.0"}
    assert s.deleted[0]["deleted_at"] == day  # the day it was first seen gone is kept
    assert pull_update(catalog, "fake-style").message.startswith("nothing to do: fake-style@1.2.0 is deleted upstream")
    assert len(catalog.versions("fake-style")) == 3

    # unreachable: the error in one line, nothing recorded
    fake.failing = True
    s = _status(catalog, sleep=lambda _: None)
    assert s.state == "unreachable" and "500" in s.detail and "\n" not in s.detail
    assert catalog.resolve("fake-style@1.2.0").extra["upstream"]["state"] == "deleted"

    # the CLI: outdated --json, show and show --json carry the deleted mark
    fake.failing = False
    data = json.loads(cli("outdated", "--json").output)
    assert [(d["adapter"], d["state"], d["kind"]) for d in data] == [("fake-style", "deleted", "civitai")]
    assert len(data[0]["deleted_upstream"]) == 3
    table = cli("outdated").output
    assert "fake-style" in table and "deleted" in table and f"fake-style@1.0.0: deleted upstream on {day}" in table
    shown = cli("show", "fake-style@1.0.0").output
    assert f"deleted upstream on {day}" in shown and "civitai:1001" in shown
    assert json.loads(cli("show", "fake-style@1.0.0", "--json").output)["deleted_upstream"] == \
        {"date": day, "source": "civitai:1001"}
    assert json.loads(cli("show", "fake-style@1.2.0", "--json").output)["deleted_upstream"]["source"] == "civitai:1004"
    out = cli("pull", "--update", "fake-style").output
    assert "nothing to do" in out
    cli("outdated", "no-such-adapter", code=1)


def test_hub_source_new_commit_file_change_and_deleted_repo(fake, loras, tmp_path):
    """A version pulled from a Hub repo (its pulled_from edge and recipe as `pull hf://…` writes
    them): a new commit that leaves the file alone is not newer; one that changes it is; the file
    or the repo gone is deleted upstream."""
    catalog = Catalog()
    sha = hash_file(loras[5]).sha256
    old = "a" * 40
    add_file(catalog, loras[5], name="hub-style", lineage=[{
        "relation": "pulled_from", "external_parent": f"{fake.endpoint}/team/hub-style@{old}",
        "recipe": {"endpoint": fake.endpoint, "repo_id": "team/hub-style", "revision": "main", "commit": old,
                   "path": "hub-style.safetensors", "sha256": sha}}])
    fake.hub_repos["team/hub-style"] = {"sha": old, "files": {"hub-style.safetensors": sha}}

    def check():
        (s,) = outdated(catalog, ["hub-style"])
        return s

    assert (check().state, check().kind) == ("up-to-date", "hub")
    fake.hub_repos["team/hub-style"] = {"sha": "b" * 40, "files": {"hub-style.safetensors": sha, "README.md": "c" * 64}}
    s = check()
    assert s.state == "up-to-date" and "unchanged" in s.detail
    fake.hub_repos["team/hub-style"] = {"sha": "d" * 40, "files": {"hub-style.safetensors": "e" * 64}}
    s = check()
    assert (s.state, s.newest) == ("newer", "team/hub-style@dddddddddddd")
    fake.hub_repos["team/hub-style"] = {"sha": "f" * 40, "files": {"other.safetensors": "e" * 64}}
    assert check().state == "deleted"
    del fake.hub_repos["team/hub-style"]
    s = check()
    assert s.state == "deleted" and "not found" in s.detail
    assert catalog.resolve("hub-style@1.0.0").extra["upstream"]["state"] == "deleted"


def test_civitai_hosts_and_same_site_token_rule():
    for host in ("civitai.com", "civitai.green", "civitai.red"):
        assert guess_kind(f"https://{host}") == "civitai"
        t = parse_civitai_ref(f"https://{host}/models/12?modelVersionId=34")
        assert (t.model_id, t.version_id, t.origin) == (12, 34, f"https://{host}")
    assert _site("https://www.civitai.com/api/x", "https://civitai.com")
    assert _site("https://civitai.green/api/download/models/1", "https://civitai.com")  # one service
    assert not _site("https://civitai-delivery-worker-prod.5ac0637cfd0766c97916cefa3764fbdf.r2.cloudflarestorage.com/x",
                     "https://civitai.com")
    assert not _site("http://localhost:8000/x", "http://127.0.0.1:8000")
    assert not _site("http://127.0.0.1:8001/x", "http://127.0.0.1:8000")
    assert not _site("http://civitai.com/x", "https://civitai.com")  # downgraded to plain http
    assert not _site("https://evilcivitai.com/x", "https://civitai.com")
    assert _without_token("https://cdn.test/f?a=1&Token=s&b=2") == "https://cdn.test/f?a=1&b=2"


def test_hub_update_through_a_mirror_remote(tmp_path, monkeypatch):
    """`loradex serve`'s Hub side: a version pulled through the team remote; the publisher pushes
    1.1.0 to the same repo; outdated says newer, pull --update takes it (same bytes, lineage)."""
    from _hub_sync_fixtures import TOKEN as HUB_TOKEN, ThreadServer, publishing_home
    from huggingface_hub.utils import disable_progress_bars
    from loradex.registry.remotes import add_remote, push

    disable_progress_bars()
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("LORADEX_TOKEN_TEAM", HUB_TOKEN)
    with ThreadServer(tmp_path / "server-home") as server:
        pub = publishing_home(tmp_path / "a", tmp_path, evidence=False, rank=1)
        add_remote(pub.catalog, "team", f"{server.url}/team", "mirror")
        push(pub.catalog, pub.ref, "team")
        mine = Catalog(tmp_path / "b")
        add_remote(mine, "team", f"{server.url}/team", "mirror")
        assert pull(mine, "team:style").version.ref == "style@1.0.0"
        (s,) = outdated(mine, ["style"])
        assert (s.kind, s.state) == ("hub", "up-to-date")
        v2 = add_file(pub.catalog, write_random_kohya_lora(tmp_path / "v2.safetensors", rank=1, seed=9),
                      name="style", version="1.1.0").version
        push(pub.catalog, v2.ref, "team")
        (s,) = outdated(mine, ["style"])
        assert s.state == "newer", s.detail
        done = pull_update(mine, "style")
        assert done.pulled.version.ref == "style@1.1.0" and done.pulled.version.sha256 == v2.sha256
        assert [e.relation for e in mine.lineage("style@1.1.0")] == ["pulled_from"]
        assert pull_update(mine, "style").message.startswith("nothing to do")
        assert [v.version for v in mine.versions("style")] == ["1.0.0", "1.1.0"]


def test_edge_without_model_id_asks_the_version(fake, loras):
    """An edge that names only the Civitai version (as an imported sidecar's may): the version's
    own answer names the model; a version gone everywhere is deleted upstream."""
    catalog = Catalog()
    fake.add_version(2001, "v1.0", "SDXL 1.0", "2024-01-01T00:00:00.000Z", loras[1])
    fake.add_version(2002, "v1.1", "SDXL 1.0", "2024-01-02T00:00:00.000Z", loras[2])
    add_file(catalog, loras[1], name="side", lineage=[{"relation": "pulled_from", "external_parent": "civitai:2001",
                                                       "recipe": {"endpoint": fake.endpoint, "modelId": True}}])
    (s,) = outdated(catalog, ["side"])
    assert (s.state, s.newest) == ("newer", "civitai:2002")
    fake.delete_version(2001)
    (s,) = outdated(catalog, ["side"])
    assert s.state == "deleted" and [d["ref"] for d in s.deleted] == ["side@1.0.0"]
    assert not any("True" in r["path"] for r in fake.api.log)
