"""The DIPG reward as a registered reward (``[reward] name = "dipg"``, the default).

It is one reward among others: the engine and the runners know it only through what it
registers here (its 12 value keys, its outcome rates, its maximum reward per task type, its
built-in ``soft`` / ``medium`` presets and its evaluation).  Importing this never imports jax.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from .metrics import RATE_METRICS, _abstain_right, aggregate
from .presets import PRESETS, REWARD_KEYS, TASK_TYPES, max_reward
from .reward_fn import _expand, _expected, _text
from .scoring import Item, Verdict, score

#: the dataset columns the DIPG reward reads
COLUMNS = ("task_type", "context", "question", "expected_answer")


def _items(columns: Mapping[str, Any], n: int) -> list[Item]:
    cols = [_expand(dict(columns), c, n, d) for c, d in zip(COLUMNS, ("answerable", "", "", ""))]
    out = []
    for i in range(n):
        t = _text(cols[0][i]) or "answerable"
        if t not in TASK_TYPES:
            raise ValueError(f"unknown task_type {t!r}")
        out.append(Item(id=str(i), type=t, context=_text(cols[1][i]), question=_text(cols[2][i]),
                        expected_answer=_expected(_text(cols[3][i]))))
    return out


#: what the DIPG reward reports per completion: the rate metrics, and whether the proof is
#: verbatim (``grounded_rate``: a guard can read it, and an evaluation's rows can be paired on it)
OUTCOMES: tuple[str, ...] = RATE_METRICS + ("grounded_rate",)


def _verdicts(completions: Sequence[Any], columns: Mapping[str, Any], vals: Mapping[str, float],
              judge: Any = None) -> tuple[list[Item] | None, list[Verdict | None]]:
    """Items and verdicts (None where the scorer failed or gave a non-finite total); with a
    ``judge`` (a JudgeConfig), the model judge's verdicts applied (rewards/model_judge.py)."""
    n = len(completions)
    try:
        items = _items(columns, n)
    except Exception:  # noqa: BLE001 - a bad column scores every completion as an error
        return None, [None] * n
    verdicts: list[Verdict | None] = []
    for c, it in zip(completions, items):
        try:
            v = score(_text(c), it, vals)
            verdicts.append(v if math.isfinite(v.total) else None)
        except Exception:  # noqa: BLE001
            verdicts.append(None)
    if judge is not None:
        from . import model_judge

        verdicts, _ = model_judge.apply(verdicts, [_text(c) for c in completions], items, vals, model_judge.load(judge),
                                        judge.threshold, judge.batch_size)
    return items, verdicts


def _rewards_and_outcomes(verdicts: Sequence[Verdict | None], items: Sequence[Item] | None,
                          vals: Mapping[str, float]) -> tuple[list[float], dict[str, list[float]]]:
    rewards: list[float] = []
    outcomes: dict[str, list[float]] = {k: [] for k in OUTCOMES}
    for i, v in enumerate(verdicts):
        if v is None or items is None:
            rewards.append(float(vals.get("format_mismatch_penalty", math.nan)))
            for k in outcomes:
                outcomes[k].append(math.nan)
            continue
        rewards.append(v.total)
        f = v.flags
        right = _abstain_right(v, items[i].type)
        for k, x in (
            ("safe_rate", f.get("safe", False)),
            ("hallucination_rate", f.get("hallucination", False)),
            ("refusal_rate", f.get("refusal", False)),
            ("consistency_rate", f.get("consistent", False)),
            ("format_error_rate", not f.get("format_ok", False)),
            ("correct_rate", f.get("correct", False)),
            ("abstention_accuracy", math.nan if right is None else right),
            ("grounded_rate", f.get("grounded", False)),
        ):
            outcomes[k].append(float(x))
    return rewards, outcomes


def dipg(prompts: Sequence[Any] | None = None, completions: Sequence[Any] | None = None,
         values: Mapping[str, float] | None = None, **columns: Any):
    """Score DIPG responses under ``values``; outcomes per completion (the RATE_METRICS).

    Never raises on a bad response or a scorer exception: that completion gets the preset's
    ``format_mismatch_penalty`` and is left out of the outcome rates.
    """
    completions = list(completions or [])
    vals = dict(values or {})
    items, verdicts = _verdicts(completions, columns, vals)
    return _rewards_and_outcomes(verdicts, items, vals)


def dipg_max_reward(values: Mapping[str, float], task_type: Any = None, **_: Any) -> float:
    t = _text(task_type) if task_type is not None else None
    return max_reward(values, t if t in TASK_TYPES else None)


def dipg_evaluate(texts: Sequence[str], columns: Mapping[str, Any], values: Mapping[str, float]) -> dict[str, Any]:
    """The DIPG evaluation protocol: every verdict aggregated with 95 % intervals."""
    items = _items(columns, len(texts))
    verdicts = [score(t, it, dict(values)) for t, it in zip(texts, items)]
    return aggregate(verdicts, items)


def judged(table: Mapping[str, Any]):
    """(reward function, evaluate) of the dipg reward with the model judge of a ``[reward.judge]``
    table: its ``use`` says which of the two asks the model ("eval", "train" or "both"); the
    model is loaded on the first call that needs it."""
    from .model_judge import JudgeConfig

    cfg = JudgeConfig.from_table(table)
    train = cfg.use in ("train", "both")
    ev = cfg.use in ("eval", "both")

    def dipg_judged(prompts: Sequence[Any] | None = None, completions: Sequence[Any] | None = None,
                    values: Mapping[str, float] | None = None, **columns: Any):
        completions = list(completions or [])
        vals = dict(values or {})
        items, verdicts = _verdicts(completions, columns, vals, cfg if train else None)
        return _rewards_and_outcomes(verdicts, items, vals)

    def evaluate_judged(texts: Sequence[str], columns: Mapping[str, Any], values: Mapping[str, float]) -> dict[str, Any]:
        if not ev:
            return dipg_evaluate(texts, columns, values)
        from . import model_judge

        items = _items(columns, len(texts))
        verdicts, _ = model_judge.score_batch(texts, items, dict(values), model_judge.load(cfg), cfg.threshold, cfg.batch_size)
        return aggregate(verdicts, items)

    return (dipg_judged if train else dipg), evaluate_judged


def register() -> None:
    from curriculum.registry import register_reward

    register_reward(
        "dipg",
        keys=REWARD_KEYS,
        outcomes=OUTCOMES,
        max_reward=dipg_max_reward,
        presets=PRESETS,
        evaluate=dipg_evaluate,
    )(dipg)


__all__ = ["dipg", "dipg_max_reward", "dipg_evaluate", "judged", "register", "COLUMNS"]
