"""Seeded synthetic GRPO reward traces shaped like the Med-Safety-Gym report.

Used by tests/test_controllers.py and bench/bench_guards.py (not a test module itself).

Healthy soft/medium steps: ``batch`` prompts (4-8) x ``group`` completions (G=4).  A completion
hits the top reward (36) with probability ``p_top`` (5-25%), otherwise it scores a multiple of
5 in [-15, +30] around a per-prompt level, so the step's reward range is mostly 30-51.  Some
groups score identically by chance (``p_same`` up to 12%).  The next phase drifts mildly from
the baseline phase (top rate +-0.04, level +-3, p_same +-0.03).  Hazards that must NOT fire a
collapse detector: 15-step droughts with no top reward (range drops to ~30-45) and isolated
single-step blips where the whole step collapses (max reward 36 -> 1, range ~0-6, every group
zero-spread).  A collapse: over ``ramp`` (1-10) steps, 85-100% of the groups turn into
identical-reward groups (range ~0-6, zero-spread fraction toward 1).
"""

from __future__ import annotations

import math

import numpy as np

TOP = 36.0
SIGNALS = ("reward_range", "zero_spread_frac", "top_reward_rate", "refusal_rate")


class TraceParams:
    def __init__(self, rng: np.random.Generator):
        self.batch = int(rng.integers(4, 9))
        self.group = 4
        self.p_top = float(rng.uniform(0.05, 0.25))
        self.level = float(rng.uniform(0.0, 14.0))
        self.p_same = float(rng.uniform(0.0, 0.12))
        self.refusal = float(rng.uniform(0.02, 0.15))

    def drifted(self, rng: np.random.Generator) -> "TraceParams":
        """Same run, next phase: mild shifts (new penalties, a bit more learning)."""
        p = TraceParams.__new__(TraceParams)
        p.__dict__.update(self.__dict__)
        p.p_top = float(np.clip(self.p_top + rng.uniform(-0.04, 0.04), 0.05, 0.25))
        p.level = float(self.level + rng.uniform(-3.0, 3.0))
        p.p_same = float(np.clip(self.p_same + rng.uniform(-0.03, 0.03), 0.0, 0.12))
        return p


def healthy_rewards(rng: np.random.Generator, p: TraceParams, steps: int, p_top=None) -> np.ndarray:
    """(steps, batch, group) rewards; ``p_top`` may be a per-step array."""
    p_top = np.full(steps, p.p_top) if p_top is None else np.asarray(p_top, dtype=float)
    shape = (steps, p.batch, p.group)
    base = rng.normal(p.level, 10.0, size=(steps, p.batch, 1))
    vals = np.clip(5.0 * np.round((base + rng.normal(0.0, 9.0, shape)) / 5.0), -15.0, 30.0)
    vals[rng.random(shape) < p_top[:, None, None]] = TOP
    same = rng.random((steps, p.batch)) < p.p_same
    vals[same] = vals[same][:, :1]
    return vals


def collapse_groups(rng, rewards: np.ndarray, value: float, frac: np.ndarray) -> np.ndarray:
    """Replace a per-step fraction ``frac`` of groups by identical ``value`` groups (tiny jitter)."""
    steps, batch, group = rewards.shape
    out = rewards.copy()
    hit = rng.random((steps, batch)) < np.asarray(frac)[:, None]
    g = np.full(rewards.shape, float(value))
    jitter = rng.random(rewards.shape) < 0.04
    g[jitter] += rng.choice([-5.0, 1.0, 5.0], size=int(jitter.sum()))
    out[hit] = g[hit]
    return out


def metrics_of(rewards: np.ndarray, refusal: np.ndarray) -> list[dict[str, float]]:
    """Per-step metrics (as runners.base.reward_step_stats computes them) for (steps, B, G)."""
    flat = rewards.reshape(rewards.shape[0], -1)
    spread = rewards.max(axis=2) - rewards.min(axis=2)
    cols = {
        "reward_mean": flat.mean(axis=1),
        "reward_max": flat.max(axis=1),
        "reward_min": flat.min(axis=1),
        "reward_range": flat.max(axis=1) - flat.min(axis=1),
        "zero_spread_frac": (spread < 1e-9).mean(axis=1),
        "top_reward_rate": (flat >= TOP - 1e-9).mean(axis=1),
        "refusal_rate": refusal,
    }
    names = list(cols)
    rows = np.stack([cols[n] for n in names], axis=1).tolist()
    return [dict(zip(names, r)) for r in rows]


def _refusal(rng, p: TraceParams, steps: int) -> np.ndarray:
    return np.clip(p.refusal + rng.normal(0.0, 0.05, steps), 0.0, 1.0)


def healthy_trace(seed: int, steps: int = 300, prior: int = 100, blips: int = 3, droughts: int = 2):
    """(prior-phase metrics, phase metrics) of a healthy run with droughts and blips."""
    rng = np.random.default_rng(seed)
    p0 = TraceParams(rng)
    p1 = p0.drifted(rng)
    prior_m = metrics_of(healthy_rewards(rng, p0, prior), _refusal(rng, p0, prior))
    p_top = np.full(steps, p1.p_top)
    for _ in range(droughts):
        s = int(rng.integers(0, steps - 15))
        p_top[s : s + 15] = 0.0
    rewards = healthy_rewards(rng, p1, steps, p_top)
    blip_at: list[int] = []
    while len(blip_at) < blips:  # isolated single-step blips, at least 10 steps apart
        t = int(rng.integers(0, steps))
        if all(abs(t - b) > 10 for b in blip_at):
            blip_at.append(t)
    for t in blip_at:
        one = collapse_groups(rng, rewards[t : t + 1], 1.0, np.ones(1))
        rewards[t] = np.minimum(one[0], 1.0)  # max reward 36 -> 1 for one step
    return prior_m, metrics_of(rewards, _refusal(rng, p1, steps))


def collapse_trace(seed: int, onset: int = 60, steps: int = 160, prior: int = 100):
    """(prior metrics, phase metrics, onset step) with a collapse beginning at ``onset``."""
    rng = np.random.default_rng(10_000 + seed)
    p0 = TraceParams(rng)
    p1 = p0.drifted(rng)
    ramp = int(rng.integers(1, 11))
    final = float(rng.uniform(0.85, 1.0))
    value = float(rng.choice([-10.0, -5.0, 0.0, 5.0, 20.0, 30.0]))
    prior_m = metrics_of(healthy_rewards(rng, p0, prior), _refusal(rng, p0, prior))
    t = np.arange(steps)
    frac = np.where(t < onset, 0.0, final * np.minimum(1.0, (t - onset + 1) / ramp))
    rewards = collapse_groups(rng, healthy_rewards(rng, p1, steps), value, frac)
    return prior_m, metrics_of(rewards, _refusal(rng, p1, steps)), onset


def windows_from(prior_m, n: int = 50) -> dict[str, list[float]]:
    tail = prior_m[-n:]
    return {s: [m[s] for m in tail] for s in SIGNALS}


def nan_metrics() -> dict[str, float]:
    return {s: math.nan for s in SIGNALS}
