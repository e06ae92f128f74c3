"""Several processes, one run: real JAX processes (jax.distributed on CPU, gloo collectives)
running `curriculum run` / `curriculum resume` side by side.

What users rely on:
- the guards see the whole batch: a 2-process run whose processes replay two halves of each
  step's rewards makes the same decisions, at the same steps, as one process replaying the
  whole batch;
- the decision is made once: custom guards run on process 0 only, and every process follows it;
- one set of logs: process 0 writes the run directory; checkpoints hold every process's part;
- a kill of the pod at any step loses nothing checkpointed: `resume` on both processes ends
  with the same metrics as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from curriculum.distributed import Cluster, reduce_metrics
from curriculum.errors import CurriculumError, RunDirError
from runners.base import reward_step_stats

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- the pure reduction


def test_reduction_of_two_halves_is_the_whole_batch():
    rng = np.random.default_rng(3)
    a = list(rng.choice([-15.0, -5.0, 0.0, 10.0, 45.0], size=16))
    b = [10.0] * 16  # every group of process 1 has zero spread
    m = reduce_metrics([reward_step_stats(a, 4, 45.0), reward_step_stats(b, 4, 45.0)])
    whole = reward_step_stats(a + b, 4, 45.0)
    for k in ("reward_mean", "reward_std", "reward_min", "reward_max", "reward_range",
              "zero_spread_frac", "top_reward_rate", "nonfinite_rewards"):
        assert m[k] == pytest.approx(whole[k], abs=1e-9), k


@settings(max_examples=200, deadline=None)
@given(
    hs.integers(2, 4),
    hs.lists(hs.floats(-50, 50, allow_nan=False), min_size=8, max_size=8),
    hs.lists(hs.floats(-50, 50, allow_nan=False), min_size=8, max_size=8),
)
def test_pooled_std_and_range_match_the_concatenated_batch(n_proc, x, y):
    shards = [x, y] + [list(np.add(x, i)) for i in range(n_proc - 2)]
    m = reduce_metrics([reward_step_stats(s, 4, None) for s in shards])
    allr = np.concatenate(shards)
    assert m["reward_std"] == pytest.approx(float(allr.std()), rel=1e-6, abs=1e-6)
    assert m["reward_range"] == pytest.approx(float(allr.max() - allr.min()), abs=1e-9)
    assert m["reward_mean"] == pytest.approx(float(allr.mean()), abs=1e-9)


def test_counts_sum_nan_is_left_out_and_missing_keys_count_as_nan():
    m = reduce_metrics([
        {"nonfinite_rewards": 2.0, "safe_rate": math.nan, "kl": 0.1, "only_here": 1.0},
        {"nonfinite_rewards": 1.0, "safe_rate": 0.5, "kl": 0.3},
    ])
    assert m["nonfinite_rewards"] == 3.0
    assert m["safe_rate"] == 0.5  # NaN on one process (undefined there) is left out
    assert m["kl"] == pytest.approx(0.2)
    assert m["only_here"] == 1.0
    assert math.isnan(reduce_metrics([{"a": math.nan}, {"a": math.nan}])["a"])
    assert reduce_metrics([{"loss": math.inf}, {"loss": math.nan}])["loss"] == math.inf


def test_single_process_cluster_is_the_identity():
    c = Cluster()
    assert c.is_primary and not c.multi
    m = {"reward_mean": 1.0, "reward_std": 2.0}
    assert c.reduce_metrics(m) == m
    assert c.broadcast({"a": 1}) == {"a": 1}
    assert c.agree(lambda: 7) == 7
    with pytest.raises(RunDirError):
        c.agree(lambda: (_ for _ in ()).throw(RunDirError("boom")))


def test_bad_process_group_variables_are_one_clear_error(monkeypatch):
    from curriculum import distributed

    monkeypatch.setattr(distributed, "_CURRENT", None)
    monkeypatch.setenv("CURRICULUM_NUM_PROCESSES", "two")
    with pytest.raises(CurriculumError, match=r"CURRICULUM_NUM_PROCESSES='two': expected an integer"):
        distributed.connect("auto")
    monkeypatch.setenv("CURRICULUM_NUM_PROCESSES", "2")
    monkeypatch.setenv("CURRICULUM_PROCESS_ID", "2")
    with pytest.raises(CurriculumError, match=r"CURRICULUM_PROCESS_ID='2': expected an integer 0\.\.1"):
        distributed.connect("auto")
    monkeypatch.setenv("CURRICULUM_PROCESS_ID", "1")
    monkeypatch.delenv("CURRICULUM_COORDINATOR", raising=False)
    with pytest.raises(CurriculumError, match=r"CURRICULUM_COORDINATOR='': expected HOST:PORT"):
        distributed.connect("auto")
    monkeypatch.setenv("CURRICULUM_NUM_PROCESSES", "1")
    assert not distributed.connect("auto").multi
    assert distributed._CURRENT is None  # a single process joins nothing


def test_unreachable_process_0_is_a_clear_error_not_an_abort(tmp_path):
    """JAX itself aborts the process with a C++ stack trace when the coordinator is missing."""
    env = {**os.environ, "CURRICULUM_COORDINATOR": f"127.0.0.1:{_port()}", "CURRICULUM_NUM_PROCESSES": "2",
           "CURRICULUM_PROCESS_ID": "1", "CURRICULUM_INIT_TIMEOUT": "2", "JAX_PLATFORMS": "cpu", "WANDB_MODE": "disabled"}
    r = subprocess.run([sys.executable, "-m", "curriculum.cli", "run", "examples/dipg_simulated.toml", "--run-dir",
                        str(tmp_path / "r"), "--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "no process 0 answered there within 2 s" in r.stderr
    assert "Check failure" not in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "r").exists()
    with socket.socket() as busy:  # process 0 whose port is taken
        busy.bind(("", 0))
        busy.listen()
        env.update(CURRICULUM_PROCESS_ID="0", CURRICULUM_COORDINATOR=f"127.0.0.1:{busy.getsockname()[1]}")
        r = subprocess.run([sys.executable, "-m", "curriculum.cli", "run", "examples/dipg_simulated.toml", "--run-dir",
                            str(tmp_path / "r"), "--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "process 0 cannot listen on port" in r.stderr, r.stderr[-2000:]
    assert "Check failure" not in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------- real processes


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(i: int, n: int, port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CURRICULUM_COORDINATOR=f"127.0.0.1:{port}",
        CURRICULUM_NUM_PROCESSES=str(n),
        CURRICULUM_PROCESS_ID=str(i),
        CURRICULUM_INIT_TIMEOUT="60",
        JAX_PLATFORMS="cpu",
        WANDB_MODE="disabled",
        PYTHONPATH=str(ROOT),
        **(extra or {}),
    )
    return env


def _start(args_per_proc, extra_env=None):
    n = len(args_per_proc)
    port = _port()
    return [
        subprocess.Popen(
            [sys.executable, "-m", "curriculum.cli", *args],
            cwd=ROOT,
            env=_env(i, n, port, (extra_env or {}).get(i)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, args in enumerate(args_per_proc)
    ]


def _wait(procs, timeout=240):
    outs = []
    deadline = time.time() + timeout
    try:
        for p in procs:
            out, err = p.communicate(timeout=max(1, deadline - time.time()))
            outs.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return outs


def _process_lines(outs):
    lines = []
    for _, _, err in outs:
        found = re.findall(r"process (\d)/(\d): (.*)", err)
        assert len(found) == 1, err[-3000:]
        lines.append(found[0][2])
    return lines


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


COLLECTIVES = """
import json, sys
from curriculum import distributed
from curriculum.errors import RunDirError, CurriculumError
c = distributed.connect("auto")
i = c.index
small = c.allgather({"p": i})
big = c.allgather({"p": i, "pad": "x" * (5000 + 3000 * i)})  # past one buffer, unequal
b_small = c.broadcast({"from": i})
b_big = c.broadcast({"from": i, "pad": "y" * 9000})
def refuse():
    raise RunDirError("refused on process 0")
try:
    c.agree(refuse)
    err = None
except CurriculumError as e:
    err = [type(e).__name__, str(e)]
print(json.dumps({"i": i, "n": c.count, "small": small, "big": [[d["p"], len(d["pad"])] for d in big],
                  "b_small": b_small, "b_big": [b_big["from"], len(b_big["pad"])], "err": err}))
"""


def test_collectives_carry_any_message_and_errors_from_process_0():
    port = _port()
    procs = [
        subprocess.Popen([sys.executable, "-c", COLLECTIVES], cwd=ROOT, env=_env(i, 2, port),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outs = _wait(procs, timeout=120)
    got = []
    for rc, out, err in outs:
        assert rc == 0, err[-2000:]
        got.append(json.loads([x for x in out.splitlines() if x.startswith("{")][-1]))
    for i, g in enumerate(got):
        assert (g["i"], g["n"]) == (i, 2)
        assert g["small"] == [{"p": 0}, {"p": 1}]
        assert g["big"] == [[0, 5000], [1, 8000]]
        assert g["b_small"] == {"from": 0} and g["b_big"] == [0, 9000]
        assert g["err"] == ["RunDirError", "refused on process 0"]


REPLAY_SPEC = """
[run]
name = "mh-replay"
guard_modules = ["pid_guard.py"]

[runner]
kind = "replay"
top_reward = 45.0

[phases.a]
kind = "grpo"
preset = "soft"
max_steps = 40
next = "end"

[phases.b]
kind = "grpo"
preset = "medium"
max_steps = 20

[guards.up]
when = "logged_mean(reward_mean, 3) > 10"
patience = 2

[[transitions]]
from = "a"
to = "b"
guard = "up"
"""

GUARD_MODULE = '''
import os
from pathlib import Path
import numpy as np
from curriculum.registry import register_guard

@register_guard()
def logged_mean(view, metric, n):
    """The mean of the last n values; records which process evaluated it."""
    d = os.environ.get("MH_GUARD_LOG")
    if d:
        with open(Path(d) / f"calls.{os.environ['CURRICULUM_PROCESS_ID']}", "a") as f:
            f.write("x\\n")
    w = np.asarray(view.window(metric, int(n)), dtype=float)
    return float(w.mean()) if w.size else float("nan")
'''


def _traces(tmp: Path):
    """Two halves of each step's batch: process 0 scores high, process 1 low then better.

    Process 0 alone would escalate at once (mean 14), process 1 alone never (mean <= 10); the
    whole batch crosses 10 only after step 20.
    """
    rng = np.random.default_rng(0)
    t0, t1, whole = [], [], []
    for step in range(1, 61):
        a = list(rng.choice([10.0, 14.0, 18.0], size=8))
        b = list(rng.choice([0.0, 4.0, 8.0] if step <= 20 else [6.0, 10.0, 14.0], size=8))
        t0.append({"step": step, "rewards": a, "group_size": 4})
        t1.append({"step": step, "rewards": b, "group_size": 4})
        whole.append({"step": step, "rewards": a + b, "group_size": 4})
    paths = []
    for name, rows in (("p0", t0), ("p1", t1), ("whole", whole)):
        p = tmp / f"trace-{name}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def replay_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mh")
    (tmp / "spec.toml").write_text(REPLAY_SPEC)
    (tmp / "pid_guard.py").write_text(GUARD_MODULE)
    p0, p1, whole = _traces(tmp)
    logs = tmp / "guard-calls"
    logs.mkdir()
    common = ["run", str(tmp / "spec.toml"), "--no-progress", "--no-report"]
    procs = _start(
        [common + ["--run-dir", str(tmp / "two"), "--replay", str(p)] for p in (p0, p1)],
        extra_env={0: {"MH_GUARD_LOG": str(logs)}, 1: {"MH_GUARD_LOG": str(logs)}},
    )
    outs = _wait(procs)
    single = subprocess.run(
        [sys.executable, "-m", "curriculum.cli", *common, "--run-dir", str(tmp / "one"), "--replay", str(whole)],
        cwd=ROOT, env={**os.environ, "WANDB_MODE": "disabled", "JAX_PLATFORMS": "cpu"},
        capture_output=True, text=True, timeout=240,
    )
    return tmp, outs, single


def test_two_processes_decide_like_one_process_on_the_whole_batch(replay_runs):
    tmp, outs, single = replay_runs
    for rc, _, err in outs:
        assert rc == 0, err[-3000:]
    assert single.returncode == 0, single.stderr[-3000:]
    two = json.loads((tmp / "two" / "state.json").read_text())
    one = json.loads((tmp / "one" / "state.json").read_text())
    assert [(t["from_phase"], t["to_phase"], t["step"]) for t in two["transitions"]] == [
        (t["from_phase"], t["to_phase"], t["step"]) for t in one["transitions"]
    ]
    esc = [t for t in two["transitions"] if t["from_phase"] == "a"]
    assert esc and esc[0]["to_phase"] == "b" and esc[0]["step"] > 20  # not process 0's own view
    # every step's logged metrics are those of the whole batch
    m2, m1 = _jsonl(tmp / "two" / "metrics.jsonl"), _jsonl(tmp / "one" / "metrics.jsonl")
    assert len(m2) == len(m1) == two["global_step"]
    for r2, r1 in zip(m2, m1):
        assert (r2["step"], r2["phase"]) == (r1["step"], r1["phase"])
        for k in ("reward_mean", "reward_std", "reward_min", "reward_max", "reward_range", "zero_spread_frac", "top_reward_rate"):
            assert r2["metrics"][k] == pytest.approx(r1["metrics"][k], abs=1e-9), (r2["step"], k)


def test_every_process_follows_process_0_and_only_it_evaluates_guards(replay_runs):
    tmp, outs, _ = replay_runs
    lines = _process_lines(outs)
    assert lines[0] == lines[1], lines
    assert "a->b@" in lines[0]
    assert (tmp / "guard-calls" / "calls.0").read_text().count("x") > 20
    assert not (tmp / "guard-calls" / "calls.1").exists()


def test_process_0_alone_writes_the_run_directory(replay_runs):
    tmp, outs, _ = replay_runs
    run = tmp / "two"
    events = _jsonl(run / "events.jsonl")
    started = [e for e in events if e["event"] == "run_started"]
    assert len(started) == 1 and started[0]["processes"] == 2
    assert [(e["from_phase"], e["to_phase"]) for e in events if e["event"] == "phase_transition"] == [("a", "b"), ("b", "end")]
    assert not list(run.glob("runner-error*")) and not list(tmp.glob(".two.creating-*"))
    # the summary table and the report come from process 0 only
    assert "finished (max_steps) at step 42" in outs[0][1]
    assert "finished" not in outs[1][1] and "phase" not in outs[1][1]
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["0000-a-start", "0001-b-start", "final"]


SIM_SPEC_OVERRIDES = ["--set", "run.checkpoint_every=40", "--set", "run.keep_checkpoints=30",
                      "--set", "phases.recovery.max_steps=40"]


def _sim_args(run_dir: Path) -> list[str]:
    return ["run", "examples/dipg_simulated.toml", "--run-dir", str(run_dir), "--no-progress",
            "--no-report", *SIM_SPEC_OVERRIDES]


def test_kill_both_processes_and_resume_matches_an_uninterrupted_run(tmp_path):
    full = tmp_path / "full"
    outs = _wait(_start([_sim_args(full)] * 2))
    for rc, _, err in outs:
        assert rc == 0, err[-3000:]
    ref = json.loads((full / "state.json").read_text())
    assert [t["to_phase"] for t in ref["transitions"]] == ["medium", "recovery", "end"]
    # both processes saved their own part of every checkpoint
    step_ckpts = sorted((full / "checkpoints").glob("step-*"))
    assert step_ckpts
    for c in step_ckpts:
        assert sorted(p.name for p in (c / "runner").iterdir()) == ["simulated.p0.json", "simulated.p1.json"]

    # SIGKILL process 0 at step 190 (in medium, between checkpoints); the pod loses process 1 too
    crashed = tmp_path / "crashed"
    procs = _start([_sim_args(crashed)] * 2, extra_env={0: {"CURRICULUM_CRASH_AT": "step:190"}})
    procs[0].wait(timeout=240)
    assert procs[0].returncode == -signal.SIGKILL
    procs[1].kill()
    _wait(procs, timeout=30)
    st = json.loads((crashed / "state.json").read_text())
    assert st["status"] == "running" and st["global_step"] < 190 and st["transitions"]

    outs = _wait(_start([["resume", str(crashed), "--no-progress", "--no-report"]] * 2))
    for rc, _, err in outs:
        assert rc == 0, err[-3000:]
    lines = _process_lines(outs)
    assert lines[0] == lines[1]
    got = json.loads((crashed / "state.json").read_text())
    assert got["transitions"] == ref["transitions"]
    assert _jsonl(crashed / "metrics.jsonl") == _jsonl(full / "metrics.jsonl")


def test_resume_refusal_on_process_0_reaches_every_process(tmp_path):
    run = tmp_path / "done"
    outs = _wait(_start([["run", str(ROOT / "examples/dipg_simulated.toml"), "--run-dir", str(run),
                           "--no-progress", "--no-report", "--set", "phases.soft.max_steps=5"]] * 2))
    assert all(rc == 0 for rc, _, _ in outs), outs[0][2][-2000:]
    outs = _wait(_start([["resume", str(run), "--no-progress"]] * 2), timeout=120)
    for rc, _, err in outs:
        assert rc != 0
        assert "already finished" in err and "Traceback" not in err
