"""``loradex search`` (issue 18): ranking, filters and facets against a known catalog, every
indexed source found, the index kept in the catalog's own transactions, the migration that builds
it for an existing catalog, and hostile query text. Each test runs on SQLite (FTS5) and on
PostgreSQL (tsvector + GIN; marker ``postgres``, skipped where 127.0.0.1:5432 has none)."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from sqlalchemy import text

from _catalog_fixtures import fixture_path
from _evidence_fixtures import minimal_record
from loradex.registry.catalog import records as records_module
from loradex.registry.catalog.operations import AddVersion, MoveAlias, SoftDeleteVersion, move_alias
from loradex.registry.catalog.records import store_record
from loradex.registry.catalog.light_reads import LightReader, open_light_reader
from loradex.registry.catalog.search import SessionSQL, _search, parse_query, search_catalog
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import AlreadyExists, Conflict, UsageError

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _open(backend: str, home):
    if backend == "sqlite":
        return Catalog(home), lambda: None
    from _postgres import fresh_pg_database

    url, drop = fresh_pg_database()
    catalog = Catalog(home, db_url=url)
    return catalog, lambda: (catalog.engine.dispose(), drop())


def add(catalog, name, version=None, *, kind="lora", base="sd1", user="bob", **fields):
    digest = hashlib.sha256(f"{name}@{version}@{fields}".encode()).hexdigest()
    op = AddVersion(name=name, sha256=digest, autov1=digest[:8], autov2=digest[:10], autov3=digest[:12],
                    size=1000 + len(name), file_format="safetensors", kind=kind, base=base, version=version,
                    user=user, **fields)
    (result,) = catalog.apply([op])
    return result


FILLERS = [f"filler-{i:02d}" for i in range(12)]


def build_known(catalog) -> None:
    """The known catalog: six adapters with distinct text in each indexed source, and twelve
    fillers so that the searched words are rare (bm25 gives a word in half the documents no
    weight)."""
    add(catalog, "neon-city", "1.0.0", base="sdxl", description="Glowing cyberpunk streets at night",
        tags={"team": "art", "style": "neon"}, trigger_words=["ncstyle"])
    add(catalog, "neon-city", "1.1.0", base="sdxl", trigger_words=["glow lights"], message="sharper neon signs")
    add(catalog, "watercolor-portrait", "1.0.0", description="Soft paintings of faces", tags={"team": "art"},
        trigger_words=["wcport"],
        file_metadata={"ss_tag_frequency": json.dumps({"10_img": {"portrait": 5, "freckles": 2}})})
    add(catalog, "pixel-hero", "2.0.0", kind="lycoris", description="Sixteen-bit sprites", tags={"team": "games"},
        user="alice", file_metadata={"modelspec.title": "Pixel Hero Sprites",
                                     "modelspec.description": "retro arcade characters"})
    add(catalog, "bad-hands", "1.0.0", kind="embedding", base="sdxl", description="negative embedding for hands")
    add(catalog, "city-lights", "1.0.0", base="flux", description="night photography of a neon skyline")
    harbor = add(catalog, "harbor-scene", "1.0.0", kind="checkpoint", base="sd2")
    for name in FILLERS:
        add(catalog, name, "1.0.0", description="plain filler adapter")
    store_record(catalog, minimal_record(
        prompt="a fishing harbor at dawn, neon buoys <lora:harbor-scene@1.0.0:0.8>",
        stack=[{"requested": "harbor-scene@1.0.0", "ref": "harbor-scene@1.0.0", "sha256": harbor.sha256,
                "te_weight": 0.8, "unet_weight": 0.8}]))
    move_alias(catalog, "neon-city@1.0.0", "production")
    move_alias(catalog, "watercolor-portrait@1.0.0", "production")


@pytest.fixture(scope="module", params=BACKENDS)
def known(request, tmp_path_factory):
    catalog, close = _open(request.param, tmp_path_factory.mktemp("search-home"))
    build_known(catalog)
    yield catalog
    close()


@pytest.fixture(params=BACKENDS)
def fresh(request, tmp_path):
    """An empty catalog, for the tests that change it."""
    catalog, close = _open(request.param, tmp_path)
    yield catalog
    close()


def names(result) -> list[str]:
    return [h.name for h in result.hits]


# --- ranking and sources -----------------------------------------------------------------------------

def test_ranking_name_over_description_over_prompt(known):
    result = search_catalog(known, "neon")
    assert names(result) == ["neon-city", "city-lights", "harbor-scene"]
    assert result.total == 3
    assert result.hits[0].score > result.hits[1].score > result.hits[2].score > 0
    assert result.facets == {"kind": {"lora": 2, "checkpoint": 1}, "base": {"flux": 1, "sd2": 1, "sdxl": 1},
                             "tag": {"style=neon": 1, "team=art": 1}, "alias": {"production": 1}}


def test_each_indexed_source_is_found(known):
    cases = {
        "wcport": "watercolor-portrait",  # trigger word
        "freckles": "watercolor-portrait",  # ss_tag_frequency tag
        "arcade": "pixel-hero",  # modelspec.description
        "sprites": "pixel-hero",  # modelspec.title and description
        "fishing": "harbor-scene",  # the prompt of a prompt record
        "sharper": "neon-city",  # a version message
        "games": "pixel-hero",  # a tag value
        "cyberpunk": "neon-city",  # the description
        "hands": "bad-hands",  # name and description
    }
    for query, expected in cases.items():
        assert names(search_catalog(known, query)) == [expected], query


def test_matched_versions_are_the_ones_whose_text_matched(known):
    (hit,) = search_catalog(known, "sharper").hits
    assert (hit.matched_versions, hit.matched, hit.latest_version, hit.versions) == (("1.1.0",), 1, "1.1.0", 2)
    (hit,) = search_catalog(known, "cyberpunk").hits  # the adapter's description is in every version
    assert set(hit.matched_versions) == {"1.0.0", "1.1.0"} and hit.matched == 2


def test_hit_fields(known):
    assert names(search_catalog(known, "neon city")) == ["neon-city", "city-lights"]
    hit = search_catalog(known, "neon city").hits[0]
    assert (hit.name, hit.kind, hit.base, hit.description, hit.tags) == (
        "neon-city", "lora", "sdxl", "Glowing cyberpunk streets at night", {"team": "art", "style": "neon"})
    assert (hit.latest_version, hit.aliases, hit.triggers, hit.size) == (
        "1.1.0", {"production": "1.0.0"}, ("glow lights",), 1009)
    data = hit.to_dict()
    assert list(data) == ["name", "kind", "base", "description", "tags", "latest_version", "versions", "aliases",
                          "triggers", "size", "updated_at", "score", "matched_versions", "matched"]
    json.dumps(search_catalog(known, "neon").to_dict())  # JSON-ready


def test_words_must_all_match_and_the_last_is_a_prefix(known):
    assert names(search_catalog(known, "neon skyline")) == ["city-lights"]
    assert names(search_catalog(known, "pix")) == ["pixel-hero"]
    assert names(search_catalog(known, "pix ")) == []  # a finished word: no prefix
    assert names(search_catalog(known, "freck")) == ["watercolor-portrait"]
    assert names(search_catalog(known, "WÁTERCOLOR")) == ["watercolor-portrait"]  # case and accents folded
    assert names(search_catalog(known, "nothing-like-this")) == []


# --- filters, facets, sorting, paging ----------------------------------------------------------------

def test_filters(known):
    assert sorted(names(search_catalog(known, kind="lora", limit=50))) == sorted(
        ["neon-city", "watercolor-portrait", "city-lights", *FILLERS])
    assert sorted(names(search_catalog(known, base="sdxl"))) == ["bad-hands", "neon-city"]
    assert sorted(names(search_catalog(known, tags={"team": "art"}))) == ["neon-city", "watercolor-portrait"]
    assert names(search_catalog(known, tags={"team": "art", "style": "neon"})) == ["neon-city"]
    assert names(search_catalog(known, tags={"team": "nobody"})) == []
    assert sorted(names(search_catalog(known, alias="production"))) == ["neon-city", "watercolor-portrait"]
    assert names(search_catalog(known, created_by="alice")) == ["pixel-hero"]
    assert names(search_catalog(known, "neon", kind="lora", base="flux")) == ["city-lights"]


def test_trigger_filter_matches_a_whole_trigger_of_the_matching_version(known):
    (hit,) = search_catalog(known, trigger="NCSTYLE").hits
    assert (hit.name, hit.matched_versions) == ("neon-city", ("1.0.0",))
    (hit,) = search_catalog(known, trigger="Glow Lights").hits
    assert hit.matched_versions == ("1.1.0",)
    assert names(search_catalog(known, trigger="glow")) == []  # part of a trigger is not the trigger
    (hit,) = search_catalog(known, "sharper", trigger="ncstyle").hits  # the adapter has both …
    assert (hit.name, hit.matched_versions, hit.matched) == ("neon-city", (), 0)  # … no one version has
    (hit,) = search_catalog(known, "neon", trigger="ncstyle").hits
    assert hit.matched_versions == ("1.0.0",)  # 1.1.0 has the word but not the trigger


def test_facets_count_the_whole_matching_set(known):
    result = search_catalog(known, limit=1)
    assert result.total == 18 and len(result.hits) == 1
    assert result.facets == {
        "kind": {"lora": 15, "checkpoint": 1, "embedding": 1, "lycoris": 1},
        "base": {"sd1": 14, "sdxl": 2, "flux": 1, "sd2": 1},
        "tag": {"team=art": 2, "style=neon": 1, "team=games": 1},
        "alias": {"production": 2},
    }


def test_sorts_and_pages(known):
    by_name = names(search_catalog(known, sort="name", limit=50))
    assert by_name == sorted(["neon-city", "watercolor-portrait", "pixel-hero", "bad-hands", "city-lights",
                              "harbor-scene", *FILLERS])
    added = ["neon-city", "watercolor-portrait", "pixel-hero", "bad-hands", "city-lights", "harbor-scene", *FILLERS]
    assert names(search_catalog(known, sort="updated", limit=50)) == added[::-1]
    assert names(search_catalog(known, limit=50)) == added[::-1]  # relevance without words: newest first
    by_name_neon = search_catalog(known, "neon", sort="name")
    assert names(by_name_neon) == ["city-lights", "harbor-scene", "neon-city"] and by_name_neon.total == 3
    assert {h.score for h in by_name_neon.hits} == {0.0}  # not scored when not sorted by relevance
    pages = [names(search_catalog(known, sort="name", limit=5, offset=o)) for o in range(0, 20, 5)]
    assert sum(pages, []) == by_name and [len(p) for p in pages] == [5, 5, 5, 3]


def test_bad_filters_are_usage_errors(known):
    for kwargs in ({"kind": "nope"}, {"base": "sd9"}, {"sort": "random"}, {"limit": 0}, {"limit": 10_000},
                   {"offset": -1}, {"tags": {"": "x"}}, {"alias": "a" * 500}, {"trigger": "***"}):
        with pytest.raises(UsageError):
            search_catalog(known, "neon", **kwargs)


HOSTILE = ['"', '""', "'", "*", "neon*", '"neon', "neon\"", "AND", "OR", "NOT neon", "neon OR", "NEAR(neon city)",
           "name: neon", "{name triggers}: neon", "^neon", "-neon", "+neon", "(", ")", "()", "neon)", "a:*",
           "!neon", "neon & city", "neon | city", "neon <-> city", "'neon':*", "neon' OR '1'='1", "%", "_", "\\",
           "\x00", "ne\x00on", "\u202eneon", "🙂", "\ud800", "x" * 10_000, "neon " * 2_000,
           " ".join(f"w{i}" for i in range(5_000)), "é" * 10_000, "\n\t\r", "; DROP TABLE versions; --"]


def test_hostile_query_text_never_errors(known):
    for query in HOSTILE:
        result = search_catalog(known, query)
        assert result.total == len(result.hits) <= 20, repr(query[:40])
        assert len(result.terms) <= 16
    for query in ('"neon', "neon\"", "^neon", "-neon", "+neon", "neon)", "ne\x00on", "!neon", "(neon)"):
        assert names(search_catalog(known, query))[:1] == ["neon-city"], repr(query)
    for kwargs in ({"trigger": "'\"*"}, {"alias": "'; DROP TABLE aliases; --"}, {"created_by": "\x00%"},
                   {"tags": {"k\x00": "%"}}, {"alias": "%"}, {"created_by": "_"}):
        try:
            result = search_catalog(known, "neon", **kwargs)
        except UsageError:
            continue
        assert result.hits == ()
    assert names(search_catalog(known, "neon")) == ["neon-city", "city-lights", "harbor-scene"]  # intact


# --- the index follows every change, in the same transaction -------------------------------------------

def _docs(catalog) -> list:
    return catalog.read(lambda s: s.execute(text(
        "SELECT version_id, adapter_id, trigger_key, triggers, metadata, message, prompts FROM search_versions "
        "ORDER BY version_id")).all() + s.execute(text(
        "SELECT adapter_id, name, kind, base, latest_version_id, live_versions FROM search_adapters "
        "ORDER BY adapter_id")).all() + s.execute(text("SELECT adapter_id, tag FROM search_tags ORDER BY 1, 2")).all())


def test_add_indexes_in_the_same_transaction(fresh):
    add(fresh, "zebra-stripes", "1.0.0", description="black and white")
    op = AddVersion(name="okapi", sha256="ab" * 32, autov1=None, autov2="ab" * 5, autov3=None, size=1,
                    file_format="safetensors", kind="lora", description="striped legs", version="1.0.0")

    def inside(s):
        op.apply(s, fresh)
        return names(_search(SessionSQL(s), parse_query("striped"), "striped"))

    assert fresh.transact(inside) == ["okapi"]  # visible inside the writing transaction
    before = _docs(fresh)
    duplicate = AddVersion(name="zebra-stripes", sha256="cd" * 32, autov1=None, autov2="cd" * 5, autov3=None,
                           size=1, file_format="safetensors", kind="lora", version="1.0.0")
    other = AddVersion(name="giraffe", sha256="ef" * 32, autov1=None, autov2="ef" * 5, autov3=None, size=1,
                       file_format="safetensors", kind="lora", description="long neck")
    with pytest.raises(AlreadyExists):
        fresh.apply([other, duplicate])  # giraffe is indexed, then the transaction fails
    assert names(search_catalog(fresh, "neck")) == []
    assert _docs(fresh) == before


def test_new_tags_or_description_reach_every_version(fresh):
    add(fresh, "moody", "1.0.0", message="first")
    add(fresh, "moody", "1.1.0", message="second")
    assert names(search_catalog(fresh, "gloomy")) == []
    add(fresh, "moody", "1.2.0", tags={"feel": "gloomy"}, description="rain and fog")
    (hit,) = search_catalog(fresh, "gloomy").hits
    assert (hit.matched, set(hit.matched_versions)) == (3, {"1.0.0", "1.1.0", "1.2.0"})
    assert search_catalog(fresh, "fog").hits[0].matched == 3


def test_soft_delete_leaves_the_index(fresh):
    add(fresh, "fading", "1.0.0", message="early draft")
    add(fresh, "fading", "1.1.0", message="final cut")
    add(fresh, "lonely", "1.0.0", message="only one")
    move_alias(fresh, "fading@1.1.0", "production")
    before = _docs(fresh)
    with pytest.raises(Conflict):  # an alias points at it: nothing changes
        fresh.apply([SoftDeleteVersion("fading@1.1.0")])
    assert _docs(fresh) == before
    fresh.apply([SoftDeleteVersion("fading@1.1.0", force=True)])
    assert names(search_catalog(fresh, "final")) == []
    (hit,) = search_catalog(fresh, "fading").hits
    assert (hit.latest_version, hit.versions, hit.aliases) == ("1.0.0", 1, {})
    assert search_catalog(fresh, alias="production").total == 0
    fresh.apply([SoftDeleteVersion("lonely@1.0.0")])  # its last version: the adapter leaves the results
    assert names(search_catalog(fresh, "lonely")) == [] and search_catalog(fresh).total == 1


def test_stored_record_prompts_are_indexed_in_its_transaction(fresh, monkeypatch):
    version = add(fresh, "painter", "1.0.0")
    stack = [{"requested": "painter", "ref": "painter@1.0.0", "sha256": version.sha256,
              "te_weight": 1.0, "unet_weight": 1.0}]
    before = _docs(fresh)

    def broken(*args, **kwargs):
        raise RuntimeError("after the index was written")

    monkeypatch.setattr(records_module, "PromptRecord", broken)
    with pytest.raises(RuntimeError):
        store_record(fresh, minimal_record(prompt="a lighthouse in fog", stack=stack))
    monkeypatch.undo()
    assert names(search_catalog(fresh, "lighthouse")) == [] and _docs(fresh) == before
    store_record(fresh, minimal_record(prompt="a lighthouse in fog", stack=stack))
    assert names(search_catalog(fresh, "lighthouse")) == ["painter"]
    store_record(fresh, minimal_record(prompt="a windmill", stack=stack))
    assert names(search_catalog(fresh, "windmill")) == ["painter"]
    assert names(search_catalog(fresh, "lighthouse")) == ["painter"]


def test_alias_moves_show_in_filters_and_facets(fresh):
    add(fresh, "mover", "1.0.0")
    add(fresh, "mover", "1.1.0")
    add(fresh, "still", "1.0.0")
    bad = AddVersion(name="still", sha256="00" * 32, autov1=None, autov2="00" * 5, autov3=None, size=1,
                     file_format="safetensors", kind="lora", version="1.0.0")
    with pytest.raises(AlreadyExists):
        fresh.apply([MoveAlias("mover@1.0.0", "staging"), bad])
    assert search_catalog(fresh, alias="staging").total == 0
    move_alias(fresh, "mover@1.0.0", "staging")
    (hit,) = search_catalog(fresh, alias="staging").hits
    assert hit.aliases == {"staging": "1.0.0"}
    move_alias(fresh, "mover@1.1.0", "staging")
    result = search_catalog(fresh, "mover")
    assert result.hits[0].aliases == {"staging": "1.1.0"} and result.facets["alias"] == {"staging": 1}


# --- the migration builds the index for an existing catalog ---------------------------------------------

def test_migration_fills_the_index_of_a_0003_catalog(loradex_home):
    shutil.copyfile(fixture_path("0003_serve_tokens"), loradex_home / "catalog.db")
    catalog = Catalog(loradex_home)  # migrates 0003 → head, building the index
    assert names(search_catalog(catalog, "watercolour")) == ["style"]
    assert names(search_catalog(catalog, "harbour")) == ["style"]  # the fixture's prompt record
    (hit,) = search_catalog(catalog, trigger="wtrclr").hits
    assert (hit.matched_versions, hit.latest_version, hit.aliases) == (
        ("1.1.0", "1.0.0"), "1.1.0", {"production": "1.1.0", "staging": "1.0.0"})
    assert names(search_catalog(catalog, "2.0.0 removed")) == []
    assert sorted(names(search_catalog(catalog))) == ["blend", "neg", "style"]


def _alembic(catalog, action: str, target: str) -> None:
    from alembic import command

    cfg = catalog._alembic_config()
    with catalog.engine.connect().execution_options(loradex_write=True) as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, target)
        conn.commit()


def test_downgrade_then_upgrade_rebuilds_the_index(fresh):
    build_known(fresh)
    expected = [(h.name, h.matched_versions) for h in search_catalog(fresh, "neon").hits]
    _alembic(fresh, "downgrade", "0003_serve_tokens")
    assert fresh.schema_revision() == "0003_serve_tokens"
    fresh.read(lambda s: s.execute(text("SELECT count(*) FROM versions")).scalar())
    _alembic(fresh, "upgrade", "head")
    assert [(h.name, h.matched_versions) for h in search_catalog(fresh, "neon").hits] == expected
    assert names(search_catalog(fresh, "fishing")) == ["harbor-scene"]
    assert search_catalog(fresh).total == 18


# --- the command --------------------------------------------------------------------------------------

def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    from loradex.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


# Searches through both drivers: (query, filters). Every filter, every sort, pages, prefixes,
# words spread over versions, and queries that find nothing.
PARITY_SEARCHES = [
    ("", {}), ("neon", {}), ("neon ", {}), ("ne", {}), ("neon", {"sort": "updated"}), ("neon", {"sort": "name"}),
    ("neon", {"limit": 1}), ("neon", {"limit": 2, "offset": 1}), ("ncstyle sharper", {}), ("glow lights", {}),
    ("harbor", {}), ("buoys", {}), ("freckles", {}), ("arcade", {"kind": "lycoris"}), ("", {"base": "sdxl"}),
    ("", {"tags": {"team": "art"}}), ("", {"alias": "production", "sort": "name"}), ("", {"trigger": "Glow Lights"}),
    ("neon", {"trigger": "ncstyle"}), ("", {"created_by": "alice"}), ("filler", {"limit": 5, "offset": 3}),
    ("nothing-like-this", {}), ('"*) OR (', {"trigger": "<script>"}), ("filler", {"sort": "name", "offset": 50}),
]


def test_light_reader_searches_as_catalog(tmp_path):
    """``loradex search`` on the default SQLite catalog runs the same statements through sqlite3
    (``LightReader.read_sql``): every answer is the one the SQLAlchemy session gives."""
    catalog = Catalog(tmp_path)
    build_known(catalog)
    reader = open_light_reader(tmp_path)
    assert isinstance(reader, LightReader)
    for query, filters in PARITY_SEARCHES:
        light = search_catalog(reader, query, **filters)
        assert light.to_dict() == search_catalog(catalog, query, **filters).to_dict(), (query, filters)
    assert reader._catalog is None  # every answer came from sqlite3, none handed over
    neon = search_catalog(reader, "neon")
    assert (names(neon), neon.total) == (["neon-city", "city-lights", "harbor-scene"], 3)
    assert neon.hits[0].updated_at.tzinfo is not None and neon.hits[0].aliases == {"production": "1.0.0"}
    assert neon.facets["alias"] == {"production": 1}
    with pytest.raises(UsageError):
        search_catalog(reader, "x", kind="nope")


def test_light_reader_hands_a_search_over_when_sqlite3_cannot(tmp_path):
    """Text sqlite3 cannot bind (a lone surrogate) goes to Catalog, which raises its error."""
    from loradex.registry.errors import DatabaseError

    catalog = Catalog(tmp_path)
    build_known(catalog)
    reader = open_light_reader(tmp_path)
    with pytest.raises(DatabaseError) as light:
        search_catalog(reader, "neon", created_by="a\udcff")
    assert reader._catalog is not None
    with pytest.raises(DatabaseError) as direct:
        search_catalog(catalog, "neon", created_by="a\udcff")
    assert str(light.value) == str(direct.value) and "not valid UTF-8" in str(light.value)


def test_cli_search_json_and_table(loradex_home, capsys):
    build_known(Catalog(loradex_home))
    code, out, _err = _cli(capsys, "search", "neon", "--json", "--limit", "2")
    assert code == 0
    data = json.loads(out)
    assert [h["name"] for h in data["hits"]] == ["neon-city", "city-lights"] and data["total"] == 3
    assert list(data) == ["query", "terms", "prefix", "sort", "limit", "offset", "total", "hits", "facets"]
    assert data["facets"]["base"] == {"flux": 1, "sd2": 1, "sdxl": 1}
    code, out, _err = _cli(capsys, "search", "--tag", "team=art", "--sort", "name")
    assert code == 0
    assert out.index("neon-city") < out.index("watercolor-portrait") and "1-2 of 2 adapters" in out
    code, out, err = _cli(capsys, "search", "x", "--kind", "nope")
    assert (code, out) == (2, "") and err.startswith("error: unknown kind 'nope'")
    code, out, err = _cli(capsys, "search", '"*) OR (', "--trigger", "<script>")
    assert (code, err) == (0, "") and "0 of 0 adapters" in out


def test_identify_indexes_the_trigger_words_it_attaches(tmp_path, loradex_home):
    """``civitai identify`` fills in the trigger words of a version that had none."""
    from _civitai_fixtures import FakeCivitai, version_for
    from loradex.merge.synthetic_adapters import write_random_kohya_lora
    from loradex.registry.catalog.adding import add_file
    from loradex.registry.remotes.civitai import identify

    path = write_random_kohya_lora(tmp_path / "plain.safetensors", rank=96, seed=5)  # over 1 MiB: AutoV1 names it
    catalog = Catalog(loradex_home)
    assert add_file(catalog, path, name="plain").version.trigger_words == ()
    assert names(search_catalog(catalog, "wtrclr")) == [] and search_catalog(catalog, trigger="watercolor style").total == 0
    answer = {**version_for(path), "images": []}  # no sample images: no prompt record refreshes it either
    identify(catalog, all_versions=True, transport=FakeCivitai(path, answer).transport(), sleep=lambda s: None)
    assert names(search_catalog(catalog, "wtrclr")) == ["plain"]
    assert search_catalog(catalog, trigger="Watercolor Style").hits[0].matched_versions == ("1.0.0",)
