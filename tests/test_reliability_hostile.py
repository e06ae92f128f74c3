"""Hostile and careless input: names that are paths, memory bombs, numbers past float range.

What a user relies on: `curriculum validate` refuses such a spec with one line naming the
file, line and key and what was expected (exit 2), never an internal error (exit 3), never a
silent pass; and a run never writes outside its run directory, whatever a name holds.
"""

from __future__ import annotations

import json
import os
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
    eng.state.phase = "x/../../../../ESCAPED"
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
