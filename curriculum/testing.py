"""Helpers for testing custom guards without a training run.

    from curriculum import registry
    from curriculum.testing import drive_guard

    with registry.scoped():
        @registry.register_guard()
        def stalled(view, metric, n):
            w = view.window(metric, int(n))
            return len(w) >= n and float(w.max() - w.min()) < 1.0

        results = drive_guard({"type": "custom", "function": "stalled", "args": ["reward_mean", 3],
                               "windows": {"reward_mean": 3}},
                              [{"reward_mean": v} for v in (1.0, 5.0, 5.2, 5.1)])
        assert [r.fired for r in results] == [False, False, False, True]

The guard runs through the same code as in a run (compiled by curriculum.guards, reading a real
MetricHistory), one update per metrics dict.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from curriculum import registry
from curriculum.guards import Guard, GuardResult, compile_guard
from curriculum.windows import MetricHistory


def drive_guard(
    guard: str | Mapping[str, Any] | Guard,
    steps: Sequence[Mapping[str, float]],
    *,
    previous: Sequence[Mapping[str, float]] = (),
    metrics: Iterable[str] | None = None,
    phase: str = "current",
    previous_phase: str = "previous",
) -> list[GuardResult]:
    """Feed ``steps`` (one metrics dict per training step) to a guard; one result per step.

    ``guard``: an expression string (``when``), a guard table as in TOML, or a compiled Guard.
    ``previous``: the steps of an earlier phase, for ``prev(...)``/``phase(...)`` terms and the
    collapse detector's baseline.  ``metrics``: the names the guard may use (default: every name
    in ``steps`` and ``previous``).  Registered custom functions are available by name.
    """
    names = set(metrics) if metrics is not None else {k for s in [*previous, *steps] for k in s}
    functions = registry.guard_functions()
    if isinstance(guard, Guard):
        g = guard
    else:
        table = {"when": guard} if isinstance(guard, str) else dict(guard)
        g = compile_guard("guard", table, names, functions)
    cap = max([1, *g.windows_needed().values()])
    history = MetricHistory(cap)
    if previous:
        history.begin_phase(previous_phase)
        for m in previous:
            history.push(dict(m))
    history.begin_phase(phase)
    state = g.init_state()
    out: list[GuardResult] = []
    for m in steps:
        history.push(dict(m))
        state, res = g.update(state, history, functions)
        out.append(res)
    return out


__all__ = ["drive_guard"]
