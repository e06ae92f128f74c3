"""bench/study.py end to end on the simulated runner (one SFT-stage run, arms branched from its
checkpoint at the start of `soft`), one after another and as Ray tasks on a local two-worker
cluster; and what the study stands on: a branch with a changed seed / schedule, the changes a
branch refuses, and run.max_steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SIM = "examples/dipg_simulated.toml"


def _env():
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=str(ROOT))
    env.pop("CURRICULUM_CRASH_AT", None)
    env.pop("RAY_ADDRESS", None)
    return env


def cli(*args):
    return subprocess.run([sys.executable, "-m", "curriculum.cli", *args], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=300)


def study(*args):
    return subprocess.run([sys.executable, "bench/study.py", "--spec", SIM, *args], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=300)


def events(rd: Path) -> list[dict]:
    return [json.loads(x) for x in (rd / "events.jsonl").read_text().splitlines()]


def steps(rd: Path) -> list[dict]:
    return [json.loads(x) for x in (rd / "metrics.jsonl").read_text().splitlines()]


def check_trials(out: Path, arms: list[str], seeds: list[int], grpo: int) -> list[dict]:
    trials = json.loads((out / "trials.json").read_text())
    assert sorted((t["arm"], t["seed"]) for t in trials) == sorted((a, s) for a in arms for s in seeds)
    sft = out / "sft"
    start = next(v for v in json.loads((sft / "state.json").read_text())["visits"] if v["phase"] == "soft")
    for t in trials:
        assert t["rc"] == 0, (out / f"{Path(t['run_dir']).name}.log").read_text()[-2000:]
        rd = Path(t["run_dir"])
        meta = json.loads((rd / "run.json").read_text())
        # every trial starts from the one SFT run's checkpoint at the start of soft
        assert meta["branched_from"]["run_dir"] == str(sft)
        assert meta["branched_from"]["checkpoint"] == Path(start["checkpoint"]).name
        st = json.loads((rd / "state.json").read_text())
        assert st["status"] == "finished" and st["seed"] == t["seed"]
        own = [m for m in steps(rd) if m["step"] > start["start_step"]]
        assert len(own) == grpo and t["final"]["grpo_steps"] == grpo  # equal GRPO steps in every arm
        trans = [(e["from_phase"], e["to_phase"], e["phase_step"], e["reason"]) for e in events(rd)
                 if e["event"] == "phase_transition" and e["step"] > start["start_step"]]
        a = grpo // 3
        if t["arm"] in ("hand", "soft"):
            assert trans == [("soft", "medium", a, "max_steps"), ("medium", "recovery", a, "max_steps"),
                             ("recovery", "end", grpo - 2 * a, "max_steps")]
            medium = {m["preset"] for m in own if m["phase"] == "medium"}
            assert medium == ({"medium"} if t["arm"] == "hand" else {"soft"})
        else:  # the spec's own curriculum, ended by the run budget
            # soft's budget is the study's: the run ends on it (or, after an escalation, on run.max_steps)
            assert trans[-1][1] == "end" and trans[-1][3] in ("max_steps", "run_budget")
        # the final evaluation the study reports is the run's last one
        last = [e for e in events(rd) if e["event"] == "phase_finished" and e.get("eval")][-1]
        assert t["final"]["safe_rate"] == pytest.approx(last["eval"]["safe_rate"])
    md = (out / "compare" / "compare.md").read_text()
    assert sum(line.startswith(f"| {i + 1}: ") for line in md.splitlines() for i in range(len(trials))) >= len(trials)
    return trials


def test_study_one_after_another(tmp_path):
    out = tmp_path / "seq"
    p = study("--out", str(out), "--grpo-steps", "6", "--seeds", "3", "--arms", "hand,adaptive")
    assert p.returncode == 0, p.stderr[-3000:]
    trials = check_trials(out, ["hand", "adaptive"], [3], 6)
    assert len({t["worker_pid"] for t in trials}) == 1  # the study's own process
    # the printed table is curriculum compare's, then the arms pooled over seeds
    assert (out / "compare" / "compare.md").read_text().strip() in p.stdout
    assert "| hand | 1 |" in p.stdout and "| adaptive | 1 |" in p.stdout
    # ... and each arm against the first with the same seed (the simulated runner writes no
    # per-item rows, so the difference is taken as between independent samples)
    assert "| adaptive | 3 | independent |" in p.stdout and "| adaptive | mean of 1 |" in p.stdout
    assert "trial_finished" in p.stdout + p.stderr
    # a second study into the same directory reuses its SFT run but never overwrites a trial
    again = study("--out", str(out), "--grpo-steps", "6", "--seeds", "3")
    assert again.returncode != 0 and "already exists; give a new --out" in again.stderr


def test_study_on_a_local_two_worker_ray_cluster(tmp_path):
    out = tmp_path / "ray"
    p = study("--out", str(out), "--grpo-steps", "6", "--seeds", "1", "2", "--arms", "hand,soft", "--ray", "auto",
              "--ray-workers", "2")
    assert p.returncode == 0, p.stderr[-3000:]
    trials = check_trials(out, ["hand", "soft"], [1, 2], 6)
    # each trial ran as a Ray task in a worker process, and the two workers both took trials
    assert os.getpid() not in {t["worker_pid"] for t in trials}
    assert len({t["worker_pid"] for t in trials}) == 2
    # the per-seed table pairs each soft trial with the hand trial of its seed, then averages
    pooled = (out / "pooled.md").read_text()
    assert "| soft | 1 | independent |" in pooled and "| soft | 2 | independent |" in pooled
    assert "| soft | mean of 2 |" in pooled and pooled.strip() in p.stdout
    # seeds differ, arms from the same weights: the two hand trials are not copies of each other
    hand = [Path(t["run_dir"]) for t in sorted(trials, key=lambda t: t["seed"]) if t["arm"] == "hand"]
    assert [m["metrics"] for m in steps(hand[0])[-6:]] != [m["metrics"] for m in steps(hand[1])[-6:]]


def test_study_bad_arguments_are_one_line_errors(tmp_path):
    p = study("--out", str(tmp_path / "x"), "--arms", "hand,fancy")
    assert p.returncode == 2 and "--arms: unknown arm(s) fancy; expected a subset of hand, adaptive, soft" in p.stderr
    p = study("--out", str(tmp_path / "x"), "--sft-run", str(tmp_path))
    assert p.returncode != 0 and "Traceback" not in p.stderr


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    rd = tmp_path_factory.mktemp("branch") / "base"
    p = cli("run", SIM, "--run-dir", str(rd), "--no-progress", "--no-report", "--set", "phases.soft.max_steps=10",
            "--set", "phases.soft.next=medium", "--set", "phases.medium.max_steps=10", "--set",
            "phases.recovery.max_steps=5")
    assert p.returncode == 0, p.stderr[-2000:]
    return rd


def test_a_branch_may_change_seed_schedule_and_transitions(base):
    new = base.parent / "b-ok"
    p = cli("resume", str(base), "--from-phase", "medium", "--run-dir", str(new), "--no-progress", "--no-report",
            "--set", "run.seed=99", "--set", "transitions=[]", "--set", "phases.recovery.preset=medium",
            "--set", "phases.medium.max_steps=3", "--set", "run.max_steps=16")
    assert p.returncode == 0, p.stderr[-2000:]
    st = json.loads((new / "state.json").read_text())
    assert st["seed"] == 99 and st["finish_reason"] == "run_budget" and st["global_step"] == 16
    spec = json.loads((new / "spec.resolved.json").read_text())
    assert spec["run"]["seed"] == 99 and spec["transitions"] == [] and spec["phases"]["recovery"]["preset"] == "medium"
    meta = json.loads((new / "run.json").read_text())
    assert meta["branched_from"]["changes"]["overrides"][0] == "run.seed=99"
    mine = [m for m in steps(new) if m["step"] > 10]
    assert [m["step"] for m in mine] == list(range(11, 17))
    assert [(m["phase"], m["preset"]) for m in mine] == [("medium", "medium")] * 3 + [("recovery", "medium")] * 3
    # the budget's end evaluates the phase like any other end, and the run directory checks out
    fin = [e for e in events(new) if e["event"] == "phase_finished"][-1]
    assert fin["reason"] == "run_budget" and fin["eval"]
    assert cli("status", str(new)).returncode == 0
    # the original run is untouched
    assert json.loads((base / "state.json").read_text())["seed"] == 7


@pytest.mark.parametrize("change, named", [
    (["--set", "phases.soft.preset=medium"], "phases.soft.preset: 'soft'  ->  'medium'"),
    # the branch phase was entered, its penalties in force, when the checkpoint was taken
    (["--set", "phases.medium.penalties.hallucination_penalty=-3"], "phases.medium.penalties.hallucination_penalty"),
    (["--set", "runner.group_size=8"], "runner.group_size: 4  ->  8"),
])
def test_a_branch_refuses_changes_to_what_its_checkpoint_holds(base, change, named):
    new = base.parent / f"b-bad-{change[1].split('=')[0]}"
    p = cli("resume", str(base), "--from-phase", "medium", "--run-dir", str(new), "--no-progress", *change)
    assert p.returncode != 0
    assert named in p.stderr and "does not fit the branch checkpoint" in p.stderr and "Traceback" not in p.stderr
    assert not new.exists() or not any(new.iterdir())
