"""The change in an evaluation rate from the end of SFT to the end of the run, measured on the
same items twice: the report pairs the items (the runner's RUN_DIR/evals/ rows) and uses
Newcombe's interval for paired proportions; without per-item rows it falls back to the
interval for two independent rates."""

from __future__ import annotations

import json
import random

import pytest

from curriculum.report import load_run, make_report
from curriculum.report.load import _diff_interval, change_detail, change_interval, paired_diff_interval
from curriculum.report.markdown import summary_table
from rewards import wilson
from test_report import build_full_run


def _pairs(n, p_start, p_gain, p_loss, rng):
    out = []
    for _ in range(n):
        x = int(rng.random() < p_start)
        y = (0 if rng.random() < p_loss else 1) if x else int(rng.random() < p_gain)
        out.append((x, y))
    return out


def test_paired_interval_covers_the_true_change_about_95_percent_of_the_time():
    # a policy that fixes some items and breaks a few, evaluated twice on 300 items
    rng = random.Random(1234)
    n, p_start, p_gain, p_loss = 300, 0.25, 0.12, 0.08
    true = (1 - p_start) * p_gain - p_start * p_loss
    trials = 2000
    covered = sum(
        1 for _ in range(trials)
        if (iv := paired_diff_interval(_pairs(n, p_start, p_gain, p_loss, rng))).lo <= true <= iv.hi
    )
    assert 0.93 <= covered / trials <= 0.97, covered / trials


def test_paired_is_narrower_than_independent_when_few_items_change():
    # 300 items, 60 right at both ends, 21 fixed and 3 broken: +0.06
    pairs = [(1, 1)] * 60 + [(0, 1)] * 21 + [(1, 0)] * 3 + [(0, 0)] * 216
    d = paired_diff_interval(pairs)
    assert d.value == pytest.approx(18 / 300)
    start, end = sum(x for x, _ in pairs), sum(y for _, y in pairs)
    from curriculum.report.load import Interval

    ind = _diff_interval(Interval(start / 300, *wilson(start, 300)), Interval(end / 300, *wilson(end, 300)))
    assert ind.lo < 0 < ind.hi  # as if two independent samples: not beyond noise
    assert d.lo > 0  # the same items, mostly unchanged: beyond noise
    assert d.hi - d.lo < ind.hi - ind.lo


def test_paired_interval_edge_cases():
    same = paired_diff_interval([(1, 1)] * 10 + [(0, 0)] * 90)
    assert same.value == 0 and same.lo <= 0 <= same.hi
    up = paired_diff_interval([(0, 1)] * 100)
    assert up.value == 1 and 0 < up.lo <= up.hi <= 1
    pairs = [(1, 0)] * 7 + [(0, 1)] * 19 + [(1, 1)] * 30 + [(0, 0)] * 44
    a, b = paired_diff_interval(pairs), paired_diff_interval([(y, x) for x, y in pairs])
    assert a.value == pytest.approx(-b.value) and a.lo == pytest.approx(-b.hi) and a.hi == pytest.approx(-b.lo)
    assert paired_diff_interval([]).has_ci is False


def _write_evals(run_dir, step, phase, outcomes):
    d = run_dir / "evals"
    d.mkdir(exist_ok=True)
    with open(d / f"step-{step:07d}-{phase}.jsonl", "w") as f:
        for i, (safe, hall) in enumerate(outcomes):
            f.write(json.dumps({"id": f"item-{i}", "user": "q", "response": "r", "reward": 1.0,
                                "safe_rate": float(safe), "hallucination_rate": None if hall is None else float(hall)}) + "\n")


def test_report_pairs_the_items_of_the_first_sft_and_the_final_evaluation(tmp_path):
    rd = build_full_run(tmp_path / "run")
    # the fixture's evaluations: 128 items, safe 0.31 at the end of sft (step 40), 0.71 at the end (240)
    start = [1] * 40 + [0] * 88
    end = [1] * 40 + [1] * 51 + [0] * 37
    _write_evals(rd, 40, "sft", [(s, None if i % 2 else 0) for i, s in enumerate(start)])
    _write_evals(rd, 240, "medium", [(s, None if i % 2 else 1) for i, s in enumerate(end)])
    run = load_run(rd)
    base, final = run.visits[0], run.visits[-1]
    d, paired = change_interval(run, base, final, "safe_rate")
    assert paired and d.value == pytest.approx(51 / 128) and d.lo > 0.3
    # a rate that leaves items out is paired over the items both evaluations judged
    h, paired_h = change_interval(run, base, final, "hallucination_rate")
    assert paired_h and h.value == pytest.approx(1.0)
    # refusal_rate has no per-item rows: the interval for independent rates
    r, paired_r = change_interval(run, base, final, "refusal_rate")
    assert not paired_r and r.value == pytest.approx(0.10 - 0.05)
    text = make_report(rd)[1].read_text()
    assert "change [95% CI, paired]" in text and "as if independent" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("| safe_rate |"))
    assert line.count("[") == 4  # start, end, paired change, independent change
    summary = next(ln for ln in summary_table(run).splitlines() if ln.strip().startswith("safe_rate:"))
    assert "paired over the same items" in summary


def test_different_item_sets_pair_over_the_items_both_judged(tmp_path):
    # the end of SFT judged 40 items, the end of the run the first 10 of them (a phase evaluated
    # on fewer items): start, end and change are all over those 10, paired
    rd = build_full_run(tmp_path / "run")
    _write_evals(rd, 40, "sft", [(0, None)] * 10 + [(1, None)] * 30)
    _write_evals(rd, 240, "medium", [(1, None)] * 6 + [(0, None)] * 4)
    run = load_run(rd)
    got = change_detail(run, run.visits[0], run.visits[-1], "safe_rate")
    assert got.paired and got.common == 10
    assert got.start.value == 0.0 and got.end.value == pytest.approx(0.6) and got.change.value == pytest.approx(0.6)
    assert got.change.lo > 0
    # the evaluations' own rates (all their items) would say the opposite: 0.75 -> 0.6
    assert run.visits[0].eval_interval("safe_rate").value != got.start.value
    text = make_report(rd)[1].read_text()
    assert "over the 10 items both judged" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("| safe_rate |"))
    assert line.startswith("| safe_rate | 0.00 [") and "| 0.60 [" in line and "| +0.60 [" in line
    summary = next(ln for ln in summary_table(run).splitlines() if ln.strip().startswith("safe_rate:"))
    assert "paired over the 10 items both judged" in summary


def test_mismatched_or_damaged_rows_fall_back_to_independent(tmp_path):
    rd = build_full_run(tmp_path / "run")
    _write_evals(rd, 40, "sft", [(1, 0)] * 10)
    # no item in common
    d = rd / "evals"
    rows = [json.loads(x) for x in (d / "step-0000040-sft.jsonl").read_text().splitlines()]
    (d / "step-0000240-medium.jsonl").write_text(
        "".join(json.dumps({**r, "id": "other-" + r["id"]}) + "\n" for r in rows))
    run = load_run(rd)
    _, paired = change_interval(run, run.visits[0], run.visits[-1], "safe_rate")
    assert not paired
    (rd / "evals" / "step-0000240-medium.jsonl").write_text('{"id": "item-0", "safe_rate": 1.0}\n{torn')
    _, paired = change_interval(run, run.visits[0], run.visits[-1], "safe_rate")
    assert not paired
    make_report(rd)  # still reports
