"""Every prompt record of the demo's catalog re-renders bit-identically (``render --check``): the
stacked generate, the evaluation samples and the training samples of every method — the TI
run's sample record included, whose embedding the record names in its stack and again under
``embeddings`` (it once failed with "adapter(s) named twice in one stack"). And the demo's
training data: a dataset version captioned by a tiny random tagger, named by the trained
versions' lineage.

The demo is built once for the module (``loradex demo --json`` into a temp home, ~35 s on two
idle cores): these tests and the tour's own checks (``test_demo_runs``) share that one build."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """``loradex demo --home H --json`` through the CLI: (catalog, the JSON it printed, the
    progress lines it logs — which --json keeps off stdout, so they are collected here)."""
    import typer
    from click.testing import CliRunner

    from loradex.cli.app import app_for
    from loradex.cli.output import Output
    from loradex.registry.catalog.store import Catalog

    home = tmp_path_factory.mktemp("demo") / "home"
    lines: list[str] = []
    args = ["demo", "--home", str(home), "--json"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Output, "info", lambda self, message: lines.append(message))
        result = CliRunner().invoke(typer.main.get_command(app_for(args)), args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return Catalog(home), json.loads(result.stdout), lines


def test_demo_runs(demo):
    """The tour's summary: versions, the production alias moved and rolled back, a merge, a
    bit-identical re-render, evaluation cards, trained adapters, push/pull through a mirror."""
    from loradex.registry.catalog.records import latest_card
    from loradex.registry.catalog.store import Catalog

    catalog, result, _ = demo
    assert result["production"] == "1.0.0"
    assert [e["action"] for e in result["history"]] == ["set", "set", "rollback"]
    assert result["merged"]["parents"] == ["watercolor@1.0.0", "kiriko@1.0.0"]
    assert result["render"]["identical"] is True
    assert Path(result["render"]["image"]).is_file()
    # both watercolor versions carry an evaluation card on the same prompts and seeds (the web
    # app's compare and review pages have something to show)
    assert [e["ref"] for e in result["evaluated"]] == ["watercolor@1.0.0", "watercolor@1.1.0"]
    cards = [latest_card(catalog, e["ref"]).card for e in result["evaluated"]]
    keys = [sorted((s["prompt_index"], s["seed"]) for s in card["samples"]) for card in cards]
    assert keys[0] == keys[1] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    kinds = {t["ref"].split("@")[0]: t for t in result["trained"]}
    assert kinds["demo-shapes-lora"]["kind"] == "lora" and kinds["demo-shapes-ti"]["kind"] == "embedding"
    assert all("trained_from" in t["lineage"] for t in result["trained"])
    # the sync step: production pushed to a loopback mirror, pulled into a teammate's home
    sync = result["sync"]
    assert sync["pushed"] == "watercolor@1.0.0" and sync["tag"] == "v1.0.0" and sync["identical"] is True
    teammate = Catalog(catalog.home / "teammate")
    assert teammate.resolve("watercolor@production").sha256 == catalog.resolve("watercolor@production").sha256
    assert [e.relation for e in teammate.lineage("watercolor@1.0.0")] == ["pulled_from"]


def test_every_demo_record_re_renders_bit_identically(demo):
    from loradex.registry.catalog.records import list_records
    from loradex.trainer.generate import Generator, render_record

    catalog, _, _ = demo
    records = list_records(catalog)
    sources = {r.record["source"] for r in records}
    assert {"generate", "train-sample"} <= sources and len(records) >= 10
    ti_samples = [r for r in records if "demo-shapes-ti@1.0.0" in r.versions]
    assert ti_samples and all(r.record["embeddings"] for r in ti_samples)
    generators: dict[str, Generator] = {}  # one pipeline per base for every record
    results = {}
    for stored in records:
        base = stored.record["base"]["ref"]
        generator = generators.setdefault(base, Generator(catalog, base))
        check = render_record(catalog, stored.id, generator=generator)
        results[stored.id] = (stored.record["source"], check.identical, check.max_abs_diff)
    assert all(identical for _, identical, _ in results.values()), results


def test_demo_trains_from_a_captioned_dataset_version(demo):
    from loradex.registry.catalog.datasets import dataset_versions, trained_on

    catalog, summary, lines = demo
    bare, captioned = dataset_versions(catalog, "demo-shapes")
    assert (bare.version, captioned.version) == ("1.0.0", "1.1.0")
    assert all(i.caption is None for i in bare.images)
    assert {i.sha256 for i in bare.images} == {i.sha256 for i in captioned.images}
    tagger = catalog.home / "demo-files" / "models" / "tiny-tagger" / "model.safetensors"
    weights = hashlib.sha256(tagger.read_bytes()).hexdigest()
    for image in captioned.images:
        assert image.caption.startswith("shp")
        source = image.caption_source
        assert (source["kind"], source["captioner"], source["model_sha256"]) == ("captioner", "tags", weights)
        assert source["settings"] == {"prefix": "shp, ", "max_words": 4, "threshold": 0.5}
    for trained in summary["trained"]:
        assert trained["dataset"] == captioned.ref and captioned.ref in trained["trained_from"]
        assert [d["ref"] for d in trained_on(catalog, trained["ref"])] == [captioned.ref]
    assert any(line.startswith(f"captioned {bare.ref} → {captioned.ref}") for line in lines)
