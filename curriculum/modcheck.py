"""Checking a spec's ``guard_modules`` before any of their code runs in this process.

A guard module is user code, imported at validation.  Two rules keep that safe to do:

- where: a ``.py`` path must lie inside the spec's folder (no absolute paths, no ``..`` out of
  it, no symbolic link pointing out); anything else must be a dotted module name.
- how: the modules are first imported in a child process with a time limit.  A module that
  calls ``sys.exit()`` or ``os._exit()``, loops forever, blocks, crashes the interpreter or
  raises is reported as one clear spec problem naming the module; only a module that imports
  cleanly there is then imported here (so its ``@register_guard`` functions can run).

The time limit is ``CURRICULUM_GUARD_IMPORT_TIMEOUT`` seconds (default 30).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from curriculum import limits

DEFAULT_TIMEOUT = 30.0

# Imports the modules one by one, reporting each step on stdout behind a random tag (a module
# printing to stdout cannot fake it).  An exception is reported; sys.exit() is not caught as
# success: it ends the child before "done".
_CHILD = r"""
import json, sys
from pathlib import Path
tag, base, entries = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
from curriculum import registry
for e in entries:
    print(tag, "start", json.dumps(e), flush=True)
    try:
        registry.import_guard_modules([e], base)
    except registry.GuardImportError as err:
        print(tag, "error", json.dumps(str(err)), flush=True)
        raise SystemExit(0)
print(tag, "done", flush=True)
"""

_seen_ok: set[tuple] = set()  # modules this process already probed successfully


def _is_path(entry: str) -> bool:
    return entry.endswith(".py") or "/" in entry or "\\" in entry


def where_problems(entries: list, base_dir: Path) -> list[str]:
    """Entries that are not a .py path inside ``base_dir`` nor a dotted module name."""
    out: list[str] = []
    base = Path(base_dir).resolve()
    for entry in entries:
        if not isinstance(entry, str) or not entry.strip():
            out.append(f"entry {entry!r}: expected a .py path relative to the spec's folder or a dotted module name")
            continue
        e = entry.strip()
        if "\x00" in e:
            out.append(f"entry {e!r}: a module path cannot hold a NUL character")
        elif _is_path(e):
            p = Path(e)
            if p.is_absolute() or e.startswith("\\"):
                out.append(
                    f"'{e}': absolute paths are refused; give a path relative to the spec's folder "
                    f"({base}), e.g. \"guards/my_guards.py\""
                )
                continue
            try:
                limits.inside(base, base / p)
            except ValueError:
                out.append(
                    f"'{e}': leaves the spec's folder {base} (guard modules must lie inside it, "
                    "links included); copy the module next to the spec"
                )
        elif not all(part.isidentifier() for part in e.split(".")):
            out.append(f"'{e}': not a valid dotted module name nor a .py path")
    return out


def _key(entries: list[str], base: Path) -> tuple:
    parts: list = [str(base.resolve())]
    for e in entries:
        p = base / e
        try:
            s = p.stat() if _is_path(e) else None
        except OSError:
            s = None
        parts.append((e, s.st_mtime_ns if s else None, s.st_size if s else None))
    return tuple(parts)


def _timeout() -> float:
    try:
        return max(0.5, float(os.environ.get("CURRICULUM_GUARD_IMPORT_TIMEOUT", DEFAULT_TIMEOUT)))
    except ValueError:
        return DEFAULT_TIMEOUT


def probe(entries: list[str], base_dir: Path, timeout: float | None = None) -> str | None:
    """Import ``entries`` in a child process; None when all imported cleanly, else why not."""
    base = Path(base_dir)
    key = _key(entries, base)
    if key in _seen_ok:
        return None
    limit = _timeout() if timeout is None else timeout
    tag = secrets.token_hex(8)
    root = str(Path(__file__).resolve().parents[1])  # so the child imports this curriculum
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, tag, str(base), json.dumps(entries)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=str(base) if base.is_dir() else None,
        start_new_session=True,  # its own process group: a timeout kills what it started too
        text=True,
        errors="replace",
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        out, err = proc.communicate()
    current, done, error = None, False, None
    for line in out.splitlines():
        if not line.startswith(tag + " "):
            continue
        what, _, rest = line[len(tag) + 1 :].partition(" ")
        if what == "start":
            current = json.loads(rest)
        elif what == "error":
            error = json.loads(rest)
        elif what == "done":
            done = True
    if error is not None:
        return error
    if done and not timed_out and proc.returncode == 0:
        _seen_ok.add(key)
        return None
    name = f"'{current}'" if current is not None else "the guard modules"
    if timed_out:
        return (
            f"importing {name} did not finish within {limit:g} s (an endless loop or a blocking call at "
            "import time?); a guard module should only define and register functions "
            "(CURRICULUM_GUARD_IMPORT_TIMEOUT sets the limit)"
        )
    code = proc.returncode
    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
    tail = " ".join(err.strip().splitlines()[-2:])[-300:]
    return (
        f"importing {name} ended the Python process before it finished ({how}); a guard module must not "
        "call sys.exit() or os._exit() at import time" + (f" (stderr: {tail})" if tail else "")
    )


def check(entries: list, base_dir: Path) -> list[str]:
    """Every problem with a spec's ``guard_modules`` (empty: safe to import in this process)."""
    problems = where_problems(entries, base_dir)
    if problems or not entries:
        return problems
    why = probe([e.strip() for e in entries], Path(base_dir))
    return [why] if why else []


__all__ = ["check", "probe", "where_problems", "DEFAULT_TIMEOUT"]
