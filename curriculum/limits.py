"""Limits on what a spec or a trace may ask for, and the pattern every user-given name follows.

Each limit exists because going past it fails late and badly: a window of 10^9 steps validates
and then needs gigabytes per metric at the first step; a phase named ``x/../../tmp/y`` makes
checkpoint paths leave the run directory.  Validation checks all of these up front, so a bad
value is one clear line naming the file, line and key, never a MemoryError hours in.

Names (phases, guards, presets, the run) are data, never paths: letters, digits, ``_`` and
``-``, 1 to 64 characters.  Every path the engine builds from a name is also checked to stay
inside its run directory (:func:`inside`), so a name that slipped past validation (a hand-made
state file) still cannot write elsewhere.
"""

from __future__ import annotations

import re
from pathlib import Path

#: longest window (in steps) any statistic, guard, controller or ``run.window`` may keep.
#: A window of W steps costs 16 bytes x W per metric read with it (a ring buffer) plus 8 x W per
#: finished phase; 100,000 steps is 1.6 MB per metric.
MAX_WINDOW = 100_000
MAX_PHASES = 64
MAX_GUARDS = 256
MAX_TRANSITIONS = 1024
MAX_GUARD_MODULES = 32
#: longest accepted line of a replay trace (bytes); 8,192 completions per step fit easily.
MAX_TRACE_LINE = 4 * 1024 * 1024
#: largest accepted step number in a replay trace (the engine counts steps in int64)
MAX_TRACE_STEP = 2**63 - 1

NAME_MAX = 64
NAME_PATTERN = r"[A-Za-z0-9_-]{1,64}"
_NAME_RE = re.compile(NAME_PATTERN)
NAME_RULE = "letters, digits, '_' and '-', 1 to 64 characters"


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid phase / guard / preset / run name (None when it is)."""
    if not isinstance(name, str):
        return f"expected a name ({NAME_RULE}), got {name!r}"
    if _NAME_RE.fullmatch(name):
        return None
    shown = repr(name) if len(name) <= 80 else repr(name[:60]) + f"... ({len(name)} characters)"
    if not name:
        why = "it is empty"
    elif len(name) > NAME_MAX:
        why = f"it is {len(name)} characters long"
    else:
        bad = sorted({c for c in name if not re.fullmatch(r"[A-Za-z0-9_-]", c)})
        why = "it contains " + ", ".join(repr(c) for c in bad[:5])
    return f"invalid name {shown}: {why}; a name holds only {NAME_RULE} (names are used in file names)"


def inside(root: Path, path: Path) -> Path:
    """``path`` if it resolves to a place inside ``root`` (or ``root`` itself); else ValueError.

    Symbolic links are followed for the parts that exist, so a link that points out of the run
    directory is refused too.
    """
    r = Path(root).resolve()
    p = Path(path).resolve()
    if p != r and r not in p.parents:
        raise ValueError(f"{path} would lie outside {root}")
    return Path(path)


__all__ = [
    "MAX_WINDOW",
    "MAX_PHASES",
    "MAX_GUARDS",
    "MAX_TRANSITIONS",
    "MAX_GUARD_MODULES",
    "MAX_TRACE_LINE",
    "MAX_TRACE_STEP",
    "NAME_PATTERN",
    "NAME_RULE",
    "name_problem",
    "inside",
]
