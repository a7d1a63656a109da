"""The web app's core (issue 18): sessions and their security, the catalog, adapter and audit
pages, images and thumbnails, escaping of hostile strings, `loradex ui`'s one-time link.

    .venv/bin/pytest -q -p no:cacheprovider tests/test_web_core.py
"""

from __future__ import annotations

import hashlib
import html
import re
import subprocess
import sys

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from _web_fixtures import ADMIN_TOKEN, csrf_of, sign_in, signed_in_client, web_app, web_catalog
from loradex.registry.catalog.db_schema import ServeAuditRow, WebSessionRow
from loradex.registry.server.web import images as web_images
from loradex.registry.server.web.common import CSP


@pytest.fixture(scope="module")
def wc(tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    return web_catalog(root / "home", root / "tmp")


@pytest.fixture(scope="module")
def app(wc):
    return web_app(wc.catalog)


@pytest.fixture(scope="module")
def admin(app):
    return signed_in_client(app, ADMIN_TOKEN)


def cards(page_html: str) -> list[str]:
    return re.findall(r'<article class="card" id="card-[^"]*" data-adapter="([^"]+)"', page_html)


def facet(page_html: str, key: str) -> dict[str, int]:
    section = re.search(rf'<section id="facet-{key}".*?</section>', page_html, re.S)
    if section is None:
        return {}
    return {html.unescape(v): int(n) for v, n in re.findall(
        r'data-value="([^"]*)">[^<]*</a> <span class="count">(\d+)</span>', section.group(0))}


# --- sessions and security -----------------------------------------------------------------------

def test_sign_in_with_a_good_token_opens_a_session_stored_only_as_a_hash(app, wc):
    client = TestClient(app)
    answer = sign_in(client, wc.tokens["writer"], next_path="/ui/adapters/ink-style")
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/adapters/ink-style"
    cookie = next(h for h in answer.headers.get_list("set-cookie") if h.startswith("loradex_session="))
    session_id = cookie.split(";")[0].split("=", 1)[1]
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= flags
    assert "secure" not in flags  # plain http here; see the https test
    rows = wc.catalog.read(lambda s: s.scalars(select(WebSessionRow)).all())
    assert any(r.session_sha256 == hashlib.sha256(session_id.encode()).hexdigest() for r in rows)
    for r in rows:  # neither the session id nor the token is in the row
        assert session_id not in repr(vars(r)) and wc.tokens["writer"] not in repr(vars(r))
    page = client.get("/").text
    assert '<span id="user-name"' in page and ">writer</span>" in page


def test_a_bad_token_gets_no_session_and_is_audited(app, wc):
    client = TestClient(app)
    answer = sign_in(client, "ldx_not-a-real-token")
    assert answer.status_code == 401
    assert "loradex_session" not in answer.headers.get("set-cookie", "")
    assert "not one this server knows" in answer.text
    assert client.get("/", follow_redirects=False).status_code == 303  # still signed out
    audit = wc.catalog.read(lambda s: s.scalars(select(ServeAuditRow).where(ServeAuditRow.path == "/ui/login")).all())
    assert any(r.token_name == "invalid-token" and r.status == 401 for r in audit)


def test_the_sign_in_form_needs_its_csrf_cookie(app):
    client = TestClient(app)
    refused = client.post("/ui/login", data={"token": ADMIN_TOKEN, "csrf": "made-up"}, follow_redirects=False)
    assert refused.status_code == 403 and "loradex_session" not in refused.headers.get("set-cookie", "")


def test_session_cookie_is_secure_over_https(app):
    client = TestClient(app, base_url="https://testserver")
    answer = sign_in(client, ADMIN_TOKEN)
    cookie = next(h for h in answer.headers.get_list("set-cookie") if h.startswith("loradex_session="))
    assert "secure" in {p.strip().lower() for p in cookie.split(";")}


def test_pages_carry_the_csp_and_security_headers(admin):
    for path in ("/", "/ui/adapters/ink-style", "/ui/audit", "/ui/login", "/ui/adapters/no-such"):
        answer = admin.get(path)
        assert answer.headers["content-security-policy"] == CSP, path
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "same-origin"
        assert answer.headers["cache-control"] == "no-store"
        assert "<script" not in answer.text and " onerror=" not in answer.text and " onclick=" not in answer.text
    assert admin.get("/ui/adapters/no-such").status_code == 404


def test_a_private_server_sends_visitors_to_sign_in(app):
    client = TestClient(app)
    answer = client.get("/ui/adapters/ink-style", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/login?next=%2Fui%2Fadapters%2Fink-style"
    assert client.get("/ui/login?next=//evil.example/x").text.count('name="next" value="/"') == 1


def test_posts_need_a_session_and_its_csrf_token(app, wc):
    anonymous = TestClient(web_app(wc.catalog, public_read=True))
    assert "ink-style" in cards(anonymous.get("/").text)  # --public-read: anonymous visitors browse
    refused = anonymous.post("/ui/logout", data={"csrf": ""})
    assert refused.status_code == 403 and "sign in to change anything" in refused.text

    client = signed_in_client(app, wc.tokens["reader"])
    no_csrf = client.post("/ui/logout", data={}, follow_redirects=False)
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text
    wrong = client.post("/ui/logout", data={"csrf": "x" * 43}, follow_redirects=False)
    assert wrong.status_code == 403
    assert client.get("/", follow_redirects=False).status_code == 200  # still signed in
    out = client.post("/ui/logout", data={"csrf": csrf_of(client.get("/").text)}, follow_redirects=False)
    assert out.status_code == 303
    assert client.get("/", follow_redirects=False).status_code == 303  # the session is gone


def test_revoking_the_token_ends_its_sessions(app, wc):
    from loradex.registry.server.tokens import create_token, revoke_token

    made = create_token(wc.catalog, "read", name="short-lived")
    client = signed_in_client(app, made.secret)
    assert client.get("/", follow_redirects=False).status_code == 200
    revoke_token(wc.catalog, "short-lived")
    assert client.get("/", follow_redirects=False).status_code == 303


def test_a_one_time_ticket_works_once(app):
    from loradex.registry.server.web.sessions import issue_ticket

    ticket = issue_ticket(app, ADMIN_TOKEN)
    first = TestClient(app)
    answer = first.get(f"/ui/login/once/{ticket}", follow_redirects=False)
    assert answer.status_code == 303 and "loradex_session=" in answer.headers["set-cookie"]
    assert first.get("/ui/audit").status_code == 200
    again = TestClient(app).get(f"/ui/login/once/{ticket}", follow_redirects=False)
    assert again.status_code == 403 and "loradex_session" not in again.headers.get("set-cookie", "")
    expired = issue_ticket(app, ADMIN_TOKEN, seconds=-1)
    assert TestClient(app).get(f"/ui/login/once/{expired}", follow_redirects=False).status_code == 403


# --- catalog page ----------------------------------------------------------------------------------

def test_search_by_a_trigger_word_finds_the_adapter(admin):
    page = admin.get("/", params={"q": "inkzk"}).text
    assert cards(page) == ["ink-style"]
    assert cards(admin.get("/", params={"trigger": "inkzk"}).text) == ["ink-style"]
    assert cards(admin.get("/", params={"q": "no-such-word-anywhere"}).text) == []
    assert 'id="no-results"' in admin.get("/", params={"q": "no-such-word-anywhere"}).text


def test_cards_show_what_the_catalog_knows(admin, wc):
    page = admin.get("/").text
    card = re.search(r'<article class="card" id="card-ink-style".*?</article>', page, re.S).group(0)
    assert ">2.0.0<" in card and "lora · sd1" in card
    assert 'badge alias" title="production → 1.1.0"' in card and "staging" in card
    assert '<span class="badge trigger">inkzk</span>' in card
    newest = wc.images["ink-style@2.0.0"]  # the newest sample image, as a thumbnail only
    assert f'src="/ui/thumbs/{newest}.webp"' in card and "/ui/blobs/" not in page
    paper = re.search(r'<article class="card" id="card-paper-texture".*?</article>', page, re.S).group(0)
    assert f'src="/ui/thumbs/{wc.preview}.webp"' in paper  # no records: its preview


def test_facet_counts_and_filters(admin):
    page = admin.get("/").text
    assert facet(page, "kind") == {"lora": 4, "embedding": 1}
    assert facet(page, "base") == {"sd1": 4, "unknown": 1}
    assert facet(page, "alias") == {"production": 1, "staging": 1}
    assert facet(page, "tag") == {"style=ink": 1, "subject=animals": 1, "style=texture": 1}
    assert cards(admin.get("/", params={"kind": "embedding"}).text) == ["neg-embed"]
    assert cards(admin.get("/", params={"tag": "style=texture"}).text) == ["paper-texture"]
    assert cards(admin.get("/", params={"alias": "staging"}).text) == ["ink-style"]
    narrowed = admin.get("/", params={"base": "sd1"}).text
    assert facet(narrowed, "kind") == {"lora": 4}


def test_pagination_and_sort(admin):
    by_name = ["ink-distilled", "ink-merge", "ink-style", "neg-embed", "paper-texture"]
    assert cards(admin.get("/", params={"sort": "name"}).text) == by_name
    seen = []
    for page_no in (1, 2, 3):
        page = admin.get("/", params={"sort": "name", "per_page": 2, "page": page_no}).text
        assert f"page {page_no} of 3" in page
        assert ('id="page-next"' in page) == (page_no < 3) and ('id="page-prev"' in page) == (page_no > 1)
        seen += cards(page)
    assert seen == by_name
    first = admin.get("/", params={"sort": "name", "per_page": 2}).text
    assert 'href="/?sort=name&amp;page=2&amp;per_page=2"' in first
    assert cards(admin.get("/", params={"sort": "name", "per_page": 2, "page": 99}).text) == []
    assert admin.get("/", params={"page": "x", "per_page": "-4", "sort": "bogus"}).status_code == 200
    refused = admin.get("/", params={"kind": "bogus"})
    assert refused.status_code == 200 and 'id="search-problem"' in refused.text and cards(refused.text) == []


# --- adapter page ----------------------------------------------------------------------------------

def test_adapter_page_shows_versions_aliases_and_their_history(admin):
    page = admin.get("/ui/adapters/ink-style").text
    rows = re.findall(r'<tr id="version-([^"]+)".*?</tr>', page, re.S)
    assert rows == ["2.0.0", "1.1.0", "1.0.0"]
    row = re.search(r'<tr id="version-2.0.0".*?</tr>', page, re.S).group(0)
    assert "new dataset" in row and "alice" in row and 'badge fail">fail' in row
    assert 'badge pass">pass' in re.search(r'<tr id="version-1.1.0".*?</tr>', page, re.S).group(0)
    timeline = re.search(r'<ol class="timeline" id="timeline-production">.*?</ol>', page, re.S).group(0)
    actions = re.findall(r'data-action="([a-z]+)"', timeline)
    assert actions == ["set", "rollback", "refused", "set", "set"]  # newest first
    refused = re.search(r'<li class="event refused".*?</li>', timeline, re.S).group(0)
    assert ">carol<" in refused and "try the new dataset" in refused and "gate refused" in refused
    assert "clip_t 0.12 &lt; 0.2" in refused
    assert ">customer report<" in timeline and ">bob<" in timeline
    assert 'class="alias-target">1.1.0<' in page
    assert "Black ink line art" in page
    assert "<h2>Evaluation of ink-style@2.0.0</h2>" in page  # the latest version's card, as Markdown


def test_adapter_page_draws_lineage_parents_and_children(admin):
    page = admin.get("/ui/adapters/ink-merge").text
    svg = re.search(r"<svg .*?</svg>", page, re.S).group(0)
    assert 'id="lineage-svg"' in svg
    for ref, name, version in (("ink-style@1.1.0", "ink-style", "1.1.0"), ("paper-texture@1.0.0", "paper-texture", "1.0.0"),
                               ("ink-distilled@1.0.0", "ink-distilled", "1.0.0")):
        assert f"<title>{ref}</title>" in svg
        assert f'<a href="/ui/versions/{name}/{version}">' in svg
    assert svg.count(">merged_from<") == 2 and svg.count(">trained_from<") == 1
    assert '<g class="node self"><title>ink-merge@1.0.0</title>' in svg
    # parents left of the adapter's own version, children right of it
    x = {t: int(v) for v, t in re.findall(r'<rect x="(\d+)"[^>]*/><text[^>]*>([^<]+)</text>', svg)}
    assert x["ink-style@1.1.0"] < x["ink-merge@1.0.0"] < x["ink-distilled@1.0.0"]
    external = admin.get("/ui/adapters/paper-texture").text
    assert "<title>hf://someone/paper-texture</title>" in external
    assert 'href="hf://' not in external  # external parents are text, never links
    assert 'id="no-lineage"' in admin.get("/ui/adapters/neg-embed").text


# --- audit page ------------------------------------------------------------------------------------

def test_audit_page_is_for_the_admin_token_only(app, wc, admin):
    assert TestClient(app).get("/ui/audit", follow_redirects=False).status_code == 303
    writer = signed_in_client(app, wc.tokens["writer"])
    refused = writer.get("/ui/audit")
    assert refused.status_code == 403 and 'id="nav-audit"' not in refused.text
    page = admin.get("/ui/audit").text
    assert 'id="nav-audit"' in page
    users = set(re.findall(r'<td class="user">([^<]+)</td>', page))
    assert {"$LORADEX_SERVE_TOKEN", "writer"} <= users  # sign-ins are recorded
    only = admin.get("/ui/audit", params={"user": "writer"}).text
    assert set(re.findall(r'<td class="user">([^<]+)</td>', only)) == {"writer"}
    refusals = admin.get("/ui/audit", params={"status": "refused", "path": "/ui/login"}).text
    assert re.findall(r"<td>(\d{3})</td><td>", refusals) and all(
        int(s) >= 400 for s in re.findall(r"<td>(\d{3})</td><td>", refusals))
    assert admin.get("/ui/audit", params={"since": "2999-01-01T00:00"}).text.count('class="audit-entry"') == 0
    assert admin.get("/ui/audit", params={"since": "not a date"}).status_code == 400


# --- images ----------------------------------------------------------------------------------------

def test_images_have_etags_immutable_caching_and_304(admin, wc):
    sha = wc.images["ink-style@1.0.0"]
    answer = admin.get(f"/ui/blobs/{sha}")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert hashlib.sha256(answer.content).hexdigest() == sha
    assert answer.headers["etag"] == f'"{sha}"'
    assert answer.headers["cache-control"] == "private, max-age=31536000, immutable"  # a private server
    again = admin.get(f"/ui/blobs/{sha}", headers={"If-None-Match": f'"{sha}"'})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == f'"{sha}"'
    public = TestClient(web_app(wc.catalog, public_read=True)).get(f"/ui/blobs/{sha}")
    assert public.headers["cache-control"] == "public, max-age=31536000, immutable"


def test_only_images_the_catalog_shows_are_served(app, admin, wc):
    assert admin.get(f"/ui/blobs/{wc.refs['ink-style@1.0.0']}").status_code == 404  # an adapter file
    assert admin.get(f"/ui/blobs/{wc.preview}").status_code == 200  # a preview
    assert admin.get("/ui/blobs/" + "0" * 64).status_code == 404
    assert admin.get("/ui/blobs/../catalog.db").status_code == 404
    assert TestClient(app).get(f"/ui/blobs/{wc.preview}").status_code == 401  # signed out


def test_thumbnails_are_made_once_and_cached(admin, wc):
    sha = wc.images["ink-style@1.1.0"]
    path = web_images.thumbnail_path(wc.catalog, sha, "webp")
    assert not path.exists()
    before = web_images.Counters.thumbnails_made
    first = admin.get(f"/ui/thumbs/{sha}.webp")
    assert first.status_code == 200 and first.headers["content-type"] == "image/webp"
    assert first.content[:4] == b"RIFF" and first.content[8:12] == b"WEBP"
    assert web_images.Counters.thumbnails_made == before + 1 and path.read_bytes() == first.content
    assert path.is_relative_to(wc.home / "web-cache" / "thumbs")
    mtime = path.stat().st_mtime_ns
    second = admin.get(f"/ui/thumbs/{sha}.webp")
    assert second.content == first.content
    assert web_images.Counters.thumbnails_made == before + 1 and path.stat().st_mtime_ns == mtime
    assert admin.get(f"/ui/thumbs/{sha}.webp", headers={"If-None-Match": first.headers["etag"]}).status_code == 304
    from PIL import Image
    import io

    big = Image.open(io.BytesIO(admin.get(f"/ui/thumbs/{wc.preview}.png").content))
    assert max(big.size) == web_images.THUMB_PX and big.size == (320, 200)  # 640×400 scaled, aspect kept
    assert admin.get(f"/ui/thumbs/{sha}.gif").status_code == 404


def test_thumbnails_refuse_images_over_the_pixel_cap(admin, wc, monkeypatch):
    monkeypatch.setattr(web_images, "MAX_PIXELS", 1000)
    sha = wc.images["ink-style@2.0.0"]  # 48×48 = 2304 pixels
    assert admin.get(f"/ui/thumbs/{sha}.png").status_code == 404
    assert not web_images.thumbnail_path(wc.catalog, sha, "png").exists()


def test_anonymous_visitors_see_only_public_namespaces(wc):
    from loradex.registry.server.tokens import set_namespace_visibility

    set_namespace_visibility(wc.catalog, "team", "public")
    try:
        client = TestClient(web_app(wc.catalog))
        page = client.get("/", follow_redirects=False)
        assert page.status_code == 200 and cards(page.text) == []  # the home's adapters are not public
        assert client.get("/ui/adapters/ink-style").status_code == 404
        assert client.get(f"/ui/blobs/{wc.images['ink-style@1.0.0']}").status_code == 404
        assert client.get(f"/ui/thumbs/{wc.preview}.webp").status_code == 404
    finally:
        set_namespace_visibility(wc.catalog, "team", "private")


@pytest.mark.postgres
def test_pages_sessions_and_images_on_postgresql(pg_url, tmp_path):
    pg = web_catalog(tmp_path / "home", tmp_path / "tmp", db_url=pg_url)
    try:
        client = signed_in_client(web_app(pg.catalog), ADMIN_TOKEN)
        assert cards(client.get("/", params={"q": "inkzk"}).text) == ["ink-style"]
        assert facet(client.get("/").text, "kind") == {"lora": 4, "embedding": 1}
        page = client.get("/ui/adapters/ink-style").text
        assert re.findall(r'data-action="([a-z]+)"', page)[:5] == ["set", "rollback", "refused", "set", "set"]
        assert client.get(f"/ui/blobs/{pg.preview}").status_code == 200  # found through the expression index
        assert client.get(f"/ui/thumbs/{pg.images['ink-style@1.0.0']}.png").status_code == 200
        assert client.get(f"/ui/blobs/{pg.refs['ink-style@1.0.0']}").status_code == 404
        assert client.get("/ui/audit").status_code == 200
    finally:
        pg.catalog.engine.dispose()


# --- escaping ---------------------------------------------------------------------------------------

SCRIPT = "<script>alert(1)</script>"
BREAKOUT = '"><img src=x onerror=alert(2)>'
JS_URL = "javascript:alert(3)"
RTL = "gpj.\u202eexe"
HOSTILE = f"{SCRIPT} {BREAKOUT} {JS_URL} {RTL}"


def assert_inert(page: str, where: str) -> None:
    assert "<script" not in page, where
    assert "<img src=x" not in page and "onerror=alert" not in page.replace("onerror=alert(2)&gt;", ""), where
    assert 'href="javascript:' not in page and 'src="javascript:' not in page, where
    assert "\u202e" not in page, where


def test_hostile_strings_from_add_import_and_pull_render_inert(tmp_path, loradex_home):
    from _civitai_fixtures import VERSION_ID, FakeCivitai, version_for
    from _web_fixtures import add_lora
    from loradex.merge.synthetic_adapters import write_random_kohya_lora
    from loradex.registry.catalog.store import Catalog
    from loradex.registry.folders.webui_import import import_tree
    from loradex.registry.remotes.civitai import pull_civitai

    catalog = Catalog(loradex_home)
    add_lora(catalog, tmp_path, "hostile-add", "1.0.0", 1, description=HOSTILE, message=HOSTILE,
             tags={"note": HOSTILE, BREAKOUT: "x"}, triggers=[SCRIPT, BREAKOUT, RTL])

    folder = tmp_path / "webui" / "models" / "Lora"
    folder.mkdir(parents=True)
    write_random_kohya_lora(folder / "hostile-import.safetensors", rank=4, seed=2)
    (folder / "hostile-import.json").write_text(
        '{"description": %s, "activation text": %s, "notes": %s}' % tuple(
            __import__("json").dumps(HOSTILE) for _ in range(3)))
    report = import_tree(catalog, tmp_path / "webui")
    assert not [i for i in report.items if i.status == "failed"], report

    pulled_file = write_random_kohya_lora(tmp_path / "hostile-pull.safetensors", rank=4, seed=3)
    version = version_for(pulled_file, description=HOSTILE, trainedWords=[SCRIPT, RTL])
    fake = FakeCivitai(pulled_file, version)
    pull_civitai(catalog, f"civitai:{VERSION_ID}", transport=fake.transport(), sleep=lambda s: None,
                 name="hostile-pull")

    names = {a.name for a in catalog.list_adapters()}
    assert {"hostile-add", "hostile-pull"} <= names and any("hostile-import" in n for n in names), names
    client = signed_in_client(web_app(catalog), ADMIN_TOKEN)
    catalog_page = client.get("/").text
    assert_inert(catalog_page, "catalog")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in catalog_page  # the add's trigger, escaped
    assert "gpj.[U+202E]exe" in catalog_page
    searched = client.get("/", params={"q": BREAKOUT}).text
    assert_inert(searched, "search")
    assert "hostile-add" in cards(searched)
    assert 'value="&#34;&gt;&lt;img src=x onerror=alert(2)&gt;"' in searched  # the box keeps the query
    for name in sorted(n for n in names if n.startswith("hostile")):
        page = client.get(f"/ui/adapters/{name}").text
        assert_inert(page, name)
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page, name
        assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in page, name
        assert "javascript:alert(3)" in page and "gpj.[U+202E]exe" in page, name
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;=x" in client.get("/ui/adapters/hostile-add").text  # a tag key


def test_version_page_says_deleted_upstream_escaped(tmp_path, loradex_home):
    """`loradex outdated` records a version gone upstream in extra["upstream"]; its page says so,
    escaped like every other stored string; a version seen present says nothing."""
    from _web_fixtures import add_lora
    from loradex.registry.catalog.db_schema import VersionRow
    from loradex.registry.catalog.store import Catalog

    catalog = Catalog(loradex_home)
    gone = add_lora(catalog, tmp_path, "gone-style", "1.0.0", 1)
    here = add_lora(catalog, tmp_path, "gone-style", "1.1.0", 2)
    states = {gone.id: {"state": "deleted", "source": f"civitai:7 {BREAKOUT}", "deleted_at": "2026-11-30"},
              here.id: {"state": "present", "source": "civitai:8"}}

    def record(s):
        for version_id, upstream in states.items():
            row = s.get(VersionRow, version_id)
            row.extra = {**(row.extra or {}), "upstream": upstream}

    catalog.transact(record)
    client = signed_in_client(web_app(catalog), ADMIN_TOKEN)
    page = client.get("/ui/versions/gone-style/1.0.0").text
    assert "<img src=x" not in page  # (the version page has its own script tag: assert_inert is for the others)
    notice = re.search(r'<p class="flash bad" id="deleted-upstream">(.*?)</p>', page, re.S)
    assert notice and " ".join(notice.group(1).split()) == (
        "deleted upstream on 2026-11-30 (civitai:7 &#34;&gt;&lt;img src=x onerror=alert(2)&gt;); kept here")
    assert 'id="deleted-upstream"' not in client.get("/ui/versions/gone-style/1.1.0").text


# --- loradex ui --------------------------------------------------------------------------------------

def test_loradex_ui_serves_on_loopback_with_a_one_time_link(wc, tmp_path):
    with subprocess.Popen([sys.executable, "-m", "loradex.cli.main", "ui", "--home", str(wc.home), "--no-browser"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            line = proc.stdout.readline()
            found = re.search(r"(http://127\.0\.0\.1:(\d+))/ui/login/once/\S+", line)
            assert found, (line, proc.stderr.read() if proc.poll() is not None else "")
            link, base = found.group(0), found.group(1)
            with httpx.Client(base_url=base) as client:
                answer = client.get(link, follow_redirects=False)
                assert answer.status_code == 303 and "loradex_session" in client.cookies
                assert client.get("/ui/audit").status_code == 200  # the session is the admin's
                # … and the admin is the local user: a move from the browser is recorded under that name
                page = client.get("/ui/versions/ink-style/1.1.0").text
                csrf = re.search(r'name="csrf" value="([^"]*)"', page).group(1)
                moved = client.post("/ui/aliases/ink-style/staging/move", follow_redirects=False,
                                    data={"csrf": csrf, "version": "1.1.0", "reason": "from loradex ui"})
                assert moved.status_code in (303, 200), moved.text[:300]
            from loradex.registry.paths import current_user

            last = wc.catalog.alias_history("ink-style", "staging")[-1]
            assert (last.reason, last.by) == ("from loradex ui", current_user())
            with httpx.Client() as other:
                assert other.get(link, follow_redirects=False).status_code == 403  # used up
                assert other.get(base + "/ui/adapters/ink-style", follow_redirects=False).status_code == 303
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def test_cards_render_as_markdown_with_raw_html_and_script_links_inert():
    from loradex.registry.server.web.common import markdown_html

    html = str(markdown_html("## metrics\n\n| metric | value |\n|---|---|\n| clip_t | 0.31 |\n\n"
                             "<script>alert(1)</script> [x](javascript:alert(2)) gpj.\u202eexe"))
    assert "<table>" in html and "<td>clip_t</td>" in html and "<h2>metrics</h2>" in html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'href="javascript:' not in html and "[x](javascript:alert(2))" in html
    assert "gpj.[U+202E]exe" in html
    assert markdown_html("") == "" and markdown_html(None) == ""


def test_a_failing_page_is_an_html_500_without_details(wc, monkeypatch, caplog):
    from loradex.registry.server.web import catalog_pages

    def broken(*args, **kwargs):
        raise RuntimeError("secret detail /srv/loradex/catalog.db")

    monkeypatch.setattr(catalog_pages, "adapter_page", broken)
    client = signed_in_client(web_app(wc.catalog))
    with caplog.at_level("ERROR", logger="loradex.server"):
        answer = client.get("/ui/adapters/ink-style")
    assert answer.status_code == 500 and answer.headers["content-type"].startswith("text/html")
    assert "secret detail" not in answer.text and "Traceback" not in answer.text
    assert "Content-Security-Policy" in answer.headers
    assert any("secret detail" in (r.exc_text or "") or r.exc_info for r in caplog.records)  # logged for the operator
