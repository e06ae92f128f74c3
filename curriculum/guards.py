"""Guards: conditions on live training metrics with patience, interval, cooldown, hysteresis.

A guard is compiled once from its TOML table (:func:`compile_guard`) and then updated once per
training step (after the step's metrics were pushed into the
:class:`~curriculum.windows.MetricHistory`)::

    guard = compile_guard("escalate", {"when": "mean(reward_mean, 50) > 25", "patience": 3},
                          metrics=runner.metric_names, functions=guard_function_names())
    state = guard.init_state()                 # at each phase start
    state, result = guard.update(state, history, guard_functions())
    if result.fired: ...                       # take the transition

Kinds (key ``type``, default ``"expr"``):

``expr``
    ``when`` (the enter condition, see :mod:`curriculum.expr`), optional ``until`` (the leave
    condition: once active, the guard stays active until ``until`` holds; without it, it leaves
    as soon as ``when`` is known to be false).
``collapse``
    the per-group collapse test of :mod:`curriculum.collapse` (its keys: ``false_alarm_rate``
    or ``arl``, ``min_collapse``, ``tolerance``, ``top_loss``, ``baseline``, ``baseline_phase``,
    ``baseline_window``, ``warmup``, ``min_baseline_groups``, ``prior``, ``baseline_margin``,
    ``max_step_evidence``, ``veto``).  The detector consumes every step, also steps that are
    not checks.
``custom``
    ``function`` (a registered name), ``args`` (list of numbers/strings), optional ``windows``
    (table metric -> window length the function reads, so the history keeps enough values).

Common keys: ``patience`` (consecutive satisfied checks needed to fire, default 1),
``check_every`` (check when ``phase_step % check_every == 0``, default 1), ``cooldown`` (no
check during the ``cooldown`` steps after the phase began or after the guard fired, default 0),
``min_dwell`` (no check before phase step ``min_dwell``, default 0), ``description``.

Semantics, per check: an unknown result (non-finite input, failing custom function) counts as
not satisfied and resets the consecutive count.  When ``consecutive >= patience`` an inactive
guard becomes active and ``fired`` is True for that one check; while active, ``fired`` is False
and ``active`` True.  An active guard leaves (``active`` False, count reset) when ``until`` is
known true (or, without ``until``, when ``when`` is known false); unknown never makes it leave.
It can fire again later (after its cooldown).

State is plain JSON data; it resets by itself when the view's phase changes or its phase step
goes backwards, but the engine should call :meth:`Guard.init_state` at each phase start.
Evidence is JSON-safe: non-finite numbers appear as None and are named in ``nonfinite_terms``.
"""

from __future__ import annotations

import difflib
import math
from collections import abc
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping

import numpy as np

from curriculum import collapse as col
from curriculum import expr as ex

COMMON_KEYS = frozenset({"type", "patience", "check_every", "cooldown", "min_dwell", "description"})
KIND_KEYS: dict[str, frozenset[str]] = {
    "expr": frozenset({"when", "until"}),
    "collapse": frozenset(col.COLLAPSE_KEYS | col.REMOVED_KEYS),  # removed ones: a pointed error
    "custom": frozenset({"function", "args", "windows"}),
}
KINDS = tuple(KIND_KEYS)


class GuardConfigError(ValueError):
    """A guard table is invalid.  ``key`` is the offending key within the table."""

    def __init__(self, key: str, message: str, guard: str | None = None):
        self.key = key
        self.message = message
        self.guard = guard
        where = f"guard '{guard}', " if guard else ""
        super().__init__(f"{where}key '{key}': {message}")


@dataclass(frozen=True)
class GuardResult:
    """Outcome of one :meth:`Guard.update`.

    ``checked``: whether the condition was evaluated at this step (False during min_dwell,
    cooldown or between check_every steps; ``evidence["skipped"]`` says why).
    ``satisfied``: the enter condition's value at this check (None: unknown or not checked).
    ``fired``: True only at the check where the guard becomes active.
    ``active``: whether the guard is active after this update.
    """

    checked: bool
    satisfied: bool | None
    fired: bool
    active: bool
    evidence: dict[str, Any] = field(default_factory=dict)
    nonfinite_terms: list[str] = field(default_factory=list)


_INF = math.inf


def _json_safe(v: Any) -> Any:
    """Strict-JSON-safe copy: non-finite floats -> None, numpy scalars -> Python, tuples -> lists."""
    t = type(v)
    if t is float:
        return v if (v == v and v != _INF and v != -_INF) else None
    if v is None or t is str or t is bool or t is int:
        return v
    if t is dict:
        return {(k if type(k) is str else str(k)): _json_safe(x) for k, x in v.items()}
    if t is list or t is tuple:
        return [_json_safe(x) for x in v]
    if isinstance(v, np.generic):
        return _json_safe(v.item())
    if isinstance(v, float):
        return _json_safe(float(v))
    if isinstance(v, int):
        return int(v)
    if isinstance(v, abc.Mapping):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return repr(v)


# ---------------------------------------------------------------------------------------
# config parsing
# ---------------------------------------------------------------------------------------


def _int_key(table: Mapping[str, Any], key: str, default: int, lo: int) -> int:
    v = table.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise GuardConfigError(key, f"must be an integer, got {v!r}")
    if v < lo:
        raise GuardConfigError(key, f"must be >= {lo}, got {v}")
    return v


def _expr_key(table: Mapping[str, Any], key: str, metrics, functions) -> ex.Node:
    text = table[key]
    if not isinstance(text, str):
        raise GuardConfigError(key, f"must be an expression string, got {type(text).__name__}")
    if not text.strip():
        raise GuardConfigError(key, "is empty")
    try:
        return ex.compile_condition(text, metrics, functions)
    except ex.ExprError as e:
        raise GuardConfigError(key, str(e)) from e


@dataclass(frozen=True)
class Guard:
    name: str
    kind: str
    patience: int = 1
    check_every: int = 1
    cooldown: int = 0
    min_dwell: int = 0
    description: str = ""
    when: ex.Node | None = None
    until: ex.Node | None = None
    collapse: col.CollapseConfig | None = None
    function: str | None = None
    args: tuple[Any, ...] = ()
    windows: Mapping[str, int] = field(default_factory=dict)

    # -- introspection ------------------------------------------------------------------
    def windows_needed(self) -> dict[str, int]:
        need: dict[str, int] = {}

        def merge(d: Mapping[str, int]) -> None:
            for m, n in d.items():
                need[m] = max(need.get(m, 0), int(n))

        if self.when is not None:
            merge(ex.windows_needed(self.when))
        if self.until is not None:
            merge(ex.windows_needed(self.until))
        if self.collapse is not None:
            merge({s: max(self.collapse.baseline_window, self.collapse.warmup) for s in col.READS})
        merge(self.windows)
        return need

    def phases_referenced(self) -> set[str]:
        out: set[str] = set()
        for node in (self.when, self.until):
            if node is not None:
                out |= ex.phases_referenced(node)
        if self.collapse is not None and self.collapse.baseline_phase:
            out.add(self.collapse.baseline_phase)
        return out

    # -- state --------------------------------------------------------------------------
    def init_state(self) -> dict[str, Any]:
        st: dict[str, Any] = {
            "phase": None,
            "last_step": 0,  # view.phase_step seen at the previous update
            "last_check": None,  # phase step of the last check
            "consecutive": 0,
            "active": False,
            "fired_at": None,  # phase step of the last fire
            "checks": 0,
            "fires": 0,
        }
        if self.collapse is not None:
            st["detector"] = col.collapse_init(self.collapse)
            st["missed_steps"] = 0
        return st

    def update(
        self,
        state: Mapping[str, Any],
        view: Any,
        functions: Mapping[str, Callable[..., Any]] | None = None,
    ) -> tuple[dict[str, Any], GuardResult]:
        """Advance the guard to the view's current step (pure: returns a new state)."""
        functions = functions or {}
        step = int(view.phase_step)
        phase = view.phase
        st = dict(state)
        if st.get("phase") != phase or step < int(st.get("last_step", 0)):
            st = self.init_state()
            st["phase"] = phase
        evidence: dict[str, Any] = {}
        detector_out = None
        if self.collapse is not None:
            st, detector_out = self._consume(st, view, step)
        st["last_step"] = step

        skip = self._skip_reason(st, step)
        if skip is not None:
            evidence["skipped"] = skip
            if detector_out is not None:  # light: the full evidence comes with checks
                evidence.update(statistic=detector_out.statistic, alarm=detector_out.fired)
            return st, GuardResult(False, None, False, bool(st["active"]), evidence, [])

        satisfied, ev_enter, nonfinite = self._condition(self.when, view, functions, detector_out)
        evidence.update(ev_enter)
        st["checks"] = int(st["checks"]) + 1
        st["last_check"] = step
        fired = False
        if not st["active"]:
            st["consecutive"] = int(st["consecutive"]) + 1 if satisfied is True else 0
            if st["consecutive"] >= self.patience:
                st["active"] = True
                st["fired_at"] = step
                st["fires"] = int(st["fires"]) + 1
                fired = True
        else:
            if self.until is not None:
                leave, ev_until, nf_until = self._condition(self.until, view, functions, None)
                evidence["until"] = ev_until
                evidence["until_satisfied"] = leave
                nonfinite = nonfinite + [t for t in nf_until if t not in nonfinite]
                leaving = leave is True
            else:
                leaving = satisfied is False
            if leaving:
                st["active"] = False
                st["consecutive"] = 0
            else:
                st["consecutive"] = int(st["consecutive"]) + 1 if satisfied is True else st["consecutive"]
        evidence["satisfied"] = satisfied
        evidence["consecutive"] = st["consecutive"]
        evidence["patience"] = self.patience
        evidence["phase_step"] = step
        return st, GuardResult(True, satisfied, fired, bool(st["active"]), evidence, nonfinite)

    # -- internals ----------------------------------------------------------------------
    def _skip_reason(self, st: Mapping[str, Any], step: int) -> str | None:
        if step < 1:
            return "no_data"
        if st.get("last_check") == step:
            return "already_checked"
        if step < self.min_dwell:
            return "min_dwell"
        ref = st.get("fired_at")
        ref = 0 if ref is None else int(ref)
        if self.cooldown and step - ref <= self.cooldown:
            return "cooldown"
        if step % self.check_every != 0:
            return "check_every"
        return None

    def _condition(self, node, view, functions, detector_out) -> tuple[bool | None, dict[str, Any], list[str]]:
        if self.kind == "expr":
            ev = ex.evaluate(node, view, functions)
            evidence: dict[str, Any] = {"terms": _json_safe(ev.terms)}
            if ev.errors:
                evidence["errors"] = dict(ev.errors)
            return ev.satisfied, evidence, list(ev.nonfinite_terms)
        if self.kind == "collapse":
            out = detector_out
            evidence = _json_safe(dict(out.evidence, alarm=out.fired, ready=out.ready))
            nonfinite = [m for m in col.GROUP_METRICS[:2] if _latest_nonfinite(view, m)]
            return (out.fired if out.ready else None), evidence, nonfinite
        # custom
        text = f"{self.function}({', '.join(repr(a) for a in self.args)})"
        fn = functions.get(self.function) if self.function else None
        if fn is None:
            return None, {"terms": {text: None}, "errors": {text: f"custom function '{self.function}' is not registered"}}, [text]
        try:
            raw = fn(view, *self.args)
        except Exception as e:  # never crash the engine
            return None, {"terms": {text: None}, "errors": {text: f"{type(e).__name__}: {e}"}}, [text]
        if isinstance(raw, np.generic):
            raw = raw.item()
        if isinstance(raw, bool):
            return raw, {"terms": {text: raw}}, []
        if isinstance(raw, (int, float)):
            f = float(raw)
            if not math.isfinite(f):
                return None, {"terms": {text: None}}, [text]
            return bool(f), {"terms": {text: f}}, []
        return None, {"terms": {text: None}, "errors": {text: f"returned {type(raw).__name__}, expected bool or number"}}, [text]

    def _consume(self, st: dict[str, Any], view: Any, step: int) -> tuple[dict[str, Any], col.CollapseOutput]:
        """Feed the detector every step pushed since the previous update."""
        cfg = self.collapse
        assert cfg is not None
        new = step - int(st.get("last_step", 0))
        det = st["detector"]
        out = None
        if new > 0:
            baseline_steps = None
            if cfg.baseline == "previous_phase" and det.get("baseline") is None:
                baseline_steps = _rows(
                    {m: view.phase_window(m, cfg.baseline_window, cfg.baseline_phase) for m in col.READS}
                )
            if new > getattr(view, "capacity", new):
                st["missed_steps"] = int(st.get("missed_steps", 0)) + new - int(view.capacity)
            span = min(new, int(getattr(view, "capacity", new)))
            for row in _rows({m: view.window(m, span) for m in col.READS}, span):
                det, out = col.collapse_update(cfg, det, row, baseline_steps)
                baseline_steps = None  # read once, when the baseline is first needed
        if out is None:  # no new step: report the current state without consuming
            _, out = col.collapse_update(cfg, det, None, None)
        st["detector"] = det
        return st, out


def _rows(windows: Mapping[str, Any], span: int | None = None) -> list[dict[str, float]]:
    """Per-step dicts from per-metric windows, right-aligned (the last value is the newest step);
    a metric with fewer values is missing (NaN) in the earliest rows."""
    n = span if span is not None else max([0, *(len(w) for w in windows.values())])
    rows: list[dict[str, float]] = [{} for _ in range(n)]
    for m, w in windows.items():
        off = n - len(w)
        for i in range(n):
            j = i - off
            rows[i][m] = float(w[j]) if 0 <= j < len(w) else math.nan
    return rows


def _latest_nonfinite(view: Any, metric: str) -> bool:
    w = view.window(metric, 1)
    return bool(len(w)) and not math.isfinite(float(w[-1]))


def compile_guard(
    name: str,
    table: Mapping[str, Any],
    metrics: Collection[str],
    functions: Collection[str] = (),
) -> Guard:
    """Validate a guard table and compile its expressions.

    ``metrics``: the metric names the runner reports; ``functions``: registered custom function
    names (a mapping of callables also enables arity checks).  Raises
    :class:`GuardConfigError` (key, message) for unknown keys (with a suggestion), wrong types
    and bad values, including expression errors (key ``when`` / ``until``).
    """
    try:
        return _compile(name, table, metrics, functions)
    except GuardConfigError as e:
        if e.guard is None:
            raise GuardConfigError(e.key, e.message, name) from e.__cause__
        raise


def _compile(name, table, metrics, functions) -> Guard:
    if not isinstance(name, str) or not name:
        raise GuardConfigError("name", "guard name must be a non-empty string")
    if not isinstance(table, Mapping):
        raise GuardConfigError("type", f"a guard must be a table, got {type(table).__name__}")
    kind = table.get("type", "expr")
    if kind not in KIND_KEYS:
        close = difflib.get_close_matches(str(kind), KINDS, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise GuardConfigError("type", f"unknown guard type {kind!r} (one of {', '.join(KINDS)}){hint}")
    allowed = COMMON_KEYS | KIND_KEYS[kind]
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.6)
            if close:
                hint = f"; did you mean '{close[0]}'?"
            else:
                other = [k for k, keys in KIND_KEYS.items() if key in keys]
                hint = f" (it belongs to type = \"{other[0]}\")" if other else ""
            raise GuardConfigError(str(key), f"unknown key for a guard of type \"{kind}\"{hint}")
    common = dict(
        patience=_int_key(table, "patience", 1, 1),
        check_every=_int_key(table, "check_every", 1, 1),
        cooldown=_int_key(table, "cooldown", 0, 0),
        min_dwell=_int_key(table, "min_dwell", 0, 0),
    )
    desc = table.get("description", "")
    if not isinstance(desc, str):
        raise GuardConfigError("description", "must be a string")
    metrics = frozenset(metrics)

    if kind == "expr":
        if "when" not in table:
            raise GuardConfigError("when", "is required for an expr guard (the condition)")
        when = _expr_key(table, "when", metrics, functions)
        until = _expr_key(table, "until", metrics, functions) if "until" in table else None
        return Guard(name, kind, description=desc, when=when, until=until, **common)

    if kind == "collapse":
        sub = {k: v for k, v in table.items() if k in col.COLLAPSE_KEYS | col.REMOVED_KEYS}
        try:
            cfg = col.collapse_config(sub)
        except col.CollapseConfigError as e:
            raise GuardConfigError(e.key, e.message) from e
        lacking = [m for m in col.GROUP_METRICS[:2] if m not in metrics]
        if lacking:
            raise GuardConfigError(
                "type",
                "the collapse detector reads GRPO group counts (groups_flat, groups_spread, "
                "groups_top, groups_saturated), which this runner does not report",
            )
        return Guard(name, kind, description=desc, collapse=cfg, **common)

    # custom
    fname = table.get("function")
    if not isinstance(fname, str) or not fname:
        raise GuardConfigError("function", "is required: the name of a registered guard function")
    if fname not in functions:
        close = difflib.get_close_matches(fname, sorted(functions), n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        known = ", ".join(sorted(functions)) or "none registered (list guard_modules in the spec)"
        raise GuardConfigError("function", f"no guard function named '{fname}'{hint} (known: {known})")
    args = table.get("args", [])
    if not isinstance(args, (list, tuple)):
        raise GuardConfigError("args", "must be a list of numbers or strings")
    for a in args:
        if isinstance(a, bool) or not isinstance(a, (int, float, str)):
            raise GuardConfigError("args", f"must hold only numbers or strings, got {a!r}")
        if isinstance(a, float) and not math.isfinite(a):
            raise GuardConfigError("args", f"numbers must be finite, got {a!r}")
    windows = table.get("windows", {})
    if not isinstance(windows, Mapping):
        raise GuardConfigError("windows", "must be a table of metric name -> window length")
    for m, n in windows.items():
        if m not in metrics:
            close = difflib.get_close_matches(str(m), sorted(metrics), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise GuardConfigError("windows", f"unknown metric '{m}'{hint}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise GuardConfigError("windows", f"{m}: window must be a positive integer, got {n!r}")
    if isinstance(functions, Mapping):
        import inspect

        try:
            inspect.signature(functions[fname]).bind(None, *args)
        except TypeError as e:
            raise GuardConfigError("args", f"do not fit {fname}(): {e}") from None
        except ValueError:
            pass
    return Guard(
        name, kind, description=desc, function=fname,
        args=tuple(float(a) if isinstance(a, int) else a for a in args),
        windows=dict(windows), **common,
    )


def compile_guards(
    tables: Mapping[str, Mapping[str, Any]], metrics: Collection[str], functions: Collection[str] = ()
) -> dict[str, Guard]:
    return {name: compile_guard(name, t, metrics, functions) for name, t in tables.items()}


def windows_needed(guards: Collection[Guard]) -> dict[str, int]:
    """Merged per-metric windows of several guards (the MetricHistory capacity is the max)."""
    need: dict[str, int] = {}
    for g in guards:
        for m, n in g.windows_needed().items():
            need[m] = max(need.get(m, 0), n)
    return need


def history_capacity(guards: Collection[Guard]) -> int:
    return max([1, *windows_needed(guards).values()])


__all__ = [
    "GuardConfigError",
    "GuardResult",
    "Guard",
    "compile_guard",
    "compile_guards",
    "windows_needed",
    "history_capacity",
    "KINDS",
]
