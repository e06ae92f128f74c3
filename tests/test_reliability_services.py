"""wandb is optional: when it is unavailable training goes on, the local logs are complete and a
`wandb_unavailable` event says why; offline mode needs no network and writes under the run dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from curriculum.cli import main
from curriculum.events import read_jsonl
from curriculum.state import load_state

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "dipg_simulated.toml"
SHORT = ["--set", "phases.recovery.max_steps=20", "--no-progress", "--no-report"]


def events(rd: Path, name: str) -> list[dict]:
    recs, probs = read_jsonl(rd / "events.jsonl")
    assert not probs, probs
    return [r for r in recs if r["event"] == name]


def assert_complete(rd: Path, capsys=None) -> int:
    st = load_state(rd / "state.json")
    assert st.status == "finished" and st.finish_reason == "max_steps"
    recs, probs = read_jsonl(rd / "metrics.jsonl")
    assert not probs
    assert [r["step"] for r in recs] == list(range(1, st.global_step + 1)), "one metrics line per step"
    assert [t["to_phase"] for t in events(rd, "phase_transition")] == ["medium", "recovery", "end"]
    assert len(events(rd, "run_finished")) == 1
    if capsys is not None:
        capsys.readouterr()
        assert main(["status", str(rd)]) == 0
        assert "integrity: ok" in capsys.readouterr().out
    return st.global_step


@pytest.fixture
def online(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("CURRICULUM_CRASH_AT", raising=False)
    import wandb

    return wandb


def test_wandb_init_failing_does_not_stop_training(tmp_path, monkeypatch, capsys, online):
    def init(**kw):
        raise ConnectionError("wandb.ai unreachable: [Errno 101] Network is unreachable")

    monkeypatch.setattr(online, "init", init)
    rd = tmp_path / "run"
    assert main(["run", str(SPEC), "--run-dir", str(rd), *SHORT]) == 0
    un = events(rd, "wandb_unavailable")
    assert len(un) == 1 and un[0]["mode"] == "online" and "Network is unreachable" in un[0]["error"]
    assert_complete(rd, capsys)


class FlakyRun:
    """A wandb run whose service dies after a few log calls."""

    def __init__(self, fail_after: int):
        self.calls = 0
        self.fail_after = fail_after
        self.summary: dict = {}
        self.finished = False

    def log(self, data, step=None):
        self.calls += 1
        if self.calls > self.fail_after:
            raise BrokenPipeError("wandb service process died")

    def finish(self):
        self.finished = True


def test_wandb_dying_mid_run_does_not_stop_training(tmp_path, monkeypatch, capsys, online):
    runs = []

    def init(**kw):
        assert kw["dir"] == str(rd) and kw["mode"] == "online"
        runs.append(FlakyRun(fail_after=50))
        return runs[-1]

    monkeypatch.setattr(online, "init", init)
    rd = tmp_path / "run"
    assert main(["run", str(SPEC), "--run-dir", str(rd), *SHORT]) == 0
    steps = assert_complete(rd, capsys)
    assert steps > 60
    assert runs[0].calls == 51, "tracking is switched off at the first failure, not retried every step"
    un = events(rd, "wandb_unavailable")
    assert len(un) == 1 and "BrokenPipeError" in un[0]["error"]


def _env(tmp_path: Path, mode: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "CURRICULUM_CRASH_AT"}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update(
        WANDB_MODE=mode,
        HOME=str(home),  # no ~/.netrc: no API key
        WANDB_CONFIG_DIR=str(home / "wandb-config"),
        WANDB_CACHE_DIR=str(home / "wandb-cache"),
        WANDB_DATA_DIR=str(home / "wandb-data"),
        WANDB_BASE_URL="http://127.0.0.1:9",  # nothing listens there: no network
    )
    return env


def _cli(tmp_path: Path, mode: str, rd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "curriculum.cli", "run", str(SPEC), "--run-dir", str(rd), *SHORT],
        cwd=ROOT, env=_env(tmp_path, mode), capture_output=True, text=True, timeout=150,
    )


def test_wandb_offline_needs_no_network_and_writes_under_the_run_dir(tmp_path):
    rd = tmp_path / "run"
    p = _cli(tmp_path, "offline", rd)
    assert p.returncode == 0, p.stderr[-2000:]
    assert not events(rd, "wandb_unavailable"), "offline mode works without a network"
    offline = list((rd / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    assert list(offline[0].glob("run-*.wandb")), "the offline run's data file is in the run directory"
    assert_complete(rd)


def test_wandb_online_without_key_or_network_falls_back(tmp_path):
    rd = tmp_path / "run"
    p = _cli(tmp_path, "online", rd)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    un = events(rd, "wandb_unavailable")
    assert len(un) == 1 and un[0]["mode"] == "online"
    assert_complete(rd)
