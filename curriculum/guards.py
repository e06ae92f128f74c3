"""Guards: conditions on live training metrics with patience, interval, cooldown, hysteresis.

A guard is compiled once from its TOML table (:func:`compile_guard`) and then updated once per
training step (after the step's metrics were pushed into the
:class:`~curriculum.windows.MetricHistory`)::

    guard = compile_guard("escalate", {"when": "mean(reward_mean, 50) > 25", "patience": 3},
                          metrics=runner.metric_names, functions=guard_function_names())
    state = guard.init_state()                 # at each phase start
    state, result = guard.update(state, history, guard_functions())
    if result.fired: ...                       # take the transition

Kinds (key ``type``, default ``"expr"``; each is a class in curriculum/guard_kinds.py, found
through its registry):

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
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping

from curriculum import collapse as col
from curriculum import expr as ex
from curriculum.guard_kinds import KIND_REGISTRY, KINDS, GuardConfigError

COMMON_KEYS = frozenset({"type", "patience", "check_every", "cooldown", "min_dwell", "description"})


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

        if self.until is not None:
            merge(ex.windows_needed(self.until))
        merge(KIND_REGISTRY[self.kind].windows(self))
        return need

    def phases_referenced(self) -> set[str]:
        out = set(KIND_REGISTRY[self.kind].phases(self))
        if self.until is not None:
            out |= ex.phases_referenced(self.until)
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
        st.update(KIND_REGISTRY[self.kind].init_state(self))
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
        kind = KIND_REGISTRY[self.kind]
        st, detector_out = kind.consume(self, st, view, step)
        st["last_step"] = step

        skip = self._skip_reason(st, step)
        if skip is not None:
            evidence["skipped"] = skip
            if detector_out is not None:  # light: the full evidence comes with checks
                evidence.update(statistic=detector_out.statistic, alarm=detector_out.fired)
            return st, GuardResult(False, None, False, bool(st["active"]), evidence, [])

        satisfied, ev_enter, nonfinite = kind.condition(self, self.when, view, functions, detector_out)
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
                leave, ev_until, nf_until = KIND_REGISTRY["expr"].condition(self, self.until, view, functions, None)
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
    if kind not in KIND_REGISTRY:
        close = difflib.get_close_matches(str(kind), KINDS, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise GuardConfigError("type", f"unknown guard type {kind!r} (one of {', '.join(KINDS)}){hint}")
    allowed = COMMON_KEYS | KIND_REGISTRY[kind].keys
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.6)
            if close:
                hint = f"; did you mean '{close[0]}'?"
            else:
                other = [k.name for k in KIND_REGISTRY.values() if key in k.keys]
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
    fields = KIND_REGISTRY[kind].compile(table, frozenset(metrics), functions)
    return Guard(name, kind, description=desc, **fields, **common)


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
