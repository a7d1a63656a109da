"""``loradex demo``: a tour on synthetic adapters and a tiny random pipeline, offline, well under
two minutes on two cores: versions, a production alias rolled back, an exact merge, a stacked
render re-rendered bit-identically from its record, a tiny training set versioned as a dataset and
captioned by a tiny random tagger, a tiny LoRA + embedding trained from it, and the
production version pushed to a team mirror (``loradex serve`` on 127.0.0.1) and pulled into a
second home.

Each step reports through ``log(message)``; the CLI prints it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable


def run_demo(home: Path | None = None, *, serve_mirror: Callable, log: Callable[[str], None] = print) -> dict:
    from loradex.merge.synthetic_adapters import write_random_embedding, write_random_kohya_lora
    from loradex.registry.catalog.adding import add_file
    from loradex.registry.catalog.store import Catalog
    from loradex.registry.catalog.operations import MoveAlias, RollbackAlias

    home = Path(home) if home else Path(tempfile.mkdtemp(prefix="loradex-demo-"))
    catalog = Catalog(home)
    log(f"demo home: {home}")
    work = home / "demo-files"
    work.mkdir(parents=True, exist_ok=True)

    style_v1 = write_random_kohya_lora(work / "watercolor_v1.safetensors", rank=4, alpha=2, seed=1,
                                       trigger="wtrclr")
    style_v2 = write_random_kohya_lora(work / "watercolor_v2.safetensors", rank=8, alpha=4, seed=2,
                                       trigger="wtrclr")
    character = write_random_kohya_lora(work / "kiriko.safetensors", rank=4, alpha=4, seed=3,
                                        trigger="krk")
    embedding = write_random_embedding(work / "easy-negative.safetensors", n_vectors=4, dim=32, seed=4)

    added = [
        add_file(catalog, style_v1, name="watercolor", message="first cut"),
        add_file(catalog, style_v2, name="watercolor", message="rank 8, more steps"),
        add_file(catalog, character, name="kiriko"),
        add_file(catalog, embedding, name="easy-negative"),
    ]
    for result in added:
        v = result.version
        log(f"added {v.ref}: {v.probe.get('kind')}/{v.probe.get('format')} base={v.probe.get('base')} "
            f"triggers={list(v.trigger_words)}")

    catalog.apply([MoveAlias("watercolor@1.0.0", "production", reason="demo: first release")])
    catalog.apply([MoveAlias("watercolor@1.1.0", "production", reason="demo: promote 1.1.0")])
    log("production → watercolor@1.1.0")
    (event,) = catalog.apply([RollbackAlias("watercolor", "production", reason="demo: 1.1.0 drifts")])
    log(f"rollback: production {event.from_version} → {event.to_version}")
    history = catalog.alias_history("watercolor", "production")

    merged = _demo_merge(catalog, log)
    rendered = _demo_render(catalog, work, log)
    evaluated = _demo_evaluate(catalog, work, log)
    trained = _demo_train(catalog, work, log)
    synced = _demo_sync(catalog, home, log, serve_mirror)
    summary = catalog.list_adapters()
    return {
        "home": str(home),
        "adapters": [s.to_dict() for s in summary],
        "production": catalog.resolve("watercolor@production").version,
        "history": [e.to_dict() for e in history],
        "merged": merged,
        "render": rendered,
        "evaluated": evaluated,
        "trained": trained,
        "sync": synced,
    }


def _demo_train(catalog, work: Path, log) -> list[dict]:
    """The training set as a dataset version captioned by a tiny random tagger, then a tiny LoRA
    and a tiny textual-inversion embedding trained from it; each run becomes a version whose
    lineage names the dataset version."""
    from loradex.trainer.train_demo import build_demo_dataset, train_demo_adapters

    dataset = build_demo_dataset(catalog, work, log)
    results = train_demo_adapters(catalog, work, log, data=dataset.ref)
    finals = {r.version.adapter: r.version for r in results}  # the last result per adapter
    out = []
    for v in finals.values():
        edges = [e for e in catalog.lineage(v.ref) if e.child == v.ref]
        parents = [e.parent for e in edges if e.relation == "trained_from"]
        log(f"{v.ref} trained_from {', '.join(parents)}")
        out.append({"ref": v.ref, "kind": v.probe.get("kind"), "lineage": [e.relation for e in edges],
                    "trained_from": parents, "dataset": dataset.ref})
    return out


def _demo_merge(catalog, log) -> dict:
    """An exact merge of the production style with the character, versioned with its recipe."""
    from loradex.merge.catalog_merge import merge_versions

    result = merge_versions(catalog, [("watercolor@production", 0.8), ("kiriko", 0.6)], "concat",
                            name="watercolor-kiriko", dtype="fp32", message="demo: style + character")
    edges = catalog.lineage(result.version.ref)
    log(f"merged {result.version.ref} (concat, exact) from {', '.join(e.parent for e in edges)}")
    return {"ref": result.version.ref, "sha256": result.version.sha256, "parents": [e.parent for e in edges]}


def _demo_render(catalog, work: Path, log) -> dict:
    """Render a stacked prompt on the tiny offline pipeline, keep the record, re-render it."""
    from loradex.trainer.generate import GenerateSettings, generate, render_record

    prompt = "a lighthouse at dusk, wtrclr <lora:watercolor@production:0.8> <lora:kiriko:0.6>"
    settings = GenerateSettings(seed=42, steps=4, cfg=5.0, width=32, height=32)
    result = generate(catalog, prompt, base="tiny-sd1", settings=settings, out=work / "lighthouse.png")
    record = result.record
    stack = ", ".join(f"{a['ref']}×{a['unet_weight']}" for a in record.record.get("stack", []))
    log(f"rendered {work / 'lighthouse.png'} (record {record.id}; stack {stack})")
    check = render_record(catalog, record.id)
    log(f"re-rendered record {record.id}: {'bit-identical' if check.identical else f'differs by {check.max_abs_diff}'}")
    return {"record": record.id, "image": str(work / "lighthouse.png"), "identical": check.identical}


DEMO_SUITE = ("a lighthouse at dusk, wtrclr", "a fox in tall grass, wtrclr")


def _demo_evaluate(catalog, work: Path, log) -> list[dict]:
    """Evaluation cards for both watercolor versions on one small suite and the same seeds, so the
    web app's compare page has two columns on the same prompts and its review page has samples."""
    from loradex.trainer.evaluate import EvalOptions, evaluate
    from loradex.trainer.generate import Generator

    suite = work / "demo-suite.txt"
    suite.write_text("\n".join(DEMO_SUITE) + "\n", encoding="utf-8")
    options = EvalOptions(base="tiny-sd1", seeds=[0, 1], steps=4, cfg=5.0, width=64, height=64,
                          embedder="tiny-clip")
    generator = Generator(catalog, options.base)  # one pipeline for both versions
    out = []
    for ref in ("watercolor@1.0.0", "watercolor@1.1.0"):
        card = evaluate(catalog, ref, suite, options, generator=generator)
        log(f"evaluated {ref}: {len(card.card.get('samples', []))} samples, "
            f"{'pass' if card.passed else 'fail'} (card {card.id})")
        out.append({"ref": ref, "card": card.id, "passed": card.passed})
    return out


def _demo_sync(catalog, home: Path, log, serve_mirror: Callable) -> dict:
    """A team mirror on loopback: ``loradex serve`` over a home of its own, the production version
    pushed to it (it becomes a version of the mirror's catalog too) and pulled into a teammate's
    home. The token is made here and lives only in this process. ``serve_mirror(catalog, token)``
    starts the server and answers (url, stop): the caller (cli) brings it, since nothing below
    cli imports the server."""
    import secrets

    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    from loradex.registry.catalog.store import Catalog
    from loradex.registry.remotes import add_remote, pull, push

    token = secrets.token_urlsafe(24)
    mirror = Catalog(home / "team-mirror")
    url, stop = serve_mirror(mirror, token)
    bars_were_off = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        add_remote(catalog, "team", f"{url}/team", "mirror")
        pushed = push(catalog, "watercolor@production", "team", token=token)
        log(f"pushed {pushed.ref} to {url}/team/watercolor ({pushed.tag}, {len(pushed.uploaded)} files); "
            f"the mirror's catalog now has {mirror.resolve('watercolor@' + pushed.tag[1:]).ref}")
        teammate = Catalog(home / "teammate")
        add_remote(teammate, "team", f"{url}/team", "mirror")
        pulled = pull(teammate, "mirror://team/watercolor@production", token=token)
        same = pulled.version.sha256 == catalog.resolve("watercolor@production").sha256
        log(f"teammate pulled {pulled.version.ref} (@production, {pulled.records} record(s)); "
            f"sha256 {'identical' if same else 'DIFFERS'}")
    finally:
        if not bars_were_off:
            enable_progress_bars()
        stop()
    return {"mirror": url, "pushed": pushed.ref, "tag": pushed.tag, "pulled": pulled.version.ref,
            "identical": same}
