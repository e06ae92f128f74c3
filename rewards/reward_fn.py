"""Tunix-compatible reward function object."""

from __future__ import annotations

import math
import threading
from functools import lru_cache
from typing import Any, Sequence

from .metrics import outcome_rates
from .parse import extract_answer
from .presets import TASK_TYPES, LivePreset
from .scoring import Item, Verdict, score


def _expand(kw: dict[str, Any], name: str, n: int, default: Any = None) -> list[Any]:
    """Values of a dataset column for ``n`` completions.

    Accepts a scalar (same for all), a sequence of length ``n``, or a shorter sequence whose
    length divides ``n`` (one entry per prompt, generations group-major)."""
    col = kw.get(name, default)
    if col is None or isinstance(col, (str, bytes)):
        return [col] * n
    try:
        m = len(col)
    except TypeError:
        return [col] * n
    if m == n:
        return list(col)
    if m and n % m == 0:
        g = n // m
        return [col[i // g] for i in range(n)]
    raise ValueError(f"column {name!r} has {m} entries for {n} completions")


def _text(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, bytes):
        return x.decode("utf-8", errors="replace")
    if hasattr(x, "item") and not isinstance(x, str):  # numpy scalar strings
        x = x.item()
        if isinstance(x, bytes):
            return x.decode("utf-8", errors="replace")
    return x if isinstance(x, str) else str(x)


@lru_cache(maxsize=8192)
def _expected(text: str) -> str:
    return extract_answer(text)


class DipgReward:
    """Reward function for Tunix GRPO: ``fn(prompts=..., completions=..., **columns)``.

    Reads the values in force from ``live`` at every call.  Never raises on a bad response
    or a scorer exception: the item is counted in ``error_count`` and gets, per ``on_error``,
    the preset's ``format_mismatch_penalty`` (``"penalty"``, default) or NaN (``"nan"``, which
    the runner counts as a non-finite reward).  ``last_verdicts`` holds the verdicts of the
    last call (None for errored items) and ``last_metrics`` its outcome rates.
    """

    __name__ = "dipg_reward"

    def __init__(self, live: LivePreset, on_error: str = "penalty") -> None:
        if on_error not in ("penalty", "nan"):
            raise ValueError(f"on_error must be 'penalty' or 'nan', not {on_error!r}")
        self.live = live
        self.on_error = on_error
        self.__name__ = "dipg_reward"
        self._lock = threading.Lock()
        self.error_count = 0
        self.last_errors: list[str] = []
        self.last_verdicts: list[Verdict | None] = []
        self.last_metrics: dict[str, float] = {}

    def _error_value(self, values: dict[str, float]) -> float:
        return float(values["format_mismatch_penalty"]) if self.on_error == "penalty" else math.nan

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] | None = None, **kw: Any) -> list[float]:
        values = self.live.values  # one snapshot per batch
        completions = [] if completions is None else list(completions)
        n = len(completions)
        rewards: list[float] = []
        verdicts: list[Verdict | None] = []
        errors: list[str] = []
        try:
            columns = [
                _expand(kw, "task_type", n, "answerable"),
                _expand(kw, "context", n, ""),
                _expand(kw, "question", n, ""),
                _expand(kw, "expected_answer", n, ""),
            ]
            column_error = None
        except Exception as exc:
            columns, column_error = [], f"{type(exc).__name__}: {exc}"
        for i, completion in enumerate(completions):
            try:
                if column_error is not None:
                    raise ValueError(column_error)
                t = _text(columns[0][i]) or "answerable"
                if t not in TASK_TYPES:
                    raise ValueError(f"unknown task_type {t!r}")
                item = Item(
                    id=str(i),
                    type=t,
                    context=_text(columns[1][i]),
                    question=_text(columns[2][i]),
                    expected_answer=_expected(_text(columns[3][i])),
                )
                v = score(_text(completion), item, values)
                if not math.isfinite(v.total):
                    raise ValueError(f"non-finite total {v.total}")
                rewards.append(v.total)
                verdicts.append(v)
            except Exception as exc:  # never crash training; count and apply the policy
                errors.append(f"{i}: {type(exc).__name__}: {exc}"[:300])
                rewards.append(self._error_value(values))
                verdicts.append(None)
        good = [v for v in verdicts if v is not None]
        metrics = outcome_rates(good)
        with self._lock:
            self.error_count += len(errors)
            self.last_errors = errors
            self.last_verdicts = verdicts
            self.last_metrics = metrics
        return rewards


__all__ = ["DipgReward"]
