"""Reward presets: the 12 signed values the scorer adds up, and a thread-safe live holder."""

from __future__ import annotations

import math
import threading
from typing import Mapping

#: The preset keys, in contract order.  Penalties are negative numbers.
REWARD_KEYS: tuple[str, ...] = (
    "correct_synthesis",
    "correct_abstention",
    "conflict_detection",
    "verifiable_trace",
    "exact_format",
    "no_hallucination",
    "hallucination_penalty",
    "hallucinated_trace_penalty",
    "incorrect_answer_penalty",
    "proof_inconsistency_penalty",
    "missing_trace_penalty",
    "format_mismatch_penalty",
)

PRESETS: dict[str, dict[str, float]] = {
    "soft": {
        "correct_synthesis": 20.0,
        "correct_abstention": 30.0,
        "conflict_detection": 20.0,
        "verifiable_trace": 15.0,
        "exact_format": 10.0,
        "no_hallucination": 5.0,
        "hallucination_penalty": -5.0,
        "hallucinated_trace_penalty": -10.0,
        "incorrect_answer_penalty": -5.0,
        "proof_inconsistency_penalty": -5.0,
        "missing_trace_penalty": -5.0,
        "format_mismatch_penalty": -10.0,
    },
    "medium": {
        "correct_synthesis": 20.0,
        "correct_abstention": 30.0,
        "conflict_detection": 20.0,
        "verifiable_trace": 15.0,
        "exact_format": 10.0,
        "no_hallucination": 5.0,
        "hallucination_penalty": -10.0,
        "hallucinated_trace_penalty": -15.0,
        "incorrect_answer_penalty": -10.0,
        "proof_inconsistency_penalty": -10.0,
        "missing_trace_penalty": -10.0,
        "format_mismatch_penalty": -10.0,
    },
}

#: The reward key paid for the correct outcome of each task type.
OUTCOME_KEY: dict[str, str] = {
    "answerable": "correct_synthesis",
    "abstain": "correct_abstention",
    "conflict": "conflict_detection",
}
TASK_TYPES: tuple[str, ...] = tuple(OUTCOME_KEY)


def validate_preset(values: Mapping[str, float]) -> dict[str, float]:
    """Return a plain dict of the 12 keys as finite floats; raise ValueError otherwise."""
    missing = [k for k in REWARD_KEYS if k not in values]
    if missing:
        raise ValueError(f"preset is missing keys: {', '.join(missing)}")
    unknown = sorted(set(values) - set(REWARD_KEYS))
    if unknown:
        raise ValueError(f"preset has unknown keys: {', '.join(unknown)}")
    out: dict[str, float] = {}
    for k in REWARD_KEYS:
        try:
            v = float(values[k])
        except (TypeError, ValueError):
            raise ValueError(f"preset value {k}={values[k]!r} is not a number") from None
        if not math.isfinite(v):
            raise ValueError(f"preset value {k}={v} is not finite")
        out[k] = v
    return out


def get_preset(name: str) -> dict[str, float]:
    """A copy of a built-in preset by name."""
    try:
        return dict(PRESETS[name])
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None


def outcome_bounds(preset: Mapping[str, float], task_type: str = "answerable") -> dict[str, tuple[float, float]]:
    """(lowest, highest) total of each outcome class the scorer can produce for one task type,
    from the reachable component combinations of :func:`rewards.score`:

    * ``verified_right`` / ``verified_wrong``: ``exact_format + verifiable_trace`` + the
      type's reward / ``incorrect_answer_penalty`` + ``no_hallucination`` (with optionally
      ``proof_inconsistency_penalty``) or ``hallucination_penalty``;
    * ``missing``: ``exact_format + missing_trace_penalty`` (+ ``hallucination_penalty``);
    * ``fabricated``: ``exact_format + hallucinated_trace_penalty + hallucination_penalty``;
    * ``refusal``: ``exact_format + missing_trace_penalty + incorrect_answer_penalty``;
    * ``malformed``: ``format_mismatch_penalty`` (+ ``incorrect_answer_penalty``).
    """
    p = validate_preset(preset)
    if task_type not in OUTCOME_KEY:
        raise ValueError(f"unknown task type {task_type!r}")
    base = p["exact_format"] + p["verifiable_trace"]

    def verified(outcome: float) -> list[float]:
        return [base + p["no_hallucination"] + outcome, base + p["no_hallucination"] + outcome + p["proof_inconsistency_penalty"],
                base + p["hallucination_penalty"] + outcome]

    def span(xs: list[float]) -> tuple[float, float]:
        return (float(min(xs)), float(max(xs)))

    m = p["exact_format"] + p["missing_trace_penalty"]
    return {
        "verified_right": span(verified(p[OUTCOME_KEY[task_type]])),
        "verified_wrong": span(verified(p["incorrect_answer_penalty"])),
        "missing": span([m, m + p["hallucination_penalty"]]),
        "fabricated": span([p["exact_format"] + p["hallucinated_trace_penalty"] + p["hallucination_penalty"]]),
        "refusal": span([m + p["incorrect_answer_penalty"]]),
        "malformed": span([p["format_mismatch_penalty"], p["format_mismatch_penalty"] + p["incorrect_answer_penalty"]]),
    }


def max_reward(preset: Mapping[str, float], task_type: str | None = None) -> float:
    """The largest total the scorer can give under ``preset`` (for one task type, or any):
    the highest bound of :func:`outcome_bounds` over its outcome classes.  The bound
    therefore holds for any preset, including odd ones with flipped signs."""
    validate_preset(preset)
    types = TASK_TYPES if task_type is None else (task_type,)
    return float(max(hi for t in types for _, hi in outcome_bounds(preset, t).values()))


class LivePreset:
    """Mutable, thread-safe holder of the reward values in force.

    ``.values`` returns a snapshot copy (so a reader never sees a half-applied update);
    ``.set(values)`` replaces all 12 values at once or updates a subset (``partial=True``).
    """

    def __init__(self, values: Mapping[str, float] | str = "medium") -> None:
        self._lock = threading.Lock()
        self._values = validate_preset(get_preset(values) if isinstance(values, str) else values)
        self._version = 0

    @property
    def values(self) -> dict[str, float]:
        with self._lock:
            return dict(self._values)

    @property
    def version(self) -> int:
        """Incremented by every successful ``set``."""
        with self._lock:
            return self._version

    def set(self, values: Mapping[str, float], partial: bool = False) -> None:
        with self._lock:
            merged = {**self._values, **dict(values)} if partial else dict(values)
            new = validate_preset(merged)
            self._values = new
            self._version += 1

    def __repr__(self) -> str:
        return f"LivePreset({self.values!r})"
