"""`curriculum resume RUN_DIR --spec CHANGED.toml` / `--set`: incompatible changes are refused
with a readable diff and leave the run untouched; documented safe changes are accepted and
take effect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curriculum.cli import main
from curriculum.events import read_jsonl
from curriculum.state import load_state
from runners.simulated import SimulatedRunner

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "dipg_simulated.toml"
TEXT = SPEC.read_text()
QUIET = ["--no-progress", "--no-report"]
SETS = ["--set", "run.checkpoint_every=20", "--set", "phases.recovery.max_steps=60"]


@pytest.fixture(autouse=True)
def _no_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("CURRICULUM_CRASH_AT", raising=False)


def events(rd: Path, name: str) -> list[dict]:
    recs, probs = read_jsonl(rd / "events.jsonl")
    assert not probs, probs
    return [r for r in recs if r["event"] == name]


def stopped_run(tmp_path: Path, monkeypatch, capsys, at_step: int = 30) -> Path:
    """A run stopped by a runner failure in phase `soft` (checkpoint at step 20): resumable."""
    orig = SimulatedRunner._grpo_step

    def bad(self, rng):
        if self.global_step == at_step:
            raise RuntimeError("node lost")
        return orig(self, rng)

    rd = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(SimulatedRunner, "_grpo_step", bad)
        assert main(["run", str(SPEC), *SETS, "--run-dir", str(rd), *QUIET]) == 1
    capsys.readouterr()
    st = load_state(rd / "state.json")
    assert st.status == "running" and st.phase == "soft" and st.last_checkpoint == "checkpoints/step-0000020"
    return rd


def snapshot(rd: Path) -> dict[str, bytes]:
    return {n: (rd / n).read_bytes() for n in ("spec.resolved.json", "run.json", "state.json", "events.jsonl", "metrics.jsonl")}


def write(tmp_path: Path, text: str, name: str = "changed.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


REMOVE_RECOVERY = (
    TEXT.split("[phases.recovery]")[0].replace('next = "recovery"', 'next = "end"')
    + TEXT.split('description = "block 3: back to soft penalties"\n')[1].split("[[transitions]]\nfrom = \"medium\"")[0]
)

INCOMPATIBLE = [
    ("phase renamed", TEXT.replace("recovery", "rescue"), [], ["soft, medium, recovery  ->  soft, medium, rescue", "renamed, removed or reordered"]),
    ("phase removed", REMOVE_RECOVERY, [], ["soft, medium, recovery  ->  soft, medium", "renamed, removed or reordered"]),
    ("seed changed", TEXT.replace("seed = 7", "seed = 8"), [], ["run.seed: 7  ->  8"]),
    ("runner changed", TEXT.replace("batch_size = 8", "batch_size = 16"), [], ["runner.batch_size: 8  ->  16"]),
    ("model changed", TEXT + '\n[model]\nname = "gemma-3-1b"\n', [], ["model.name: (absent)  ->  'gemma-3-1b'"]),
    ("visited phase's preset", TEXT.replace('preset = "soft"\nmax_steps = 300\nnext = "end"', 'preset = "medium"\nmax_steps = 300\nnext = "end"'),
     [], ["phases.soft.preset: 'soft'  ->  'medium'"]),
    ("seed via --set", None, ["run.seed=99"], ["run.seed: 7  ->  99"]),
    ("visited phase's hyperparameter via --set", None, ["phases.soft.train.max_steps=5"], ["phases.soft.train.max_steps: (absent)  ->  5"]),
    ("several at once", TEXT.replace("seed = 7", "seed = 8").replace("group_size = 4", "group_size = 2"), [],
     ["run.seed: 7  ->  8", "runner.group_size: 4  ->  2"]),
]


@pytest.mark.parametrize("label,text,sets,needles", INCOMPATIBLE, ids=[c[0] for c in INCOMPATIBLE])
def test_incompatible_changes_are_refused_with_a_diff(tmp_path, monkeypatch, capsys, label, text, sets, needles):
    rd = stopped_run(tmp_path, monkeypatch, capsys)
    before = snapshot(rd)
    args = ["resume", str(rd), *QUIET]
    if text is not None:
        args += ["--spec", str(write(tmp_path, text))]
    for s in sets:
        args += ["--set", s]
    rc = main(args)
    err = capsys.readouterr().err
    assert rc != 0
    assert "Traceback" not in err and err.startswith("error: the changed spec is not compatible"), err
    for n in needles:
        assert n in err, f"{n!r} not in:\n{err}"
    assert "Safe changes" in err
    assert snapshot(rd) == before, "a refused resume changes nothing in the run directory"


def test_refused_resume_can_still_resume_unchanged(tmp_path, monkeypatch, capsys):
    rd = stopped_run(tmp_path, monkeypatch, capsys)
    assert main(["resume", str(rd), "--spec", str(write(tmp_path, TEXT.replace("seed = 7", "seed = 8"))), *QUIET]) == 1
    assert main(["resume", str(rd), *QUIET]) == 0
    st = load_state(rd / "state.json")
    assert st.status == "finished" and [t["to_phase"] for t in st.transitions] == ["medium", "recovery", "end"]


def test_safe_guard_override_is_accepted_and_takes_effect(tmp_path, monkeypatch, capsys):
    rd = stopped_run(tmp_path, monkeypatch, capsys)
    # unchanged, the `strong` guard escalates soft -> medium (see test_engine); with a patience
    # longer than the phase it cannot, and soft runs its whole budget, then the run ends
    assert main(["resume", str(rd), "--set", "guards.strong.patience=1000", *QUIET]) == 0
    err = capsys.readouterr().err
    assert "resuming" in err
    tr = [(t["from_phase"], t["to_phase"], t["step"], t["reason"]) for t in events(rd, "phase_transition")]
    assert tr == [("soft", "end", 300, "max_steps")]
    assert json.loads((rd / "spec.resolved.json").read_text())["guards"]["strong"]["patience"] == 1000
    meta = json.loads((rd / "run.json").read_text())
    assert meta["resumed_with_changes"][0]["overrides"] == ["guards.strong.patience=1000"]
    assert "guards.strong.patience=1000" in meta["overrides"]


def test_safe_spec_changes_for_later_phases_are_accepted_and_take_effect(tmp_path, monkeypatch, capsys):
    rd = stopped_run(tmp_path, monkeypatch, capsys)
    changed = (
        TEXT.replace('preset = "medium"\nmax_steps = 300\nnext = "recovery"', 'preset = "medium"\nmax_steps = 50\nnext = "recovery"')
        .replace('preset = "soft"\nmax_steps = 300\ndescription = "block 3', 'preset = "medium"\nmax_steps = 300\ndescription = "block 3')
        .replace("patience = 10", "patience = 8")  # guard threshold
    )
    assert changed.count("max_steps = 50") == 1 and changed.count('preset = "medium"') == 2
    assert main(["resume", str(rd), "--spec", str(write(tmp_path, changed)), *QUIET]) == 0
    fin = {f["phase"]: f for f in events(rd, "phase_finished")}
    # medium would collapse 60+ steps in (test_engine); its new budget of 50 ends it first
    assert (fin["medium"]["steps"], fin["medium"]["reason"]) == (50, "max_steps")
    assert fin["recovery"]["steps"] == 60  # the run's own --set phases.recovery.max_steps=60 still holds
    to_recovery = [t for t in events(rd, "phase_transition") if t["to_phase"] == "recovery"][0]
    assert to_recovery["preset_after"] == "medium" and to_recovery["penalties_after"]["hallucination_penalty"] == -10
    st = load_state(rd / "state.json")
    assert st.status == "finished"
    assert json.loads((rd / "spec.resolved.json").read_text())["guards"]["strong"]["patience"] == 8


RECOVERY_100 = TEXT.replace('preset = "soft"\nmax_steps = 300\ndescription = "block 3', 'preset = "soft"\nmax_steps = 100\ndescription = "block 3')


def test_an_edit_masked_by_an_earlier_set_is_named_with_the_way_out(tmp_path, monkeypatch, capsys):
    """The run's --set phases.recovery.max_steps=60 is re-applied over a changed spec: editing
    that key in the file has no effect, and the resume says so (once, naming the key)."""
    assert RECOVERY_100 != TEXT
    rd = stopped_run(tmp_path, monkeypatch, capsys)
    assert main(["resume", str(rd), "--spec", str(write(tmp_path, RECOVERY_100)), *QUIET]) == 0
    err = capsys.readouterr().err
    warnings = [x for x in err.splitlines() if x.startswith("warning: ")]
    assert len(warnings) == 1, err
    assert "phases.recovery.max_steps: " in warnings[0] and "from 300 to 100" in warnings[0]
    assert "--set phases.recovery.max_steps=60 still applies" in warnings[0]
    assert {f["phase"]: f["steps"] for f in events(rd, "phase_finished")}["recovery"] == 60
    meta = json.loads((rd / "run.json").read_text())
    assert meta["resumed_with_changes"][0]["masked"] == [warnings[0][len("warning: "):]]
    assert (rd / "spec.source.toml").read_text() == RECOVERY_100  # what the next --spec is compared with


def test_an_edit_with_its_own_set_is_not_masked(tmp_path, monkeypatch, capsys):
    rd = stopped_run(tmp_path, monkeypatch, capsys)
    args = ["resume", str(rd), "--spec", str(write(tmp_path, RECOVERY_100)), "--set", "phases.recovery.max_steps=100"]
    assert main([*args, *QUIET]) == 0
    assert "warning: " not in capsys.readouterr().err
    assert {f["phase"]: f["steps"] for f in events(rd, "phase_finished")}["recovery"] == 100


def test_changing_the_current_guard_type_resumes_cleanly(tmp_path, monkeypatch, capsys):
    """A guard definition is a safe change, even its type: the stored guard state must not
    crash the new guard (it starts afresh)."""
    rd = stopped_run(tmp_path, monkeypatch, capsys)
    changed = TEXT.replace(
        '[guards.strong]\nwhen = "mean(reward_mean, 30) > 5 and mean(safe_rate, 30) > 0.9"\npatience = 10',
        '[guards.strong]\ntype = "collapse"\nbaseline = "warmup"\nwarmup = 20',
    )
    assert 'type = "collapse"\nbaseline' in changed
    rc = main(["resume", str(rd), "--spec", str(write(tmp_path, changed)), *QUIET])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert load_state(rd / "state.json").status == "finished"


# --------------------------------------------------------------------------- fuzzed overrides

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from curriculum.compat import _safe, check_compatible, diff  # noqa: E402
from curriculum.engine import load_run_spec  # noqa: E402
from curriculum.errors import RunDirError, SpecError  # noqa: E402

KEYS = ["guards.strong.patience", "guards.strong.when", "guards.collapse.h", "phases.soft.max_steps", "phases.medium.max_steps",
        "phases.medium.preset", "phases.soft.preset", "phases.recovery.penalties.hallucination_penalty", "run.seed", "run.name",
        "runner.batch_size", "runner.kind", "model.name", "phases.soft.train.lr", "phases.medium.train.lr", "run.checkpoint_every",
        "transitions.0.to", "transitions.1.when", "phases.soft.eval.samples", "run.wandb", "data.path"]
VALS = ["1", "5", "0", "-3", "1000", "nan", '"soft"', '"medium"', '"x"', "true", "[1]", "{a = 1}", '"mean(reward_mean, 5) > 1"']


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    import os

    os.environ["WANDB_MODE"] = "disabled"
    orig = SimulatedRunner._grpo_step

    def bad(self, rng):
        if self.global_step == 30:
            raise RuntimeError("node lost")
        return orig(self, rng)

    rd = tmp_path_factory.mktemp("stopped") / "run"
    SimulatedRunner._grpo_step = bad
    try:
        assert main(["run", str(SPEC), *SETS, "--run-dir", str(rd), *QUIET]) == 1
    finally:
        SimulatedRunner._grpo_step = orig
    return rd


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(VALS)), min_size=1, max_size=3))
def test_fuzzed_resume_overrides_are_accepted_only_when_safe(stopped, items):
    old = load_run_spec(stopped)
    meta = {**json.loads((stopped / "run.json").read_text()), "_run_dir": str(stopped)}
    overrides = [f"{k}={v}" for k, v in items]
    try:
        new = check_compatible(old, None, overrides, meta)
    except RunDirError as e:
        msg = str(e)
        assert msg.startswith("the changed spec is not compatible") and "  ->  " in msg
        return
    except SpecError as e:
        assert e.problems and all(p.startswith(("<spec>", "--set", str(old.path))) for p in e.problems), e.problems
        return
    for key, _, _ in diff(old.raw, new.raw):
        parts = key.split(".")
        unvisited = parts[0] == "phases" and parts[1] != "soft" and parts[2] in ("penalties", "preset", "train", "controller")
        assert _safe(key) or unvisited, f"accepted an unsafe change: {key}"


def test_a_run_with_a_default_profile_resumes(tmp_path, monkeypatch, capsys):
    """The resolved spec in the run directory has its profile applied; resuming must not ask
    for the profile (and its table) a second time."""
    spec = tmp_path / "prof.toml"
    spec.write_text(TEXT.replace('seed = 7\n', 'seed = 7\ndefault_profile = "short"\n')
                    + "\n[profiles.short.phases.recovery]\nmax_steps = 10\n")
    orig = SimulatedRunner._grpo_step

    def bad(self, rng):
        if self.global_step == 30:
            raise RuntimeError("node lost")
        return orig(self, rng)

    rd = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(SimulatedRunner, "_grpo_step", bad)
        assert main(["run", str(spec), "--set", "run.checkpoint_every=20", "--run-dir", str(rd), *QUIET]) == 1
    assert main(["resume", str(rd), *QUIET]) == 0
    fin = {f["phase"]: f["steps"] for f in events(rd, "phase_finished")}
    assert fin["recovery"] == 10, "the profile stays applied after the resume"
    before = snapshot(rd)
    capsys.readouterr()
    assert main(["resume", str(rd), "--set", "guards.strong.patience=3", *QUIET]) == 1  # finished: nothing to resume
    assert "already finished" in capsys.readouterr().err
    assert snapshot(rd) == before, "a refused resume records no spec change"
