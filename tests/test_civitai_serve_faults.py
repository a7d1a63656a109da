"""The Civitai client against `loradex serve` over a socket (issue 8, acceptance 2): the real app
on 127.0.0.1, downloads redirected to a second origin like Civitai's storage host, and Civitai's
failures injected per version by a test-only layer (_civitai_fixtures.CivitaiFaults): missing or
refused token (401), early access (403), 429 with Retry-After, wrong hash, truncated, HTML and
oversize bodies, a dropped connection resumed with Range."""

from __future__ import annotations

import hashlib

import pytest

from _civitai_fixtures import CUT_AT, EARLY_ACCESS_ENDS, faulty_mirror
from loradex.merge.synthetic_adapters import write_random_kohya_lora
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import AuthError, NotFound, TransferError
from loradex.registry.remotes import pull
from loradex.registry.remotes.civitai_client import SIZE_TOLERANCE

TOKEN = "faults-mirror-token-5e1d"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    catalog = Catalog(root / "served")
    lora = write_random_kohya_lora(root / "river.safetensors", rank=16, seed=77, trigger="rvrstl")
    version = add_file(catalog, lora, name="river-style", triggers=["rvrstl"]).version
    with faulty_mirror(catalog, TOKEN) as (served, faults):
        yield {"served": served, "faults": faults, "v": version, "bytes": lora.read_bytes()}


@pytest.fixture
def env(mirror, tmp_path, monkeypatch):
    """A fresh pulling home, the token set, no faults, an empty request log."""
    monkeypatch.setenv("CIVITAI_TOKEN", TOKEN)
    mirror["faults"].faults.clear()
    mirror["faults"].log.clear()
    sleeps: list[float] = []
    home = Catalog(tmp_path / "home")

    def run(**kw):
        return pull(home, f"civitai:{mirror['v'].id}", endpoint=mirror["served"].url, sleep=sleeps.append, **kw)

    return {"home": home, "pull": run, "sleeps": sleeps, **mirror}


def _nothing_registered(env, *, partial: int | None = None):
    assert env["home"].list_adapters() == []
    left = [p for p in (env["home"].home / "downloads").rglob("*") if p.is_file()]
    assert [p.stat().st_size for p in left] == ([partial] if partial else []), left


def test_pull_follows_redirect_to_storage_origin_without_the_token(env):
    v = env["pull"]().version
    assert v.sha256 == env["v"].sha256 == hashlib.sha256(env["bytes"]).hexdigest()
    assert (v.adapter, v.version, list(v.trigger_words)) == ("river-style", "1.0.0", ["rvrstl"])
    api_port, storage_port = (int(u.rsplit(":", 1)[1]) for u in env["served"].urls)
    api = [r for r in env["faults"].log if r[0] == api_port]
    storage = [r for r in env["faults"].log if r[0] == storage_port]
    assert [r[2] for r in api] == [f"/api/v1/model-versions/{env['v'].id}", f"/api/download/models/{env['v'].id}"]
    assert all(r[4].get("authorization") == f"Bearer {TOKEN}" for r in api)
    assert len(storage) == 1 and storage[0][2].startswith(f"/api/download/files/{env['v'].id}/")
    assert "authorization" not in storage[0][4] and TOKEN not in storage[0][3]


def test_missing_token_401_and_refused_token(env, monkeypatch):
    monkeypatch.delenv("CIVITAI_TOKEN")
    with pytest.raises(AuthError, match=r"401 unauthorized — this needs an API token") as err:
        env["pull"]()
    assert "\n" not in str(err.value)
    monkeypatch.setenv("CIVITAI_TOKEN", "not-the-token")
    with pytest.raises(AuthError, match="the token in CIVITAI_TOKEN was refused"):
        env["pull"]()
    _nothing_registered(env)


def test_early_access_403(env):
    env["faults"].inject(env["v"].id, "early-access")
    with pytest.raises(AuthError, match=f"403 — this version is in early access until {EARLY_ACCESS_ENDS}; "
                                        "only supporters can download it") as err:
        env["pull"]()
    assert "\n" not in str(err.value)
    _nothing_registered(env)


def test_429_backs_off_for_retry_after_then_pulls(env):
    env["faults"].inject(env["v"].id, "rate-limit-once")
    assert env["pull"]().version.sha256 == env["v"].sha256
    assert env["sleeps"] == [1.0]
    assert [r[2] for r in env["faults"].requests("/api/v1/")] == [f"/api/v1/model-versions/{env['v'].id}"] * 2


def test_wrong_hash_rejected(env):
    env["faults"].inject(env["v"].id, "wrong-hash")
    with pytest.raises(TransferError, match="SHA256 mismatch — expected "):
        env["pull"]()
    _nothing_registered(env)  # wrong bytes are never kept for resuming


def test_truncated_body_rejected(env):
    env["faults"].inject(env["v"].id, "truncated")
    with pytest.raises(TransferError, match=f"short file — got {len(env['bytes']) // 2} bytes"):
        env["pull"]()
    _nothing_registered(env)


def test_html_body_rejected(env):
    env["faults"].inject(env["v"].id, "html")
    with pytest.raises(TransferError, match=r"text/html instead of the file \(page title: Sign in \| Civitai\)"):
        env["pull"]()
    _nothing_registered(env)


def test_oversize_body_stopped_at_the_listed_size(env):
    env["faults"].inject(env["v"].id, "oversize")
    size = len(env["bytes"])
    with pytest.raises(TransferError, match=f"sent more than {size + SIZE_TOLERANCE} bytes, but the file is "
                                            f"listed at {size} bytes") as err:
        env["pull"]()
    assert "\n" not in str(err.value)
    _nothing_registered(env)


def test_dropped_connection_resumes_with_range(env):
    env["faults"].inject(env["v"].id, "cut-once")
    with pytest.raises(TransferError, match=f"interrupted at {CUT_AT} of {len(env['bytes'])} bytes") as err:
        env["pull"]()
    assert "run the same pull again to resume" in err.value.hint
    _nothing_registered(env, partial=CUT_AT)
    env["faults"].log.clear()
    result = env["pull"]()
    ranges = [r[4].get("range") for r in env["faults"].requests("/api/download/files/")]
    assert ranges == [f"bytes={CUT_AT}-"]
    assert (result.resumed_from, result.downloaded_bytes) == (CUT_AT, len(env["bytes"]) - CUT_AT)
    assert result.version.sha256 == env["v"].sha256
    assert not [p for p in (env["home"].home / "downloads").rglob("*") if p.is_file()]


def test_unknown_version_is_a_one_line_404(env):
    with pytest.raises(NotFound, match=r"civitai version 987654: not found at .* \(No model version with id 987654\)"):
        pull(env["home"], "civitai:987654", endpoint=env["served"].url)
