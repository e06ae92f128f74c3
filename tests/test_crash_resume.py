"""Kill the run with SIGKILL (real subprocesses) at named and random moments, resume, and
check the result equals an uninterrupted run: same transitions, same steps, same metrics."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curriculum.cli import main
from curriculum.events import read_jsonl
from curriculum.state import load_state

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "dipg_simulated.toml"
SETS = ["--set", "run.checkpoint_every=20", "--set", "phases.recovery.max_steps=60"]

pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["WANDB_MODE"] = "disabled"
    env.pop("CURRICULUM_CRASH_AT", None)
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "curriculum.cli", *args],
        cwd=ROOT, env=env or _env(), capture_output=True, text=True, timeout=timeout,
    )


def summary(rd: Path) -> dict:
    ev, probs = read_jsonl(rd / "events.jsonl")
    assert not probs, probs
    met, probs = read_jsonl(rd / "metrics.jsonl")
    assert not probs, probs
    trans = [(e["from_phase"], e["to_phase"], e["step"], e["phase_step"], e["reason"]) for e in ev if e["event"] == "phase_transition"]
    finished = [(e["phase"], e["steps"]) for e in ev if e["event"] == "phase_finished"]
    st = load_state(rd / "state.json")
    return {
        "transitions": trans,
        "finished": finished,
        "steps": [m["step"] for m in met],
        "metrics": [(m["step"], m["phase"], m["metrics"]) for m in met],
        "global_step": st.global_step,
        "status": st.status,
    }


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict:
    rd = tmp_path_factory.mktemp("straight") / "run"
    os.environ["WANDB_MODE"] = "disabled"
    assert main(["run", str(SPEC), *SETS, "--run-dir", str(rd), "--no-progress", "--no-report"]) == 0
    s = summary(rd)
    assert s["status"] == "finished" and len(s["transitions"]) == 3
    return s


POINTS = [
    ("step", 7),  # mid-training, before the first periodic checkpoint
    ("step", 133),  # mid-training, after several checkpoints
    ("checkpoint_runner_saved", 3),  # runner files written, checkpoint not yet renamed into place
    ("checkpoint_renamed", 4),  # checkpoint in place, state.json not yet pointing at it
    ("transition_logged", 1),  # transition event written, state not saved
    ("transition_logged", 2),
    ("evaluation", 2),  # end-of-phase evaluation
    ("phase_setup", 2),  # a phase set up, its boundary checkpoint not written
]


@pytest.mark.parametrize("point,n", POINTS)
def test_kill_at_named_point_then_resume_matches_straight_run(tmp_path, straight, point, n):
    rd = tmp_path / "run"
    p = cli("run", str(SPEC), *SETS, "--run-dir", str(rd), "--no-progress", "--no-report",
            env=_env(CURRICULUM_CRASH_AT=f"{point}:{n}"))
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    r = cli("resume", str(rd), "--no-progress", "--no-report")
    assert r.returncode == 0, r.stderr[-2000:]
    got = summary(rd)
    assert got["transitions"] == straight["transitions"]
    assert got["finished"] == straight["finished"]
    assert got["steps"] == straight["steps"]
    assert got["metrics"] == straight["metrics"]
    assert cli("status", str(rd)).returncode == 0


def test_random_sigkills_many_times(tmp_path, straight):
    """SIGKILL at random wall-clock moments, resuming after each, until the run finishes."""
    rng = random.Random(1234)
    rd = tmp_path / "run"
    sets = [*SETS, "--set", "runner.step_seconds=0.02"]
    kills = 0
    cmd = ["run", str(SPEC), *sets, "--run-dir", str(rd), "--no-progress", "--no-report"]
    for attempt in range(120):  # enough kills for a slow or loaded machine to reach the end
        proc = subprocess.Popen([sys.executable, "-m", "curriculum.cli", *cmd], cwd=ROOT, env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 2.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        else:
            assert proc.returncode == 0
            break
        if rd.exists():
            # the run directory appears whole (renamed into place) or not at all
            assert (rd / "state.json").exists() and (rd / "run.json").exists()
            if json.loads((rd / "state.json").read_text())["status"] == "finished":
                break  # the kill landed after the run finished (printing its summary)
            cmd = ["resume", str(rd), "--no-progress", "--no-report"]
        else:  # killed before the run directory was created
            cmd = ["run", str(SPEC), *sets, "--run-dir", str(rd), "--no-progress", "--no-report"]
    assert kills >= 5, f"only {kills} kills landed"
    got = summary(rd)
    assert got["status"] == "finished"
    assert got["transitions"] == straight["transitions"]
    assert got["steps"] == straight["steps"]
    assert got["metrics"] == straight["metrics"]
