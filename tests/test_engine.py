"""The engine end to end on the simulated and replay runners (real files, real CLI)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path


from curriculum.cli import main
from curriculum.events import read_jsonl
from curriculum.state import load_state

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples"


def _traces():
    spec = importlib.util.spec_from_file_location("report_traces", EX / "report_traces.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


traces = _traces()
# replay the report's 300-step blocks (the default cpu profile shortens them for the tiny model)
FULL = ("--set", "phases.medium.max_steps=300", "--set", "phases.recovery.max_steps=300")


def events(run_dir: Path, name: str | None = None) -> list[dict]:
    recs, probs = read_jsonl(run_dir / "events.jsonl")
    assert not probs, probs
    return [r for r in recs if name is None or r["event"] == name]


def run_cli(*args: str) -> int:
    return main([*args])


def test_dryrun_example_escalates_collapses_and_reverts(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    rd = tmp_path / "run"
    assert run_cli("run", str(EX / "dipg_simulated.toml"), "--run-dir", str(rd), "--no-progress", "--no-report") == 0
    tr = events(rd, "phase_transition")
    path = [(t["from_phase"], t["to_phase"], t["reason"]) for t in tr]
    assert path[0] == ("soft", "medium", "strong")
    assert path[1] == ("medium", "recovery", "collapse")
    assert path[2] == ("recovery", "end", "max_steps")
    # the medium phase's model collapses 60 steps in; the revert comes within 40 steps of that
    assert 60 < tr[1]["phase_step"] <= 100
    # every transition carries the evidence and the penalties before/after
    t = tr[1]
    assert t["step"] == tr[0]["step"] + t["phase_step"]
    assert t["evidence"], "a guard-decided transition logs its evidence"
    assert t["penalties_before"]["hallucination_penalty"] == -10
    assert t["penalties_after"]["hallucination_penalty"] == -5
    assert t["preset_before"] == "medium" and t["preset_after"] == "soft"
    fin = events(rd, "phase_finished")
    assert [f["phase"] for f in fin] == ["soft", "medium", "recovery"]
    assert all("safe_rate" in f["eval"] and "safe_rate_lo" in f["eval"] for f in fin)
    assert events(rd, "run_finished")[0]["reason"] == "max_steps"
    st = load_state(rd / "state.json")
    assert st.status == "finished"
    # metrics.jsonl has one line per step, numbered 1..N
    recs, _ = read_jsonl(rd / "metrics.jsonl")
    assert [r["step"] for r in recs] == list(range(1, st.global_step + 1))


def test_replay_collapse_reverts_within_40_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    for seed in range(5):
        trace = traces.write_trace(tmp_path / f"c{seed}.jsonl", traces.collapse_trace(seed, healthy_steps=100))
        rd = tmp_path / f"run{seed}"
        rc = run_cli("run", str(EX / "dipg.toml"), "--replay", str(trace), "--start-phase", "medium", *FULL,
                     "--run-dir", str(rd), "--no-progress", "--no-report")
        assert rc == 0
        tr = events(rd, "phase_transition")
        assert tr[0]["from_phase"] == "medium" and tr[0]["to_phase"] == "recovery", tr[0]
        assert tr[0]["reason"] == "collapse"
        assert 100 < tr[0]["step"] <= 140, f"seed {seed}: reverted at step {tr[0]['step']}"


def test_replay_healthy_traces_never_revert(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    for seed in range(10):
        trace = traces.write_trace(tmp_path / f"h{seed}.jsonl", traces.healthy_trace(seed))
        rd = tmp_path / f"run{seed}"
        rc = run_cli("run", str(EX / "dipg.toml"), "--replay", str(trace), "--start-phase", "medium", *FULL,
                     "--run-dir", str(rd), "--no-progress", "--no-report")
        assert rc == 0
        tr = events(rd, "phase_transition")
        assert all(t["reason"] != "collapse" for t in tr), f"seed {seed}: false revert {tr}"


def test_replay_with_nonfinite_rewards_does_not_crash(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    trace = traces.write_trace(tmp_path / "nf.jsonl", traces.nonfinite_trace(0))
    rd = tmp_path / "run"
    assert run_cli("run", str(EX / "dipg.toml"), "--replay", str(trace), "--start-phase", "medium", *FULL,
                   "--run-dir", str(rd), "--no-progress", "--no-report") == 0
    nf = events(rd, "nonfinite_metrics")
    assert nf, "non-finite rewards are counted and logged"
    st = load_state(rd / "state.json")
    assert st.nonfinite_steps >= 30
    assert st.status == "finished" and st.finish_reason == "runner_exhausted"
    assert all(t["reason"] != "collapse" for t in events(rd, "phase_transition"))


def test_status_graph_and_branch(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    rd = tmp_path / "run"
    assert run_cli("run", str(EX / "dipg_simulated.toml"), "--run-dir", str(rd), "--no-progress", "--no-report") == 0
    capsys.readouterr()
    assert run_cli("status", str(rd)) == 0
    out = capsys.readouterr().out
    assert "status: finished" in out and "medium -> recovery" in out and "integrity: ok" in out

    assert run_cli("graph", str(EX / "dipg_simulated.toml")) == 0
    g = capsys.readouterr().out
    assert g.startswith("stateDiagram-v2")
    assert "soft --> medium: strong" in g and "medium --> recovery: collapse" in g and "recovery --> [*]: max_steps" in g

    # branch from the start of `medium` into a new directory; the original is untouched
    before = (rd / "events.jsonl").read_bytes()
    nd = tmp_path / "branch"
    assert run_cli("resume", str(rd), "--from-phase", "medium", "--run-dir", str(nd), "--no-progress", "--no-report") == 0
    assert (rd / "events.jsonl").read_bytes() == before
    a = [(t["from_phase"], t["to_phase"], t["step"]) for t in events(rd, "phase_transition")]
    b = [(t["from_phase"], t["to_phase"], t["step"]) for t in events(nd, "phase_transition")]
    assert a == b, "a deterministic runner replays the same transitions from the medium checkpoint"
    assert events(nd, "run_resumed")


def test_status_detects_damage(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    rd = tmp_path / "run"
    assert run_cli("run", str(EX / "dipg_simulated.toml"), "--run-dir", str(rd), "--no-progress", "--no-report") == 0
    capsys.readouterr()
    (rd / "state.json").write_text('{"phase": "soft", "spec_dig')
    assert run_cli("status", str(rd)) == 1
    assert "state.json is damaged" in capsys.readouterr().out
    shutil.rmtree(rd / "checkpoints" / "0001-medium-start" / "runner")
    assert run_cli("status", str(rd)) == 1
    assert "0001-medium-start is damaged" in capsys.readouterr().out


def test_set_and_validate_cli(tmp_path, capsys):
    assert run_cli("validate", str(EX / "dipg_simulated.toml")) == 0
    assert "valid" in capsys.readouterr().out
    assert run_cli("validate", str(EX / "dipg_simulated.toml"), "--set", "phases.soft.preset=sofft") == 2
    err = capsys.readouterr().err
    assert "phases.soft.preset" in err and "did you mean 'soft'?" in err and "Traceback" not in err


def test_run_dir_refuses_to_overwrite(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    rd = tmp_path / "run"
    rd.mkdir()
    (rd / "x").write_text("keep me")
    assert run_cli("run", str(EX / "dipg_simulated.toml"), "--run-dir", str(rd), "--no-progress") == 1
    assert "already holds files" in capsys.readouterr().err
    assert (rd / "x").read_text() == "keep me"


def test_bad_replay_trace_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1, "rewards": [1, 2], "group_size": 2}\n{"step": 2, "rewards": "x", "group_size": 2}\n')
    assert run_cli("run", str(EX / "dipg_simulated.toml"), "--replay", str(bad), "--run-dir", str(tmp_path / "r")) == 1
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err and "rewards" in err
    assert not (tmp_path / "r").exists()


def test_pid_controller_scales_penalties(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    spec = tmp_path / "pid.toml"
    spec.write_text(
        """
[run]
name = "pid"
[runner]
kind = "simulated"
[runner.behaviour.soft]
weights = { perfect = 0.4, hallucination = 0.4, wrong = 0.2 }
drift = { hallucination = -0.004 }
[phases.soft]
kind = "grpo"
preset = "soft"
max_steps = 120
controller = { type = "pid", metric = "hallucination_rate", target = 0.1, kp = 1.0, ki = 0.05, lam_max = 1.0, window = 10 }
"""
    )
    rd = tmp_path / "run"
    assert run_cli("run", str(spec), "--run-dir", str(rd), "--no-progress", "--no-report") == 0
    recs, _ = read_jsonl(rd / "metrics.jsonl")
    scales = [r["penalty_scale"] for r in recs]
    assert max(scales) > 1.2, "violated constraint raises the penalty scale"
    assert all(1.0 <= s <= 2.0 for s in scales), "lambda stays in [0, lam_max]"
    assert scales[-1] < max(scales), "scale comes back down once the constraint holds"
    assert events(rd, "penalties_changed")


def test_custom_python_guards_example(tmp_path, monkeypatch):
    """examples/custom_guard.toml: guards written in Python, registered by name, used in TOML."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    rd = tmp_path / "run"
    assert run_cli("run", str(EX / "custom_guard.toml"), "--run-dir", str(rd), "--no-progress", "--no-report") == 0
    tr = events(rd, "phase_transition")
    assert [(t["from_phase"], t["to_phase"], t["reason"]) for t in tr][:2] == [
        ("soft", "medium", "steady"),
        ("medium", "recovery", "hallucinating"),
    ]
    # the evidence names the custom function's term and its value
    assert any("top_reward_share(20)" in k for k in tr[0]["evidence"].get("terms", {}))
    assert tr[1]["phase_step"] >= 20  # min_dwell respected
