"""MetricHistory: the bounded view of recent metric values that guards read.

Per metric it keeps the values of the current phase in a ring buffer (``capacity`` values,
the largest window any guard needs) and, for every finished phase, the final tail of its most
recent visit (same capacity).  Each metric has its own buffer: a step that does not report a
metric adds nothing to that metric's window (so ``window(m, 50)`` is "the last 50 values of m
reported in this phase").  Non-finite values are stored as they are; the statistics decide
what to do with them.

Capacity can differ per metric (``capacities``): the engine keeps, for each metric, only the
window its guards read, and a small default for the rest, so a guard with a 10,000-step window
on one metric does not make every metric keep 10,000 values in memory and in each checkpoint.

State round-trips through :meth:`MetricHistory.to_dict` / :meth:`MetricHistory.from_dict`
as strict JSON.  Version 2 stores each window as the base64 of its little-endian float64 bytes
(exact, NaN/inf included, and cheap to write at any window size); version 1 (lists, non-finite
values as the strings ``"nan"``, ``"inf"``, ``"-inf"``) is still read.
"""

from __future__ import annotations

import base64
import math
from typing import Any, Mapping

import numpy as np

_EMPTY = np.empty(0, dtype=np.float64)
_EMPTY.setflags(write=False)


class _Buf:
    """Storage shared by the snapshots of one ring; ``filled`` slots have been written."""

    __slots__ = ("a", "filled")

    def __init__(self, size: int) -> None:
        self.a = np.empty(size, dtype=np.float64)
        self.filled = 0


class _Ring:
    """A persistent fixed-capacity float window: ``pushed`` returns a new ring and never changes
    what an existing ring reads.

    Values are appended into a buffer twice the capacity; a ring is the slice
    ``buf[start:end]`` (at most ``cap`` values).  Only the ring at the buffer's written end may
    append in place (a slot is written once per buffer); any other ring, or a full buffer,
    copies its last values into a fresh buffer.  So a kept snapshot (an earlier curriculum
    state, a fork) always reads what it read when it was made, and a linear run of pushes costs
    O(1) amortised.
    """

    __slots__ = ("cap", "buf", "start", "end", "n")

    def __init__(self, cap: int, buf: _Buf | None = None, start: int = 0, end: int = 0, n: int = 0) -> None:
        self.cap = cap
        self.buf = buf
        self.start = start
        self.end = end
        self.n = n  # values pushed in total (not capped)

    def pushed(self, v: float) -> "_Ring":
        b = self.buf
        if b is not None and self.end == b.filled and self.end < len(b.a):
            b.a[self.end] = v
            b.filled += 1
            end = self.end + 1
            return _Ring(self.cap, b, max(self.start, end - self.cap), end, self.n + 1)
        keep = self.last(self.cap - 1)
        nb = _Buf(2 * self.cap)
        k = len(keep)
        nb.a[:k] = keep
        nb.a[k] = v
        nb.filled = k + 1
        return _Ring(self.cap, nb, 0, k + 1, self.n + 1)

    def last(self, k: int) -> np.ndarray:
        k = min(k, self.end - self.start)
        if k <= 0 or self.buf is None:
            return _EMPTY
        return self.buf.a[self.end - k : self.end].copy()

    def values(self) -> np.ndarray:
        return self.last(self.cap)


def _enc(v: float) -> float | str:
    if math.isfinite(v):
        return v
    if math.isnan(v):
        return "nan"
    return "inf" if v > 0 else "-inf"


def _dec(v: Any) -> float:
    if v is None:
        return math.nan
    if isinstance(v, str):
        s = v.strip().lower()
        if s not in ("nan", "inf", "-inf", "+inf"):
            raise ValueError(f"bad encoded metric value {v!r}")
        return float(s)
    return float(v)


def _enc_list(arr: np.ndarray) -> list[float | str]:
    return [_enc(float(x)) for x in arr.tolist()]


def _dec_array(vals: list[Any]) -> np.ndarray:
    return np.array([_dec(v) for v in vals], dtype=np.float64)


def _pack(arr: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(arr, dtype="<f8").tobytes()).decode("ascii")


def _unpack(entry: Any) -> np.ndarray:
    """A stored window: version 2's base64 string, or version 1's list of numbers."""
    if isinstance(entry, str):
        try:
            raw = base64.b64decode(entry.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError) as e:
            raise ValueError(f"bad encoded metric window ({e})") from None
        if len(raw) % 8:
            raise ValueError("bad encoded metric window (not a whole number of float64 values)")
        return np.frombuffer(raw, dtype="<f8").astype(np.float64)
    if isinstance(entry, list):
        return _dec_array(entry)
    raise ValueError(f"bad encoded metric window {type(entry).__name__}")


class MetricHistory:
    """Current-phase windows plus the final tail of each finished phase."""

    def __init__(self, capacity: int, capacities: Mapping[str, int] | None = None) -> None:
        """``capacity``: values kept per metric; ``capacities``: metric -> its own capacity
        (metrics not listed keep ``capacity``)."""
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)):
            raise TypeError(f"capacity must be an int, got {type(capacity).__name__}")
        self._default = max(1, int(capacity))
        self._caps = {str(m): max(1, int(n)) for m, n in (capacities or {}).items()}
        self._capacity = max([self._default, *self._caps.values()])
        self._current: dict[str, _Ring] = {}
        self._finished: dict[str, dict[str, np.ndarray]] = {}
        self._phase: str | None = None
        self._previous: str | None = None
        self._phase_step = 0

    # -- properties ---------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """The largest number of values kept for any metric."""
        return self._capacity

    def capacity_of(self, metric: str) -> int:
        """How many values of ``metric`` are kept."""
        return self._caps.get(metric, self._default)

    @property
    def phase(self) -> str | None:
        return self._phase

    @property
    def previous_phase(self) -> str | None:
        return self._previous

    @property
    def phase_step(self) -> int:
        """Number of :meth:`push` calls since the current phase began."""
        return self._phase_step

    @property
    def metrics(self) -> frozenset[str]:
        """Names of the metrics seen in the current phase."""
        return frozenset(self._current)

    @property
    def finished_phases(self) -> tuple[str, ...]:
        return tuple(self._finished)

    # -- mutation -----------------------------------------------------------------------
    def begin_phase(self, name: str) -> None:
        """Start phase ``name``: freeze the current phase's tail as the previous phase."""
        if not isinstance(name, str) or not name:
            raise ValueError("phase name must be a non-empty string")
        if self._phase is not None:
            finished = dict(self._finished)  # a new mapping: snapshots taken earlier keep theirs
            finished.pop(self._phase, None)  # re-insert so order = recency
            finished[self._phase] = {m: r.values() for m, r in self._current.items()}
            self._finished = finished
            self._previous = self._phase
        self._phase = name
        self._current = {}
        self._phase_step = 0

    def push(self, metrics: Mapping[str, float]) -> None:
        """Record one training step's metrics (non-numeric values are stored as NaN)."""
        cur = dict(self._current)  # a new mapping: snapshots taken earlier keep theirs
        for name, value in metrics.items():
            ring = cur.get(name)
            if ring is None:
                ring = _Ring(self._caps.get(name, self._default))
            try:
                v = float(value)
            except (TypeError, ValueError):
                v = math.nan
            cur[name] = ring.pushed(v)
        self._current = cur
        self._phase_step += 1

    # -- pure variants (curriculum/core.py): a new history, this one unchanged ------------
    def _copy(self) -> "MetricHistory":
        h = object.__new__(MetricHistory)
        h._default, h._caps, h._capacity = self._default, self._caps, self._capacity
        h._current, h._finished = self._current, self._finished
        h._phase, h._previous, h._phase_step = self._phase, self._previous, self._phase_step
        return h

    def pushed(self, metrics: Mapping[str, float]) -> "MetricHistory":
        """This history with one more step (this one is left as it was)."""
        h = self._copy()
        h.push(metrics)
        return h

    def begun(self, name: str) -> "MetricHistory":
        """This history with phase ``name`` begun (this one is left as it was)."""
        h = self._copy()
        h.begin_phase(name)
        return h

    # -- reading ------------------------------------------------------------------------
    def window(self, metric: str, n: int) -> np.ndarray:
        """The last ``n`` values of ``metric`` in the current phase (fewer early on)."""
        ring = self._current.get(metric)
        if ring is None:
            return _EMPTY
        return ring.last(int(n))

    def phase_window(self, metric: str, n: int, phase: str | None = None) -> np.ndarray:
        """Last ``n`` values of ``metric`` at the end of the previous phase (``phase=None``)
        or of the most recent finished visit of ``phase``; empty when there is none."""
        name = self._previous if phase is None else phase
        if name is None:
            return _EMPTY
        tail = self._finished.get(name, {}).get(metric)
        if tail is None or n <= 0:
            return _EMPTY
        return tail[-int(n) :].copy()

    def reported(self, metric: str) -> int:
        """How many values of ``metric`` were pushed in the current phase (not capped)."""
        ring = self._current.get(metric)
        return ring.n if ring is not None else 0

    # -- state --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON-safe snapshot (``json.dumps(..., allow_nan=False)`` works)."""
        return {
            "version": 2,
            "capacity": self._default,
            "capacities": dict(self._caps),
            "phase": self._phase,
            "previous_phase": self._previous,
            "phase_step": self._phase_step,
            "current": {m: {"reported": r.n, "values": _pack(r.values())} for m, r in self._current.items()},
            "finished": {p: {m: _pack(a) for m, a in tails.items()} for p, tails in self._finished.items()},
        }

    @classmethod
    def from_dict(
        cls, d: Mapping[str, Any], capacity: int | None = None, capacities: Mapping[str, int] | None = None
    ) -> "MetricHistory":
        """Restore a snapshot; with ``capacity`` / ``capacities``, under those capacities instead
        of the stored ones (a resume whose guards now read other windows): each window keeps
        its newest values that fit."""
        if capacity is None:
            h = cls(int(d["capacity"]), d.get("capacities") or {})
        else:
            h = cls(capacity, capacities)
        h._phase = d.get("phase")
        h._previous = d.get("previous_phase")
        h._phase_step = int(d.get("phase_step", 0))
        for m, entry in d.get("current", {}).items():
            cap = h.capacity_of(m)
            vals = _unpack(entry["values"])[-cap:]
            ring = _Ring(cap, n=max(0, int(entry.get("reported", len(vals))) - len(vals)))
            for v in vals.tolist():
                ring = ring.pushed(v)
            h._current[m] = ring
        for p, tails in d.get("finished", {}).items():
            h._finished[p] = {m: _unpack(vals)[-h.capacity_of(m) :] for m, vals in tails.items()}
        return h

    def __repr__(self) -> str:
        return (
            f"MetricHistory(capacity={self._capacity}, phase={self._phase!r}, "
            f"previous_phase={self._previous!r}, phase_step={self._phase_step})"
        )


__all__ = ["MetricHistory"]
