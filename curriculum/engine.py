"""The engine: drives a runner through the phase machine, one chunk of steps at a time.

This module decides nothing: every decision (budgets, dwell, guards, the collapse detector,
the PID controller, eval phases, the non-finite policy, where a transition leads) is made by
the pure core, curriculum/core.py (``Curriculum.begin`` / ``observe``), as a function of
(state, metrics).  The engine is the shell around it: the run loop, runner calls, checkpoints,
events, wandb and progress bars, all on disk in a fixed crash-safe order.  The core's
CurriculumState is the one record of where the run is; state.json and each checkpoint's
engine.json are that state plus the shell's own fields (curriculum/state.py, RunState).

Non-finite metrics (`[run] on_nonfinite`): a step whose reward statistics or trainer numbers
are NaN/inf, or whose rewards included NaN/inf (`nonfinite_rewards` > 0), is always counted
(`nonfinite_steps` in state.json) and logged (`nonfinite_metrics` events).  Then:
  - "skip" (default): training goes on; guard statistics ignore the non-finite values;
  - "penalty": for the engine exactly like "skip".  Replacing a non-finite reward by a penalty
    is the reward function's business (rewards.DipgReward(on_error="penalty") under Tunix), so
    by the time the engine sees the step there is nothing more to do;
  - "stop_phase": the phase ends at that step with reason "nonfinite" and the run moves on as
    if the phase's budget had run out.
A metric value that is not a number (a string, None, a list) is recorded as NaN.  A runner that
raises, or yields something other than a dict, stops the run with a RunnerError (one paragraph,
a `runner_failed` event, the traceback in RUN_DIR/runner-error.txt); the run directory stays
consistent and `curriculum resume` continues from the last checkpoint.

Crash safety: a checkpoint is written into a temporary folder (runner files, then engine.json)
and renamed into place; only then does state.json point at it.  Resuming restores the runner
and the engine state from the same checkpoint and cuts the logs back to the byte offsets
recorded with it, so a resumed run continues exactly where that checkpoint left off.  Which
checkpoint, whether the logs still match it, and who may write: curriculum/rundir.py (the lock
and the integrity checks that `curriculum status` shares).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from curriculum import distributed, faults, rundir
from curriculum.errors import CurriculumError, RunDirError, RunnerError
from curriculum.events import EventLog, MetricsLog, truncate_to
from curriculum.limits import NAME_RULE, inside
from curriculum.core import (
    Curriculum,
    CurriculumState,
    Decision,
    PenaltiesChanged,
    PhaseStarted,
    Stop,
    Transition,
    _as_float,
    decision_from_dict,
    decision_to_dict,
)
from curriculum.spec import Spec, load_spec
from curriculum.state import RunState, atomic_write_json, fsync_dir, load_state, save_state
from curriculum.tracking import Tracker
from runners.base import PhaseSetup, RunContext

CKPT_DIR = "checkpoints"


@dataclass
class ShellState:
    """What only the shell keeps: identity, checkpoints and logs, rewinds in flight.  Where the
    run is (phase, steps, guards, penalties) lives in the core's CurriculumState alone."""

    spec_digest: str
    seed: int
    visits: list[dict] = field(default_factory=list)  # {"phase", "start_step", "ordinal", "checkpoint"}
    last_checkpoint: str | None = None
    log_offsets: dict[str, int] = field(default_factory=dict)
    log_digests: dict[str, str] = field(default_factory=dict)
    pending_rewind: dict | None = None  # decided by a transition, carried out at the next phase start
    rewinds: list[dict] = field(default_factory=list)


_CORE_FIELDS = (
    "phase", "phase_ordinal", "global_step", "phase_step", "preset", "base_penalties", "penalty_scale",
    "guards", "controller", "status", "finish_reason", "pending_phase_start", "nonfinite_steps",
)
_SHELL_FIELDS = tuple(f for f in ShellState.__dataclass_fields__)


class Engine:
    """The I/O shell around the pure core (curriculum/core.py): the run loop, runner calls,
    checkpoints, events, wandb and progress bars.  It decides nothing itself."""

    def __init__(
        self,
        spec: Spec,
        run_dir: Path,
        runner: Any,
        state: RunState,
        *,
        console: bool = True,
        progress: bool | None = None,
        resume_from: Path | None = None,
        cluster: distributed.Cluster | None = None,
    ):
        self.spec = spec
        # Several processes: process 0 decides and writes; see curriculum/distributed.py.
        self.cluster = cluster if cluster is not None else distributed.current()
        primary = self.cluster.is_primary
        self.run_dir = Path(run_dir)
        self.runner = runner
        self.resume_from = resume_from
        self.core = Curriculum(spec)
        stored = state.to_dict()
        # the one source of truth for where the run is
        self.cs: CurriculumState = self.core.restore(stored, state.history)
        self.io = ShellState(**{k: stored[k] for k in _SHELL_FIELDS if k in stored})
        self.events = EventLog(self.run_dir, console=console and primary, enabled=primary)
        self.metrics = MetricsLog(self.run_dir, enabled=primary)
        self.progress = spec.model.run.progress if progress is None else progress
        self.tracker = Tracker(
            spec.model.run.wandb if primary else "disabled", self.run_dir, spec.model.run.name, spec.raw, self.events
        )
        self._bar = None
        self._nonfinite_logged = 0
        self.lock: rundir.RunLock | None = None  # process 0's hold on the run directory
        self.resume_repairs: list[str] = []  # what resume fixed before this engine started
        # the same name on every process: all of them save into one checkpoint directory
        self._tmp_tag = self.cluster.broadcast(os.getpid())

    @property
    def state(self) -> RunState:
        """The run's state as it is written to disk (without the metric windows)."""
        return self._run_state(history=False)

    def _run_state(self, history: bool) -> RunState:
        cs, io = self.cs, self.io
        return RunState(
            **{k: getattr(io, k) for k in _SHELL_FIELDS},
            **{k: getattr(cs, k) for k in _CORE_FIELDS if k not in ("base_penalties", "guards", "controller")},
            base_penalties=dict(cs.base_penalties),
            guards={k: dict(v) for k, v in cs.guards.items()},
            controller=dict(cs.controller) if cs.controller is not None else None,
            transitions=[dict(t) for t in cs.transitions],
            history=cs.history.to_dict() if history else None,
        )

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(
        cls,
        spec: Spec,
        run_dir: Path,
        *,
        runner_override: Any = None,
        start_phase: str | None = None,
        console: bool = True,
        progress: bool | None = None,
        spec_text: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> "Engine":
        cluster = distributed.connect(spec.model.run.distributed)
        run_dir = Path(cluster.broadcast(str(run_dir)))  # a default name holds process 0's clock
        start = start_phase or spec.start
        if start not in spec.phases:
            from curriculum.errors import one_of, suggest

            raise CurriculumError(
                f"--start-phase: unknown phase '{start}'; expected {one_of(spec.phases)}{suggest(start, spec.phases)}"
            )
        held: dict[str, rundir.RunLock] = {}

        def create() -> None:
            held["lock"] = _create_run_dir(spec, run_dir, start, spec_text, meta)

        cluster.agree(create)

        def make() -> "Engine":
            state = RunState(spec_digest=spec.digest(), seed=spec.model.run.seed, phase=start)
            runner = runner_override if runner_override is not None else make_runner(spec)
            return cls(spec, run_dir, runner, state, console=console, progress=progress, cluster=cluster)

        return _holding(held, make)

    # ------------------------------------------------------------------ main loop

    def run(self) -> RunState:
        cs = self.cs
        ctx = RunContext(
            run_dir=self.run_dir,
            seed=self.io.seed,
            model=dict(self.spec.model.model),
            data=dict(self.spec.model.data),
            runner=dict(self.spec.model.runner),
            reward=self.spec.model.reward.model_dump(),
            process_index=self.cluster.index,
            process_count=self.cluster.count,
        )
        self.events.bind(run=self.spec.model.run.name)
        self.events.capture_library_logs()
        self.events.emit(
            "run_started",
            spec=str(self.spec.path) if self.spec.path else None,
            profile=self.spec.profile,
            seed=self.io.seed,
            phases=list(self.spec.phases),
            start_phase=cs.phase,
            resumed=self.resume_from is not None,
            step=cs.global_step,
            runner=self.spec.runner_kind,
            processes=self.cluster.count,
        )
        if self.lock is not None and self.lock.stale:
            old = self.lock.stale
            self.events.emit("stale_lock_recovered", level="warning", pid=old.get("pid"), host=old.get("host"),
                             command=old.get("command"), since=old.get("since"))
        for repair in self.resume_repairs:
            self.events.emit("resume_repaired", level="warning", repair=repair)
        try:
            self._runner_call("open", self.runner.open, ctx)
        except RunnerError:
            self.events.release_library_logs()
            self.metrics.close()
            self.events.close()
            self._release()
            raise
        self.tracker.start()
        try:
            if self.resume_from is not None and not cs.finished and not cs.pending_phase_start:
                self._setup_runner()
                self._runner_call("restore", self.runner.restore, self.resume_from / "runner")
                self.events.emit("run_resumed", checkpoint=str(self.resume_from), step=cs.global_step,
                                 phase=cs.phase, phase_step=cs.phase_step)
            while not self.cs.finished:
                self._advance()
        except KeyboardInterrupt:
            self.events.emit("run_interrupted", level="warning", step=self.cs.global_step, phase=self.cs.phase)
            raise
        except OSError as e:  # the run directory itself: full disk, removed, read-only
            raise RunDirError(
                f"{self.run_dir}: cannot write the run directory at step {self.cs.global_step} "
                f"({e.strerror or e}{': ' + str(e.filename) if getattr(e, 'filename', None) else ''}); "
                f"the last checkpoint {self._previous_checkpoint()} is intact: free space and "
                f"`curriculum resume {self.run_dir}` continues from it"
            ) from None
        finally:
            self._close_bar()
            self.metrics.close()
            try:
                self.runner.close()
            finally:
                self.tracker.finish()
                self.events.release_library_logs()
                self.events.close()
                self._release()
        return self.state

    def _release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _advance(self) -> None:
        """One turn of the loop: what the core says to do next, then a chunk of steps."""
        self.cs, d = self.core.begin(self.cs)
        if isinstance(d, PhaseStarted):
            self._phase_started(d)
            return
        if isinstance(d, Transition):
            self._transition(d)
            return
        cs = self.cs
        chunk = int(min(self.spec.model.run.chunk_steps, self.core.remaining(cs)))
        every = self.spec.model.run.checkpoint_every
        if every:
            chunk = min(chunk, every - (cs.global_step % every))
        done = 0
        steps = iter(self._runner_call("train", self.runner.train, chunk))
        moved = None
        while True:
            try:
                metrics = next(steps)
            except StopIteration:
                break
            except Exception as e:  # noqa: BLE001 - the runner's failure, reported as such
                raise self._runner_failed("train", e) from None
            if not isinstance(metrics, dict):
                raise self._runner_failed(
                    "train", TypeError(f"yielded {type(metrics).__name__} {metrics!r:.80}, expected a dict of metrics")
                )
            done += 1
            d = self._on_step(metrics)
            faults.point("step")
            if isinstance(d, Transition):
                moved = d
                close = getattr(steps, "close", None)
                if close is not None:  # the phase is over: no further step of this chunk is trained
                    close()
                break
        self.metrics.flush()
        if moved is not None:
            self._transition(moved)
            return
        if done < chunk:
            self.cs, stop = self.core.finish(self.cs, "runner_exhausted")
            self._finish_phase(stop)
            self._finish_run(stop.reason)
            return
        if every and self.cs.global_step % every == 0:
            self._checkpoint(periodic=True)

    def _runner_call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001
            raise self._runner_failed(what, e) from None

    def _emit_failure(self, event: str, **fields: Any) -> None:
        """Log a failure event; the log itself may be what failed (a full disk), so never raise."""
        try:
            self.events.emit(event, level="error", console=False, **fields)
        except (OSError, ValueError):
            pass

    def _runner_failed(self, what: str, e: BaseException) -> RunnerError:
        """Log a runner failure (event + traceback file) and build the one-paragraph error."""
        import traceback

        cs = self.cs
        tb_path = self.run_dir / (
            f"runner-error.p{self.cluster.index}.txt" if self.cluster.multi else "runner-error.txt"
        )
        try:
            tb_path.write_text("".join(traceback.format_exception(e)), encoding="utf-8")
        except OSError:
            tb_path = None
        self._emit_failure("runner_failed", during=what, phase=cs.phase, step=cs.global_step,
                           error=f"{type(e).__name__}: {e}")
        return RunnerError(
            f"the {self.spec.runner_kind} runner failed during {what} in phase '{cs.phase}' after step "
            f"{cs.global_step} ({type(e).__name__}: {e})"
            + (f"; traceback in {tb_path}" if tb_path else "")
            + f". The run directory is consistent: `curriculum resume {self.run_dir}` continues from the "
            f"last checkpoint ({self._previous_checkpoint()})."
        )

    # ------------------------------------------------------------------ per step

    def _on_step(self, metrics: dict[str, Any]) -> Decision:
        """Record one step and carry out what the core decided about it (process 0 decides;
        the others follow its decision, one broadcast per step)."""
        clean = {str(k): _as_float(v) for k, v in metrics.items()}
        if self.cluster.multi:  # every process's shard of the batch, as one global step
            clean = self.cluster.reduce_metrics(clean)
        before = self.cs
        if self.cluster.is_primary:
            self.cs, d = self.core.observe(before, clean)
        else:
            self.cs, d = self.core.record(before, clean)
        if self.cluster.multi:
            d = self._share_decision(d)
        cs = self.cs
        if d.nonfinite or d.nonfinite_rewards > 0:
            if self._nonfinite_logged < 20 or cs.nonfinite_steps % 100 == 0:
                self._nonfinite_logged += 1
                self.events.emit(
                    "nonfinite_metrics",
                    level="warning",
                    console=self._nonfinite_logged <= 3,
                    phase=d.phase,
                    step=d.step,
                    metrics=list(d.nonfinite),
                    nonfinite_rewards=d.nonfinite_rewards,
                    total_steps_affected=cs.nonfinite_steps,
                    policy=self.spec.model.run.on_nonfinite,
                )
        self.metrics.write(
            {
                "step": d.step,
                "phase": d.phase,
                "phase_step": before.phase_step + 1,
                "preset": before.preset,
                "penalty_scale": before.penalty_scale,
                "metrics": clean,
            }
        )
        self.tracker.log(d.step, clean, phase_ordinal=before.phase_ordinal, penalty_scale=before.penalty_scale)
        if self._bar is not None:
            self._bar.update(1)
            rm = clean.get("reward_mean", clean.get("loss"))
            if rm is not None and (before.phase_step + 1) % 5 == 0:
                self._bar.set_postfix_str(f"{'reward' if 'reward_mean' in clean else 'loss'}={rm:.3g}", refresh=False)
        for guard, terms in d.guard_warnings:
            self.events.emit("guard_nonfinite", level="warning", console=False, guard=guard, phase=d.phase,
                             step=d.step, terms=list(terms))
        change = d if isinstance(d, PenaltiesChanged) else getattr(d, "controller_change", None)
        if change is not None:
            if not isinstance(d, Transition):
                self.runner.set_penalties(dict(change.penalties))
            if change.notable:
                self.events.emit("penalties_changed", console=False, phase=change.phase, step=change.step,
                                 reason=change.reason, measurement=change.measurement,
                                 penalty_scale=change.penalty_scale, before=dict(change.before),
                                 after=dict(change.penalties))
        return d

    def _share_decision(self, decision: Decision) -> Decision:
        """Process 0's decision of this step on every process."""
        msg = self.cluster.broadcast(decision_to_dict(decision) if self.cluster.is_primary else None)
        if self.cluster.is_primary:
            return decision
        shared = decision_from_dict(msg)
        self.cs = self.core.follow(self.cs, shared)
        return shared

    # ------------------------------------------------------------------ phases

    def _phase_setup(self) -> PhaseSetup:
        cs = self.cs
        ph = self.spec.phases[cs.phase]
        ev = ph.eval.model_dump()
        if ev.get("preset") is None:
            ev["preset"] = self.spec.model.reward.eval_preset or cs.preset
        ev["penalties"] = (
            dict(self.spec.presets[ev["preset"]]) if ev.get("preset") in self.spec.presets else cs.penalties
        )
        return PhaseSetup(
            name=cs.phase,
            kind=ph.kind,
            ordinal=cs.phase_ordinal,
            max_steps=ph.max_steps,
            start_phase_step=cs.phase_step,
            global_step=cs.global_step,
            penalties=cs.penalties,
            train=dict(ph.train),
            eval=ev,
            previous_phase=cs.previous_phase,
            preset=cs.preset,
        )

    def _setup_runner(self) -> None:
        """Set the runner up for the current phase (a phase start, or a resume inside it)."""
        self._runner_call("setup_phase", self.runner.setup_phase, self._phase_setup())
        faults.point("phase_setup")

    def _phase_started(self, d: PhaseStarted) -> None:
        cs = self.cs
        self._setup_runner()
        if self.io.pending_rewind:
            self._rewind(self.io.pending_rewind)
        self.runner.set_penalties(cs.penalties)
        self._open_bar()
        self.io.visits.append(
            {
                "phase": cs.phase,
                "ordinal": cs.phase_ordinal,
                "start_step": cs.global_step,
                "checkpoint": f"{CKPT_DIR}/{cs.phase_ordinal:04d}-{cs.phase}-start",
            }
        )
        self.events.emit(
            "phase_started",
            phase=cs.phase,
            kind=d.phase_kind,
            ordinal=cs.phase_ordinal,
            step=cs.global_step,
            preset=cs.preset,
            penalties=cs.penalties,
            max_steps=d.max_steps,
            train=dict(d.train),
        )
        self._checkpoint(periodic=False)

    def _evaluate(self, phase: str, step: int) -> dict[str, float] | None:
        t0 = time.time()
        result = self._runner_call("evaluate", self.runner.evaluate)
        faults.point("evaluation")
        if result is None:
            return None
        out = {k: _as_float(v) for k, v in result.items()}
        self.events.emit("evaluation_finished", console=False, phase=phase, step=step,
                         seconds=round(time.time() - t0, 2), n_items=out.get("n_items"))
        return out

    def _finish_phase(self, d: Transition) -> None:
        """The finished phase's evaluation (when it asks for one) and its phase_finished event."""
        self._close_bar()
        ev = self._evaluate(d.phase, d.step) if d.evaluate else None
        fin = {"phase": d.phase, "steps": d.phase_step, "step": d.step, "reason": d.reason}
        if ev is not None:
            fin["eval"] = ev
        self.events.emit("phase_finished", **fin)
        if ev is not None:
            self.tracker.log_eval(d.step, d.phase, ev)

    def _transition(self, d: Transition) -> None:
        """Carry out a transition the core decided (the state has already moved): evaluate the
        finished phase, plan a rewind, log, then save where the run now is."""
        self._finish_phase(d)
        record = dict(d.record)
        if d.rewind:
            onset = int(d.onset_step if d.onset_step is not None else d.step)
            pick = self.cluster.broadcast(self._rewind_target(onset) if self.cluster.is_primary else None)
            self.io.pending_rewind = {"onset_step": onset, "detected_step": d.step, "phase": d.phase, **pick}
            record["rewind"] = dict(self.io.pending_rewind)
        metrics_seen: dict[str, Any] = {}
        hist = self.cs.history  # still the finished phase's windows: the next phase has not begun
        for name in sorted(hist.metrics):
            w = hist.window(name, 1)
            if len(w):
                metrics_seen[name] = float(w[-1])
        self.events.emit(
            "phase_transition",
            **record,
            **({"story": d.story} if d.story is not None else {}),
            guard_kind=d.guard_kind,
            evidence=dict(d.evidence),
            metrics=metrics_seen,
            preset_before=d.preset_before,
            preset_after=d.preset_after,
            penalties_before=dict(d.penalties_before),
            penalties_after=dict(d.penalties),
        )
        self.tracker.mark_transition(d.step, d.phase, d.to, d.reason)
        faults.point("transition_logged")
        if isinstance(d, Stop):
            self._finish_run(d.reason)
            return
        self._save_state()

    def _rewind_target(self, onset: int) -> dict[str, Any]:
        """The newest intact checkpoint taken before ``onset`` (its weights had not yet seen a
        collapsed step): {"checkpoint": relative path, "checkpoint_step": int}."""
        best: tuple[int, str] | None = None
        root = self.run_dir / CKPT_DIR
        for d in sorted(root.iterdir()) if root.is_dir() else []:
            if not d.is_dir() or d.name.startswith(".") or d.name == "final":
                continue
            saved = rundir.intact_checkpoint(self.run_dir, d)
            if saved is None:
                continue  # a damaged checkpoint is never a rewind target
            step = int(saved.global_step)
            if step < onset and (best is None or step >= best[0]):
                best = (step, str(d.relative_to(self.run_dir)))
        if best is None:  # cannot happen while boundary checkpoints exist; say so if it does
            raise CurriculumError(
                f"{self.run_dir}: a transition asks to rewind to before step {onset}, but no intact "
                f"checkpoint from before that step is left in {root}"
            )
        return {"checkpoint": best[1], "checkpoint_step": best[0]}

    def _rewind(self, plan: dict[str, Any]) -> None:
        """Restore the policy weights of ``plan["checkpoint"]`` into the phase just set up.  Steps,
        logs and data positions go on; the steps between the checkpoint and now stay in the logs,
        marked by the ``policy_rewound`` event."""
        cs = self.cs
        restore = getattr(self.runner, "restore_policy", None)
        if restore is None:
            raise RunnerError(
                f"transition from '{plan['phase']}' has rewind = true, but the "
                f"{self.spec.runner_kind} runner cannot restore a policy (it has no restore_policy)"
            )
        self._runner_call("restore_policy", restore, self.run_dir / plan["checkpoint"] / "runner")
        faults.point("rewind")
        done = {**plan, "into_phase": cs.phase, "step": cs.global_step,
                "discarded_steps": [int(plan["checkpoint_step"]) + 1, int(plan["detected_step"])]}
        self.events.emit("policy_rewound", **done)
        self.io.rewinds.append(done)
        self.io.pending_rewind = None

    def history_metric_names(self) -> list[str]:
        return list(self.cs.history.metrics)

    def _finish_run(self, reason: str) -> None:
        cs = self.cs
        self.events.emit(
            "run_finished",
            step=cs.global_step,
            reason=reason,
            phases=[v["phase"] for v in self.io.visits],
            transitions=len(cs.transitions),
            nonfinite_steps=cs.nonfinite_steps,
        )
        # The trained model as the run left it (and the engine state, marked finished).
        self._checkpoint(periodic=False, name="final")
        self._save_state()

    # ------------------------------------------------------------------ checkpoints

    def _save_state(self) -> None:
        # The metric windows are written once, into the checkpoint's engine.json (what resume
        # reads); state.json leaves them out, so it stays small however long the windows are.
        if self.cluster.is_primary:
            save_state(self.run_dir, self.state)

    def _checkpoint(self, periodic: bool, name: str | None = None) -> str:
        cs, io = self.cs, self.io
        root = self.run_dir / CKPT_DIR
        kind = "final" if name else ("periodic" if periodic else "boundary")
        if name is None:
            name = f"step-{cs.global_step:07d}" if periodic else f"{cs.phase_ordinal:04d}-{cs.phase}-start"
        final = root / name
        if self.cluster.broadcast(final.exists()):
            return str(final.relative_to(self.run_dir))
        primary = self.cluster.is_primary
        tmp = root / f".tmp-{name}-{self._tmp_tag}"
        _stay_inside(root, final, tmp)
        if primary:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        self.cluster.barrier("checkpoint-begin")
        self.metrics.flush()
        rel = str(final.relative_to(self.run_dir))
        prev_ckpt, prev_offsets, prev_digests = io.last_checkpoint, io.log_offsets, io.log_digests
        io.last_checkpoint = rel
        io.log_offsets = {"events": -1, "metrics": self.metrics.offset()}
        io.log_digests = {"metrics": self.metrics.digest()}
        try:
            self.runner.save(tmp / "runner")  # collective: every process saves its part
            faults.point("checkpoint_runner_saved")
            self.cluster.barrier("checkpoint-saved")
            # The checkpoint event goes in the log first, so the recorded offset includes it.
            self.events.emit(
                "checkpoint_saved",
                console=False,
                path=rel,
                step=cs.global_step,
                phase=cs.phase,
                phase_step=cs.phase_step,
                kind=kind,
            )
            io.log_offsets["events"] = self.events.offset()
            io.log_digests["events"] = self.events.digest()
            # process 0 commits; a failure there reaches every process (none waits forever)
            self.cluster.agree(lambda: self._commit_checkpoint(tmp, final))
            faults.point("checkpoint_renamed")
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            io.last_checkpoint, io.log_offsets, io.log_digests = prev_ckpt, prev_offsets, prev_digests
            raise self._checkpoint_failed(final, e) from None
        except CurriculumError:
            shutil.rmtree(tmp, ignore_errors=True)
            io.last_checkpoint, io.log_offsets, io.log_digests = prev_ckpt, prev_offsets, prev_digests
            raise
        self._save_state()
        if periodic and primary:
            self._prune()
        return rel

    def _commit_checkpoint(self, tmp: Path, final: Path) -> None:
        """Write the engine state into the checkpoint and rename it into place (process 0)."""
        try:
            atomic_write_json(tmp / "engine.json", self._run_state(history=True).to_dict())
            rundir.write_manifest(tmp)  # names, sizes and small files' sha256 (see rundir.py)
            os.replace(tmp, final)
            fsync_dir(final.parent)
        except OSError as e:
            raise self._checkpoint_failed(final, e) from None

    def _checkpoint_failed(self, final: Path, e: OSError) -> CurriculumError:
        self._emit_failure("checkpoint_failed", path=str(final.relative_to(self.run_dir)),
                           step=self.cs.global_step, error=f"{type(e).__name__}: {e}")
        return CurriculumError(
            f"{final}: could not write the checkpoint ({e.strerror or e}); the previous checkpoint "
            f"{self._previous_checkpoint()} is intact and resumable"
        )

    def _previous_checkpoint(self) -> str:
        try:
            prev = load_state(self.run_dir / "state.json").last_checkpoint
        except (OSError, ValueError):
            prev = None
        return prev or "(none)"

    def _prune(self) -> None:
        keep = self.spec.model.run.keep_checkpoints
        root = self.run_dir / CKPT_DIR
        periodic = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))
        for p in periodic[:-keep]:
            shutil.rmtree(p, ignore_errors=True)

    # ------------------------------------------------------------------ progress bar

    def _open_bar(self) -> None:
        self._close_bar()
        if not self.progress:
            return
        cs = self.cs
        ph = self.spec.phases[cs.phase]
        if ph.kind == "eval":
            return
        from tqdm import tqdm

        self._bar = tqdm(
            total=ph.max_steps,
            initial=cs.phase_step,
            desc=f"{cs.phase} ({ph.kind}{', ' + cs.preset if cs.preset else ''})",
            unit="step",
            leave=True,
            dynamic_ncols=True,
            mininterval=0.5,
        )

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# ---------------------------------------------------------------------- helpers


def _stay_inside(root: Path, *paths: Path) -> None:
    """Refuse a path built from a name (a phase, a checkpoint) that would leave the run directory."""
    for p in paths:
        try:
            inside(root, p)
        except ValueError:
            raise RunDirError(
                f"{p}: refusing to write outside the run directory {root} (a name holding '/' or '..'; "
                f"names hold only {NAME_RULE})"
            ) from None


def _create_run_dir(
    spec: Spec, run_dir: Path, start: str, spec_text: str | None, meta: dict[str, Any] | None
) -> rundir.RunLock:
    """Make a new run directory (process 0 only): it appears whole, and locked, or not at all."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: the run directory path is an existing file; give a new --run-dir")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunDirError(
            f"{run_dir}: the run directory already holds files; use `curriculum resume {run_dir}` "
            "to continue that run, or give a new --run-dir"
        )
    # The run directory appears whole or not at all: it is assembled beside its final place
    # and renamed into it, so a kill during creation never leaves a half-made run.
    tmp = run_dir.parent / f".{run_dir.name}.creating-{os.getpid()}"
    lock = None
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / CKPT_DIR).mkdir(parents=True)
        lock = rundir.acquire(tmp, "curriculum run")
        digest = rundir.write_spec(tmp, spec.raw)
        if spec_text is not None:
            (tmp / "spec.source.toml").write_text(spec_text, encoding="utf-8")
        atomic_write_json(
            tmp / "run.json",
            {
                "spec_path": str(spec.path.resolve()) if spec.path else None,
                "profile": spec.profile,
                "overrides": spec.overrides,
                "start_phase": start,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "spec_digest": digest,  # sha256 of spec.resolved.json, checked by status and resume
                **(meta or {}),
            },
        )
        state = RunState(spec_digest=spec.digest(), seed=spec.model.run.seed, phase=start)
        save_state(tmp, state)
        os.replace(tmp, run_dir)  # also replaces an empty directory the user made
        lock.moved(run_dir)
        fsync_dir(run_dir.parent)
        return lock
    except OSError as e:
        if lock is not None:
            lock.release()
        shutil.rmtree(tmp, ignore_errors=True)
        why = e.strerror or str(e)
        for parent in run_dir.parents:
            if parent.exists() and not parent.is_dir():
                why = f"{parent} is a file, not a directory"
                break
        raise RunDirError(f"{run_dir}: cannot write the run directory ({why})") from None


def make_runner(spec: Spec) -> Any:
    import runners

    cls = runners.get_runner_class(spec.runner_kind)
    return cls()


def load_run_spec(run_dir: Path) -> Spec:
    run_dir = Path(run_dir)
    try:
        raw = json.loads((run_dir / "spec.resolved.json").read_text(encoding="utf-8"))
        meta = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise RunDirError(f"{run_dir}: not a run directory (missing {Path(e.filename).name})") from None
    except (OSError, json.JSONDecodeError) as e:
        raise RunDirError(f"{run_dir}: damaged run directory ({e})") from None
    spec_path = Path(meta["spec_path"]) if meta.get("spec_path") else None
    if isinstance(raw.get("run"), dict) and "profiles" not in raw:
        # resolved: its profile is already applied (run dirs written before the resolved spec
        # dropped run.default_profile would otherwise ask for a profile that is not there)
        raw["run"].pop("default_profile", None)
    spec = load_spec(spec_path, raw=raw, text=None) if spec_path else load_spec(None, raw=raw)
    spec.profile = meta.get("profile")
    spec.overrides = list(meta.get("overrides") or [])
    return spec


def resume_engine(
    run_dir: Path,
    *,
    runner_override: Any = None,
    console: bool = True,
    progress: bool | None = None,
    spec: Spec | None = None,
) -> Engine:
    """Continue a run from its newest intact checkpoint, in place."""
    run_dir = Path(run_dir)
    if spec is None:
        spec = load_run_spec(run_dir)
    cluster = distributed.connect(spec.model.run.distributed)
    # process 0 locks and repairs the directory (logs cut back, state reset); every process
    # then reads the same checkpoint
    held: dict[str, rundir.RunLock] = {}
    plan = cluster.agree(lambda: _prepare_resume(run_dir, spec, held))

    def make() -> Engine:
        runner = runner_override if runner_override is not None else make_runner(spec)
        if plan["checkpoint"] is None:
            # Killed before the first checkpoint: start the run again from scratch, in place.
            state = RunState(spec_digest=spec.digest(), seed=spec.model.run.seed, phase=plan["start"])
            return Engine(spec, run_dir, runner, state, console=console, progress=progress, cluster=cluster)
        ckpt = run_dir / plan["checkpoint"]
        state = load_state(ckpt / "engine.json")
        return Engine(spec, run_dir, runner, state, console=console, progress=progress, resume_from=ckpt,
                      cluster=cluster)

    eng = _holding(held, make)
    eng.resume_repairs = list(plan["repairs"])
    return eng


def _holding(held: dict[str, rundir.RunLock], make: Any) -> Engine:
    """Build the engine that inherits the run directory's lock (process 0); a failure to build
    it releases the lock rather than leave it to the stale-lock check."""
    try:
        eng = make()
    except BaseException:
        if "lock" in held:
            held["lock"].release()
        raise
    eng.lock = held.get("lock")
    return eng


def _prepare_resume(run_dir: Path, spec: Spec, held: dict[str, Any]) -> dict[str, Any]:
    """Lock a run directory, make it resumable (process 0 only) and name the checkpoint to
    resume from.  What it does is what `curriculum status` predicted (curriculum/rundir.py)."""
    if not (run_dir / "state.json").exists() and not (run_dir / CKPT_DIR).is_dir():
        raise RunDirError(f"{run_dir}: not a run directory (missing state.json)")
    lock = rundir.acquire(run_dir, "curriculum resume")
    try:
        plan = _repair_for_resume(run_dir, spec)
    except BaseException:
        lock.release()
        raise
    held["lock"] = lock
    return plan


def _repair_for_resume(run_dir: Path, spec: Spec) -> dict[str, Any]:
    v = rundir.inspect(run_dir)
    if v.refusal:
        raise RunDirError(f"{run_dir}: cannot resume: {v.refusal}")
    if v.finished:
        done = v.top if v.top is not None and v.top.status == "finished" else v.chosen.state if v.chosen else None
        if done is not None and done is not v.top:
            save_state(run_dir, done)  # killed after the final checkpoint, before state.json said so
        raise RunDirError(
            f"{run_dir}: the run already finished ({done.finish_reason if done else 'final checkpoint'}); nothing to resume"
        )
    repairs: list[str] = []
    rundir.clean_tmp(run_dir)
    moved = rundir.set_aside(run_dir, v.set_aside)
    for rel, dest in zip(v.set_aside, moved):
        why = next((c.problem for c in v.checkpoints if c.rel == rel), "")
        repairs.append(f"{rel} set aside into {dest} ({why})")
    tag = f"resume{len(_orphans(run_dir))}"
    if v.chosen is None:
        for name in ("events.jsonl", "metrics.jsonl"):
            truncate_to(run_dir / name, 0, tag)
        save_state(run_dir, RunState(spec_digest=spec.digest(), seed=spec.model.run.seed, phase=v.start_phase))
        return {"checkpoint": None, "start": v.start_phase, "repairs": repairs}
    state = v.chosen.state
    assert state is not None
    if v.top is None or v.top.last_checkpoint != v.chosen.rel:
        was = v.top.last_checkpoint if v.top is not None else "unreadable"
        repairs.append(f"resumed from {v.chosen.rel}, the newest intact checkpoint (state.json pointed at {was})")
    # the kept prefixes were checked against the digests the checkpoint recorded
    for key, name in rundir.LOGS:
        truncate_to(run_dir / name, max(0, state.log_offsets.get(key, 0)), tag)
        faults.point("resume_cut")  # every step of this repair is safe to repeat after a kill
    save_state(run_dir, state)
    return {"checkpoint": v.chosen.rel, "start": state.phase, "repairs": repairs}


def branch_engine(
    run_dir: Path,
    phase: str,
    new_dir: Path,
    *,
    runner_override: Any = None,
    console: bool = True,
    progress: bool | None = None,
    spec_path: str | None = None,
    overrides: Sequence[str] = (),
) -> Engine:
    """Start a new run directory from the checkpoint taken when `phase` last began.

    With ``spec_path`` / ``overrides`` the branch runs a changed spec (checked by
    ``compat.check_branch``: a new seed, transitions, and the schedule of `phase` and later)."""
    from curriculum.errors import one_of, suggest

    run_dir, new_dir = Path(run_dir), Path(new_dir)
    spec = load_run_spec(run_dir)
    if phase not in spec.phases:
        raise CurriculumError(f"--from-phase: unknown phase '{phase}'; expected {one_of(spec.phases)}{suggest(phase, spec.phases)}")
    cluster = distributed.connect(spec.model.run.distributed)
    held: dict[str, rundir.RunLock] = {}
    change = (spec_path, list(overrides)) if spec_path or overrides else None
    dest = new_dir / cluster.agree(lambda: _prepare_branch(run_dir, phase, new_dir, held, change))
    if change is not None:
        spec = load_run_spec(new_dir)

    def make() -> Engine:
        state = load_state(dest / "engine.json")
        state.status = "running"
        state.seed = spec.model.run.seed
        runner = runner_override if runner_override is not None else make_runner(spec)
        return Engine(spec, new_dir, runner, state, console=console, progress=progress, resume_from=dest, cluster=cluster)

    return _holding(held, make)


def _prepare_branch(
    run_dir: Path, phase: str, new_dir: Path, held: dict[str, Any], change: tuple[str | None, list[str]] | None = None
) -> str:
    """Copy what a branch starts from into its new directory (process 0 only); the checkpoint.
    ``change`` (spec path, overrides) is checked against the phases trained before the checkpoint
    and, when it fits, becomes the branch's spec."""
    v = rundir.inspect(run_dir)
    if v.refusal:
        raise RunDirError(f"{run_dir}: cannot branch: {v.refusal}")
    ref = v.top or (v.chosen.state if v.chosen else None)
    if ref is None:
        raise RunDirError(f"{run_dir}: cannot read the run state, and no checkpoint is intact")
    visits = [x for x in ref.visits if x["phase"] == phase and x.get("checkpoint")]
    by_rel = {c.rel: c for c in v.checkpoints}
    if visits and visits[-1]["checkpoint"] not in by_rel:
        raise RunDirError(
            f"{run_dir}: {visits[-1]['checkpoint']}, taken when phase '{phase}' last began, is missing; "
            "a branch cannot start from it"
        )
    if not visits:
        seen = sorted({x["phase"] for x in ref.visits if x.get("checkpoint") in by_rel})
        raise RunDirError(
            f"{run_dir}: no checkpoint taken at the start of phase '{phase}'; phases with one: "
            f"{', '.join(seen) or 'none'}"
        )
    src = by_rel[visits[-1]["checkpoint"]]
    if src.problem:
        raise RunDirError(
            f"{run_dir}: {src.rel}, taken when phase '{phase}' last began, is damaged ({src.problem}); "
            "a branch cannot start from it"
        )
    ckpt = run_dir / src.rel
    new_spec = None
    if change is not None:
        from curriculum.compat import check_branch

        before = {x["phase"] for x in ref.visits[:_branch_visit(ref, phase)]}
        old_meta = json.loads((run_dir / "run.json").read_text())
        new_spec = check_branch(load_run_spec(run_dir), change[0], change[1], old_meta, before, phase)
    if new_dir.resolve() == run_dir.resolve():
        raise CurriculumError("--run-dir must be a new directory: branching never overwrites the original run")
    if new_dir.exists() and any(new_dir.iterdir()):
        raise RunDirError(f"{new_dir}: already holds files; give an empty or new --run-dir")
    new_dir.mkdir(parents=True, exist_ok=True)
    lock = rundir.acquire(new_dir, "curriculum resume --from-phase")
    try:
        if any(p.name != rundir.LOCK for p in new_dir.iterdir()):
            raise RunDirError(f"{new_dir}: already holds files; give an empty or new --run-dir")
        (new_dir / CKPT_DIR).mkdir(parents=True, exist_ok=True)
        for name in ("spec.resolved.json", "run.json", "spec.source.toml"):
            if (run_dir / name).exists():
                shutil.copy2(run_dir / name, new_dir / name)
        meta = json.loads((new_dir / "run.json").read_text())
        meta["branched_from"] = {"run_dir": str(run_dir.resolve()), "phase": phase, "checkpoint": ckpt.name,
                                 # phase starts before the branch point stay in the original run
                                 "earlier": [x["checkpoint"] for x in ref.visits[: _branch_visit(ref, phase)]
                                             if x.get("checkpoint")]}
        if new_spec is not None:
            spec_path, overrides = change  # type: ignore[misc]
            meta["branched_from"]["changes"] = {"spec": spec_path, "overrides": overrides}
            meta["spec_digest"] = rundir.write_spec(new_dir, new_spec.raw)
            meta["overrides"] = list(meta.get("overrides") or []) + list(overrides)
            if spec_path:
                meta["spec_path"] = str(Path(spec_path).resolve())
                (new_dir / "spec.source.toml").write_text(Path(spec_path).read_text(encoding="utf-8"), encoding="utf-8")
        atomic_write_json(new_dir / "run.json", meta)
        dest = new_dir / CKPT_DIR / ckpt.name
        shutil.copytree(ckpt, dest)
        state = load_state(dest / "engine.json")
        if new_spec is not None:
            state.seed = new_spec.model.run.seed
            state.spec_digest = new_spec.digest()
        for key, name in rundir.LOGS:
            # the prefix was checked (line boundary, sha256) by inspect() above
            off = max(0, state.log_offsets.get(key, 0))
            with open(run_dir / name, "rb") as f:
                data = f.read(off)
            (new_dir / name).write_bytes(data)
        state.status = "running"
        save_state(new_dir, state)
    except BaseException:
        lock.release()
        raise
    held["lock"] = lock
    return str(dest.relative_to(new_dir))


def _branch_visit(state: RunState, phase: str) -> int:
    """Index in ``state.visits`` of the visit a branch from ``phase`` starts at (its last one)."""
    return max(i for i, x in enumerate(state.visits) if x["phase"] == phase and x.get("checkpoint"))


def _orphans(run_dir: Path) -> list[Path]:
    return list(run_dir.glob("*.orphaned.jsonl"))
