"""Reading a run directory into RunData: steps, phase visits, transitions, evaluations with
intervals (the first third of the report; markdown.py and picture.py render what this reads).
See curriculum/report/__init__.py for the inputs and the public API."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

try:  # the package's user-facing error type; keep the report usable on its own
    from curriculum.errors import RunDirError
except Exception:  # pragma: no cover - only when errors.py is unavailable

    class RunDirError(Exception):  # type: ignore[no-redef]
        """A run directory that is missing, damaged or incompatible."""




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
    ("grounded_rate", "verbatim proof", "#8c564b"),  # what safety is made of on a tiny model
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
            elif ev.get("seed") is not None:
                info["seed"] = ev["seed"]  # a branch may run on with another seed
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


def eval_samples(run: RunData, visit: PhaseVisit) -> list[dict[str, Any]] | None:
    """The per-item rows of the evaluation that closed ``visit`` (RUN_DIR/evals/, written by the
    runner), or None when the runner wrote none or the file cannot be read."""
    if visit.finished_step is None:
        return None
    path = run.run_dir / "evals" / f"step-{visit.finished_step:07d}-{visit.name}.jsonl"
    if not path.is_file():
        return None
    rows = []
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("id"), str):
                return None
            rows.append(row)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return rows


def _paired_outcomes(base: list[dict[str, Any]], final: list[dict[str, Any]], key: str,
                     common: bool = False) -> list[tuple[int, int]] | None:
    """(start, end) 0/1 outcomes of ``key`` per item, when both evaluations judged the same items
    once each and every value is 0, 1 or null (an item the rate leaves out, skipped when either
    evaluation left it out); else None.  ``common``: pair the items both evaluations judged
    (each once) even when one judged items the other did not (None when they share none)."""
    a = {r["id"]: r.get(key) for r in base}
    b = {r["id"]: r.get(key) for r in final}
    if len(a) != len(base) or len(b) != len(final) or not a or not b:
        return None
    if common:
        a = {k: v for k, v in a.items() if k in b}
    elif a.keys() != b.keys():
        return None
    pairs = []
    for k, x in a.items():
        y = b[k]
        if any(v is not None and (isinstance(v, bool) or v not in (0, 1)) for v in (x, y)):
            return None
        if x is not None and y is not None:
            pairs.append((int(x), int(y)))
    return pairs or None


def paired_diff_interval(pairs: list[tuple[int, int]]) -> Interval:
    """end - start of a rate measured twice on the same items, with Newcombe's (1998, method 10)
    interval for paired proportions: each rate's Wilson interval, combined with the correlation
    of the two outcomes over items (phi), so that items that did not change do not widen it."""
    from rewards import wilson

    n = len(pairs)
    if n == 0:
        return Interval(math.nan)
    both = sum(1 for x, y in pairs if x and y)
    start_only = sum(1 for x, y in pairs if x and not y)
    end_only = sum(1 for x, y in pairs if y and not x)
    neither = n - both - start_only - end_only
    p_end, p_start = (both + end_only) / n, (both + start_only) / n
    l_end, u_end = wilson(both + end_only, n)
    l_start, u_start = wilson(both + start_only, n)
    denom = (both + end_only) * (start_only + neither) * (both + start_only) * (end_only + neither)
    phi = (both * neither - end_only * start_only) / math.sqrt(denom) if denom > 0 else 0.0
    d = p_end - p_start
    lo = d - math.sqrt(max(0.0, (p_end - l_end) ** 2 - 2 * phi * (p_end - l_end) * (u_start - p_start) + (u_start - p_start) ** 2))
    hi = d + math.sqrt(max(0.0, (u_end - p_end) ** 2 - 2 * phi * (u_end - p_end) * (p_start - l_start) + (p_start - l_start) ** 2))
    return Interval(d, max(-1.0, lo), min(1.0, hi))


@dataclass(frozen=True)
class Change:
    """An eval rate's change between two evaluations: ``start`` and ``end`` are the rates the
    change is taken between (over the common items when the two judged different item sets),
    ``paired`` whether the interval pairs the items, ``common`` the number of items paired
    when the two evaluations judged different sets (0: the same items, or not paired)."""

    start: Interval
    end: Interval
    change: Interval
    paired: bool
    common: int = 0


def _rate_of(outcomes: list[int]) -> Interval:
    from rewards import wilson

    n = len(outcomes)
    k = sum(outcomes)
    return Interval(k / n, *wilson(k, n)) if n else Interval(math.nan)


def change_detail(run: RunData, base: PhaseVisit, final: PhaseVisit, key: str,
                  rows: tuple[list[dict[str, Any]] | None, list[dict[str, Any]] | None] | None = None,
                  ) -> Change | None:
    """final - base for an eval rate.  Paired (Newcombe's interval for paired proportions) when
    both evaluations wrote per-item rows: over all items when they judged the same ones, else
    over the items both judged (e.g. a phase evaluated on the first 300 of the 1,200 items the
    end of SFT was), with the two rates then taken over those items too, so that start, end and
    change describe the same items.  Otherwise (no rows, damaged rows, no item in common)
    Newcombe's interval for two independent rates.  ``rows``: the two evaluations' rows already
    read (``eval_samples``), for several keys."""
    a, b = base.eval_interval(key), final.eval_interval(key)
    if a is None or b is None:
        return None
    rows_a, rows_b = rows if rows is not None else (eval_samples(run, base), eval_samples(run, final))
    if rows_a is not None and rows_b is not None:
        pairs = _paired_outcomes(rows_a, rows_b, key)
        if pairs is not None:
            return Change(a, b, paired_diff_interval(pairs), True)
        pairs = _paired_outcomes(rows_a, rows_b, key, common=True)
        if pairs is not None:
            return Change(_rate_of([x for x, _ in pairs]), _rate_of([y for _, y in pairs]),
                          paired_diff_interval(pairs), True, len(pairs))
    return Change(a, b, _diff_interval(a, b), False)


def change_interval(run: RunData, base: PhaseVisit, final: PhaseVisit, key: str,
                    rows: tuple[list[dict[str, Any]] | None, list[dict[str, Any]] | None] | None = None,
                    ) -> tuple[Interval, bool] | None:
    """(final - base for an eval rate, paired?): ``change_detail``'s interval."""
    got = change_detail(run, base, final, key, rows)
    return None if got is None else (got.change, got.paired)


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


