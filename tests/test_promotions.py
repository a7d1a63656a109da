"""Protected aliases and promotion requests (issue 22): the CLI flow with two local users, a direct
move refused in one line (and recorded as a promotion.refused event), the served API with an
approve-scoped token, and the web page listing open requests with its approve form."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from _hub_client_matrix import tiny_safetensors
from _web_fixtures import csrf_of, signed_in_client, web_app
from loradex.cli.main import main
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.db_events import OutboxRow
from loradex.registry.catalog.store import Catalog


def _catalog(home, tmp) -> Catalog:
    catalog = Catalog(home)
    for seed, version in enumerate(("1.0.0", "1.1.0", "1.2.0")):
        add_file(catalog, tiny_safetensors(tmp / f"style-{version}.safetensors", seed), name="style", version=version)
    return catalog


def _cli(monkeypatch, capsys, user: str, *args) -> tuple[int, str, str]:
    monkeypatch.setenv("LORADEX_USER", user)
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def _events(catalog) -> list[tuple[str, dict]]:
    return catalog.read(lambda s: [(r.event, r.payload) for r in s.scalars(select(OutboxRow).order_by(OutboxRow.id))])


def test_promotion_flow_on_the_cli(loradex_home, tmp_path, monkeypatch, capsys):
    import json

    catalog = _catalog(loradex_home, tmp_path)
    assert _cli(monkeypatch, capsys, "alice", "alias", "set", "style@1.0.0", "production", "--reason", "first")[0] == 0
    assert _cli(monkeypatch, capsys, "alice", "alias", "protect", "style", "production")[0] == 0

    # a direct move is refused in one line naming the request command, and recorded
    code, out, err = _cli(monkeypatch, capsys, "alice", "alias", "set", "style@1.1.0", "production", "--reason", "go")
    assert code == 1 and err.count("\n") == 1 and "loradex alias request style@1.1.0 production" in err
    assert catalog.resolve("style@production").version == "1.0.0"
    refused = [p for e, p in _events(catalog) if e == "promotion.refused"]
    assert [(p["from_version"], p["to_version"], p["by"]) for p in refused] == [("1.0.0", "1.1.0", "alice")]

    code, out, _ = _cli(monkeypatch, capsys, "alice", "alias", "request", "style@1.1.0", "production",
                        "--reason", "sharper", "--json")
    request_id = json.loads(out)["id"]
    assert code == 0 and json.loads(out)["state"] == "open"
    # the requester may not approve their own request; nothing moves
    code, _, err = _cli(monkeypatch, capsys, "alice", "alias", "approve", str(request_id))
    assert code == 1 and "someone else" in err
    assert catalog.resolve("style@production").version == "1.0.0"
    code, out, _ = _cli(monkeypatch, capsys, "alice", "alias", "requests", "--json")
    assert [r["id"] for r in json.loads(out)] == [request_id]

    code, out, _ = _cli(monkeypatch, capsys, "bob", "alias", "approve", str(request_id), "--reason", "looks good")
    assert code == 0 and catalog.resolve("style@production").version == "1.1.0"
    last = catalog.alias_history("style", "production")[-1]
    assert (last.action, last.to_version, last.by) == ("set", "1.1.0", "bob")
    assert "by alice" in last.reason and "approved by bob" in last.reason
    code, _, err = _cli(monkeypatch, capsys, "carol", "alias", "approve", str(request_id))
    assert code == 1 and "already approved" in err

    # rejection needs a reason, leaves the alias alone; an approver list limits who decides
    assert _cli(monkeypatch, capsys, "alice", "alias", "protect", "style", "production", "--approver", "dave")[0] == 0
    code, out, _ = _cli(monkeypatch, capsys, "alice", "alias", "request", "style@1.2.0", "production",
                        "--reason", "new", "--json")
    second = json.loads(out)["id"]
    assert _cli(monkeypatch, capsys, "bob", "alias", "reject", str(second), "--reason", "no")[0] == 1  # not an approver
    assert _cli(monkeypatch, capsys, "dave", "alias", "reject", str(second))[0] != 0  # no reason
    assert _cli(monkeypatch, capsys, "dave", "alias", "reject", str(second), "--reason", "not yet")[0] == 0
    assert catalog.resolve("style@production").version == "1.1.0"
    names = [e for e, _ in _events(catalog)]
    assert names.count("promotion.requested") == 2 and names.count("promotion.decided") == 2
    decided = [p for e, p in _events(catalog) if e == "promotion.decided"]
    assert [(p["request_id"], p["state"], p["decided_by"]) for p in decided] == [
        (request_id, "approved", "bob"), (second, "rejected", "dave")]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from loradex.registry.server.tokens import create_token

    root = tmp_path_factory.mktemp("promotions-served")
    catalog = _catalog(root / "home", root)
    from loradex.registry.catalog.operations import move_alias
    from loradex.registry.catalog.promotions import protect_alias

    move_alias(catalog, "style@1.0.0", "production", "first", user="alice")
    protect_alias(catalog, "style", "production")
    tokens = {label: create_token(catalog, scope, name=label).secret
              for label, scope in (("writer", "write"), ("approver", "approve"), ("reader", "read"))}
    return catalog, web_app(catalog), tokens


def _auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_promotion_flow_through_the_served_api(served):
    catalog, app, tokens = served
    client = TestClient(app)
    r = client.post("/api/promotions", json={"ref": "style@1.1.0", "alias": "production", "reason": "ship it"},
                    headers=_auth(tokens["reader"]))
    assert r.status_code == 403
    r = client.post("/api/promotions", json={"ref": "style@1.1.0", "alias": "production", "reason": "ship it"},
                    headers=_auth(tokens["writer"]))
    assert r.status_code == 201, r.text
    request_id = r.json()["id"]
    assert r.json()["requested_by"] == "writer"
    assert [x["id"] for x in client.get("/api/promotions", headers=_auth(tokens["reader"])).json()] == [request_id]
    # a write token cannot approve; a body outside the schema is refused before anything happens
    assert client.post(f"/api/promotions/{request_id}/approve", json={}, headers=_auth(tokens["writer"])).status_code == 403
    assert client.post(f"/api/promotions/{request_id}/approve", json={"reason": 5},
                       headers=_auth(tokens["approver"])).status_code == 400
    assert catalog.resolve("style@production").version == "1.0.0"
    r = client.post(f"/api/promotions/{request_id}/approve", json={"reason": "ok"}, headers=_auth(tokens["approver"]))
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["decided_by"]) == ("approved", "approver")
    assert catalog.resolve("style@production").version == "1.1.0"
    last = catalog.alias_history("style", "production")[-1]
    assert last.by == "approver" and "by writer" in last.reason
    assert client.post(f"/api/promotions/{request_id}/reject", json={"reason": "late"},
                       headers=_auth(tokens["approver"])).status_code == 409
    assert client.post("/api/promotions/999/approve", json={}, headers=_auth(tokens["approver"])).status_code == 404


def test_the_web_page_lists_open_requests_and_an_approver_decides(served):
    from loradex.registry.catalog.promotions import request_promotion

    catalog, app, tokens = served
    open_request = request_promotion(catalog, "style@1.2.0", "production", "try the newest", user="writer")
    reader = signed_in_client(app, tokens["reader"])
    page = reader.get("/ui/promotions")
    assert page.status_code == 200 and f'id="request-{open_request.id}"' in page.text
    assert "try the newest" in page.text and f'id="approve-{open_request.id}"' not in page.text  # no forms for a reader
    adapter_page = reader.get("/ui/adapters/style")
    assert 'id="promotions"' in adapter_page.text and f'id="request-{open_request.id}"' in adapter_page.text
    # a reader's POST (with a good CSRF token) is refused; a form without the token too
    csrf = csrf_of(page.text)
    assert reader.post(f"/ui/promotions/{open_request.id}/reject", data={"csrf": csrf, "reason": "x"},
                       follow_redirects=False).status_code == 403
    approver = signed_in_client(app, tokens["approver"])
    page = approver.get("/ui/promotions")
    assert f'id="approve-{open_request.id}"' in page.text
    assert approver.post(f"/ui/promotions/{open_request.id}/reject", data={"reason": "x"},
                         follow_redirects=False).status_code == 403
    r = approver.post(f"/ui/promotions/{open_request.id}/reject", data={"csrf": csrf_of(page.text), "reason": "not yet"},
                      follow_redirects=False)
    assert r.status_code == 303
    page = approver.get("/ui/promotions")
    assert f'id="request-{open_request.id}"' not in page.text and 'data-state="rejected"' in page.text
    assert catalog.resolve("style@production").version != "1.2.0"
