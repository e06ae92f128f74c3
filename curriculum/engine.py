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
recorded with it, so a resumed run continues exactly where that checkpoint left off.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from curriculum import distributed, faults, registry
from curriculum.errors import CurriculumError, RunDirError, RunnerError
from curriculum.events import EventLog, MetricsLog, truncate_to
from curriculum.limits import NAME_RULE, inside
from curriculum.machine import BUDGET, PhaseMachine
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
        self.machine = PhaseMachine(spec, initial=state.phase if state.phase != END else None)
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
        cluster.agree(lambda: _create_run_dir(spec, run_dir, start, spec_text, meta))
        state = RunState(spec_digest=spec.digest(), seed=spec.model.run.seed, phase=start)
        runner = runner_override if runner_override is not None else make_runner(spec)
        return cls(spec, run_dir, runner, state, console=console, progress=progress, cluster=cluster)

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
        try:
            self._runner_call("open", self.runner.open, ctx)
        except RunnerError:
            self.events.release_library_logs()
            self.metrics.close()
            self.events.close()
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
        return st

    def _advance(self) -> None:
        st = self.state
        ph = self.spec.phases[st.phase]
        if st.pending_phase_start:
            self._enter_phase(fresh=True)
        if ph.kind == "eval":
            self._move(self.spec.next_phase(st.phase), BUDGET, None)
            return
        remaining = (ph.max_steps - st.phase_step) if ph.max_steps is not None else math.inf
        if remaining <= 0:
            self._move(self.machine.on_budget(), BUDGET, None)
            return
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
            dest = self.machine.on_guard(guard)
            if dest is not None:
                self._move(dest, guard, result)
                return
        if stop_reason is not None:
            self._move(self.machine.on_budget(), stop_reason, None)
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
        for name in sorted(self.history_metric_names()):
            w = self.history.window(name, 1)
            if len(w):
                metrics_seen[name] = float(w[-1])
        self.events.emit(
            "phase_transition",
            **record,
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
        st.phase = dest
        st.phase_ordinal += 1
        st.phase_step = 0
        st.pending_phase_start = True
        self._save_state()

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
        prev_ckpt, prev_offsets = st.last_checkpoint, st.log_offsets
        st.last_checkpoint = rel
        st.log_offsets = {"events": -1, "metrics": self.metrics.offset()}
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
            self.history_to_state()
            # process 0 commits; a failure there reaches every process (none waits forever)
            self.cluster.agree(lambda: self._commit_checkpoint(tmp, final))
            faults.point("checkpoint_renamed")
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            st.last_checkpoint, st.log_offsets = prev_ckpt, prev_offsets
            raise self._checkpoint_failed(final, e) from None
        except CurriculumError:
            shutil.rmtree(tmp, ignore_errors=True)
            st.last_checkpoint, st.log_offsets = prev_ckpt, prev_offsets
            raise
        self._save_state()
        if periodic and primary:
            self._prune()
        return rel

    def _commit_checkpoint(self, tmp: Path, final: Path) -> None:
        """Write the engine state into the checkpoint and rename it into place (process 0)."""
        try:
            atomic_write_json(tmp / "engine.json", self.state.to_dict())
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
        if not isinstance(det, dict) or not isinstance(det.get("signals"), dict):
            return False
        return set(det["signals"]) == set(fresh["detector"]["signals"])
    return True


def _as_float(v: Any) -> float:
    """A metric value as a float; anything that is not a number (a string, None, a list, an int
    too big for a float) is recorded as NaN rather than stopping the run."""
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _create_run_dir(spec: Spec, run_dir: Path, start: str, spec_text: str | None, meta: dict[str, Any] | None) -> None:
    """Make a new run directory (process 0 only): it appears whole or not at all."""
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
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / CKPT_DIR).mkdir(parents=True)
        atomic_write_json(tmp / "spec.resolved.json", spec.raw)
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
                **(meta or {}),
            },
        )
        state = RunState(spec_digest=spec.digest(), seed=spec.model.run.seed, phase=start)
        save_state(tmp, state)
        os.replace(tmp, run_dir)  # also replaces an empty directory the user made
        fsync_dir(run_dir.parent)
    except OSError as e:
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
    """Continue a run from its last checkpoint, in place."""
    run_dir = Path(run_dir)
    if spec is None:
        spec = load_run_spec(run_dir)
    cluster = distributed.connect(spec.model.run.distributed)
    # process 0 repairs the directory (logs cut back, state reset); every process then reads
    # the same checkpoint
    plan = cluster.agree(lambda: _prepare_resume(run_dir, spec))
    runner = runner_override if runner_override is not None else make_runner(spec)
    if plan["checkpoint"] is None:
        # Killed before the first checkpoint: start the run again from scratch, in place.
        state = RunState(spec_digest=spec.digest(), seed=spec.model.run.seed, phase=plan["start"])
        return Engine(spec, run_dir, runner, state, console=console, progress=progress, cluster=cluster)
    ckpt = run_dir / plan["checkpoint"]
    state = load_state(ckpt / "engine.json")
    return Engine(spec, run_dir, runner, state, console=console, progress=progress, resume_from=ckpt, cluster=cluster)


def _prepare_resume(run_dir: Path, spec: Spec) -> dict[str, Any]:
    """Make a run directory resumable (process 0 only); name the checkpoint to resume from."""
    try:
        top = load_state(run_dir / "state.json")
    except FileNotFoundError:
        raise RunDirError(f"{run_dir}: not a run directory (missing state.json)") from None
    except ValueError as e:
        raise RunDirError(str(e)) from None
    if top.status == "finished":
        raise RunDirError(f"{run_dir}: the run already finished ({top.finish_reason}); nothing to resume")
    _clean_tmp(run_dir)
    ckpt = _latest_checkpoint(run_dir, top)
    if ckpt is None:
        start = top.visits[0]["phase"] if top.visits else top.phase
        for name in ("events.jsonl", "metrics.jsonl"):
            truncate_to(run_dir / name, 0, f"resume{len(_orphans(run_dir))}")
        save_state(run_dir, RunState(spec_digest=spec.digest(), seed=spec.model.run.seed, phase=start))
        return {"checkpoint": None, "start": start}
    state = load_state(ckpt / "engine.json")
    tag = f"resume{len(_orphans(run_dir))}"
    truncate_to(run_dir / "events.jsonl", max(0, state.log_offsets.get("events", 0)), tag)
    truncate_to(run_dir / "metrics.jsonl", max(0, state.log_offsets.get("metrics", 0)), tag)
    save_state(run_dir, state)
    return {"checkpoint": str(ckpt.relative_to(run_dir)), "start": state.phase}


def branch_engine(
    run_dir: Path,
    phase: str,
    new_dir: Path,
    *,
    runner_override: Any = None,
    console: bool = True,
    progress: bool | None = None,
) -> Engine:
    """Start a new run directory from the checkpoint taken when `phase` last began."""
    from curriculum.errors import one_of, suggest

    run_dir, new_dir = Path(run_dir), Path(new_dir)
    spec = load_run_spec(run_dir)
    if phase not in spec.phases:
        raise CurriculumError(f"--from-phase: unknown phase '{phase}'; expected {one_of(spec.phases)}{suggest(phase, spec.phases)}")
    cluster = distributed.connect(spec.model.run.distributed)
    dest = new_dir / cluster.agree(lambda: _prepare_branch(run_dir, phase, new_dir))
    state = load_state(dest / "engine.json")
    state.status = "running"
    runner = runner_override if runner_override is not None else make_runner(spec)
    return Engine(spec, new_dir, runner, state, console=console, progress=progress, resume_from=dest, cluster=cluster)


def _prepare_branch(run_dir: Path, phase: str, new_dir: Path) -> str:
    """Copy what a branch starts from into its new directory (process 0 only); the checkpoint."""
    try:
        top = load_state(run_dir / "state.json")
    except (FileNotFoundError, ValueError) as e:
        raise RunDirError(f"{run_dir}: cannot read the run state ({e})") from None
    visits = [v for v in top.visits if v["phase"] == phase and v.get("checkpoint")]
    ckpt = None
    for v in reversed(visits):
        cand = run_dir / v["checkpoint"]
        if (cand / "engine.json").exists():
            ckpt = cand
            break
    if ckpt is None:
        seen = sorted({v["phase"] for v in top.visits if v.get("checkpoint")})
        raise RunDirError(
            f"{run_dir}: no checkpoint taken at the start of phase '{phase}'; phases with one: "
            f"{', '.join(seen) or 'none'}"
        )
    if new_dir.resolve() == run_dir.resolve():
        raise CurriculumError("--run-dir must be a new directory: branching never overwrites the original run")
    if new_dir.exists() and any(new_dir.iterdir()):
        raise RunDirError(f"{new_dir}: already holds files; give an empty or new --run-dir")
    (new_dir / CKPT_DIR).mkdir(parents=True, exist_ok=True)
    for name in ("spec.resolved.json", "run.json", "spec.source.toml"):
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, new_dir / name)
    meta = json.loads((new_dir / "run.json").read_text())
    meta["branched_from"] = {"run_dir": str(run_dir.resolve()), "phase": phase, "checkpoint": ckpt.name}
    atomic_write_json(new_dir / "run.json", meta)
    dest = new_dir / CKPT_DIR / ckpt.name
    shutil.copytree(ckpt, dest)
    state = load_state(dest / "engine.json")
    for name, key in (("events.jsonl", "events"), ("metrics.jsonl", "metrics")):
        src = run_dir / name
        off = max(0, state.log_offsets.get(key, 0))
        with open(src, "rb") as f:
            data = f.read(off)
        (new_dir / name).write_bytes(data)
    state.status = "running"
    save_state(new_dir, state)
    return str(dest.relative_to(new_dir))


def _clean_tmp(run_dir: Path) -> None:
    root = run_dir / CKPT_DIR
    if root.exists():
        for p in root.iterdir():
            if p.name.startswith(".tmp-"):
                shutil.rmtree(p, ignore_errors=True)


def _orphans(run_dir: Path) -> list[Path]:
    return list(run_dir.glob("*.orphaned.jsonl"))


def _latest_checkpoint(run_dir: Path, top: RunState) -> Path | None:
    """The checkpoint state.json points at, or else the newest intact one on disk."""
    cands: list[Path] = []
    if top.last_checkpoint:
        cands.append(run_dir / top.last_checkpoint)
    root = run_dir / CKPT_DIR
    if root.exists():
        def key(p: Path) -> int:
            try:
                return load_state(p / "engine.json").global_step
            except (OSError, ValueError):
                return -1

        others = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        cands.extend(sorted(others, key=key, reverse=True))
    for c in cands:
        try:
            load_state(c / "engine.json")
            return c
        except (OSError, ValueError):
            continue
    return None
