"""What several processes cost the engine per step: the metric all-gather and the decision
broadcast, measured on real jax.distributed processes (CPU, gloo collectives, one machine).

    python bench/bench_multihost.py [--steps 2000] [--procs 2]

Runs the same replay spec (a runner that hands out recorded steps instantly, so the time is
the engine's) with 1 process and with N processes, each for --steps steps, and prints the wall
time per step of each and the difference: the per-step price of running on a pod, before any
network latency between hosts.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

SPEC = """
[run]
name = "bench-mh"
progress = false
wandb = "disabled"
[runner]
kind = "replay"
[phases.medium]
kind = "grpo"
preset = "medium"
max_steps = {steps}
next = "end"
[guards.never]
when = "mean(reward_mean, 50) > 500 and mean(safe_rate, 50) > 0.9"
[[transitions]]
guard = "never"
from = "medium"
to = "medium"
"""

def _trace(path: Path, steps: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for s in range(1, steps + 1):
            r = rng.choice([-15.0, -5.0, 0.0, 10.0, 20.0, 45.0], size=32).tolist()
            f.write(json.dumps({"step": s, "rewards": r, "group_size": 4, "metrics": {"safe_rate": 0.5}}) + "\n")


def _run(tmp: Path, steps: int, procs: int) -> float:
    spec = tmp / "spec.toml"
    spec.write_text(SPEC.format(steps=steps))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_dir = tmp / f"run-{procs}"
    ps = []
    t0 = time.perf_counter()
    for i in range(procs):
        trace = tmp / f"trace-{i}.jsonl"
        _trace(trace, steps, i)
        env = {**os.environ, "WANDB_MODE": "disabled", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
        if procs > 1:
            env.update(CURRICULUM_COORDINATOR=f"127.0.0.1:{port}", CURRICULUM_NUM_PROCESSES=str(procs),
                       CURRICULUM_PROCESS_ID=str(i))
        ps.append(subprocess.Popen(
            [sys.executable, "-m", "curriculum.cli", "run", str(spec), "--run-dir", str(run_dir), "--replay",
             str(trace), "--no-progress", "--no-report"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for p in ps:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(err[-2000:])
    wall = time.perf_counter() - t0
    # the run's own clock: first to last step in metrics.jsonl's neighbour, events.jsonl
    ev = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]
    t = {e["event"]: e["timestamp"] for e in ev if e["event"] in ("phase_started", "run_finished")}
    from datetime import datetime

    span = (datetime.fromisoformat(t["run_finished"]) - datetime.fromisoformat(t["phase_started"])).total_seconds()
    print(f"{procs} process(es): {steps} steps in {span:.2f} s of training loop ({wall:.1f} s with start-up)")
    return span / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--procs", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        one = _run(Path(d), a.steps, 1)
        many = _run(Path(d), a.steps, a.procs)
    print(f"per step: 1 process {one * 1e6:.0f} us, {a.procs} processes {many * 1e6:.0f} us; "
          f"collectives (metric all-gather + decision broadcast) add {(many - one) * 1e6:.0f} us per step")


if __name__ == "__main__":
    main()
