"""Custom guards for the DIPG curriculum: plain Python, registered by name, used from TOML.

A spec lists this file in `[run] guard_modules` and calls the functions by name inside guard
expressions, e.g.  when = "hallucination_spike(hallucination_rate, 20, 2.0)".

Each function receives the metric view first (curriculum.windows.MetricHistory: `window`,
`phase_window`, `phase_step`, ...) and then the arguments written in the expression; metric
names arrive as strings.  Return a bool (a condition) or a float (to compare with a number).
"""

from __future__ import annotations

import numpy as np

from curriculum.registry import register_guard


def _finite(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    return a[np.isfinite(a)]


@register_guard()
def hallucination_spike(view, metric: str, n: float, factor: float) -> bool:
    """True when the mean of `metric` over the last n steps exceeds `factor` times its mean over
    the previous phase's final n steps (and at least n steps were seen in this phase)."""
    n = int(n)
    now = _finite(view.window(metric, n))
    before = _finite(view.phase_window(metric, n))
    if now.size < n or before.size == 0:
        return False
    return float(now.mean()) > factor * max(float(before.mean()), 0.01)


@register_guard()
def top_reward_share(view, n: float) -> float:
    """Share of the last n steps in which at least one completion reached the top reward."""
    w = _finite(view.window("top_reward_rate", int(n)))
    return float((w > 0).mean()) if w.size else float("nan")
