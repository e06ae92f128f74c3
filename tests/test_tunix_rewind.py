"""A rewind on the real Tunix runner (tiny Gemma 3): `rewind = true` on a transition restores the
policy from the newest checkpoint taken before the estimated onset, bit for bit, and a SIGKILL
during the rewind resumes to the same run."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from curriculum.events import read_jsonl

sys.path.insert(0, os.path.dirname(__file__))
import tunix_util as tu  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# SFT changes the weights at every step (GRPO on a 4-step model mostly sees identical
# format-error rewards, so its updates are near zero): the rewind is tested where weights move.
# The guard fires at SFT step 5 (global 5); the newest checkpoint before it is step 4.
SPEC = """
[run]
name = "tiny-rewind"
seed = 3
checkpoint_every = 2
keep_checkpoints = 10
progress = false
wandb = "disabled"

[runner]
kind = "tunix"
record_rewards = true

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

[phases.sft]
kind = "sft"
max_steps = 8
train = { batch_size = 4, max_seq_len = 160 }
eval = { enabled = false }

[phases.soft]
kind = "grpo"
preset = "soft"
max_steps = 2
train = { batch_size = 1, num_generations = 2, max_new_tokens = 12 }
eval = { enabled = false }

[[transitions]]
from = "sft"
to = "soft"
when = "count(loss, 5) >= 5"
rewind = true
"""


weights = tu.checkpoint_weights


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tu.straight_and_killed(tmp_path_factory.mktemp("tunix-rewind"), SPEC, "rewind:1")


def test_rewind_restores_the_checkpoint_weights_bit_for_bit(runs):
    straight, _ = runs
    events, problems = read_jsonl(straight / "events.jsonl")
    assert not problems
    trans = [e for e in events if e["event"] == "phase_transition"]
    assert (trans[0]["from_phase"], trans[0]["to_phase"], trans[0]["step"]) == ("sft", "soft", 5)
    assert trans[0]["rewind"]["checkpoint"] == "checkpoints/step-0000004"
    done = [e for e in events if e["event"] == "policy_rewound"]
    assert len(done) == 1 and done[0]["discarded_steps"] == [5, 5] and done[0]["into_phase"] == "soft"
    ck = straight / "checkpoints"
    target, start = weights(ck / "step-0000004"), weights(ck / "0001-soft-start")
    assert target.keys() == start.keys() and len(target) > 5
    for k in target:  # the soft phase starts from the step-4 policy exactly
        assert np.array_equal(target[k], start[k]), k
    # ... which is not what five SFT steps had made: SFT moves the weights every step
    earlier = weights(ck / "step-0000002")
    assert any(not np.array_equal(earlier[k], target[k]) for k in target)
    state = json.loads((straight / "state.json").read_text())
    assert state["status"] == "finished" and state["global_step"] == 7
    assert len(state["rewinds"]) == 1 and state["pending_rewind"] is None


def test_kill_during_the_rewind_resumes_to_the_same_run(runs):
    straight, killed = runs
    tu.assert_same_run(straight, killed, 7)
    ev, problems = read_jsonl(killed / "events.jsonl")
    assert not problems
    assert len([e for e in ev if e["event"] == "policy_rewound"]) == 1  # the resumed run's, once


def test_recorded_rewards_are_a_replay_trace_and_survive_the_resume(runs):
    from runners.replay import load_trace

    straight, killed = runs
    a, b = load_trace(straight / "rewards.jsonl"), load_trace(killed / "rewards.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [6, 7]  # the GRPO steps, once each
    assert [r["rewards"] for r in a] == [r["rewards"] for r in b]
    assert all(len(r["rewards"]) == 2 and r["group_size"] == 2 for r in a)
    assert all({"groups_flat", "groups_spread"} <= set(r["metrics"]) for r in a)


def test_compare_on_tunix_run_directories(runs, tmp_path):
    straight, killed = runs
    p = tu.cli("compare", str(straight), str(killed), "--out", str(tmp_path / "cmp"))
    assert p.returncode == 0, p.stderr[-2000:]
    md = (tmp_path / "cmp" / "compare.md").read_text()
    for name in ("straight", "killed"):
        row = next(line for line in md.splitlines() if line.startswith("| ") and f": {name} |" in line)
        assert "sft (5), soft (2)" in row and "sft->soft@5 (sft->soft)" in row
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 10_000
