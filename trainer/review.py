"""``review REF``: human evidence on a version's evaluation card (issue 6) — the terminal side.

The review itself (``Review``, ``build_review``, ``apply_review``, the verdict rule) lives in
``registry.catalog.review`` so the web app's review form stores cards through the same call;
this module keeps what only the interactive CLI needs (asking per sample at the terminal) and
re-exports the rest for its callers. Nothing here renders or needs torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from loradex.registry.errors import UsageError
from loradex.registry.catalog.review import (VERDICT_WORDS, Choice, Review, Verdict, apply_review,
                                              build_review, review_lines)

__all__ = ["Choice", "Review", "ReviewSample", "Verdict", "apply_review", "build_review", "interactive_review",
           "review_lines", "review_mode", "review_samples"]  # the first ones re-exported from registry.catalog.review


def review_mode(*, flags_given: bool, interactive: bool, stdin_is_tty: bool) -> str:
    """``"flags"`` (verdicts etc. given as options) or ``"interactive"`` (asked per sample at the
    terminal): ``--interactive`` forces the latter, no options on a terminal defaults to it."""
    if interactive:
        if flags_given:
            raise UsageError("--interactive asks for each verdict at the terminal; drop it or the "
                             "--record/--verdict/--choose/--check options")
        return "interactive"
    if flags_given:
        return "flags"
    if stdin_is_tty:
        return "interactive"
    raise UsageError("nothing to review: stdin is not a terminal, so review cannot ask; give "
                     "--verdict ID=accept:REASON, --choose ID --over ID or --check NAME=STATUS (or --interactive)")


@dataclass
class ReviewSample:
    """One sample as the interactive review shows it."""

    record_id: str
    prompt: str
    seed: int
    image: str | None      # the PNG in the blob store (None: the record has no stored image)
    current: str | None    # this reviewer's verdict on it so far


def review_samples(catalog, card: dict, reviewer: str) -> list[ReviewSample]:
    """The card's samples rendered WITH the adapter, in suite order."""
    from loradex.registry.catalog.records import get_record

    mine = {v["record_id"]: v["verdict"] for v in card.get("human_verdicts", []) if v["by"] == reviewer}
    out = []
    for sample in card["samples"]:
        rec = get_record(catalog, sample["with_adapter"])
        image = str(catalog.blobs.path_for(rec.image_blob)) if rec.image_blob else None
        out.append(ReviewSample(rec.id, rec.record.get("clean_prompt") or rec.record["prompt"],
                                int(rec.record["seed"]), image, mine.get(rec.id)))
    return out


INTERACTIVE_CHOICES = {"a": "accept", "r": "reject", "n": "neutral", "s": "skip", "": "skip", "skip": "skip",
                       "q": "quit", "quit": "quit", **VERDICT_WORDS}


def interactive_review(samples: list[ReviewSample], ask: Callable[[str, str], str],
                       say: Callable[[str], None]) -> Review:
    """Ask accept / reject / neutral / skip (or quit) and a reason for each sample; ``ask(question,
    default)`` returns the answer, ``say`` shows a line. Returns the verdicts given."""
    review = Review()
    for i, sample in enumerate(samples, 1):
        say(f"[{i}/{len(samples)}] record {sample.record_id}  seed {sample.seed}  prompt: {sample.prompt}")
        say(f"  image: {sample.image or '(no image stored)'}"
            + (f"  (your verdict so far: {sample.current})" if sample.current else ""))
        while (answer := INTERACTIVE_CHOICES.get(ask("accept / reject / neutral / skip / quit", "skip")
                                                 .strip().lower())) is None:
            say("  answer accept (a), reject (r), neutral (n), skip (s) or quit (q)")
        if answer == "quit":
            break
        if answer == "skip":
            continue
        review.verdicts.append(Verdict(sample.record_id, answer, ask("  reason", "").strip()))
    return review
