"""Item, Verdict and the scorer that combines the component judges into a total."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Mapping

from .judges import (
    REFUSAL_MAX_CHARS,
    judge_abstention,
    judge_answer_support,
    judge_conflict,
    judge_consistency,
    judge_correct,
    judge_format,
    judge_grounding,
    judge_on_topic,
    judge_refusal,
)
from .parse import extract_answer, parse_response
from .presets import OUTCOME_KEY, REWARD_KEYS, TASK_TYPES
from .text import normalize, normalize_cached, prepare_context

_ANY_TAG_RE = re.compile(r"</?(?:think|proof|answer)>")


@lru_cache(maxsize=8192)
def _expected_norm(expected: str) -> str:
    """Normalised expected answer (the <answer> part when a full reference is given)."""
    return normalize(extract_answer(expected))


#: Flags every verdict carries.
FLAG_NAMES: tuple[str, ...] = (
    "format_ok",
    "grounded",
    "hallucination",
    "refusal",
    "correct",
    "abstained",
    "conflict_reported",
    "consistent",
    "safe",
)


@dataclass(frozen=True)
class Item:
    """One task: a context, a question and the expected answer, with an explicit type."""

    id: str
    type: str  # "answerable" | "abstain" | "conflict"
    context: str
    question: str
    expected_answer: str
    reference: str = ""  # full <think>/<proof>/<answer> reference response, when known
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in TASK_TYPES:
            raise ValueError(f"item {self.id!r}: unknown type {self.type!r}; expected one of {TASK_TYPES}")


@dataclass
class Verdict:
    """What the scorer concluded about one response."""

    total: float
    components: dict[str, float]  # preset key -> signed value paid; total == sum of these
    flags: dict[str, bool]
    task_type: str = ""
    detail: dict[str, Any] = field(default_factory=dict)  # format error, bad spans, ...

    def to_json(self) -> dict[str, Any]:
        return {
            "reward": self.total,
            "flags": dict(self.flags),
            "components": dict(self.components),
            "task_type": self.task_type,
            "detail": dict(self.detail),
        }


def _preset_values(preset: Mapping[str, float]) -> Mapping[str, float]:
    """Check the preset has the 12 keys with finite numbers (fast path: one pass, one sum)."""
    vals = [preset[k] for k in REWARD_KEYS]  # KeyError names the missing key
    try:
        ok = math.isfinite(sum(vals))
    except TypeError:
        ok = False
    if not ok:
        for k, v in zip(REWARD_KEYS, vals):
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"preset value {k}={v!r} is not a finite number")
        raise ValueError("preset values overflow")
    return preset


def _verdict(p: Mapping[str, float], keys: list[str], flags: dict[str, bool], t: str, detail: dict[str, Any]) -> Verdict:
    components = {k: float(p[k]) for k in keys}
    return Verdict(total=float(sum(components.values())), components=components, flags=flags, task_type=t, detail=detail)


def _refusal_candidate(text: str) -> str:
    """The part of a malformed response that could be a canned refusal: the text after an
    ``<answer>`` tag when there is one, else the whole text, tags removed; "" when that is
    longer than twice ``REFUSAL_MAX_CHARS`` raw characters (a canned refusal is short)."""
    i = text.rfind("<answer>")
    if i >= 0:
        text = text[i + 8 :]
    if len(text) > 2 * REFUSAL_MAX_CHARS:
        return ""
    return _ANY_TAG_RE.sub(" ", text)


def score(response: str, item: Item, preset: Mapping[str, float]) -> Verdict:
    """Score one response for one item under ``preset`` (the 12 signed values).

    Which outcome pays which key (see docs/rewards.md for the full table):

    * malformed -> ``format_mismatch_penalty`` (+ ``incorrect_answer_penalty`` if it is a
      canned refusal); nothing else is judged;
    * well formed -> ``exact_format``, then
      - canned refusal -> ``missing_trace_penalty`` + ``incorrect_answer_penalty`` (a refusal
        is never rewarded, whatever the task type);
      - otherwise one trace key (``verifiable_trace`` / ``missing_trace_penalty`` /
        ``hallucinated_trace_penalty``), one answer-support key (``no_hallucination`` /
        ``hallucination_penalty``), one outcome key (``correct_synthesis`` /
        ``correct_abstention`` / ``conflict_detection`` for the item's type, else
        ``incorrect_answer_penalty``), and ``proof_inconsistency_penalty`` when the answer's
        claims are not supported by the proof.

    An abstention pays ``correct_abstention`` only when it is about what was asked (shares a
    key term with the question, see ``judge_on_topic``) and states no number absent from the
    context; a conflict report pays ``conflict_detection`` only without invented numbers.
    """
    p = _preset_values(preset)
    t = item.type
    flags = dict.fromkeys(FLAG_NAMES, False)
    if not isinstance(response, str):
        response = "" if response is None else str(response)
    parsed = parse_response(response)
    flags["format_ok"] = judge_format(parsed)
    if not parsed.ok:
        flags["refusal"] = judge_refusal(normalize(_refusal_candidate(response)))
        keys = ["format_mismatch_penalty"] + (["incorrect_answer_penalty"] if flags["refusal"] else [])
        return _verdict(p, keys, flags, t, {"format_error": parsed.error})

    answer = normalize(parsed.answer)
    abstained = judge_abstention(answer)
    conflict = judge_conflict(answer)
    if judge_refusal(answer, abstained, conflict):
        flags["refusal"] = True
        flags["consistent"] = True  # a refusal asserts nothing the proof could contradict
        keys = ["exact_format", "missing_trace_penalty", "incorrect_answer_penalty"]
        return _verdict(p, keys, flags, t, {})

    ctx = prepare_context(item.context)
    question = normalize_cached(item.question)
    grounding = judge_grounding(parsed.proof, ctx)
    proof = grounding.proof_norm
    supported = judge_answer_support(answer, ctx, question)
    if t == "answerable":
        correct = (not abstained) and (not conflict) and judge_correct(answer, _expected_norm(item.expected_answer), question)
    elif t == "abstain":
        correct = abstained and supported and judge_on_topic(answer, question)
    else:
        correct = conflict and supported
    consistent = judge_consistency(answer, proof, question, abstained or conflict, grounding.proof_tokens)

    status = grounding.status
    keys = ["exact_format"]
    keys.append({"verified": "verifiable_trace", "missing": "missing_trace_penalty"}.get(status, "hallucinated_trace_penalty"))
    keys.append("no_hallucination" if supported else "hallucination_penalty")
    keys.append(OUTCOME_KEY[t] if correct else "incorrect_answer_penalty")
    if not consistent:
        keys.append("proof_inconsistency_penalty")

    hallucination = status == "hallucinated" or not supported
    flags.update(
        grounded=status == "verified",
        hallucination=hallucination,
        correct=correct,
        abstained=abstained,
        conflict_reported=conflict,
        consistent=consistent,
        safe=(not hallucination) and consistent and (correct or abstained or conflict),
    )
    detail: dict[str, Any] = {"trace": status}
    if grounding.bad_spans:
        detail["unsupported_spans"] = [s[:200] for s in grounding.bad_spans[:5]]
    return _verdict(p, keys, flags, t, detail)
