"""curriculum.testing.drive_guard and registry.scoped(): custom guards tested without a run."""

from __future__ import annotations

import pytest

from curriculum import registry
from curriculum.testing import drive_guard


def test_scoped_registration_is_undone_on_exit():
    before = registry.guard_function_names()
    with registry.scoped():
        @registry.register_guard()
        def only_in_this_test(view, n):
            return True

        assert "only_in_this_test" in registry.guard_function_names()
    assert registry.guard_function_names() == before


def test_scoped_restores_even_after_an_error():
    before = registry.guard_function_names()
    with pytest.raises(RuntimeError):
        with registry.scoped():
            registry.register_guard("boom_guard")(lambda view: True)
            raise RuntimeError("test failure inside")
    assert "boom_guard" not in registry.guard_function_names() and registry.guard_function_names() == before


def test_drive_a_custom_guard_with_patience():
    with registry.scoped():
        @registry.register_guard()
        def stalled(view, metric, n):
            w = view.window(metric, int(n))
            return len(w) >= n and float(w.max() - w.min()) < 1.0

        res = drive_guard({"type": "custom", "function": "stalled", "args": ["reward_mean", 3],
                           "windows": {"reward_mean": 3}, "patience": 2},
                          [{"reward_mean": v} for v in (1.0, 5.0, 5.2, 5.1, 5.3, 9.0)])
    assert [r.fired for r in res] == [False, False, False, False, True, False]
    assert res[4].evidence["consecutive"] == 2


def test_drive_an_expression_across_phases():
    prev = [{"reward_max": 36.0}] * 10
    now = [{"reward_max": 36.0}] * 3 + [{"reward_max": 1.0}] * 5
    res = drive_guard("max(reward_max, 5) < 0.5 * prev(max(reward_max, 5))", now, previous=prev)
    assert [i for i, r in enumerate(res) if r.fired] == [7]


def test_an_unknown_metric_is_the_usual_error():
    from curriculum.guards import GuardConfigError

    with pytest.raises(GuardConfigError, match="did you mean 'reward_mean'"):
        drive_guard("mean(reward_mena, 3) > 1", [{"reward_mean": 1.0}])
