"""Helpers shared by the tests that drive real Tunix runs through the CLI (not a test module)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e.pop("CURRICULUM_CRASH_AT", None)
    e.update(WANDB_MODE="disabled", **extra)
    return e


def cli(*args: str, env_vars=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curriculum.cli", *args], cwd=ROOT, env=env_vars or env(),
                          capture_output=True, text=True, timeout=900)


def checkpoint_weights(ckpt: Path) -> dict[str, np.ndarray]:
    """The model arrays of one checkpoint, flattened to path -> array (read back with orbax)."""
    import orbax.checkpoint as ocp

    tree = ocp.StandardCheckpointer().restore((Path(ckpt) / "runner" / "arrays").resolve())
    flat: dict[str, np.ndarray] = {}

    def walk(prefix, node):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}/{k}", v)
        else:
            flat[prefix] = np.asarray(node)

    walk("", tree["model"])
    return flat


def straight_and_killed(tmp: Path, spec_text: str, crash_at: str) -> tuple[Path, Path]:
    """Run a spec uninterrupted, and again SIGKILLed at ``crash_at`` (CURRICULUM_CRASH_AT) then
    resumed; returns both run directories."""
    import signal

    spec = Path(tmp) / "spec.toml"
    spec.write_text(spec_text)
    straight, killed = Path(tmp) / "straight", Path(tmp) / "killed"
    p = cli("run", str(spec), "--run-dir", str(straight), "--no-report")
    assert p.returncode == 0, p.stderr[-3000:]
    p = cli("run", str(spec), "--run-dir", str(killed), "--no-report", env_vars=env(CURRICULUM_CRASH_AT=crash_at))
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    r = cli("resume", str(killed), "--no-report")
    assert r.returncode == 0, r.stderr[-3000:]
    return straight, killed


def assert_same_run(straight: Path, killed: Path, n_steps: int) -> None:
    """Both runs logged steps 1..n_steps with equal metrics and ended with equal weights."""
    import pytest

    from curriculum.events import read_jsonl

    a, _ = read_jsonl(straight / "metrics.jsonl")
    b, _ = read_jsonl(killed / "metrics.jsonl")
    assert [m["step"] for m in b] == [m["step"] for m in a] == list(range(1, n_steps + 1))
    for x, y in zip(a, b):
        for k, v in x["metrics"].items():
            if k == "step_time":
                continue
            w = y["metrics"][k]
            assert (v is None and w is None) or v == pytest.approx(w, rel=1e-5, abs=1e-6), (x["step"], k, v, w)
    wa = checkpoint_weights(straight / "checkpoints" / "final")
    wb = checkpoint_weights(killed / "checkpoints" / "final")
    assert wa.keys() == wb.keys() and len(wa) > 5
    for k in wa:
        np.testing.assert_allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6, err_msg=k)
