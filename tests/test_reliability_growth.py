"""Long windows must not make every checkpoint heavy.

What a user relies on: a guard with a 10,000-step window makes the engine keep 10,000 values of
the metrics that guard reads, not of every metric; the windows are written once per checkpoint
(engine.json), not also into state.json; a checkpoint stops growing once its windows are full;
and a resumed run still equals the uninterrupted one.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from curriculum.cli import main
from curriculum.spec import load_spec

QUIET = ["--no-progress", "--no-report"]

SPEC = """\
[run]
name = "growth"
checkpoint_every = {every}
keep_checkpoints = 100
progress = false
wandb = "disabled"

[runner]
kind = "replay"

[phases.medium]
kind = "grpo"
preset = "medium"
max_steps = 100000

[guards.long]
when = "mean(reward_mean, {window}) > 1e9 and max(safe_rate, 20) > 2"

[[transitions]]
from = "medium"
to = "medium"
guard = "long"
"""


@pytest.fixture(autouse=True)
def _no_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")


def trace(path: Path, n: int) -> Path:
    with open(path, "w") as f:
        for i in range(1, n + 1):
            r = [float((i * 7 + j * 3) % 11 - 5) for j in range(8)]
            f.write(json.dumps({"step": i, "rewards": r, "group_size": 4, "metrics": {"safe_rate": (i % 10) / 10}}) + "\n")
    return path


def run(tmp_path: Path, capsys, steps: int, window: int, every: int, name: str = "run") -> Path:
    spec = tmp_path / "g.toml"
    spec.write_text(SPEC.format(window=window, every=every))
    rd = tmp_path / name
    capsys.readouterr()
    rc = main(["run", str(spec), "--replay", str(trace(tmp_path / "t.jsonl", steps)), "--run-dir", str(rd), *QUIET])
    assert rc == 0, capsys.readouterr().err
    return rd


def kept(engine_json: Path) -> dict[str, int]:
    """Metric -> number of values a checkpoint holds for the current phase."""
    hist = json.loads(engine_json.read_text())["history"]
    out = {}
    for m, entry in hist["current"].items():
        v = entry["values"]
        out[m] = len(base64.b64decode(v)) // 8 if isinstance(v, str) else len(v)
    return out


def test_only_the_metrics_a_guard_reads_keep_its_window(tmp_path, capsys):
    rd = run(tmp_path, capsys, steps=300, window=10_000, every=100)
    counts = kept(rd / "checkpoints" / "step-0000300" / "engine.json")
    assert counts["reward_mean"] == 300  # read over 10,000 steps: all 300 kept
    assert counts["safe_rate"] == 20  # read over 20 steps
    others = {m: n for m, n in counts.items() if m not in ("reward_mean", "safe_rate")}
    assert len(others) >= 8 and set(others.values()) == {1}, others  # read by no guard


def test_state_json_does_not_carry_the_windows(tmp_path, capsys):
    rd = run(tmp_path, capsys, steps=300, window=10_000, every=100)
    state = json.loads((rd / "state.json").read_text())
    assert state["history"] is None
    assert (rd / "state.json").stat().st_size < 5_000
    assert json.loads((rd / "checkpoints" / "final" / "engine.json").read_text())["history"]["phase"] == "medium"


def test_a_checkpoint_stops_growing_once_its_windows_are_full(tmp_path, capsys):
    rd = run(tmp_path, capsys, steps=900, window=300, every=150)
    size = {int(p.name[5:]): (p / "engine.json").stat().st_size for p in (rd / "checkpoints").glob("step-*")}
    assert size[300] > size[150]  # filling
    full = [size[s] for s in (300, 450, 600, 750, 900)]
    assert max(full) - min(full) < 200, size  # only counters change once full


def test_resume_under_per_metric_windows_equals_the_uninterrupted_run(tmp_path, capsys, monkeypatch):
    from runners.replay import ReplayRunner

    straight = run(tmp_path, capsys, steps=400, window=250, every=50, name="straight")
    real = ReplayRunner.train

    def failing(self, n):
        for m in real(self, n):
            if self.pos > 330:
                raise RuntimeError("injected failure")
            yield m

    monkeypatch.setattr(ReplayRunner, "train", failing)
    spec = tmp_path / "g.toml"
    rd = tmp_path / "crashed"
    rc = main(["run", str(spec), "--replay", str(tmp_path / "t.jsonl"), "--run-dir", str(rd), *QUIET])
    assert rc == 1
    monkeypatch.setattr(ReplayRunner, "train", real)
    assert main(["resume", str(rd), *QUIET]) == 0, capsys.readouterr().err
    a = (straight / "metrics.jsonl").read_text().splitlines()
    b = (rd / "metrics.jsonl").read_text().splitlines()
    assert len(a) == 400 and a == b
    ea = json.loads((straight / "checkpoints" / "final" / "engine.json").read_text())
    eb = json.loads((rd / "checkpoints" / "final" / "engine.json").read_text())
    assert ea["history"] == eb["history"] and ea["guards"] == eb["guards"]


@pytest.mark.parametrize(
    "when, expect",
    [
        ("mean(reward_mean, 500) > 1 and last(kl) > 0", ("reward_mean", 500, "kl", None)),
        ("ema(reward_mean, 0.1) > 1 and mean(kl, 300) > 0", ("reward_mean", 300, "kl", 300)),
        ("count(safe_rate) > 3 and mean(kl, 40) > 0", ("safe_rate", 40, "kl", 40)),
    ],
)
def test_history_capacities_follow_the_readers(tmp_path, when, expect):
    raw = {
        "run": {"name": "c", "window": 5},
        "runner": {"kind": "replay"},
        "phases": {"a": {"kind": "grpo", "preset": "soft", "max_steps": 10}},
        "guards": {"g": {"when": when}},
        "transitions": [{"from": "a", "to": "a", "guard": "g"}],
    }
    default, caps = load_spec(None, raw=raw).history_capacities()
    m1, n1, m2, n2 = expect
    assert default == 5 and caps.get(m1) == n1 and caps.get(m2) == n2
    assert "reward_std" not in caps


def test_a_custom_function_in_an_expression_keeps_every_metric_at_the_largest_window():
    root = Path(__file__).resolve().parents[1]
    default, caps = load_spec(root / "examples" / "custom_guard.toml").history_capacities()
    assert default == 20 and caps == {}  # top_reward_share(20) reads what it likes
