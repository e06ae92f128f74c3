"""DipgReward: the Tunix reward-function object."""

import math
import threading

import pytest

from rewards import PRESETS, DipgReward, LivePreset, build_prompt
from rewards.data import generate_items
from runners.base import OUTCOME_RATE_METRICS

ITEMS = generate_items(30, seed=11)


def cols(items, g=1):
    rep = [it for it in items for _ in range(g)]
    return {
        "context": [i.context for i in rep],
        "question": [i.question for i in rep],
        "expected_answer": [i.reference for i in rep],  # full reference: <answer> part is used
        "task_type": [i.type for i in rep],
        "mode": ["train"] * len(rep),
        "trajectory_ids": list(range(len(rep))),
    }, [build_prompt(i.context, i.question) for i in rep], [i.reference for i in rep]


def test_name_and_call_shape():
    fn = DipgReward(LivePreset("medium"))
    assert fn.__name__ == "dipg_reward" and getattr(fn, "__name__") == "dipg_reward"
    c, prompts, comps = cols(ITEMS)
    out = fn(prompts=prompts, completions=comps, **c)
    assert isinstance(out, list) and len(out) == len(comps) and all(isinstance(x, float) for x in out)
    assert set(fn.last_metrics) == set(OUTCOME_RATE_METRICS)
    assert fn.last_metrics["safe_rate"] == 1.0 and fn.last_metrics["format_error_rate"] == 0.0
    assert len(fn.last_verdicts) == len(comps) and fn.error_count == 0


def test_reads_live_values_every_call():
    live = LivePreset(PRESETS["medium"])
    fn = DipgReward(live)
    c, prompts, _ = cols(ITEMS[:3])
    bad = ["plain text"] * 3
    assert fn(prompts=prompts, completions=bad, **c) == [-10.0] * 3
    live.set({"format_mismatch_penalty": -3.5}, partial=True)
    assert fn(prompts=prompts, completions=bad, **c) == [-3.5] * 3
    with pytest.raises(ValueError):
        live.set({"exact_format": 1.0})  # a full set must have all 12 keys
    assert live.values["format_mismatch_penalty"] == -3.5


def test_group_major_columns_shorter_than_completions():
    fn = DipgReward(LivePreset("soft"))
    c, prompts, _ = cols(ITEMS[:2])  # one entry per prompt
    comps = [ITEMS[0].reference] * 4 + [ITEMS[1].reference] * 4  # 4 generations each
    out = fn(prompts=prompts, completions=comps, **c)
    assert len(out) == 8 and len(set(out[:4])) == 1


def test_errors_are_counted_and_policy_applied():
    fn = DipgReward(LivePreset("medium"))
    c, prompts, comps = cols(ITEMS[:2])
    c["task_type"] = ["answerable", "bogus"]
    out = fn(prompts=prompts, completions=comps, **c)
    assert out[1] == -10.0 and fn.error_count == 1 and fn.last_verdicts[1] is None
    assert "bogus" in fn.last_errors[0]
    fn_nan = DipgReward(LivePreset("medium"), on_error="nan")
    out = fn_nan(prompts=prompts, completions=comps, **c)
    assert math.isnan(out[1]) and not math.isnan(out[0])
    with pytest.raises(ValueError):
        DipgReward(LivePreset("medium"), on_error="ignore")


def test_scorer_exception_never_escapes(monkeypatch):
    import rewards.reward_fn as rf

    def boom(*a, **k):
        raise RuntimeError("scorer bug")

    monkeypatch.setattr(rf, "score", boom)
    fn = DipgReward(LivePreset("medium"))
    c, prompts, comps = cols(ITEMS[:3])
    assert fn(prompts=prompts, completions=comps, **c) == [-10.0] * 3
    assert fn.error_count == 3


def test_odd_completions():
    fn = DipgReward(LivePreset("medium"))
    c, prompts, _ = cols(ITEMS[:1])
    odd = [None, b"<think>x</think>", 12345, "\x00" * 10, "\ud800", "x" * 300_000]
    for comp in odd:
        out = fn(prompts=prompts, completions=[comp], **c)
        assert len(out) == 1 and math.isfinite(out[0])
    assert fn(prompts=[], completions=[], **{k: [] for k in c}) == []
    assert fn(prompts=None, completions=None) == []
    import numpy as np

    arr = np.array([ITEMS[0].reference, "plain"], dtype=object)
    assert len(fn(prompts=["p", "p"], completions=arr, context=ITEMS[0].context, question=ITEMS[0].question,
                  expected_answer=ITEMS[0].expected_answer, task_type=ITEMS[0].type)) == 2
    # mismatched column length is an error per item, not a crash
    out = fn(prompts=prompts, completions=["a", "b", "c"], context=["x", "y"], question="q", expected_answer="e")
    assert len(out) == 3 and fn.error_count >= 3


def test_missing_task_type_defaults_to_answerable():
    fn = DipgReward(LivePreset("medium"))
    it = [i for i in ITEMS if i.type == "answerable"][0]
    out = fn(prompts=["p"], completions=[it.reference], context=[it.context], question=[it.question], expected_answer=[it.expected_answer])
    assert out == [50.0]


def test_thread_safe_under_concurrent_calls_and_updates():
    live = LivePreset("medium")
    fn = DipgReward(live)
    c, prompts, comps = cols(ITEMS)
    errors = []

    def worker():
        try:
            for _ in range(20):
                out = fn(prompts=prompts, completions=comps, **c)
                assert len(out) == len(comps)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    def updater():
        for i in range(200):
            live.set({"exact_format": float(i % 7)}, partial=True)

    ts = [threading.Thread(target=worker) for _ in range(3)] + [threading.Thread(target=updater)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors and fn.error_count == 0


def test_build_prompt_has_context_and_question():
    p = build_prompt("CTX here.", "What is asked?")
    assert "<context>\nCTX here.\n</context>" in p and "<question>\nWhat is asked?\n</question>" in p
    assert "<think>" in p  # default instructions describe the format
    assert build_prompt("c", "q", system_prompt="").startswith("<context>")
    assert build_prompt("c", "q", system_prompt="SYS").startswith("SYS\n\n")
