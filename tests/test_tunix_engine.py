"""Real Tunix SFT and GRPO steps on the tiny Gemma 3 model, driven by the engine through the CLI:
a guard-decided transition, a penalty change visible in the rewards, a SIGKILL mid-GRPO and a
resume that reproduces the uninterrupted run (same transitions, steps, metrics and weights)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from curriculum.events import read_jsonl

sys.path.insert(0, os.path.dirname(__file__))
import tunix_util as tu  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

SPEC = """
[run]
name = "tiny-engine"
seed = 5
checkpoint_every = 3
progress = false
wandb = "disabled"

[runner]
kind = "tunix"

[model]
preset = "tiny"
num_layers = 2
embed_dim = 64
hidden_dim = 128
num_heads = 2
head_dim = 32

[data]
num_items = 120
eval_items = 6

[presets.harsh]
base = "soft"
format_mismatch_penalty = -25

[phases.sft]
kind = "sft"
max_steps = 4
train = { batch_size = 4, max_seq_len = 160 }
eval = { enabled = false }

[phases.soft]
kind = "grpo"
preset = "soft"
max_steps = 10
train = { batch_size = 1, num_generations = 2, max_new_tokens = 12 }
eval = { enabled = false }

[phases.harsh]
kind = "grpo"
preset = "harsh"
max_steps = 3
train = { batch_size = 1, num_generations = 2, max_new_tokens = 12 }
eval = { num_items = 4, max_new_tokens = 12 }

# decided by a guard on live metrics: two GRPO steps seen in this phase
[[transitions]]
from = "soft"
to = "harsh"
when = "count(reward_mean, 2) >= 2"
"""


def _env(**extra: str) -> dict[str, str]:
    return tu.env(**extra)


def cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return tu.cli(*args, env_vars=env)


def final_weights(rd: Path) -> dict[str, np.ndarray]:
    return tu.checkpoint_weights(rd / "checkpoints" / "final")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    # step 7 is the harsh phase's first step: after the harsh boundary checkpoint (step 6)
    return tu.straight_and_killed(tmp_path_factory.mktemp("tunix-engine"), SPEC, "step:7")


def _trans(rd):
    ev, probs = read_jsonl(rd / "events.jsonl")
    assert not probs
    return [(e["from_phase"], e["to_phase"], e["step"], e["reason"]) for e in ev if e["event"] == "phase_transition"]


def test_guard_transition_and_penalty_change_in_rewards(runs):
    straight, _ = runs
    assert _trans(straight) == [
        ("sft", "soft", 4, "max_steps"),
        ("soft", "harsh", 6, "soft->harsh"),
        ("harsh", "end", 9, "max_steps"),
    ]
    met, _ = read_jsonl(straight / "metrics.jsonl")
    sft = [m for m in met if m["phase"] == "sft"]
    assert len(sft) == 4 and all(np.isfinite(m["metrics"]["loss"]) for m in sft)
    soft = [m["metrics"] for m in met if m["phase"] == "soft"]
    harsh = [m["metrics"] for m in met if m["phase"] == "harsh"]
    assert len(soft) == 2 and len(harsh) == 3
    # 4 SFT steps leave the model unable to write the format: every completion is a format
    # mismatch, paid the preset in force: -10 under soft, -25 once the guard moved to harsh
    assert all(m["reward_max"] == -10.0 for m in soft)
    assert all(m["reward_max"] == -25.0 for m in harsh)
    assert all(m["format_error_rate"] == 1.0 for m in soft + harsh)
    for m in soft + harsh:
        assert np.isfinite(m["kl"]) and np.isfinite(m["loss"]) and m["completion_length"] > 0
    ev, _ = read_jsonl(straight / "events.jsonl")
    fin = [e for e in ev if e["event"] == "phase_finished" and e["phase"] == "harsh"][0]
    assert fin["eval"]["n_items"] == 4 and fin["eval"]["format_error_rate"] == 1.0
    # what the model said at that evaluation, one line per item, scored under the harsh preset
    evals = sorted((straight / "evals").iterdir())
    assert [p.name for p in evals] == ["step-0000009-harsh.jsonl"]
    rows = [json.loads(line) for line in evals[0].read_text().splitlines()]
    assert len(rows) == 4 and len({r["id"] for r in rows}) == 4
    assert all(r["reward"] == -25.0 and r["format_error_rate"] == 1.0 for r in rows)
    assert all(isinstance(r["response"], str) and r["user"] for r in rows)


def test_kill_and_resume_reproduces_the_run(runs):
    straight, killed = runs
    assert _trans(killed) == _trans(straight)
    tu.assert_same_run(straight, killed, 9)
    st = json.loads((killed / "state.json").read_text())
    assert st["status"] == "finished" and st["global_step"] == 9
