"""Which implementation of the grader's hot modules runs: compiled, or the Python source.

``pip install`` compiles ``rewards.text``, ``rewards.parse``, ``rewards.judges`` and
``rewards.scoring`` with mypyc (``setup.py``), about 1.4x faster than the same source run by the
interpreter (``python bench/bench_rewards.py`` prints both).  The Python files stay the source of
truth; the compiled modules are the same code, and a test holds the two to the same verdicts.

An extension module next to its ``.py`` file shadows it, so after an editable install an edit
to ``judges.py`` would silently not run.  Hence the build records a SHA-256 of each compiled
source (``_native_build.json``), and :func:`select` (called when ``rewards`` is imported, before
any of these modules) compares it with the files on disk: if any differs, or the record is
missing, *all four* run from source (the compiled modules call one another directly, so one
stale module makes the whole group stale) and one ``rewards.compiled_stale`` warning says so
and how to rebuild (``pip install -e .``).  ``CURRICULUM_PURE_PYTHON=1`` asks for the source
without a warning (and at build time, builds nothing).

Pure and cheap: hashing the four files costs well under a millisecond; no import of jax.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path

#: the modules setup.py compiles, as paths relative to the repository root
NATIVE_SOURCES = ("rewards/text.py", "rewards/parse.py", "rewards/judges.py", "rewards/scoring.py")
NATIVE_MODULES = tuple(p[:-3].replace("/", ".") for p in NATIVE_SOURCES)
BUILD_INFO = "_native_build.json"
PURE_ENV = "CURRICULUM_PURE_PYTHON"

_HERE = Path(__file__).resolve().parent
#: what select() decided: "compiled", "source (...reason...)", or None before it ran
STATE: dict[str, str | None] = {"mode": None}


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _env_pure() -> bool:
    return os.environ.get(PURE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _extension(name: str) -> Path | None:
    stem = name.rsplit(".", 1)[1]
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        p = _HERE / (stem + suffix)
        if p.is_file():
            return p
    return None


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Loads the named modules from their ``.py`` files, whatever else lies beside them."""

    def __init__(self, names: tuple[str, ...]):
        self.names = frozenset(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.names:
            return None
        src = _HERE / (fullname.rsplit(".", 1)[1] + ".py")
        return importlib.util.spec_from_file_location(fullname, src)


def _use_source(reason: str, warn: bool) -> None:
    if not any(isinstance(f, _SourceFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder(NATIVE_MODULES))
    STATE["mode"] = f"source ({reason})"
    if warn:
        import structlog

        # the host's structlog configuration when it has one; otherwise stderr, never stdout
        # (`curriculum score --json` writes its result there)
        log = (structlog.get_logger("rewards") if structlog.is_configured()
               else structlog.wrap_logger(structlog.PrintLogger(sys.stderr)))
        log.warning(
            "rewards.compiled_stale", reason=reason,
            hint="the grader runs from its Python source (correct, about 1.4x slower); "
                 "`pip install -e .` rebuilds the compiled modules")


def _decided() -> str:
    return STATE["mode"] or "undecided"


def select() -> str:
    """Decide, once, whether the compiled modules may be imported; returns the decision."""
    if STATE["mode"] is not None:
        return _decided()
    exts = {n: _extension(n) for n in NATIVE_MODULES}
    if not any(exts.values()):
        STATE["mode"] = "source (not compiled)"
        return _decided()
    if _env_pure():
        _use_source(f"{PURE_ENV} is set", warn=False)
        return _decided()
    missing = [n for n, p in exts.items() if p is None]
    if missing:
        _use_source(f"only part of the group is compiled: {', '.join(missing)} is not", warn=True)
        return _decided()
    try:
        info = json.loads((_HERE / BUILD_INFO).read_text(encoding="utf-8"))
        recorded = info["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        _use_source(f"{BUILD_INFO} is missing or unreadable", warn=True)
        return _decided()
    changed = [p for p in NATIVE_SOURCES
               if recorded.get(p) != source_digest(_HERE / Path(p).name)]
    if changed:
        _use_source(f"edited since the build: {', '.join(changed)}", warn=True)
        return _decided()
    STATE["mode"] = "compiled"
    return _decided()


def implementation() -> str:
    """``"compiled"`` when the grader's modules are the mypyc build, else ``"source (why)"``."""
    mods = [sys.modules.get(n) for n in NATIVE_MODULES]
    files = [getattr(m, "__file__", "") or "" for m in mods if m is not None]
    if files and all(not f.endswith(".py") for f in files):
        return "compiled"
    mode = _decided()
    return mode if mode.startswith("source") else "source"
