"""curriculum.stats: pure statistics over windows, non-finite handling."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curriculum import stats

NAN, INF = math.nan, math.inf
finite_floats = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
any_floats = st.one_of(finite_floats, st.just(NAN), st.just(INF), st.just(-INF))


def test_basic_statistics():
    x = [1.0, 2.0, 3.0, 4.0, 10.0]
    assert stats.mean(x) == 4.0
    assert stats.min_(x) == 1.0
    assert stats.max_(x) == 10.0
    assert stats.range_(x) == 9.0
    assert stats.median(x) == 3.0
    assert stats.std(x) == pytest.approx(np.std(x))  # population std
    assert stats.std([2.0, 4.0]) == 1.0
    assert stats.quantile(x, 0.0) == 1.0 and stats.quantile(x, 1.0) == 10.0
    assert stats.quantile(x, 0.5) == 3.0
    assert stats.last(x) == 10.0
    assert stats.count(x) == 5.0
    assert stats.nonfinite(x) == 0.0


def test_non_finite_values_are_ignored_except_by_nonfinite_and_count():
    x = [1.0, NAN, 3.0, INF, -INF, 5.0]
    assert stats.mean(x) == 3.0
    assert stats.min_(x) == 1.0 and stats.max_(x) == 5.0
    assert stats.range_(x) == 4.0
    assert stats.median(x) == 3.0
    assert stats.nonfinite(x) == 3.0
    assert stats.count(x) == 6.0
    assert stats.last([1.0, 2.0, NAN]) == 2.0


@pytest.mark.parametrize("values", [[], [NAN], [INF, -INF, NAN]])
def test_no_finite_value_gives_nan(values):
    for f in (stats.mean, stats.min_, stats.max_, stats.std, stats.range_, stats.median,
              stats.slope, stats.last):
        assert math.isnan(f(values)), f.__name__
    assert math.isnan(stats.quantile(values, 0.5))
    assert math.isnan(stats.ema(values, 0.5))
    assert stats.nonfinite(values) == len(values)


def test_slope_is_per_step_and_keeps_gaps():
    assert stats.slope([0.0, 2.0, 4.0, 6.0]) == pytest.approx(2.0)
    assert stats.slope([5.0, 5.0, 5.0]) == 0.0
    # a NaN in the middle keeps the later values at their own step positions
    assert stats.slope([0.0, NAN, 4.0, 6.0]) == pytest.approx(2.0)
    assert math.isnan(stats.slope([1.0]))
    assert math.isnan(stats.slope([1.0, NAN]))


def _ema_loop(xs, alpha):
    e = None
    for x in xs:
        if not math.isfinite(x):
            continue
        e = x if e is None else alpha * x + (1 - alpha) * e
    return NAN if e is None else e


@settings(max_examples=200, deadline=None)
@given(st.lists(any_floats, max_size=60), st.floats(min_value=1e-3, max_value=1.0))
def test_ema_matches_the_recursive_definition(xs, alpha):
    got, want = stats.ema(xs, alpha), _ema_loop(xs, alpha)
    if math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(want, rel=1e-9, abs=1e-6)


def test_ema_validates_alpha():
    with pytest.raises(ValueError):
        stats.ema([1.0], 0.0)
    with pytest.raises(ValueError):
        stats.ema([1.0], 1.5)
    with pytest.raises(ValueError):
        stats.quantile([1.0], 1.5)


@settings(max_examples=200, deadline=None)
@given(st.lists(any_floats, max_size=40))
def test_statistics_match_numpy_on_the_finite_subset(xs):
    fin = np.array([x for x in xs if math.isfinite(x)])
    if fin.size == 0:
        assert math.isnan(stats.mean(xs))
        return
    assert stats.mean(xs) == pytest.approx(fin.mean(), rel=1e-9, abs=1e-6)
    assert stats.max_(xs) == fin.max() and stats.min_(xs) == fin.min()
    assert stats.std(xs) == pytest.approx(fin.std(), rel=1e-9, abs=1e-6)
    assert stats.median(xs) == pytest.approx(np.median(fin))
    assert stats.quantile(xs, 0.9) == pytest.approx(np.quantile(fin, 0.9))
    assert stats.nonfinite(xs) == len(xs) - fin.size


def test_accepts_numpy_arrays_without_mutating_them():
    a = np.array([1.0, NAN, 3.0])
    before = a.copy()
    assert stats.mean(a) == 2.0
    np.testing.assert_array_equal(a, before)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.floats(-1e3, 1e3), st.just(NAN)), min_size=0, max_size=50))
def test_slope_matches_polyfit_on_positions(xs):
    pos = [i for i, x in enumerate(xs) if math.isfinite(x)]
    got = stats.slope(xs)
    if len(pos) < 2:
        assert math.isnan(got)
        return
    want = np.polyfit(np.array(pos, float), np.array([xs[i] for i in pos]), 1)[0]
    assert got == pytest.approx(want, rel=1e-6, abs=1e-6)
