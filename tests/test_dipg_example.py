"""The main job, shortened: `curriculum run examples/dipg.toml` (cpu profile, real Tunix on the
tiny Gemma 3) end to end, as a user runs it from the README, with fewer steps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from curriculum.events import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

SHORT = [
    "--set", "phases.sft.max_steps=40",
    "--set", "phases.soft.max_steps=6",
    "--set", "phases.medium.max_steps=3",
    "--set", "phases.recovery.max_steps=3",
    "--set", "data.num_items=300",
    "--set", "data.eval_items=12",
    "--set", "data.fresh_items=100",       # 6 + 3 + 3 GRPO steps of 8 prompts
    "--set", "data.fresh_eval_items=0",    # the 12 held-out items only
]


def test_shortened_default_run(tmp_path):
    rd = tmp_path / "run"
    env = dict(os.environ, WANDB_MODE="offline")
    p = subprocess.run(
        [sys.executable, "-m", "curriculum.cli", "run", "examples/dipg.toml", *SHORT, "--run-dir", str(rd)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )
    assert p.returncode == 0, p.stderr[-4000:]
    # the per-phase summary table is printed at the end
    assert "sft" in p.stdout and "soft" in p.stdout and "safe" in p.stdout
    ev, probs = read_jsonl(rd / "events.jsonl")
    assert not probs
    names = [e["event"] for e in ev]
    assert names[0] == "run_started" and names[-1] in ("run_finished", "checkpoint_saved")
    assert "run_finished" in names
    fin = {e["phase"]: e for e in ev if e["event"] == "phase_finished"}
    assert fin["sft"]["steps"] == 40
    sft_eval = fin["sft"]["eval"]
    assert sft_eval["n_items"] >= 10
    for k in ("safe_rate", "hallucination_rate", "format_error_rate", "refusal_rate", "consistency_rate"):
        assert 0.0 <= sft_eval[k] <= 1.0 and sft_eval[f"{k}_lo"] <= sft_eval[k] <= sft_eval[f"{k}_hi"]
    assert fin["soft"]["steps"] <= 6
    # the runner's own structured lines land in events.jsonl too, tagged as such
    assert any(e.get("source") == "runner" and e["event"] == "tunix_runner_opened" for e in ev)
    # checkpoints: one per phase start, never pruned, plus the final one
    ck = sorted(p.name for p in (rd / "checkpoints").iterdir())
    assert "0000-sft-start" in ck and "0001-soft-start" in ck and "final" in ck
    # wandb offline, under the run dir, no key or network needed
    assert list((rd / "wandb").glob("offline-run-*"))
    # the report a person reads
    img = mpimg.imread(rd / "report.png")
    assert img.shape[0] >= 800 and img.shape[1] >= 1200
    md = (rd / "report.md").read_text()
    assert "sft" in md and "soft" in md and "report.png" in md
    st = subprocess.run([sys.executable, "-m", "curriculum.cli", "status", str(rd)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)
    assert st.returncode == 0 and "status: finished" in st.stdout
