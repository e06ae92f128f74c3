"""The report on a run directory written by the real engine (simulated runner, a few seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "dipg_simulated.toml"


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory) -> Path:
    from curriculum import cli

    run_dir = tmp_path_factory.mktemp("e2e") / "run"
    rc = cli.main(
        ["run", str(SPEC), "--run-dir", str(run_dir), "--no-progress", "--no-report",
         "--set", "phases.recovery.max_steps=60", "--set", "run.wandb=disabled"]
    )
    assert rc == 0
    return run_dir


def test_report_of_engine_run(sim_run):
    import matplotlib.image as mpimg

    from curriculum.report import load_run, make_report, summary_table

    run = load_run(sim_run)
    assert run.steps and run.visits
    assert run.finished is not None
    # every step belongs to exactly one phase entry, in order
    assert sum(v.n_steps for v in run.visits) == len(run.steps)
    assert [s.step for s in run.steps] == list(range(1, len(run.steps) + 1))
    # GRPO steps carry a penalty level (soft -10, medium -15 before any controller scaling)
    for v in run.visits:
        for s in v.steps:
            assert s.penalty_level < 0
    png, md = make_report(sim_run)
    assert mpimg.imread(png).shape[:2] == (1000, 1600)
    text = md.read_text()
    for t in run.transitions:
        assert f"step {t.step}: {t.from_phase} → {t.to_phase}" in text
        assert f"reason: **{t.reason}**" in text
    table = summary_table(run)
    for v in run.visits:
        assert v.name in table
