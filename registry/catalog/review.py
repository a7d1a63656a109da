"""Human review of a version's evaluation card (issue 6), the library call behind both
``loradex review`` and the web app's review form (issue 18).

A person records, per sample, a verdict (good / bad / neutral, stored as accept / reject /
neutral) with a reason; which of several candidate images was chosen over which and why; and
the failure checks that only a person can really judge (artifacts, copyright/portrait, …) as
pass / fail / not-checked with a note. Every call writes ONE new card revision: a copy of the
version's newest card with the changes applied, the review-failure check and the overall verdict
recomputed (``card_verdict``, the same rule ``trainer.evaluate`` applies when it makes a card),
and ``revises`` naming the card it copies, so the history of who decided what stays in the
catalog (cards are append-only; promotion reads the newest). Pure catalog work: no torch, no
rendering; the interactive terminal loop stays in ``trainer.review``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from loradex.registry.errors import UsageError

# what people type → what the card stores (the schema's enum keeps the older accept/reject words)
VERDICT_WORDS = {"good": "accept", "accept": "accept", "bad": "reject", "reject": "reject",
                 "neutral": "neutral"}
CHECK_NAMES = ("prompt_drift", "style_mismatch", "artifacts", "copyright_portrait", "review_failure")
CHECK_ALIASES = {"drift": "prompt_drift", "style": "style_mismatch", "copyright": "copyright_portrait",
                 "portrait": "copyright_portrait", "review": "review_failure"}
CHECK_STATUSES = ("pass", "fail", "not-checked")


@dataclass
class Verdict:
    record_id: str
    verdict: str  # good | bad | neutral (or accept | reject)
    reason: str = ""


@dataclass
class Choice:
    chosen: str
    over: list[str]
    reason: str


@dataclass
class Review:
    """One review session's changes; ``apply_review`` stores them as one card revision."""

    verdicts: list[Verdict] = field(default_factory=list)
    choices: list[Choice] = field(default_factory=list)
    checks: dict[str, str] = field(default_factory=dict)  # check name -> pass | fail | not-checked
    note: str = ""  # the note stored with the checks set here

    def empty(self) -> bool:
        return not (self.verdicts or self.choices or self.checks)


def card_verdict(metrics: dict, checks: dict, thresholds: dict) -> tuple[bool, list[str]]:
    """(passed, reasons): a card passes when no failure check failed and every metric with a
    threshold was computed and is inside it."""
    reasons = [f"failure check {name}: {c['note']}" for name, c in checks.items() if c["status"] == "fail"]
    for name, limits in sorted(thresholds.items()):
        value = (metrics.get(name) or {}).get("value")
        for bound, limit in limits.items():
            if value is None:
                reasons.append(f"{name} not computed (threshold {bound} {limit})")
            elif (bound == "min" and value < limit) or (bound == "max" and value > limit):
                reasons.append(f"{name} = {value:.4f} {'<' if bound == 'min' else '>'} {bound} {limit}")
    return not reasons, reasons


# --- parsing what the CLI passes -----------------------------------------------------------------

def verdict_word(word: str) -> str:
    stored = VERDICT_WORDS.get(word.strip().lower())
    if stored is None:
        raise UsageError(f"verdict {word!r}: expected good, bad or neutral")
    return stored


def parse_verdict_item(text: str) -> Verdict:
    """``ID=good[:reason]`` (the issue's non-interactive form, also ``ID=accept:reason``)."""
    record_id, eq, rest = text.partition("=")
    word, _, reason = rest.partition(":")
    if not eq or not record_id.strip() or not word.strip():
        raise UsageError(f"--verdict {text!r}: expected good|bad|neutral with --record ID, or ID=VERDICT[:REASON]")
    verdict_word(word)
    return Verdict(record_id.strip(), word.strip(), reason.strip())


def parse_check_item(text: str) -> tuple[str, str]:
    """``artifacts=fail`` → ("artifacts", "fail"); short names (drift, style, copyright…) accepted."""
    name, eq, status = text.partition("=")
    name = name.strip().lower().replace("-", "_")
    name = CHECK_ALIASES.get(name, name)
    status = status.strip().lower()
    if not eq or name not in CHECK_NAMES:
        raise UsageError(f"--check {text!r}: expected NAME=STATUS with NAME one of {', '.join(CHECK_NAMES)}")
    if status not in CHECK_STATUSES:
        raise UsageError(f"--check {text!r}: status must be one of {', '.join(CHECK_STATUSES)}")
    return name, status


def build_review(*, record: str | None = None, verdicts: list[str] = (), reason: str = "",
                 choose: str | None = None, over: list[str] = (), checks: list[str] = (),
                 note: str = "") -> Review:
    """The CLI's options → a ``Review`` (all the consistency rules live here, not in cli/)."""
    items: list[Verdict] = []
    if record is not None:
        if len(verdicts) != 1 or "=" in verdicts[0]:
            raise UsageError("--record ID takes exactly one --verdict good|bad|neutral")
        items.append(Verdict(record, verdicts[0], reason.strip()))
    else:
        for item in verdicts:
            if "=" not in item:
                raise UsageError(f"--verdict {item}: say which sample with --record ID (or write ID={item}:REASON)")
            items.append(parse_verdict_item(item))
    return make_review(verdicts=items, choose=choose, over=over, reason=reason, checks=checks, note=note)


def make_review(*, verdicts: list[Verdict] = (), choose: str | None = None, over: list[str] = (),
                reason: str = "", checks: list[str] = (), note: str = "") -> Review:
    """Verdicts, one choice (``choose`` over ``over`` because ``reason``) and ``NAME=STATUS``
    checks with their ``note`` → a checked ``Review``: what ``build_review`` makes of the CLI's
    options and the web review form makes of its fields."""
    review = Review(note=note.strip())
    for v in verdicts:
        verdict_word(v.verdict)
        review.verdicts.append(Verdict(v.record_id.strip(), v.verdict.strip(), v.reason.strip()))
    if choose is not None:
        if not over:
            raise UsageError("--choose ID needs at least one --over ID (the candidates it was chosen over)")
        if not reason.strip():
            raise UsageError("--choose needs --reason: why this candidate")
        review.choices.append(Choice(choose, list(over), reason.strip()))
    elif over:
        raise UsageError("--over needs --choose ID")
    for item in checks:
        name, status = parse_check_item(item)
        review.checks[name] = status
    if note.strip() and not checks:
        raise UsageError("--note goes with --check NAME=STATUS")
    if review.empty():
        raise UsageError("nothing to review: give --record ID --verdict V, --choose ID --over ID, or --check NAME=STATUS")
    return review


# --- applying to the card ------------------------------------------------------------------------

def _card_record_ids(card: dict) -> set[str]:
    return {s[k] for s in card["samples"] for k in ("with_adapter", "without_adapter")} | {
        c["record_id"] for c in card.get("candidates", [])}


def _resolve_record(catalog, card: dict, record_id: str) -> str:
    """A full record id that belongs to this version: one of the card's samples, or a stored record
    whose stack used the version (a `generate` candidate)."""
    from loradex.registry.catalog.records import get_record

    known = _card_record_ids(card)
    matches = sorted(r for r in known if r.startswith(record_id))
    if len(matches) == 1:
        return matches[0]
    rec = get_record(catalog, record_id)  # NotFound / AmbiguousRef for ids outside the card
    if rec.id in known or card["version"]["ref"] in rec.versions:
        return rec.id
    raise UsageError(f"record {rec.id} is neither a sample of this card nor an image made with "
                     f"{card['version']['ref']}", hint="`loradex records list REF` lists the version's records")


def review_failure_check(verdicts: list[dict]) -> dict:
    """The review-failure check from the human verdicts (the same rule ``evaluate`` states)."""
    judged = [v for v in verdicts if v["verdict"] != "neutral"]
    rejected = [v for v in judged if v["verdict"] == "reject"]
    if not judged:
        return {"status": "not-checked", "note": "no human verdicts recorded"
                + (f" ({len(verdicts)} neutral)" if verdicts else ""), "source": "auto"}
    note = f"{len(rejected)} of {len(judged)} judged samples rejected"
    if rejected:
        note += ": " + "; ".join(f"{v['record_id']}: {v['reason'] or 'no reason given'}" for v in rejected)
    return {"status": "fail" if rejected else "pass", "note": note, "source": "auto"}


def _upsert(items: list[dict], entry: dict, same) -> None:
    """Replace the entry ``same`` matches (the newest decision counts), else append."""
    for i, old in enumerate(items):
        if same(old):
            items[i] = entry
            return
    items.append(entry)


def apply_review(catalog, ref: str, review: Review, *, reviewer: str | None = None):
    """Copy REF's newest card, apply ``review``, recompute the verdict, store the revision.
    Returns the stored ``EvalCard``; the card without any change raises."""
    from loradex.registry.paths import current_user
    from loradex.registry.catalog.records import latest_card, now_iso, store_card

    if review.empty():
        raise UsageError("nothing to review")
    latest = latest_card(catalog, ref)  # NotFound with a hint to run `eval` first
    card = copy.deepcopy(latest.card)
    by, at = (reviewer or current_user()).strip() or current_user(), now_iso()
    changes: list[str] = []

    for v in review.verdicts:
        rid = _resolve_record(catalog, card, v.record_id)
        stored = verdict_word(v.verdict)
        entry = {"record_id": rid, "verdict": stored, "reason": v.reason, "by": by, "at": at}
        _upsert(card["human_verdicts"], entry, lambda old: old["record_id"] == rid and old["by"] == by)
        changes.append(f"verdict {rid}={stored}" + (f": {v.reason}" if v.reason else ""))

    for choice in review.choices:
        chosen = _resolve_record(catalog, card, choice.chosen)
        over = list(dict.fromkeys(_resolve_record(catalog, card, r) for r in choice.over))
        if chosen in over:
            raise UsageError(f"record {chosen} cannot be chosen over itself")
        _upsert(card["candidates"], {"record_id": chosen, "status": "chosen", "reason": choice.reason,
                                     "over": over, "by": by, "at": at}, lambda old: old["record_id"] == chosen)
        for rid in over:
            _upsert(card["candidates"], {"record_id": rid, "status": "rejected", "reason": choice.reason,
                                         "instead": chosen, "by": by, "at": at},
                    lambda old, rid=rid: old["record_id"] == rid)
        changes.append(f"chose {chosen} over {', '.join(over)}: {choice.reason}")

    checks = card["failure_checks"]
    for name, status in review.checks.items():
        checks[name] = {"status": status, "note": review.note or f"set by {by} in review",
                        "source": "human", "by": by, "at": at}
        changes.append(f"check {name}={status}" + (f": {review.note}" if review.note else ""))
    if checks["review_failure"].get("source") != "human":  # a person's own call on it wins
        checks["review_failure"] = review_failure_check(card["human_verdicts"])

    card["passed"], card["reasons"] = card_verdict(card["metrics"], checks, card["thresholds"])
    card["revises"] = {"card_id": latest.id, "by": by, "changes": changes}
    card["created_at"], card["created_by"] = at, by
    return store_card(catalog, card)


# --- showing --------------------------------------------------------------------------------------

def review_lines(card: dict) -> list[str]:
    """Human verdicts and candidates as lines (``card REF`` prints them)."""
    lines = []
    for v in card.get("human_verdicts", []):
        lines.append(f"  verdict {v['record_id']} {v['verdict']} by {v['by']}" + (f": {v['reason']}" if v["reason"] else ""))
    for c in card.get("candidates", []):
        if c["status"] == "chosen":
            over = f" over {', '.join(c['over'])}" if c.get("over") else ""
            lines.append(f"  chosen  {c['record_id']}{over}" + (f" by {c['by']}" if c.get("by") else "") + f": {c['reason']}")
        else:
            instead = f" ({c['instead']} chosen instead)" if c.get("instead") else ""
            lines.append(f"  rejected {c['record_id']}{instead}: {c['reason']}")
    if card.get("revises"):
        r = card["revises"]
        lines.append(f"  revises card #{r['card_id']} ({r['by']}): {'; '.join(r['changes'])}")
    return lines
