"""The web app's version, compare, review and alias pages (issue 18, pages 3-6), through the real
server app (``build_server_app``) with FastAPI's TestClient: a session signed in with a real token
on the real sign-in form, forms posted with the page's CSRF token, and the catalog read back
through the library (``latest_card``, ``alias_history``) and the CLI (``loradex review``).

The catalog is built without torch: two versions of a small kohya LoRA (written with
safetensors' numpy API), prompt records with PNGs, and evaluation cards that validate against
``schemas/eval-card.schema.json`` — version 1.0.0's card passes, 1.1.0's misses its clip_t
threshold, and ``production`` has a require-pass promotion policy."""

from __future__ import annotations

import copy
import html
import io
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from loradex.registry.catalog import records as R
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.review import card_verdict
from loradex.registry.catalog.store import Catalog
from loradex.registry.server.tokens import ADMIN_TOKEN_NAME, create_token

# the page modules register their routers on import (app.ROUTER_MODULES lists them for `serve`)
from loradex.registry.server.web import alias_forms, compare_pages, review_forms, version_pages

ADMIN = "ldx_admin-secret-for-tests"
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)> javascript:alert(3) \u202egpj.exe'
PROMPTS = ["a red fox", "an old house"]
SEEDS = [0, 1]
METRICS = ("clip_t", "clip_t_base", "style_consistency", "style_reference_similarity", "subject_consistency",
           "generalization_variance", "memorization", "memorization_base", "diversity")
KOHYA_MODULE = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"


# --- building the catalog -------------------------------------------------------------------------

def write_lora(path, seed: int, metadata: dict) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    save_file({f"{KOHYA_MODULE}.lora_down.weight": rng.standard_normal((4, 320)).astype(np.float16),
               f"{KOHYA_MODULE}.lora_up.weight": rng.standard_normal((320, 4)).astype(np.float16),
               f"{KOHYA_MODULE}.alpha": np.array(4.0, dtype=np.float16)}, str(path), metadata=metadata)


def png(colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, format="PNG")
    return out.getvalue()


def record(rid: str, prompt: str, seed: int, stack: list[dict], *, tag: str = "") -> dict:
    return {"schema": R.RECORD_SCHEMA, "id": rid, "source": "eval", "prompt": (prompt + " " + tag).strip(),
            "clean_prompt": prompt, "negative_prompt": "blurry", "seed": seed, "steps": 2, "cfg": 5.0,
            "width": 32, "height": 32, "scheduler": {"name": "DDIMScheduler", "config": {}},
            "base": {"ref": "tiny-sd1", "family": "sd1", "sha256": "ab" * 32}, "stack": stack, "embeddings": [],
            "dtype": "float32", "device": "cpu", "libraries": {"loradex": "0.1.0"}, "image_sha256": "cd" * 32,
            "created_at": "2026-12-01T10:00:00+00:00", "created_by": "tester"}


def metric(value: float) -> dict:
    return {"value": value, "model": "tiny-clip", "definition": "a test metric", "status": "computed"}


def make_card(version, samples: list[dict], clip_t: float) -> dict:
    checks = {name: {"status": "pass", "note": "automatic", "source": "auto"}
              for name in ("prompt_drift", "style_mismatch", "artifacts", "copyright_portrait")}
    checks["review_failure"] = {"status": "not-checked", "note": "no human verdicts recorded", "source": "auto"}
    metrics = {name: metric(0.5) for name in METRICS}
    metrics["clip_t"] = metric(clip_t)
    thresholds = {"clip_t": {"min": 0.3}}
    passed, reasons = card_verdict(metrics, checks, thresholds)
    return {"schema": "loradex.eval-card/1", "version": {"ref": version.ref, "sha256": version.sha256},
            "base": {"ref": "tiny-sd1", "family": "sd1", "sha256": "ab" * 32},
            "prompt_suite": {"file": "suite.txt", "sha256": "ef" * 32, "prompts": PROMPTS}, "seeds": SEEDS,
            "settings": {"steps": 2, "cfg": 5.0, "width": 32, "height": 32, "weight": 0.8},
            "embedder": {"name": "tiny-clip", "model": "tiny-clip"}, "samples": samples, "metrics": metrics,
            "failure_checks": checks, "human_verdicts": [], "candidates": [],
            "technical_note": {"method": "lora", "rank": 4, "alpha": 4.0, "target_modules": ["to_q"], "note": ""},
            "thresholds": thresholds, "passed": passed, "reasons": reasons,
            "created_at": "2026-12-01T10:00:00+00:00", "created_by": "tester"}


def build_home(root, *, hostile: bool = False) -> dict:
    """The same catalog every time (fixed record ids), so two homes can be compared card for card."""
    catalog = Catalog(home=root)
    meta = {"ss_base_model_version": "sd_v1", "ss_network_module": "networks.lora", "ss_network_dim": "4",
            "ss_network_alpha": "4.0", "ss_output_name": HOSTILE if hostile else "style",
            "modelspec.title": "Style LoRA", "modelspec.architecture": "stable-diffusion-v1/lora"}
    versions, ids = [], {}
    for i, number in enumerate(("1.0.0", "1.1.0")):
        path = root.parent / f"style-{number}{'-hostile' if hostile else ''}.safetensors"
        if not path.exists():  # safetensors orders header metadata at random: homes share the files
            write_lora(path, i, meta)
        triggers = ["xyzstyle"] + ([HOSTILE] if hostile else [])
        versions.append(add_file(catalog, path, name="style", version=number, triggers=triggers,
                                 message=HOSTILE if hostile else f"release {number}").version)
    colour = 10
    for p, prompt in enumerate(PROMPTS):
        for seed in SEEDS:
            base_id = f"base{p}s{seed}xxxxxxxx"
            R.store_record(catalog, record(base_id, prompt, seed, []), png((colour, 0, 0)))
            ids[("base", p, seed)] = base_id
            colour += 10
            for v in versions:
                rid = f"v{v.version.replace('.', '')}p{p}s{seed}xxxxxx"
                stack = [{"requested": v.ref, "ref": v.ref, "sha256": v.sha256, "te_weight": 0.8, "unet_weight": 0.8}]
                text = HOSTILE if hostile and p == 0 else prompt
                R.store_record(catalog, record(rid, text, seed, stack, tag=f"<lora:{v.ref}:0.8>"), png((0, colour, 0)))
                ids[(v.version, p, seed)] = rid
                colour += 10
    # a record of 1.0.0 on a seed 1.1.0 was never rendered with: no compare row
    lone = versions[0]
    R.store_record(catalog, record("lonely-seed-99xx", PROMPTS[0], 99, [{"requested": lone.ref, "ref": lone.ref,
                   "sha256": lone.sha256, "te_weight": 0.8, "unet_weight": 0.8}]), png((1, 2, 3)))
    cards = {}
    for v, clip_t in zip(versions, (0.41, 0.22)):
        samples = [{"prompt_index": p, "seed": s, "with_adapter": ids[(v.version, p, s)],
                    "without_adapter": ids[("base", p, s)]} for p in range(len(PROMPTS)) for s in SEEDS]
        cards[v.version] = R.store_card(catalog, make_card(v, samples, clip_t))
    R.set_alias_policy(catalog, "style", "production", require_pass=True)
    return {"catalog": catalog, "versions": versions, "ids": ids, "cards": cards}


def app_for(catalog, *, public_read: bool = False):
    from loradex.registry.server.app import build_server_app

    assert {alias_forms, compare_pages, review_forms, version_pages}  # registered by importing them
    return build_server_app(catalog, ADMIN, public_read=public_read)


CSRF_RE = re.compile(r'name="csrf" value="([^"]*)"')


def sign_in(client: TestClient, token: str) -> None:
    page = client.get("/ui/login")
    assert page.status_code == 200
    answer = client.post("/ui/login", data={"csrf": CSRF_RE.search(page.text).group(1), "token": token, "next": "/"},
                         follow_redirects=False)
    assert answer.status_code == 303, answer.text


def csrf_of(client: TestClient, url: str) -> str:
    page = client.get(url)
    assert page.status_code == 200, page.text
    return CSRF_RE.search(page.text).group(1)


@pytest.fixture
def home(tmp_path):
    built = build_home(tmp_path / "home")
    catalog = built["catalog"]
    built["tokens"] = {"ana": create_token(catalog, "write", name="ana").secret,
                       "reader": create_token(catalog, "read", name="reader").secret,
                       "team": create_token(catalog, "write", namespace="team", name="teamwriter").secret}
    return built


def client_as(home, who: str | None, *, public_read: bool = False) -> TestClient:
    client = TestClient(app_for(home["catalog"], public_read=public_read))
    if who is not None:
        sign_in(client, ADMIN if who == "admin" else home["tokens"][who])
    return client


def text_of(answer) -> str:
    return html.unescape(answer.text)


# --- version page ---------------------------------------------------------------------------------

def test_version_page_shows_hashes_triggers_samples_and_card(home):
    client = client_as(home, "reader")
    v = home["versions"][0]
    answer = client.get("/ui/versions/style/1.0.0")
    assert answer.status_code == 200
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    page = text_of(answer)
    assert '<code id="prompt-line">&lt;lora:style@1.0.0:0.8&gt;</code>' in answer.text
    for value in (v.sha256, v.autov1, v.autov2, v.autov3):
        assert value and value in page
    assert "xyzstyle" in page and "release 1.0.0" in page
    assert re.search(r"<th>rank</th><td>4</td>", answer.text) and "to_q" in page  # probe facts
    assert "<details" in answer.text and "ss_network_dim" in page and "modelspec.title" in page
    ids = home["ids"]
    for p in range(len(PROMPTS)):
        for s in SEEDS:
            rid = ids[("1.0.0", p, s)]
            assert f'id="sample-{rid}"' in answer.text and f"loradex render {rid}" in page
            assert ids[("1.1.0", p, s)] not in page  # another version's records are not its samples
    assert "DDIMScheduler" in page and "tiny-sd1" in page and "style@1.0.0</code> te 0.8 / unet 0.8" in page
    card = home["cards"]["1.0.0"]
    assert f"Evaluation card #{card.id}" in page and 'id="card-verdict" class="badge pass">PASS' in answer.text
    assert re.search(r'data-metric="clip_t"><td>clip_t</td><td class="mono">0\.4100</td>\s*<td>min 0\.3</td><td>inside',
                     answer.text)
    assert 'data-check="review_failure"' in answer.text and "no human verdicts recorded" in page
    # a reader sees no alias forms; the alias name is the default link target
    assert 'id="promote-production"' not in answer.text
    assert client.get("/ui/versions/style/production").status_code == 404  # no such alias yet
    assert client.get("/ui/versions/nosuch/1.0.0").status_code == 404
    assert client.get("/ui/versions/style/9.9.9").status_code == 404
    assert client.get("/ui/versions/Bad%20Name/1.0.0").status_code == 400


def test_version_page_download_respects_read_rights(home, tmp_path):
    v = home["versions"][0]
    reader = client_as(home, "reader")
    answer = reader.get("/ui/download/style/1.0.0")
    assert answer.status_code == 200
    assert answer.content == home["catalog"].blobs.path_for(v.sha256).read_bytes()
    assert "attachment" in answer.headers["content-disposition"]
    anonymous = client_as(home, None)
    refused = anonymous.get("/ui/download/style/1.0.0", follow_redirects=False)
    assert refused.status_code == 303 and refused.headers["location"].startswith("/ui/login")
    public = client_as(home, None, public_read=True)
    assert public.get("/ui/download/style/1.0.0").content == answer.content


# --- compare --------------------------------------------------------------------------------------

def rows_of(page: str) -> list[list[str]]:
    """The record ids per compare row, in column order (base column first when present)."""
    body = page.split('id="compare-grid"', 1)[1].split("</table>", 1)[0]
    return [re.findall(r'data-record="([^"]+)"', chunk) for chunk in body.split('<tr class="compare-row"')[1:]]


def test_compare_shows_versions_side_by_side_on_the_same_records(home):
    client = client_as(home, "reader")
    answer = client.get("/ui/compare/style?v=1.0.0&v=1.1.0")
    assert answer.status_code == 200
    ids = home["ids"]
    rows = rows_of(answer.text)
    expected = [[ids[("base", p, s)], ids[("1.0.0", p, s)], ids[("1.1.0", p, s)]]
                for p in sorted(range(len(PROMPTS)), key=lambda i: PROMPTS[i]) for s in SEEDS]
    assert rows == expected
    assert "lonely-seed-99xx" not in answer.text  # rendered with one version only
    assert answer.text.count('class="flip"') == len(expected)  # two versions: a flip view per row
    deltas = answer.text.split('id="metric-deltas"', 1)[1].split("</table>", 1)[0]
    assert re.search(r'data-metric="clip_t"><td>clip_t</td>\s*<td class="mono">0\.4100</td>'
                     r'<td class="mono">0\.2200 <span class="delta down">\(-0\.1900\)</span>', deltas)
    # the reverse order: columns swap, the delta changes sign
    swapped = client.get("/ui/compare/style?v=1.1.0&v=1.0.0")
    assert rows_of(swapped.text) == [[r[0], r[2], r[1]] for r in expected]
    assert "(+0.1900)" in swapped.text
    assert client.get("/ui/compare/style?v=1.0.0").status_code == 400
    assert client.get("/ui/compare/style?v=1.0.0&v=1.0.0").status_code == 400
    assert client.get("/ui/compare/style?v=1.0.0&v=1.1.0&v=1.0.0&v=1.1.0&v=1.0.0").status_code == 400
    assert rows_of(client.get("/ui/compare/style").text) == expected  # default: the two newest


# --- review ---------------------------------------------------------------------------------------

def _without_times(card: dict) -> dict:
    card = copy.deepcopy(card)
    card.pop("created_at")
    for entry in card["human_verdicts"] + card["candidates"] + list(card["failure_checks"].values()):
        entry.pop("at", None)
    return card


def test_review_posted_on_the_web_is_the_card_loradex_review_makes(home, tmp_path):
    from loradex.cli.app import app

    ids = home["ids"]
    a, b, c = ids[("1.0.0", 0, 0)], ids[("1.0.0", 0, 1)], ids[("1.0.0", 1, 0)]
    client = client_as(home, "ana")
    form = {"csrf": csrf_of(client, "/ui/review/style/1.0.0"), f"verdict:{a}": "good",
            f"reason:{a}": "crisp fur", f"verdict:{c}": "bad", f"reason:{c}": "melted roof",
            "choose": b, "over": [a], "choose_reason": "best light", "check:artifacts": "fail",
            "check_note": "hands"}
    answer = client.post("/ui/review/style/1.0.0", data=form, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    web = R.latest_card(home["catalog"], "style@1.0.0")
    assert answer.headers["location"] == f"/ui/review/style/1.0.0?stored={web.id}"
    assert web.id > home["cards"]["1.1.0"].id and web.card["revises"]["card_id"] == home["cards"]["1.0.0"].id

    other = build_home(tmp_path / "other")  # the same catalog, reviewed on the command line
    result = CliRunner().invoke(app, ["review", "style@1.0.0", "--verdict", f"{a}=good:crisp fur",
                                      "--verdict", f"{c}=bad:melted roof", "--choose", b, "--over", a,
                                      "--reason", "best light", "--check", "artifacts=fail", "--note", "hands",
                                      "--reviewer", "ana", "--home", str(other["catalog"].home)])
    assert result.exit_code == 0, result.output
    cli_card = R.latest_card(other["catalog"], "style@1.0.0")
    assert _without_times(web.card) == _without_times(cli_card.card)
    assert web.card["failure_checks"]["artifacts"]["by"] == "ana" and not web.passed
    assert web.card["failure_checks"]["review_failure"]["status"] == "fail"  # c rejected
    page = client.get(answer.headers["location"]).text
    assert f"Stored card revision #{web.id}" in page and "melted roof" in page


def test_review_errors_are_shown_on_the_page_and_store_nothing(home):
    ids = home["ids"]
    client = client_as(home, "ana")
    csrf = csrf_of(client, "/ui/review/style/1.0.0")
    before = R.latest_card(home["catalog"], "style@1.0.0").id
    bad = [({}, "nothing to review"),
           ({"choose": ids[("1.0.0", 0, 0)], "over": ids[("1.0.0", 0, 1)]}, "--choose needs --reason"),
           ({f"verdict:{ids[('1.1.0', 0, 0)]}": "good"}, "is not one of this version"),
           ({f"verdict:{ids[('1.0.0', 0, 0)]}": "great"}, "good, bad or neutral"),
           ({"check:vibes": "fail"}, "unknown failure check"),
           ({"check:artifacts": "maybe"}, "status must be"),
           ({f"reason:{ids[('1.0.0', 0, 0)]}": "why"}, "needs a verdict")]
    for fields, message in bad:
        answer = client.post("/ui/review/style/1.0.0", data={"csrf": csrf, **fields}, follow_redirects=False)
        assert answer.status_code == 400, (fields, answer.status_code)
        assert message in text_of(answer) and 'id="review-error"' in answer.text, fields
    assert R.latest_card(home["catalog"], "style@1.0.0").id == before


# --- promote / roll back --------------------------------------------------------------------------

def move(client, version: str, reason: str = "ship it", *, alias: str = "production", force: bool = False,
         csrf: str | None = None):
    token = csrf if csrf is not None else csrf_of(client, f"/ui/versions/style/{version}")
    data = {"csrf": token, "version": version, "reason": reason, **({"force": "1"} if force else {})}
    return client.post(f"/ui/aliases/style/{alias}/move", data=data, follow_redirects=False)


def test_gate_refusal_is_shown_recorded_and_only_an_admin_forces_it(home):
    catalog = home["catalog"]
    ana = client_as(home, "ana")
    refused = move(ana, "1.1.0", "try the new one")
    assert refused.status_code == 409
    page = text_of(refused)
    assert 'id="refusal"' in refused.text and "cannot become 'production'" in page
    assert f"eval card #{home['cards']['1.1.0'].id} failed" in page and "clip_t = 0.2200 < min 0.3" in page
    history = catalog.alias_history("style", "production")
    assert [(e.action, e.to_version, e.by) for e in history] == [("refused", "1.1.0", "ana")]
    assert history[0].reason.startswith("try the new one [gate refused:")
    assert catalog.aliases("style") == []

    forced_by_writer = move(ana, "1.1.0", "force it", force=True)
    assert forced_by_writer.status_code == 403 and "admin token" in text_of(forced_by_writer)
    assert len(catalog.alias_history("style", "production")) == 1 and catalog.aliases("style") == []

    admin = client_as(home, "admin")
    forced = move(admin, "1.1.0", "art director signed off", force=True)
    assert forced.status_code == 303 and forced.headers["location"] == "/ui/versions/style/1.1.0?moved=production"
    assert [(a.name, a.version) for a in catalog.aliases("style")] == [("production", "1.1.0")]
    last = catalog.alias_history("style", "production")[-1]
    assert (last.action, last.by) == ("set", ADMIN_TOKEN_NAME)
    assert last.reason.startswith("art director signed off [gate overridden with --force:")
    assert "production now points at 1.1.0" in admin.get(forced.headers["location"]).text
    # a move without a reason is refused before anything happens
    assert move(ana, "1.0.0", "   ").status_code == 400
    assert len(catalog.alias_history("style", "production")) == 2


def test_rollback_from_the_web(home):
    catalog = home["catalog"]
    ana, admin = client_as(home, "ana"), client_as(home, "admin")
    assert move(ana, "1.0.0", "first release").status_code == 303  # passes the gate
    assert move(admin, "1.1.0", "forced", force=True).status_code == 303
    version_page = ana.get("/ui/versions/style/1.1.0").text  # production points here: a rollback form
    assert 'id="rollback-production"' in version_page and 'id="rollback-production"' not in \
        ana.get("/ui/versions/style/1.0.0").text
    csrf = CSRF_RE.search(version_page).group(1)
    no_reason = ana.post("/ui/aliases/style/production/rollback", data={"csrf": csrf, "reason": ""},
                         follow_redirects=False)
    assert no_reason.status_code == 400
    answer = ana.post("/ui/aliases/style/production/rollback", data={"csrf": csrf, "reason": "colours broke"},
                      follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/adapters/style")
    assert [(a.name, a.version) for a in catalog.aliases("style")] == [("production", "1.0.0")]
    last = catalog.alias_history("style", "production")[-1]
    assert (last.action, last.from_version, last.to_version, last.by, last.reason) == \
        ("rollback", "1.1.0", "1.0.0", "ana", "colours broke")
    landed = ana.get(answer.headers["location"]).text  # where the form leads: the rollback is said
    assert 'id="flash">production rolled back: it now points at 1.0.0<' in landed
    # the adapter page's alias timeline carries the same form (templates/alias_forms.html)
    adapter_page = ana.get("/ui/adapters/style").text
    assert 'id="rollback-production"' in adapter_page and 'action="/ui/aliases/style/production/rollback"' in adapter_page
    assert 'id="rollback-production"' not in client_as(home, "reader").get("/ui/adapters/style").text
    # nothing earlier to roll back to: a one-line refusal, not a 500
    again = ana.post("/ui/aliases/style/production/rollback", data={"csrf": csrf, "reason": "again"},
                     follow_redirects=False)
    assert again.status_code == 400 and "no earlier version" in text_of(again)


# --- who may post ---------------------------------------------------------------------------------

def test_anonymous_public_read_browses_but_cannot_post(home):
    catalog = home["catalog"]
    anonymous = client_as(home, None, public_read=True)
    page = anonymous.get("/ui/versions/style/1.0.0")
    assert page.status_code == 200 and 'id="promote-production"' not in page.text and "<form" not in \
        page.text.split('id="content"', 1)[1]
    review_page = anonymous.get("/ui/review/style/1.0.0")
    assert review_page.status_code == 200 and 'id="review-form"' not in review_page.text
    for url, data in (("/ui/aliases/style/production/move", {"version": "1.0.0", "reason": "r", "csrf": ""}),
                      ("/ui/aliases/style/production/rollback", {"reason": "r", "csrf": ""}),
                      ("/ui/review/style/1.0.0", {"check:artifacts": "fail", "csrf": ""})):
        assert anonymous.post(url, data=data, follow_redirects=False).status_code == 403, url
    assert catalog.alias_history("style", "production") == []
    assert R.latest_card(catalog, "style@1.0.0").id == home["cards"]["1.0.0"].id


def test_posts_without_the_session_csrf_token_or_write_rights_are_refused(home):
    catalog = home["catalog"]
    ana = client_as(home, "ana")
    csrf_of(ana, "/ui/versions/style/1.0.0")
    assert move(ana, "1.0.0", csrf="").status_code == 403
    assert move(ana, "1.0.0", csrf="x" * 40).status_code == 403
    no_field = ana.post("/ui/aliases/style/production/move", data={"version": "1.0.0", "reason": "r"},
                        follow_redirects=False)
    assert no_field.status_code == 403
    # another session's token is not this session's
    admin = client_as(home, "admin")
    assert move(ana, "1.0.0", csrf=csrf_of(admin, "/ui/versions/style/1.0.0")).status_code == 403
    # a read token and a token limited to another namespace may not write here
    for who in ("reader", "team"):
        client = client_as(home, who)
        assert 'id="promote-production"' not in client.get("/ui/versions/style/1.0.0").text
        assert move(client, "1.0.0").status_code == 403, who
        review = client.post("/ui/review/style/1.0.0", data={"csrf": csrf_of(client, "/ui/review/style/1.0.0"),
                                                              "check:artifacts": "fail"}, follow_redirects=False)
        assert review.status_code == 403, who
    assert catalog.alias_history("style", "production") == []
    assert R.latest_card(catalog, "style@1.0.0").id == home["cards"]["1.0.0"].id
    assert move(ana, "1.0.0").status_code == 303  # the same form with its token goes through


# --- escaping -------------------------------------------------------------------------------------

def test_hostile_strings_render_inert(tmp_path):
    built = build_home(tmp_path / "hostile", hostile=True)
    catalog = built["catalog"]
    client = TestClient(app_for(catalog))
    sign_in(client, ADMIN)
    rid = built["ids"][("1.0.0", 0, 0)]
    csrf = csrf_of(client, "/ui/review/style/1.0.0")
    stored = client.post("/ui/review/style/1.0.0", data={"csrf": csrf, f"verdict:{rid}": "bad", f"reason:{rid}": HOSTILE},
                         follow_redirects=False)
    assert stored.status_code == 303
    refused = move(client, "1.1.0", HOSTILE)
    assert refused.status_code == 409
    pages = [client.get("/ui/versions/style/1.0.0"), client.get("/ui/compare/style?v=1.0.0&v=1.1.0"),
             client.get("/ui/review/style/1.0.0"), refused]
    for answer in pages:
        assert answer.status_code in (200, 409)
        assert "<script>alert" not in answer.text and "<img src=x" not in answer.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in answer.text
        assert "\u202e" not in answer.text and "[U+202E]gpj.exe" in answer.text  # bidi control shown, inert
        assert 'href="javascript' not in answer.text.lower() and "<script>" not in answer.text.replace(
            '<script src="/ui/static/evidence.js" defer></script>', "")
