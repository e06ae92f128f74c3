"""The optimised judges give exactly the verdicts recorded in tests/data/rewards_golden.jsonl
(reward, components, flags, task type and detail) on seeded synthetic cases and on the upstream
responses crossed with their items (see tests/rewards_golden.py, which also rewrites the file
after a deliberate verdict change)."""

import json

import pytest

from rewards.text import prepare_context
from tests.rewards_golden import GOLDEN, synthetic_cases, upstream_cases, verdict_json


@pytest.fixture(scope="module")
def golden():
    return {d["id"]: d["verdict"] for d in map(json.loads, GOLDEN.read_text(encoding="utf-8").splitlines())}


def _check(cases, golden):
    n = 0
    diffs = []
    for cid, resp, item in cases:
        got = verdict_json(resp, item)
        if got != golden[cid]:
            diffs.append((cid, golden[cid], got))
        n += 1
    assert not diffs, f"{len(diffs)} verdicts changed, first: {diffs[0]}"
    return n


def test_synthetic_verdicts_unchanged(golden):
    assert _check(synthetic_cases(), golden) == 3600


def test_synthetic_verdicts_unchanged_with_cold_caches(golden):
    # the per-context indexes are caches: a cold start must give the same verdicts
    prepare_context.cache_clear()
    cases = list(synthetic_cases())[::7]
    assert _check(cases, golden) == len(cases)


def test_upstream_verdicts_unchanged(golden):
    cases = list(upstream_cases())
    if not cases:
        pytest.skip("upstream eval data not available")
    assert _check(cases, golden) == 300
