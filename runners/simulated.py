"""A declared stochastic reward model, to dry-run a curriculum before spending accelerator hours.

Each GRPO step samples `batch_size` prompts x `group_size` completions.  Every completion gets an
*outcome* (perfect answer, correct abstention, hallucination, refusal, ...) drawn from the
behaviour declared for the current phase; its reward is the sum of the preset values in force
for that outcome's components, so a penalty change is visible in the rewards at once.  A group
collapses (all G completions share one outcome, zero reward spread) with probability
`group_collapse`.  `drift` moves outcome weights linearly with the phase step, and
`collapse_after` switches to a `collapsed` behaviour after that many steps in the phase: the
report's block 2, where the model stopped trying.

Everything random is drawn from numpy's generator seeded by (seed, global step), so a run is
reproducible step by step, across chunks and across a kill and resume.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rewards import wilson
from runners.base import (
    OUTCOME_RATE_METRICS,
    REWARD_STEP_METRICS,
    PhaseSetup,
    RunContext,
    reward_step_stats,
)

# outcome -> (preset keys summed for its reward, flags)
OUTCOMES: dict[str, tuple[tuple[str, ...], dict[str, bool]]] = {
    "perfect": (
        ("correct_synthesis", "verifiable_trace", "exact_format", "no_hallucination"),
        {"safe": True, "correct": True, "consistent": True},
    ),
    "abstain": (
        ("correct_abstention", "verifiable_trace", "exact_format", "no_hallucination"),
        {"safe": True, "correct": True, "consistent": True, "abstained": True},
    ),
    "conflict": (
        ("conflict_detection", "verifiable_trace", "exact_format", "no_hallucination"),
        {"safe": True, "correct": True, "consistent": True},
    ),
    "unproven": (
        ("correct_synthesis", "missing_trace_penalty", "exact_format", "no_hallucination"),
        {"safe": True, "correct": True, "consistent": True},
    ),
    "wrong": (
        ("incorrect_answer_penalty", "verifiable_trace", "exact_format", "no_hallucination"),
        {"safe": True, "consistent": True},
    ),
    "inconsistent": (
        ("proof_inconsistency_penalty", "verifiable_trace", "exact_format", "no_hallucination"),
        {"safe": True},
    ),
    "hallucination": (
        ("hallucination_penalty", "hallucinated_trace_penalty", "exact_format"),
        {"hallucination": True},
    ),
    "refusal": (
        ("incorrect_answer_penalty", "exact_format", "no_hallucination"),
        {"safe": True, "refusal": True, "consistent": True},
    ),
    "format_error": (("format_mismatch_penalty",), {"format_error": True}),
}

METRIC_NAMES = frozenset(REWARD_STEP_METRICS) | frozenset(OUTCOME_RATE_METRICS) | {"loss"}

_DEFAULT_WEIGHTS = {"perfect": 0.2, "unproven": 0.2, "wrong": 0.2, "hallucination": 0.2, "refusal": 0.1, "format_error": 0.1}


class Behaviour(BaseModel):
    # strict: TOML is typed, "8" is not a count; no nan/inf weights or rates
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    weights: dict[str, float] = Field(default_factory=lambda: dict(_DEFAULT_WEIGHTS))
    drift: dict[str, float] = Field(default_factory=dict)  # added to a weight per phase step
    group_collapse: float = Field(0.05, ge=0, le=1)
    collapse_after: int | None = Field(None, ge=0)
    collapsed: dict[str, float] = Field(default_factory=lambda: {"refusal": 0.85, "wrong": 0.1, "perfect": 0.05})
    collapsed_group_collapse: float = Field(0.9, ge=0, le=1)
    nan_prob: float = Field(0.0, ge=0, le=1)  # chance a reward is NaN (to exercise the engine)

    @field_validator("weights", "drift", "collapsed")
    @classmethod
    def _bounded(cls, v: dict[str, float]) -> dict[str, float]:
        # relative weights: a huge one makes their sum overflow to inf and the draw NaN
        for k, x in v.items():
            if abs(x) > 1e9:
                raise ValueError(f"{k} = {x!r} is out of range (|value| <= 1e9)")
        return v


class SimulatedConfig(BaseModel):
    # strict: TOML is typed, "8" is not a count; no nan/inf weights or rates
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    kind: str = "simulated"
    batch_size: int = Field(8, ge=1, le=1_000_000)
    group_size: int = Field(4, ge=1, le=1_000_000)
    # behaviour per phase name (falls back to the preset's name, then "default")
    behaviour: dict[str, Behaviour] = Field(default_factory=dict)
    sft_loss_start: float = 4.0
    sft_loss_floor: float = 0.6
    sft_loss_tau: float = 80.0
    eval_items: int = Field(100, ge=1, le=10_000_000)
    step_seconds: float = Field(0.0, ge=0, le=3600)  # wall time each step takes (to rehearse timing and kills)


def _config_errors(err: ValidationError, prefix: str) -> list[tuple[str, str]]:
    out = []
    for e in err.errors():
        key = ".".join([prefix] + [str(x) for x in e["loc"]])
        out.append((key, e["msg"]))
    return out


def validate_config(model: dict, data: dict, runner: dict) -> list[tuple[str, str]]:
    try:
        cfg = SimulatedConfig.model_validate(runner)
    except ValidationError as e:
        return _config_errors(e, "runner")
    out = []
    for name, b in cfg.behaviour.items():
        for table in ("weights", "drift", "collapsed"):
            for k in getattr(b, table):
                if k not in OUTCOMES:
                    from curriculum.errors import one_of, suggest

                    out.append(
                        (
                            f"runner.behaviour.{name}.{table}.{k}",
                            f"unknown outcome '{k}'; expected {one_of(OUTCOMES)}{suggest(k, OUTCOMES)}",
                        )
                    )
    return out


def validate_reward(reward: Any) -> list[tuple[str, str]]:
    """The simulation's outcomes pay sums of DIPG's value keys: the reward must take them."""
    need = sorted({k for keys, _ in OUTCOMES.values() for k in keys} - set(reward.keys))
    if need:
        return [
            (
                "runner.kind",
                f"the simulated runner draws DIPG outcomes, paid in DIPG's value keys, but reward "
                f"'{reward.name}' does not take {', '.join(need)}; dry-run another reward with the replay "
                "runner (a trace of its rewards) or the tunix runner",
            )
        ]
    return []


def validate_phase(kind: str, train: dict) -> list[tuple[str, str]]:
    return []  # the simulation has no hyperparameters; extra keys are ignored by design


class SimulatedRunner:
    metric_names = METRIC_NAMES

    def __init__(self) -> None:
        self.cfg = SimulatedConfig()
        self.seed = 0
        self.global_step = 0
        self.phase: PhaseSetup | None = None
        self.phase_step = 0
        self.penalties: dict[str, float] = {}
        self.shard = (0, 1)  # (process index, process count)

    def _rng(self, stream: int) -> np.random.Generator:
        # each process of a multi-process run simulates its own shard of the batch
        i, n = self.shard
        key = [self.seed, self.global_step, stream] if n == 1 else [self.seed, self.global_step, stream, 7919, i]
        return np.random.default_rng(key)

    def _state_file(self, ckpt_dir: Path) -> Path:
        i, n = self.shard
        return Path(ckpt_dir) / ("simulated.json" if n == 1 else f"simulated.p{i}.json")

    # -- protocol
    def open(self, ctx: RunContext) -> None:
        self.cfg = SimulatedConfig.model_validate(ctx.runner or {})
        self.seed = int(ctx.seed)
        self.shard = (int(ctx.process_index), int(ctx.process_count))

    def setup_phase(self, phase: PhaseSetup) -> None:
        self.phase = phase
        self.global_step = phase.global_step
        self.phase_step = phase.start_phase_step
        self.penalties = dict(phase.penalties)

    def set_penalties(self, values: Mapping[str, float]) -> None:
        self.penalties = dict(values)

    def train(self, n_steps: int) -> Iterator[dict[str, float]]:
        assert self.phase is not None, "setup_phase first"
        for _ in range(n_steps):
            self.global_step += 1
            self.phase_step += 1
            rng = self._rng(1)
            if self.cfg.step_seconds:
                time.sleep(self.cfg.step_seconds)
            if self.phase.kind == "sft":
                c = self.cfg
                loss = c.sft_loss_floor + (c.sft_loss_start - c.sft_loss_floor) * math.exp(-self.phase_step / c.sft_loss_tau)
                yield {"loss": loss * float(np.exp(rng.normal(0, 0.03)))}
                continue
            yield self._grpo_step(rng)

    def evaluate(self) -> dict[str, float]:
        assert self.phase is not None
        rng = self._rng(2)
        n = self.cfg.eval_items
        beh = self._behaviour()
        outcomes = self._draw(rng, beh, n, group=1)
        pen = self.phase.eval.get("penalties") or self.penalties
        rewards = np.array([self._reward(o, pen) for o in outcomes])
        out: dict[str, float] = {"n_items": float(n)}
        abst = sum(1 for o in outcomes if o in ("abstain", "refusal"))
        for name, val in self._rates(outcomes).items():
            denom = abst if name == "abstention_accuracy" else n
            lo, hi = wilson(round(val * denom), denom) if math.isfinite(val) else (math.nan, math.nan)
            out[name], out[f"{name}_lo"], out[f"{name}_hi"] = val, lo, hi
        boots = rng.choice(rewards, size=(1000, n), replace=True).mean(axis=1)
        out["reward_mean"] = float(rewards.mean())
        out["reward_mean_lo"], out["reward_mean_hi"] = (float(x) for x in np.percentile(boots, [2.5, 97.5]))
        out["reward_max"] = float(rewards.max())
        return out

    def save(self, ckpt_dir: Path) -> None:
        ckpt_dir = Path(ckpt_dir)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        self._state_file(ckpt_dir).write_text(
            json.dumps({"global_step": self.global_step, "phase_step": self.phase_step, "seed": self.seed})
        )

    def restore(self, ckpt_dir: Path) -> None:
        d = json.loads(self._state_file(ckpt_dir).read_text())
        self.global_step = int(d["global_step"])
        self.phase_step = int(d["phase_step"])

    def restore_policy(self, ckpt_dir: Path) -> None:
        """A rewind: the simulated behaviour is declared per phase, not learned, so there are no
        weights to restore; the next phase's behaviour applies from its first step as always."""
        if not (Path(ckpt_dir).parent / "engine.json").is_file():
            raise FileNotFoundError(f"{ckpt_dir}: not a checkpoint")

    def close(self) -> None:
        pass

    # -- model
    def _behaviour(self) -> Behaviour:
        assert self.phase is not None
        b = self.cfg.behaviour
        for key in (self.phase.name, self.phase.preset, "default"):
            if key and key in b:
                return b[key]
        return Behaviour()

    def _weights(self, beh: Behaviour) -> tuple[list[str], np.ndarray, float]:
        if beh.collapse_after is not None and self.phase_step > beh.collapse_after:
            w = dict(beh.collapsed)
            gc = beh.collapsed_group_collapse
        else:
            w = dict(beh.weights)
            for k, d in beh.drift.items():
                w[k] = w.get(k, 0.0) + d * self.phase_step
            gc = beh.group_collapse
        names = sorted(w)
        p = np.clip(np.array([w[k] for k in names], dtype=float), 0, None)
        if p.sum() <= 0:
            p = np.ones_like(p)
        return names, p / p.sum(), gc

    def _draw(self, rng: np.random.Generator, beh: Behaviour, n_groups: int, group: int) -> list[str]:
        names, p, gc = self._weights(beh)
        out: list[str] = []
        for _ in range(n_groups):
            if group > 1 and rng.random() < gc:
                out.extend([names[rng.choice(len(names), p=p)]] * group)
            else:
                out.extend(names[i] for i in rng.choice(len(names), size=group, p=p))
        return out

    def _reward(self, outcome: str, pen: Mapping[str, float]) -> float:
        keys, _ = OUTCOMES[outcome]
        return float(sum(pen.get(k, 0.0) for k in keys))

    def _top(self, pen: Mapping[str, float]) -> float:
        return max(self._reward(o, pen) for o in OUTCOMES)

    @staticmethod
    def _rates(outcomes: list[str]) -> dict[str, float]:
        n = len(outcomes)
        flags = [OUTCOMES[o][1] for o in outcomes]

        def rate(flag: str) -> float:
            return sum(1 for f in flags if f.get(flag)) / n

        abst = [o for o in outcomes if o in ("abstain", "refusal")]
        return {
            "safe_rate": rate("safe"),
            "hallucination_rate": rate("hallucination"),
            "refusal_rate": rate("refusal"),
            "consistency_rate": rate("consistent"),
            "format_error_rate": rate("format_error"),
            "correct_rate": rate("correct"),
            "abstention_accuracy": (sum(1 for o in abst if o == "abstain") / len(abst)) if abst else math.nan,
        }

    def _grpo_step(self, rng: np.random.Generator) -> dict[str, float]:
        beh = self._behaviour()
        g = self.cfg.group_size
        outcomes = self._draw(rng, beh, self.cfg.batch_size, group=g)
        rewards = [self._reward(o, self.penalties) for o in outcomes]
        if beh.nan_prob > 0:
            for i in range(len(rewards)):
                if rng.random() < beh.nan_prob:
                    rewards[i] = math.nan if rng.random() < 0.5 else math.inf
        m = reward_step_stats(rewards, g, self._top(self.penalties))
        m.update(self._rates(outcomes))
        return m
