"""Tests for curriculum.report: realistic run directories written line by line, then reported."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from curriculum import report
from curriculum.report import load_run, make_report, summary_table, write_markdown, write_png

SOFT = {
    "correct_synthesis": 20.0,
    "correct_abstention": 30.0,
    "conflict_detection": 20.0,
    "verifiable_trace": 15.0,
    "exact_format": 10.0,
    "no_hallucination": 5.0,
    "hallucination_penalty": -5.0,
    "hallucinated_trace_penalty": -10.0,
    "incorrect_answer_penalty": -5.0,
    "proof_inconsistency_penalty": -5.0,
    "missing_trace_penalty": -5.0,
    "format_mismatch_penalty": -10.0,
}
MEDIUM = dict(
    SOFT,
    hallucination_penalty=-10.0,
    hallucinated_trace_penalty=-15.0,
    incorrect_answer_penalty=-10.0,
    proof_inconsistency_penalty=-10.0,
    missing_trace_penalty=-10.0,
)
PRESETS = {"soft": SOFT, "medium": MEDIUM}


def scaled(table, scale):
    return {k: (v * scale if v < 0 else v) for k, v in table.items()}


class RunWriter:
    """Writes metrics.jsonl / events.jsonl the way the engine does."""

    def __init__(self, run_dir: Path, seed: int = 0):
        self.dir = run_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics = open(run_dir / "metrics.jsonl", "w")
        self.events = open(run_dir / "events.jsonl", "w")
        self.step = 0
        self.t = 0
        self.rng = random.Random(seed)

    def event(self, name: str, **fields):
        self.t += 7
        ts = f"2026-11-22T03:{(self.t // 60) % 60:02d}:{self.t % 60:02d}.000000Z"
        self.events.write(json.dumps({"event": name, "level": "info", "timestamp": ts, **fields}) + "\n")

    def step_line(self, phase, phase_step, preset, metrics, scale=1.0):
        self.step += 1
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        line = {"step": self.step, "phase": phase, "phase_step": phase_step, "preset": preset,
                "penalty_scale": scale, "metrics": clean}
        self.metrics.write(json.dumps(line) + "\n")

    def sft(self, n):
        for i in range(1, n + 1):
            self.step_line("sft", i, None, {"loss": 2.5 * math.exp(-i / 15) + 0.4 + self.rng.gauss(0, 0.03),
                                            "learning_rate": 2e-5})

    def grpo(self, phase, n, preset, level, drift, nan_at=(), scale=None, collapse_from=None):
        for i in range(1, n + 1):
            mu = level + drift * i + self.rng.gauss(0, 2.0)
            if collapse_from is not None and i >= collapse_from:
                mu = level - 25 - 1.5 * (i - collapse_from)
            spread = max(5.0, 30 - 0.1 * i)
            m = {
                "reward_mean": mu, "reward_median": mu + 1, "reward_std": spread / 3,
                "reward_min": mu - spread, "reward_max": mu + spread * 0.8, "reward_range": spread * 1.8,
                "zero_spread_frac": 0.1, "top_reward_rate": 0.05, "nonfinite_rewards": 0.0,
                "safe_rate": 0.6, "hallucination_rate": 0.2, "refusal_rate": 0.1, "consistency_rate": 0.7,
                "format_error_rate": 0.05, "correct_rate": 0.5, "abstention_accuracy": 0.6,
                "loss": 0.1, "kl": 0.01 * i, "grad_norm": 1.0, "completion_length": 200.0, "learning_rate": 1e-6,
            }
            if i in nan_at:
                for k in ("reward_mean", "reward_median", "reward_std", "reward_min", "reward_max", "reward_range"):
                    m[k] = float("nan")
                m["nonfinite_rewards"] = 16.0
                m["grad_norm"] = float("inf")
            self.step_line(phase, i, preset, m, scale=(scale(i) if scale else 1.0))

    def close(self, torn=True):
        if torn:
            self.metrics.write('{"step": 99999, "phase": "medium", "metr')
            self.events.write('{"event": "checkpoint_saved", "step": 2')
        self.metrics.close()
        self.events.close()


def ev_eval(safe, hall, refusal, consist, fmt_err, reward, n=128):
    def ci(p):
        z = 1.96
        d = 1 + z * z / n
        c = (p + z * z / (2 * n)) / d
        h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
        return round(c - h, 4), round(c + h, 4)

    out = {"n_items": n}
    for k, v in (("safe_rate", safe), ("hallucination_rate", hall), ("refusal_rate", refusal),
                 ("consistency_rate", consist), ("format_error_rate", fmt_err)):
        lo, hi = ci(v)
        out[k], out[k + "_lo"], out[k + "_hi"] = v, lo, hi
    out["reward_mean"], out["reward_mean_lo"], out["reward_mean_hi"] = reward, reward - 3, reward + 3
    return out


def build_full_run(run_dir: Path, torn: bool = True) -> Path:
    """sft(40) -> soft(80, guard) -> medium(50, collapse) -> recovery(30, max_steps) -> medium(40)."""
    w = RunWriter(run_dir)
    w.event("run_started", spec="examples/dipg_safety.toml", profile="smoke", seed=7,
            phases=["sft", "soft", "medium", "recovery"], resumed=False)
    w.event("phase_started", phase="sft", kind="sft", ordinal=0, step=0, preset=None, penalties={})
    w.sft(40)
    w.event("phase_finished", phase="sft", steps=40, step=40,
            eval=ev_eval(0.31, 0.42, 0.05, 0.40, 0.30, -4.0))
    w.event("phase_transition", from_phase="sft", to_phase="soft", step=40, phase_step=40, reason="max_steps",
            guard_kind=None, evidence={}, metrics={"loss": 0.45}, penalties_before={}, penalties_after=SOFT,
            preset_before=None, preset_after="soft")
    w.event("phase_started", phase="soft", step=40, preset="soft", penalties=SOFT)
    w.grpo("soft", 80, "soft", level=5.0, drift=0.3, nan_at=(33,))
    w.event("checkpoint_saved", step=100, path="checkpoints/step-000100")
    w.event("guard_nonfinite", phase="soft", step=73, metric="reward_mean", guard="soft_ready")
    w.event("phase_finished", phase="soft", steps=80, step=120,
            eval=ev_eval(0.58, 0.22, 0.08, 0.66, 0.09, 21.0))
    w.event("phase_transition", from_phase="soft", to_phase="medium", step=120, phase_step=80,
            reason="soft_ready", guard_kind="promote",
            evidence={"reward_mean.window_mean": 27.41, "reward_mean.threshold": 25.0,
                      "zero_spread_frac": 0.12, "window": {"size": 20, "filled": 20}},
            metrics={"reward_mean": 28.2, "safe_rate": 0.61}, penalties_before=SOFT, penalties_after=MEDIUM,
            preset_before="soft", preset_after="medium")
    w.event("phase_started", phase="medium", step=120, preset="medium", penalties=MEDIUM)
    w.grpo("medium", 25, "medium", level=18.0, drift=0.1)
    # a PID controller scales the penalties (the engine logs values in force = base x scale)
    changed = scaled(MEDIUM, 1.2)
    w.event("penalties_changed", phase="medium", step=145, before=MEDIUM, after=changed, reason="pid",
            measurement=0.31, penalty_scale=1.2)
    w.grpo("medium", 25, "medium", level=20.0, drift=0.0, collapse_from=12, scale=lambda i: 1.2)
    w.event("nonfinite_metrics", level="warning", phase="medium", step=150, metrics=["grad_norm"],
            nonfinite_rewards=0.0, total_steps_affected=4, policy="skip")
    # fix phase_step continuity is not needed for the report
    w.event("phase_finished", phase="medium", steps=50, step=170,
            eval=ev_eval(0.40, 0.35, 0.30, 0.50, 0.12, 2.0))
    w.event("phase_transition", from_phase="medium", to_phase="recovery", step=170, phase_step=50,
            reason="collapse", guard_kind="rollback",
            evidence={"reward_mean.drop": -31.7, "reward_mean.drop_threshold": -20.0,
                      "refusal_rate": 0.41, "refusal_rate.max": 0.3, "score": 14.01, "h": 12.0,
                      "signals": {"reward_range": {"value": 45.0, "baseline_mean": 67.5, "z": 1.667},
                                  "zero_spread_frac": {"value": 0.875, "baseline_mean": 0.0725, "z": 8.55}}},
            metrics={"reward_mean": -12.5, "refusal_rate": 0.41}, penalties_before=changed, penalties_after=SOFT,
            preset_before="medium", preset_after="soft")
    w.event("phase_started", phase="recovery", step=170, preset="soft", penalties=SOFT)
    w.grpo("recovery", 30, "soft", level=0.0, drift=0.5, nan_at=(5, 6))
    w.event("phase_finished", phase="recovery", steps=30, step=200,
            eval=ev_eval(0.55, 0.25, 0.12, 0.62, 0.07, 15.0))
    w.event("phase_transition", from_phase="recovery", to_phase="medium", step=200, phase_step=30,
            reason="max_steps", guard_kind=None, evidence={}, metrics={"reward_mean": 14.0},
            penalties_before=SOFT, penalties_after=MEDIUM, preset_before="soft", preset_after="medium")
    w.event("phase_started", phase="medium", step=200, preset="medium", penalties=MEDIUM)
    w.grpo("medium", 40, "medium", level=15.0, drift=0.25)
    w.event("phase_finished", phase="medium", steps=40, step=240, reason="max_steps",
            eval=ev_eval(0.71, 0.12, 0.10, 0.78, 0.04, 24.0))
    w.event("phase_transition", from_phase="medium", to_phase="end", step=240, phase_step=40,
            reason="max_steps", guard_kind=None, evidence={}, metrics={"reward_mean": 25.0},
            penalties_before=MEDIUM, penalties_after={}, preset_before="medium", preset_after=None)
    w.event("run_finished", step=240, reason="max_steps", phases=["sft", "soft", "medium", "recovery", "medium"],
            transitions=5, nonfinite_steps=4)
    w.close(torn=torn)
    return run_dir


@pytest.fixture
def full_run(tmp_path) -> Path:
    return build_full_run(tmp_path / "run")


# ------------------------------------------------------------------------------------------


def test_load_run_parses_everything(full_run):
    run = load_run(full_run)
    assert len(run.steps) == 240  # torn metrics line skipped
    assert [s.step for s in run.steps] == list(range(1, 241))
    assert [v.name for v in run.visits] == ["sft", "soft", "medium", "recovery", "medium"]
    assert [v.n_steps for v in run.visits] == [40, 80, 50, 30, 40]
    assert [t.reason for t in run.transitions] == ["max_steps", "soft_ready", "collapse", "max_steps", "max_steps"]
    assert run.transitions[-1].to_phase == "end"
    assert run.finished and run.finished["reason"] == "max_steps"
    assert any("torn" in w and "metrics.jsonl" in w for w in run.warnings)
    assert any("torn" in w and "events.jsonl" in w for w in run.warnings)
    # NaN written as null -> NaN
    assert math.isnan(run.visits[1].steps[32].metrics["reward_mean"])
    # SFT has no reward and no penalty level
    assert not run.visits[0].has_reward and run.visits[0].is_sft
    assert all(math.isnan(s.penalty_level) for s in run.visits[0].steps)
    # soft: -10; medium: -15; after the PID change (step 145) the scale multiplies, once
    assert run.visits[1].steps[0].penalty_level == pytest.approx(-10.0)
    assert run.visits[2].steps[0].penalty_level == pytest.approx(-15.0)
    s = run.visits[2].steps[-1]
    assert s.penalty_scale == pytest.approx(1.2)
    assert s.penalty_level == pytest.approx(-18.0)
    assert run.visits[3].steps[0].penalty_level == pytest.approx(-10.0)
    assert len(run.nonfinite_events) == 2


def test_make_report_writes_files(full_run):
    import matplotlib.image as mpimg

    png, md = make_report(full_run)
    assert png == full_run / "report.png" and md == full_run / "report.md"
    assert png.is_file() and md.is_file()
    img = mpimg.imread(png)
    assert img.shape[0] == 1000 and img.shape[1] == 1600
    assert img.shape[2] in (3, 4)
    assert img.std() > 0.05  # not blank


def test_markdown_contents(full_run):
    _, md = make_report(full_run)
    text = md.read_text()
    assert "report.png" in text
    # every transition with its reason and evidence values
    run = load_run(full_run)
    for t in run.transitions:
        assert f"step {t.step}: {t.from_phase} → {t.to_phase}" in text
        assert f"reason: **{t.reason}**" in text
    for s in ("reward_mean.window_mean = 27.41", "reward_mean.threshold = 25", "zero_spread_frac = 0.12",
              "window.size = 20", "reward_mean.drop = -31.7", "reward_mean.drop_threshold = -20",
              "refusal_rate = 0.41", "refusal_rate.max = 0.3", "score = 14.01", "h = 12"):
        assert s in text, s
    # nested per-signal evidence (the collapse detector) as a table
    assert "| zero_spread_frac | 0.875 | 0.0725 | 8.55 |" in text
    assert "| name | value | baseline_mean | z |" in text
    # per-phase rows
    table_rows = [ln for ln in text.splitlines() if ln.startswith("| ") and ln[2:3].isdigit()]
    for i, name in enumerate(["sft", "soft", "medium", "recovery", "medium"], start=1):
        assert any(ln.startswith(f"| {i} | {name} |") for ln in table_rows), name
    # eval rates with CIs
    assert "0.58 [0.49, 0.66]" in text  # soft safe rate with its interval
    # change from end of sft to end of run
    assert "Change in evaluation rates" in text
    assert "| safe_rate | 0.31 [" in text and "| 0.71 [" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("| safe_rate |"))
    assert "+0.40 [" in line
    # penalties changed and preset changes
    assert "hallucination_penalty -10 → -12" in text  # the PID change (x1.2)
    assert "| 5 | 240 | medium → end | max_steps |" in text
    assert "preset: medium → soft" in text
    assert "torn" in text


def test_summary_table_lists_each_phase(full_run):
    run = load_run(full_run)
    table = summary_table(run)
    lines = table.splitlines()
    for name in ("sft", "soft", "medium", "recovery"):
        assert any(name in ln for ln in lines[2:]), name
    assert sum(1 for ln in lines if " medium " in ln) == 2
    assert "safe" in lines[0] and "halluc." in lines[0] and "refusal" in lines[0] and "consist." in lines[0]
    assert "0.71 [" in table  # final safe rate with CI
    assert "finished (max_steps) at step 240" in table
    # the change from the end of SFT to the end of the run, with its Newcombe interval
    change = next(ln for ln in lines if ln.strip().startswith("safe_rate:"))
    assert "0.31 [" in change and "-> 0.71 [" in change and "change +0.40 [" in change
    assert change.endswith("(excludes 0; independent)")  # no per-item rows: independent rates
    assert not any(ln.strip().startswith("grounded_rate:") for ln in lines)  # not in these evaluations


def test_missing_dir_and_files(tmp_path):
    with pytest.raises(report.RunDirError, match="does not exist"):
        load_run(tmp_path / "nope")
    d = tmp_path / "empty"
    d.mkdir()
    with pytest.raises(report.RunDirError, match="metrics.jsonl"):
        load_run(d)
    (d / "metrics.jsonl").write_text("")
    with pytest.raises(report.RunDirError, match="events.jsonl") as exc:
        load_run(d)
    msg = str(exc.value)
    assert "missing events.jsonl" in msg and "missing metrics.jsonl" not in msg


def test_empty_run_still_reports(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    (d / "metrics.jsonl").write_text("")
    (d / "events.jsonl").write_text("")
    png, md = make_report(d)
    assert png.is_file()
    assert "No phase was recorded" in md.read_text()
    assert "no phases" in summary_table(load_run(d))


def test_sft_only_no_eval(tmp_path):
    w = RunWriter(tmp_path / "sft")
    w.event("run_started", spec="s.toml", profile="smoke", seed=1, phases=["sft"], resumed=False)
    w.event("phase_started", phase="sft", step=0, preset=None, penalties={})
    w.sft(25)
    w.close(torn=True)  # crashed: no phase_finished, no run_finished
    import matplotlib.image as mpimg

    png, md = make_report(w.dir)
    assert mpimg.imread(png).shape[:2] == (1000, 1600)
    text = md.read_text()
    assert "did not finish" in text
    assert "No evaluation results" in text
    assert "| 1 | sft | 25 |" in text


def test_single_grpo_phase_with_eval_no_events_for_steps(tmp_path):
    """Metrics for a phase the events never announced still get a row."""
    w = RunWriter(tmp_path / "one")
    w.event("run_started", spec="s.toml", phases=["soft"], resumed=False)
    w.grpo("soft", 12, "soft", level=3.0, drift=1.0, nan_at=(4,))
    w.event("phase_finished", phase="soft", steps=12, step=12,
            eval={"safe_rate": 0.5, "n_items": 40, "hallucination_rate": None, "format_valid_rate": 0.9})
    w.event("run_finished", step=12, reason="completed", phases=["soft"])
    w.close(torn=False)
    run = load_run(w.dir)
    assert [v.name for v in run.visits] == ["soft"]
    v = run.visits[0]
    assert v.n_steps == 12
    # penalty values from the preset name when events carry none
    assert v.steps[0].penalty_level == pytest.approx(-10.0)
    iv = v.eval_interval("safe_rate")
    assert iv.has_ci and iv.lo < 0.5 < iv.hi  # Wilson interval from n_items
    fe = v.eval_interval("format_error_rate")
    assert fe.value == pytest.approx(0.1)
    png, md = make_report(w.dir)
    assert "| 1 | soft | 12 |" in md.read_text()
    assert "Only one evaluation" in md.read_text()


def test_resume_rewrites_steps_and_repeats_phase_started(tmp_path):
    w = RunWriter(tmp_path / "res")
    w.event("run_started", spec="s.toml", phases=["soft", "medium"], resumed=False)
    w.event("phase_started", phase="soft", step=0, preset="soft", penalties=SOFT)
    w.grpo("soft", 20, "soft", level=3.0, drift=0.5)
    # crash, resume from step 10: steps 11..20 rewritten
    w.event("run_started", spec="s.toml", phases=["soft", "medium"], resumed=True)
    w.event("phase_started", phase="soft", step=10, preset="soft", penalties=SOFT)
    w.step = 10
    w.grpo("soft", 15, "soft", level=100.0, drift=0.0)
    w.event("phase_finished", phase="soft", steps=25, step=25)
    w.close(torn=False)
    run = load_run(w.dir)
    assert len(run.steps) == 25
    assert [v.name for v in run.visits] == ["soft"]
    assert run.resumes == 1
    assert run.steps[-1].metrics["reward_mean"] > 50  # the rewritten value wins
    assert any("more than once" in x for x in run.warnings)
    make_report(w.dir)


def test_write_functions_accept_any_path(full_run, tmp_path):
    run = load_run(full_run)
    out = tmp_path / "elsewhere"
    out.mkdir()
    write_png(run, out / "x.png")
    write_markdown(run, out / "x.md", png_name="x.png")
    assert (out / "x.png").stat().st_size > 10_000
    assert "![run overview](x.png)" in (out / "x.md").read_text()


def test_main_cli(full_run, capsys):
    assert report.main([str(full_run)]) == 0
    out = capsys.readouterr().out
    assert "recovery" in out and "report.md" in out
    assert report.main([str(full_run / "missing")]) == 1


def test_eval_only_phase_and_end_guard(tmp_path):
    """A zero-step eval phase between training phases, and a guard that ends the run."""
    w = RunWriter(tmp_path / "ev")
    w.event("run_started", spec="s.toml", phases=["soft", "check", "medium"], resumed=False)
    w.event("phase_started", phase="soft", kind="grpo", step=0, preset="soft", penalties=SOFT)
    w.grpo("soft", 30, "soft", level=5.0, drift=0.5)
    w.event("phase_finished", phase="soft", steps=30, step=30, eval=ev_eval(0.5, 0.3, 0.1, 0.6, 0.1, 10))
    w.event("phase_transition", from_phase="soft", to_phase="check", step=30, phase_step=30, reason="max_steps",
            evidence={}, metrics={}, penalties_before=SOFT, penalties_after=SOFT, preset_before="soft",
            preset_after="soft")
    w.event("phase_started", phase="check", kind="eval", step=30, preset="soft", penalties=SOFT)
    w.event("phase_finished", phase="check", steps=0, step=30, eval=ev_eval(0.52, 0.28, 0.1, 0.6, 0.1, 11))
    w.event("phase_transition", from_phase="check", to_phase="medium", step=30, phase_step=0, reason="eval_ok",
            guard_kind="promote", evidence={"safe_rate_lo": 0.43}, metrics={}, penalties_before=SOFT,
            penalties_after=MEDIUM, preset_before="soft", preset_after="medium")
    w.event("phase_started", phase="medium", kind="grpo", step=30, preset="medium", penalties=MEDIUM)
    w.grpo("medium", 20, "medium", level=15.0, drift=0.2)
    w.event("phase_finished", phase="medium", steps=20, step=50, eval=ev_eval(0.8, 0.1, 0.1, 0.8, 0.05, 25))
    w.event("phase_transition", from_phase="medium", to_phase="end", step=50, phase_step=20, reason="converged",
            guard_kind="finish", evidence={"safe_rate": 0.8, "threshold": 0.75}, metrics={},
            penalties_before=MEDIUM, penalties_after={}, preset_before="medium", preset_after=None)
    w.event("run_finished", step=50, reason="converged", phases=["soft", "check", "medium"])
    w.close(torn=False)
    run = load_run(w.dir)
    assert [(v.name, v.n_steps) for v in run.visits] == [("soft", 30), ("check", 0), ("medium", 20)]
    assert run.visits[1].eval and not run.visits[1].is_sft
    png, md = make_report(w.dir)
    text = md.read_text()
    assert "| 2 | check | 0 |" in text
    assert "safe_rate_lo = 0.43" in text and "threshold = 0.75" in text
    assert "step 50: medium → end" in text
    # baseline without an SFT phase: the first evaluation
    assert "From the first evaluation (**soft**" in text
    assert "check" in summary_table(run)
