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

import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

from pydantic import BaseModel, ConfigDict, ValidationError

from curriculum import limits
from curriculum.errors import CurriculumError
from runners.base import (
    REWARD_STEP_METRICS,
    TRAINER_METRICS,
    PhaseSetup,
    RunContext,
    reward_step_stats,
)

METRIC_NAMES = frozenset(REWARD_STEP_METRICS) | frozenset(TRAINER_METRICS)  # + the reward's outcomes (the spec adds them)


class ReplayConfig(BaseModel):
    # strict: TOML is typed, "8" is not a count; no nan/inf weights or rates
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    kind: str = "replay"
    trace: str | None = None
    top_reward: float | None = None  # default: the reward's max_reward under the values in force


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
    if isinstance(x, int):
        if abs(x) > _FLOAT_MAX:
            raise ValueError(f"a {len(str(abs(x)))}-digit integer is beyond float range (about 1.8e308)")
        return float(x)
    if isinstance(x, float):
        return x
    if isinstance(x, str) and x.strip().lower() in ("nan", "inf", "+inf", "-inf", "infinity", "-infinity"):
        return float(x.strip().lower().replace("infinity", "inf"))
    if isinstance(x, (list, dict)):
        raise ValueError(f"expected a number, got a {'list' if isinstance(x, list) else 'object'}")
    raise ValueError(f"expected a number, got {x!r:.80}")


_FLOAT_MAX = sys.float_info.max


def _parse_float(text: str) -> float:
    """A JSON number literal; one too large for a float (1e400) is an error, not a silent inf."""
    v = float(text)
    if math.isinf(v):
        raise ValueError(f"the number {text[:40]} is beyond float range (about 1.8e308); write \"inf\" if you mean it")
    return v


def _parse_int(text: str) -> int:
    """A JSON integer literal; past float range it is refused before Python converts its digits."""
    digits = len(text.lstrip("-"))
    if digits > 309:  # 10^309 > the largest float: never a reward, a metric or a step
        raise ValueError(f"a {digits}-digit integer is beyond float range (about 1.8e308)")
    return int(text)


_EXPECTED = 'expected one object per line like {"step": 1, "rewards": [...], "group_size": 4}'


def _parse_line(line: str, where: str) -> Any:
    if len(line) > limits.MAX_TRACE_LINE:
        raise CurriculumError(
            f"{where}: the line is {len(line)} characters long, at most {limits.MAX_TRACE_LINE} are accepted; {_EXPECTED}"
        )
    try:
        return json.loads(line, parse_float=_parse_float, parse_int=_parse_int)
    except json.JSONDecodeError as e:
        raise CurriculumError(f"{where}: not valid JSON ({e.msg}); {_EXPECTED}") from None
    except RecursionError:
        raise CurriculumError(f"{where}: nested too deeply to be a trace step; {_EXPECTED}") from None
    except ValueError as e:  # a number beyond float range, an integer past Python's digit limit
        raise CurriculumError(f"{where}: {e}; {_EXPECTED}") from None


def trace_digest(data: bytes) -> str:
    """What identifies a trace in a checkpoint: a resume refuses a trace with another digest."""
    return hashlib.sha256(data).hexdigest()


def load_trace(path: Path) -> list[dict[str, Any]]:
    """Read and check a trace; a bad line is one clear error naming the file and line."""
    return read_trace(path)[0]


def read_trace(path: Path) -> tuple[list[dict[str, Any]], str]:
    """The checked steps of a trace and its digest (sha256 of the file's bytes)."""
    path = Path(path)
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
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
        obj = _parse_line(line, where)
        if not isinstance(obj, dict):
            raise CurriculumError(f"{where}: expected a JSON object")
        step, rewards, g = obj.get("step"), obj.get("rewards"), obj.get("group_size")
        if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= limits.MAX_TRACE_STEP:
            raise CurriculumError(
                f"{where}: key 'step' must be an integer from 0 to 2^63-1, got {step!r:.60}"
            )
        if last is not None and step <= last:
            raise CurriculumError(f"{where}: key 'step' must increase (got {step} after {last})")
        if not isinstance(g, int) or isinstance(g, bool) or g < 1:
            raise CurriculumError(f"{where}: key 'group_size' must be a positive integer, got {g!r:.60}")
        if not isinstance(rewards, list) or not rewards:
            raise CurriculumError(f"{where}: key 'rewards' must be a non-empty list of numbers")
        if len(rewards) % g:
            raise CurriculumError(
                f"{where}: key 'rewards' holds {len(rewards)} values, not a multiple of group_size {g} "
                "(one reward per completion, group_size completions per prompt, group-major)"
            )
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
    return steps, trace_digest(data)


class ReplayRunner:
    metric_names = METRIC_NAMES

    def __init__(self, trace: str | Path | None = None, top_reward: float | None = None):
        self._trace_path = Path(trace) if trace else None
        self._top_override = top_reward
        self.steps: list[dict[str, Any]] = []
        self.digest: str | None = None
        self._state_file = "replay.json"  # replay.pN.json for process N of several (own trace each)
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
        self.steps, self.digest = read_trace(self._trace_path)
        from curriculum import rewarding

        self._reward = rewarding.from_context(ctx.reward)
        if ctx.process_count > 1:
            self._state_file = f"replay.p{ctx.process_index}.json"

    def setup_phase(self, phase: PhaseSetup) -> None:
        self.set_penalties(phase.penalties)

    def set_penalties(self, values: Mapping[str, float]) -> None:
        self.penalties = dict(values)
        if self._top_override is not None:
            self.top_reward = float(self._top_override)
        elif self.penalties and getattr(self, "_reward", None) is not None:
            self.top_reward = self._reward.top(self.penalties)  # None when the reward declares no maximum
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
        (ckpt_dir / self._state_file).write_text(
            json.dumps({"pos": self.pos, "trace": str(self._trace_path), "digest": self.digest, "steps": len(self.steps)})
        )

    def restore(self, ckpt_dir: Path) -> None:
        path = Path(ckpt_dir) / self._state_file
        if not path.exists():  # written before each process had its own file
            path = Path(ckpt_dir) / "replay.json"
        d = json.loads(path.read_text())
        pos = int(d["pos"])
        was = d.get("digest")  # absent in checkpoints written before digests were recorded
        if was is not None and was != self.digest:
            raise CurriculumError(
                f"the replay trace {self._trace_path} is not the one this run was checkpointed with "
                f"({d.get('trace')}, {d.get('steps', '?')} steps, sha256 {str(was)[:12]}...; this file: "
                f"{len(self.steps)} steps, sha256 {str(self.digest)[:12]}...); resuming on another trace would "
                "mix two runs: put the original trace back, or start a new run on this one"
            )
        if pos > len(self.steps):
            raise CurriculumError(
                f"the replay trace {self._trace_path} holds {len(self.steps)} steps, but this run's checkpoint "
                f"was taken after step {pos} of its trace; put the original trace back"
            )
        self.pos = pos

    def restore_policy(self, ckpt_dir: Path) -> None:
        """A rewind: a recorded trace has no policy to restore, so the replay goes on with the
        trace's next step (the engine still records the rewind, so a curriculum's decisions on a
        trace match what it would decide live)."""
        if not (Path(ckpt_dir).parent / "engine.json").is_file():
            raise FileNotFoundError(f"{ckpt_dir}: not a checkpoint")

    def close(self) -> None:
        pass
