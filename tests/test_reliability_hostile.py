"""Hostile and careless input: names that are paths, memory bombs, numbers past float range.

What a user relies on: `curriculum validate` refuses such a spec with one line naming the
file, line and key and what was expected (exit 2), never an internal error (exit 3), never a
silent pass; and a run never writes outside its run directory, whatever a name holds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curriculum.cli import main
from curriculum.errors import RunDirError, SpecError
from curriculum.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "dipg_simulated.toml"
QUIET = ["--no-progress", "--no-report"]
NAME_OK = re.compile(r"[A-Za-z0-9_-]{1,64}")

MINI = """\
[run]
name = {run_name}
progress = false
wandb = "disabled"

[runner]
kind = "simulated"

[phases.a]
kind = "grpo"
preset = "soft"
max_steps = 4
next = {next}

[phases.{phase}]
kind = "grpo"
preset = "soft"
max_steps = 4
"""


@pytest.fixture(autouse=True)
def _no_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")


def mini(phase: str = "b", run_name: str = "mini") -> str:
    q = json.dumps(phase)  # a TOML basic string: a quoted key may hold anything
    return MINI.format(run_name=json.dumps(run_name), next=q, phase=q)


def validate(capsys, path: Path, *sets: str) -> tuple[int, str]:
    capsys.readouterr()
    args = ["validate", str(path)]
    for s in sets:
        args += ["--set", s]
    rc = main(args)
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


def clear_error(rc: int, out: str, *needles: str) -> None:
    """Exit 2 (a spec problem), no traceback, no internal error, the message names what it should."""
    assert rc == 2, out
    assert "Traceback" not in out and "internal error" not in out, out
    for n in needles:
        assert n in out, (n, out)


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name, why",
    [
        ("x/../../../../tmp/ESCAPED", "contains '.', '/'"),
        ("", "it is empty"),
        ("a\x00b", "contains '\\x00'"),
        ("p" * 300, "300 characters long"),
        ("soft phase", "contains ' '"),
    ],
)
def test_hostile_phase_names_are_refused_at_validation_with_the_line(tmp_path, capsys, name, why):
    spec = tmp_path / "s.toml"
    spec.write_text(mini(phase=name))
    rc, out = validate(capsys, spec)
    clear_error(rc, out, why, "letters, digits, '_' and '-', 1 to 64 characters")
    # the line of the [phases."NAME"] header (line 15 of MINI), even for a key holding dots
    assert re.search(rf"{re.escape(str(spec))}:15: phases\.", out), out


def test_a_run_name_with_dot_dot_cannot_move_the_run_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "s.toml"
    spec.write_text(mini(run_name="../../outside"))
    capsys.readouterr()
    rc = main(["run", str(spec), *QUIET])
    err = capsys.readouterr().err
    clear_error(rc, err, f"{spec}:2: run.name", "invalid name '../../outside'")
    assert not (tmp_path.parent / "outside").exists()
    assert list(tmp_path.parent.glob("outside-*")) == []


def test_guard_and_preset_names_follow_the_same_rule(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text(
        mini()
        + '\n[presets."../evil"]\nbase = "soft"\n\n[guards."g/../h"]\nwhen = "reward_mean > 1"\n'
    )
    rc, out = validate(capsys, spec)
    clear_error(rc, out, "presets.\"../evil\"", "guards.\"g/../h\"", "invalid name")


def test_an_unvalidated_name_still_cannot_write_outside_the_run_directory(tmp_path):
    """Defence in depth: a phase name that reaches the engine without validation (a hand-made
    state file) is refused when a checkpoint path is built, and nothing lands outside."""
    from curriculum.engine import Engine

    spec = tmp_path / "s.toml"
    spec.write_text(mini())
    rd = tmp_path / "deep" / "er" / "run"
    eng = Engine.create(load_spec(spec), rd, console=False, progress=False)
    import dataclasses

    eng.cs = dataclasses.replace(eng.cs, phase="x/../../../../ESCAPED")  # where the run is: the core's state
    with pytest.raises(RunDirError, match="refusing to write outside the run directory"):
        eng._checkpoint(periodic=False)
    assert list(tmp_path.rglob("*ESCAPED*")) == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.one_of(st.text(max_size=80), st.from_regex(NAME_OK, fullmatch=True)))
def test_any_phase_name_is_valid_exactly_when_it_matches_the_pattern(name):
    raw = {
        "run": {"name": "h", "wandb": "disabled"},
        "runner": {"kind": "simulated"},
        "phases": {name: {"kind": "grpo", "preset": "soft", "max_steps": 3}},
    }
    if NAME_OK.fullmatch(name):
        spec = load_spec(None, raw=raw)
        assert list(spec.phases) == [name]
    else:
        with pytest.raises(SpecError) as e:
            load_spec(None, raw=raw)
        assert len(e.value.problems) == 1
        assert "invalid name" in e.value.problems[0] and "phases." in e.value.problems[0]


# --------------------------------------------------------------------------- memory bombs


@pytest.mark.parametrize(
    "override, key",
    [
        ("guards.collapse.baseline_window=1000000000", "guards.collapse.baseline_window"),
        ("guards.collapse.warmup=1000000000", "guards.collapse.warmup"),
        ("run.window=100000000", "run.window"),
        ('guards.strong.when="mean(reward_mean, 100000000) > 5"', "guards.strong.when"),
        ('phases.soft.controller={metric="hallucination_rate", target=0.1, window=100000000}', "phases.soft.controller.window"),
    ],
)
def test_memory_bombs_are_refused_at_validation(tmp_path, capsys, override, key):
    rc, out = validate(capsys, EXAMPLE, override)
    clear_error(rc, out, key, "100000")
    assert re.search(rf"dipg_simulated\.toml:\d+: {re.escape(key)}", out), out


def test_the_largest_window_allowed_validates(capsys):
    rc, out = validate(capsys, EXAMPLE, "guards.collapse.baseline_window=100000", "run.window=100000")
    assert rc == 0, out


def test_custom_guard_windows_are_bounded(tmp_path, capsys):
    rc, out = validate(
        capsys,
        ROOT / "examples" / "custom_guard.toml",
        'guards.spike={type="custom", function="hallucination_spike", args=["hallucination_rate", 20, 2.0], '
        "windows={hallucination_rate=1000000000}}",
    )
    clear_error(rc, out, "guards.spike.windows.hallucination_rate", "at most 100000")


def test_too_many_phases(tmp_path, capsys):
    body = "[run]\nname = \"many\"\n[runner]\nkind = \"simulated\"\n"
    for i in range(65):
        body += f"[phases.p{i}]\nkind = \"grpo\"\npreset = \"soft\"\nmax_steps = 1\n"
    spec = tmp_path / "many.toml"
    spec.write_text(body)
    rc, out = validate(capsys, spec)
    clear_error(rc, out, "phases: 65 entries, at most 64")


def test_an_overlong_expression_is_a_clear_error(capsys):
    expr = " and ".join(["reward_mean > 1"] * 200)
    rc, out = validate(capsys, EXAMPLE, f'guards.strong.when="{expr}"')
    clear_error(rc, out, "guards.strong.when", "too long")


# --------------------------------------------------------------------------- numbers


BIG = "1" * 400
NUMERIC_KEYS = [
    "guards.collapse.k",
    "guards.collapse.h",
    "guards.strong.patience",
    "phases.soft.penalties.hallucination_penalty",
    "phases.soft.train.learning_rate",
    "phases.soft.max_steps",
    "run.chunk_steps",
    "runner.batch_size",
]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(NUMERIC_KEYS), digits=st.integers(20, 400), sign=st.sampled_from(["", "-"]))
def test_integers_beyond_64_bits_are_a_clear_error_anywhere(capsys, key, digits, sign):
    rc, out = validate(capsys, EXAMPLE, f"{key}={sign}{'9' * digits}")
    clear_error(rc, out, key, "beyond the 64-bit range")


def test_a_huge_controller_target_is_a_clear_error_not_an_overflow(capsys):
    rc, out = validate(capsys, EXAMPLE, f'phases.soft.controller={{metric="hallucination_rate", target={BIG}}}')
    clear_error(rc, out, "phases.soft.controller.target", "400-digit integer")


# --------------------------------------------------------------------------- hostile traces

TRACE_SPEC = """\
[run]
name = "trace"
checkpoint_every = 20
progress = false
wandb = "disabled"

[runner]
kind = "replay"

[phases.medium]
kind = "grpo"
preset = "medium"
max_steps = 1000

[guards.collapse]
type = "collapse"

[[transitions]]
from = "medium"
to = "medium"
guard = "collapse"
"""


def write_trace(path: Path, rows: list[dict] | list[str]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def healthy(n: int, seed: int = 0) -> list[dict]:
    import random

    rnd = random.Random(seed)
    return [
        {"step": i, "rewards": [rnd.choice([-10.0, 5.0, 20.0, 30.0]) for _ in range(8)], "group_size": 4}
        for i in range(1, n + 1)
    ]


def replay(capsys, tmp_path: Path, trace: Path, name: str = "run") -> tuple[int, str, Path]:
    spec = tmp_path / "trace.toml"
    spec.write_text(TRACE_SPEC)
    rd = tmp_path / name
    capsys.readouterr()
    rc = main(["run", str(spec), "--replay", str(trace), "--run-dir", str(rd), *QUIET])
    return rc, capsys.readouterr().err, rd


def test_finite_extreme_rewards_run_to_the_end_and_count_as_nonfinite(tmp_path, capsys):
    rows = healthy(30)
    for r in rows[10:20]:
        r["rewards"] = [1e308, -1e308, 1.7976931348623157e308, -1.7976931348623157e308, 5e-324, -5e-324, 1e308, -1e308]
    rc, err, rd = replay(capsys, tmp_path, write_trace(tmp_path / "ext.jsonl", rows))
    assert rc == 0, err
    st = json.loads((rd / "state.json").read_text())
    assert st["status"] == "finished" and st["global_step"] == 30
    assert st["nonfinite_steps"] == 10  # the overflowing statistics are reported, not hidden


@pytest.mark.parametrize(
    "line, needle",
    [
        ('{"step": 1, "rewards": [%s, 1, 1, 1], "group_size": 4}' % ("9" * 400), "400-digit integer is beyond float range"),
        ('{"step": 1, "rewards": [%s, 1, 1, 1], "group_size": 4}' % ("9" * 5000), "5000-digit integer is beyond float range"),
        ('{"step": 1, "rewards": [1e400, 1, 1, 1], "group_size": 4}', "1e400 is beyond float range"),
        ('{"step": 1, "rewards": [1, 1, 1, 1], "group_size": 4, "metrics": {"kl": %s}}' % ("7" * 309), "key 'metrics': a 309-digit integer"),
        ('{"step": 1, "rewards": [1, 1, 1, 1], "group_size": 4, "metrics": %s}' % ("[" * 100000 + "]" * 100000), "nested too deeply"),
        ('{"step": 1, "rewards": [1, 1, 1, 1], "group_size": 4, "metrics": {"kl": [[[1]]]}}', "expected a number, got a list"),
        ('{"step": 1, "rewards": [1, 2, 3], "group_size": 4}', "holds 3 values, not a multiple of group_size 4"),
        ('{"step": 1, "rewards": [1, 2, 3, 4, 5, 6], "group_size": 4}', "holds 6 values, not a multiple of group_size 4"),
        ('{"step": %s, "rewards": [1, 2, 3, 4], "group_size": 4}' % ("1" * 30), "key 'step' must be an integer from 0 to 2^63-1"),
        ('{"step": 1, "rewards": [1, 2, 3, 4], "group_size": 4, "pad": "%s"}' % ("x" * (4 * 1024 * 1024)), "at most 4194304"),
    ],
)
def test_hostile_trace_lines_are_a_clear_error_naming_file_and_line(tmp_path, capsys, line, needle):
    trace = write_trace(tmp_path / "bad.jsonl", [healthy(1)[0], line])
    trace.write_text(trace.read_text().replace('"step": 1,', '"step": 0,', 1))
    rc, err, rd = replay(capsys, tmp_path, trace)
    assert rc == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert f"{trace}:2: " in err and needle in err, err
    assert not rd.exists()  # refused before a run directory was made


def _interrupted_replay(tmp_path, capsys, monkeypatch, trace: Path, at: int) -> Path:
    """A replay whose runner fails after step `at` (fault injection): a resumable run directory."""
    from runners.replay import ReplayRunner

    real = ReplayRunner.train

    def failing(self, n):
        for m in real(self, n):
            if self.pos > at:
                raise RuntimeError("injected failure")
            yield m

    monkeypatch.setattr(ReplayRunner, "train", failing)
    rc, err, rd = replay(capsys, tmp_path, trace)
    monkeypatch.setattr(ReplayRunner, "train", real)
    assert rc == 1 and "injected failure" in err, err
    return rd


@pytest.mark.parametrize("swap", ["shorter", "same_length_other_values"])
def test_a_trace_swapped_before_resume_is_refused(tmp_path, capsys, monkeypatch, swap):
    trace = write_trace(tmp_path / "t.jsonl", healthy(80))
    rd = _interrupted_replay(tmp_path, capsys, monkeypatch, trace, at=50)
    original = trace.read_bytes()
    write_trace(trace, healthy(30) if swap == "shorter" else healthy(80, seed=1))
    capsys.readouterr()
    rc = main(["resume", str(rd), *QUIET])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "is not the one this run was checkpointed with" in err and "put the original trace back" in err, err
    # the original trace back: the resume goes through to the end of the trace
    trace.write_bytes(original)
    rc = main(["resume", str(rd), *QUIET])
    assert rc == 0, capsys.readouterr().err
    st = json.loads((rd / "state.json").read_text())
    assert st["status"] == "finished" and st["global_step"] == 80


# --------------------------------------------------------------------------- guard modules

GOOD_MODULE = """
from curriculum.registry import register_guard

@register_guard()
def always_quiet_probe_test(view):
    return False
"""


def _module_spec(tmp_path: Path, entry: str) -> Path:
    spec = tmp_path / "spec" / "g.toml"
    spec.parent.mkdir(exist_ok=True)
    spec.write_text(mini().replace(
        'wandb = "disabled"', f'wandb = "disabled"\nguard_modules = [{json.dumps(entry)}]'
    ))
    return spec


@pytest.mark.parametrize(
    "source, needle",
    [
        ("import sys\nsys.exit(0)\n", "called sys.exit(0) at import time"),
        ("import sys\nsys.exit(3)\n", "called sys.exit(3) at import time"),
        ("import os\nos._exit(0)\n", "ended the Python process before it finished (exit status 0)"),
        ("while True:\n    pass\n", "did not finish within 2 s"),
        ("import time\ntime.sleep(3600)\n", "did not finish within 2 s"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n", "killed by signal 11"),
        ("raise RuntimeError('boom at import')\n", "RuntimeError: boom at import"),
        ("print('x done')\nimport sys\nsys.stdout.flush()\nimport os\nos._exit(0)\n", "ended the Python process"),
    ],
)
def test_a_misbehaving_guard_module_is_a_clear_error_never_a_silent_pass_or_a_hang(
    tmp_path, capsys, monkeypatch, source, needle
):
    import time

    monkeypatch.setenv("CURRICULUM_GUARD_IMPORT_TIMEOUT", "2")
    spec = _module_spec(tmp_path, "mod.py")
    (spec.parent / "mod.py").write_text(source)
    t0 = time.monotonic()
    rc, out = validate(capsys, spec)
    assert time.monotonic() - t0 < 30
    clear_error(rc, out, f"{spec}:5: run.guard_modules", "'mod.py'", needle)


def test_guard_modules_outside_the_spec_folder_are_refused(tmp_path, capsys):
    outside = tmp_path / "outside.py"
    outside.write_text("open(__file__ + '.ran', 'w').close()\n")
    spec = _module_spec(tmp_path, "placeholder.py")
    (spec.parent / "link.py").symlink_to(outside)
    for entry, needle in ((str(outside), "absolute paths are refused"), ("../outside.py", "leaves the spec's folder"),
                          ("link.py", "leaves the spec's folder")):
        spec.write_text(spec.read_text().replace(json.dumps("placeholder.py"), json.dumps(entry)))
        rc, out = validate(capsys, spec)
        clear_error(rc, out, "run.guard_modules", needle)
        spec.write_text(spec.read_text().replace(json.dumps(entry), json.dumps("placeholder.py")))
    assert not Path(str(outside) + ".ran").exists()  # never imported, not even in the child


def test_a_well_behaved_guard_module_still_validates_and_registers(tmp_path, capsys):
    from curriculum.registry import guard_function_names

    spec = _module_spec(tmp_path, "guards/ok.py")
    (spec.parent / "guards").mkdir()
    (spec.parent / "guards" / "ok.py").write_text(GOOD_MODULE)
    rc, out = validate(capsys, spec)
    assert rc == 0, out
    assert "always_quiet_probe_test" in guard_function_names()


def test_each_process_of_several_keeps_its_own_trace_digest(tmp_path):
    """Several processes save into one checkpoint folder, each replaying its own trace: each
    restores against its own digest, and a swap on one of them is still refused."""
    from curriculum.errors import CurriculumError
    from runners.base import RunContext
    from runners.replay import ReplayRunner

    traces = [write_trace(tmp_path / f"t{i}.jsonl", healthy(40, seed=i)) for i in range(2)]

    def opened(i: int) -> ReplayRunner:
        r = ReplayRunner(trace=traces[i])
        r.open(RunContext(run_dir=tmp_path, seed=0, process_index=i, process_count=2))
        return r

    ckpt = tmp_path / "ckpt"
    for i in range(2):
        r = opened(i)
        list(r.train(25))
        r.save(ckpt)
    for i in range(2):
        r = opened(i)
        r.restore(ckpt)
        assert r.pos == 25
    write_trace(traces[1], healthy(40, seed=7))
    with pytest.raises(CurriculumError, match="is not the one this run was checkpointed with"):
        opened(1).restore(ckpt)
    opened(0).restore(ckpt)  # process 0's trace is unchanged


_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=False), st.text(max_size=8),
    st.sampled_from(["nan", "inf", "-inf", "Infinity"]),
)
_json = st.recursive(_json_leaf, lambda kids: st.lists(kids, max_size=6) | st.dictionaries(st.text(max_size=6), kids, max_size=4), max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(
    step=st.one_of(st.integers(min_value=-5, max_value=2**70), _json),
    rewards=st.one_of(st.lists(_json_leaf, max_size=12), _json),
    group=st.one_of(st.integers(min_value=-2, max_value=6), _json),
    metrics=st.one_of(st.dictionaries(st.sampled_from(["kl", "safe_rate", "x"]), _json, max_size=3), _json),
)
def test_any_trace_line_loads_or_is_one_clear_error(tmp_path_factory, step, rewards, group, metrics):
    from curriculum.errors import CurriculumError
    from runners.base import reward_step_stats
    from runners.replay import load_trace

    path = tmp_path_factory.mktemp("fuzz") / "t.jsonl"
    path.write_text(json.dumps({"step": step, "rewards": rewards, "group_size": group, "metrics": metrics}) + "\n")
    try:
        steps = load_trace(path)
    except CurriculumError as e:
        assert str(e).startswith(f"{path}:1: ") and "\n" not in str(e)
        return
    # accepted: a well-formed step whose statistics can always be computed
    (rec,) = steps
    assert len(rec["rewards"]) % rec["group_size"] == 0
    stats = reward_step_stats(rec["rewards"], rec["group_size"], 10.0)
    assert set(stats) >= {"reward_mean", "reward_std", "zero_spread_frac"}
