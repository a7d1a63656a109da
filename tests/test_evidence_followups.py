"""Follow-ups to issues 4 and 6: the compatibility check `generate` runs before rendering, human
review on evaluation cards (verdicts, chosen/rejected candidates, hand-set failure checks), and
memorization measured on a really trained LoRA."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from loradex.cli.app import app
from loradex.merge.math.block_weights import block_name
from loradex.merge.synthetic_adapters import TINY_SD1_MODULES, random_kohya_state_dict
from loradex.registry.catalog import records as R
from loradex.registry.catalog.adding import add_file
from loradex.registry.catalog.store import Catalog
from loradex.registry.errors import IncompatibleAdapters, NotFound, UsageError
from loradex.schemas import validate

runner = CliRunner()
TINY = ["--base", "tiny-sd1", "--size", "32x32", "--steps", "2"]
MODULES = {k: v for k, v in TINY_SD1_MODULES.items() if "attentions_2" not in k}  # the tiny UNet's modules
SD1_META = {"ss_base_model_version": "sd_v1", "ss_network_module": "networks.lora", "ss_network_dim": "4",
            "ss_network_alpha": "4.0"}


def cli(*args, home=None, ok=True):
    argv = [str(a) for a in args] + (["--home", str(home)] if home else [])
    result = runner.invoke(app, argv, catch_exceptions=True)
    if ok and result.exit_code != 0:
        raise AssertionError(f"loradex {' '.join(argv)} failed: {result.output} {result.exception!r}")
    return result


def write_lora(path, seed, *, meta=SD1_META, tag="", sd=None):
    from safetensors.torch import save_file

    sd = sd if sd is not None else random_kohya_state_dict(MODULES, rank=4, alpha=4.0, seed=seed, scale=0.1)
    save_file(sd, str(path), metadata={**meta, "ss_output_name": tag or path.stem})
    return path, sd


def dense_block_cosines(sd_a, wa, sd_b, wb) -> dict[str, float]:
    """Reference: materialise every ΔW = w·(α/r)·up@down and take the per-block cosine."""
    acc: dict[str, list[float]] = {}
    for module in MODULES:
        deltas = []
        for sd, w in ((sd_a, wa), (sd_b, wb)):
            up, down = sd[f"{module}.lora_up.weight"].double(), sd[f"{module}.lora_down.weight"].double()
            alpha = float(sd[f"{module}.alpha"])
            deltas.append((w * alpha / down.shape[0] * (up @ down)).flatten())
        a, b = deltas
        s = acc.setdefault(block_name(module), [0.0, 0.0, 0.0])
        s[0] += float(a @ b)
        s[1] += float(a @ a)
        s[2] += float(b @ b)
    return {blk: i / (na * nb) ** 0.5 for blk, (i, na, nb) in acc.items()}


# --- 1. compatibility check before rendering -------------------------------------------------------

@pytest.fixture
def stack(tmp_path):
    catalog = Catalog()
    out = {}
    for name, seed in (("style", 1), ("char", 2), ("light", 3), ("pose", 4)):
        path, sd = write_lora(tmp_path / f"{name}.safetensors", seed)
        out[name] = (add_file(catalog, path, name=name).version, sd)
    # same factors as "style" in another file: ΔW of "twin" is exactly ΔW of "style"
    path, _ = write_lora(tmp_path / "twin.safetensors", 0, tag="twin", sd=out["style"][1])
    out["twin"] = (add_file(catalog, path, name="twin").version, out["style"][1])
    return catalog, out


def test_generate_records_per_block_cosines_matching_dense_reference(stack, tmp_path):
    from loradex.trainer.generate import GenerateSettings, generate

    catalog, ads = stack
    settings = GenerateSettings(seed=1, steps=2, width=32, height=32)
    result = generate(catalog, "a cat <lora:style:0.7> <lora:char:0.6>", base="tiny-sd1", settings=settings)
    rec = R.get_record(catalog, result.record.id).record  # stored, so schema-valid with the new section
    validate("prompt-record", rec)
    section = rec["compat"]
    assert section["base_family"] == "sd1" and section["checked"] == ["style@1.0.0", "char@1.0.0"]
    expected = dense_block_cosines(ads["style"][1], 0.7, ads["char"][1], 0.6)
    got = {p["block"]: p for p in section["pairs"]}
    assert set(got) == set(expected) == {"BASE", "IN04", "MID", "OUT00", "OUT01"}
    for block, cos in expected.items():
        assert got[block]["cosine"] == pytest.approx(cos, abs=1e-5)
        assert got[block]["a"] == "style@1.0.0" and got[block]["b"] == "char@1.0.0"
    assert sum(p["modules"] for p in section["pairs"]) == len(MODULES)
    assert section["warnings"] == []  # two independent random adapters, two strong: nothing to warn about

    # the same ΔW at opposite signs cancels exactly: cosine −1 in every block, and a warning says so
    result = generate(catalog, "a cat <lora:style:0.8> <lora:twin:-0.5>", base="tiny-sd1", settings=settings)
    section = result.record.record["compat"]
    assert {p["block"]: round(p["cosine"], 5) for p in section["pairs"]} == {b: -1.0 for b in expected}
    assert len(section["warnings"]) == 1 and "cancel each other" in section["warnings"][0]
    assert section["strong"] == ["style@1.0.0", "twin@1.0.0"]


def test_generate_refuses_a_base_family_mismatch_before_rendering(stack, tmp_path):
    from loradex.trainer.generate import GenerateSettings, generate

    catalog, _ = stack
    path, _ = write_lora(tmp_path / "xl.safetensors", 9, meta={**SD1_META, "ss_base_model_version": "sdxl_base_v1-0"})
    xl = add_file(catalog, path, name="xlstyle").version
    assert catalog.get_adapter("xlstyle").base == "sdxl"
    before = len(R.list_records(catalog))
    with pytest.raises(IncompatibleAdapters) as err:
        generate(catalog, "a cat <lora:style:0.5> <lora:xlstyle:0.5>", base="tiny-sd1",
                 settings=GenerateSettings(steps=2, width=32, height=32), out=tmp_path / "no.png")
    message = str(err.value)
    assert xl.ref in message and "sdxl" in message and "sd1" in message and "tiny-sd1" in message
    assert not (tmp_path / "no.png").exists() and len(R.list_records(catalog)) == before
    # the CLI: one error line, exit 1, nothing written
    result = cli("generate", "a cat <lora:xlstyle:0.5>", *TINY, "-o", tmp_path / "no.png", ok=False)
    assert isinstance(result.exception, IncompatibleAdapters)  # cli.main prints it as one line, exit 1
    assert "xlstyle@1.0.0 is a sdxl adapter but base tiny-sd1 is sd1" in str(result.exception)
    assert not (tmp_path / "no.png").exists()

    # an adapter whose family is unknown is allowed on any base
    path, _ = write_lora(tmp_path / "plain.safetensors", 5, meta={})
    plain = add_file(catalog, path, name="plain").version
    assert catalog.get_adapter("plain").base in (None, "unknown")
    rec = generate(catalog, "a cat <lora:plain:0.5>", base="tiny-sd1",
                   settings=GenerateSettings(steps=2, width=32, height=32)).record.record
    assert rec["stack"][0]["ref"] == plain.ref and rec["compat"]["pairs"] == []


def test_cli_generate_warns_on_stderr_past_three_strong_adapters(stack, tmp_path):
    catalog, _ = stack
    out = tmp_path / "four.png"
    prompt = "a cat <lora:style:0.6> <lora:char:0.6> <lora:light:0.6> <lora:pose:-0.7>"
    result = cli("generate", prompt, *TINY, "-o", out, "--json")
    data = json.loads(result.stdout)  # stdout stays pure JSON
    section = data["record"]["compat"]
    assert section["strong"] == ["style@1.0.0", "char@1.0.0", "light@1.0.0", "pose@1.0.0"]
    lines = result.stderr.strip().splitlines()
    warnings = [ln for ln in lines if ln.startswith("warning: ")]
    assert len(warnings) == 1 and "4 strong adapters" in warnings[0]
    assert warnings[0].removeprefix("warning: ") == section["warnings"][0]
    pair_lines = [ln for ln in lines if ln.startswith("compat: ")]
    assert len(pair_lines) == 6  # every pair of the four shares all its modules
    assert all("share 40 modules" in ln and "IN04" in ln for ln in pair_lines)
    assert out.is_file()  # (other stderr lines here are diffusers' own logging)
    # three strong + one weak: no warning
    result = cli("generate", "a cat <lora:style:0.6> <lora:char:0.6> <lora:light:0.6> <lora:pose:0.2>", *TINY,
                 "-o", out, "--json")
    assert json.loads(result.stdout)["record"]["compat"]["warnings"] == []
    assert not [ln for ln in result.stderr.splitlines() if ln.startswith("warning: ")]


# --- 2. human review on evaluation cards ------------------------------------------------------------

@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """One version with an eval card (2 prompts × 2 seeds on the tiny pipeline) and a generate image."""
    from loradex.trainer.evaluate import EvalOptions, evaluate
    from loradex.trainer.generate import GenerateSettings, generate

    root = tmp_path_factory.mktemp("review")
    catalog = Catalog(home=root / "home")
    path, _ = write_lora(root / "style.safetensors", 1)
    version = add_file(catalog, path, name="style").version
    suite = root / "suite.txt"
    suite.write_text("a red fox\nan old house\n")
    options = EvalOptions(base="tiny-sd1", seeds=[0, 1], steps=2, width=32, height=32, embedder="tiny-clip")
    card = evaluate(catalog, version.ref, suite, options)
    extra = generate(catalog, "a red fox <lora:style:0.8>", base="tiny-sd1",
                     settings=GenerateSettings(seed=5, steps=2, width=32, height=32)).record.id
    other = generate(catalog, "a red fox", base="tiny-sd1",
                     settings=GenerateSettings(seed=5, steps=2, width=32, height=32)).record.id
    return catalog, version, card, extra, other


def test_review_verdicts_make_card_revisions_and_drive_review_failure(evaluated):
    from loradex.trainer.review import Review, Verdict, apply_review

    catalog, version, card, _, _ = evaluated
    first = R.latest_card(catalog, version.ref)
    assert first.card["failure_checks"]["review_failure"]["status"] == "not-checked"
    samples = [s["with_adapter"] for s in first.card["samples"]]
    home = catalog.home

    out = json.loads(cli("review", "style", "--record", samples[0], "--verdict", "good", "--reason", "crisp fur",
                         "--reviewer", "ana", "--json", home=home).stdout)
    second = R.latest_card(catalog, version.ref)
    assert out["id"] == second.id > first.id
    c = second.card
    validate("eval-card", c)
    assert c["human_verdicts"] == [{"record_id": samples[0], "verdict": "accept", "reason": "crisp fur",
                                    "by": "ana", "at": c["created_at"]}]
    assert c["revises"] == {"card_id": first.id, "by": "ana", "changes": [f"verdict {samples[0]}=accept: crisp fur"]}
    assert c["failure_checks"]["review_failure"]["status"] == "pass"
    # everything eval computed is carried over unchanged
    for key in ("metrics", "samples", "prompt_suite", "thresholds", "technical_note", "embedder"):
        assert c[key] == first.card[key]
    assert first.card["human_verdicts"] == []  # the older revision is kept as it was

    # a "bad" verdict (issue's ID=VERDICT:REASON form, a unique id prefix) fails the review check and the card
    cli("review", "style", "--verdict", f"{samples[1][:10]}=bad:melted eyes", "--reviewer", "bo", home=home)
    c = R.latest_card(catalog, version.ref).card
    assert [(v["record_id"], v["verdict"], v["by"]) for v in c["human_verdicts"]] == [
        (samples[0], "accept", "ana"), (samples[1], "reject", "bo")]
    review_check = c["failure_checks"]["review_failure"]
    assert review_check["status"] == "fail" and "1 of 2" in review_check["note"] and "melted eyes" in review_check["note"]
    assert c["passed"] is False and any("review_failure" in r for r in c["reasons"])
    # the same reviewer changing their mind replaces their verdict; neutral does not count as judged
    apply_review(catalog, "style", Review(verdicts=[Verdict(samples[1], "neutral", "fine on second look")]),
                 reviewer="bo")
    c = R.latest_card(catalog, version.ref).card
    assert [v["verdict"] for v in c["human_verdicts"]] == ["accept", "neutral"]
    assert c["failure_checks"]["review_failure"]["status"] == "pass"
    assert c["passed"] is (not c["reasons"])

    # `card` shows the verdicts and who set them
    shown = cli("card", "style", home=home).stdout
    assert f"verdict {samples[0]} accept by ana: crisp fur" in shown
    assert f"verdict {samples[1]} neutral by bo" in shown


def test_review_choose_candidate_over_others(evaluated):
    catalog, version, _, extra, _ = evaluated
    samples = [s["with_adapter"] for s in R.latest_card(catalog, version.ref).card["samples"]]
    home = catalog.home
    # a generate image made with the version is a valid candidate too
    cli("review", "style", "--choose", extra, "--over", samples[2], "--over", samples[3],
        "--reason", "best likeness", "--reviewer", "ana", home=home)
    c = R.latest_card(catalog, version.ref).card
    validate("eval-card", c)
    by_id = {x["record_id"]: x for x in c["candidates"]}
    assert by_id[extra]["status"] == "chosen" and by_id[extra]["over"] == [samples[2], samples[3]]
    assert by_id[samples[2]]["status"] == by_id[samples[3]]["status"] == "rejected"
    assert by_id[samples[3]]["instead"] == extra and by_id[samples[3]]["reason"] == "best likeness"
    shown = cli("card", "style", home=home).stdout
    assert f"chosen  {extra} over {samples[2]}, {samples[3]} by ana: best likeness" in shown
    md = cli("card", "style", "--markdown", home=home).stdout
    assert f"| {extra} | chosen (over {samples[2]}, {samples[3]}) | best likeness |" in md


def test_review_checks_set_by_hand_gate_promotion(evaluated):
    catalog, version, _, _, _ = evaluated
    home = catalog.home
    cli("review", "style", "--check", "artifacts=fail", "--check", "copyright=not-checked",
        "--note", "hands have six fingers", "--reviewer", "cy", home=home)
    card = R.latest_card(catalog, version.ref)
    checks = card.card["failure_checks"]
    assert checks["artifacts"]["status"] == "fail" and checks["artifacts"]["source"] == "human"
    assert checks["artifacts"]["note"] == "hands have six fingers" and checks["artifacts"]["by"] == "cy"
    assert checks["copyright_portrait"]["status"] == "not-checked"
    assert card.passed is False and "failure check artifacts: hands have six fingers" in card.card["reasons"]
    assert "(set by cy)" in cli("card", "style", home=home).stdout
    # a gated alias refuses the version now
    cli("alias", "policy", "style", "production", home=home)
    refused = cli("alias", "set", version.ref, "production", home=home, ok=False)
    assert refused.exception is not None and "artifacts" in str(refused.exception)
    # the person re-checks: pass again → the card passes (no thresholds failing), promotion allowed
    cli("review", "style", "--check", "artifacts=pass", "--note", "fixed prompt, re-checked", "--reviewer", "cy",
        home=home)
    card = R.latest_card(catalog, version.ref)
    assert card.card["failure_checks"]["artifacts"]["status"] == "pass"
    assert card.passed == (not card.card["reasons"])
    assert not any("artifacts" in r for r in card.card["reasons"])
    result = cli("alias", "set", version.ref, "production", home=home, ok=False)
    if card.passed:  # eval's own automatic checks (prompt drift on random weights) may still fail it
        assert result.exit_code == 0 and catalog.aliases("style")
    else:
        assert result.exception is not None and "artifacts" not in str(result.exception)


def test_review_refuses_bad_input(evaluated, tmp_path):
    from loradex.trainer.review import Review, Verdict, apply_review, build_review

    catalog, version, _, _, other = evaluated
    home = catalog.home
    bad = [
        (["--record", "x" * 16, "--verdict", "great"], "good, bad or neutral"),
        (["--check", "vibes=fail"], "NAME=STATUS"),
        (["--check", "artifacts=maybe"], "status must be"),
        (["--choose", "x" * 16, "--reason", "r"], "--over"),
        (["--choose", "x" * 16, "--over", "y" * 16], "--reason"),
        ([], "nothing to review"),
    ]
    for args, expect in bad:
        result = cli("review", "style", *args, home=home, ok=False)
        assert isinstance(result.exception, UsageError) and expect in str(result.exception), (args, result.output)
    # a record made without this version cannot be judged on its card
    with pytest.raises(UsageError, match="neither a sample"):
        apply_review(catalog, "style", Review(verdicts=[Verdict(other, "good")]))
    with pytest.raises(NotFound):
        apply_review(catalog, "style", Review(verdicts=[Verdict("f" * 16, "good")]))
    # a version without a card: review says to run eval first
    path, _ = write_lora(tmp_path / "new.safetensors", 7)
    add_file(catalog, path, name="fresh")
    with pytest.raises(NotFound, match="no evaluation card"):
        apply_review(catalog, "fresh", build_review(checks=["artifacts=pass"]))


def test_review_interactive_asks_each_sample_at_the_terminal(evaluated):
    catalog, version, _, _, _ = evaluated
    home = catalog.home
    before = R.latest_card(catalog, version.ref)
    samples = [s["with_adapter"] for s in before.card["samples"]]
    assert len(samples) == 4
    # sample 1: accept + reason; 2: a typo (asked again), then reject + reason; 3: skipped (Enter); 4: quit
    answers = "a\ncrisp fur\nmaybe\nbad\nmelted eyes\n\nq\n"
    result = runner.invoke(app, ["review", "style", "--interactive", "--reviewer", "dee", "--json",
                                 "--home", str(home)], input=answers)
    assert result.exit_code == 0, result.output
    shown = result.stderr
    for i, rid in enumerate(samples):
        rec = R.get_record(catalog, rid)
        assert f"[{i + 1}/4] record {rid}  seed {rec.record['seed']}  prompt: {rec.record['clean_prompt']}" in shown
        assert f"image: {catalog.blobs.path_for(rec.image_blob)}" in shown
    assert "answer accept (a), reject (r)" in shown  # the typo was refused and asked again
    # CliRunner echoes the typed answers onto stdout (a terminal would show them on itself)
    stored = json.loads(result.stdout[result.stdout.index("{\n"):])
    card = R.latest_card(catalog, version.ref)
    assert stored["id"] == card.id > before.id
    validate("eval-card", card.card)
    mine = [(v["record_id"], v["verdict"], v["reason"]) for v in card.card["human_verdicts"] if v["by"] == "dee"]
    assert mine == [(samples[0], "accept", "crisp fur"), (samples[1], "reject", "melted eyes")]
    assert card.card["revises"]["changes"] == [f"verdict {samples[0]}=accept: crisp fur",
                                               f"verdict {samples[1]}=reject: melted eyes"]
    assert card.card["failure_checks"]["review_failure"]["status"] == "fail"

    # the next session shows this reviewer's earlier verdict; skipping everything stores nothing
    again = runner.invoke(app, ["review", "style", "--interactive", "--reviewer", "dee", "--home", str(home)],
                          input="s\ns\ns\ns\n")
    assert again.exit_code == 0 and "nothing stored" in again.stdout
    assert "(your verdict so far: accept)" in again.stderr
    assert R.latest_card(catalog, version.ref).id == card.id

    # no options and no terminal: one line saying what to give; --interactive with options: refused
    for args, expect in (([], "stdin is not a terminal"), (["--interactive", "--check", "artifacts=pass"],
                                                            "--interactive asks")):
        refused = cli("review", "style", *args, home=home, ok=False)
        assert isinstance(refused.exception, UsageError) and expect in str(refused.exception)


def test_pushed_model_card_and_card_markdown_are_the_same_text(evaluated, tmp_path):
    from loradex.registry.remotes.hub_manifest import README_NAME, stage_version

    catalog, version, _, _, _ = evaluated
    home = catalog.home
    cli("review", "style", "--verdict", f"{R.latest_card(catalog, version.ref).card['samples'][0]['with_adapter']}"
        "=bad:smudged", "--check", "artifacts=fail", "--note", "banding", "--reviewer", "eve", home=home)
    card = R.latest_card(catalog, version.ref).card
    md = R.card_markdown(card)
    # the human part (verdicts, hand-set checks) is in the one Markdown form…
    assert "| sample | human verdict | by | reason |" in md and "| eve | smudged |" in md
    assert "Checks set by a person: artifacts = fail (eve: banding)" in md
    # …which `card --markdown` prints and the pushed README.md embeds, byte for byte
    assert cli("card", "style", "--markdown", home=home).stdout == md
    staged = stage_version(catalog, version.ref, tmp_path / "stage")
    assert md.rstrip("\n") in staged.files[README_NAME].read_text()


# --- 3. --base defaults to the base the version was used with ---------------------------------------

def test_eval_and_gallery_default_base_from_records_or_lineage(tmp_path):
    from loradex.trainer.base_loader import tiny_hash
    from loradex.trainer.evaluate import known_base

    catalog = Catalog()
    home = catalog.home
    suite = tmp_path / "suite.txt"
    suite.write_text("a red fox\n")
    fast = ["--prompts", suite, "--seeds", 1, "--steps", 2, "--size", "32x32", "--embedder", "tiny-clip"]
    add_file(catalog, write_lora(tmp_path / "style.safetensors", 1)[0], name="style")
    # lineage only: trained on tiny-sd1:seed=2 (the external base:REF@HASH form the trainer writes)
    add_file(catalog, write_lora(tmp_path / "trained.safetensors", 2)[0], name="trained",
             lineage=[{"relation": "trained_from", "external_parent": f"base:tiny-sd1:seed=2@{tiny_hash('sd1', 2)}"}])

    # nothing known yet: one line saying to pass --base, nothing stored
    for args in (["eval", "style", *fast], ["gallery", "style", "trained", "--prompts", suite, "-o", tmp_path / "g.png"]):
        refused = cli(*args, home=home, ok=False)
        assert isinstance(refused.exception, UsageError), refused.output
        assert "style@1.0.0: no base is known" in str(refused.exception) and "--base" in str(refused.exception)
    assert R.list_records(catalog) == [] and not (tmp_path / "g.png").exists()

    # a generate with tiny-sd1:seed=1 (not the plain default) → eval reuses exactly that base
    rec = cli("generate", "a cat <lora:style:0.5>", "--base", "tiny-sd1:seed=1", "--size", "32x32", "--steps", 2,
              "-o", tmp_path / "a.png", "--json", home=home)
    rec_id = json.loads(rec.stdout)["record"]["id"]
    assert known_base(catalog, "style") == ("tiny-sd1:seed=1", f"prompt record {rec_id}")
    out = cli("eval", "style", *fast, "--json", home=home)
    card = json.loads(out.stdout)["card"]
    assert card["base"]["ref"] == "tiny-sd1:seed=1" and card["base"]["sha256"] == tiny_hash("sd1", 1)
    assert f"base: tiny-sd1:seed=1 (from style@1.0.0: prompt record {rec_id})" in out.stderr

    # lineage: the trainer's external parent names the base
    assert known_base(catalog, "trained") == ("tiny-sd1:seed=2",
                                              f"its lineage (base:tiny-sd1:seed=2@{tiny_hash('sd1', 2)})")
    # versions used with different bases: gallery refuses to guess; with one base it renders
    mixed = cli("gallery", "style", "trained", "--prompts", suite, "--size", "32x32", "--steps", 2,
                "-o", tmp_path / "g.png", home=home, ok=False)
    assert isinstance(mixed.exception, UsageError) and "different bases" in str(mixed.exception)
    ok = cli("gallery", "trained", "--prompts", suite, "--size", "32x32", "--steps", 2, "-o", tmp_path / "g.png",
             home=home)
    assert "base: tiny-sd1:seed=2" in ok.stderr and (tmp_path / "g.png").is_file()
