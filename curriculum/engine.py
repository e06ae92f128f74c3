"""The engine: drives a runner through the phase machine, one chunk of steps at a time.

Where each decision is made:
  - which guard fired, and why ............ curriculum/guards.py (pure, reads MetricHistory)
  - where a fired guard leads .............. curriculum/machine.py (pytransitions)
  - the penalty scale of a PID phase ....... curriculum/controllers.py
  - everything on disk ..................... here, in a fixed crash-safe order

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
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from curriculum import distributed, faults, registry, rundir
from curriculum.errors import CurriculumError, RunDirError, RunnerError
from curriculum.events import EventLog, MetricsLog, truncate_to
from curriculum.limits import NAME_RULE, inside
from curriculum.machine import BUDGET, PhaseMachine

RUN_BUDGET = "run_budget"  # the reason a run ends on run.max_steps
from curriculum.spec import END, Spec, load_spec, pid_config_from_table
from curriculum.state import (
    RunState,
    _clean,
    atomic_write_json,
    effective_penalties,
    fsync_dir,
    load_state,
    save_state,
)
from curriculum.tracking import Tracker
from curriculum.windows import MetricHistory
from runners.base import PhaseSetup, RunContext

CKPT_DIR = "checkpoints"
_MUST_BE_FINITE = frozenset({"reward_mean", "reward_max", "reward_min", "loss", "kl", "grad_norm"})


@dataclass
class SharedDecision:
    """A guard decision received from process 0 (what `_move` needs of a GuardResult)."""

    evidence: dict[str, Any]


class Engine:
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
        self.state = state
        self.resume_from = resume_from
        # only the windows the guards read, each as long as its longest reader (spec.py)
        default_cap, caps = spec.history_capacities()
        self.history = (
            MetricHistory.from_dict(state.history, default_cap, caps)
            if state.history
            else MetricHistory(default_cap, caps)
        )
        self.machine = PhaseMachine(spec, state)  # drives state.phase itself: one source of truth
        self.events = EventLog(self.run_dir, console=console and primary, enabled=primary)
        self.metrics = MetricsLog(self.run_dir, enabled=primary)
        self.functions = {n: registry.get_guard_function(n) for n in spec.function_names}
        self.progress = spec.model.run.progress if progress is None else progress
        self.tracker = Tracker(
            spec.model.run.wandb if primary else "disabled", self.run_dir, spec.model.run.name, spec.raw, self.events
        )
        self._bar = None
        self._pid_cfg = None
        self._last_logged_scale = state.penalty_scale
        self._nonfinite_logged = 0
        self.lock: rundir.RunLock | None = None  # process 0's hold on the run directory
        self.resume_repairs: list[str] = []  # what resume fixed before this engine started
        # the same name on every process: all of them save into one checkpoint directory
        self._tmp_tag = self.cluster.broadcast(os.getpid())

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
        st = self.state
        ctx = RunContext(
            run_dir=self.run_dir,
            seed=st.seed,
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
            seed=st.seed,
            phases=list(self.spec.phases),
            start_phase=st.phase,
            resumed=self.resume_from is not None,
            step=st.global_step,
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
            if self.resume_from is not None and st.status == "running":
                self._enter_phase(fresh=False)
                self._runner_call("restore", self.runner.restore, self.resume_from / "runner")
                self.events.emit("run_resumed", checkpoint=str(self.resume_from), step=st.global_step, phase=st.phase, phase_step=st.phase_step)
            while st.status == "running":
                self._advance()
        except KeyboardInterrupt:
            self.events.emit("run_interrupted", level="warning", step=st.global_step, phase=st.phase)
            raise
        except OSError as e:  # the run directory itself: full disk, removed, read-only
            raise RunDirError(
                f"{self.run_dir}: cannot write the run directory at step {st.global_step} "
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
        return st

    def _release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _advance(self) -> None:
        st = self.state
        ph = self.spec.phases[st.phase]
        if st.pending_phase_start:
            self._enter_phase(fresh=True)
        if ph.kind == "eval":
            self._move(self.machine.dest_on_budget(), BUDGET, None)
            return
        remaining = (ph.max_steps - st.phase_step) if ph.max_steps is not None else math.inf
        run_budget = self.spec.model.run.max_steps
        spent = run_budget is not None and st.global_step >= run_budget
        if remaining <= 0 or spent:
            # the phase's own budget names the reason when both run out at once
            dest, reason = (self.machine.dest_on_budget(), BUDGET) if remaining <= 0 else (END, RUN_BUDGET)
            if spent and dest != END:
                dest, reason = END, RUN_BUDGET
            self._move(dest, reason, None)
            return
        if run_budget is not None:
            remaining = min(remaining, run_budget - st.global_step)
        chunk = int(min(self.spec.model.run.chunk_steps, remaining))
        every = self.spec.model.run.checkpoint_every
        if every:
            to_ckpt = every - (st.global_step % every)
            chunk = min(chunk, to_ckpt)
        fired = None
        done = 0
        stop_reason = None
        steps = iter(self._runner_call("train", self.runner.train, chunk))
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
            st.global_step += 1
            st.phase_step += 1
            res = self._on_step(metrics, check=fired is None and stop_reason is None)
            faults.point("step")
            if isinstance(res, tuple):
                fired = res
            elif isinstance(res, str):
                stop_reason = res
        self.metrics.flush()
        if done < chunk and fired is None:
            self._finish_run("runner_exhausted")
            return
        if fired is not None:
            guard, result = fired
            dest = self.machine.dest_on_guard(guard)
            if dest is not None:
                self._move(dest, guard, result)
                return
        if stop_reason is not None:
            self._move(self.machine.dest_on_budget(), stop_reason, None)
            return
        if every and st.global_step % every == 0:
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

        st = self.state
        tb_path = self.run_dir / (
            f"runner-error.p{self.cluster.index}.txt" if self.cluster.multi else "runner-error.txt"
        )
        try:
            tb_path.write_text("".join(traceback.format_exception(e)), encoding="utf-8")
        except OSError:
            tb_path = None
        self._emit_failure("runner_failed", during=what, phase=st.phase, step=st.global_step,
                           error=f"{type(e).__name__}: {e}")
        return RunnerError(
            f"the {self.spec.runner_kind} runner failed during {what} in phase '{st.phase}' after step "
            f"{st.global_step} ({type(e).__name__}: {e})"
            + (f"; traceback in {tb_path}" if tb_path else "")
            + f". The run directory is consistent: `curriculum resume {self.run_dir}` continues from the "
            f"last checkpoint ({self._previous_checkpoint()})."
        )

    # ------------------------------------------------------------------ per step

    def _on_step(self, metrics: dict[str, float], check: bool):
        st = self.state
        ph = self.spec.phases[st.phase]
        clean = {}
        for k, v in metrics.items():
            clean[str(k)] = _as_float(v)
        if self.cluster.multi:  # every process's shard of the batch, as one global step
            clean = self.cluster.reduce_metrics(clean)
        self.history.push(clean)
        # NaN can mean "not defined this step" (abstention accuracy with no abstention); the
        # values that must always be finite are the reward statistics and the trainer's numbers.
        bad = [
            k for k, v in clean.items()
            if (k in _MUST_BE_FINITE and not math.isfinite(v)) or math.isinf(v)
        ]
        nonfinite_rewards = clean.get("nonfinite_rewards", 0.0)
        if bad or (math.isfinite(nonfinite_rewards) and nonfinite_rewards > 0):
            st.nonfinite_steps += 1
            if self._nonfinite_logged < 20 or st.nonfinite_steps % 100 == 0:
                self._nonfinite_logged += 1
                self.events.emit(
                    "nonfinite_metrics",
                    level="warning",
                    console=self._nonfinite_logged <= 3,
                    phase=st.phase,
                    step=st.global_step,
                    metrics=bad,
                    nonfinite_rewards=nonfinite_rewards,
                    total_steps_affected=st.nonfinite_steps,
                    policy=self.spec.model.run.on_nonfinite,
                )
        self.metrics.write(
            {
                "step": st.global_step,
                "phase": st.phase,
                "phase_step": st.phase_step,
                "preset": st.preset,
                "penalty_scale": st.penalty_scale,
                "metrics": clean,
            }
        )
        self.tracker.log(st.global_step, clean, phase_ordinal=st.phase_ordinal, penalty_scale=st.penalty_scale)
        if self._bar is not None:
            self._bar.update(1)
            rm = clean.get("reward_mean", clean.get("loss"))
            if rm is not None and st.phase_step % 5 == 0:
                self._bar.set_postfix_str(f"{'reward' if 'reward_mean' in clean else 'loss'}={rm:.3g}", refresh=False)

        decision = None
        if self.cluster.is_primary:
            decision = self._decide(clean, check, bool(bad or nonfinite_rewards > 0))
        if self.cluster.multi:
            decision = self._share_decision(decision)
        return decision

    def _decide(self, clean: dict[str, float], check: bool, nonfinite: bool):
        """The penalty controller and the guards on this step's (global) metrics: process 0 only.

        Returns None, a stop reason, or (guard name, GuardResult) for the first guard that fired.
        """
        st = self.state
        ph = self.spec.phases[st.phase]
        if self._pid_cfg is not None:
            self._update_controller(clean)
        if self.spec.model.run.on_nonfinite == "stop_phase" and nonfinite:
            return "nonfinite"
        if not check or st.phase_step < ph.min_dwell:
            return None
        fired = None
        for t in self.spec.transitions_from(st.phase):
            g = self.spec.guards[t.guard]
            gstate = st.guards.get(t.guard) or g.init_state()
            gstate, result = g.update(gstate, self.history, self.functions)
            st.guards[t.guard] = gstate
            if result.nonfinite_terms:
                self.events.emit(
                    "guard_nonfinite",
                    level="warning",
                    console=False,
                    guard=t.guard,
                    phase=st.phase,
                    step=st.global_step,
                    terms=list(result.nonfinite_terms),
                )
            if result.fired and fired is None:
                fired = (t.guard, result)
        return fired

    def _share_decision(self, decision: Any) -> Any:
        """Process 0's decision of this step on every process (one broadcast per step)."""
        st = self.state
        msg: dict[str, Any] = {}
        if self.cluster.is_primary:
            msg["scale"] = st.penalty_scale
            if isinstance(decision, tuple):
                msg["fired"] = decision[0]
                msg["evidence"] = _clean(dict(decision[1].evidence))
            elif isinstance(decision, str):
                msg["stop"] = decision
        msg = self.cluster.broadcast(msg)
        if self.cluster.is_primary:
            return decision
        if msg["scale"] != st.penalty_scale:
            st.penalty_scale = float(msg["scale"])
            self.runner.set_penalties(st.penalties())
        if "fired" in msg:
            return msg["fired"], SharedDecision(evidence=msg["evidence"])
        return msg.get("stop")

    def _update_controller(self, metrics: dict[str, float]) -> None:
        from curriculum import controllers

        st = self.state
        cfg = self._pid_cfg
        tbl = self.spec.phases[st.phase].controller or {}
        metric = tbl["metric"]
        window = int(tbl.get("window", 1))
        if window > 1:
            import numpy as np

            vals = np.asarray(self.history.window(metric, window), dtype=float)
            vals = vals[np.isfinite(vals)]
            meas = float(vals.mean()) if vals.size else math.nan
        else:
            meas = metrics.get(metric, math.nan)
        new_state, lam = controllers.pid_update(cfg, st.controller, meas)
        st.controller = new_state
        lam = 1.0 + float(lam)  # penalty scale: the preset's penalties times (1 + lambda)
        if lam != st.penalty_scale:
            before = st.penalties()
            st.penalty_scale = lam
            after = st.penalties()
            self.runner.set_penalties(after)
            ref = max(abs(self._last_logged_scale), 1e-9)
            if abs(lam - self._last_logged_scale) / ref >= 0.05:
                self._last_logged_scale = lam
                self.events.emit(
                    "penalties_changed",
                    console=False,
                    phase=st.phase,
                    step=st.global_step,
                    reason="pid",
                    measurement=meas,
                    penalty_scale=lam,
                    before=before,
                    after=after,
                )

    # ------------------------------------------------------------------ phases

    def _phase_setup(self) -> PhaseSetup:
        st = self.state
        ph = self.spec.phases[st.phase]
        ev = ph.eval.model_dump()
        if ev.get("preset") is None:
            ev["preset"] = self.spec.model.reward.eval_preset or st.preset
        ev["penalties"] = (
            dict(self.spec.presets[ev["preset"]]) if ev.get("preset") in self.spec.presets else st.penalties()
        )
        prev = st.transitions[-1]["from_phase"] if st.transitions else None
        return PhaseSetup(
            name=st.phase,
            kind=ph.kind,
            ordinal=st.phase_ordinal,
            max_steps=ph.max_steps,
            start_phase_step=st.phase_step,
            global_step=st.global_step,
            penalties=st.penalties(),
            train=dict(ph.train),
            eval=ev,
            previous_phase=prev,
            preset=st.preset,
        )

    def _enter_phase(self, fresh: bool) -> None:
        st = self.state
        ph = self.spec.phases[st.phase]
        if fresh:
            self.history.begin_phase(st.phase)
            st.phase_step = 0
            st.preset, st.base_penalties = self.spec.penalties_for(st.phase)
            st.penalty_scale = 1.0
            st.guards = {t.guard: self.spec.guards[t.guard].init_state() for t in self.spec.transitions_from(st.phase)}
            st.controller = None
        else:
            # Resumed, possibly with a changed guard definition (a safe change): a stored state
            # that does not fit the guard as now declared (another type, other collapse
            # signals) starts afresh instead of crashing the guard.
            for t in self.spec.transitions_from(st.phase):
                stored = st.guards.get(t.guard)
                if stored is not None and not _guard_state_fits(stored, self.spec.guards[t.guard].init_state()):
                    st.guards[t.guard] = self.spec.guards[t.guard].init_state()
        self._pid_cfg = None
        if ph.controller is not None:
            from curriculum import controllers

            self._pid_cfg = pid_config_from_table(ph.controller)
            if st.controller is None:
                st.controller = controllers.pid_init(self._pid_cfg)
                st.penalty_scale = 1.0 + float(st.controller["lam"])
        self._last_logged_scale = st.penalty_scale
        setup = self._phase_setup()
        self._runner_call("setup_phase", self.runner.setup_phase, setup)
        faults.point("phase_setup")
        if fresh and st.pending_rewind:
            self._rewind(st.pending_rewind)
        self.runner.set_penalties(st.penalties())
        self._open_bar()
        if fresh:
            st.pending_phase_start = False
            st.visits.append(
                {
                    "phase": st.phase,
                    "ordinal": st.phase_ordinal,
                    "start_step": st.global_step,
                    "checkpoint": f"{CKPT_DIR}/{st.phase_ordinal:04d}-{st.phase}-start",
                }
            )
            self.events.emit(
                "phase_started",
                phase=st.phase,
                kind=ph.kind,
                ordinal=st.phase_ordinal,
                step=st.global_step,
                preset=st.preset,
                penalties=st.penalties(),
                max_steps=ph.max_steps,
                train=dict(ph.train),
            )
            self._checkpoint(periodic=False)

    def _evaluate(self) -> dict[str, float] | None:
        st = self.state
        ph = self.spec.phases[st.phase]
        if not ph.eval.enabled:
            return None
        t0 = time.time()
        result = self._runner_call("evaluate", self.runner.evaluate)
        faults.point("evaluation")
        if result is None:
            return None
        out = {k: _as_float(v) for k, v in result.items()}
        self.events.emit("evaluation_finished", console=False, phase=st.phase, step=st.global_step,
                         seconds=round(time.time() - t0, 2), n_items=out.get("n_items"))
        return out

    def _move(self, dest: str, reason: str, result: Any) -> None:
        """Finish the current phase (evaluate, log) and move to `dest`."""
        st = self.state
        src = st.phase
        self._close_bar()
        ev = self._evaluate()
        fin = {"phase": src, "steps": st.phase_step, "step": st.global_step, "reason": reason}
        if ev is not None:
            fin["eval"] = ev
        self.events.emit("phase_finished", **fin)
        if ev is not None:
            self.tracker.log_eval(st.global_step, src, ev)
        before = st.penalties()
        preset_before = st.preset
        if dest != END:
            preset_after, base_after = self.spec.penalties_for(dest)
            after = effective_penalties(base_after, 1.0)
        else:
            preset_after, after = None, {}
        record = {
            "from_phase": src,
            "to_phase": dest,
            "step": st.global_step,
            "phase_step": st.phase_step,
            "reason": reason,
        }
        evidence: dict[str, Any] = {}
        metrics_seen: dict[str, Any] = {}
        guard_kind = None
        if result is not None:
            evidence = dict(result.evidence)
            guard_kind = self.spec.guards[reason].kind if reason in self.spec.guards else None
        story = _onset(evidence, st) if guard_kind == "collapse" else None
        if story is not None:
            record["onset_step"] = story["onset_step"]
        trans = next((t for t in self.spec.transitions_from(src) if t.guard == reason), None)
        if trans is not None and trans.rewind and dest != END:
            onset = story["onset_step"] if story is not None else st.global_step
            pick = self.cluster.broadcast(self._rewind_target(onset) if self.cluster.is_primary else None)
            st.pending_rewind = {
                "onset_step": onset, "detected_step": st.global_step, "phase": src, **pick,
            }
            record["rewind"] = dict(st.pending_rewind)
        for name in sorted(self.history_metric_names()):
            w = self.history.window(name, 1)
            if len(w):
                metrics_seen[name] = float(w[-1])
        self.events.emit(
            "phase_transition",
            **record,
            **({"story": story["story"]} if story is not None else {}),
            guard_kind=guard_kind,
            evidence=evidence,
            metrics=metrics_seen,
            preset_before=preset_before,
            preset_after=preset_after,
            penalties_before=before,
            penalties_after=after,
        )
        self.tracker.mark_transition(st.global_step, src, dest, reason)
        faults.point("transition_logged")
        st.transitions.append(record)
        if dest == END:
            self._finish_run(reason)
            return
        self.machine.move(dest, reason if result is not None else None)
        st.phase_ordinal += 1
        st.phase_step = 0
        st.pending_phase_start = True
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
        st = self.state
        restore = getattr(self.runner, "restore_policy", None)
        if restore is None:
            raise RunnerError(
                f"transition from '{plan['phase']}' has rewind = true, but the "
                f"{self.spec.runner_kind} runner cannot restore a policy (it has no restore_policy)"
            )
        self._runner_call("restore_policy", restore, self.run_dir / plan["checkpoint"] / "runner")
        faults.point("rewind")
        done = {**plan, "into_phase": st.phase, "step": st.global_step,
                "discarded_steps": [int(plan["checkpoint_step"]) + 1, int(plan["detected_step"])]}
        self.events.emit("policy_rewound", **done)
        st.rewinds.append(done)
        st.pending_rewind = None

    def history_metric_names(self) -> list[str]:
        return list(self.history.metrics)

    def _finish_run(self, reason: str) -> None:
        st = self.state
        if st.phase != END and reason == "runner_exhausted":
            ev = self._evaluate()
            fin = {"phase": st.phase, "steps": st.phase_step, "step": st.global_step, "reason": reason}
            if ev is not None:
                fin["eval"] = ev
            self.events.emit("phase_finished", **fin)
        st.status = "finished"
        st.finish_reason = reason
        self.history_to_state()
        self.events.emit(
            "run_finished",
            step=st.global_step,
            reason=reason,
            phases=[v["phase"] for v in st.visits],
            transitions=len(st.transitions),
            nonfinite_steps=st.nonfinite_steps,
        )
        # The trained model as the run left it (and the engine state, marked finished).
        self._checkpoint(periodic=False, name="final")
        self._save_state()

    # ------------------------------------------------------------------ checkpoints

    def _save_state(self) -> None:
        # The metric windows are written once, into the checkpoint's engine.json (what resume
        # reads); state.json leaves them out, so it stays small however long the windows are.
        if self.cluster.is_primary:
            save_state(self.run_dir, replace(self.state, history=None))

    def history_to_state(self) -> None:
        self.state.history = self.history.to_dict()

    def _checkpoint(self, periodic: bool, name: str | None = None) -> str:
        st = self.state
        root = self.run_dir / CKPT_DIR
        kind = "final" if name else ("periodic" if periodic else "boundary")
        if name is None:
            name = f"step-{st.global_step:07d}" if periodic else f"{st.phase_ordinal:04d}-{st.phase}-start"
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
        prev_ckpt, prev_offsets, prev_digests = st.last_checkpoint, st.log_offsets, st.log_digests
        st.last_checkpoint = rel
        st.log_offsets = {"events": -1, "metrics": self.metrics.offset()}
        st.log_digests = {"metrics": self.metrics.digest()}
        try:
            self.runner.save(tmp / "runner")  # collective: every process saves its part
            faults.point("checkpoint_runner_saved")
            self.cluster.barrier("checkpoint-saved")
            # The checkpoint event goes in the log first, so the recorded offset includes it.
            self.events.emit(
                "checkpoint_saved",
                console=False,
                path=rel,
                step=st.global_step,
                phase=st.phase,
                phase_step=st.phase_step,
                kind=kind,
            )
            st.log_offsets["events"] = self.events.offset()
            st.log_digests["events"] = self.events.digest()
            self.history_to_state()
            # process 0 commits; a failure there reaches every process (none waits forever)
            self.cluster.agree(lambda: self._commit_checkpoint(tmp, final))
            faults.point("checkpoint_renamed")
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            st.last_checkpoint, st.log_offsets, st.log_digests = prev_ckpt, prev_offsets, prev_digests
            raise self._checkpoint_failed(final, e) from None
        except CurriculumError:
            shutil.rmtree(tmp, ignore_errors=True)
            st.last_checkpoint, st.log_offsets, st.log_digests = prev_ckpt, prev_offsets, prev_digests
            raise
        self._save_state()
        if periodic and primary:
            self._prune()
        return rel

    def _commit_checkpoint(self, tmp: Path, final: Path) -> None:
        """Write the engine state into the checkpoint and rename it into place (process 0)."""
        try:
            atomic_write_json(tmp / "engine.json", self.state.to_dict())
            rundir.write_manifest(tmp)  # names, sizes and small files' sha256 (see rundir.py)
            os.replace(tmp, final)
            fsync_dir(final.parent)
        except OSError as e:
            raise self._checkpoint_failed(final, e) from None

    def _checkpoint_failed(self, final: Path, e: OSError) -> CurriculumError:
        self._emit_failure("checkpoint_failed", path=str(final.relative_to(self.run_dir)),
                           step=self.state.global_step, error=f"{type(e).__name__}: {e}")
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
        ph = self.spec.phases[self.state.phase]
        if ph.kind == "eval":
            return
        from tqdm import tqdm

        self._bar = tqdm(
            total=ph.max_steps,
            initial=self.state.phase_step,
            desc=f"{self.state.phase} ({ph.kind}{', ' + self.state.preset if self.state.preset else ''})",
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


def _guard_state_fits(stored: Any, fresh: dict[str, Any]) -> bool:
    if not isinstance(stored, dict) or not set(fresh) <= set(stored):
        return False
    if "detector" in fresh:
        det = stored.get("detector")
        return isinstance(det, dict) and set(fresh["detector"]) <= set(det)
    return True


def _onset(evidence: dict[str, Any], st: RunState) -> dict[str, Any] | None:
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


def _as_float(v: Any) -> float:
    """A metric value as a float; anything that is not a number (a string, None, a list, an int
    too big for a float) is recorded as NaN rather than stopping the run."""
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        return math.nan


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
