"""The kinds of guard (``type = "..."`` in a guard table), one class each, behind one protocol.

A kind says which keys its table takes, compiles a table into the fields of a
:class:`~curriculum.guards.Guard`, names the metric windows and phases it reads, adds its own
part of the guard's state, and decides one check.  curriculum/guards.py does what every guard
shares (patience, check_every, cooldown, min_dwell, hysteresis with ``until``) and dispatches
the rest here through :data:`KIND_REGISTRY`; there is no ``if kind == ...`` in between.

    expr       ``when`` / ``until`` expressions (curriculum/expr.py)
    collapse   the per-group collapse test (curriculum/collapse.py)
    custom     a registered Python function (curriculum/registry.py)

A penalty controller is a phase's ``controller`` table, not a guard: its kinds (``pid``) are
in curriculum/controllers.py, :data:`~curriculum.controllers.CONTROLLER_KINDS`.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Callable, Collection, Mapping, Protocol

import numpy as np

from curriculum import collapse as col
from curriculum import expr as ex


class GuardConfigError(ValueError):
    """A guard table is invalid.  ``key`` is the offending key within the table."""

    def __init__(self, key: str, message: str, guard: str | None = None):
        self.key = key
        self.message = message
        self.guard = guard
        where = f"guard '{guard}', " if guard else ""
        super().__init__(f"{where}key '{key}': {message}")


class GuardKind(Protocol):
    name: str
    keys: frozenset[str]  # the keys of its table besides the common ones

    def compile(self, table: Mapping[str, Any], metrics: frozenset[str], functions: Collection[str]) -> dict[str, Any]:
        """The Guard fields of a table (``when``, ``collapse``, ``function``, ...)."""

    def windows(self, g: Any) -> Mapping[str, int]:
        """metric -> the window length this guard reads of it."""

    def phases(self, g: Any) -> set[str]:
        """Phases whose final windows this guard reads."""

    def init_state(self, g: Any) -> dict[str, Any]:
        """This kind's part of a fresh guard state."""

    def consume(self, g: Any, st: dict[str, Any], view: Any, step: int) -> tuple[dict[str, Any], Any]:
        """Take in every step since the last update (also steps that are not checks)."""

    def condition(self, g: Any, node: Any, view: Any, functions: Mapping[str, Callable[..., Any]],
                  consumed: Any) -> tuple[bool | None, dict[str, Any], list[str]]:
        """(satisfied: True / False / None for unknown, evidence, non-finite terms) at a check."""


class _Kind:
    """Defaults: reads nothing, keeps no state of its own, consumes nothing."""

    name = ""
    keys: frozenset[str] = frozenset()

    def windows(self, g: Any) -> Mapping[str, int]:
        return {}

    def phases(self, g: Any) -> set[str]:
        return set()

    def init_state(self, g: Any) -> dict[str, Any]:
        return {}

    def consume(self, g: Any, st: dict[str, Any], view: Any, step: int) -> tuple[dict[str, Any], Any]:
        return st, None


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


class ExprKind(_Kind):
    name = "expr"
    keys = frozenset({"when", "until"})

    def compile(self, table, metrics, functions):
        if "when" not in table:
            raise GuardConfigError("when", "is required for an expr guard (the condition)")
        when = _expr_key(table, "when", metrics, functions)
        until = _expr_key(table, "until", metrics, functions) if "until" in table else None
        return {"when": when, "until": until}

    def windows(self, g):
        return ex.windows_needed(g.when) if g.when is not None else {}

    def phases(self, g):
        return ex.phases_referenced(g.when) if g.when is not None else set()

    def condition(self, g, node, view, functions, consumed):
        ev = ex.evaluate(node, view, functions)
        evidence: dict[str, Any] = {"terms": json_safe(ev.terms)}
        if ev.errors:
            evidence["errors"] = dict(ev.errors)
        return ev.satisfied, evidence, list(ev.nonfinite_terms)


class CollapseKind(_Kind):
    name = "collapse"
    keys = frozenset(col.COLLAPSE_KEYS | col.REMOVED_KEYS)  # removed ones: a pointed error

    def compile(self, table, metrics, functions):
        sub = {k: v for k, v in table.items() if k in self.keys}
        try:
            cfg = col.collapse_config(sub)
        except col.CollapseConfigError as e:
            raise GuardConfigError(e.key, e.message) from e
        if any(m not in metrics for m in col.GROUP_METRICS[:2]):
            raise GuardConfigError(
                "type",
                "the collapse detector reads GRPO group counts (groups_flat, groups_spread, "
                "groups_top, groups_saturated), which this runner does not report",
            )
        return {"collapse": cfg}

    def windows(self, g):
        return {s: max(g.collapse.baseline_window, g.collapse.warmup) for s in col.READS}

    def phases(self, g):
        return {g.collapse.baseline_phase} if g.collapse.baseline_phase else set()

    def init_state(self, g):
        return {"detector": col.collapse_init(g.collapse), "missed_steps": 0}

    def consume(self, g, st, view, step):
        """Feed the detector every step pushed since the previous update."""
        cfg = g.collapse
        new = step - int(st.get("last_step", 0))
        det = st["detector"]
        out = None
        if new > 0:
            baseline_steps = None
            if cfg.baseline == "previous_phase" and det.get("baseline") is None:
                baseline_steps = rows(
                    {m: view.phase_window(m, cfg.baseline_window, cfg.baseline_phase) for m in col.READS}
                )
            if new > getattr(view, "capacity", new):
                st["missed_steps"] = int(st.get("missed_steps", 0)) + new - int(view.capacity)
            span = min(new, int(getattr(view, "capacity", new)))
            for row in rows({m: view.window(m, span) for m in col.READS}, span):
                det, out = col.collapse_update(cfg, det, row, baseline_steps)
                baseline_steps = None  # read once, when the baseline is first needed
        if out is None:  # no new step: report the current state without consuming
            _, out = col.collapse_update(cfg, det, None, None)
        st["detector"] = det
        return st, out

    def condition(self, g, node, view, functions, consumed):
        out = consumed
        evidence = json_safe(dict(out.evidence, alarm=out.fired, ready=out.ready))
        nonfinite = [m for m in col.GROUP_METRICS[:2] if _latest_nonfinite(view, m)]
        return (out.fired if out.ready else None), evidence, nonfinite


class CustomKind(_Kind):
    name = "custom"
    keys = frozenset({"function", "args", "windows"})

    def compile(self, table, metrics, functions):
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
        return {"function": fname, "args": tuple(float(a) if isinstance(a, int) else a for a in args),
                "windows": dict(windows)}

    def windows(self, g):
        return g.windows

    def condition(self, g, node, view, functions, consumed):
        text = f"{g.function}({', '.join(repr(a) for a in g.args)})"
        fn = functions.get(g.function) if g.function else None
        if fn is None:
            return None, {"terms": {text: None}, "errors": {text: f"custom function '{g.function}' is not registered"}}, [text]
        try:
            raw = fn(view, *g.args)
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


KIND_REGISTRY: dict[str, GuardKind] = {k.name: k for k in (ExprKind(), CollapseKind(), CustomKind())}
KINDS = tuple(KIND_REGISTRY)
KIND_KEYS: dict[str, frozenset[str]] = {name: k.keys for name, k in KIND_REGISTRY.items()}


# ---------------------------------------------------------------------------- helpers

_INF = math.inf


def json_safe(v: Any) -> Any:
    """Strict-JSON-safe copy: non-finite floats -> None, numpy scalars -> Python, tuples -> lists."""
    t = type(v)
    if t is float:
        return v if (v == v and v != _INF and v != -_INF) else None
    if v is None or t is str or t is bool or t is int:
        return v
    if t is dict:
        return {(k if type(k) is str else str(k)): json_safe(x) for k, x in v.items()}
    if t is list or t is tuple:
        return [json_safe(x) for x in v]
    if isinstance(v, np.generic):
        return json_safe(v.item())
    if isinstance(v, float):
        return json_safe(float(v))
    if isinstance(v, int):
        return int(v)
    if isinstance(v, Mapping):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return repr(v)


def rows(windows: Mapping[str, Any], span: int | None = None) -> list[dict[str, float]]:
    """Per-step dicts from per-metric windows, right-aligned (the last value is the newest step);
    a metric with fewer values is missing (NaN) in the earliest rows."""
    n = span if span is not None else max([0, *(len(w) for w in windows.values())])
    out: list[dict[str, float]] = [{} for _ in range(n)]
    for m, w in windows.items():
        off = n - len(w)
        for i in range(n):
            j = i - off
            out[i][m] = float(w[j]) if 0 <= j < len(w) else math.nan
    return out


def _latest_nonfinite(view: Any, metric: str) -> bool:
    w = view.window(metric, 1)
    return bool(len(w)) and not math.isfinite(float(w[-1]))
