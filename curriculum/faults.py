"""Fault injection for crash tests: SIGKILL this process at a named point.

Set CURRICULUM_CRASH_AT="POINT:N" (or "POINT:N,POINT2:M") and the process kills itself with
SIGKILL the N-th time it reaches POINT.  Points: step, checkpoint_runner_saved,
checkpoint_renamed, transition_logged, evaluation, phase_setup, resume_cut (resume
repairing a run directory, after cutting one log).  Without the variable this is
one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}
_plan: dict[str, int] | None = None


def _load() -> dict[str, int]:
    plan: dict[str, int] = {}
    for item in os.environ.get("CURRICULUM_CRASH_AT", "").split(","):
        if ":" in item:
            name, _, n = item.partition(":")
            try:
                plan[name.strip()] = int(n)
            except ValueError:
                continue
    return plan


def point(name: str) -> None:
    global _plan
    if _plan is None:
        _plan = _load()
    if not _plan or name not in _plan:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == _plan[name]:
        os.kill(os.getpid(), signal.SIGKILL)
