"""User-facing errors: one paragraph naming the file, the key and what was expected."""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Iterable


class CurriculumError(Exception):
    """An error a user can act on.  The CLI prints str(err) and exits non-zero, no traceback."""


class SpecError(CurriculumError):
    """A problem in a spec file (or in a --set override)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class RunDirError(CurriculumError):
    """A run directory that is missing, damaged or incompatible."""


class RunnerError(CurriculumError):
    """The training back end (a runner, or the reward code it calls) raised.  The run directory
    is left consistent: `curriculum resume RUN_DIR` continues from the last checkpoint."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def one_of(choices: Iterable[str]) -> str:
    items = sorted(str(c) for c in choices)
    if not items:
        return "none are declared"
    return "one of " + ", ".join(items)


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_ASSIGN = re.compile(r"^\s*([A-Za-z0-9_\-.]+|(?:[A-Za-z0-9_\-.\s]|\"(?:[^\"\\\\]|\\\\.)*\"|'[^']*')+?)\s*=")


_KEY_PART = re.compile(r'\s*("(?:[^"\\]|\\.)*"|\'[^\']*\'|[^.]*?)\s*(?:\.|$)')


def _key_parts(k: str) -> list[str]:
    """A dotted TOML key as its parts; quoted parts may hold dots and escapes ("a.b"."\\u0000")."""
    parts: list[str] = []
    pos = 0
    while pos < len(k):
        m = _KEY_PART.match(k, pos)
        if m is None or m.end() == pos:
            break
        raw = m.group(1)
        if raw.startswith('"'):
            try:
                raw = json.loads(raw)
            except ValueError:
                raw = raw.strip('"')
        elif raw.startswith("'"):
            raw = raw[1:-1]
        parts.append(raw)
        pos = m.end()
    return parts


def _norm_key(k: str) -> list[str]:
    return _key_parts(k.strip())


def locate(text: str | None, path: tuple) -> int | None:
    """Best-effort 1-based line of a key path in TOML text (None when not found).

    Knows [table] and [[array]] headers, dotted keys and inline tables well enough to point a
    user at the right line; never raises.
    """
    if not text or not path:
        return None
    parts = [str(p) for p in path]
    lines = text.splitlines()
    table: list[str] = []
    counts: dict[str, int] = {}
    best: tuple[int, int] | None = None  # (matched depth, line)
    for i, line in enumerate(lines, start=1):
        if line.strip().startswith("#"):
            continue
        m = _HEADER.match(line)
        if m:
            table = _norm_key(m.group(1))
            if line.strip().startswith("[["):
                key = ".".join(table)
                counts[key] = counts.get(key, -1) + 1
                table = table + [str(counts[key])]
            depth = _prefix_depth(table, parts)
            if depth and (best is None or depth > best[0]):
                best = (depth, i)
            continue
        m = _ASSIGN.match(line)
        if not m:
            continue
        full = table + _norm_key(m.group(1))
        depth = _prefix_depth(full, parts)
        # inline tables: key = { a = 1, b = 2 }
        if depth and depth < len(parts) and "{" in line:
            rest = parts[depth:]
            if re.search(r"[{,]\s*" + re.escape(rest[0]) + r"\s*=", line):
                depth += 1
        if depth and (best is None or depth > best[0]):
            best = (depth, i)
    return best[1] if best else None


def _prefix_depth(have: list[str], want: list[str]) -> int:
    if len(have) > len(want):
        return 0
    for a, b in zip(have, want):
        if a != b:
            return 0
    return len(have)


_BARE_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


def _show_key(part: object) -> str:
    """A key path segment as TOML writes it: bare when it can be, else quoted ('""', '"a b"')."""
    s = str(part)
    return s if _BARE_KEY.match(s) else json.dumps(s)


def where(file: str | Path | None, text: str | None, path: tuple) -> str:
    """'examples/dipg.toml:42: phases.soft.max_steps' style prefix."""
    key = ".".join(_show_key(p) for p in path) if path else "(top level)"
    line = locate(text, path)
    fname = str(file) if file else "<spec>"
    return f"{fname}:{line}: {key}" if line else f"{fname}: {key}"
