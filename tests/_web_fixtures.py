"""A small catalog for the web app's tests (tests/test_web_core.py, the version/compare/review
pages' tests and the Chromium end-to-end tests), plus helpers to sign in.

    from _web_fixtures import web_catalog, web_app, signed_in_client, csrf_of, ADMIN_TOKEN

    wc = web_catalog(tmp_path / "home", tmp_path)   # WebCatalog (below)
    app = web_app(wc.catalog)                         # build_server_app with ADMIN_TOKEN, no rate limit
    client = signed_in_client(app, ADMIN_TOKEN)       # a TestClient holding a session cookie
    csrf = csrf_of(client.get("/").text)              # the session's CSRF token from any page

What ``web_catalog`` holds (names are stable; tests may rely on them):

- ``ink-style`` (kohya LoRA, sd1, trigger ``inkzk``, tags style=ink, subject=animals), versions
  1.0.0, 1.1.0, 2.0.0 (messages "first cut", "sharper lines", "new dataset"); a prompt record
  with a 48×48 PNG per version (``wc.records[ref]``, image blob ``wc.images[ref]``, seed 7, the same
  prompt for all three, plus a second seed 8 record for 1.0.0 and 1.1.0 — compare has two
  seeds); evaluation cards: 1.0.0 and 1.1.0 pass, 2.0.0 fails (``clip_t`` under its threshold).
  Alias ``production``: policy needs a passing card; set to 1.0.0, moved to 1.1.0, a refused move
  to 2.0.0 (recorded, reason "[gate refused: …]"), a rollback to 1.0.0, then 1.1.0 again.
  Alias ``staging`` on 2.0.0.
- ``ink-merge@1.0.0``: merged_from ink-style@1.1.0 and paper-texture@1.0.0 (recipe weights).
- ``ink-distilled@1.0.0``: trained_from ink-merge@1.0.0 (so ink-merge has a parent and a child).
- ``paper-texture@1.0.0``: pulled_from ``hf://someone/paper-texture`` (an external parent); a
  preview image (``extra.preview_sha256``, ``wc.preview``) and no records.
- ``neg-embed@1.0.0``: a textual inversion (kind ``embedding``), no images.
- Tokens: ``ADMIN_TOKEN`` (the server's admin token, passed to ``web_app``), ``wc.tokens``:
  "writer" (write, no namespace), "reader" (read), "ns-writer" (write, namespace "team").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from _hub_sync_fixtures import card_for
from _catalog_fixtures import tiny_safetensors
from loradex.merge.synthetic_adapters import write_random_kohya_lora
from loradex.registry.catalog import records as R
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.operations import RollbackAlias, move_alias
from loradex.registry.catalog.store import Catalog

ADMIN_TOKEN = "ldx_web-fixture-admin-token-0123456789"
PROMPT = "an ink drawing of a heron, inkzk"
CSRF_RE = re.compile(r'name="csrf" value="([^"]*)"')


@dataclass
class WebCatalog:
    catalog: Catalog
    home: Path
    refs: dict[str, str] = field(default_factory=dict)  # "ink-style@1.0.0" → sha256 of the file
    records: dict[str, list[str]] = field(default_factory=dict)  # ref → its prompt record ids
    images: dict[str, str] = field(default_factory=dict)  # ref → sha256 of its seed-7 record image
    preview: str = ""  # sha256 of paper-texture's preview image
    tokens: dict[str, str] = field(default_factory=dict)  # "writer" | "reader" | "ns-writer" → secret


def sample_png(record: dict, seed: int, shade: int) -> bytes:
    """A 48×48 block pattern (distinct per seed and shade) carrying the record's text chunks."""
    from PIL import Image

    from _evidence_fixtures import block_pattern

    img = block_pattern(seed * 31 + shade, 48)
    return R.png_with_record(Image.blend(img, Image.new("RGB", img.size, (shade, 40, 255 - shade)), 0.35), record)


def _record(ref: str, sha256: str, seed: int, shade: int, user: str = "alice") -> tuple[str, str]:
    from _evidence_fixtures import minimal_record

    name = ref.split("@")[0]
    record = minimal_record(prompt=f"{PROMPT} <lora:{ref}:0.8>", clean_prompt=PROMPT, seed=seed, width=48,
                            height=48, created_by=user,
                            stack=[{"requested": name, "ref": ref, "sha256": sha256, "te_weight": 0.8,
                                    "unet_weight": 0.8}])
    return record, sample_png(record, seed, shade)


def add_lora(catalog: Catalog, tmp: Path, name: str, version: str, seed: int, **options):
    src = write_random_kohya_lora(tmp / f"{name}-{version}.safetensors", rank=4, seed=seed,
                                  trigger=options.pop("trigger", None))
    return add_file(catalog, src, name=name, version=version, **options).version


def web_catalog(home: Path, tmp: Path, *, db_url: str | None = None) -> WebCatalog:
    """The catalog described in this module's docstring, at ``home`` (``tmp``: scratch files;
    ``db_url``: its database elsewhere, e.g. the ``pg_url`` fixture's PostgreSQL)."""
    from loradex.registry.server.tokens import create_token

    tmp.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(home, db_url=db_url)
    wc = WebCatalog(catalog, Path(home))
    messages = {"1.0.0": "first cut", "1.1.0": "sharper lines", "2.0.0": "new dataset"}
    for i, (version, message) in enumerate(messages.items()):
        v = add_lora(catalog, tmp, "ink-style", version, 10 + i, trigger="inkzk", message=message, user="alice",
                     description="Black ink line art with loose washes.", tags={"style": "ink", "subject": "animals"})
        wc.refs[v.ref] = v.sha256
        for seed in (7, 8) if version != "2.0.0" else (7,):
            record, png = _record(v.ref, v.sha256, seed, 60 * i + seed)
            stored = R.store_record(catalog, record, png)
            wc.records.setdefault(v.ref, []).append(record["id"])
            if seed == 7:
                wc.images[v.ref] = stored.image_blob
        base_record = wc.records[v.ref][0]
        card = card_for(v.ref, v.sha256, base_record, base_record)
        card["metrics"]["clip_t"] = {"value": 0.31 if version != "2.0.0" else 0.12, "status": "computed",
                                     "model": "test", "definition": "prompt agreement", "note": ""}
        card["thresholds"] = {"clip_t": {"min": 0.2}}
        card["passed"] = version != "2.0.0"
        card["reasons"] = [] if card["passed"] else ["clip_t 0.12 < 0.2"]
        R.store_card(catalog, card)
    R.set_alias_policy(catalog, "ink-style", "production", require_pass=True)
    move_alias(catalog, "ink-style@1.0.0", "production", "first release", user="alice")
    move_alias(catalog, "ink-style@1.1.0", "production", "cleaner lines", user="bob")
    try:
        move_alias(catalog, "ink-style@2.0.0", "production", "try the new dataset", user="carol")
    except R.PromotionRefused:
        pass
    else:
        raise AssertionError("the production gate should refuse ink-style@2.0.0 (its card fails)")
    catalog.apply([RollbackAlias("ink-style", "production", reason="customer report", user="bob")])
    move_alias(catalog, "ink-style@1.1.0", "production", "report was a false alarm", user="alice")
    move_alias(catalog, "ink-style@2.0.0", "staging", "for review", user="carol")

    paper = add_lora(catalog, tmp, "paper-texture", "1.0.0", 30, description="Rough paper grain.",
                     tags={"style": "texture"}, user="dave",
                     lineage=[{"relation": "pulled_from", "external_parent": "hf://someone/paper-texture"}])
    wc.refs[paper.ref] = paper.sha256
    from PIL import Image
    import io

    buf = io.BytesIO()
    Image.new("RGB", (640, 400), (222, 210, 180)).save(buf, "PNG")
    wc.preview = catalog.blobs.add_bytes(buf.getvalue()).hashes.sha256
    _set_extra(catalog, paper.ref, {"preview_sha256": wc.preview, "preview_type": "png"})

    merge = add_lora(catalog, tmp, "ink-merge", "1.0.0", 40, message="ink over paper", user="alice",
                     lineage=[{"relation": "merged_from", "parent": "ink-style@1.1.0", "recipe": {"weight": 0.7}},
                              {"relation": "merged_from", "parent": "paper-texture@1.0.0", "recipe": {"weight": 0.3}}])
    wc.refs[merge.ref] = merge.sha256
    distilled = add_lora(catalog, tmp, "ink-distilled", "1.0.0", 50, user="bob",
                         lineage=[{"relation": "trained_from", "parent": "ink-merge@1.0.0"}])
    wc.refs[distilled.ref] = distilled.sha256
    emb = tmp / "neg-embed.safetensors"
    emb.write_bytes(tiny_safetensors("emb_params", tuple(float(i % 7) / 7 for i in range(64)), {}))
    neg = add_file(catalog, emb, name="neg-embed", version="1.0.0", user="erin").version
    wc.refs[neg.ref] = neg.sha256
    for label, scope, ns in (("writer", "write", None), ("reader", "read", None), ("ns-writer", "write", "team")):
        wc.tokens[label] = create_token(catalog, scope, namespace=ns, name=label).secret
    return wc


def _set_extra(catalog: Catalog, ref: str, extra: dict) -> None:
    """Merge ``extra`` into a version's ``extra`` (what ``import`` does for a sidecar preview)."""
    from loradex.registry.catalog.refs import parse_ref
    from loradex.registry.catalog.store import resolve_in

    def run(s):
        row = resolve_in(s, parse_ref(ref))
        row.extra = {**(row.extra or {}), **extra}

    catalog.transact(run)


def web_app(catalog: Catalog, *, public_read: bool = False, admin_token: str | None = ADMIN_TOKEN):
    from loradex.registry.server.app import build_server_app

    return build_server_app(catalog, admin_token, public_read=public_read, rate_limit=None)


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry (the session's, or the sign-in form's)."""
    found = CSRF_RE.search(html)
    assert found, "no csrf field on the page"
    return found.group(1)


def sign_in(client, token: str, *, next_path: str = "/"):
    """Sign ``client`` in through the form (GET /ui/login for its CSRF cookie, then POST)."""
    csrf = csrf_of(client.get("/ui/login").text)
    return client.post("/ui/login", data={"token": token, "csrf": csrf, "next": next_path}, follow_redirects=False)


def signed_in_client(app, token: str = ADMIN_TOKEN, **client_options):
    """A ``fastapi.testclient.TestClient`` for ``app`` holding a session of ``token``."""
    from fastapi.testclient import TestClient

    client = TestClient(app, **client_options)
    answer = sign_in(client, token)
    assert answer.status_code == 303, answer.text[-500:]
    return client
