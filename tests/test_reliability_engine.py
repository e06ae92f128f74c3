"""Bad metrics, failing runners, full disks and unwritable run directories.

What a user relies on: non-finite or non-numeric metrics are handled by the declared
`[run] on_nonfinite` policy and never crash a run; a runner that raises, or a disk that fills
up, stops the run with one readable paragraph (no traceback), leaves the run directory
consistent (`curriculum status` says ok) and `curriculum resume` continues from the last
checkpoint to exactly the result of an uninterrupted run.
"""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

import pytest

from curriculum.cli import main
from curriculum.engine import Engine
from curriculum.events import read_jsonl
from curriculum.spec import load_spec
from curriculum.state import load_state
from runners.simulated import SimulatedRunner

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "dipg_simulated.toml"
SETS = ["--set", "run.checkpoint_every=20", "--set", "phases.recovery.max_steps=60"]
QUIET = ["--no-progress", "--no-report"]

# A short two-phase curriculum whose simulated rewards are sometimes NaN/inf.
NF_SPEC = """
[run]
name = "nf"
seed = 11
on_nonfinite = "{policy}"

[runner]
kind = "simulated"
batch_size = 4
group_size = 4

[runner.behaviour.a]
nan_prob = 0.01

[phases.a]
kind = "grpo"
preset = "soft"
max_steps = 40

[phases.b]
kind = "grpo"
preset = "medium"
max_steps = 10
"""


@pytest.fixture(autouse=True)
def _no_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("CURRICULUM_CRASH_AT", raising=False)


def events(rd: Path, name: str | None = None) -> list[dict]:
    recs, probs = read_jsonl(rd / "events.jsonl")
    assert not probs, probs
    return [r for r in recs if name is None or r["event"] == name]


def metric_lines(rd: Path) -> list[dict]:
    recs, probs = read_jsonl(rd / "metrics.jsonl")
    assert not probs, probs
    return recs


def summary(rd: Path) -> dict:
    st = load_state(rd / "state.json")
    return {
        "transitions": [(e["from_phase"], e["to_phase"], e["step"], e["reason"]) for e in events(rd, "phase_transition")],
        "finished": [(e["phase"], e["steps"], e["reason"]) for e in events(rd, "phase_finished")],
        "metrics": [(m["step"], m["phase"], m["metrics"]) for m in metric_lines(rd)],
        "global_step": st.global_step,
        "status": st.status,
    }


def status_ok(rd: Path, capsys) -> str:
    capsys.readouterr()
    rc = main(["status", str(rd)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "integrity: ok" in out
    return out


def one_paragraph_error(err: str) -> str:
    assert "Traceback" not in err and 'File "' not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict:
    os.environ["WANDB_MODE"] = "disabled"
    rd = tmp_path_factory.mktemp("straight") / "run"
    assert main(["run", str(SPEC), *SETS, "--run-dir", str(rd), *QUIET]) == 0
    s = summary(rd)
    assert s["status"] == "finished" and len(s["transitions"]) == 3
    return s


# --------------------------------------------------------------------------- on_nonfinite


def _nf_run(tmp_path: Path, policy: str) -> Path:
    spec = tmp_path / f"nf-{policy}.toml"
    spec.write_text(NF_SPEC.replace("{policy}", policy))
    rd = tmp_path / f"run-{policy}"
    assert main(["run", str(spec), "--run-dir", str(rd), *QUIET]) == 0
    return rd


def test_skip_and_penalty_record_nonfinite_steps_and_train_on(tmp_path):
    runs = {p: _nf_run(tmp_path, p) for p in ("skip", "penalty")}
    for policy, rd in runs.items():
        recs = metric_lines(rd)
        assert [r["step"] for r in recs] == list(range(1, 51)), "every step is trained and logged"
        bad_steps = [r["step"] for r in recs if (r["metrics"].get("nonfinite_rewards") or 0) > 0]
        assert 3 <= len(bad_steps) <= 30, bad_steps  # the simulated NaN/inf rewards did happen
        st = load_state(rd / "state.json")
        assert st.status == "finished" and st.finish_reason == "max_steps"
        assert st.nonfinite_steps == len(bad_steps), "every affected step is counted"
        nf = events(rd, "nonfinite_metrics")
        assert [e["step"] for e in nf] == bad_steps[: len(nf)] and len(nf) >= min(len(bad_steps), 20)
        assert all(e["policy"] == policy for e in nf)
        fin = events(rd, "phase_finished")
        assert [(f["phase"], f["steps"], f["reason"]) for f in fin] == [("a", 40, "max_steps"), ("b", 10, "max_steps")]
        # the statistics the guards read are finite: non-finite rewards are excluded from them
        assert all(r["metrics"]["reward_mean"] is not None for r in recs)
        assert events(rd, "run_finished")[0]["nonfinite_steps"] == len(bad_steps)
    # for the engine "penalty" is "skip": the reward function applies the penalty, not the engine
    strip = lambda rd: [(r["step"], r["phase"], r["metrics"]) for r in metric_lines(rd)]  # noqa: E731
    assert strip(runs["skip"]) == strip(runs["penalty"])


def test_stop_phase_ends_the_phase_at_the_first_nonfinite_step(tmp_path):
    rd = _nf_run(tmp_path, "stop_phase")
    recs = metric_lines(rd)
    first_bad = next(r["step"] for r in recs if (r["metrics"].get("nonfinite_rewards") or 0) > 0)
    assert first_bad < 40
    fin = events(rd, "phase_finished")
    assert (fin[0]["phase"], fin[0]["steps"], fin[0]["reason"]) == ("a", first_bad, "nonfinite")
    tr = events(rd, "phase_transition")
    assert (tr[0]["from_phase"], tr[0]["to_phase"], tr[0]["step"], tr[0]["reason"]) == ("a", "b", first_bad, "nonfinite")
    assert [r["phase"] for r in recs[:first_bad]] == ["a"] * first_bad
    assert all(r["phase"] == "b" for r in recs[first_bad:])


class CorruptingRunner(SimulatedRunner):
    """The simulated runner, with chosen metrics replaced at chosen global steps."""

    def __init__(self, edits: dict[int, dict], drop: tuple[str, ...] = ()):
        super().__init__()
        self.edits = edits
        self.drop = drop

    def train(self, n_steps):
        for m in super().train(n_steps):
            m = {k: v for k, v in m.items() if k not in self.drop}
            m.update(self.edits.get(self.global_step, {}))
            yield m


GUARDED = """
[run]
name = "g"
seed = 3
on_nonfinite = "{policy}"
[runner]
kind = "simulated"
[phases.a]
kind = "grpo"
preset = "soft"
max_steps = 30
[phases.b]
kind = "grpo"
preset = "medium"
max_steps = 5
[guards.jump]
when = "max(reward_mean, 10) > 1000 or min(reward_mean, 10) < -1000"
[[transitions]]
from = "a"
to = "b"
guard = "jump"
"""


def _engine_run(tmp_path: Path, text: str, runner, name: str = "run") -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(text)
    rd = tmp_path / name
    eng = Engine.create(load_spec(p), rd, runner_override=runner, console=False, progress=False)
    eng.run()
    return rd


BAD_VALUES = {
    5: {"reward_mean": math.inf},
    6: {"reward_mean": -math.inf, "reward_max": math.nan},
    7: {"reward_mean": "abc", "safe_rate": None},
    8: {"kl": [1, 2], "loss": {"a": 1}, "reward_std": 10**400},
    9: {"reward_mean": float("nan"), "grad_norm": object()},
    10: {"safe_rate": "0.75"},
}


def test_nonfinite_and_non_numeric_metrics_are_recorded_and_never_fire_a_guard(tmp_path):
    rd = _engine_run(tmp_path, GUARDED.replace("{policy}", "skip"), CorruptingRunner(BAD_VALUES))
    st = load_state(rd / "state.json")
    assert st.status == "finished" and st.global_step == 35
    recs = {r["step"]: r["metrics"] for r in metric_lines(rd)}
    assert recs[5]["reward_mean"] is None and recs[7]["reward_mean"] is None  # NaN/inf/non-number -> null
    assert recs[7]["safe_rate"] is None and recs[8]["kl"] is None and recs[8]["reward_std"] is None
    assert recs[10]["safe_rate"] == 0.75  # a numeric string is still a number
    assert isinstance(recs[11]["reward_mean"], float)
    # +-inf rewards are not evidence: the `jump` guard never fires, phase a runs its budget
    assert [(t["from_phase"], t["reason"]) for t in events(rd, "phase_transition")][0] == ("a", "max_steps")
    nf_steps = [e["step"] for e in events(rd, "nonfinite_metrics")]
    assert nf_steps == [5, 6, 7, 8, 9]
    assert st.nonfinite_steps == 5


def test_stop_phase_on_a_non_numeric_reward(tmp_path):
    rd = _engine_run(tmp_path, GUARDED.replace("{policy}", "stop_phase"), CorruptingRunner({7: {"reward_mean": "oops"}}))
    tr = events(rd, "phase_transition")
    assert (tr[0]["from_phase"], tr[0]["to_phase"], tr[0]["step"], tr[0]["reason"]) == ("a", "b", 7, "nonfinite")
    assert load_state(rd / "state.json").global_step == 12


def test_missing_metric_a_guard_needs_keeps_the_guard_quiet(tmp_path):
    text = GUARDED.replace("{policy}", "skip").replace(
        'when = "max(reward_mean, 10) > 1000 or min(reward_mean, 10) < -1000"', 'when = "mean(safe_rate, 5) > 0.0"'
    )
    rd = _engine_run(tmp_path, text, CorruptingRunner({}, drop=("safe_rate",)))
    recs = metric_lines(rd)
    assert all("safe_rate" not in r["metrics"] for r in recs)
    tr = events(rd, "phase_transition")
    assert (tr[0]["from_phase"], tr[0]["reason"], tr[0]["step"]) == ("a", "max_steps", 30), "no metric, no evidence"
    assert load_state(rd / "state.json").status == "finished"
    # with the metric present the same guard fires at once: the test above is not vacuous
    rd2 = _engine_run(tmp_path, text, CorruptingRunner({}), name="run2")
    tr2 = events(rd2, "phase_transition")
    assert tr2[0]["reason"] == "jump" and tr2[0]["step"] <= 5


# --------------------------------------------------------------------------- a runner that raises


def _fail_at(monkeypatch, attr: str, step: int, exc: BaseException) -> None:
    orig = getattr(SimulatedRunner, attr)

    def bad(self, *a, **kw):
        if self.global_step == step:
            raise exc
        return orig(self, *a, **kw)

    monkeypatch.setattr(SimulatedRunner, attr, bad)


@pytest.mark.parametrize(
    "attr,step,exc",
    [
        ("_grpo_step", 57, RuntimeError("CUDA error: an illegal memory access was encountered")),
        ("_reward", 133, ZeroDivisionError("reward scorer divided by zero")),
    ],
)
def test_runner_exception_leaves_a_resumable_run(tmp_path, monkeypatch, capsys, straight, attr, step, exc):
    rd = tmp_path / "run"
    with monkeypatch.context() as m:
        _fail_at(m, attr, step, exc)
        rc = main(["run", str(SPEC), *SETS, "--run-dir", str(rd), *QUIET])
        err = capsys.readouterr().err
    assert rc == 1
    line = one_paragraph_error(err)
    assert "runner failed" in line and type(exc).__name__ in line and str(exc) in line
    assert "curriculum resume" in line and f"after step {step - 1}" in line
    tb = (rd / "runner-error.txt").read_text()
    assert "Traceback" in tb and str(exc) in tb
    failed = events(rd, "runner_failed")
    assert len(failed) == 1 and failed[0]["step"] == step - 1 and failed[0]["during"] == "train"
    st = load_state(rd / "state.json")
    assert st.status == "running" and st.last_checkpoint
    assert st.last_checkpoint in line, "the message names the checkpoint a resume starts from"
    status_ok(rd, capsys)
    assert main(["resume", str(rd), *QUIET]) == 0
    got = summary(rd)
    assert got["status"] == "finished"
    assert got["transitions"] == straight["transitions"]
    assert got["finished"] == straight["finished"]
    assert got["metrics"] == straight["metrics"], "the resumed run equals an uninterrupted one"
    status_ok(rd, capsys)


def test_runner_yielding_a_non_dict_is_a_runner_error(tmp_path, monkeypatch, capsys):
    orig = SimulatedRunner._grpo_step
    monkeypatch.setattr(SimulatedRunner, "_grpo_step", lambda self, rng: None if self.global_step == 9 else orig(self, rng))
    rd = tmp_path / "run"
    assert main(["run", str(SPEC), *SETS, "--run-dir", str(rd), *QUIET]) == 1
    line = one_paragraph_error(capsys.readouterr().err)
    assert "expected a dict of metrics" in line and "NoneType" in line
    status_ok(rd, capsys)


# --------------------------------------------------------------------------- disks


def test_unwritable_run_directory_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file where a folder should be")
    for rd, needle in ((blocker / "run", "cannot write the run directory"), (blocker, "existing file")):
        assert main(["run", str(SPEC), "--run-dir", str(rd), *QUIET]) == 1
        line = one_paragraph_error(capsys.readouterr().err)
        assert str(rd) in line and needle in line
    assert blocker.read_text().startswith("a regular file"), "nothing was overwritten"


def _enospc_on_save(monkeypatch, nth: int) -> None:
    orig = SimulatedRunner.save
    calls = {"n": 0}

    def save(self, ckpt_dir):
        calls["n"] += 1
        if calls["n"] == nth:
            Path(ckpt_dir).mkdir(parents=True, exist_ok=True)
            (Path(ckpt_dir) / "partial.bin").write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(ckpt_dir) / "weights.bin"))
        return orig(self, ckpt_dir)

    monkeypatch.setattr(SimulatedRunner, "save", save)


def test_full_disk_during_a_checkpoint(tmp_path, monkeypatch, capsys, straight):
    rd = tmp_path / "run"
    with monkeypatch.context() as m:
        # saves: 1 boundary (soft start), then step 20, 40, 60 -> the 4th is step-0000060
        _enospc_on_save(m, 4)
        rc = main(["run", str(SPEC), *SETS, "--run-dir", str(rd), *QUIET])
        err = capsys.readouterr().err
    assert rc == 1
    line = one_paragraph_error(err)
    assert "step-0000060" in line and "No space left on device" in line
    assert "checkpoints/step-0000040" in line and "intact" in line
    ck = rd / "checkpoints"
    assert not (ck / "step-0000060").exists()
    assert not [p for p in ck.iterdir() if p.name.startswith(".tmp-")], "the half-written checkpoint is removed"
    prev = load_state(ck / "step-0000040" / "engine.json")
    assert prev.global_step == 40 and json.loads((ck / "step-0000040" / "runner" / "simulated.json").read_text())["global_step"] == 40
    st = load_state(rd / "state.json")
    assert st.last_checkpoint == "checkpoints/step-0000040" and st.status == "running"
    assert [e["path"] for e in events(rd, "checkpoint_failed")] == ["checkpoints/step-0000060"]
    status_ok(rd, capsys)
    assert main(["resume", str(rd), *QUIET]) == 0
    got = summary(rd)
    assert got["metrics"] == straight["metrics"] and got["transitions"] == straight["transitions"]
    status_ok(rd, capsys)


def test_full_disk_writing_the_run_state(tmp_path, monkeypatch, capsys, straight):
    """ENOSPC outside a checkpoint (state.json after a transition): a RunDirError, then resume."""
    import curriculum.state as state_mod

    rd = tmp_path / "run"
    real_replace = os.replace
    calls = {"n": 0}

    def replace(src, dst, *a, **kw):
        if Path(dst).name == "state.json" and Path(dst).parent == rd:
            calls["n"] += 1
            if calls["n"] == 9:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real_replace(src, dst, *a, **kw)

    with monkeypatch.context() as m:
        m.setattr(state_mod.os, "replace", replace)
        rc = main(["run", str(SPEC), *SETS, "--run-dir", str(rd), *QUIET])
        err = capsys.readouterr().err
    assert rc == 1
    line = one_paragraph_error(err)
    assert str(rd) in line and "No space left on device" in line and "state.json" in line
    assert "curriculum resume" in line
    assert not list(rd.glob(".state.json.*.tmp")), "no temporary file is left behind"
    status_ok(rd, capsys)
    assert main(["resume", str(rd), *QUIET]) == 0
    got = summary(rd)
    assert got["metrics"] == straight["metrics"] and got["transitions"] == straight["transitions"]


# --------------------------------------------------------------------------- fuzzed responses

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
import numpy as np  # noqa: E402

metric_names = st.sampled_from(["reward_mean", "reward_max", "reward_min", "reward_range", "zero_spread_frac",
                                "safe_rate", "loss", "kl", "grad_norm", "nonfinite_rewards", "top_reward_rate"])
bad_value = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.text(max_size=8),
    st.none(),
    st.booleans(),
    st.lists(st.floats(), max_size=3),
    st.sampled_from([np.float32("nan"), np.float64("inf"), np.int64(7), np.array([1.0, 2.0]), b"\xff", 1j, {"x": 1}]),
)


class ScriptedRunner(SimulatedRunner):
    def __init__(self, script: list[dict]):
        super().__init__()
        self.script = script

    def train(self, n_steps):
        for m in super().train(n_steps):
            k = self.global_step - 1
            if k < len(self.script):
                m.update(self.script[k])
            yield m


FUZZ_SPEC = GUARDED.replace("max_steps = 30", "max_steps = 12").replace("max_steps = 5", "max_steps = 3")


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.dictionaries(metric_names, bad_value, max_size=4), min_size=1, max_size=15),
       st.sampled_from(["skip", "penalty", "stop_phase"]))
def test_fuzzed_metric_values_never_crash_or_corrupt_the_run(tmp_path_factory, script, policy):
    tmp = tmp_path_factory.mktemp("fz")
    rd = _engine_run(tmp, FUZZ_SPEC.replace("{policy}", policy), ScriptedRunner(script))
    st_ = load_state(rd / "state.json")
    assert st_.status == "finished"
    recs = metric_lines(rd)
    assert [r["step"] for r in recs] == list(range(1, st_.global_step + 1))
    for r in recs:  # everything on disk is a finite number or null
        for v in r["metrics"].values():
            assert v is None or (isinstance(v, float) and math.isfinite(v)), v
    events(rd)  # every event line parses
    tr = events(rd, "phase_transition")
    assert tr[-1]["to_phase"] == "end"
    if policy == "stop_phase":
        assert tr[0]["reason"] in ("nonfinite", "max_steps", "jump")
