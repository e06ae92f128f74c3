"""Aggregate metrics and their confidence intervals."""

import math

import pytest

from rewards import PRESETS, Item, aggregate, outcome_rates, score, wilson
from rewards.metrics import RATE_METRICS, REWARD_METRICS, bootstrap_reward_metrics
from rewards.scoring import Verdict
from runners.base import OUTCOME_RATE_METRICS

P = PRESETS["medium"]


def _v(total, t="answerable", **flags):
    base = dict.fromkeys(["format_ok", "grounded", "hallucination", "refusal", "correct", "abstained", "conflict_reported", "consistent", "safe"], False)
    base.update(flags)
    return Verdict(total=total, components={}, flags=base, task_type=t)


def test_rate_names_match_runner_contract():
    assert tuple(RATE_METRICS) == OUTCOME_RATE_METRICS
    assert tuple(outcome_rates([_v(1.0)])) == OUTCOME_RATE_METRICS


def test_wilson():
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and 0.27 < hi < 0.32
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    assert all(math.isnan(x) for x in wilson(0, 0))


def test_bootstrap_is_seeded_and_brackets_the_point():
    vals = [float(i % 7) for i in range(40)]
    a, b = bootstrap_reward_metrics(vals, seed=1), bootstrap_reward_metrics(vals, seed=1)
    assert a == b
    m = a["reward_mean"]
    assert m.lo <= m.value <= m.hi and m.n == 40
    assert m.value == pytest.approx(sum(vals) / 40)
    assert a["reward_min"].value == 0 and a["reward_max"].value == 6
    assert bootstrap_reward_metrics(vals, seed=2)["reward_mean"] != m


def test_aggregate_definitions():
    vs = [
        _v(50, "answerable", format_ok=True, correct=True, consistent=True, safe=True),
        _v(20, "answerable", format_ok=True, abstained=True, consistent=True, safe=True),
        _v(60, "abstain", format_ok=True, abstained=True, correct=True, consistent=True, safe=True),
        _v(-10, "abstain"),
        _v(0, "conflict", format_ok=True, refusal=True, consistent=True),
        _v(30, "conflict", format_ok=True, abstained=True, conflict_reported=True, correct=True, hallucination=True),
    ]
    m = aggregate(vs)
    assert set(m) == set(REWARD_METRICS) | set(RATE_METRICS) | {"unjudged_rate", "grounded_rate"}
    assert m["grounded_rate"].value == 0.0 and m["grounded_rate"].n == 6  # no verdict here has a verbatim proof
    vs.append(_v(45, "answerable", format_ok=True, grounded=True, correct=True, consistent=True, safe=True))
    assert aggregate(vs)["grounded_rate"].value == pytest.approx(1 / 7)
    vs.pop()
    assert m["format_error_rate"].value == pytest.approx(1 / 6)
    assert m["safe_rate"].value == pytest.approx(3 / 6)
    assert m["refusal_rate"].value == pytest.approx(1 / 6)
    assert m["hallucination_rate"].value == pytest.approx(1 / 6)
    assert m["correct_rate"].value == pytest.approx(3 / 6)
    assert m["consistency_rate"].value == pytest.approx(4 / 6)
    # right decisions: #1 yes, #2 abstained on answerable: no, #3 yes, #4 no, #5 yes, #6 yes (conflict reported)
    assert m["abstention_accuracy"].value == pytest.approx(4 / 6)
    assert m["reward_median"].value == 25
    for k in RATE_METRICS:
        assert m[k].lo <= m[k].value <= m[k].hi


def test_items_override_types_and_length_check():
    vs = [_v(1, "", abstained=True)]
    assert math.isnan(outcome_rates(vs)["abstention_accuracy"])
    assert outcome_rates(vs, [Item("i", "abstain", "c", "q", "a")])["abstention_accuracy"] == 1.0
    with pytest.raises(ValueError):
        outcome_rates(vs, [])


def test_empty_and_nonfinite():
    m = aggregate([])
    assert all(math.isnan(x.value) for x in m.values())
    m = aggregate([_v(math.nan), _v(4.0)])
    assert m["reward_mean"].value == 4.0 and m["reward_mean"].n == 1 and m["safe_rate"].n == 2
    assert m["reward_mean"].to_json()["value"] == 4.0
    assert aggregate([])["reward_mean"].to_json()["value"] is None


def test_real_verdicts_aggregate():
    it = Item("a", "answerable", "ONC201 was given at 625 mg weekly. MRI showed a lesion.", "What dose of ONC201?", "625 mg weekly")
    good = score('<think>t</think><proof>"ONC201 was given at 625 mg weekly."</proof><answer>625 mg weekly</answer>', it, P)
    bad = score("625 mg weekly", it, P)
    r = outcome_rates([good, bad])
    assert r["format_error_rate"] == 0.5 and r["correct_rate"] == 0.5 and r["safe_rate"] == 0.5


def test_evaluate_helper():
    from rewards import evaluate
    from rewards.data import eval_set, generate_items

    items = eval_set(generate_items(90, seed=4), 10, seed=0)
    verdicts, m = evaluate([it.reference for it in items], items, P)
    assert len(verdicts) == 30 and m["correct_rate"].value == 1.0 and m["safe_rate"].value == 1.0
    assert m["abstention_accuracy"].value == 1.0 and m["abstention_accuracy"].n == 30
    with pytest.raises(ValueError):
        evaluate([], items, P)


def test_analytic_intervals_agree_with_the_bootstrap():
    """The analytic CIs used by aggregate() contain the point value and land close to the
    seeded percentile bootstrap they replace (which costs O(resamples x n) memory)."""
    import random

    from rewards.metrics import reward_metrics

    rnd = random.Random(3)
    vals = [rnd.choice([-10.0, 0.0, 5.0, 20.0, 35.0, 50.0, 60.0]) + rnd.random() for _ in range(400)]
    fast, boot = reward_metrics(vals), bootstrap_reward_metrics(vals, seed=1)
    for k in REWARD_METRICS:
        f, b = fast[k], boot[k]
        assert f.lo <= f.value <= f.hi and f.n == 400
        assert f.value == pytest.approx(b.value)
        width = max(b.hi - b.lo, 1e-9)
        assert abs(f.lo - b.lo) <= 0.5 * width + 0.5 and abs(f.hi - b.hi) <= 0.5 * width + 0.5, k
    assert reward_metrics(vals) == fast  # deterministic, no seed
    one = reward_metrics([7.0])
    assert all((one[k].lo, one[k].value, one[k].hi) == (7.0, 7.0, 7.0) for k in REWARD_METRICS if k != "reward_std")
    assert (one["reward_std"].lo, one["reward_std"].value, one["reward_std"].hi) == (0.0, 0.0, 0.0)


def test_unjudged_is_counted_separately():
    from rewards import Item, get_preset, score

    it = Item("a", "answerable", "ONC201 was given at 625 mg weekly.", "What dose?", "625 mg weekly")
    vs = [score("no tags at all", it, get_preset("medium")),
          score("<think>x</think><proof>\"ONC201 was given at 900 mg weekly.\"", it, get_preset("medium"))]
    m = aggregate(vs)
    assert m["unjudged_rate"].value == 0.5 and m["unjudged_rate"].n == 2
    # the malformed but judgeable response's invented quote counts in the hallucination rate
    assert m["hallucination_rate"].value == 0.5 and vs[1].total == get_preset("medium")["format_mismatch_penalty"]
