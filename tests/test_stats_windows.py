"""curriculum.windows.MetricHistory: ring buffers, phase tails, JSON round trip."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curriculum.windows import MetricHistory

NAN, INF = math.nan, math.inf


def _same(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def test_window_returns_last_n_of_current_phase_in_order():
    h = MetricHistory(5)
    h.begin_phase("soft")
    for i in range(12):
        h.push({"r": float(i)})
    assert h.window("r", 3).tolist() == [9.0, 10.0, 11.0]
    assert h.window("r", 5).tolist() == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert h.window("r", 50).tolist() == [7.0, 8.0, 9.0, 10.0, 11.0]  # capped at capacity
    assert h.window("missing", 3).size == 0
    assert h.phase == "soft" and h.phase_step == 12


def test_window_is_a_copy():
    h = MetricHistory(3)
    h.begin_phase("a")
    h.push({"r": 1.0})
    w = h.window("r", 1)
    w[0] = 99.0
    assert h.window("r", 1)[0] == 1.0


def test_non_finite_values_are_kept():
    h = MetricHistory(4)
    h.begin_phase("a")
    for v in (1.0, NAN, INF, -INF):
        h.push({"r": v})
    w = h.window("r", 4)
    assert w[0] == 1.0 and math.isnan(w[1]) and w[2] == INF and w[3] == -INF


def test_begin_phase_freezes_previous_tail_and_clears_current():
    h = MetricHistory(3)
    h.begin_phase("soft")
    for i in range(10):
        h.push({"r": float(i)})
    h.begin_phase("medium")
    assert h.previous_phase == "soft" and h.phase == "medium" and h.phase_step == 0
    assert h.window("r", 3).size == 0
    assert h.phase_window("r", 3).tolist() == [7.0, 8.0, 9.0]
    assert h.phase_window("r", 2, "soft").tolist() == [8.0, 9.0]
    assert h.phase_window("r", 2, "nope").size == 0
    h.push({"r": 100.0})
    h.begin_phase("recovery")
    assert h.previous_phase == "medium"
    assert h.phase_window("r", 3).tolist() == [100.0]
    assert h.phase_window("r", 3, "soft").tolist() == [7.0, 8.0, 9.0]


def test_named_phase_is_its_most_recent_visit():
    h = MetricHistory(2)
    for phase, base in (("soft", 0), ("medium", 10), ("soft", 20), ("medium", 30)):
        h.begin_phase(phase)
        h.push({"r": float(base)})
        h.push({"r": float(base + 1)})
    assert h.phase_window("r", 2, "soft").tolist() == [20.0, 21.0]
    assert h.previous_phase == "soft"


def test_no_previous_phase_gives_empty():
    h = MetricHistory(3)
    h.begin_phase("sft")
    assert h.previous_phase is None
    assert h.phase_window("r", 3).size == 0


def test_capacity_at_least_one():
    h = MetricHistory(0)
    assert h.capacity == 1
    h.begin_phase("a")
    h.push({"r": 1.0})
    h.push({"r": 2.0})
    assert h.window("r", 5).tolist() == [2.0]


def test_metrics_are_independent_streams():
    h = MetricHistory(4)
    h.begin_phase("a")
    h.push({"r": 1.0, "eval": 0.5})
    h.push({"r": 2.0})
    assert h.window("r", 4).tolist() == [1.0, 2.0]
    assert h.window("eval", 4).tolist() == [0.5]
    assert h.phase_step == 2


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=7),
    st.lists(
        st.tuples(
            st.sampled_from(["soft", "medium", "recovery"]),
            st.lists(
                st.dictionaries(
                    st.sampled_from(["a", "b"]),
                    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(0.1 + 0.2)),
                    min_size=1,
                ),
                max_size=12,
            ),
        ),
        max_size=5,
    ),
)
def test_to_dict_round_trips_exactly_through_strict_json(cap, phases):
    h = MetricHistory(cap)
    for name, steps in phases:
        h.begin_phase(name)
        for m in steps:
            h.push(m)
    text = json.dumps(h.to_dict(), allow_nan=False)
    g = MetricHistory.from_dict(json.loads(text))
    assert (g.capacity, g.phase, g.previous_phase, g.phase_step) == (
        h.capacity, h.phase, h.previous_phase, h.phase_step)
    for m in ("a", "b"):
        assert _same(g.window(m, cap), h.window(m, cap))
        assert g.reported(m) == h.reported(m)
        for p in (None, "soft", "medium", "recovery"):
            assert _same(g.phase_window(m, cap, p), h.phase_window(m, cap, p))
    # pushing after a restore continues exactly like the original
    g.push({"a": 42.0})
    h.push({"a": 42.0})
    assert _same(g.window("a", cap), h.window("a", cap))


def test_restore_then_begin_phase():
    h = MetricHistory(3)
    h.begin_phase("soft")
    for i in range(5):
        h.push({"r": float(i)})
    g = MetricHistory.from_dict(json.loads(json.dumps(h.to_dict())))
    g.begin_phase("medium")
    assert g.phase_window("r", 3).tolist() == [2.0, 3.0, 4.0]


def test_bad_encoded_value_raises():
    d = MetricHistory(2).to_dict()
    d["current"] = {"r": {"reported": 1, "values": ["oops"]}}
    with pytest.raises(ValueError):
        MetricHistory.from_dict(d)
