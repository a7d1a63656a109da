"""Issue 17, "Hugging Face Hub protocol": stock huggingface_hub clients, installed the ordinary way
(hf_xet included, no HF_HUB_DISABLE_XET), drive a `loradex serve` app on 127.0.0.1.

The client matrix runs ``_hub_client_matrix.py`` in one interpreter per client major version:
``.venv-hub/0.36`` and ``.venv-hub/1`` (built by ``make hub-clients``, part of ``make test``; a test
skips with the reason when one is absent) and this venv's own client (2.x). Each run does every
operation of the issue and reports how it went; the expectations below are the compatibility
table of docs/REMOTES.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _served_app import ServedApp

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("_hub_client_matrix.py")
CLIENTS = {"0.36": ROOT / ".venv-hub" / "0.36" / "bin" / "python",
           "1": ROOT / ".venv-hub" / "1" / "bin" / "python",
           "2": Path(sys.executable)}
ADMIN = "conformance-admin-secret-5b1e"
PAGE_SIZE = 2  # the server's page of /api/models: small, so list_models must follow Link headers


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`loradex serve` as the CLI builds it (default rate limit included), with a write and a
    read token from `serve token create`."""
    from loradex.cli.serve_cmds import DEFAULT_RATE_LIMIT
    from loradex.registry.catalog.store import Catalog
    from loradex.registry.server.app import build_server_app
    from loradex.registry.server.guard import RateLimiter, parse_rate
    from loradex.registry.server.tokens import create_token

    home = tmp_path_factory.mktemp("served-home")
    catalog = Catalog(home)
    tokens = {label: (create_token(catalog, "write", name=f"writer-{label}").secret,
                      create_token(catalog, "read", name=f"reader-{label}").secret) for label in CLIENTS}
    # the default rate with a frozen clock: no refill, as if the client were infinitely fast, so
    # what passes here passes at any speed (each client run has its own tokens, so its own buckets)
    limiter = RateLimiter(parse_rate(DEFAULT_RATE_LIMIT), clock=lambda: 0.0)
    app = build_server_app(catalog, ADMIN, rate_limit=limiter)
    app.state.hub_options["models_page_size"] = PAGE_SIZE
    with ServedApp(app) as server:
        yield {"url": server.url, "home": home, "tokens": tokens, "catalog": catalog}


def run_client(served, label: str, tmp_path: Path) -> dict:
    python = CLIENTS[label]
    if not python.exists():
        pytest.skip(f"no huggingface_hub {label}.x client venv at {python.parent.parent} (run `make hub-clients`)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    write, read = served["tokens"][label]
    run = subprocess.run([str(python), str(SCRIPT), served["url"], write, read, str(tmp_path), label],
                         capture_output=True, text=True, timeout=400, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def failed(result: dict, op: str) -> str:
    assert not result[op]["ok"], f"{op} was expected to fail with a clear error: {result[op]}"
    return result[op]["error"]


@pytest.mark.parametrize("label", list(CLIENTS))
def test_stock_client_does_every_hub_operation(served, label, tmp_path):
    r = run_client(served, label, tmp_path)
    assert r["version"]["value"].split(".")[0] == ("0" if label == "0.36" else label)
    expected_failures = {"settings_private", "settings_gated", "move_repo", "create_pr", "cli_models_ls"}
    if "validate_yaml_hardcoded" in r:
        # 0.36 and 1.x post model cards to https://huggingface.co/api/validate-yaml whatever the
        # endpoint: ModelCard.push_to_hub works only where huggingface.co is reachable
        expected_failures.add("model_card")
        assert r["model_card"]["ok"] or "rror" in r["model_card"]["error"]
    problems = {op: v for op, v in r.items() if not v["ok"] and op not in expected_failures}
    assert not problems, json.dumps(problems, indent=1)

    # 1. default install uploads (no HF_HUB_DISABLE_XET): upload_file and `hf upload`
    assert r["upload_file"]["same_bytes"] and r["upload_file"]["listed_as_lfs"]
    assert r["upload_big"] == {"ok": True, "same_sha256": True, "listed_sha256": True}  # 12 MiB, no variable
    assert r["cli_upload"]["files"] == [".gitattributes", "README.md", "cli.safetensors"]
    # 2. discovery, with pagination (page size 2) and the filters
    assert r["list_models"]["by_author"] == [f"team/find-{label}-{i}" for i in range(3)]
    assert r["list_models"]["limited"] == 2
    assert r["list_models"]["tagged"] == sorted(m for m in r["list_models"]["tagged"] if m.startswith("team/"))
    assert f"team/cli-{label}" in r["list_models"]["tagged"]
    if label == "0.36":  # this client has no `hf models`
        assert "exited 2" in failed(r, "cli_models_ls")
    else:
        assert r["cli_models_ls"]["ids"] == [f"team/find-{label}-{i}" for i in range(3)]
    # 3. whoami tells a read token it is read-only
    assert (r["whoami"]["read_role"], r["whoami"]["write_role"]) == ("read", "write")
    # 4. lastCommit in expanded listings; model cards pushed and updated
    assert r["tree_expand"] == {"ok": True, "tree_last_commit": True, "paths_last_commit": True}
    if r["model_card"]["ok"]:
        assert (r["model_card"]["license"], r["model_card"]["base_model"]) == ("mit", "runwayml/stable-diffusion-v1-5")
    # 5. release tags on repos with several adapters or none: plain git tags
    assert r["create_tag"]["tags"] == ["v1.0.0", "v1.0.0"]
    # 6. unsupported settings: the client raises its own error with the server's reason
    for op in ("settings_private", "settings_gated", "move_repo", "create_pr"):
        assert "not supported by this server" in failed(r, op), op
    assert r["super_squash"]["commits"] == 1 and "style.safetensors" in r["super_squash"]["files"]
    # 7. a 300-file snapshot under the default rate limit
    assert r["snapshot_300"]["files"] == 300

    # the single-adapter repo's tag became a catalog version of the served home
    from loradex.registry.catalog.store import Catalog
    from loradex.registry.server.hub.catalog_bridge import adapter_name_for

    versions = Catalog(served["home"]).versions(adapter_name_for(f"team/lora-{label}"))
    assert [v.version for v in versions] == ["1.0.0"]


# --- in-process checks with this venv's client (2.x, installed the ordinary way: Xet on) --------------
def hub_api(served, label="2", read=False):
    from huggingface_hub import HfApi

    return HfApi(endpoint=served["url"], token=served["tokens"][label][1 if read else 0])


def test_default_client_sends_a_large_lfs_file_inline_and_it_is_stored_as_lfs(served, tmp_path):
    import hashlib

    import httpx
    from huggingface_hub import constants

    assert not constants.HF_HUB_DISABLE_XET  # the default: this client would go to Xet for 'lfs' files
    api = hub_api(served)
    api.create_repo("team/big-inline")
    data = os.urandom(11 << 20)  # over the Hub's 10 MB limit for regular files
    auth = {"authorization": f"Bearer {ADMIN}"}
    before = httpx.get(f"{served['url']}/api/_loradex/stats", headers=auth).json()
    api.upload_file(path_or_fileobj=data, path_in_repo="big.safetensors", repo_id="team/big-inline")
    after = httpx.get(f"{served['url']}/api/_loradex/stats", headers=auth).json()
    entry = next(iter(api.get_paths_info("team/big-inline", ["big.safetensors"])))
    assert entry.lfs is not None and entry.lfs.sha256 == hashlib.sha256(data).hexdigest()
    assert after["lfs_bytes_received"] - before["lfs_bytes_received"] == len(data)
    # the same bytes again: the client compares the oid preupload gave and sends nothing
    api.upload_file(path_or_fileobj=data, path_in_repo="big.safetensors", repo_id="team/big-inline")
    assert httpx.get(f"{served['url']}/api/_loradex/stats", headers=auth).json()["commits"] == after["commits"]


def test_release_tag_registers_the_file_a_loose_loradex_json_names_and_notes_plain_tags(served, tmp_path):
    import hashlib

    import httpx
    from huggingface_hub import CommitOperationAdd

    from loradex.merge.synthetic_adapters import write_random_kohya_lora
    from loradex.registry.catalog.store import Catalog
    from loradex.registry.errors import NotFound

    api = hub_api(served)
    api.create_repo("team/named")
    a = write_random_kohya_lora(tmp_path / "a.safetensors", seed=1)
    b = write_random_kohya_lora(tmp_path / "b.safetensors", seed=2)
    api.create_commit("team/named", [CommitOperationAdd("a.safetensors", str(a)),
                                     CommitOperationAdd("b.safetensors", str(b)),
                                     CommitOperationAdd("loradex.json", b'{"file": "b.safetensors"}')],
                      commit_message="two files, one named")
    api.create_tag("team/named", tag="v2.0.0")
    version = Catalog(served["home"]).resolve("named@2.0.0")
    assert version.sha256 == hashlib.sha256(b.read_bytes()).hexdigest()

    # several adapters and nothing naming one: a plain git tag, and the answer says why
    api.create_repo("team/several")
    api.create_commit("team/several", [CommitOperationAdd("a.safetensors", str(a)),
                                       CommitOperationAdd("b.safetensors", str(b))], commit_message="two")
    r = httpx.post(f"{served['url']}/api/models/team/several/tag/main", json={"tag": "v1.0.0"},
                   headers={"authorization": f"Bearer {served['tokens']['2'][0]}"})
    assert r.status_code == 200 and "plain git tag" in r.json()["note"] and "2 .safetensors" in r.json()["note"]
    assert [t.name for t in api.list_repo_refs("team/several").tags] == ["v1.0.0"]
    with pytest.raises(NotFound):
        Catalog(served["home"]).get_adapter("several")


@pytest.mark.parametrize("query, word", [("limit=abc", "limit"), ("limit=0", "limit"), ("limit=5000", "limit"),
                                         ("cursor=-1", "cursor"), ("sort=bogus", "sort"), ("direction=up", "direction"),
                                         ("search=" + "x" * 600, "longer")])
def test_model_search_refuses_malformed_parameters_in_one_line(served, query, word):
    import httpx

    r = httpx.get(f"{served['url']}/api/models?{query}", headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 400 and word in r.json()["error"] and "\n" not in r.json()["error"]


def test_model_search_sorts_and_pages_with_link_headers(served):
    api = hub_api(served)
    for name in ("zeta-sort", "alpha-sort", "mid-sort"):
        api.create_repo(f"sorting/{name}")
    ids = ["sorting/alpha-sort", "sorting/mid-sort", "sorting/zeta-sort"]
    assert sorted(m.id for m in api.list_models(author="sorting")) == ids  # 3 entries over 2 pages
    assert [m.id for m in api.list_models(author="sorting", sort="id")] == ids[::-1]  # the Hub's default: -1
    assert [m.id for m in api.list_models(author="sorting", sort="id", limit=1)] == ["sorting/zeta-sort"]
    import httpx

    r = httpx.get(f"{served['url']}/api/models?author=sorting", headers={"authorization": f"Bearer {ADMIN}"})
    assert len(r.json()) == PAGE_SIZE and r.links["next"]["url"].startswith(served["url"] + "/api/models?")


def test_whoami_needs_a_token_even_with_public_read(tmp_path):
    import httpx

    from loradex.registry.catalog.store import Catalog
    from loradex.registry.server.app import build_server_app

    with ServedApp(build_server_app(Catalog(tmp_path / "home"), ADMIN, public_read=True)) as server:
        assert httpx.get(f"{server.url}/api/whoami-v2").status_code == 401
        assert httpx.post(f"{server.url}/api/validate-yaml", json={"content": "---\na: 1\n---\n"}).json() == {
            "errors": [], "warnings": []}
        r = httpx.post(f"{server.url}/api/validate-yaml", json={"content": "---\na: [\n---\n"})
        assert r.status_code == 400 and r.json()["errors"]


def test_default_rate_limit_takes_bursts():
    from loradex.cli.serve_cmds import DEFAULT_RATE_LIMIT
    from loradex.registry.server.guard import RateLimiter, parse_rate

    limiter = RateLimiter(parse_rate(DEFAULT_RATE_LIMIT), clock=lambda: 0.0)
    assert all(limiter.acquire("token:a") == 0.0 for _ in range(2000))
    assert limiter.acquire("token:a") > 0 and limiter.acquire("token:b") == 0.0


@pytest.mark.parametrize("formats", [["kohya", "diffusers"], ["diffusers"]])
def test_push_an_embedding_to_a_remote_that_also_sends_diffusers(tmp_path, monkeypatch, formats):
    from _hub_sync_fixtures import TOKEN, ThreadServer
    from loradex.merge.conventions.convert import convert_file
    from loradex.merge.synthetic_adapters import write_random_embedding
    from loradex.registry.catalog.adding import add_file
    from loradex.registry.catalog.store import Catalog
    from loradex.registry.remotes import add_remote, push

    monkeypatch.setenv("LORADEX_TOKEN_TEAM", TOKEN)
    catalog = Catalog(tmp_path / "pub")
    emb = write_random_embedding(tmp_path / "sks.safetensors", n_vectors=2, dim=768)
    add_file(catalog, emb, name="sks-token", version="1.0.0", kind="embedding")
    with ThreadServer(tmp_path / "server") as server:
        add_remote(catalog, "team", f"{server.url}/team", "mirror", settings={"formats": formats})
        result = push(catalog, "sks-token@1.0.0", "team", converter=convert_file)
        served = Catalog(server.home).resolve("sks-token@1.0.0")
    assert "sks-token.safetensors" in result.uploaded and "pytorch_lora_weights.safetensors" not in result.uploaded
    assert "no diffusers LoRA copy for an embedding" in result.note
    assert served.sha256 == catalog.resolve("sks-token@1.0.0").sha256


@pytest.mark.parametrize("agent, inline", [
    ("unknown/None; hf_hub/0.36.2; python/3.11.7", False),  # asks in the LFS batch call
    ("unknown/None; hf_hub/1.19.0; python/3.11.7", False),  # the last 1.x that asks
    ("unknown/None; hf_hub/1.20.0; python/3.11.7", True),
    ("diffusers/0.35.1; hf_hub/2.4.0; python/3.11.7; torch/2.13.0", True),
    ("loradex/0.1; hf_hub/2.4.0; python/3.11.7", False),   # loradex's own client: Xet off, LFS
    ("curl/8.5.0", False)])
def test_which_clients_are_kept_off_xet_by_regular_uploads(agent, inline):
    from starlette.requests import Request

    from loradex.registry.server.hub.app import xet_without_asking

    request = Request({"type": "http", "headers": [(b"user-agent", agent.encode())]})
    assert xet_without_asking(request) is inline
