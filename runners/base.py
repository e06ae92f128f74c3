"""The runner protocol: the only thing the engine knows about training.

A runner trains a model phase by phase.  The engine calls, in order:

    runner.open(ctx)                      once per process (build model, tokenizer, data)
    runner.setup_phase(phase)             each time a phase begins, and after a resume
    runner.restore(ckpt_dir)              only when resuming / branching: right after the
                                          setup_phase of the phase the checkpoint was taken in
    for metrics in runner.train(n): ...   a chunk of n steps, one metrics dict per step
    runner.set_penalties(values)          any time between chunks; effective next step
    runner.evaluate()                     at phase end, when the phase asks for it
    runner.save(ckpt_dir)                 right after setup_phase (boundary) and periodically
    runner.restore_policy(ckpt_dir)       optional: a rewind (`rewind = true` on a transition):
                                          right after the next phase's setup_phase, load only
                                          the policy weights of an earlier checkpoint
    runner.close()                        once at the end

Everything here is plain data so it checkpoints and crosses process boundaries cleanly.
This module must not import jax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol, Sequence

from rewards.metrics import RATE_METRICS

# Metric names every reward-producing step reports (GRPO, replay, simulated).
REWARD_STEP_METRICS: tuple[str, ...] = (
    "reward_mean",
    "reward_median",
    "reward_std",
    "reward_min",
    "reward_max",
    "reward_range",
    "zero_spread_frac",  # fraction of GRPO groups whose rewards all equal
    "top_reward_rate",  # fraction of completions at the maximum possible reward
    "nonfinite_rewards",  # count of NaN/inf rewards in the step (excluded from the stats above)
    # GRPO groups by outcome (what the collapse detector reads; see group_outcomes)
    "groups_flat",  # zero spread, below the top reward
    "groups_spread",  # some spread, no completion at the top reward
    "groups_top",  # some spread, a completion at the top reward (NaN: no known top)
    "groups_saturated",  # every completion at the top reward (NaN: no known top)
)

# Per-component outcome rates reported by rewards/ for each scored batch (defined there).
OUTCOME_RATE_METRICS: tuple[str, ...] = RATE_METRICS

# Extra per-step metrics the Tunix runner reports.
TRAINER_METRICS: tuple[str, ...] = (
    "loss",
    "kl",
    "grad_norm",
    "completion_length",
    "learning_rate",
)


@dataclass
class RunContext:
    """What a runner gets once, when it is opened."""

    run_dir: Path
    seed: int
    model: dict[str, Any] = field(default_factory=dict)  # the spec's [model] table, resolved
    data: dict[str, Any] = field(default_factory=dict)  # the spec's [data] table, resolved
    runner: dict[str, Any] = field(default_factory=dict)  # the spec's [runner] table, resolved
    reward: dict[str, Any] = field(default_factory=dict)  # the spec's [reward] table, resolved
    # Several processes train one run (a TPU pod): each runner trains its shard of the batch and
    # reports its own metrics (the engine reduces them); files outside ``save`` are written by
    # process 0 only.  ``save``/``restore`` are called on every process with the same directory.
    process_index: int = 0
    process_count: int = 1


@dataclass
class PhaseSetup:
    """What a runner gets each time a phase begins."""

    name: str
    kind: str  # "sft" | "grpo" | "eval"
    ordinal: int  # how many phases the run has entered before this one (0 for the first)
    max_steps: int | None
    start_phase_step: int  # >0 when resuming inside the phase
    global_step: int
    penalties: dict[str, float]  # reward/penalty values in force (the preset + overrides)
    train: dict[str, Any]  # training hyperparameters (learning_rate, beta, epsilon, ...)
    eval: dict[str, Any]  # evaluation settings (enabled, num_items, samples, greedy, ...)
    previous_phase: str | None = None
    preset: str | None = None  # name of the penalty preset in force


class Runner(Protocol):
    """A training back end.  See module docstring for the call order."""

    #: names of the metrics this runner can report; guards may only use these.
    metric_names: frozenset[str]

    def open(self, ctx: RunContext) -> None: ...

    def setup_phase(self, phase: PhaseSetup) -> None: ...

    def set_penalties(self, values: Mapping[str, float]) -> None: ...

    def train(self, n_steps: int) -> Iterator[dict[str, float]]:
        """Train up to n_steps; yield one metrics dict per finished step.

        Yielding fewer than n_steps means the runner is exhausted (e.g. a replay trace ended).
        """
        ...

    def evaluate(self) -> dict[str, float]: ...

    def save(self, ckpt_dir: Path) -> None: ...

    def restore(self, ckpt_dir: Path) -> None: ...

    def close(self) -> None: ...


def group_outcomes(
    rewards: Any, group_size: int, top: float | Sequence[float] | None
) -> dict[str, float]:
    """Count a step's GRPO groups by outcome: flat, spread, top, saturated.

    ``rewards``: one step's rewards, group-major, ``group_size`` per prompt (for many steps at
    once use :func:`group_outcome_arrays`).  ``top``: the
    maximum reward (one value, one per group, or None when the reward declares none: then
    ``groups_top`` and ``groups_saturated`` are NaN and ``groups_flat`` counts every zero-spread
    group).  Groups with fewer than two finite rewards are left out.
    """
    import numpy as np

    g = max(1, int(group_size))
    arr = np.asarray(rewards, dtype=np.float64).reshape(-1)
    n_groups = arr.size // g
    if n_groups * g != arr.size:  # a trailing partial group: keep what forms whole groups
        arr = arr[: n_groups * g]
    grid = arr.reshape(n_groups, g)
    tops = None if top is None else np.broadcast_to(np.asarray(top, dtype=np.float64).reshape(-1), (n_groups,))
    counts = group_outcome_arrays(grid[None, :, :], None if tops is None else tops[None, :])
    return {k: float(v[0]) for k, v in counts.items()}


def group_outcome_arrays(grid: Any, tops: Any) -> dict[str, Any]:
    """Vectorised :func:`group_outcomes`: ``grid`` (steps, P, G) rewards, ``tops`` (steps, P)
    or None; returns per-step count arrays (the benchmark and the tests use this directly)."""
    import numpy as np

    grid = np.asarray(grid, dtype=np.float64)
    fin = np.isfinite(grid)
    valid = fin.sum(axis=2) >= 2
    hi = np.where(fin, grid, -np.inf).max(axis=2)
    lo = np.where(fin, grid, np.inf).min(axis=2)
    zero = valid & (hi - lo < 1e-9)
    if tops is None:
        nan = np.full(grid.shape[0], np.nan)
        return {
            "groups_flat": zero.sum(axis=1).astype(np.float64),
            "groups_spread": (valid & ~zero).sum(axis=1).astype(np.float64),
            "groups_top": nan,
            "groups_saturated": nan.copy(),
        }
    tops = np.asarray(tops, dtype=np.float64)
    reach = valid & (hi >= tops - 1e-9)
    sat = zero & reach
    return {
        "groups_flat": (zero & ~reach).sum(axis=1).astype(np.float64),
        "groups_spread": (valid & ~zero & ~reach).sum(axis=1).astype(np.float64),
        "groups_top": (valid & ~zero & reach).sum(axis=1).astype(np.float64),
        "groups_saturated": sat.sum(axis=1).astype(np.float64),
    }


def reward_step_stats(
    rewards: Sequence[float], group_size: int, top_reward: float | Sequence[float] | None
) -> dict[str, float]:
    """Statistics of one training step's rewards (group-major, ``group_size`` per prompt).

    Non-finite rewards are counted in ``nonfinite_rewards`` and left out of every other
    statistic; a step with no finite reward reports NaN statistics (which guards count as
    non-finite, never as a pass).
    """
    finite = [float(r) for r in rewards if math.isfinite(float(r))]
    nonfinite = len(rewards) - len(finite)
    out: dict[str, float] = {"nonfinite_rewards": float(nonfinite)}
    if not finite:
        for name in REWARD_STEP_METRICS:
            if name != "nonfinite_rewards":
                out[name] = math.nan
        out.update(group_outcomes(rewards, group_size, top_reward))
        return out
    n = len(finite)
    mean = sum(finite) / n
    # (r - mean) * (r - mean), not ** 2: finite extremes such as 1e308 overflow to inf (reported as
    # a non-finite statistic) instead of raising OverflowError
    var = sum((r - mean) * (r - mean) for r in finite) / n
    srt = sorted(finite)
    median = srt[n // 2] if n % 2 else 0.5 * (srt[n // 2 - 1] + srt[n // 2])
    out.update(
        reward_mean=mean,
        reward_median=median,
        reward_std=math.sqrt(var),
        reward_min=srt[0],
        reward_max=srt[-1],
        reward_range=srt[-1] - srt[0],
    )
    g = max(1, int(group_size))
    groups = [list(rewards[i : i + g]) for i in range(0, len(rewards), g)]
    zero = 0
    counted = 0
    for grp in groups:
        vals = [float(v) for v in grp if math.isfinite(float(v))]
        if len(vals) < 2:
            continue
        counted += 1
        if max(vals) - min(vals) < 1e-9:
            zero += 1
    out["zero_spread_frac"] = zero / counted if counted else math.nan
    if top_reward is None:
        out["top_reward_rate"] = math.nan
    elif isinstance(top_reward, (int, float)):
        out["top_reward_rate"] = sum(1 for r in finite if r >= top_reward - 1e-9) / n
    else:  # one top per group (the Tunix runner: the maximum depends on each item's task type)
        per = [float(t) for t in top_reward for _ in range(g)]
        hits = [float(r) >= t - 1e-9 for r, t in zip(rewards, per) if math.isfinite(float(r))]
        out["top_reward_rate"] = sum(hits) / n
    out.update(group_outcomes(rewards, g, top_reward))
    return out
