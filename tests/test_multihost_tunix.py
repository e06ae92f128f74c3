"""The Tunix runner on two real JAX processes (CPU, gloo): the tiny Gemma 3 sharded across both
processes trains SFT then GRPO through `curriculum run`; orbax checkpoints are saved
collectively; a SIGKILL of the pod mid-GRPO and a `curriculum resume` on both processes
reproduce the uninterrupted run step for step (loss, rewards, KL)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from test_multihost import _jsonl, _process_lines, _start, _wait

pytestmark = pytest.mark.slow

SHORT = [
    "--set", "phases.sft.max_steps=4",
    "--set", "phases.soft.max_steps=3",
    "--set", "data.num_items=200",
    "--set", "data.eval_items=4",
    "--set", "data.fresh_items=40",
    "--set", "data.fresh_eval_items=0",
    "--set", "run.checkpoint_every=2",
    "--no-progress", "--no-report",
]


def _run_args(run_dir: Path) -> list[str]:
    return ["run", "examples/dipg.toml", *SHORT, "--run-dir", str(run_dir)]


def _steps(run_dir: Path) -> list[dict]:
    out = []
    for r in _jsonl(run_dir / "metrics.jsonl"):
        r["metrics"].pop("step_time", None)  # wall-clock time, the one thing that may differ
        out.append(r)
    return out


def test_tunix_on_two_processes_trains_checkpoints_and_resumes_exactly(tmp_path):
    full = tmp_path / "full"
    outs = _wait(_start([_run_args(full)] * 2), timeout=900)
    for rc, _, err in outs:
        assert rc == 0, err[-3000:]
    lines = _process_lines(outs)
    assert lines[0] == lines[1] and "sft->soft@4" in lines[0], lines
    ref = _steps(full)
    assert [r["phase"] for r in ref] == ["sft"] * 4 + ["soft"] * 3
    assert all(r["metrics"]["loss"] > 0 for r in ref[:4])
    assert all("reward_mean" in r["metrics"] and "kl" in r["metrics"] for r in ref[4:])
    # the weights are sharded across the processes, and orbax saved them collectively
    ck = full / "checkpoints" / "0001-soft-start" / "runner"
    assert (ck / "runner.json").exists() and (ck / "arrays").is_dir()
    fin = {e["phase"]: e for e in _jsonl(full / "events.jsonl") if e["event"] == "phase_finished"}
    assert fin["sft"]["eval"]["n_items"] == fin["soft"]["eval"]["n_items"] > 0  # evaluation ran on both processes

    # both processes killed at GRPO step 2 of soft (step 6), before its periodic checkpoint
    crashed = tmp_path / "crashed"
    procs = _start([_run_args(crashed)] * 2, extra_env={0: {"CURRICULUM_CRASH_AT": "step:6"},
                                                       1: {"CURRICULUM_CRASH_AT": "step:6"}})
    outs = _wait(procs, timeout=900)
    assert [rc for rc, _, _ in outs] == [-signal.SIGKILL] * 2
    st = json.loads((crashed / "state.json").read_text())
    assert st["status"] == "running" and st["last_checkpoint"] == "checkpoints/0001-soft-start"

    outs = _wait(_start([["resume", str(crashed), "--no-progress", "--no-report"]] * 2), timeout=900)
    for rc, _, err in outs:
        assert rc == 0, err[-3000:]
    assert _process_lines(outs) == lines
    assert _steps(crashed) == ref
