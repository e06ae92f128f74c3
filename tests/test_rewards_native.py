"""The compiled grader (mypyc, built by `pip install`) and its Python source are one grader:
the install the README gives runs the compiled build, the source gives the same recorded
verdicts, and an edited source is never shadowed by a stale compiled module."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from rewards import native  # (importing rewards imports the four compiled modules)

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, cwd: Path, env_extra: dict[str, str] | None = None, pythonpath: Path | None = None):
    env = {k: v for k, v in os.environ.items() if k != native.PURE_ENV}
    env.update(env_extra or {})
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_installed_grader_is_the_compiled_build():
    # the README's install (`pip install -e ".[test]"`, also .ci/run) compiles the grader; the
    # speed the README quotes is this build's.  Fails when the build fell back to pure Python
    # (`pip install -v -e .` shows why: no C compiler, or a mypyc error)
    if os.environ.get(native.PURE_ENV):
        assert native.implementation().startswith("source")
        return
    assert native.implementation() == "compiled", native.implementation()
    for name in native.NATIVE_MODULES:
        assert not sys.modules[name].__file__.endswith(".py"), sys.modules[name].__file__


def test_the_source_gives_the_recorded_verdicts():
    # the same golden verdicts (the 3,600 seeded synthetic cases) from the Python source, in a
    # process that asks for it
    code = (
        "import sys; sys.path.insert(0, '.');"
        "from rewards import native; import rewards.judges;"
        "print(native.implementation());"
        "from tests import test_rewards_golden as t;"
        "import json; g = {d['id']: d['verdict'] for d in map(json.loads, t.GOLDEN.read_text().splitlines())};"
        "print(t._check(t.synthetic_cases(), g))"
    )
    r = _run(code, ROOT, {native.PURE_ENV: "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    mode, n = r.stdout.split("\n")[:2]
    assert mode.startswith("source"), mode
    assert n == "3600"


def _copy_package(dst: Path) -> Path:
    """The rewards package as installed here (sources, compiled modules, build record) and
    the compiled group's shared library, copied to dst."""
    shutil.copytree(ROOT / "rewards", dst / "rewards", ignore=shutil.ignore_patterns("__pycache__"))
    spec = importlib.util.find_spec("rewards_native__mypyc")
    if spec is not None and spec.origin:
        shutil.copy2(spec.origin, dst / Path(spec.origin).name)
    return dst


_PROBE = (
    "import rewards, rewards.judges as j; from rewards import native;"
    "from rewards.data import generate_items; from rewards import score, PRESETS;"
    "it = generate_items(1, seed=3)[0];"
    "import json; print('PROBE', json.dumps([native.implementation(), j.__file__,"
    " score(it.reference, it, PRESETS['medium']).total]))"
)


def _probe(out: str):
    return next(json.loads(line[6:]) for line in out.splitlines() if line.startswith("PROBE "))


def _compiled_here() -> None:
    missing = [n for n in native.NATIVE_MODULES if native._extension(n) is None]
    assert not missing, f"not compiled in this checkout ({missing}): run `pip install -e .`"


def test_an_edited_source_runs_as_source_with_a_warning(tmp_path):
    _compiled_here()
    pkg = _copy_package(tmp_path / "pkg")
    # control: the unedited copy runs compiled, from the copy
    r = _run(_PROBE, tmp_path, pythonpath=pkg)
    assert r.returncode == 0, r.stderr[-3000:]
    mode, path, reward = _probe(r.stdout)
    assert mode == "compiled" and path.startswith(str(pkg)) and not path.endswith(".py"), r.stdout
    assert "compiled_stale" not in r.stdout + r.stderr

    # an edit to one source (here: a changed constant) makes the whole group run from source
    judges = pkg / "rewards" / "judges.py"
    text = judges.read_text(encoding="utf-8")
    assert "\nFUZZY_MIN_WORDS" in text
    judges.write_text(text + "\n# edited after the build\n", encoding="utf-8")
    r = _run(_PROBE, tmp_path, pythonpath=pkg)
    assert r.returncode == 0, r.stderr[-3000:]
    mode2, path2, reward2 = _probe(r.stdout)
    assert mode2.startswith("source (edited since the build: rewards/judges.py"), mode2
    assert path2 == str(judges), path2
    assert reward2 == reward  # (the edit is a comment: the same verdict, now from source)
    assert "rewards.compiled_stale" in r.stderr and "pip install -e ." in r.stderr, r.stderr
    assert "compiled_stale" not in r.stdout  # (stdout may be a command's JSON result)


def test_a_missing_build_record_runs_the_source(tmp_path):
    _compiled_here()
    pkg = _copy_package(tmp_path / "pkg")
    (pkg / "rewards" / native.BUILD_INFO).unlink()
    r = _run(_PROBE, tmp_path, pythonpath=pkg)
    assert r.returncode == 0, r.stderr[-3000:]
    mode, path, _ = _probe(r.stdout)
    assert mode.startswith(f"source ({native.BUILD_INFO} is missing"), mode
    assert path.endswith("judges.py")


def test_the_build_record_names_every_compiled_source():
    _compiled_here()
    info = json.loads((ROOT / "rewards" / native.BUILD_INFO).read_text(encoding="utf-8"))
    assert sorted(info["sources"]) == sorted(native.NATIVE_SOURCES)
    assert info["compiler"].startswith("mypyc ")
    for p, digest in info["sources"].items():
        assert digest == native.source_digest(ROOT / p)
