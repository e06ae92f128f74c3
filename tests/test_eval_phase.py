"""A phase after an eval phase runs once, a guard there works, and a kill anywhere around the
eval phase resumes to the same run (the phase machine drives the run state itself)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from curriculum.events import read_jsonl

ROOT = Path(__file__).resolve().parents[1]

SPEC = """
[run]
name = "evalphase"
seed = 1
progress = false
wandb = "disabled"
checkpoint_every = 2

[runner]
kind = "simulated"
batch_size = 2
group_size = 4

[phases.a]
kind = "grpo"
preset = "soft"
max_steps = 5

[phases.check]
kind = "eval"

[phases.b]
kind = "grpo"
preset = "soft"
max_steps = 6

[phases.c]
kind = "grpo"
preset = "soft"
max_steps = 5

[[transitions]]
from = "b"
to = "c"
when = "count(reward_mean, 3) >= 3"
"""

EXPECTED = [("a", "check", 5, "max_steps"), ("check", "b", 5, "max_steps"), ("b", "c", 8, "b->c"),
            ("c", "end", 13, "max_steps")]


def cli(*args, crash=None):
    env = dict(os.environ, WANDB_MODE="disabled")
    env.pop("CURRICULUM_CRASH_AT", None)
    if crash:
        env["CURRICULUM_CRASH_AT"] = crash
    return subprocess.run([sys.executable, "-m", "curriculum.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def story(rd: Path):
    events, problems = read_jsonl(rd / "events.jsonl")
    assert not problems
    metrics, problems = read_jsonl(rd / "metrics.jsonl")
    assert not problems
    trans = [(e["from_phase"], e["to_phase"], e["step"], e["reason"]) for e in events if e["event"] == "phase_transition"]
    started = [e["phase"] for e in events if e["event"] == "phase_started"]
    return trans, started, [(m["step"], m["phase"], m["metrics"]["reward_mean"]) for m in metrics]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evalphase")
    (tmp / "s.toml").write_text(SPEC)
    rd = tmp / "straight"
    p = cli("run", str(tmp / "s.toml"), "--run-dir", str(rd))
    assert p.returncode == 0, p.stderr[-2000:]
    return tmp, story(rd)


def test_each_phase_runs_once_with_a_guard_after_the_eval_phase(straight):
    _, (trans, started, steps) = straight
    assert trans == EXPECTED
    assert started == ["a", "check", "b", "c"]
    assert [p for _, p, _ in steps] == ["a"] * 5 + ["b"] * 3 + ["c"] * 5
    assert [s for s, _, _ in steps] == list(range(1, 14))


@pytest.mark.parametrize("crash", ["evaluation:1", "transition_logged:2", "phase_setup:3", "step:7"])
def test_a_kill_around_the_eval_phase_resumes_to_the_same_run(straight, crash):
    tmp, expected = straight
    rd = tmp / f"killed-{crash.replace(':', '-')}"
    p = cli("run", str(tmp / "s.toml"), "--run-dir", str(rd), crash=crash)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    r = cli("resume", str(rd))
    assert r.returncode == 0, r.stderr[-2000:]
    trans, started, steps = story(rd)
    assert trans == expected[0] and steps == expected[2]
