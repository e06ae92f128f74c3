"""Seeded synthetic GRPO traces for the collapse detector, shaped like the upstream logs.

Used by tests/test_collapse.py and bench/bench_collapse.py (not a test module itself).

Rewards take the upstream evaluation's four values (36 verified answer, 1 cautious, -5 wrong,
-15 hallucinated proof).  A group (one prompt, G completions) is *identical* with probability
``c`` (all completions share one outcome, drawn from the mix) and otherwise draws its G
outcomes independently from the mix.  Each trace draws its own healthy mix around the upstream
proportions; the baseline phase (100 steps) and the watched phase differ by a mild drift.

Trace kinds, watched phase of 300 steps, change at step 80:
  healthy      the healthy mix throughout, with two 15-step droughts (no completion at 36) and
               three single steps where every group is identical
  improving    the top outcome's share rises steadily (x2.5 over the phase)
  saturation   from step 60 groups turn into all-36 groups (share rising to 90% by step 160)
  sharp        from step 80 the collapsed mix: 85-95% identical groups of cautious answers,
               no top scores
  gradual      the same collapse reached over a 60-step ramp (80 -> 140)
"""

from __future__ import annotations

import math

import numpy as np

VALUES = np.array([36.0, 1.0, -5.0, -15.0])
TOP = 36.0
ONSET = 80
RAMP = 60
SHAPES = ((1, 4), (2, 4), (4, 4), (8, 4), (2, 8), (8, 8), (16, 2))
KINDS = ("healthy", "improving", "saturation", "sharp", "gradual")


class Params:
    """One trace's healthy and collapsed group-outcome model."""

    def __init__(self, rng: np.random.Generator):
        mix = rng.dirichlet([6.0, 14.0, 6.0, 4.0]) * 0.8 + np.array([0.25, 0.45, 0.18, 0.12]) * 0.2
        self.mix = mix / mix.sum()
        self.c = float(rng.uniform(0.08, 0.25))
        cm = np.array([0.0, 0.9, 0.07, 0.03]) + rng.uniform(0, 0.02, 4) * np.array([0, 1, 1, 1])
        self.collapsed_mix = cm / cm.sum()
        self.collapsed_c = float(rng.uniform(0.85, 0.95))

    def drifted(self, rng: np.random.Generator) -> "Params":
        p = Params.__new__(Params)
        p.__dict__.update(self.__dict__)
        m = self.mix * np.exp(rng.uniform(-0.15, 0.15, 4))
        p.mix = m / m.sum()
        p.c = float(np.clip(self.c + rng.uniform(-0.03, 0.03), 0.03, 0.3))
        return p


def sample_groups(rng, steps: int, prompts: int, g: int, mix: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(steps, prompts, g) rewards; ``mix`` (steps, 4) per-step outcome mix, ``c`` (steps,)."""
    u = rng.random((steps, prompts, g))
    cdf = np.cumsum(mix, axis=1)[:, None, None, :]
    idx = (u[..., None] > cdf).sum(axis=-1).clip(0, 3)
    same = rng.random((steps, prompts)) < c[:, None]
    idx[same] = idx[same][:, :1]
    return VALUES[idx]


def _mix_rows(p: Params, steps: int) -> tuple[np.ndarray, np.ndarray]:
    return np.tile(p.mix, (steps, 1)), np.full(steps, p.c)


def trace(kind: str, seed: int, prompts: int, g: int, steps: int = 300, base_steps: int = 100):
    """(baseline rewards, watched rewards) as (steps, prompts, g) arrays."""
    rng = np.random.default_rng([seed, prompts, g, KINDS.index(kind)])
    base_p = Params(rng)
    p = base_p.drifted(rng)
    bmix, bc = _mix_rows(base_p, base_steps)
    baseline = sample_groups(rng, base_steps, prompts, g, bmix, bc)
    mix, c = _mix_rows(p, steps)
    t = np.arange(steps)
    if kind == "improving":
        share = p.mix[0] * (1.0 + 1.5 * t / steps)
        rest = p.mix[1:] / p.mix[1:].sum()
        mix = np.column_stack([share, (1.0 - share)[:, None] * rest])
    elif kind in ("sharp", "gradual"):
        w = (t >= ONSET).astype(float) if kind == "sharp" else np.clip((t - ONSET + 1) / RAMP, 0.0, 1.0)
        mix = (1 - w)[:, None] * p.mix + w[:, None] * p.collapsed_mix
        c = (1 - w) * p.c + w * p.collapsed_c
    rewards = sample_groups(rng, steps, prompts, g, mix, c)
    if kind == "healthy":
        for start in rng.choice(np.arange(10, steps - 20), size=2, replace=False):
            sl = slice(int(start), int(start) + 15)
            dm = p.mix.copy()
            dm[0] = 0.0
            dm /= dm.sum()
            n = rewards[sl].shape[0]
            rewards[sl] = sample_groups(rng, n, prompts, g, np.tile(dm, (n, 1)), np.full(n, p.c))
        for s in rng.choice(np.arange(5, steps), size=3, replace=False):
            rewards[s] = sample_groups(rng, 1, prompts, g, p.mix[None, :], np.ones(1))[0]
    elif kind == "saturation":
        share = np.clip((t - 60) / 100.0, 0.0, 1.0) * 0.9
        hit = rng.random((steps, prompts)) < share[:, None]
        rewards[hit] = TOP
    return baseline, rewards


def step_metrics(rewards: np.ndarray) -> list[dict[str, float]]:
    """Per-step detector inputs from (steps, P, G) rewards, through the runners' own counting."""
    from runners.base import group_outcome_arrays

    counts = group_outcome_arrays(rewards, np.full(rewards.shape[:2], TOP))
    means = rewards.reshape(rewards.shape[0], -1).mean(axis=1)
    keys = list(counts)
    cols = [counts[k] for k in keys]
    return [
        {**{k: float(col[i]) for k, col in zip(keys, cols)}, "reward_mean": float(means[i])}
        for i in range(rewards.shape[0])
    ]


def group_distribution(mix: np.ndarray, c: float, g: int) -> dict[tuple[int, ...], float]:
    """Exact probability of each outcome-count vector of a group (the counts are sufficient:
    the model is exchangeable, so the KL over counts equals the KL over ordered groups)."""
    out: dict[tuple[int, ...], float] = {}
    for a in range(g + 1):
        for b in range(g + 1 - a):
            for d in range(g + 1 - a - b):
                counts = (a, b, d, g - a - b - d)
                coef = math.factorial(g) / math.prod(math.factorial(k) for k in counts)
                pr = (1.0 - c) * coef * math.prod(float(mix[i]) ** counts[i] for i in range(4))
                if max(counts) == g:
                    pr += c * float(mix[counts.index(g)])
                out[counts] = pr
    return out


def kl_groups(p: Params, g: int) -> float:
    """KL(collapsed || healthy) per group over the full group outcome, in nats: the information
    limit of any detector that sees whole groups (delay >= log(ARL) / (P * KL) steps)."""
    q = group_distribution(p.collapsed_mix, p.collapsed_c, g)
    h = group_distribution(p.mix, p.c, g)
    return float(sum(v * math.log(v / h[k]) for k, v in q.items() if v > 0))
