"""Run report: read a run directory, draw ``report.png``, write ``report.md``.

Public API::

    run = load_run(run_dir)            # -> RunData (raises RunDirError naming a missing file)
    write_png(run, path)               # 1600x1000 picture of the run
    write_markdown(run, path, png_name="report.png")
    summary_table(run) -> str          # plain-text per-phase table (printed by `curriculum run`)
    make_report(run_dir) -> (png_path, md_path)   # writes report.png and report.md into run_dir

Inputs (see docs/CONTRACTS.md, "Run directory"):

* ``metrics.jsonl`` -- one object per training step: ``step`` (global, 1-based), ``phase``,
  ``phase_step``, ``preset`` (penalty preset in force or null), ``penalty_scale`` (1.0 unless a
  controller scales penalties) and ``metrics`` (name -> float or null; NaN/inf are written as null).
* ``events.jsonl`` -- structlog JSON lines: run_started, phase_started, phase_transition,
  penalties_changed, phase_finished (with ``eval``), checkpoint_saved, guard_nonfinite,
  run_finished.

Both files may end in a torn line (a crash); it is skipped and noted in ``RunData.warnings``.
When a resumed run rewrote steps, the last line written for a step wins.

A phase that is entered more than once (e.g. medium -> recovery -> medium) gives one
``PhaseVisit`` per entry; tables and the picture follow run order.

This module imports neither jax nor the engine; matplotlib is imported only when drawing.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

try:  # the package's user-facing error type; keep the report usable on its own
    from curriculum.errors import RunDirError
except Exception:  # pragma: no cover - only when errors.py is unavailable

    class RunDirError(Exception):  # type: ignore[no-redef]
        """A run directory that is missing, damaged or incompatible."""


__all__ = [
    "EVAL_RATES",
    "PhaseVisit",
    "RunData",
    "StepRecord",
    "Transition",
    "Interval",
    "load_run",
    "make_report",
    "summary_table",
    "write_markdown",
    "write_png",
]

METRICS_FILE = "metrics.jsonl"
EVENTS_FILE = "events.jsonl"
PNG_NAME = "report.png"
MD_NAME = "report.md"

PNG_SIZE = (1600, 1000)  # pixels
END_PHASE = "end"  # the engine's pseudo-phase for "the run finishes" (curriculum.spec.END)
_DPI = 100

# Evaluation rates drawn in the lower panel, in this order, with their labels and colours.
EVAL_RATES: tuple[tuple[str, str, str], ...] = (
    ("safe_rate", "safe", "#2ca02c"),
    ("hallucination_rate", "hallucination", "#d62728"),
    ("refusal_rate", "refusal", "#1f77b4"),
    ("consistency_rate", "consistency", "#9467bd"),
    ("format_error_rate", "format error", "#ff7f0e"),
)
# Rates shown in the tables (phase table, summary table).
TABLE_RATES: tuple[tuple[str, str], ...] = (
    ("safe_rate", "safe"),
    ("hallucination_rate", "halluc."),
    ("refusal_rate", "refusal"),
    ("consistency_rate", "consist."),
)

_PHASE_COLOURS = {
    "sft": "#7f7f7f",
    "soft": "#2ca02c",
    "medium": "#ff7f0e",
    "hard": "#d62728",
    "recovery": "#9467bd",
    "eval": "#17becf",
}
_FALLBACK_COLOURS = ("#1f77b4", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#aec7e8", "#98df8a")

# --------------------------------------------------------------------------------------------
# data


@dataclass(frozen=True)
class Interval:
    """A value with an optional 95% interval (lo/hi may be NaN when unknown)."""

    value: float
    lo: float = math.nan
    hi: float = math.nan

    @property
    def has_ci(self) -> bool:
        return _finite(self.lo) and _finite(self.hi)

    def fmt(self, digits: int = 2, sign: bool = False) -> str:
        if not _finite(self.value):
            return "–"
        f = f"{{:+.{digits}f}}" if sign else f"{{:.{digits}f}}"
        s = f.format(self.value)
        if self.has_ci:
            s += f" [{f.format(self.lo)}, {f.format(self.hi)}]"
        return s


@dataclass
class StepRecord:
    step: int
    phase: str
    phase_step: int | None
    preset: str | None
    penalty_scale: float
    metrics: dict[str, float]  # null -> NaN; absent keys stay absent
    penalty_level: float = math.nan  # most negative penalty in force x penalty_scale

    @property
    def has_reward(self) -> bool:
        return "reward_mean" in self.metrics


@dataclass
class PhaseVisit:
    """One entry into a phase (a phase entered twice gives two visits)."""

    name: str
    ordinal: int  # position in run order, 0-based
    kind: str | None = None
    preset: str | None = None
    penalties: dict[str, float] | None = None  # in force when the phase began (scaled)
    base_penalties: dict[str, float] | None = None  # unscaled, from the transition into it
    started_step: int | None = None  # "step" of phase_started
    finished_step: int | None = None  # "step" of phase_finished
    finished: bool = False
    eval: dict[str, Any] | None = None
    steps: list[StepRecord] = field(default_factory=list)
    penalty_changes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    @property
    def first_step(self) -> int | None:
        return self.steps[0].step if self.steps else None

    @property
    def last_step(self) -> int | None:
        return self.steps[-1].step if self.steps else None

    @property
    def has_reward(self) -> bool:
        return any(s.has_reward for s in self.steps)

    @property
    def is_sft(self) -> bool:
        if self.kind:
            return self.kind == "sft"
        if self.name.lower().startswith("sft"):
            return True
        return bool(self.steps) and not self.has_reward

    @property
    def presets(self) -> list[str]:
        """Preset names in force during the visit, in order of first appearance."""
        out: list[str] = []
        for name in [self.preset] + [s.preset for s in self.steps]:
            if name and name not in out:
                out.append(name)
        return out

    def metric(self, name: str) -> list[float]:
        return [s.metrics.get(name, math.nan) for s in self.steps]

    def reward_mean(self) -> float:
        return _nanmean(self.metric("reward_mean"))

    def reward_max(self) -> float:
        """Best per-step mean reward over the visit."""
        return _nanmax(self.metric("reward_mean"))

    def eval_interval(self, name: str) -> Interval | None:
        return _eval_interval(self.eval, name)


@dataclass
class Transition:
    from_phase: str
    to_phase: str
    step: int | None
    phase_step: int | None
    reason: str
    guard_kind: str | None
    evidence: dict[str, Any]
    metrics: dict[str, Any]
    penalties_before: dict[str, float] | None
    penalties_after: dict[str, float] | None
    preset_before: str | None
    preset_after: str | None
    timestamp: str | None = None
    onset_step: int | None = None  # the collapse detector's change-point estimate
    story: str | None = None  # "collapse began near step N, detected at M (...)"
    rewind: dict[str, Any] | None = None  # the checkpoint the policy was restored from


@dataclass
class RunData:
    run_dir: Path
    steps: list[StepRecord]  # sorted by global step, one per step
    events: list[dict[str, Any]]  # every parsed event, in file order
    visits: list[PhaseVisit]  # phase entries in run order
    transitions: list[Transition]
    penalty_changes: list[dict[str, Any]]
    info: dict[str, Any]  # the first run_started event (spec, profile, seed, phases, ...)
    finished: dict[str, Any] | None  # the last run_finished event, None if the run did not finish
    resumes: int = 0  # run_started events with resumed=true
    nonfinite_events: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def step_numbers(self) -> list[int]:
        return [s.step for s in self.steps]

    def metric(self, name: str) -> list[float]:
        """Per-step values of a metric aligned with ``steps`` (NaN where missing)."""
        return [s.metrics.get(name, math.nan) for s in self.steps]

    @property
    def has_reward(self) -> bool:
        return any(s.has_reward for s in self.steps)

    @property
    def has_eval(self) -> bool:
        return any(v.eval for v in self.visits)

    @property
    def last_step(self) -> int:
        if self.steps:
            return self.steps[-1].step
        if self.finished and isinstance(self.finished.get("step"), int):
            return self.finished["step"]
        return 0

    @property
    def title(self) -> str:
        """The run's name (run_started's bound ``run`` field), else the spec's stem, else the dir."""
        if self.info.get("run"):
            return str(self.info["run"])
        spec = self.info.get("spec")
        name = Path(str(spec)).stem if spec else self.run_dir.name
        return str(name)


# --------------------------------------------------------------------------------------------
# loading


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _num(x: Any) -> float:
    """JSON value -> float; null, strings, NaN and inf -> NaN."""
    if isinstance(x, bool):
        return float(x)
    if isinstance(x, (int, float)):
        return float(x) if math.isfinite(x) else math.nan
    if isinstance(x, str):
        try:
            v = float(x)
        except ValueError:
            return math.nan
        return v if math.isfinite(v) else math.nan
    return math.nan


def _int_or_none(x: Any) -> int | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return x
    if isinstance(x, float) and math.isfinite(x) and x == int(x):
        return int(x)
    return None


def _nanmean(xs: Iterable[float]) -> float:
    vals = [x for x in xs if _finite(x)]
    return sum(vals) / len(vals) if vals else math.nan


def _nanmax(xs: Iterable[float]) -> float:
    vals = [x for x in xs if _finite(x)]
    return max(vals) if vals else math.nan


def _read_jsonl(path: Path, warnings: list[str]) -> list[dict[str, Any]]:
    """Parse a JSON-lines file; skip a torn final line and (with a warning) other bad lines."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RunDirError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    text = raw.decode("utf-8", errors="replace")
    lines = text.split("\n")
    # index of the last non-blank line: a bad line there is a torn write, anything else is damage
    last = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    out: list[dict[str, Any]] = []
    bad: list[int] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, ValueError):
            obj = None
        if not isinstance(obj, dict):
            if i == last:
                warnings.append(f"{path.name}: skipped a torn last line (line {i + 1})")
            else:
                bad.append(i + 1)
            continue
        out.append(obj)
    if bad:
        shown = ", ".join(str(b) for b in bad[:10]) + (" ..." if len(bad) > 10 else "")
        warnings.append(f"{path.name}: skipped {len(bad)} unparseable line(s): {shown}")
    return out


def _float_dict(d: Any) -> dict[str, float] | None:
    if not isinstance(d, Mapping):
        return None
    return {str(k): _num(v) for k, v in d.items()}


def _preset_table() -> dict[str, dict[str, float]]:
    from rewards import PRESETS  # pure Python: never imports jax

    return {str(k): dict(v) for k, v in PRESETS.items()}


def _penalty_level(penalties: Mapping[str, float] | None) -> float:
    """The most negative value in a penalty table (0.0 when none is negative)."""
    if not penalties:
        return math.nan
    vals = [v for v in penalties.values() if _finite(v)]
    if not vals:
        return math.nan
    return min(min(vals), 0.0)


def load_run(run_dir: str | Path) -> RunData:
    """Read ``metrics.jsonl`` and ``events.jsonl`` of a run directory.

    Raises ``RunDirError`` naming the directory or file when it is missing.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunDirError(f"{run_dir}: run directory does not exist")
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: not a directory (expected a run directory)")
    missing = [n for n in (METRICS_FILE, EVENTS_FILE) if not (run_dir / n).is_file()]
    if missing:
        raise RunDirError(
            f"{run_dir}: missing {' and '.join(missing)} -- not a run directory, or the run "
            f"never started (expected {METRICS_FILE} and {EVENTS_FILE} written by `curriculum run`)"
        )
    warnings: list[str] = []
    metric_lines = _read_jsonl(run_dir / METRICS_FILE, warnings)
    events = _read_jsonl(run_dir / EVENTS_FILE, warnings)

    steps = _parse_steps(metric_lines, warnings)
    run = _assemble(run_dir, steps, events, warnings)
    return run


def _parse_steps(lines: list[dict[str, Any]], warnings: list[str]) -> list[StepRecord]:
    by_step: dict[int, StepRecord] = {}
    rewritten = 0
    no_step = 0
    for obj in lines:
        step = _int_or_none(obj.get("step"))
        if step is None:
            no_step += 1
            continue
        m = obj.get("metrics")
        if not isinstance(m, Mapping):  # tolerate flat lines: every other key is a metric
            m = {
                k: v
                for k, v in obj.items()
                if k not in ("step", "phase", "phase_step", "preset", "penalty_scale", "timestamp")
            }
        scale = _num(obj.get("penalty_scale", 1.0))
        rec = StepRecord(
            step=step,
            phase=str(obj.get("phase") or "?"),
            phase_step=_int_or_none(obj.get("phase_step")),
            preset=str(obj["preset"]) if obj.get("preset") not in (None, "") else None,
            penalty_scale=scale if _finite(scale) else 1.0,
            metrics={str(k): _num(v) for k, v in m.items()},
        )
        if step in by_step:
            rewritten += 1
        by_step[step] = rec  # a resumed run rewrites steps: the last line wins
    if rewritten:
        warnings.append(
            f"{METRICS_FILE}: {rewritten} step(s) written more than once (resume); kept the last"
        )
    if no_step:
        warnings.append(f"{METRICS_FILE}: skipped {no_step} line(s) without an integer step")
    return [by_step[k] for k in sorted(by_step)]


def _assemble(
    run_dir: Path, steps: list[StepRecord], events: list[dict[str, Any]], warnings: list[str]
) -> RunData:
    info: dict[str, Any] = {}
    finished: dict[str, Any] | None = None
    resumes = 0
    visits: list[PhaseVisit] = []
    transitions: list[Transition] = []
    penalty_changes: list[dict[str, Any]] = []
    nonfinite: list[dict[str, Any]] = []
    checkpoints: list[dict[str, Any]] = []
    pending_after: dict[str, tuple[dict[str, float] | None, str | None]] = {}

    def current() -> PhaseVisit | None:
        return visits[-1] if visits else None

    for ev in events:
        kind = ev.get("event")
        if kind == "run_started":
            if not info:
                info = dict(ev)
            if ev.get("resumed"):
                resumes += 1
        elif kind == "phase_started":
            name = str(ev.get("phase") or "?")
            cur = current()
            if cur is not None and cur.name == name and not cur.finished:
                # the same phase announced again (a resume): keep the visit
                if cur.penalties is None:
                    cur.penalties = _float_dict(ev.get("penalties"))
                continue
            v = PhaseVisit(
                name=name,
                ordinal=len(visits),
                kind=str(ev["kind"]) if ev.get("kind") else None,
                preset=str(ev["preset"]) if ev.get("preset") else None,
                penalties=_float_dict(ev.get("penalties")),
                started_step=_int_or_none(ev.get("step")),
            )
            if name in pending_after:
                # the engine logs a transition's penalties_after unscaled (the base values)
                v.base_penalties, p = pending_after.pop(name)
                v.preset = v.preset or p
            visits.append(v)
        elif kind == "phase_finished":
            name = str(ev.get("phase") or "?")
            cur = current()
            if cur is None or cur.name != name or cur.finished:
                cur = PhaseVisit(name=name, ordinal=len(visits))
                visits.append(cur)
            cur.finished = True
            cur.finished_step = _int_or_none(ev.get("step"))
            if isinstance(ev.get("eval"), Mapping) and ev["eval"]:
                cur.eval = dict(ev["eval"])
        elif kind == "phase_transition":
            t = Transition(
                from_phase=str(ev.get("from_phase") or "?"),
                to_phase=str(ev.get("to_phase") or "?"),
                step=_int_or_none(ev.get("step")),
                phase_step=_int_or_none(ev.get("phase_step")),
                reason=str(ev.get("reason") or "?"),
                guard_kind=str(ev["guard_kind"]) if ev.get("guard_kind") else None,
                evidence=dict(ev["evidence"]) if isinstance(ev.get("evidence"), Mapping) else {},
                metrics=dict(ev["metrics"]) if isinstance(ev.get("metrics"), Mapping) else {},
                penalties_before=_float_dict(ev.get("penalties_before")),
                penalties_after=_float_dict(ev.get("penalties_after")),
                preset_before=ev.get("preset_before"),
                preset_after=ev.get("preset_after"),
                timestamp=ev.get("timestamp"),
                onset_step=_int_or_none(ev.get("onset_step")),
                story=str(ev["story"]) if ev.get("story") else None,
                rewind=dict(ev["rewind"]) if isinstance(ev.get("rewind"), Mapping) else None,
            )
            transitions.append(t)
            pending_after[t.to_phase] = (t.penalties_after, t.preset_after)
        elif kind == "penalties_changed":
            change = {
                "phase": ev.get("phase"),
                "step": _int_or_none(ev.get("step")),
                "before": _float_dict(ev.get("before")) or {},
                "after": _float_dict(ev.get("after")) or {},
                "reason": ev.get("reason"),
                "penalty_scale": ev.get("penalty_scale"),
                "timestamp": ev.get("timestamp"),
            }
            penalty_changes.append(change)
            cur = current()
            if cur is not None and (change["phase"] in (None, cur.name)):
                cur.penalty_changes.append(change)
        elif kind in ("guard_nonfinite", "nonfinite_metrics"):
            nonfinite.append(dict(ev))
        elif kind == "checkpoint_saved":
            checkpoints.append(dict(ev))
        elif kind == "run_finished":
            finished = dict(ev)

    _attach_steps(visits, steps)
    _fill_penalty_levels(visits)
    return RunData(
        run_dir=run_dir,
        steps=steps,
        events=events,
        visits=visits,
        transitions=transitions,
        penalty_changes=penalty_changes,
        info=info,
        finished=finished,
        resumes=resumes,
        nonfinite_events=nonfinite,
        checkpoints=checkpoints,
        warnings=warnings,
    )


def _attach_steps(visits: list[PhaseVisit], steps: list[StepRecord]) -> None:
    """Give each contiguous run of same-phase steps to the next visit of that phase, in order.

    Runs without a matching visit (events lost) become visits of their own.
    """
    runs: list[list[StepRecord]] = []
    for s in steps:
        if runs and runs[-1][-1].phase == s.phase:
            runs[-1].append(s)
        else:
            runs.append([s])
    pos = 0  # visits before pos are used up
    for run_steps in runs:
        name = run_steps[0].phase
        match = None
        for j in range(pos, len(visits)):
            if visits[j].name == name:
                match = j
                break
        # the same phase continuing in the visit just used (steps split by a rewrite)
        if match is None and pos > 0 and visits[pos - 1].name == name:
            visits[pos - 1].steps.extend(run_steps)
            continue
        if match is None:
            v = PhaseVisit(name=name, ordinal=0, preset=run_steps[0].preset)
            visits.insert(pos, v)
            match = pos
        visits[match].steps.extend(run_steps)
        pos = match + 1
    for i, v in enumerate(visits):
        v.ordinal = i
        if v.preset is None:
            v.preset = next((s.preset for s in v.steps if s.preset), None)


def _fill_penalty_levels(visits: list[PhaseVisit]) -> None:
    """Per step: the most negative *base* penalty in force x the step's ``penalty_scale``.

    The engine logs penalty values in force (negative values multiplied by the controller's
    scale) in phase_started and penalties_changed, and the unscaled values in a transition's
    ``penalties_after``.  The base level comes from, in order: the transition into the phase,
    the phase_started values divided by the first step's scale, the preset named in
    metrics.jsonl; a penalties_changed event (divided by its ``penalty_scale``) replaces it from
    the next step on.  Each step then multiplies by its own ``penalty_scale``.
    """
    presets: dict[str, dict[str, float]] | None = None

    def base_level(table: Mapping[str, float] | None, scale: float) -> float:
        lvl = _penalty_level(table)
        if not _finite(lvl) or not _finite(scale) or scale <= 0:
            return math.nan  # values logged at scale 0 say nothing about the base
        return lvl / scale

    for v in visits:
        reward_steps = [s for s in v.steps if s.has_reward]
        if not reward_steps:
            continue  # SFT: no penalties apply
        first = base_level(v.base_penalties, 1.0) if v.base_penalties else math.nan
        if not _finite(first):
            first = base_level(v.penalties, reward_steps[0].penalty_scale)
        sources: list[tuple[float, float]] = [(-math.inf, first)]  # (effective after step, base)
        for c in sorted((c for c in v.penalty_changes if c["step"] is not None), key=lambda c: c["step"]):
            sc = _num(c.get("penalty_scale"))
            if not _finite(sc):
                nxt = next((s for s in reward_steps if s.step > c["step"]), None)
                sc = nxt.penalty_scale if nxt is not None else math.nan
            b = base_level(c["after"], sc)
            if _finite(b):
                sources.append((float(c["step"]), b))
        for s in reward_steps:
            base = math.nan
            for after, b in sources:
                if after < s.step and _finite(b):  # a change is effective from the next step
                    base = b
            if not _finite(base) and s.preset:
                if presets is None:
                    presets = _preset_table()
                base = _penalty_level(presets.get(s.preset))
            s.penalty_level = base * s.penalty_scale if _finite(base) else math.nan


# --------------------------------------------------------------------------------------------
# evaluation intervals


def _wilson(p: float, n: float) -> tuple[float, float]:
    """Wilson interval of a rate observed on n items (the rewards package's definition)."""
    from rewards import wilson

    if not (_finite(p) and _finite(n)) or n <= 0:
        return math.nan, math.nan
    n = int(round(n))
    return wilson(int(round(min(max(p, 0.0), 1.0) * n)), n)


def _eval_interval(ev: Mapping[str, Any] | None, name: str) -> Interval | None:
    """Value and 95% interval of an eval metric.

    Accepts flat ``name``/``name_lo``/``name_hi`` keys or a nested ``{value, lo, hi}``; for a
    rate without an interval the Wilson interval from ``n_items`` is used; a missing
    ``format_error_rate`` is derived from ``format_valid_rate``.
    """
    if not ev:
        return None
    raw = ev.get(name)
    if isinstance(raw, Mapping):
        val, lo, hi = _num(raw.get("value")), _num(raw.get("lo")), _num(raw.get("hi"))
    elif raw is not None:
        val, lo, hi = _num(raw), _num(ev.get(f"{name}_lo")), _num(ev.get(f"{name}_hi"))
    elif name == "format_error_rate" and ev.get("format_valid_rate") is not None:
        valid = _eval_interval(ev, "format_valid_rate")
        if valid is None:
            return None
        return Interval(1.0 - valid.value, 1.0 - valid.hi, 1.0 - valid.lo)
    else:
        return None
    if not _finite(val):
        return Interval(math.nan)
    if not (_finite(lo) and _finite(hi)) and name.endswith("_rate"):
        lo, hi = _wilson(val, _num(ev.get("n_items")))
    return Interval(val, lo, hi)


def _diff_interval(a: Interval, b: Interval) -> Interval:
    """b - a with Newcombe's (1998, method 10) interval built from the two 95% intervals."""
    if not (_finite(a.value) and _finite(b.value)):
        return Interval(math.nan)
    d = b.value - a.value
    if not (a.has_ci and b.has_ci):
        return Interval(d)
    lo = d - math.sqrt((b.value - b.lo) ** 2 + (a.hi - a.value) ** 2)
    hi = d + math.sqrt((b.hi - b.value) ** 2 + (a.value - a.lo) ** 2)
    return Interval(d, lo, hi)


#: eval rates whose change from the end of SFT to the end of the run the report shows
CHANGE_RATES: tuple[str, ...] = ("safe_rate", "grounded_rate", "hallucination_rate", "refusal_rate", "consistency_rate")


def _changes(base: PhaseVisit, final: PhaseVisit, keys: Sequence[str]):
    """(key, start, end, change with Newcombe's interval) for each rate both evaluations have."""
    for key in keys:
        a, b = base.eval_interval(key), final.eval_interval(key)
        if a is not None and b is not None:
            yield key, a, b, _diff_interval(a, b)


def _change_summary(run: RunData) -> list[str]:
    """Plain-text lines: the safe and verbatim-proof rates from the end of SFT to the end."""
    base, final = _baseline_and_final(run)
    if base is None or final is None or base is final:
        return []
    out = [f"change from the end of {base.name} to the end of the run (eval, 95% CI; Newcombe for the change):"]
    for key, a, b, d in _changes(base, final, ("safe_rate", "grounded_rate")):
        beyond = "excludes 0" if d.has_ci and (d.lo > 0 or d.hi < 0) else "includes 0"
        out.append(f"  {key}: {a.fmt()} -> {b.fmt()}, change {d.fmt(sign=True)} ({beyond})")
    return out if len(out) > 1 else []


def _baseline_and_final(run: RunData) -> tuple[PhaseVisit | None, PhaseVisit | None]:
    """The visit closing the first SFT phase (else the first evaluated one) and the last evaluated."""
    evaluated = [v for v in run.visits if v.eval]
    if not evaluated:
        return None, None
    base = next((v for v in evaluated if v.is_sft), None)
    if base is None:
        base = evaluated[0]
    final = evaluated[-1]
    return base, final


# --------------------------------------------------------------------------------------------
# formatting helpers


def _fmt_num(x: Any, digits: int = 4) -> str:
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
        return f"{x:.{digits}g}"
    if x is None:
        return "null"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_fmt_num(v, digits) for v in x) + "]"
    return str(x)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.extend(_flatten(v, key + "."))
        else:
            out.append((key, v))
    return out


def format_evidence(evidence: Mapping[str, Any]) -> list[str]:
    """``term = value`` strings for a transition's evidence (nested dicts use dotted names)."""
    return [f"{k} = {_fmt_num(v)}" for k, v in _flatten(evidence)]


def _is_table(v: Any) -> bool:
    """A dict of dicts (e.g. the collapse guard's per-signal evidence) reads best as a table."""
    return isinstance(v, Mapping) and bool(v) and all(isinstance(x, Mapping) for x in v.values())


def _md_table(d: Mapping[str, Mapping[str, Any]]) -> list[str]:
    cols: list[str] = []
    for row in d.values():
        for k, x in _flatten(row):
            if k not in cols:
                cols.append(k)
    out = ["| name | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, row in d.items():
        flat = dict(_flatten(row))
        out.append(
            f"| {_md_escape(str(name))} | "
            + " | ".join(_md_escape(_fmt_num(flat[c])) if c in flat else "–" for c in cols)
            + " |"
        )
    return out


def _short_evidence(evidence: Mapping[str, Any], limit: int = 6) -> str:
    """The scalar evidence terms (nested ones by count) for one table cell."""
    items = [(k, v) for k, v in _flatten({k: v for k, v in evidence.items() if not _is_table(v)})]
    shown = [f"{k} = {_fmt_num(v)}" for k, v in items[:limit]]
    hidden = len(items) - len(shown)
    tables = [k for k, v in evidence.items() if _is_table(v)]
    if hidden > 0:
        shown.append(f"… {hidden} more")
    if tables:
        shown.append(", ".join(f"{k}: {len(evidence[k])} entries" for k in tables) + " (below)")
    return "; ".join(shown) or "–"


def _fmt_float(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if _finite(x) else "–"


def _step_range(v: PhaseVisit) -> str:
    if v.steps:
        return f"{v.first_step}–{v.last_step}"
    return "–"


def _penalty_diff(before: Mapping[str, float] | None, after: Mapping[str, float] | None) -> list[str]:
    before = before or {}
    after = after or {}
    out = []
    for k in list(before) + [k for k in after if k not in before]:
        b, a = before.get(k), after.get(k)
        if b is None and a is None:
            continue
        if b is None or a is None or not (
            (_finite(a) and _finite(b) and abs(a - b) < 1e-12) or (a == b)
        ):
            out.append(f"{k} {_fmt_num(b)} → {_fmt_num(a)}")
    return out


def _parse_ts(ts: Any) -> datetime | None:
    if not isinstance(ts, str):
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None


def _duration(run: RunData) -> str | None:
    stamps = [t for t in (_parse_ts(e.get("timestamp")) for e in run.events) if t is not None]
    if len(stamps) < 2:
        return None
    try:
        secs = (max(stamps) - min(stamps)).total_seconds()
    except TypeError:  # naive vs aware
        return None
    h, rem = divmod(int(secs), 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def _end_state(run: RunData) -> str:
    if run.finished:
        return f"finished ({run.finished.get('reason', '?')}) at step {run.finished.get('step', run.last_step)}"
    return f"did not finish (last step {run.last_step}: crashed, killed or still running)"


# --------------------------------------------------------------------------------------------
# plain-text summary table


def _table_rows(run: RunData) -> tuple[list[str], list[list[str]]]:
    header = ["#", "phase", "steps", "range", "preset", "reward mean", "reward max"]
    header += [label for _, label in TABLE_RATES] + ["eval n"]
    rows = []
    for v in run.visits:
        row = [
            str(v.ordinal + 1),
            v.name,
            str(v.n_steps),
            _step_range(v),
            " → ".join(v.presets) or "–",
            _fmt_float(v.reward_mean()),
            _fmt_float(v.reward_max()),
        ]
        for key, _ in TABLE_RATES:
            iv = v.eval_interval(key)
            row.append(iv.fmt() if iv else "–")
        n = _num((v.eval or {}).get("n_items"))
        row.append(str(int(n)) if _finite(n) else "–")
        rows.append(row)
    return header, rows


def summary_table(run: RunData) -> str:
    """Plain-text per-phase table (one row per phase entry, in run order)."""
    header, rows = _table_rows(run)
    if not rows:
        return f"run {run.title}: no phases recorded"
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    right = {0, 2, 5, 6}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    out.append(
        "reward mean/max: mean and best of the per-step mean reward; "
        "rates: end-of-phase eval [95% CI]"
    )
    out += _change_summary(run)
    out.append(_end_state(run))
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# markdown


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def write_markdown(run: RunData, path: str | Path, png_name: str | None = PNG_NAME) -> Path:
    path = Path(path)
    L: list[str] = []
    L.append(f"# Run report: {run.title}")
    L.append("")
    if png_name:
        L.append(f"![run overview]({png_name})")
        L.append("")
        L.append(f"Picture: [{png_name}]({png_name})")
        L.append("")
    L.append("## Run")
    L.append("")
    info = run.info
    L.append(f"- run directory: `{run.run_dir}`")
    for key in ("spec", "profile", "seed", "runner"):
        if info.get(key) is not None:
            L.append(f"- {key}: `{info[key]}`")
    if isinstance(info.get("phases"), list):
        L.append(f"- declared phases: {' → '.join(str(p) for p in info['phases'])}")
    visited = [v.name for v in run.visits]
    if visited:
        L.append(f"- phases entered: {' → '.join(visited)}")
    L.append(f"- steps: {len(run.steps)} (last global step {run.last_step})")
    L.append(f"- outcome: {_end_state(run)}")
    if run.resumes:
        L.append(f"- resumed: {run.resumes} time(s)")
    dur = _duration(run)
    if dur:
        L.append(f"- wall time (first to last event): {dur}")
    if run.checkpoints:
        L.append(f"- checkpoints saved: {len(run.checkpoints)}")
    if run.nonfinite_events:
        L.append(f"- non-finite metric / guard events: {len(run.nonfinite_events)}")
    if run.finished and run.finished.get("nonfinite_steps"):
        L.append(f"- steps with non-finite metrics: {run.finished['nonfinite_steps']}")
    L.append("")

    # per-phase table
    L.append("## Phases")
    L.append("")
    header, rows = _table_rows(run)
    if rows:
        L.append("| " + " | ".join(header) + " |")
        L.append("|" + "|".join("---:" if i in (0, 2, 5, 6, 11) else "---" for i in range(len(header))) + "|")
        for r in rows:
            L.append("| " + " | ".join(_md_escape(c) for c in r) + " |")
        L.append("")
        L.append(
            "*reward mean / max*: mean and best of the per-step mean reward over the phase "
            "(– for SFT). Rates come from the evaluation at the end of the phase, with 95% "
            "intervals in brackets."
        )
        extra = [v for v in run.visits if v.eval]
        more_keys = tuple(
            k
            for k in ("format_error_rate", "correct_rate", "abstention_accuracy", "reward_mean")
            if any(v.eval_interval(k) is not None for v in extra)
        )
        if extra and more_keys:
            L.append("")
            L.append("| # | phase | " + " | ".join(more_keys) + " |")
            L.append("|---:|---|" + "|".join("---" for _ in more_keys) + "|")
            for v in extra:
                cells = []
                for k in more_keys:
                    iv = v.eval_interval(k)
                    cells.append(iv.fmt() if iv else "–")
                L.append(f"| {v.ordinal + 1} | {v.name} | " + " | ".join(cells) + " |")
    else:
        L.append("No phase was recorded.")
    L.append("")

    # change in eval rates
    L.append("## Change in evaluation rates")
    L.append("")
    base, final = _baseline_and_final(run)
    if base is None or final is None:
        L.append("No evaluation results were recorded (no `phase_finished` event carried `eval`).")
    elif base is final:
        L.append(
            f"Only one evaluation (end of {base.name}, phase #{base.ordinal + 1}); nothing to compare."
        )
    else:
        what = "end of the first SFT phase" if base.is_sft else "first evaluation"
        L.append(
            f"From the {what} (**{base.name}**, #{base.ordinal + 1}, step {base.last_step or base.finished_step}) "
            f"to the end of the run (**{final.name}**, #{final.ordinal + 1}, step {final.last_step or final.finished_step}):"
        )
        L.append("")
        L.append("| metric | start | end | change [95% CI] |")
        L.append("|---|---|---|---|")
        for key, a, b, d in _changes(base, final, CHANGE_RATES):
            L.append(f"| {key} | {a.fmt()} | {b.fmt()} | {d.fmt(sign=True)} |")
        L.append("")
        L.append(
            "The interval of a change combines the two 95% intervals (Newcombe's method); "
            "an interval that excludes 0 is a change beyond sampling noise."
        )
    L.append("")

    # transitions
    L.append("## Transitions")
    L.append("")
    if not run.transitions:
        L.append("No phase transition was recorded.")
        L.append("")
    else:
        L.append("| # | step | from → to | reason | evidence |")
        L.append("|---:|---:|---|---|---|")
        for i, t in enumerate(run.transitions, start=1):
            ev = _short_evidence(t.evidence)
            L.append(
                f"| {i} | {t.step} | {t.from_phase} → {t.to_phase} | {_md_escape(t.reason)} "
                f"| {_md_escape(ev)} |"
            )
        L.append("")
    for i, t in enumerate(run.transitions, start=1):
        kind = f" ({t.guard_kind})" if t.guard_kind else ""
        L.append(f"### {i}. step {t.step}: {t.from_phase} → {t.to_phase}")
        L.append("")
        L.append(f"- reason: **{t.reason}**{kind}")
        if t.phase_step is not None:
            L.append(f"- after {t.phase_step} step(s) of {t.from_phase}")
        if t.story:
            L.append(f"- {_md_escape(t.story)}")
        if t.rewind:
            rw = t.rewind
            L.append(
                f"- rewind: the policy was restored from `{rw.get('checkpoint')}` (step "
                f"{rw.get('checkpoint_step')}); steps {_int_or_none(rw.get('checkpoint_step') or 0) + 1}"
                f"-{rw.get('detected_step')} stay in the logs but not in the policy"
            )
        if t.evidence:
            L.append("- evidence:")
            flat = {k: v for k, v in t.evidence.items() if not _is_table(v)}
            for s in format_evidence(flat):
                L.append(f"  - `{s}`")
            for k, v in t.evidence.items():
                if _is_table(v):
                    L.append(f"  - `{k}`:")
                    L.append("")
                    L.extend("    " + row for row in _md_table(v))
                    L.append("")
        elif t.reason == "max_steps":
            L.append("- evidence: the phase reached its step budget")
        if t.metrics:
            L.append(
                "- recent metrics: "
                + ", ".join(f"`{k} = {_fmt_num(v)}`" for k, v in _flatten(t.metrics))
            )
        if t.preset_before != t.preset_after and t.to_phase != END_PHASE:
            L.append(f"- preset: {t.preset_before or '–'} → {t.preset_after or '–'}")
        if t.to_phase == END_PHASE:
            pass  # the run ends: no penalties after it
        elif not t.penalties_before and t.penalties_after:
            in_force = [f"{k} {_fmt_num(v)}" for k, v in t.penalties_after.items() if _finite(v) and v < 0]
            if in_force:
                L.append("- penalties now in force: " + "; ".join(in_force))
        else:
            diff = _penalty_diff(t.penalties_before, t.penalties_after)
            if diff:
                L.append("- penalties: " + "; ".join(diff))
        L.append("")

    # penalty changes within phases
    if run.penalty_changes:
        L.append("## Penalty changes")
        L.append("")
        for c in run.penalty_changes:
            diff = _penalty_diff(c["before"], c["after"])
            L.append(
                f"- step {c['step']} ({c['phase']}, {c['reason'] or 'no reason given'}): "
                + ("; ".join(diff) if diff else "no value changed")
            )
        L.append("")

    if run.nonfinite_events:
        L.append("## Non-finite metrics")
        L.append("")
        for e in run.nonfinite_events[:50]:
            fields = {k: v for k, v in e.items() if k not in ("event", "timestamp", "level", "run")}
            L.append(
                f"- {e.get('event')}: "
                + ", ".join(f"{k} = {_fmt_num(v)}" for k, v in _flatten(fields))
            )
        if len(run.nonfinite_events) > 50:
            L.append(f"- ... {len(run.nonfinite_events) - 50} more")
        L.append("")

    if run.warnings:
        L.append("## Notes on the input files")
        L.append("")
        for w in run.warnings:
            L.append(f"- {w}")
        L.append("")

    path.write_text("\n".join(L).rstrip() + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# picture


def _phase_colour(name: str, table: dict[str, str]) -> str:
    if name not in table:
        key = name.lower()
        base = next((v for k, v in _PHASE_COLOURS.items() if key.startswith(k)), None)
        if base is None or base in table.values():
            used = set(table.values())
            base = next((c for c in _FALLBACK_COLOURS if c not in used), _FALLBACK_COLOURS[0])
        table[name] = base
    return table[name]


def _smooth(y, window: int):
    import numpy as np

    if window <= 1:
        return y
    ok = np.isfinite(y)
    vals = np.where(ok, y, 0.0)
    kernel = np.ones(window)
    num = np.convolve(vals, kernel, mode="same")
    den = np.convolve(ok.astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[~ok] = np.nan  # keep gaps visible
    return out


def write_png(run: RunData, path: str | Path) -> Path:
    """Draw the run (1600x1000 px): reward and penalty over steps, eval rates per phase."""
    # A bare Figure on the Agg canvas: needs no display and leaves pyplot's state (and the
    # backend of a notebook or other caller) untouched.
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    path = Path(path)
    fig = Figure(figsize=(PNG_SIZE[0] / _DPI, PNG_SIZE[1] / _DPI), dpi=_DPI)
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(2, 1, height_ratios=[3, 2], hspace=0.30, left=0.06, right=0.775, top=0.875, bottom=0.085)
    ax = fig.add_subplot(gs[0])
    ax_eval = fig.add_subplot(gs[1])

    colours: dict[str, str] = {}
    for v in run.visits:
        _phase_colour(v.name, colours)

    # ---- title
    info = run.info
    bits = [f"{k} {info[k]}" for k in ("spec", "profile", "seed", "runner") if info.get(k) is not None]
    sub = " · ".join(bits + [_end_state(run)])
    path_txt = " → ".join(v.name for v in run.visits) or "no phases"
    fig.suptitle(f"Curriculum run: {run.title}", fontsize=17, fontweight="bold", y=0.985)
    fig.text(0.5, 0.932, f"{sub}\nphases: {path_txt}", ha="center", va="center", fontsize=11, color="#333333")

    x = np.array(run.step_numbers, dtype=float)
    handles: list[Any] = []

    # ---- top panel: reward over steps
    mean = np.array(run.metric("reward_mean"), dtype=float)
    lo = np.array(run.metric("reward_min"), dtype=float)
    hi = np.array(run.metric("reward_max"), dtype=float)
    have_reward = bool(np.isfinite(mean).any()) if len(mean) else False
    if not len(x):
        _note(ax, "no training steps recorded")
        ax.set_xlim(0, max(1, run.last_step))
    elif have_reward:
        band_ok = np.isfinite(lo) & np.isfinite(hi)
        if band_ok.any():
            handles.append(
                ax.fill_between(x, np.where(band_ok, lo, np.nan), np.where(band_ok, hi, np.nan), where=band_ok,
                                color="#4c72b0", alpha=0.18, linewidth=0, step=None, label="reward range in a step\n(min to max)")
            )
        n_fin = int(np.isfinite(mean).sum())
        window = max(1, min(25, n_fin // 40))
        if window > 1:
            ax.plot(x, mean, color="#4c72b0", alpha=0.35, linewidth=0.8)
            smooth = np.full_like(mean, np.nan)
            index = {st: i for i, st in enumerate(run.step_numbers)}
            for v in run.visits:  # smooth within each phase entry, never across a boundary
                idx = np.array([index[st.step] for st in v.steps], dtype=int)
                if len(idx):
                    smooth[idx] = _smooth(mean[idx], window)
            (h,) = ax.plot(x, smooth, color="#1f3b73", linewidth=2.0, label=f"reward mean, {window}-step\nsmoothing (thin: raw)")
        else:
            (h,) = ax.plot(x, mean, color="#1f3b73", linewidth=1.8, marker="." if n_fin < 60 else None, label="reward mean (per step)")
        handles.append(h)
        gaps = np.array([s.has_reward for s in run.steps]) & ~np.isfinite(mean)
        if gaps.any():
            ymin = np.nanmin(np.where(band_ok, lo, mean)) if np.isfinite(mean).any() else 0.0
            (g,) = ax.plot(x[gaps], np.full(gaps.sum(), ymin), linestyle="none", marker="x", color="#d62728", markersize=7,
                           label="step without a finite\nreward (NaN)")
            handles.append(g)
        ax.set_ylabel("reward", fontsize=12)
    else:
        loss = np.array(run.metric("loss"), dtype=float)
        if np.isfinite(loss).any():
            (h,) = ax.plot(x, loss, color="#555555", linewidth=1.8, label="SFT loss (no reward in this run)")
            handles.append(h)
            ax.set_ylabel("loss", fontsize=12)
        else:
            _note(ax, "no reward or loss values recorded")
    ax.set_xlabel("global training step", fontsize=12)
    ax.grid(True, alpha=0.25)
    if len(x):
        ax.set_xlim(x.min() - 0.5, x.max() + 0.5)

    # phase bands (after the data so the y-limits are known)
    ax.set_ylim(*_padded_ylim(ax, top_frac=0.22))
    ymin, ymax = ax.get_ylim()
    xmin, xmax = ax.get_xlim()
    span = max(xmax - xmin, 1.0)
    seen_phase: set[str] = set()
    phase_handles = []
    for v in run.visits:
        if not v.steps:
            continue
        c = colours[v.name]
        a, b = v.first_step - 0.5, v.last_step + 0.5
        ax.axvspan(a, b, color=c, alpha=0.12, linewidth=0, zorder=0)
        label = v.name
        if v.is_sft and have_reward:
            loss = [s.metrics.get("loss", math.nan) for s in v.steps]
            loss = [val for val in loss if _finite(val)]
            label += "\n(SFT: no reward"
            label += f";\nloss {loss[0]:.3g} → {loss[-1]:.3g})" if len(loss) > 1 else ")"
        width_frac = (b - a) / span
        width_px = width_frac * ax.get_position().width * PNG_SIZE[0]
        if max(len(ln) for ln in label.split("\n")) * 8.5 > width_px:
            label = v.name  # the long label does not fit the band
        if width_frac > 0.035:
            ax.text((a + b) / 2, ymax - (ymax - ymin) * 0.015, label, ha="center", va="top", fontsize=11 if width_frac > 0.07 else 9,
                    fontweight="bold", color=c, zorder=5, clip_on=True)
        if v.name not in seen_phase:
            seen_phase.add(v.name)
            phase_handles.append(Patch(facecolor=c, alpha=0.3, label=f"phase: {v.name}"))

    # transitions
    for i, t in enumerate(run.transitions):
        xs = _transition_x(run, t)
        if xs is None:
            continue
        c = "#b30000" if t.reason != "max_steps" else "#444444"
        ax.axvline(xs, color=c, linestyle="--", linewidth=1.4, zorder=4)
        to = "end of run" if t.to_phase == END_PHASE else t.to_phase
        at_edge = xs >= xmax - span * 0.02  # keep the label inside the axes
        ax.text(xs + (-1 if at_edge else 1) * span * 0.004, ymin + (ymax - ymin) * 0.03, f"→ {to}  ({t.reason})", rotation=90,
                ha="right" if at_edge else "left", va="bottom",
                fontsize=10, color=c, zorder=6, bbox=dict(boxstyle="round,pad=0.2", facecolor="white", edgecolor="none", alpha=0.75))
    onsets = [t for t in run.transitions if t.onset_step is not None and t.step is not None]
    for t in onsets:  # the estimated collapse: from its onset to the detection
        ax.axvspan(t.onset_step - 0.5, t.step + 0.5, color="#b30000", alpha=0.12, zorder=1, linewidth=0)
        ax.axvline(t.onset_step - 0.5, color="#b30000", linestyle=":", linewidth=1.6, zorder=4)
    rewinds = [t for t in run.transitions if t.rewind and t.step is not None]
    for t in rewinds:  # the steps the rewind took out of the policy
        start = _int_or_none(t.rewind.get("checkpoint_step"))
        if start is not None:
            ax.axvspan(start + 0.5, t.step + 0.5, facecolor="none", edgecolor="#555555", hatch="//", alpha=0.5,
                       zorder=1, linewidth=0)
    if onsets:
        handles.append(Patch(facecolor="#b30000", alpha=0.25, label="collapse: onset (dotted)\nto detection"))
    if rewinds:
        handles.append(Patch(facecolor="none", edgecolor="#555555", hatch="//", label="rewound: steps taken out\nof the policy"))
    if run.transitions:
        handles.append(Line2D([], [], color="#b30000", linestyle="--", label="transition, a guard fired:\n→ next phase (guard)"))
        if any(t.reason == "max_steps" for t in run.transitions):
            handles.append(Line2D([], [], color="#444444", linestyle="--", label="transition: max_steps"))

    # penalty level on a second axis
    pen = np.array([s.penalty_level for s in run.steps], dtype=float)
    if len(pen) and np.isfinite(pen).any():
        ax2 = ax.twinx()
        (hp,) = ax2.plot(x, pen, drawstyle="steps-mid", color="#c44e52", linewidth=2.0, alpha=0.9,
                         label="penalty level (right axis):\nmost negative penalty\n× penalty_scale")
        handles.append(hp)
        pmin = float(np.nanmin(pen))
        pmax = float(np.nanmax(pen))
        lo_p = min(pmin, 0.0)
        hi_p = max(pmax, 0.0)
        pad = (hi_p - lo_p) * 0.15 or 1.0
        ax2.set_ylim(lo_p - pad, hi_p + pad * 1.6)
        ax2.set_ylabel("penalty level (reward points)", fontsize=12, color="#c44e52")
        ax2.tick_params(axis="y", colors="#c44e52")
        for v in run.visits:  # name the preset where each phase's penalty line starts
            first = next((s for s in v.steps if _finite(s.penalty_level)), None)
            if first is None or (v.last_step - first.step + 1) / span < 0.04:
                continue
            name = first.preset or v.preset or "penalties"
            base = first.penalty_level / first.penalty_scale if first.penalty_scale else first.penalty_level
            ax2.text(first.step + span * 0.03, first.penalty_level, f"{name} {base:.3g}",
                     ha="left", va="bottom", fontsize=9, color="#a02c2c", zorder=6)
        ax.set_zorder(ax2.get_zorder() + 1)  # keep reward and labels above the penalty line
        ax.patch.set_visible(False)
    ax.legend(handles=handles + phase_handles, loc="upper left", bbox_to_anchor=(1.075, 1.0), fontsize=10, frameon=True,
              borderaxespad=0.0)
    ax.set_title("Training reward per step, phases, transitions and penalty level", fontsize=13, loc="left")

    # ---- lower panel: eval rates per phase
    _draw_eval(ax_eval, run, colours)

    fig.savefig(path, dpi=_DPI, format="png")
    return path


def _note(ax, text: str) -> None:
    """A grey message in the middle of an empty panel."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=14, color="#666666")


def _padded_ylim(ax, top_frac: float = 0.2) -> tuple[float, float]:
    lo, hi = ax.get_ylim()
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return 0.0, 1.0
    return lo, hi + (hi - lo) * top_frac


def _transition_x(run: RunData, t: Transition) -> float | None:
    # the boundary between the last step of from_phase and the first of to_phase
    if t.step is not None:
        return t.step + 0.5
    return None


def _draw_eval(ax, run: RunData, colours: dict[str, str]) -> None:
    import numpy as np
    from matplotlib.lines import Line2D

    evaluated = [v for v in run.visits if v.eval]
    ax.set_title("End-of-phase evaluation (points: rate; bars: 95% interval), phases in run order", fontsize=13, loc="left")
    if not evaluated:
        _note(ax, "no evaluation results recorded in this run")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    present = [(k, lab, c) for k, lab, c in EVAL_RATES if any(v.eval_interval(k) is not None for v in evaluated)]
    n = max(len(present), 1)
    width = 0.72
    offsets = np.linspace(-width / 2, width / 2, n) if n > 1 else np.array([0.0])
    handles = []
    for j, (key, label, colour) in enumerate(present):
        xs, ys, el, eh, open_x, open_y = [], [], [], [], [], []
        for i, v in enumerate(evaluated):
            iv = v.eval_interval(key)
            if iv is None or not _finite(iv.value):
                continue
            if iv.has_ci:
                xs.append(i + offsets[j])
                ys.append(iv.value)
                el.append(max(iv.value - iv.lo, 0.0))
                eh.append(max(iv.hi - iv.value, 0.0))
            else:
                open_x.append(i + offsets[j])
                open_y.append(iv.value)
        if xs:
            ax.errorbar(xs, ys, yerr=[el, eh], fmt="o", color=colour, markersize=7, capsize=4, elinewidth=1.6, zorder=3)
        if open_x:
            ax.plot(open_x, open_y, "o", color=colour, markersize=7, markerfacecolor="white", zorder=3)
        # thin line joining one metric across phases to show the trend
        ivs = [v.eval_interval(key) for v in evaluated]
        pts = [(i + offsets[j], iv.value) for i, iv in enumerate(ivs) if iv is not None and _finite(iv.value)]
        line_x = [p[0] for p in pts]
        line_y = [p[1] for p in pts]
        if len(line_x) > 1:
            ax.plot(line_x, line_y, "-", color=colour, alpha=0.35, linewidth=1.0, zorder=2)
        handles.append(Line2D([], [], color=colour, marker="o", linestyle="-", label=label + " rate"))
    for i, v in enumerate(evaluated):
        ax.axvspan(i - 0.5, i + 0.5, color=colours.get(v.name, "#cccccc"), alpha=0.10, linewidth=0, zorder=0)
    ticks = []
    for v in evaluated:
        n_items = _num(v.eval.get("n_items"))
        at = v.last_step if v.last_step is not None else v.finished_step
        where = f"step {at}" if at is not None else ""
        extra = " · ".join(p for p in (where, f"n={int(n_items)}" if _finite(n_items) else "") if p)
        ticks.append(f"#{v.ordinal + 1} {v.name}\n{extra}")
    ax.set_xticks(range(len(evaluated)))
    ax.set_xticklabels(ticks, fontsize=10.5)
    for lab, v in zip(ax.get_xticklabels(), evaluated):
        lab.set_color(colours.get(v.name, "black"))
        lab.set_fontweight("bold")
    ax.set_xlim(-0.6, len(evaluated) - 0.4)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("rate on eval items", fontsize=12)
    ax.grid(True, axis="y", alpha=0.3)
    if not any(True for _ in handles):
        _note(ax, "evaluations carry none of: " + ", ".join(k for k, _, _ in EVAL_RATES))
    else:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.075, 1.0), fontsize=10, frameon=True, borderaxespad=0.0)


# --------------------------------------------------------------------------------------------
# entry points


def make_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.png`` and ``report.md`` into ``run_dir``; return their paths."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    png = write_png(run, run_dir / PNG_NAME)
    md = write_markdown(run, run_dir / MD_NAME, png_name=PNG_NAME)
    return png, md


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m curriculum.report RUN_DIR``: write the report and print the summary table."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m curriculum.report RUN_DIR", file=sys.stderr)
        return 2
    try:
        png, md = make_report(args[0])
    except RunDirError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(summary_table(load_run(args[0])))
    print(f"\nwrote {png}\nwrote {md}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
