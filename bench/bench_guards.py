"""Benchmark of the guard layer, and the collapse detector's operating characteristics.

    python bench/bench_guards.py            # timings + detector stats (~1 minute)
    python bench/bench_guards.py --quick    # timings only

Prints, for history windows of 50 and 1,000 steps:
  * microseconds per guard check for typical guards (expression, cross-phase, collapse, custom),
  * the engine's whole per-step guard cost: one MetricHistory.push of ~20 metrics plus the
    update of a handful of guards (budget: < 1 ms),
and, on seeded synthetic GRPO traces (tests/controller_traces.py), the collapse detector's false-fire
count on healthy traces and its detection-delay distribution on collapses.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from curriculum.controllers import collapse_config, collapse_init, collapse_update  # noqa: E402
from curriculum.guards import compile_guard, history_capacity  # noqa: E402
from curriculum.windows import MetricHistory  # noqa: E402

METRICS = [
    "reward_mean", "reward_median", "reward_std", "reward_min", "reward_max", "reward_range",
    "zero_spread_frac", "top_reward_rate", "nonfinite_rewards", "safe_rate",
    "hallucination_rate", "refusal_rate", "consistency_rate", "format_error_rate",
    "correct_rate", "abstention_accuracy", "loss", "kl", "grad_norm", "completion_length",
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
    vals = rng.normal(size=len(METRICS)).tolist()
    return dict(zip(METRICS, vals))


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


def detector_stats(n_healthy: int, n_collapse: int) -> None:
    import controller_traces as tr

    for baseline in ("previous_phase", "warmup"):
        cfg = collapse_config({"baseline": baseline})
        false_fires = 0
        healthy_steps = 0
        ratios = []
        for seed in range(n_healthy):
            prior, phase = tr.healthy_trace(seed, steps=300)
            st = collapse_init(cfg)
            win = tr.windows_from(prior, cfg.baseline_window)
            worst = 0.0
            fired = False
            for m in phase:
                st, out = collapse_update(cfg, st, m, win)
                worst = max(worst, min(out.score / cfg.h, out.primary_score / (cfg.primary_fraction * cfg.h)))
                fired |= out.fired
            healthy_steps += len(phase)
            false_fires += fired
            ratios.append(worst)
        delays = []
        for seed in range(n_collapse):
            prior, phase, onset = tr.collapse_trace(seed)
            st = collapse_init(cfg)
            win = tr.windows_from(prior, cfg.baseline_window)
            d = math.inf
            for t, m in enumerate(phase):
                st, out = collapse_update(cfg, st, m, win)
                if out.fired and t >= onset:
                    d = t - onset + 1
                    break
            delays.append(d)
        d = np.array(delays)
        found = d[np.isfinite(d)]
        print(f"collapse detector, baseline={baseline}:")
        print(f"  healthy: {n_healthy} traces x 300 steps ({healthy_steps} steps): "
              f"{false_fires} traces with a false fire; worst alarm ratio "
              f"p50 {np.median(ratios):.2f} / p99 {np.percentile(ratios, 99):.2f} / max {max(ratios):.2f} (fires at 1.0)")
        print(f"  collapse: {n_collapse} traces, missed {int((~np.isfinite(d)).sum())}; "
              f"delay (steps after onset, ramp 1-10 steps) min {found.min():.0f} p50 {np.median(found):.0f} "
              f"p90 {np.percentile(found, 90):.0f} p99 {np.percentile(found, 99):.0f} max {found.max():.0f}")
        hist = np.bincount(found.astype(int))
        print("  delay histogram: " + " ".join(f"{i}:{c}" for i, c in enumerate(hist) if c))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="timings only")
    ap.add_argument("--healthy", type=int, default=1000)
    ap.add_argument("--collapse", type=int, default=500)
    args = ap.parse_args()
    for n in (50, 1000):
        bench_timings(n)
    if not args.quick:
        detector_stats(args.healthy, args.collapse)


if __name__ == "__main__":
    main()
