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


def max_reward(preset: Mapping[str, float], task_type: str | None = None) -> float:
    """The largest total the scorer can give under ``preset`` (for one task type, or any).

    Computed from the reachable component combinations of :func:`rewards.score`:

    * malformed response: ``format_mismatch_penalty`` (+ ``incorrect_answer_penalty`` for a
      refusal);
    * well-formed canned refusal: ``exact_format + missing_trace_penalty +
      incorrect_answer_penalty``;
    * well-formed otherwise: ``exact_format`` + one trace key (``verifiable_trace`` |
      ``missing_trace_penalty`` | ``hallucinated_trace_penalty``) + one answer-support key
      (``no_hallucination`` | ``hallucination_penalty``) + one outcome key (the type's reward |
      ``incorrect_answer_penalty``) + optionally ``proof_inconsistency_penalty``.

    The bound therefore holds for any preset, including odd ones with flipped signs.
    """
    p = validate_preset(preset)
    types = TASK_TYPES if task_type is None else (task_type,)
    for t in types:
        if t not in OUTCOME_KEY:
            raise ValueError(f"unknown task type {t!r}")
    best = -math.inf
    for t in types:
        malformed = max(
            p["format_mismatch_penalty"],
            p["format_mismatch_penalty"] + p["incorrect_answer_penalty"],
        )
        refusal = p["exact_format"] + p["missing_trace_penalty"] + p["incorrect_answer_penalty"]
        wellformed = (
            p["exact_format"]
            + max(p["verifiable_trace"], p["missing_trace_penalty"], p["hallucinated_trace_penalty"])
            + max(p["no_hallucination"], p["hallucination_penalty"])
            + max(p[OUTCOME_KEY[t]], p["incorrect_answer_penalty"])
            + max(0.0, p["proof_inconsistency_penalty"])
        )
        best = max(best, malformed, refusal, wellformed)
    return float(best)


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
