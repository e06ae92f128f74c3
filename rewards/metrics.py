"""Aggregate metrics over scored responses, each with a 95 % confidence interval.

Definitions (n = number of verdicts unless stated):

* ``reward_mean`` / ``reward_median`` / ``reward_std`` (population) / ``reward_min`` /
  ``reward_max`` of the finite totals; CIs computed analytically in O(n log n) with no
  resampling (``reward_metrics``): mean and std by the normal approximation (the std by the
  delta method), the median by the distribution-free order-statistic interval, min and max
  by the exact quantiles of their bootstrap distribution.  (``bootstrap_reward_metrics``, the
  seeded percentile bootstrap, is kept for comparison.)
* ``safe_rate``: fraction with flag ``safe`` (well formed, no hallucination, proof-consistent,
  and either correct for its type or an explicit abstention / conflict report; never a refusal).
* ``hallucination_rate``: fraction with flag ``hallucination`` (a proof span not in the context,
  or an answer claim the context does not support), over all responses: malformed ones are
  judged on a best-effort parse.  ``unjudged_rate`` (in ``aggregate``) is the fraction that had
  no proof or answer to judge at all (counted False in the other rates).
* ``grounded_rate`` (in ``aggregate``): fraction whose proof is verbatim (flag ``grounded``:
  every quoted span is in the context), over all responses.
* ``refusal_rate``: fraction that are canned refusals.
* ``consistency_rate``: fraction with flag ``consistent`` (answer claims supported by the proof;
  malformed responses count as not consistent).
* ``format_error_rate``: fraction not strictly well formed.
* ``correct_rate``: fraction with flag ``correct`` (the right outcome for the item's type:
  matching answer, abstention, or conflict report).
* ``abstention_accuracy``: fraction whose abstain decision is right: an ``abstain`` item that the
  response abstained on, or an ``answerable``/``conflict`` item it did not abstain on (a conflict
  item counts as right whenever the conflict is reported, even alongside "cannot be
  determined").  Items of unknown type are left out (n may be smaller).

Rates use the Wilson score interval (z = 1.96).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from .scoring import Item, Verdict, score

Z95 = 1.959963984540054
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20240601

RATE_METRICS: tuple[str, ...] = (
    "safe_rate",
    "hallucination_rate",
    "refusal_rate",
    "consistency_rate",
    "format_error_rate",
    "correct_rate",
    "abstention_accuracy",
)
REWARD_METRICS: tuple[str, ...] = ("reward_mean", "reward_median", "reward_std", "reward_min", "reward_max")


@dataclass(frozen=True)
class Metric:
    value: float
    lo: float
    hi: float
    n: int = 0

    def to_json(self) -> dict[str, float | int | None]:
        def f(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {"value": f(self.value), "lo": f(self.lo), "hi": f(self.hi), "n": self.n}


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (nan, nan) when n == 0."""
    if n <= 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # the interval always contains the observed rate (rounding can push a bound past it at 0 or 1)
    return (min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))


def _stats(values: Sequence[float]):
    import numpy as np

    a = np.asarray(values, dtype=float)
    return {
        "reward_mean": float(a.mean()),
        "reward_median": float(np.median(a)),
        "reward_std": float(a.std()),
        "reward_min": float(a.min()),
        "reward_max": float(a.max()),
    }


def bootstrap_reward_metrics(
    values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> dict[str, Metric]:
    """Reward statistics with seeded percentile-bootstrap 95 % CIs (deterministic for a seed)."""
    import numpy as np

    n = len(values)
    if n == 0:
        return {k: Metric(math.nan, math.nan, math.nan, 0) for k in REWARD_METRICS}
    point = _stats(values)
    a = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    s = a[idx]
    boots = {
        "reward_mean": s.mean(axis=1),
        "reward_median": np.median(s, axis=1),
        "reward_std": s.std(axis=1),
        "reward_min": s.min(axis=1),
        "reward_max": s.max(axis=1),
    }
    out = {}
    for k in REWARD_METRICS:
        lo, hi = np.percentile(boots[k], [2.5, 97.5])
        out[k] = Metric(point[k], float(lo), float(hi), n)
    return out


def _quantile_index(cdf, q: float) -> int:
    import numpy as np

    return int(min(len(cdf) - 1, np.searchsorted(cdf, q - 1e-12)))  # type: ignore[call-overload]


def reward_metrics(values: Sequence[float]) -> dict[str, Metric]:
    """Reward statistics with analytic 95 % CIs (see the module docstring); deterministic,
    O(n log n) time and O(n) memory."""
    import numpy as np

    n = len(values)
    if n == 0:
        return {k: Metric(math.nan, math.nan, math.nan, 0) for k in REWARD_METRICS}
    a = np.sort(np.asarray(values, dtype=float))
    mean = float(a.mean())
    sd = float(a.std())
    out = {}
    half = Z95 * float(a.std(ddof=1)) / math.sqrt(n) if n > 1 else 0.0
    out["reward_mean"] = Metric(mean, mean - half, mean + half, n)
    j = max(0, int(math.floor(n / 2 - Z95 * math.sqrt(n) / 2)))
    k = min(n - 1, int(math.ceil(n / 2 + Z95 * math.sqrt(n) / 2)))
    out["reward_median"] = Metric(float(np.median(a)), float(a[j]), float(a[k]), n)
    if sd > 0 and n > 1:
        m4 = float(((a - mean) ** 4).mean())
        se = math.sqrt(max(0.0, m4 - sd**4) / (4 * sd * sd * n))
        out["reward_std"] = Metric(sd, max(0.0, sd - Z95 * se), sd + Z95 * se, n)
    else:
        out["reward_std"] = Metric(sd, sd, sd, n)
    # bootstrap distribution of the minimum: P(min <= a_i) = 1 - (1 - (i+1)/n)^n
    i = np.arange(1, n + 1, dtype=float)
    cdf_min = 1.0 - (1.0 - i / n) ** n
    cdf_max = ((i - 1) / n) ** n  # P(max < a_i)
    out["reward_min"] = Metric(float(a[0]), float(a[_quantile_index(cdf_min, 0.025)]), float(a[_quantile_index(cdf_min, 0.975)]), n)
    lo_i = max(0, int(np.searchsorted(cdf_max, 0.025, side="right")) - 1)
    hi_i = max(0, int(np.searchsorted(cdf_max, 0.975, side="right")) - 1)
    out["reward_max"] = Metric(float(a[-1]), float(a[lo_i]), float(a[hi_i]), n)
    return out


def _types(verdicts: Sequence[Verdict], items: Sequence[Item] | None) -> list[str]:
    if items is not None:
        if len(items) != len(verdicts):
            raise ValueError(f"{len(verdicts)} verdicts but {len(items)} items")
        return [it.type for it in items]
    return [v.task_type for v in verdicts]


def _abstain_right(v: Verdict, t: str) -> bool | None:
    if t == "abstain":
        return v.flags.get("abstained", False) and not v.flags.get("refusal", False)
    if t == "answerable":
        return not v.flags.get("abstained", False)
    if t == "conflict":
        return v.flags.get("conflict_reported", False) or not v.flags.get("abstained", False)
    return None


def rate_counts(verdicts: Sequence[Verdict], items: Sequence[Item] | None = None) -> dict[str, tuple[int, int]]:
    """(successes, n) for every rate metric."""
    n = len(verdicts)
    fl = [v.flags for v in verdicts]
    counts = {
        "safe_rate": (sum(f.get("safe", False) for f in fl), n),
        "hallucination_rate": (sum(f.get("hallucination", False) for f in fl), n),
        "refusal_rate": (sum(f.get("refusal", False) for f in fl), n),
        "consistency_rate": (sum(f.get("consistent", False) for f in fl), n),
        "format_error_rate": (sum(not f.get("format_ok", False) for f in fl), n),
        "correct_rate": (sum(f.get("correct", False) for f in fl), n),
    }
    judged = [r for r in (_abstain_right(v, t) for v, t in zip(verdicts, _types(verdicts, items))) if r is not None]
    counts["abstention_accuracy"] = (sum(judged), len(judged))
    return counts


def outcome_rates(verdicts: Sequence[Verdict], items: Sequence[Item] | None = None) -> dict[str, float]:
    """The OUTCOME_RATE_METRICS of a batch (NaN where n == 0)."""
    return {k: (s / n if n else math.nan) for k, (s, n) in rate_counts(verdicts, items).items()}


def aggregate(
    verdicts: Iterable[Verdict], items: Sequence[Item] | None = None, seed: int = BOOTSTRAP_SEED
) -> dict[str, Metric]:
    """All metrics (see module docstring) with 95 % CIs."""
    vs = list(verdicts)
    totals = [v.total for v in vs if math.isfinite(v.total)]
    out = reward_metrics(totals)
    counts = rate_counts(vs, items)
    counts["unjudged_rate"] = (sum(1 for v in vs if v.detail.get("judged", True) is False), len(vs))
    # verbatim proofs (every quoted span is in the context): what a safe answer is built on
    counts["grounded_rate"] = (sum(1 for v in vs if v.flags.get("grounded", False)), len(vs))
    for k, (s, n) in counts.items():
        lo, hi = wilson(s, n)
        out[k] = Metric(s / n if n else math.nan, lo, hi, n)
    return out


def evaluate(
    responses: Sequence[str], items: Sequence[Item], preset: Mapping[str, float], seed: int = BOOTSTRAP_SEED
) -> tuple[list[Verdict], dict[str, Metric]]:
    """Score ``responses[i]`` against ``items[i]`` with ``preset`` (use the training preset
    unless told otherwise) and aggregate: the evaluation protocol in one call."""
    if len(responses) != len(items):
        raise ValueError(f"{len(responses)} responses but {len(items)} items")
    verdicts = [score(r, it, preset) for r, it in zip(responses, items)]
    return verdicts, aggregate(verdicts, items, seed=seed)
