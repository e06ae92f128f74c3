"""Benchmark of the guard layer.

    python bench/bench_guards.py

Prints, for history windows of 50 and 1,000 steps:
  * microseconds per guard check for typical guards (expression, cross-phase, collapse, custom),
  * the engine's whole per-step guard cost: one MetricHistory.push of ~20 metrics plus the
    update of a handful of guards (budget: < 1 ms).
The collapse detector's false reverts and delays at every batch shape: bench/bench_collapse.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from curriculum.guards import compile_guard, history_capacity  # noqa: E402
from curriculum.windows import MetricHistory  # noqa: E402

METRICS = [
    "reward_mean", "reward_median", "reward_std", "reward_min", "reward_max", "reward_range",
    "zero_spread_frac", "top_reward_rate", "nonfinite_rewards", "safe_rate",
    "hallucination_rate", "refusal_rate", "consistency_rate", "format_error_rate",
    "correct_rate", "abstention_accuracy", "loss", "kl", "grad_norm", "completion_length",
    "groups_flat", "groups_spread", "groups_top", "groups_saturated",
]


def guard_tables(n: int) -> dict[str, dict]:
    return {
        "escalate": {"when": f"mean(reward_mean, {n}) > 25 and std(reward_mean, {n}) < 4 "
                             f"and nonfinite(reward_mean, {n}) == 0", "patience": 3},
        "revert": {"when": f"max(reward_max, {n}) < 0.5 * prev(max(reward_max, {n})) "
                           f"or quantile(reward_range, 0.9, {n}) < 6"},
        "trend": {"when": f"slope(kl, {n}) > 0.01 and ema(kl, 0.1, {n}) > 0.2",
                  "until": f"median(kl, {n}) < 0.1"},
        "collapse": {"type": "collapse", "baseline_window": min(n, 50)},
        "custom": {"type": "custom", "function": "stalled", "args": ["reward_mean", n]},
    }


def stalled(view, metric, n):
    w = view.window(metric, int(n))
    return len(w) >= n and float(np.nanmax(w) - np.nanmin(w)) < 1.0


def random_metrics(rng: np.random.Generator) -> dict[str, float]:
    vals = dict(zip(METRICS, rng.normal(size=len(METRICS)).tolist()))
    for k in ("groups_flat", "groups_spread", "groups_top", "groups_saturated"):
        vals[k] = float(rng.integers(0, 3))  # group counts, as the collapse detector reads them
    return vals


def bench_timings(n: int, steps: int = 500, repeats: int = 7) -> None:
    """Per-step costs; each figure is the best of ``repeats`` runs of ``steps`` steps (the
    minimum filters out noise from other processes; the median is shown too)."""
    functions = {"stalled": stalled}
    guards = {k: compile_guard(k, t, METRICS, functions) for k, t in guard_tables(n).items()}
    cap = history_capacity(guards.values())
    rng = np.random.default_rng(0)
    h = MetricHistory(cap)
    h.begin_phase("soft")
    for _ in range(cap):
        h.push(random_metrics(rng))
    h.begin_phase("medium")
    for _ in range(cap):  # full windows: the worst case
        h.push(random_metrics(rng))
    states = {k: g.init_state() for k, g in guards.items()}
    for k, g in guards.items():  # warm up: baselines set, caches hot
        states[k], _ = g.update(states[k], h, functions)
    rows = [random_metrics(rng) for _ in range(steps)]
    runs: dict[str, list[float]] = {k: [] for k in ["push", *guards, "step", "cpu"]}
    for _ in range(repeats):
        per = {k: 0.0 for k in runs}
        c0 = time.thread_time()
        t0 = time.perf_counter()
        for row in rows:
            a = time.perf_counter()
            h.push(row)
            per["push"] += time.perf_counter() - a
            for k, g in guards.items():
                a = time.perf_counter()
                states[k], _ = g.update(states[k], h, functions)
                per[k] += time.perf_counter() - a
        per["step"] = time.perf_counter() - t0
        per["cpu"] = time.thread_time() - c0  # CPU time of this thread: robust to machine load
        for k, v in per.items():
            runs[k].append(1e6 * v / steps)
    print(f"window {n:>5} (history capacity {cap}); us per step, best / median of {repeats} x {steps} steps:")
    print(f"  push of {len(METRICS)} metrics              {min(runs['push']):7.1f} / {np.median(runs['push']):7.1f}")
    for k, g in guards.items():
        print(f"  guard {k:<9} ({g.kind:<8}) check  {min(runs[k]):7.1f} / {np.median(runs[k]):7.1f}")
    print(f"  whole step (push + {len(guards)} guards)      {min(runs['step']):7.1f} / {np.median(runs['step']):7.1f}")
    print(f"  whole step, CPU time (incl. timer calls)  {min(runs['cpu']):7.1f} / {np.median(runs['cpu']):7.1f}")


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    for n in (50, 1000):
        bench_timings(n)


if __name__ == "__main__":
    main()
