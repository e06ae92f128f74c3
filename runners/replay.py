"""Replay a recorded trace: "what would this curriculum have done on my last run?"

Trace format: JSONL, one object per training step:

    {"step": 17, "rewards": [r, ...], "group_size": 4, "metrics": {"kl": 0.01, ...}}

`rewards` holds one float per completion, group-major (G consecutive values per prompt);
NaN/inf may be written as null, "nan", "inf" or "-inf".  The engine's reward statistics
(mean, max, range, zero-spread groups, top-reward rate, ...) are derived from `rewards`;
`metrics` (optional) passes further per-step values through (e.g. safe_rate, kl).  Steps are
consumed in file order; `step` must increase.  The run ends when the trace ends.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from curriculum.errors import CurriculumError
from runners.base import (
    OUTCOME_RATE_METRICS,
    REWARD_STEP_METRICS,
    TRAINER_METRICS,
    PhaseSetup,
    RunContext,
    reward_step_stats,
)

METRIC_NAMES = frozenset(REWARD_STEP_METRICS) | frozenset(OUTCOME_RATE_METRICS) | frozenset(TRAINER_METRICS)


class ReplayConfig(BaseModel):
    # strict: TOML is typed, "8" is not a count; no nan/inf weights or rates
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    kind: str = "replay"
    trace: str | None = None
    top_reward: float | None = None  # default: the maximum reward of the preset in force


def validate_config(model: dict, data: dict, runner: dict) -> list[tuple[str, str]]:
    try:
        ReplayConfig.model_validate(runner)
    except ValidationError as e:
        return [(".".join(["runner"] + [str(x) for x in err["loc"]]), err["msg"]) for err in e.errors()]
    return []


def validate_phase(kind: str, train: dict) -> list[tuple[str, str]]:
    return []


def _num(x: Any) -> float:
    if x is None:
        return math.nan
    if isinstance(x, bool):
        raise ValueError("a boolean is not a reward")
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, str) and x.strip().lower() in ("nan", "inf", "+inf", "-inf", "infinity", "-infinity"):
        return float(x.strip().lower().replace("infinity", "inf"))
    raise ValueError(f"expected a number, got {x!r}")


def load_trace(path: Path) -> list[dict[str, Any]]:
    """Read and check a trace; a bad line is one clear error naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CurriculumError(f"{path}: replay trace not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CurriculumError(f"{path}: cannot read the replay trace ({e})") from None
    steps: list[dict[str, Any]] = []
    last = None
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise CurriculumError(f"{where}: not valid JSON ({e.msg}); expected one object per line like "
                                  '{"step": 1, "rewards": [...], "group_size": 4}') from None
        if not isinstance(obj, dict):
            raise CurriculumError(f"{where}: expected a JSON object")
        step, rewards, g = obj.get("step"), obj.get("rewards"), obj.get("group_size")
        if not isinstance(step, int) or isinstance(step, bool):
            raise CurriculumError(f"{where}: key 'step' must be an integer, got {step!r}")
        if last is not None and step <= last:
            raise CurriculumError(f"{where}: key 'step' must increase (got {step} after {last})")
        if not isinstance(g, int) or isinstance(g, bool) or g < 1:
            raise CurriculumError(f"{where}: key 'group_size' must be a positive integer, got {g!r}")
        if not isinstance(rewards, list) or not rewards:
            raise CurriculumError(f"{where}: key 'rewards' must be a non-empty list of numbers")
        try:
            vals = [_num(r) for r in rewards]
        except ValueError as e:
            raise CurriculumError(f"{where}: key 'rewards': {e}") from None
        extra = obj.get("metrics") or {}
        if not isinstance(extra, dict):
            raise CurriculumError(f"{where}: key 'metrics' must be an object of name: number")
        try:
            metrics = {str(k): _num(v) for k, v in extra.items()}
        except ValueError as e:
            raise CurriculumError(f"{where}: key 'metrics': {e}") from None
        steps.append({"step": step, "rewards": vals, "group_size": g, "metrics": metrics})
        last = step
    if not steps:
        raise CurriculumError(f"{path}: the replay trace holds no steps")
    return steps


class ReplayRunner:
    metric_names = METRIC_NAMES

    def __init__(self, trace: str | Path | None = None, top_reward: float | None = None):
        self._trace_path = Path(trace) if trace else None
        self._top_override = top_reward
        self.steps: list[dict[str, Any]] = []
        self.pos = 0
        self.penalties: dict[str, float] = {}
        self.top_reward: float | None = top_reward

    def open(self, ctx: RunContext) -> None:
        cfg = ReplayConfig.model_validate({k: v for k, v in (ctx.runner or {}).items() if k in ReplayConfig.model_fields})
        if self._trace_path is None and cfg.trace:
            self._trace_path = Path(cfg.trace)
        if self._trace_path is None:
            raise CurriculumError("replay runner: no trace given; use --replay TRACE.jsonl or [runner] trace = \"...\"")
        if self._top_override is None:
            self._top_override = cfg.top_reward if cfg.top_reward is not None else ctx.reward.get("top_reward")
        self.steps = load_trace(self._trace_path)

    def setup_phase(self, phase: PhaseSetup) -> None:
        self.set_penalties(phase.penalties)

    def set_penalties(self, values: Mapping[str, float]) -> None:
        self.penalties = dict(values)
        if self._top_override is not None:
            self.top_reward = float(self._top_override)
        elif self.penalties:
            from rewards import max_reward

            self.top_reward = float(max_reward(self.penalties))
        else:
            self.top_reward = None

    def train(self, n_steps: int) -> Iterator[dict[str, float]]:
        for _ in range(n_steps):
            if self.pos >= len(self.steps):
                return
            rec = self.steps[self.pos]
            self.pos += 1
            m = reward_step_stats(rec["rewards"], rec["group_size"], self.top_reward)
            m.update(rec["metrics"])
            yield m

    def evaluate(self) -> dict[str, float] | None:
        return None  # a trace holds no evaluations

    def save(self, ckpt_dir: Path) -> None:
        ckpt_dir = Path(ckpt_dir)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (ckpt_dir / "replay.json").write_text(json.dumps({"pos": self.pos, "trace": str(self._trace_path)}))

    def restore(self, ckpt_dir: Path) -> None:
        d = json.loads((Path(ckpt_dir) / "replay.json").read_text())
        self.pos = int(d["pos"])

    def restore_policy(self, ckpt_dir: Path) -> None:
        """A rewind: a recorded trace has no policy to restore, so the replay goes on with the
        trace's next step (the engine still records the rewind, so a curriculum's decisions on a
        trace match what it would decide live)."""
        if not (Path(ckpt_dir).parent / "engine.json").is_file():
            raise FileNotFoundError(f"{ckpt_dir}: not a checkpoint")

    def close(self) -> None:
        pass
