"""Pure statistics over a window of metric values.

Every function takes a sequence (list, tuple or numpy array) of floats in time order, oldest
first.  All statistics except :func:`nonfinite` and :func:`count` ignore non-finite values
(NaN, +inf, -inf); with no finite value left they return NaN.  Nothing here raises on
empty input.

The functions are vectorised with numpy so a 1,000-value window costs a few microseconds.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence, Union

import numpy as np

Values = Union[Sequence[float], np.ndarray]

NAN = float("nan")


def as_array(values: Values) -> np.ndarray:
    """``values`` as a 1-D float64 array (no copy when it already is one)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    return arr


def finite(values: Values) -> np.ndarray:
    """The finite values, in order."""
    arr = as_array(values)
    mask = np.isfinite(arr)
    return arr if mask.all() else arr[mask]


def count(values: Values) -> float:
    """Number of values in the window, finite or not."""
    return float(len(values))


def nonfinite(values: Values) -> float:
    """Number of NaN / +inf / -inf values in the window."""
    arr = as_array(values)
    if arr.size == 0:
        return 0.0
    return float(arr.size - np.count_nonzero(np.isfinite(arr)))


def mean(values: Values) -> float:
    x = finite(values)
    if not x.size:
        return NAN
    with np.errstate(over="ignore", invalid="ignore"):
        m = float(x.sum()) / x.size
    if not math.isfinite(m):  # huge finite values overflowing the sum
        return float(np.sum(x / x.size))
    return m


def min_(values: Values) -> float:
    x = finite(values)
    return float(x.min()) if x.size else NAN


def max_(values: Values) -> float:
    x = finite(values)
    return float(x.max()) if x.size else NAN


def std(values: Values) -> float:
    """Population standard deviation (ddof=0)."""
    x = finite(values)
    if not x.size:
        return NAN
    with np.errstate(over="ignore", invalid="ignore"):
        d = x - float(x.sum()) / x.size
        v = float(d @ d) / x.size
        return math.sqrt(v) if math.isfinite(v) else float((x / x.size).std() * x.size)


def range_(values: Values) -> float:
    """max - min of the finite values."""
    x = finite(values)
    return float(x.max() - x.min()) if x.size else NAN


def median(values: Values) -> float:
    return _quantile(finite(values), 0.5)


def quantile(values: Values, q: float) -> float:
    """Linear-interpolated quantile, ``q`` in [0, 1]."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must be in [0, 1], got {q!r}")
    return _quantile(finite(values), q)


def _quantile(x: np.ndarray, q: float) -> float:
    """numpy's default ("linear") quantile via a partial sort (much faster than np.quantile)."""
    n = x.size
    if n == 0:
        return NAN
    if n == 1:
        return float(x[0])
    pos = q * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    part = np.partition(x, (lo, hi)) if hi != lo else np.partition(x, lo)
    a, b = float(part[lo]), float(part[hi])
    frac = pos - lo
    return a if frac == 0.0 else a + (b - a) * frac


@functools.lru_cache(maxsize=64)
def _centered_steps(n: int) -> tuple[np.ndarray, float]:
    """(x - mean(x), sum((x - mean(x))**2)) for x = 0..n-1 (cached: windows repeat)."""
    dx = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    dx.setflags(write=False)
    return dx, float(dx @ dx)


def slope(values: Values) -> float:
    """Least-squares slope per step.

    Each value keeps its position in the window as its x coordinate, so a non-finite value
    in the middle leaves a gap instead of shifting the later values.  Fewer than two finite
    values give NaN.
    """
    arr = as_array(values)
    mask = np.isfinite(arr)
    if mask.all():
        n = arr.size
        if n < 2:
            return NAN
        dx, denom = _centered_steps(n)
        return float(dx @ arr) / denom  # sum(dx) == 0, so dx @ (y - mean(y)) == dx @ y
    n = int(np.count_nonzero(mask))
    if n < 2:
        return NAN
    y = arr[mask]
    x = np.flatnonzero(mask).astype(np.float64)
    dx = x - x.mean()
    return float(dx @ (y - y.mean())) / float(dx @ dx)


def ema(values: Values, alpha: float) -> float:
    """Exponential moving average over the finite values in order.

    ``e_0 = x_0`` and ``e_i = alpha * x_i + (1 - alpha) * e_{i-1}``; returns the last ``e``.
    ``alpha`` in (0, 1].  Computed in closed form (vectorised), equal to the loop above.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"ema alpha must be in (0, 1], got {alpha!r}")
    x = finite(values)
    n = x.size
    if n == 0:
        return NAN
    if alpha == 1.0 or n == 1:
        return float(x[-1])
    return float(_ema_weights(float(alpha), n) @ x)


@functools.lru_cache(maxsize=64)
def _ema_weights(alpha: float, n: int) -> np.ndarray:
    """Weight of x_i (i >= 1) is alpha * (1-alpha)^(n-1-i); weight of x_0 is (1-alpha)^(n-1)."""
    powers = np.power(1.0 - alpha, np.arange(n - 1, -1, -1, dtype=np.float64))
    weights = alpha * powers
    weights[0] = powers[0]
    weights.setflags(write=False)
    return weights


def last(values: Values) -> float:
    """The most recent finite value."""
    arr = as_array(values)
    for i in range(arr.size - 1, -1, -1):
        v = float(arr[i])
        if math.isfinite(v):
            return v
    return NAN


#: statistic name -> function(values) (the ones without an extra parameter)
SIMPLE: dict[str, Callable[[Values], float]] = {
    "mean": mean,
    "min": min_,
    "max": max_,
    "std": std,
    "range": range_,
    "median": median,
    "slope": slope,
    "nonfinite": nonfinite,
    "last": last,
    "count": count,
}

__all__ = [
    "as_array",
    "finite",
    "count",
    "nonfinite",
    "mean",
    "min_",
    "max_",
    "std",
    "range_",
    "median",
    "quantile",
    "slope",
    "ema",
    "last",
    "SIMPLE",
]
