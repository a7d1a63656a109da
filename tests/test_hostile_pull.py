"""Issue 15, `pull` from hostile remotes (Civitai-style and Hub-style servers on 127.0.0.1):

* a remote value never becomes a path: a Civitai ``files[].id``, version ``id`` or
  ``hashes.SHA256`` and a Hub ``blobId`` carrying ``../`` cannot pick the folder a pull deletes
  or the partial file it truncates (a canary outside the home survives);
* remote JSON/YAML goes through declared schemas with caps, and a pull that fails leaves no
  catalog row and nothing in ``downloads/`` (a bad evaluation card no longer fails after the
  version was registered);
* a download of unannounced size stops at LORADEX_MAX_DOWNLOAD_BYTES, counted on decoded bytes
  (a gzip bomb);
* a fault-injecting remote mutates every field of every answer: `loradex pull` exits 0 or 1,
  never 3 or a traceback, creates nothing outside the home and leaves no row on failure.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from _adversarial_server import AdversarialServer
from _fault_remote import (COMMIT, MODEL_ID, REPO, VERSION_ID, CivitaiSite, HubRepo, apply_mutation, gzip_bomb, manifest_for,
                           mutation_plan, run_cli, run_cli_fast, send_bytes, tree, with_nonce)

CANARY = b"precious bytes that no pull may touch"
TABLES = ("adapters", "versions", "aliases", "lineage", "prompt_records", "eval_cards")


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    for var in ("HF_TOKEN", "CIVITAI_TOKEN", "HF_ENDPOINT", "LORADEX_MAX_DOWNLOAD_BYTES"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> bytes:
    from loradex.merge.synthetic_adapters import write_random_kohya_lora

    path = tmp_path_factory.mktemp("adapter") / "a.safetensors"
    write_random_kohya_lora(path, rank=2, seed=11)
    return path.read_bytes()


@pytest.fixture(scope="module")
def _server():
    with AdversarialServer() as srv:
        yield srv


@pytest.fixture
def server(_server):
    """One server for the module (stopping one takes half a second); each test starts with no
    routes and no recorded requests."""
    _server.routes.clear()
    _server.requests.clear()
    _server.sent.clear()
    return _server


class Box:
    """``root/home`` is the loradex home; everything else under ``root`` is outside it."""

    def __init__(self, root: Path):
        self.root = root
        self.home = root / "home"

    def canary(self, rel: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(CANARY)
        return path

    def outside(self) -> dict:
        return {k: v for k, v in tree(self.root).items() if not (k == "home" or k.startswith("home/"))}

    def rows(self) -> dict[str, int]:
        db = self.home / "catalog.db"
        if not db.exists():
            return dict.fromkeys(TABLES, 0)
        with sqlite3.connect(db) as conn:
            return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}

    def downloads(self) -> list[str]:
        return sorted(str(p.relative_to(self.home)) for p in (self.home / "downloads").rglob("*") if p.is_file()) \
            if (self.home / "downloads").is_dir() else []

    def pull(self, *args: str, fast: bool = False) -> tuple[int, str]:
        return (run_cli_fast if fast else run_cli)("pull", *args, "--home", str(self.home), "--json")


@pytest.fixture
def box(tmp_path) -> Box:
    return Box(tmp_path / "box")


def _one_line_error(code: int, err: str) -> None:
    assert code == 1, f"exit {code}: {err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err


# --- 1. remote values never become paths -------------------------------------------------------------
# Before the fix, the download folder was downloads/civitai-<sha[:24]> or
# downloads/civitai-v<version id>-f<file id>, and a failed or finished pull rmtree'd it.
CIVITAI_TRAVERSALS = {
    "files[].id": ("canary", lambda v: (v["files"][0].update(id="/../../../canary"),
                                       v["files"][0]["hashes"].pop("SHA256"))),
    "version id": ("canary-f1", lambda v: (v.update(id="/../../../canary"), v["files"][0]["hashes"].pop("SHA256"))),
    "hashes.SHA256": ("canary", lambda v: v["files"][0]["hashes"].update(SHA256="/../../../canary")),
}


@pytest.mark.parametrize("field", sorted(CIVITAI_TRAVERSALS))
def test_civitai_value_with_traversal_cannot_pick_the_folder_a_pull_deletes(server, box, adapter, field):
    folder, edit = CIVITAI_TRAVERSALS[field]
    canary = box.canary(f"{folder}/keep.txt")
    site = CivitaiSite(server, adapter)
    edit(site.version)
    before = box.outside()
    code, err = box.pull(f"civitai:{VERSION_ID}", "--endpoint", server.url())
    _one_line_error(code, err)
    assert canary.read_bytes() == CANARY, f"{field}: the canary folder outside the home was touched"
    assert box.outside() == before, "a pull created or changed something outside the home"
    assert box.rows() == dict.fromkeys(TABLES, 0) and box.downloads() == []


def test_hub_blob_id_with_traversal_cannot_truncate_or_unlink_outside(server, box, adapter):
    """Before the fix the partial file was downloads/hub-<key>/.loradex-partial/<blobId>.part,
    opened for append, truncated when the server ignored the Range, and unlinked on mismatch."""
    canary = box.canary("canary.part")
    repo = HubRepo(server, {"fault.safetensors": adapter})
    repo.sibling_edits["fault.safetensors"] = {"blobId": "../../../../canary"}
    before = box.outside()
    code, err = box.pull(f"hf://{REPO}", "--endpoint", server.url())
    _one_line_error(code, err)
    assert "blobId" in err
    assert canary.read_bytes() == CANARY, "the .part outside the home was truncated or removed"
    assert box.outside() == before
    assert box.rows() == dict.fromkeys(TABLES, 0) and box.downloads() == []
    assert not [r for r in server.requests if "/resolve/" in r["path"]], "fetched before checking the answer"


# --- 2. remote documents are checked before anything is registered ---------------------------------
def _hub_files(adapter: bytes, *, manifest: dict | None = None, card: dict | bytes | None = None,
               readme: str = "---\nbase_model: stable-diffusion-v1-5/stable-diffusion-v1-5\n---\n\nA fault test.\n",
               record: dict | None = None):
    from _hub_sync_fixtures import card_for

    manifest = manifest or manifest_for(adapter)
    sha = hashlib.sha256(adapter).hexdigest()
    if card is None:
        card = card_for("fault@1.0.0", sha, "a1b2c3d4e5f60718", "b1b2c3d4e5f60718")
    files = {"fault.safetensors": adapter, "loradex.json": json.dumps(manifest).encode(), "README.md": readme.encode(),
             "evaluation/card.json": card if isinstance(card, bytes) else json.dumps(card).encode()}
    if record is not None:
        files[f"records/{record['id']}.json"] = json.dumps(record).encode()
    return files


def _bad_date(card: dict) -> dict:
    return {**card, "created_at": "yesterday"}


@pytest.mark.parametrize("kind", ["schema", "created_at", "deep", "not-json"])
def test_hub_bad_evaluation_card_fails_before_the_version_is_registered(server, box, adapter, kind):
    from _hub_sync_fixtures import card_for

    good = card_for("fault@1.0.0", hashlib.sha256(adapter).hexdigest(), "a1b2c3d4e5f60718", "b1b2c3d4e5f60718")
    card = {"schema": {"schema": "loradex.eval-card/0"}, "created_at": _bad_date(good),
            "deep": b"[" * 100_000 + b"]" * 100_000, "not-json": b"{"}[kind]
    HubRepo(server, _hub_files(adapter, card=card))
    code, err = box.pull(f"hf://{REPO}", "--endpoint", server.url())
    _one_line_error(code, err)
    assert "evaluation/card.json" in err
    assert box.rows() == dict.fromkeys(TABLES, 0), "the version was registered before the card was checked"
    assert box.downloads() == [], "a failed pull left files in downloads/"


def test_hub_pull_with_valid_evidence_registers_version_card_and_alias(server, box, adapter):
    """The control for the tests above and the fault injection: the same repo, unmutated, pulls."""
    HubRepo(server, _hub_files(adapter))
    code, err = box.pull(f"hf://{REPO}", "--endpoint", server.url())
    assert code == 0, err
    rows = box.rows()
    assert (rows["versions"], rows["eval_cards"], rows["aliases"]) == (1, 1, 1)
    assert box.downloads() == []


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("front", [ALIAS_BOMB, "x: " + "[" * 100_000 + "]" * 100_000, "base_model: {a: 1}",
                                   "instance_prompt: [1, 2]"],
                         ids=["alias-bomb", "deep", "base_model-object", "instance_prompt-list"])
def test_hub_readme_front_matter_is_checked(server, box, adapter, front):
    HubRepo(server, _hub_files(adapter, readme=f"---\n{front}\n---\n\nbody\n"))
    code, err = box.pull(f"hf://{REPO}", "--endpoint", server.url())
    _one_line_error(code, err)
    assert "README.md front matter" in err
    assert box.rows() == dict.fromkeys(TABLES, 0) and box.downloads() == []


@pytest.mark.parametrize("size_kb", ["abc", "1e999", [1]])
def test_civitai_absurd_size_is_a_one_line_error(server, box, adapter, size_kb):
    site = CivitaiSite(server, adapter)
    text = json.dumps(site.version).replace(json.dumps(site.version["files"][0]["sizeKB"]),
                                            size_kb if size_kb == "1e999" else json.dumps(size_kb))
    site.answer = text.encode()
    code, err = box.pull(f"civitai:{VERSION_ID}", "--endpoint", server.url())
    _one_line_error(code, err)
    assert box.rows() == dict.fromkeys(TABLES, 0) and box.downloads() == []


# --- 3. downloads of unannounced size ------------------------------------------------------------------
CAP = 1 << 20
BOMB = 48 << 20  # decoded bytes; about 50 kB on the wire


def _bomb_route(encoded: bytes):
    def route(handler, srv):
        send_bytes(handler, encoded, {"Content-Encoding": "gzip"})
    return route


def _endless_route(handler, srv):
    handler.send_response(200)
    handler.send_header("Content-Type", "application/octet-stream")
    handler.end_headers()  # no Content-Length: the body ends when the server closes
    srv.sent["endless"] = 0
    try:
        while srv.sent["endless"] < BOMB:
            handler.wfile.write(b"\1" * 65536)
            srv.sent["endless"] += 65536
    except (BrokenPipeError, ConnectionResetError):
        pass
    handler.close_connection = True


@pytest.mark.parametrize("body", ["gzip-bomb", "no-length"])
def test_civitai_download_of_unannounced_size_stops_at_the_cap(server, box, tmp_path, monkeypatch, body):
    from loradex.registry.errors import TransferError
    from loradex.registry.remotes.civitai_client import CivitaiClient

    monkeypatch.setenv("LORADEX_MAX_DOWNLOAD_BYTES", str(CAP))
    route = _bomb_route(gzip_bomb(BOMB)) if body == "gzip-bomb" else _endless_route
    server.routes["/bomb"] = route
    dest = tmp_path / "dl" / "f.part"
    with CivitaiClient(server.url(), token=None, sleep=lambda s: None, retries=0) as client, \
            pytest.raises(TransferError, match="without announcing a size") as err:
        client.download(server.url() + "/bomb", dest, what="bomb")
    assert "LORADEX_MAX_DOWNLOAD_BYTES" in err.value.hint
    assert not dest.exists(), "the over-cap partial was kept (it must never be resumed)"

    # the same through `loradex pull`, the version listing no size
    site = CivitaiSite(server, b"")
    site.version["files"][0].update(sizeKB=None, hashes={}, downloadUrl=server.url() + "/bomb")
    code, err_text = box.pull(f"civitai:{VERSION_ID}", "--endpoint", server.url())
    _one_line_error(code, err_text)
    assert "without announcing a size" in err_text
    assert box.rows() == dict.fromkeys(TABLES, 0) and box.downloads() == []


def test_hub_download_of_unannounced_size_stops_at_the_cap(server, box, adapter, monkeypatch):
    monkeypatch.setenv("LORADEX_MAX_DOWNLOAD_BYTES", str(CAP))
    repo = HubRepo(server, {"fault.safetensors": adapter})
    bomb = gzip_bomb(BOMB)

    def resolve(handler, srv):  # no size on the HEAD, a gzip bomb on the GET
        if handler.command == "HEAD":
            send_bytes(handler, b"", {"X-Repo-Commit": COMMIT}, length=False)
        else:
            send_bytes(handler, bomb, {"X-Repo-Commit": COMMIT, "Content-Encoding": "gzip"})

    server.routes[f"/{REPO}/resolve/"] = resolve
    repo.sibling_edits["fault.safetensors"] = {"size": None}
    code, err = box.pull(f"hf://{REPO}", "--endpoint", server.url())
    _one_line_error(code, err)
    assert "without announcing a size" in err
    assert box.rows() == dict.fromkeys(TABLES, 0) and box.downloads() == []


# --- 4. the fault-injecting remote -------------------------------------------------------------------
def _check_invariants(box: Box, label: str, code: int, err: str, rows_before: dict, outside_before: dict,
                      problems: list[str]) -> None:
    if code not in (0, 1):
        problems.append(f"{label}: exit {code}: {err.strip()[-300:]}")
    if "Traceback" in err or "internal error" in err:
        problems.append(f"{label}: traceback: {err.strip()[-300:]}")
    if code == 1 and len(err.strip().splitlines()) != 1:
        problems.append(f"{label}: not one line: {err.strip()[:300]}")
    if code != 0 and box.rows() != rows_before:
        problems.append(f"{label}: failed but left catalog rows")
    if box.downloads():
        problems.append(f"{label}: left {box.downloads()[:3]} in downloads/")
    if box.outside() != outside_before:
        problems.append(f"{label}: created or changed something outside the home")


def test_fault_injection_civitai_version_answer(server, box, adapter):
    """Every field of a Civitai version answer, each mutated in turn (about 250 pulls)."""
    box.canary("canary/keep.txt")
    site = CivitaiSite(server, adapter)
    plan = mutation_plan(site.version)
    problems: list[str] = []
    outcomes = {0: 0, 1: 0}
    outside = box.outside()
    for i, (label, path, kind) in enumerate(plan):
        site.set_file(with_nonce(adapter, f"c{i}"))  # a file the catalog has not seen
        site.answer = apply_mutation(site.version, path, kind)
        rows = box.rows()
        code, err = box.pull(f"civitai:{VERSION_ID}", "--endpoint", server.url(), fast=True)
        outcomes[code] = outcomes.get(code, 0) + 1
        _check_invariants(box, label, code, err, rows, outside, problems)
    assert not problems, f"{len(problems)} of {len(plan)} mutations misbehaved:\n" + "\n".join(problems[:40])
    assert outcomes[0] and outcomes[1], outcomes  # some mutations are harmless, most are refused


def _hub_documents(adapter: bytes, nonce: str) -> tuple[bytes, dict]:
    """A fresh adapter file (``nonce``) and the documents that describe it: the manifest, the
    evaluation card and one prompt record (a new id each time: record ids are global)."""
    from _evidence_fixtures import minimal_record
    from _hub_sync_fixtures import card_for

    data = with_nonce(adapter, nonce)
    sha = hashlib.sha256(data).hexdigest()
    record = minimal_record(stack=[{"requested": "fault", "ref": "fault@1.0.0", "sha256": sha,
                                    "te_weight": 1.0, "unet_weight": 1.0}])
    card = card_for("fault@1.0.0", sha, record["id"], "b1b2c3d4e5f60718")
    return data, {"loradex.json": manifest_for(data, record_id=record["id"]), "evaluation/card.json": card,
                  "record": record}


def _files_of(data: bytes, docs: dict) -> dict[str, bytes]:
    return _hub_files(data, manifest=docs["loradex.json"], card=docs["evaluation/card.json"], record=docs["record"])


# Documents loradex defines itself (the card, a record) are mutated at their top level only:
# their full schema is loradex's own and tested elsewhere.
TOP_LEVEL_ONLY = ("evaluation/card.json", "record")


@pytest.mark.parametrize("document", ["model-info", "refs", "loradex.json", "evaluation/card.json", "record"])
def test_fault_injection_hub_answers(server, box, adapter, document):
    """Every field of the Hub answers a pull reads (repo info, refs) and of the files it parses
    (loradex.json, the evaluation card and a prompt record: their top-level fields), each
    mutated in turn."""
    box.canary("canary.part")
    data, docs = _hub_documents(adapter, "template")
    repo = HubRepo(server, _files_of(data, docs))
    template = {"model-info": repo.info(), "refs": repo.refs(), **docs}[document]
    plan = mutation_plan(template)
    if document in TOP_LEVEL_ONLY:
        plan = [p for p in plan if p[1] is None or (len(p[1]) == 1 and p[2] in ("missing", "type", "deep"))]
    elif document == "model-info":  # of the files, the two a pull reads first and last
        plan = [p for p in plan if p[1] is None or len(p[1]) < 3 or template["siblings"][p[1][1]]["rfilename"]
                in ("fault.safetensors", "loradex.json")]
    problems: list[str] = []
    outcomes = {0: 0, 1: 0}
    outside = box.outside()
    for i, (label, path, kind) in enumerate(plan):
        data, docs = _hub_documents(adapter, f"{document}-{i}")
        repo.files = _files_of(data, docs)
        repo.info_answer = repo.refs_answer = None
        if document == "model-info":
            repo.info_answer = apply_mutation(repo.info(), path, kind)
        elif document == "refs":
            repo.refs_answer = apply_mutation(repo.refs(), path, kind)
        elif document == "record":
            repo.files[f"records/{docs['record']['id']}.json"] = apply_mutation(docs["record"], path, kind)
        else:
            repo.files[document] = apply_mutation(docs[document], path, kind)
        rows = box.rows()
        code, err = box.pull(f"hf://{REPO}", "--endpoint", server.url(), fast=True)
        outcomes[code] = outcomes.get(code, 0) + 1
        _check_invariants(box, f"{document} {label}", code, err, rows, outside, problems)
    assert not problems, f"{len(problems)} of {len(plan)} mutations misbehaved:\n" + "\n".join(problems[:40])
    assert outcomes[1], outcomes


def test_fault_injection_civitai_model_answer(server, box, adapter):
    """``civitai:model:ID`` reads the model answer first: each of its fields mutated in turn."""
    site = CivitaiSite(server, adapter)
    plan = mutation_plan(site.model)
    problems: list[str] = []
    outside = box.outside()
    for i, (label, path, kind) in enumerate(plan):
        site.set_file(with_nonce(adapter, f"m{i}"))
        site.model_answer = apply_mutation(site.model, path, kind)
        rows = box.rows()
        code, err = box.pull(f"civitai:model:{MODEL_ID}", "--endpoint", server.url(), fast=True)
        _check_invariants(box, f"model {label}", code, err, rows, outside, problems)
    assert not problems, f"{len(problems)} of {len(plan)} mutations misbehaved:\n" + "\n".join(problems[:40])


@pytest.mark.parametrize("headers", [{"X-Linked-Size": "abc"}, {"X-Linked-Size": "-5"}, {"X-Linked-Size": "9" * 400},
                                     {"X-Linked-Etag": '"../../../../evil-x"'}, {"Location": "http://[::1"},
                                     {"X-Repo-Commit": "../../evil-x"}],
                         ids=["size-abc", "size-negative", "size-huge", "etag-traversal", "location-bad", "commit"])
def test_hub_file_metadata_headers_are_untrusted_too(server, box, adapter, headers):
    data, docs = _hub_documents(adapter, "headers")
    repo = HubRepo(server, _files_of(data, docs))
    repo.headers = headers
    outside = box.outside()
    problems: list[str] = []
    code, err = box.pull(f"hf://{REPO}", "--endpoint", server.url())
    _check_invariants(box, str(headers), code, err, dict.fromkeys(TABLES, 0), outside, problems)
    assert not problems, problems


def test_max_download_bytes_setting(monkeypatch):
    from loradex.registry.errors import UsageError
    from loradex.registry.remotes.http_limits import max_download_bytes

    monkeypatch.delenv("LORADEX_MAX_DOWNLOAD_BYTES", raising=False)
    assert max_download_bytes() == 4 << 30
    monkeypatch.setenv("LORADEX_MAX_DOWNLOAD_BYTES", "1048576")
    assert max_download_bytes() == 1 << 20
    for bad in ("abc", "-1", "0", "1e9", "9" * 40):
        monkeypatch.setenv("LORADEX_MAX_DOWNLOAD_BYTES", bad)
        with pytest.raises(UsageError, match="LORADEX_MAX_DOWNLOAD_BYTES"):
            max_download_bytes()
