"""The curriculum's decisions as pure functions: ``init``, ``begin``, ``observe``.

In the optax style: a :class:`Curriculum` is built once from a validated spec; its state is a
small frozen value (:class:`CurriculumState`) that every call takes and returns anew, never
changing the one it was given; nothing here reads or writes files, logs, or talks to a runner.
Every decision about where a run is and where it goes is made here, as a function of
(state, metrics):

  - step budgets (a phase's and the run's), ``min_dwell``, eval phases . ``begin`` / ``observe``
  - which guard fired, and why (expressions, custom functions and the collapse detector:
    curriculum/guards.py, curriculum/collapse.py) .......................... ``observe``
  - the penalty scale of a PID phase (curriculum/controllers.py) ........... ``observe``
  - the non-finite policy (``[run] on_nonfinite = "stop_phase"``) .......... ``observe``
  - where a fired guard or a spent budget leads (the phase graph, a pytransitions machine:
    curriculum/machine.py) ...................................... every Transition

The engine (curriculum/engine.py) is the shell around it: the run loop, runner calls,
checkpoints, events, wandb and progress bars.  A host with its own training loop uses the
same object directly (README, "Embedding the curriculum in your own loop")::

    cur = Curriculum(load_spec("my.toml"))
    state = cur.init()
    while not state.finished:
        state, d = cur.begin(state)           # a phase starts, or an eval phase / spent budget moves on
        if isinstance(d, Stay):               # train one step with the values in force
            state, d = cur.observe(state, train_step(state.kind, state.penalties))

Decisions are typed values: :class:`Stay`, :class:`PhaseStarted`, :class:`PenaltiesChanged`,
:class:`Transition` and :class:`Stop` (a transition that ends the run).  The state after a
transition is already in the destination phase, waiting to be begun.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from curriculum import registry
from curriculum.machine import BUDGET, PhaseMachine
from curriculum.spec import END, Spec, load_spec, pid_config_from_table
from curriculum.state import _clean, effective_penalties
from curriculum.windows import MetricHistory

# the values that must always be finite (NaN elsewhere can mean "not defined this step", such
# as abstention accuracy in a batch without an abstention)
MUST_BE_FINITE = frozenset({"reward_mean", "reward_max", "reward_min", "loss", "kl", "grad_norm"})
NONFINITE = "nonfinite"  # the reason of a phase stopped by on_nonfinite = "stop_phase"
RUN_BUDGET = "run_budget"  # the reason a run ends on [run] max_steps, whatever phase it is in
PID_NOTABLE = 0.05  # a PID change of at least 5% of the scale last reported is notable (logged)


# ---------------------------------------------------------------------------- state


@dataclass(frozen=True)
class CurriculumState:
    """Where a run is, as plain data.  Never changed in place: every call returns a new one.

    ``history`` holds the metric windows the guards read (a persistent structure: an older
    state keeps reading its own windows after newer states were made from it).
    """

    phase: str
    kind: str  # of the current phase: "sft", "grpo" or "eval"
    history: MetricHistory
    phase_ordinal: int = 0  # phases entered before the current one
    global_step: int = 0
    phase_step: int = 0
    preset: str | None = None
    base_penalties: Mapping[str, float] = field(default_factory=dict)
    penalty_scale: float = 1.0
    scale_reported: float = 1.0  # the PID scale last reported as notable
    guards: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    controller: Mapping[str, Any] | None = None
    transitions: tuple[Mapping[str, Any], ...] = ()
    status: str = "running"  # running | finished
    finish_reason: str | None = None
    pending_phase_start: bool = True  # the current phase has not begun yet
    nonfinite_steps: int = 0

    @property
    def penalties(self) -> dict[str, float]:
        """The reward values in force: the phase's preset, penalties scaled by a PID phase."""
        return effective_penalties(dict(self.base_penalties), self.penalty_scale)

    @property
    def finished(self) -> bool:
        return self.status != "running"

    @property
    def previous_phase(self) -> str | None:
        return self.transitions[-1]["from_phase"] if self.transitions else None


# ---------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Decision:
    """What a call decided.  ``step`` / ``phase``: the step just observed (or the run's step)
    and the phase it belonged to; ``penalties``: the values in force from now on."""

    step: int
    phase: str
    penalties: Mapping[str, float]
    nonfinite: tuple[str, ...] = ()  # metrics that were NaN/inf where they must be finite
    nonfinite_rewards: float = 0.0
    guard_warnings: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (guard, non-finite terms)

    @property
    def kind(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class Stay(Decision):
    """Nothing changes: train the next step in the same phase with the same values."""


@dataclass(frozen=True)
class PhaseStarted(Decision):
    """Phase ``phase`` begins: set up training for it (``kind``, ``penalties``, ``max_steps``)."""

    phase_kind: str = "grpo"
    ordinal: int = 0
    preset: str | None = None
    max_steps: int | None = None
    previous_phase: str | None = None
    train: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PenaltiesChanged(Decision):
    """A PID phase moved its penalty scale: train on with ``penalties``.  ``notable``: the scale
    moved at least 5% since the change last reported as notable (the engine logs those)."""

    before: Mapping[str, float] = field(default_factory=dict)
    penalty_scale: float = 1.0
    measurement: float = math.nan
    notable: bool = False
    reason: str = "pid"


@dataclass(frozen=True)
class Transition(Decision):
    """Phase ``phase`` is over; the run goes to ``to``.

    ``reason``: the guard that fired, ``"max_steps"`` (the budget, or an eval phase done),
    ``"run_budget"`` (``[run] max_steps``, always to the end) or ``"nonfinite"``.  ``evaluate``: the finished phase asks for an evaluation now.  ``rewind``:
    the transition asks to restore the policy from before ``onset_step``.  ``record``: the
    entry appended to ``state.transitions``.
    """

    to: str = END
    reason: str = BUDGET
    guard_kind: str | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    phase_step: int = 0
    penalties_before: Mapping[str, float] = field(default_factory=dict)
    preset_before: str | None = None
    preset_after: str | None = None
    evaluate: bool = False
    rewind: bool = False
    onset_step: int | None = None
    story: str | None = None
    record: Mapping[str, Any] = field(default_factory=dict)
    controller_change: PenaltiesChanged | None = None  # a PID change on the same step

    @property
    def from_phase(self) -> str:
        return self.phase

    @property
    def penalties_after(self) -> Mapping[str, float]:
        return self.penalties


@dataclass(frozen=True)
class Stop(Transition):
    """The run ends (``to`` is ``"end"``): the last phase's budget, a guard leading to the end,
    or the runner running out of data (``reason="runner_exhausted"``)."""


_KINDS = {c.__name__: c for c in (Stay, PhaseStarted, PenaltiesChanged, Transition, Stop)}


def decision_to_dict(d: Decision) -> dict[str, Any]:
    """A decision as strict-JSON-safe data (what process 0 sends the others)."""
    out = {"kind": d.kind}
    for name in d.__dataclass_fields__:
        v = getattr(d, name)
        out[name] = decision_to_dict(v) if isinstance(v, Decision) else _clean(v)
    return out


def decision_from_dict(d: Mapping[str, Any]) -> Decision:
    cls = _KINDS[d["kind"]]
    kw = {k: v for k, v in d.items() if k != "kind" and k in cls.__dataclass_fields__}
    if "nonfinite" in kw:
        kw["nonfinite"] = tuple(kw["nonfinite"])
    if "guard_warnings" in kw:
        kw["guard_warnings"] = tuple((g, tuple(t)) for g, t in kw["guard_warnings"])
    if isinstance(kw.get("controller_change"), Mapping):
        kw["controller_change"] = decision_from_dict(kw["controller_change"])
    for k in ("measurement", "nonfinite_rewards"):
        if k in kw and kw[k] is None:
            kw[k] = math.nan
    return cls(**kw)


# ---------------------------------------------------------------------------- the curriculum


class Curriculum:
    """The decisions of one spec.  Build it once; call ``init`` / ``begin`` / ``observe``.

    ``spec``: a validated :class:`~curriculum.spec.Spec` (from :func:`curriculum.load_spec`) or
    the path of a TOML file.  Custom guard functions are looked up in the registry
    (``@register_guard``) when the curriculum is built.
    """

    def __init__(self, spec: Spec | str | Path, *, functions: Mapping[str, Any] | None = None):
        if not isinstance(spec, Spec):
            spec = load_spec(spec)
        self.spec = spec
        self.functions = dict(functions) if functions is not None else {
            n: registry.get_guard_function(n) for n in spec.function_names
        }
        self.capacities = spec.history_capacities()
        self._graph = PhaseMachine(spec)
        from curriculum.controllers import CONTROLLER_KINDS

        self._pid = {  # phase -> (controller kind, its config)
            name: (CONTROLLER_KINDS[ph.controller.get("type", "pid")], pid_config_from_table(ph.controller))
            for name, ph in spec.phases.items() if ph.controller is not None
        }

    # -- construction of states --------------------------------------------------------
    def init(self, start_phase: str | None = None) -> CurriculumState:
        """The state of a run that has not begun: in the start phase, waiting to be begun."""
        start = start_phase or self.spec.start
        if start not in self.spec.phases:
            raise ValueError(f"unknown start phase {start!r}")
        default, caps = self.capacities
        return CurriculumState(phase=start, kind=self.spec.phases[start].kind,
                               history=MetricHistory(default, caps))

    def restore(self, fields: Mapping[str, Any], history: Mapping[str, Any] | None) -> CurriculumState:
        """A state from its stored fields (a checkpoint's engine.json) and stored windows.

        A stored guard state that no longer fits its guard as now declared (a resumed run whose
        spec changed the guard's type) starts afresh rather than crash the guard."""
        default, caps = self.capacities
        hist = MetricHistory.from_dict(history, default, caps) if history else MetricHistory(default, caps)
        phase = str(fields["phase"])
        guards = dict(fields.get("guards") or {})
        if phase in self.spec.phases and not fields.get("pending_phase_start", True):
            for t in self.spec.transitions_from(phase):
                fresh = self.spec.guards[t.guard].init_state()
                if t.guard in guards and not _guard_state_fits(guards[t.guard], fresh):
                    guards[t.guard] = fresh
        scale = fields.get("penalty_scale")
        scale = 1.0 if scale is None else float(scale)
        return CurriculumState(
            phase=phase,
            kind=self.spec.phases[phase].kind if phase in self.spec.phases else "eval",
            history=hist,
            phase_ordinal=int(fields.get("phase_ordinal", 0)),
            global_step=int(fields.get("global_step", 0)),
            phase_step=int(fields.get("phase_step", 0)),
            preset=fields.get("preset"),
            base_penalties=dict(fields.get("base_penalties") or {}),
            penalty_scale=scale,
            scale_reported=scale,
            guards=guards,
            controller=fields.get("controller"),
            transitions=tuple(fields.get("transitions") or ()),
            status=str(fields.get("status", "running")),
            finish_reason=fields.get("finish_reason"),
            pending_phase_start=bool(fields.get("pending_phase_start", True)),
            nonfinite_steps=int(fields.get("nonfinite_steps", 0)),
        )

    # -- the calls of a run --------------------------------------------------------------
    def begin(self, state: CurriculumState) -> tuple[CurriculumState, Decision]:
        """Before a training step: begin a phase that has not begun (:class:`PhaseStarted`);
        move on from an eval phase or a spent budget (:class:`Transition`); else :class:`Stay`."""
        if state.finished:
            raise ValueError("the run has finished; nothing to begin")
        ph = self.spec.phases[state.phase]
        if state.pending_phase_start:
            preset, base = self.spec.penalties_for(state.phase)
            guards = {t.guard: self.spec.guards[t.guard].init_state() for t in self.spec.transitions_from(state.phase)}
            controller, scale = None, 1.0
            if state.phase in self._pid:
                kind, cfg = self._pid[state.phase]
                controller = kind.init(cfg)
                scale = 1.0 + float(controller["lam"])
            new = replace(
                state, kind=ph.kind, history=state.history.begun(state.phase), phase_step=0, preset=preset,
                base_penalties=base, penalty_scale=scale, scale_reported=scale, guards=guards,
                controller=controller, pending_phase_start=False,
            )
            return new, PhaseStarted(
                step=new.global_step, phase=new.phase, penalties=new.penalties, phase_kind=ph.kind,
                ordinal=new.phase_ordinal, preset=preset, max_steps=ph.max_steps,
                previous_phase=new.previous_phase, train=dict(ph.train),
            )
        if ph.kind == "eval":
            return self._move(state, self._graph.dest(state.phase, None), BUDGET, None)
        spent = self._budget_move(state)
        if spent is not None:
            return self._move(state, *spent, None)
        return state, Stay(step=state.global_step, phase=state.phase, penalties=state.penalties)

    def remaining(self, state: CurriculumState) -> float:
        """Steps left before a budget ends the phase: the phase's own, or the run's
        (``[run] max_steps``); inf without either."""
        ph = self.spec.phases[state.phase]
        left = math.inf if ph.max_steps is None else max(0, ph.max_steps - state.phase_step)
        run_max = self.spec.model.run.max_steps
        if run_max is not None:
            left = min(left, max(0, run_max - state.global_step))
        return left

    def _budget_move(self, state: CurriculumState) -> tuple[str, str] | None:
        """(destination, reason) when a budget is spent: the phase's own names the reason when
        both run out at once and it leads to the end anyway; else the run's ends the run."""
        ph = self.spec.phases[state.phase]
        phase_done = ph.max_steps is not None and state.phase_step >= ph.max_steps
        run_max = self.spec.model.run.max_steps
        run_spent = run_max is not None and state.global_step >= run_max
        if not (phase_done or run_spent):
            return None
        dest, reason = (self._graph.dest(state.phase, None), BUDGET) if phase_done else (END, RUN_BUDGET)
        if run_spent and dest != END:
            dest, reason = END, RUN_BUDGET
        return dest, reason

    def observe(self, state: CurriculumState, metrics: Mapping[str, Any]) -> tuple[CurriculumState, Decision]:
        """One training step's metrics (already global across processes): the step is counted,
        the windows and the controller updated, the guards checked, the budget applied."""
        state, clean, bad, nfr = self._record(state, metrics)
        return self._decide(state, clean, bad, nfr)

    def record(self, state: CurriculumState, metrics: Mapping[str, Any]) -> tuple[CurriculumState, Decision]:
        """Count a step without deciding anything (processes other than 0 of a multi-process
        run, which then :meth:`follow` process 0's decision)."""
        state, _, bad, nfr = self._record(state, metrics)
        return state, Stay(step=state.global_step, phase=state.phase, penalties=state.penalties,
                           nonfinite=tuple(bad), nonfinite_rewards=nfr)

    def follow(self, state: CurriculumState, decision: Decision) -> CurriculumState:
        """Apply a decision made elsewhere (process 0) to a state that recorded the same step."""
        if isinstance(decision, PenaltiesChanged):
            return replace(state, penalty_scale=float(decision.penalty_scale))
        if isinstance(decision, Transition):
            return self._moved(state, decision)
        return state

    def finish(self, state: CurriculumState, reason: str) -> tuple[CurriculumState, Stop]:
        """End the run where it is (the runner ran out of data: ``reason="runner_exhausted"``)."""
        d = Stop(step=state.global_step, phase=state.phase, penalties={}, to=END, reason=reason,
                 phase_step=state.phase_step, penalties_before=state.penalties, preset_before=state.preset,
                 evaluate=self.spec.phases[state.phase].eval.enabled, record={})
        return replace(state, status="finished", finish_reason=reason), d

    # -- internals -------------------------------------------------------------------------
    def _record(self, state: CurriculumState, metrics: Mapping[str, Any]):
        if state.finished or state.pending_phase_start:
            raise ValueError("observe() needs a begun phase: call begin() first")
        clean = {str(k): _as_float(v) for k, v in metrics.items()}
        bad = [k for k, v in clean.items() if (k in MUST_BE_FINITE and not math.isfinite(v)) or math.isinf(v)]
        nfr = clean.get("nonfinite_rewards", 0.0)
        nfr = nfr if math.isfinite(nfr) else 0.0
        hit = bool(bad) or nfr > 0
        new = replace(
            state, history=state.history.pushed(clean), global_step=state.global_step + 1,
            phase_step=state.phase_step + 1, nonfinite_steps=state.nonfinite_steps + (1 if hit else 0),
        )
        return new, clean, bad, nfr

    def _decide(self, state: CurriculumState, clean: dict[str, float], bad: list[str], nfr: float):
        ph = self.spec.phases[state.phase]
        base = dict(step=state.global_step, phase=state.phase, nonfinite=tuple(bad), nonfinite_rewards=nfr)
        change = None
        if state.phase in self._pid:
            state, change = self._controller(state, clean, base)
        if self.spec.model.run.on_nonfinite == "stop_phase" and (bad or nfr > 0):
            return self._move(state, self._graph.dest(state.phase, None), NONFINITE, None, base, change)
        warnings: list[tuple[str, tuple[str, ...]]] = []
        fired = None
        if state.phase_step >= ph.min_dwell:
            guards = dict(state.guards)
            for t in self.spec.transitions_from(state.phase):
                g = self.spec.guards[t.guard]
                gstate, result = g.update(guards.get(t.guard) or g.init_state(), state.history, self.functions)
                guards[t.guard] = gstate
                if result.nonfinite_terms:
                    warnings.append((t.guard, tuple(result.nonfinite_terms)))
                if result.fired and fired is None:
                    fired = (t, result)
            state = replace(state, guards=guards)
        base["guard_warnings"] = tuple(warnings)
        if fired is not None:
            t, result = fired
            return self._move(state, t.dest, t.guard, result, base, change)
        spent = self._budget_move(state)
        if spent is not None:
            return self._move(state, *spent, None, base, change)
        if change is not None:
            return state, replace(change, guard_warnings=base["guard_warnings"])
        return state, Stay(penalties=state.penalties, **base)

    def _controller(self, state: CurriculumState, clean: dict[str, float], base: dict[str, Any]):
        kind, cfg = self._pid[state.phase]
        tbl = self.spec.phases[state.phase].controller or {}
        metric = tbl["metric"]
        window = int(tbl.get("window", 1))
        if window > 1:
            import numpy as np

            vals = np.asarray(state.history.window(metric, window), dtype=float)
            vals = vals[np.isfinite(vals)]
            meas = float(vals.mean()) if vals.size else math.nan
        else:
            meas = clean.get(metric, math.nan)
        ctrl, lam = kind.update(cfg, dict(state.controller or {}), meas)
        scale = 1.0 + float(lam)  # the preset's penalties times (1 + lambda)
        state = replace(state, controller=ctrl)
        if scale == state.penalty_scale:
            return state, None
        before = state.penalties
        ref = max(abs(state.scale_reported), 1e-9)
        notable = abs(scale - state.scale_reported) / ref >= PID_NOTABLE
        state = replace(state, penalty_scale=scale, scale_reported=scale if notable else state.scale_reported)
        return state, PenaltiesChanged(penalties=state.penalties, before=before, penalty_scale=scale,
                                       measurement=meas, notable=notable, **base)

    def _move(self, state, dest, reason, result, base=None, change=None):
        """The Transition (or Stop) from the current phase to ``dest``, and the state after it."""
        src = state.phase
        base = base or dict(step=state.global_step, phase=src)
        evidence = dict(result.evidence) if result is not None else {}
        guard_kind = self.spec.guards[reason].kind if result is not None and reason in self.spec.guards else None
        record: dict[str, Any] = {"from_phase": src, "to_phase": dest, "step": state.global_step,
                                  "phase_step": state.phase_step, "reason": reason}
        story = _onset(evidence, state) if guard_kind == "collapse" else None
        if story is not None:
            record["onset_step"] = story["onset_step"]
        trans = next((t for t in self.spec.transitions_from(src) if t.guard == reason), None)
        rewind = bool(trans is not None and trans.rewind and dest != END)
        if dest != END:
            preset_after, base_after = self.spec.penalties_for(dest)
            after = effective_penalties(base_after, 1.0)
        else:
            preset_after, after = None, {}
        cls = Stop if dest == END else Transition
        d = cls(
            penalties=after, to=dest, reason=reason, guard_kind=guard_kind, evidence=evidence,
            phase_step=state.phase_step, penalties_before=state.penalties, preset_before=state.preset,
            preset_after=preset_after, evaluate=self.spec.phases[src].eval.enabled, rewind=rewind,
            onset_step=(story["onset_step"] if story is not None else (state.global_step if rewind else None)),
            story=story["story"] if story is not None else None, record=record, controller_change=change,
            **base,
        )
        return self._moved(state, d), d

    def _moved(self, state: CurriculumState, d: Transition) -> CurriculumState:
        if d.reason == RUN_BUDGET:  # the run's budget ends the run from any phase
            dest = END
        else:
            dest = self._graph.dest(state.phase, d.reason if d.reason in self.spec.guards else None, expect=d.to)
        record = dict(d.record) if d.record else None
        transitions = state.transitions + ((record,) if record else ())
        if dest == END:
            return replace(state, transitions=transitions, status="finished", finish_reason=d.reason)
        return replace(
            state, phase=dest, kind=self.spec.phases[dest].kind, phase_ordinal=state.phase_ordinal + 1,
            phase_step=0, pending_phase_start=True, transitions=transitions,
        )


# ---------------------------------------------------------------------------- helpers


def _as_float(v: Any) -> float:
    """A metric value as a float; anything that is not a number (a string, None, a list, an int
    too big for a float) is recorded as NaN rather than stopping the run."""
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _guard_state_fits(stored: Any, fresh: Mapping[str, Any]) -> bool:
    if not isinstance(stored, Mapping) or not set(fresh) <= set(stored):
        return False
    if "detector" in fresh:
        det = stored.get("detector")
        return isinstance(det, Mapping) and set(fresh["detector"]) <= set(det)
    return True


def _onset(evidence: Mapping[str, Any], st: CurriculumState) -> dict[str, Any] | None:
    """The collapse detector's change-point estimate as a global step, and its story."""
    ph_onset = evidence.get("onset_phase_step")
    if not isinstance(ph_onset, int):
        return None
    onset = st.global_step - st.phase_step + ph_onset
    stat, thr = evidence.get("statistic"), evidence.get("threshold")
    far = evidence.get("false_alarm_rate")
    base = evidence.get("baseline") or {}
    p_flat = (base.get("p") or {}).get("flat")
    story = (
        f"collapse began near step {onset}, detected at {st.global_step} "
        f"(CUSUM {stat:.2f} >= threshold {thr:.2f} = log(1/false_alarm_rate), false_alarm_rate "
        f"{far:g} per step; healthy flat-group rate {p_flat:.2f} from {base.get('groups', 0):.0f} "
        f"{base.get('source', '?')} groups)"
        if isinstance(stat, (int, float)) and isinstance(thr, (int, float)) and isinstance(far, (int, float))
        and isinstance(p_flat, (int, float)) else f"collapse began near step {onset}, detected at {st.global_step}"
    )
    return {"onset_step": onset, "story": story}


__all__ = [
    "Curriculum", "CurriculumState", "Decision", "Stay", "PhaseStarted", "PenaltiesChanged", "Transition",
    "Stop", "decision_to_dict", "decision_from_dict",
]
