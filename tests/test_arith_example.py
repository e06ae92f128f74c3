"""The arithmetic example (your own reward, your own JSONL data, a mixture) through the real
Tunix runner, shortened with --set overrides: SFT, GRPO on the easy set, a guard-decided move to
the easy/hard mixture under the strict preset, evaluations scored by the example's reward."""

from __future__ import annotations

import json
import math
import os
import sys

import pytest

from curriculum.events import read_jsonl

sys.path.insert(0, os.path.dirname(__file__))
import tunix_util as tu  # noqa: E402

pytestmark = pytest.mark.slow

SHORT = [
    "--set", "model.num_layers=2", "--set", "model.embed_dim=64", "--set", "model.hidden_dim=128",
    "--set", "model.num_heads=2",
    "--set", "runner.record_rewards=true",
    "--set", "phases.sft.max_steps=4", "--set", "phases.sft.eval.num_items=4",
    "--set", "phases.easy.max_steps=6", "--set", "phases.easy.min_dwell=0",
    "--set", "phases.easy.train.batch_size=2", "--set", "phases.hard.train.batch_size=2",
    "--set", "phases.easy.train.num_generations=2", "--set", "phases.hard.train.num_generations=2",
    "--set", "phases.hard.max_steps=3", "--set", "phases.hard.eval.num_items=6",
    # decided by the guard on live metrics: two GRPO steps seen in the easy phase
    "--set", 'guards.easy_mastered.when="count(correct_rate, 2) >= 2"', "--set", "guards.easy_mastered.patience=1",
]


def test_arith_example_short_run(tmp_path):
    rd = tmp_path / "run"
    r = tu.cli("run", "examples/arith.toml", "--run-dir", str(rd), "--no-progress", *SHORT)
    assert r.returncode == 0, r.stderr[-3000:]
    ev, probs = read_jsonl(rd / "events.jsonl")
    assert not probs
    tr = [(e["from_phase"], e["to_phase"], e["reason"], e["step"]) for e in ev if e["event"] == "phase_transition"]
    assert tr[0][:3] == ("sft", "easy", "max_steps")
    assert tr[1][:2] == ("easy", "hard") and tr[1][2] != "max_steps" and tr[1][3] == 6  # 4 SFT + 2 easy steps
    started = {e["phase"]: e for e in ev if e["event"] == "phase_started"}
    assert started["hard"]["preset"] == "strict"

    ms, _ = read_jsonl(rd / "metrics.jsonl")
    grpo = [m for m in ms if "reward_mean" in json.dumps(m)]
    assert len(grpo) == 5
    for m in grpo:
        vals = m.get("metrics", m)
        for k in ("correct_rate", "format_rate", "top_reward_rate"):
            assert 0.0 <= vals[k] <= 1.0, (k, vals)  # the reward's outcomes, its own maximum

    # every reward is one the example's reward can pay under the preset in force
    rec = [json.loads(x) for x in (rd / "rewards.jsonl").read_text().splitlines()]
    assert [x["phase"] for x in rec] == ["easy"] * 2 + ["hard"] * 3
    for x in rec:
        low = -0.5 if x["phase"] == "easy" else -2.0
        assert all(low - 1e-9 <= v <= 3.0 + 1e-9 for v in x["rewards"]), x

    fin = [e for e in ev if e["event"] == "phase_finished" and e.get("eval")]
    assert [e["phase"] for e in fin] == ["sft", "hard"]
    last = fin[-1]["eval"]
    assert last["n_items"] == 6
    for k in ("correct_rate", "format_rate", "reward_mean"):
        assert math.isfinite(last[k]) and last[f"{k}_lo"] <= last[k] <= last[f"{k}_hi"]
    report = (rd / "report.md").read_text()
    assert "correct" in report and "| sft → easy |" in report
