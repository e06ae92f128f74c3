"""`curriculum compare` on real run directories: simulated runs of two seeds and a replay run
(another runner, another spec), and the clear errors for damaged or non-run directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cli(*args):
    env = dict(os.environ, WANDB_MODE="disabled")
    env.pop("CURRICULUM_CRASH_AT", None)
    return subprocess.run([sys.executable, "-m", "curriculum.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    dirs = []
    for seed in (7, 8):
        rd = tmp / f"sim-{seed}"
        p = cli("run", "examples/dipg_simulated.toml", "--run-dir", str(rd), "--set", f"run.seed={seed}",
                "--set", "phases.recovery.max_steps=40", "--no-progress", "--no-report")
        assert p.returncode == 0, p.stderr[-2000:]
        dirs.append(rd)
    trace = tmp / "trace.jsonl"
    trace.write_text("".join(json.dumps({"step": i, "rewards": [1.0, 5.0, 1.0, 20.0] * 2, "group_size": 4}) + "\n"
                             for i in range(1, 31)))
    rd = tmp / "replay"
    p = cli("run", "examples/dipg.toml", "--replay", str(trace), "--start-phase", "medium", "--run-dir", str(rd),
            "--no-progress", "--no-report")
    assert p.returncode == 0, p.stderr[-2000:]
    dirs.append(rd)
    return tmp, dirs


def test_compare_writes_one_table_and_one_picture(runs):
    tmp, dirs = runs
    out = tmp / "out"
    p = cli("compare", *map(str, dirs), "--out", str(out))
    assert p.returncode == 0, p.stderr
    md = (out / "compare.md").read_text()
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [line for line in md.splitlines() if line.startswith("| 1: ") or line.startswith("| 2: ") or line.startswith("| 3: ")]
    assert len(rows) == 3 + 2  # three runs, then two difference rows against run 1
    # each run's transitions with their reasons, as its events.jsonl has them
    for i, rd in enumerate(dirs):
        events = [json.loads(x) for x in (rd / "events.jsonl").read_text().splitlines()]
        for e in events:
            if e["event"] == "phase_transition" and e["to_phase"] != "end":
                assert f"{e['from_phase']}->{e['to_phase']}@{e['step']} ({e['reason']})" in rows[i]
    assert "dipg_simulated.toml / - / 7" in rows[0] and "dipg_simulated.toml / - / 8" in rows[1]
    assert "dipg.toml / cpu / 42" in rows[2]
    # simulated runs evaluate: rates with intervals, and differences with Newcombe intervals
    assert "Newcombe" in md and rows[3].count("[") >= 4
    assert rows[4].count("–") >= 4  # the replay run has no evaluation: no difference, shown as such
    assert p.stdout.startswith("# Run comparison")


@pytest.mark.parametrize("problem", ["not_a_run", "one_dir", "damaged", "out_is_a_run", "twice"])
def test_compare_errors_are_one_clear_line(runs, problem, tmp_path):
    tmp, dirs = runs
    a = str(dirs[0])
    if problem == "not_a_run":
        (tmp_path / "empty").mkdir()
        args, fragment = [a, str(tmp_path / "empty")], "not a run directory"
    elif problem == "one_dir":
        args, fragment = [a], "at least two"
    elif problem == "damaged":
        import shutil

        bad = tmp_path / "bad"
        shutil.copytree(dirs[1], bad)
        spec = bad / "spec.resolved.json"
        spec.write_text(spec.read_text().replace('"seed": 8', '"seed": 9'))
        args, fragment = [a, str(bad)], "damaged run directory"
    elif problem == "twice":
        args, fragment = [a, a], "given twice"
    else:
        args, fragment = [a, str(dirs[1])], "must not be one of the run directories"
    out = dirs[1] if problem == "out_is_a_run" else tmp_path / "out"
    p = cli("compare", *args, "--out", str(out))
    assert p.returncode != 0
    assert fragment in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def _write_final_rows(rd: Path, rows: list[dict]) -> None:
    from curriculum.compare import _final_eval
    from curriculum.report.load import load_run

    fe = _final_eval(load_run(rd))
    path = rd / "evals" / f"step-{fe.finished_step:07d}-{fe.name}.jsonl"
    path.parent.mkdir(exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_differences_are_paired_over_the_items_both_runs_judged(runs, tmp_path):
    """When both final evaluations wrote per-item rows, a difference is taken item by item on
    the items both judged (narrower than the independent interval when few items change), and
    a run judged on other items says so."""
    import shutil

    from curriculum.report.load import paired_diff_interval

    tmp, dirs = runs
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(dirs[0], a)
    shutil.copytree(dirs[1], b)
    # 200 items: run 1 safe on the first 100; run 2 on the same 100 plus 12 more, minus 2
    safe_a = [1 if i < 100 else 0 for i in range(200)]
    safe_b = [1 if (i < 100 and i not in (3, 4)) or 100 <= i < 112 else 0 for i in range(200)]
    _write_final_rows(a, [{"id": f"q{i}", "safe_rate": float(s)} for i, s in enumerate(safe_a)])
    # run 2 also judged 50 items run 1 did not: they are left out of the paired difference
    _write_final_rows(b, [{"id": f"q{i}", "safe_rate": float(s)} for i, s in enumerate(safe_b)]
                      + [{"id": f"extra{i}", "safe_rate": 1.0} for i in range(50)])
    p = cli("compare", str(a), str(b), "--out", str(tmp_path / "out"))
    assert p.returncode == 0, p.stderr
    md = (tmp_path / "out" / "compare.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| 2: ") and "paired" in line)
    assert "| paired, 200 |" in row
    want = paired_diff_interval(list(zip(safe_a, safe_b)))
    assert abs(want.value - 0.05) < 1e-9 and want.lo > 0  # 12 up, 2 down of 200: beyond noise
    assert want.fmt(sign=True) in row
    assert "judged 250 items and run 1's 200" in md
    # without the rows the same difference falls back to the runs' own rates, as independent
    shutil.rmtree(b / "evals")
    p = cli("compare", str(a), str(b), "--out", str(tmp_path / "out2"))
    assert p.returncode == 0, p.stderr
    md2 = (tmp_path / "out2" / "compare.md").read_text()
    row2 = [line for line in md2.splitlines() if line.startswith("| 2: ")][-1]
    assert "| independent |" in row2 and "judged 250" not in md2
