"""The pure core (curriculum/core.py) and the public API: decisions as a function of
(state, metrics), states never changed in place, a hand-written loop that reproduces the CLI,
and an engine that leaves the host's logging as it found it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

import curriculum
from curriculum import Curriculum, PenaltiesChanged, PhaseStarted, Stay, Stop, Transition, load_spec
from curriculum.core import decision_from_dict, decision_to_dict
from curriculum.events import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_collapse import write_replay  # noqa: E402

EVAL_SPEC = """
[run]
name = "ev"
[runner]
kind = "simulated"
[phases.a]
kind = "grpo"
preset = "soft"
max_steps = 3
[phases.check]
kind = "eval"
[phases.b]
kind = "grpo"
preset = "soft"
max_steps = 5
[phases.c]
kind = "grpo"
preset = "medium"
max_steps = 2
[guards.late]
when = "mean(reward_mean, 2) > 0"
patience = 2
[[transitions]]
from = "b"
to = "c"
guard = "late"
"""

PID_SPEC = """
[run]
name = "pid"
[runner]
kind = "simulated"
[phases.p]
kind = "grpo"
preset = "soft"
max_steps = 6
controller = { type = "pid", metric = "hallucination_rate", target = 0.1, kp = 2.0 }
"""


def _spec(tmp_path: Path, text: str, name: str = "s.toml"):
    p = tmp_path / name
    p.write_text(text)
    return load_spec(p)


def _drive(cur: Curriculum, steps: list[dict], start: str | None = None):
    """The embedding loop: every decision, in order."""
    state, out, it = cur.init(start), [], iter(steps)
    while not state.finished:
        state, d = cur.begin(state)
        if isinstance(d, Stay):
            m = next(it, None)
            if m is None:
                state, d = cur.finish(state, "runner_exhausted")
            else:
                state, d = cur.observe(state, m)
        out.append(d)
    return state, out


def test_a_phase_after_an_eval_phase_runs_once_and_its_guard_fires(tmp_path):
    cur = Curriculum(_spec(tmp_path, EVAL_SPEC))
    state, ds = _drive(cur, [{"reward_mean": 1.0}] * 50)
    moves = [(d.phase, d.to, d.step, d.reason) for d in ds if isinstance(d, Transition)]
    assert moves == [("a", "check", 3, "max_steps"), ("check", "b", 3, "max_steps"),
                     ("b", "c", 5, "late"), ("c", "end", 7, "max_steps")]
    assert [d.phase for d in ds if isinstance(d, PhaseStarted)] == ["a", "check", "b", "c"]
    assert isinstance(ds[-1], Stop) and state.finish_reason == "max_steps" and state.global_step == 7
    started = {d.phase: d for d in ds if isinstance(d, PhaseStarted)}
    assert started["c"].penalties != started["b"].penalties  # medium's values once c begins
    assert started["c"].previous_phase == "b"


def test_the_run_budget_ends_the_run_from_any_phase(tmp_path):
    spec = _spec(tmp_path, EVAL_SPEC.replace('name = "ev"', 'name = "ev"\nmax_steps = 4'))
    cur = Curriculum(spec)
    state, ds = _drive(cur, [{"reward_mean": 1.0}] * 50)
    moves = [(d.phase, d.to, d.step, d.reason) for d in ds if isinstance(d, Transition)]
    # a -> check by a's budget at 3, check -> b, then the run's budget at step 4, inside b
    assert moves == [("a", "check", 3, "max_steps"), ("check", "b", 3, "max_steps"), ("b", "end", 4, "run_budget")]
    assert isinstance(ds[-1], Stop) and ds[-1].evaluate and state.finish_reason == "run_budget"
    assert cur.remaining(cur.init()) == 3  # a's own budget is the nearer one at the start


def test_observe_never_changes_the_state_it_was_given(tmp_path):
    cur = Curriculum(load_spec(ROOT / "examples" / "dipg_simulated.toml"))
    s0, d = cur.begin(cur.init())
    assert isinstance(d, PhaseStarted)
    s1, _ = cur.observe(s0, {"reward_mean": 1.0, "safe_rate": 0.5})
    snap = (s1.global_step, s1.phase_step, dict(s1.guards), s1.history.window("reward_mean", 10).tolist())
    # two different futures from the same state: neither leaks into the other or into s1
    a, _ = cur.observe(s1, {"reward_mean": 2.0, "safe_rate": 0.5})
    b, _ = cur.observe(s1, {"reward_mean": 3.0, "safe_rate": 0.5})
    a2, _ = cur.observe(a, {"reward_mean": 4.0, "safe_rate": 0.5})
    assert (s1.global_step, s1.phase_step, dict(s1.guards), s1.history.window("reward_mean", 10).tolist()) == snap
    assert a.history.window("reward_mean", 10).tolist() == [1.0, 2.0]
    assert b.history.window("reward_mean", 10).tolist() == [1.0, 3.0]
    assert a2.history.window("reward_mean", 10).tolist() == [1.0, 2.0, 4.0]
    assert s0.global_step == 0 and s0.history.window("reward_mean", 10).tolist() == []
    with pytest.raises(Exception):
        s1.phase = "other"  # frozen: plain data, replaced, never assigned


def test_the_windows_stay_right_past_their_capacity_in_every_fork(tmp_path):
    from curriculum.windows import MetricHistory

    h = MetricHistory(3).begun("p")
    states = [h]
    for i in range(10):
        states.append(states[-1].pushed({"x": float(i)}))
    fork = states[5].pushed({"x": 99.0})  # states[5] is not the newest: it must copy, not overwrite
    assert states[5].window("x", 3).tolist() == [2.0, 3.0, 4.0]
    assert states[6].window("x", 3).tolist() == [3.0, 4.0, 5.0]
    assert fork.window("x", 3).tolist() == [3.0, 4.0, 99.0]
    assert states[10].window("x", 5).tolist() == [7.0, 8.0, 9.0] and states[10].reported("x") == 10


def test_pid_changes_are_decisions_with_before_and_after(tmp_path):
    cur = Curriculum(_spec(tmp_path, PID_SPEC))
    _, ds = _drive(cur, [{"reward_mean": 0.0, "hallucination_rate": 0.6}] * 6)
    changes = [d for d in ds if isinstance(d, PenaltiesChanged)]
    assert changes, [d.kind for d in ds]
    first = changes[0]
    assert first.penalty_scale > 1.0 and first.notable
    neg = [k for k, v in first.before.items() if v < 0]
    assert neg and all(first.penalties[k] < first.before[k] for k in neg)  # harsher penalties
    assert all(first.penalties[k] == first.before[k] for k, v in first.before.items() if v >= 0)


def test_nonfinite_stop_phase_is_decided_by_the_core(tmp_path):
    spec = _spec(tmp_path, EVAL_SPEC.replace('name = "ev"', 'name = "ev"\non_nonfinite = "stop_phase"'))
    cur = Curriculum(spec)
    steps = [{"reward_mean": 1.0}, {"reward_mean": math.nan}] + [{"reward_mean": 1.0}] * 20
    state, ds = _drive(cur, steps)
    first = next(d for d in ds if isinstance(d, Transition))
    assert (first.phase, first.to, first.step, first.reason) == ("a", "check", 2, "nonfinite")
    assert first.nonfinite == ("reward_mean",) and state.nonfinite_steps == 1


def test_decisions_round_trip_as_json_for_the_other_processes(tmp_path):
    cur = Curriculum(_spec(tmp_path, EVAL_SPEC))
    _, ds = _drive(cur, [{"reward_mean": 1.0}] * 50)
    for d in ds:
        wire = json.loads(json.dumps(decision_to_dict(d), allow_nan=False))
        assert decision_from_dict(wire) == d


def test_a_follower_reaches_the_same_state_as_the_decider(tmp_path):
    cur = Curriculum(_spec(tmp_path, EVAL_SPEC))
    lead, follow = cur.init(), cur.init()
    while not lead.finished:
        lead, d = cur.begin(lead)
        follow, d2 = cur.begin(follow)
        assert d2 == d
        if isinstance(d, Stay):
            lead, d = cur.observe(lead, {"reward_mean": 1.0})
            follow, _ = cur.record(follow, {"reward_mean": 1.0})
            follow = cur.follow(follow, decision_from_dict(decision_to_dict(d)))
        assert (follow.phase, follow.global_step, follow.phase_step, follow.transitions, follow.status) == (
            lead.phase, lead.global_step, lead.phase_step, lead.transitions, lead.status)


def _cli(*args):
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("kind,start", [("sharp", "medium"), ("saturation", "medium"), ("healthy", "soft")])
def test_the_readme_loop_reproduces_the_cli_exactly(tmp_path, kind, start):
    trace = tmp_path / "t.jsonl"
    write_replay(trace, kind, 3, steps=260)  # long enough for every budget of the cpu profile
    sets = ["--set", "phases.medium.max_steps=150", "--set", "phases.soft.max_steps=60",
            "--set", "phases.recovery.max_steps=80"]  # the trace outlasts every budget
    rd = tmp_path / "run"
    res = _cli("-m", "curriculum.cli", "run", "examples/dipg.toml", "--replay", str(trace), "--start-phase", start,
               *sets, "--run-dir", str(rd), "--no-progress")
    assert res.returncode == 0, res.stderr[-2000:]
    events, problems = read_jsonl(rd / "events.jsonl")
    assert not problems
    want = [(e["from_phase"], e["to_phase"], e["step"], e["reason"]) for e in events if e["event"] == "phase_transition"]
    loop = _cli("examples/embed_loop.py", "examples/dipg.toml", str(trace), "--start-phase", start, *sets)
    assert loop.returncode == 0, loop.stderr[-2000:]
    lines = [json.loads(x) for x in loop.stdout.splitlines()]
    got = [(x["from"], x["to"], x["step"], x["reason"]) for x in lines if "from" in x]
    assert got == want and len(want) >= (2 if start == "medium" else 1)
    state = json.loads((rd / "state.json").read_text())
    assert lines[-1] == {"finished": state["finish_reason"], "steps": state["global_step"]}
    if kind == "sharp":
        assert want[0][3] == "collapse"


def test_the_engine_gives_the_host_its_logging_back(tmp_path):
    from curriculum.engine import Engine

    seen: list[str] = []

    def host_processor(_, __, ev):
        seen.append(ev["event"])
        raise structlog.DropEvent

    structlog.configure(processors=[host_processor], cache_logger_on_first_use=False)
    try:
        before = structlog.get_config()
        spec = _spec(tmp_path, EVAL_SPEC)
        Engine.create(spec, tmp_path / "run", console=False, progress=False).run()
        assert structlog.get_config() == before
        structlog.get_logger().info("host_line")
        assert seen == ["host_line"]
    finally:
        structlog.reset_defaults()


def test_the_public_api_is_importable_from_the_package():
    for name in ("load_spec", "Curriculum", "Decision", "Transition", "Stop", "Stay", "PhaseStarted",
                 "PenaltiesChanged", "CurriculumState", "register_guard", "register_reward", "Runner", "PhaseSetup", "RunContext",
                 "step_metrics"):
        assert hasattr(curriculum, name), name
    out = subprocess.run([sys.executable, "-c", "import curriculum, sys; print('jax' in sys.modules)"],
                         cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.stdout.strip() == "False"  # the API does not pull in the training stack
