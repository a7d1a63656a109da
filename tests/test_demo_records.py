"""Every prompt record of the demo's catalog re-renders bit-identically (``render --check``): the
stacked generate, the evaluation samples and the training samples of every method — the TI
run's sample record included, whose embedding the record names in its stack and again under
``embeddings`` (it once failed with "adapter(s) named twice in one stack"). And the demo's
training data: a dataset version captioned by a tiny random tagger, named by the trained
versions' lineage.

The demo is built once for the module (``loradex demo`` into a temp home, ~35 s on two idle cores)."""

from __future__ import annotations

import hashlib

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from loradex.cli.demo_cmd import _serve_mirror
    from loradex.registry.catalog.store import Catalog
    from loradex.trainer.demo import run_demo

    home = tmp_path_factory.mktemp("demo") / "home"
    lines: list[str] = []
    summary = run_demo(home, serve_mirror=_serve_mirror, log=lines.append)
    return Catalog(home), summary, lines


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
