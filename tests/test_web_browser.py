"""The web app end to end in a real headless Chromium (issue 18, "Tests and evidence").

One catalog (tests/_web_fixtures.py's ``web_catalog``) is served twice by uvicorn on 127.0.0.1:
``site.url`` (signed-in use) and ``site.public_url`` (``--public-read``), and one browser drives
both (cookies are per host, not per port, so every test starts by signing in or clearing them).
What the browser did is read back through the library and through the CLI (``loradex card``,
``loradex alias history``) on the same home. No sleeps: every wait is a WebDriverWait on a
condition. Skips with one line where Chromium/chromedriver/selenium are missing (tests/_browser.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from _browser import browser_missing, chromium, start_chromium  # noqa: F401 - chromium is a fixture
from _served_app import ServedApp
from _web_fixtures import ADMIN_TOKEN, WebCatalog, web_app, web_catalog

pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=f"browser tests skipped: {browser_missing()}")

WAIT_S = 15
NAME = "ink-style"


@dataclass
class Site:
    wc: WebCatalog
    url: str  # signed-in use
    public_url: str  # the same catalog served with --public-read


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("web-browser")
    wc = web_catalog(root / "home", root / "scratch")
    with ServedApp(web_app(wc.catalog)) as served, ServedApp(web_app(wc.catalog, public_read=True)) as public:
        yield Site(wc, served.url, public.url)


# --- helpers --------------------------------------------------------------------------------------

def by_css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def one(driver, selector: str):
    found = by_css(driver, selector)
    assert len(found) == 1, f"{selector}: {len(found)} elements on {driver.current_url}"
    return found[0]


def wait_for(driver, condition, message: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(condition, message)


def replaced(page):
    """The condition "``page`` (an element) left the document": selenium's ``staleness_of``, plus
    chromedriver's other answer when the node goes mid-navigation ("Node with given id does not
    belong to the document", a plain WebDriverException) — the same fact, seen under load."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    def gone(_driver) -> bool:
        try:
            page.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    return gone


def submit(driver, button) -> None:
    """Click a submit button and wait for the next page to replace this one."""
    page = one(driver, "html")
    button.click()
    wait_for(driver, replaced(page), "the form did not navigate")
    wait_for(driver, lambda d: d.execute_script("return document.readyState") == "complete")


def fill(driver, selector: str, text: str) -> None:
    field = one(driver, selector)
    field.clear()
    field.send_keys(text)


def sign_out_everywhere(driver, site: Site) -> None:
    driver.get(site.url + "/ui/login")
    driver.delete_all_cookies()  # the two servers share the host, hence the cookie jar


def sign_in(driver, site: Site, token: str, expect_name: str) -> None:
    """Sign in on the real form (fresh cookie jar), then check the page says who we are."""
    sign_out_everywhere(driver, site)
    driver.get(site.url + "/ui/login")
    fill(driver, "#token", token)
    submit(driver, one(driver, "#login-button"))
    assert one(driver, "#user-name").text == expect_name
    assert by_css(driver, "#logout-form"), "signed in pages carry the sign-out form"


def images_loaded(driver, selector: str) -> list[int]:
    """Scroll each image into view (they are lazy) and wait until all have decoded; their widths."""
    images = by_css(driver, selector)
    assert images, f"no {selector} on {driver.current_url}"
    for img in images:
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", img)
    wait_for(driver, lambda d: all(d.execute_script("return arguments[0].complete", img) for img in images),
             f"{selector} did not finish loading")
    return [driver.execute_script("return arguments[0].naturalWidth", img) for img in images]


def post_from_page(driver, path: str, fields: dict) -> dict:
    """A POST made by the page's own JavaScript (same origin, the browser's cookies), not a form."""
    return driver.execute_async_script("""
        const [path, fields, done] = arguments;
        const body = new URLSearchParams(fields);
        fetch(path, {method: "POST", body, credentials: "same-origin", redirect: "manual"})
          .then(r => done({status: r.status, type: r.type}), e => done({status: -1, type: String(e)}));
    """, path, fields)


def csp_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]


def cli_json(capsys, home, *args: str):
    """``loradex ARGS --json --home HOME`` in this process; its parsed stdout."""
    from loradex.cli.main import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as end:
        main([*args, "--home", str(home), "--json"])
    out = capsys.readouterr()
    assert end.value.code == 0, out.err
    return json.loads(out.out)


# --- flows ----------------------------------------------------------------------------------------

def test_sign_in_with_a_token_gives_an_httponly_session(chromium, site):
    driver = chromium
    sign_out_everywhere(driver, site)
    driver.get(site.url + "/ui/login")
    fill(driver, "#token", "ldx_not-a-token-of-this-server")
    submit(driver, one(driver, "#login-button"))
    assert "/ui/login" in driver.current_url and one(driver, "#login-error").is_displayed()
    assert one(driver, "#user-name").text == "anonymous" and driver.get_cookie("loradex_session") is None

    sign_in(driver, site, site.wc.tokens["writer"], "writer")
    cookie = driver.get_cookie("loradex_session")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert "loradex_session" not in driver.execute_script("return document.cookie")
    assert site.wc.tokens["writer"] not in driver.page_source  # the token is not echoed back
    assert not by_css(driver, "#nav-audit"), "only admins see the audit link"

    submit(driver, one(driver, "#logout-button"))
    assert one(driver, "#user-name").text == "anonymous"


def test_search_by_trigger_word_finds_the_adapter(chromium, site):
    driver = chromium
    sign_in(driver, site, site.wc.tokens["reader"], "reader")
    driver.get(site.url + "/")
    everything = {c.get_attribute("data-adapter") for c in by_css(driver, "#cards article.card")}
    assert everything == {"ink-style", "ink-merge", "ink-distilled", "paper-texture", "neg-embed"}
    fill(driver, "#search-q", "inkzk")
    submit(driver, one(driver, "#search-button"))
    assert "q=inkzk" in driver.current_url
    found = [c.get_attribute("data-adapter") for c in by_css(driver, "#cards article.card")]
    assert found == [NAME], found
    assert "inkzk" in [t.text for t in by_css(driver, f"#card-{NAME} .badge.trigger")]
    assert one(driver, "#result-count").text.startswith("1 adapter")
    assert one(driver, "#search-q").get_attribute("value") == "inkzk"
    submit(driver, one(driver, f"#card-{NAME} a.adapter-link"))
    assert one(driver, "#adapter-name").text == NAME


def test_version_page_shows_loaded_samples_and_card_values(chromium, site):
    driver = chromium
    sign_in(driver, site, site.wc.tokens["reader"], "reader")
    driver.get(f"{site.url}/ui/versions/{NAME}/1.0.0")
    assert one(driver, "#version-title").text.startswith(f"{NAME}@1.0.0")
    samples = {s.get_attribute("data-record") for s in by_css(driver, "#gallery figure.sample")}
    assert samples == set(site.wc.records[f"{NAME}@1.0.0"])
    widths = images_loaded(driver, "#gallery figure.sample img")
    assert len(widths) == 2 and all(w > 0 for w in widths), widths
    assert one(driver, "#card-verdict").text == "PASS"
    clip_t = one(driver, '#card-metrics tr[data-metric="clip_t"]').text
    assert "0.3100" in clip_t and "min" in clip_t, clip_t
    assert "inkzk" in one(driver, "#triggers").text
    assert site.wc.refs[f"{NAME}@1.0.0"] in one(driver, "#hashes").text

    driver.get(f"{site.url}/ui/versions/{NAME}/2.0.0")
    assert one(driver, "#card-verdict").text == "FAIL"
    assert "clip_t 0.12 < 0.2" in one(driver, "#card-reasons").text
    assert "0.1200" in one(driver, '#card-metrics tr[data-metric="clip_t"]').text


def test_compare_shows_two_columns_on_the_same_seeds(chromium, site):
    driver = chromium
    sign_in(driver, site, site.wc.tokens["reader"], "reader")
    driver.get(f"{site.url}/ui/versions/{NAME}/1.1.0")
    submit(driver, one(driver, "#compare-link"))  # compares 1.1.0 with the newest other version
    assert "/ui/compare/" in driver.current_url
    from selenium.webdriver.support.ui import Select

    pickers = by_css(driver, '#compare-form select[name="v"]')
    for picker, version in zip(pickers, ("1.0.0", "1.1.0", "", "")):
        Select(picker).select_by_value(version)
    submit(driver, one(driver, "#compare-form button[type=submit]"))
    columns = [th.get_attribute("data-version") for th in by_css(driver, "#compare-grid th[data-version]")]
    assert sorted(columns) == ["1.0.0", "1.1.0"], columns
    rows = by_css(driver, "#compare-grid tr.compare-row")
    assert sorted(r.get_attribute("data-seed") for r in rows) == ["7", "8"]
    for row in rows:
        cells = row.find_elements("css selector", "div.cell")
        assert len(cells) == 2, row.text
        records = {c.get_attribute("data-record") for c in cells}
        expected = {rid for ref in (f"{NAME}@1.0.0", f"{NAME}@1.1.0") for rid in site.wc.records[ref]}
        assert records <= expected and len(records) == 2
        seed = row.get_attribute("data-seed")
        assert f"seed {seed}" in row.find_element("css selector", "td.settings").text
    widths = images_loaded(driver, "#compare-grid tr.compare-row div.cell img")
    assert len(widths) == 4 and all(w > 0 for w in widths), widths
    assert len(by_css(driver, '#metric-deltas tr[data-metric="clip_t"] td')) == 3  # name + two versions


def test_review_in_the_browser_is_the_card_the_cli_shows(chromium, site, capsys):
    driver = chromium
    ref = f"{NAME}@1.0.0"
    seed7, seed8 = site.wc.records[ref]
    before = cli_json(capsys, site.wc.home, "card", ref)
    sign_in(driver, site, site.wc.tokens["writer"], "writer")
    driver.get(f"{site.url}/ui/review/{NAME}/1.0.0")
    one(driver, f'input[name="verdict:{seed7}"][value="good"]').click()
    fill(driver, f'input[name="reason:{seed7}"]', "clean heron outline")
    one(driver, f'input[name="verdict:{seed8}"][value="bad"]').click()
    fill(driver, f'input[name="reason:{seed8}"]', "washes bleed <b>everywhere</b>")
    submit(driver, one(driver, "#review-submit"))
    stored = one(driver, "#review-stored").text
    assert "Stored card revision #" in stored and "stored=" in driver.current_url

    card = cli_json(capsys, site.wc.home, "card", ref)
    text = json.dumps(card)
    assert card["id"] > before["id"] and f"#{card['id']}" in stored and card["ref"] == ref
    assert "clean heron outline" in text and "washes bleed <b>everywhere</b>" in text
    verdicts = _verdicts(card)
    assert (verdicts[seed7]["verdict"], verdicts[seed7]["by"]) == ("accept", "writer")
    assert (verdicts[seed8]["verdict"], verdicts[seed8]["by"]) == ("reject", "writer")
    # the page shows it back, escaped (the <b> is text, not markup)
    listed = one(driver, f'#card-verdicts li[data-record="{seed8}"]').text
    assert "washes bleed <b>everywhere</b>" in listed and not by_css(driver, "#card-verdicts b")


def _verdicts(card: dict) -> dict:
    """``loradex card --json``'s human verdicts by record id."""
    return {v["record_id"]: v for v in card["card"]["human_verdicts"]}


def test_gate_refusal_then_admin_force_shows_in_alias_history(chromium, site, capsys):
    driver = chromium
    home = site.wc.home
    before = cli_json(capsys, home, "alias", "history", NAME, "production")
    sign_in(driver, site, site.wc.tokens["writer"], "writer")
    driver.get(f"{site.url}/ui/versions/{NAME}/2.0.0")
    assert not by_css(driver, '#promote-production input[name="force"]'), "force is for the admin token only"
    fill(driver, '#promote-production input[name="reason"]', "ship the new dataset")
    submit(driver, one(driver, "#promote-button-production"))
    refusal = one(driver, "#refusal").text
    assert "production" in refusal and "recorded" in refusal

    sign_in(driver, site, ADMIN_TOKEN, _admin_name())
    driver.get(f"{site.url}/ui/versions/{NAME}/2.0.0")
    fill(driver, '#promote-production input[name="reason"]', "art director signed off")
    one(driver, '#promote-production input[name="force"]').click()
    submit(driver, one(driver, "#promote-button-production"))
    assert "production now points at 2.0.0" in one(driver, "#flash").text

    history = cli_json(capsys, home, "alias", "history", NAME, "production")
    events = _events(history)
    new = events[len(_events(before)):]
    assert [(e["action"], e["to"], e["by"]) for e in new] == \
        [("refused", "2.0.0", "writer"), ("set", "2.0.0", _admin_name())], new
    assert new[0]["reason"].startswith("ship the new dataset [gate refused:")
    assert new[1]["reason"].startswith("art director signed off [gate overridden with --force:")
    assert [(a.name, a.version) for a in site.wc.catalog.aliases(NAME) if a.name == "production"] == \
        [("production", "2.0.0")]


def _admin_name() -> str:
    from loradex.registry.server.tokens import ADMIN_TOKEN_NAME

    return ADMIN_TOKEN_NAME


def _events(history: list[dict]) -> list[dict]:
    """``loradex alias history --json``'s events with the keys the tests compare."""
    return [{key: e[key] or "" for key in ("action", "from", "to", "by", "reason")} for e in history]


def test_rollback_from_the_alias_timeline(chromium, site, capsys):
    driver = chromium
    catalog = site.wc.catalog
    now = {a.name: a.version for a in catalog.aliases(NAME)}["production"]
    sign_in(driver, site, site.wc.tokens["writer"], "writer")
    driver.get(f"{site.url}/ui/adapters/{NAME}")
    moves_before = len(by_css(driver, "#timeline-production li.event"))
    fill(driver, '#rollback-production input[name="reason"]', "customers saw smudges")
    submit(driver, one(driver, "#rollback-button-production"))
    assert f"/ui/adapters/{NAME}" in driver.current_url

    last = _events(cli_json(capsys, site.wc.home, "alias", "history", NAME, "production"))[-1]
    assert (last["action"], last["from"], last["by"], last["reason"]) == \
        ("rollback", now, "writer", "customers saw smudges")
    assert last["to"] != now and {a.name: a.version for a in catalog.aliases(NAME)}["production"] == last["to"]
    timeline = by_css(driver, "#timeline-production li.event")
    assert len(timeline) == moves_before + 1
    newest = [li for li in timeline if "customers saw smudges" in li.text]
    assert len(newest) == 1 and newest[0].get_attribute("data-action") == "rollback"
    assert one(driver, "#alias-production a.alias-target").text == last["to"]


def test_anonymous_public_read_sees_pages_but_no_forms_and_forged_posts_are_refused(chromium, site):
    driver = chromium
    catalog = site.wc.catalog
    sign_out_everywhere(driver, site)
    base = site.public_url
    driver.get(base + "/")
    assert one(driver, "#user-name").text == "anonymous"
    assert by_css(driver, f"#card-{NAME}")
    assert [f.get_attribute("method") for f in by_css(driver, "#content form")] == ["get"]  # the search box
    for path in (f"/ui/adapters/{NAME}", f"/ui/versions/{NAME}/1.1.0", f"/ui/review/{NAME}/1.1.0"):
        driver.get(base + path)
        assert one(driver, "main#content h1").text, path
        assert not by_css(driver, "#content form"), f"{path} offers a form to an anonymous visitor"
    assert all(w > 0 for w in images_loaded(driver, ".review-sample img"))  # the last page: the review's samples

    history = len(catalog.alias_history(NAME, "production"))
    forged = [(f"/ui/aliases/{NAME}/production/move", {"version": "1.0.0", "reason": "forged", "csrf": ""}),
              (f"/ui/aliases/{NAME}/production/rollback", {"reason": "forged"}),
              (f"/ui/review/{NAME}/1.0.0", {"check:artifacts": "fail", "csrf": "x" * 40})]
    for path, fields in forged:
        answer = post_from_page(driver, path, fields)
        assert answer["status"] == 403, (path, answer)
    assert len(catalog.alias_history(NAME, "production")) == history


def test_posts_without_the_csrf_token_are_refused_even_when_signed_in(chromium, site):
    driver = chromium
    catalog = site.wc.catalog
    sign_in(driver, site, site.wc.tokens["writer"], "writer")
    driver.get(f"{site.url}/ui/versions/{NAME}/1.0.0")
    csrf = one(driver, '#promote-staging input[name="csrf"]').get_attribute("value")
    assert csrf
    staging = len(catalog.alias_history(NAME, "staging"))
    move = f"/ui/aliases/{NAME}/staging/move"
    for fields in ({"version": "1.0.0", "reason": "no token"},
                   {"version": "1.0.0", "reason": "empty token", "csrf": ""},
                   {"version": "1.0.0", "reason": "wrong token", "csrf": csrf[:-2] + ("aa" if csrf[-2:] != "aa" else "bb")}):
        answer = post_from_page(driver, move, fields)
        assert answer["status"] == 403, (fields, answer)
    assert len(catalog.alias_history(NAME, "staging")) == staging
    # the same request with the session's token goes through (a redirect: opaque under redirect=manual)
    answer = post_from_page(driver, move, {"version": "1.0.0", "reason": "with the token", "csrf": csrf})
    assert answer["type"] == "opaqueredirect", answer
    last = catalog.alias_history(NAME, "staging")[-1]
    assert (last.action, last.to_version, last.by, last.reason) == ("set", "1.0.0", "writer", "with the token")


def test_csp_blocks_inline_script_and_our_own_assets_raise_no_violation(chromium, site):
    driver = chromium
    sign_in(driver, site, site.wc.tokens["writer"], "writer")
    driver.get_log("browser")  # drop what earlier pages logged
    for path in ("/", f"/ui/adapters/{NAME}", f"/ui/versions/{NAME}/1.1.0", f"/ui/review/{NAME}/1.1.0",
                 f"/ui/compare/{NAME}?v=1.0.0&v=1.1.0"):
        driver.get(site.url + path)
        assert csp_errors(driver) == [], path
    # our own script ran under the CSP: the compare page's slider is switched on by evidence.js
    assert by_css(driver, ".flip.slider-on"), "static/evidence.js did not run"
    ran = driver.execute_script("""
        window.__inline = 0;
        const s = document.createElement("script");
        s.textContent = "window.__inline = 1";
        document.head.appendChild(s);
        const b = document.createElement("button");
        b.setAttribute("onclick", "window.__inline = 2");
        document.body.appendChild(b);
        b.click();
        return window.__inline;
    """)
    assert ran == 0, "an inline script or handler ran"
    wait_for(driver, lambda d: len(csp_errors(d)) > 0 or None, "the blocked inline script was not reported")


def test_pages_work_read_only_with_javascript_off(site):
    driver = start_chromium(javascript=False)
    try:
        driver.get(site.public_url + "/")
        fill(driver, "#search-q", "inkzk")
        submit(driver, one(driver, "#search-button"))
        assert [c.get_attribute("data-adapter") for c in by_css(driver, "#cards article.card")] == [NAME]
        submit(driver, one(driver, f"#card-{NAME} a.adapter-link"))
        assert one(driver, "#adapter-name").text == NAME
        assert by_css(driver, "#lineage svg"), "the lineage drawing is server-made SVG"
        submit(driver, one(driver, "#latest-link"))
        assert all(w > 0 for w in images_loaded(driver, "#gallery figure.sample img"))
        assert one(driver, "#card-verdict").text in ("PASS", "FAIL")
        assert one(driver, "button.copy").get_attribute("hidden") is not None  # evidence.js unhides it
        driver.get(f"{site.public_url}/ui/compare/{NAME}?v=1.0.0&v=1.1.0")
        assert len(by_css(driver, "#compare-grid tr.compare-row")) == 2
        assert not by_css(driver, ".flip.slider-on"), "JavaScript ran although it is off"
    finally:
        driver.quit()
