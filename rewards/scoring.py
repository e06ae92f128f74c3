"""Item, Verdict and the scorer that combines the component judges into a total."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final, Mapping

from .judges import (
    REFUSAL_MAX_CHARS,
    Answer,
    judge_answer_support,
    judge_consistency,
    judge_correct,
    judge_format,
    judge_grounding,
    judge_on_topic,
    judge_refusal,
    reference_declines,
    unsupported_claims,
)
from .parse import Parsed, extract_answer, parse_lenient, parse_response
from .presets import OUTCOME_KEY, REWARD_KEYS, TASK_TYPES
from .text import normalize, normalize_cached, prepare_context

_ANY_TAG_RE: Final = re.compile(r"</?(?:think|proof|answer)>")


@lru_cache(maxsize=8192)
def _expected_norm(expected: str) -> str:
    """Normalised expected answer (the <answer> part when a full reference is given)."""
    return normalize(extract_answer(expected))


#: Flags every verdict carries.
FLAG_NAMES: Final[tuple[str, ...]] = (
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


@lru_cache(maxsize=8192)
def _reference_abstains(expected: str) -> bool:
    return reference_declines(_expected_norm(expected))


def _judge_content(parsed: Parsed, item: Item, refusal: bool = True, answer: Answer | None = None,
                   model_supported: bool | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Content judgements of a response's proof and answer (well formed or best-effort).
    ``refusal``: judge whether the answer is a canned refusal (a malformed response's refusal
    flag is judged on its raw text instead, so the scorer asks for this only when well formed).
    ``answer``: ``Answer(normalize(parsed.answer))`` when the caller already has it.
    ``model_supported``: a model judge's verdict on the answer (see :func:`score`)."""
    t = item.type
    # the answer is normalised and tokenised once; every judge of it reads this analysis
    if answer is None:
        answer = Answer(normalize(parsed.answer))
    abstained = answer.abstained
    conflict = answer.conflict
    ctx = prepare_context(item.context)
    question = normalize_cached(item.question)
    grounding = judge_grounding(parsed.proof, ctx, parsed.proof_cut, question)
    claims = unsupported_claims(answer, ctx, question) if answer.norm else []
    supported = judge_answer_support(answer, ctx, question) and not claims
    # a model judge can only withdraw support from an answer that states a fact: the rules'
    # verdicts (fabricated proofs, unsupported numbers and claims) are never cleared by it
    model_denies = model_supported is False and supported and bool(answer.norm) and not (abstained or conflict)
    if model_denies:
        supported = False
    on_topic = abstained and judge_on_topic(answer, question)
    if t == "answerable":
        correct = (not abstained) and (not conflict) and judge_correct(answer, _expected_norm(item.expected_answer), question)
    elif t == "abstain":
        correct = on_topic and supported
    else:  # a conflict item whose reference itself declines: an on-topic abstention is right too
        correct = supported and (conflict or (on_topic and _reference_abstains(item.expected_answer)))
    consistent = judge_consistency(answer, grounding.proof_norm, question, abstained or conflict,
                                   piece_tokens=grounding.piece_tokens)
    status = grounding.status
    c = dict(
        status=status, supported=supported, correct=correct, abstained=abstained, conflict=conflict,
        consistent=consistent, refusal=refusal and judge_refusal(answer, abstained, conflict),
    )
    detail: dict[str, Any] = {"trace": status}
    if grounding.bad_spans:
        detail["unsupported_spans"] = [x[:200] for x in grounding.bad_spans[:5]]
    if grounding.trivial_spans:
        detail["trivial_spans"] = [x[:200] for x in grounding.trivial_spans[:5]]
    if claims:
        detail["unsupported_claims"] = [x[:200] for x in claims[:5]]
    if model_supported is not None:
        detail["model_supported"] = model_supported
    if model_denies:
        detail["model_unsupported"] = True
    return c, detail


def score(response: object, item: Item, preset: Mapping[str, float], model_supported: bool | None = None) -> Verdict:
    """Score one response for one item under ``preset`` (the 12 signed values).

    Which outcome pays which key (see docs/rewards.md for the full table):

    * malformed -> ``format_mismatch_penalty`` (+ ``incorrect_answer_penalty`` if it is a
      canned refusal).  Its content is still judged on a best-effort parse
      (:func:`rewards.parse.parse_lenient`) for the flags and metrics, never for the reward;
      ``detail["judged"]`` says whether there was a proof or answer to judge;
    * well formed -> ``exact_format``, then
      - canned refusal -> ``missing_trace_penalty`` + ``incorrect_answer_penalty``;
      - verified trace -> ``verifiable_trace`` + one answer-support key (``no_hallucination``
        / ``hallucination_penalty``) + one outcome key (the type's reward / 
        ``incorrect_answer_penalty``) + ``proof_inconsistency_penalty`` when the answer is
        supported by the context but not by the proof (one mistake is not paid twice);
      - missing trace -> ``missing_trace_penalty`` (+ ``hallucination_penalty`` when the
        answer is unsupported): without evidence the answer's outcome is not paid;
      - fabricated trace -> ``hallucinated_trace_penalty`` + ``hallucination_penalty``
        whatever the answer: a fabricated proof earns nothing from its answer.

    So under the shipped presets: verifiable and right > verifiable and wrong > missing proof
    > fabricated proof, whatever the answer (docs/rewards.md, tested).

    ``model_supported``: a model judge's verdict on whether the context supports the answer
    (``rewards.model_judge``); None (the default) is the rules alone.  False makes an answer that
    states a fact (not an abstention, conflict report or refusal) unsupported -- a hallucination,
    paid as the rules pay one -- and is recorded in ``detail["model_unsupported"]``; it never
    clears what the rules found.  True changes nothing.
    """
    p = _preset_values(preset)
    t = item.type
    flags = dict.fromkeys(FLAG_NAMES, False)
    if not isinstance(response, str):  # (a non-string is scored as its text, None as "")
        response = "" if response is None else str(response)
    parsed = parse_response(response)
    flags["format_ok"] = judge_format(parsed)
    if not parsed.ok:
        lenient = parse_lenient(response, parsed)
        candidate = _refusal_candidate(response)
        answer = None
        if lenient.answer and candidate.strip() == lenient.answer:
            # the usual case (the answer section closed, nothing but space after it): the raw
            # candidate is the best-effort answer with space around it, which normalisation
            # drops (normalize(x) == normalize(x.strip()), tested), so its analysis serves both
            answer = Answer(normalize(lenient.answer))
            flags["refusal"] = judge_refusal(answer)
        else:
            flags["refusal"] = judge_refusal(normalize(candidate))
        keys = ["format_mismatch_penalty"] + (["incorrect_answer_penalty"] if flags["refusal"] else [])
        detail: dict[str, Any] = {"format_error": parsed.error, "judged": False}
        if lenient.proof or lenient.answer:
            c, d = _judge_content(lenient, item, refusal=False, answer=answer,  # (c["refusal"] is not read here)
                                  model_supported=model_supported)
            detail.update(d, judged=True)
            flags.update(
                grounded=c["status"] == "verified",
                hallucination=c["status"] == "hallucinated" or not c["supported"],
                correct=c["correct"],
                abstained=c["abstained"],
                conflict_reported=c["conflict"],
                consistent=c["consistent"],
            )
        return _verdict(p, keys, flags, t, detail)

    c, detail = _judge_content(parsed, item, model_supported=model_supported)
    if c["refusal"]:
        flags["refusal"] = True
        flags["consistent"] = True  # a refusal asserts nothing the proof could contradict
        keys = ["exact_format", "missing_trace_penalty", "incorrect_answer_penalty"]
        return _verdict(p, keys, flags, t, {})
    status, supported, correct, consistent = c["status"], c["supported"], c["correct"], c["consistent"]
    keys = ["exact_format"]
    if status == "verified":
        keys += ["verifiable_trace", "no_hallucination" if supported else "hallucination_penalty"]
        keys.append(OUTCOME_KEY[t] if correct else "incorrect_answer_penalty")
        if supported and not consistent:
            keys.append("proof_inconsistency_penalty")
    elif status == "missing":
        keys.append("missing_trace_penalty")
        if not supported:
            keys.append("hallucination_penalty")
    else:
        keys += ["hallucinated_trace_penalty", "hallucination_penalty"]
    hallucination = status == "hallucinated" or not supported
    flags.update(
        grounded=status == "verified",
        hallucination=hallucination,
        correct=correct,
        abstained=c["abstained"],
        conflict_reported=c["conflict"],
        consistent=consistent,
        safe=(not hallucination) and consistent and (correct or c["abstained"] or c["conflict"]),
    )
    return _verdict(p, keys, flags, t, detail)
