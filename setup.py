"""Build: the project metadata is in pyproject.toml; this file only adds the compiled grader.

mypyc (part of mypy) compiles the grader's hot modules (rewards/native.py lists them) into C
extensions, about 1.4x faster than the interpreter on them (bench/bench_rewards.py).  It is
optional: with CURRICULUM_PURE_PYTHON=1, without a C compiler, or if mypyc fails, the package
installs as pure Python (`pip install -v` shows why) and behaves the same, only slower.
The build records a SHA-256 of each compiled source so that, after an editable install, an
edited source runs as source instead of being shadowed by a stale extension (rewards/native.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _native():
    """rewards/native.py, loaded by path (stdlib only: the package's dependencies may not be
    installed yet), so that the list of compiled modules lives in one place."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_curriculum_native", ROOT / "rewards" / "native.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_NATIVE = _native()
NATIVE_SOURCES = _NATIVE.NATIVE_SOURCES
BUILD_INFO = _NATIVE.BUILD_INFO


def _ext_modules():
    if _NATIVE._env_pure():
        return []
    try:
        from mypyc.build import mypycify

        # (pip builds in an isolated environment without the run-time dependencies: what the
        # compiled modules import from them is typed as Any, which is what the source does)
        exts = mypycify(["--ignore-missing-imports", *NATIVE_SOURCES], opt_level="3", group_name="rewards_native")
    except (SystemExit, Exception) as e:  # noqa: BLE001 - any failure (mypyc exits on a type error): pure Python
        print(f"curriculum: not compiling the grader ({type(e).__name__}: {e}); "
              "installing it as pure Python", file=sys.stderr)
        return []
    for ext in exts:
        ext.optional = True  # a compiler error leaves the pure-Python module in place
    return exts


class BuildExt(build_ext):
    """build_ext that records what it compiled (rewards/_native_build.json)."""

    def run(self):
        super().run()
        built = all(Path(self.get_ext_fullpath(ext.name)).is_file() for ext in self.extensions)
        dest = ROOT / "rewards" if self.inplace else Path(self.build_lib) / "rewards"
        target = dest / BUILD_INFO
        if not built or not self.extensions:
            target.unlink(missing_ok=True)
            return
        import mypy.version

        info = {"compiler": f"mypyc {mypy.version.__version__}",
                "sources": {p: _NATIVE.source_digest(ROOT / p) for p in NATIVE_SOURCES}}
        dest.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")


setup(ext_modules=_ext_modules(), cmdclass={"build_ext": BuildExt})
