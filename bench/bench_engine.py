"""The engine's own cost per training step: guards, metric windows, state, logs.

    python bench/bench_engine.py [--steps 3000]

Drives the real Engine with a runner that hands out precomputed metric dicts instantly, so all
measured time is the engine's: pushing metrics into the windows, updating every guard of the
phase (the dipg example's expression guard and the CUSUM collapse detector), writing
metrics.jsonl, the progress bar off, periodic checkpoints on.  Prints microseconds per step
for 50-step and 1,000-step guard windows, and the share of the pure core (curriculum/core.py)
measured alone, as a host embedding it would call it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curriculum.engine import Engine  # noqa: E402
from curriculum.spec import load_spec  # noqa: E402
from runners.base import reward_step_stats  # noqa: E402

SPEC = """
[run]
name = "bench"
checkpoint_every = 500
progress = false
wandb = "disabled"
[runner]
kind = "replay"
[phases.medium]
kind = "grpo"
preset = "medium"
max_steps = {steps}
[guards.strong]
when = "mean(reward_mean, {w}) > 500 and mean(safe_rate, {w}) > 0.9 and slope(reward_mean, {w}) > 0 and quantile(reward_range, 0.1, {w}) > 1e9"
patience = 3
[guards.collapse]
type = "collapse"
warmup = {w}
[[transitions]]
from = "medium"
to = "medium"
guard = "strong"
[[transitions]]
from = "medium"
to = "medium"
guard = "collapse"
"""


class InstantRunner:
    """Hands out precomputed metrics: costs next to nothing, so the timing is the engine's."""

    metric_names = frozenset()

    def __init__(self, n: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.steps = []
        for _ in range(n):
            r = rng.choice([-15, 5, 20, 30, 50, 60], size=32).astype(float)
            m = reward_step_stats(list(r), 4, 60.0)
            m.update(safe_rate=float(rng.uniform(0.7, 0.95)), hallucination_rate=float(rng.uniform(0, 0.2)),
                     refusal_rate=0.02, kl=0.01, loss=0.1)
            self.steps.append(m)
        self.pos = 0

    def open(self, ctx): pass
    def setup_phase(self, phase): pass
    def set_penalties(self, values): pass

    def train(self, n):
        for _ in range(n):
            if self.pos >= len(self.steps):
                return
            self.pos += 1
            yield self.steps[self.pos - 1]

    def evaluate(self): return None
    def save(self, d): Path(d).mkdir(parents=True, exist_ok=True)
    def restore(self, d): pass
    def close(self): pass


def bench(window: int, steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "bench.toml"
        p.write_text(SPEC.replace("{steps}", str(steps)).replace("{w}", str(window)))
        spec = load_spec(p)
        runner = InstantRunner(steps)
        eng = Engine.create(spec, Path(tmp) / "run", runner_override=runner, console=False, progress=False)
        t0 = time.perf_counter()
        eng.run()
        dt = time.perf_counter() - t0
        assert eng.state.global_step == steps, eng.state.global_step
        return dt / steps * 1e6


def bench_core(window: int, steps: int) -> float:
    """The pure core alone (Curriculum.begin/observe, as an embedding host calls it): no files."""
    from curriculum.core import Curriculum, Stay

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "bench.toml"
        p.write_text(SPEC.replace("{steps}", str(steps)).replace("{w}", str(window)))
        cur = Curriculum(load_spec(p))
    metrics = InstantRunner(steps).steps
    state = cur.init()
    t0 = time.perf_counter()
    for m in metrics:
        state, d = cur.begin(state)
        while not isinstance(d, Stay):
            state, d = cur.begin(state)
        state, _ = cur.observe(state, m)
    dt = time.perf_counter() - t0
    assert state.global_step == steps
    return dt / steps * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3000)
    a = ap.parse_args()
    os.environ["WANDB_MODE"] = "disabled"
    print(f"engine cost per step ({a.steps} steps, 2 guards incl. CUSUM collapse, metrics.jsonl, checkpoints every 500):")
    for w in (50, 1000):
        best = min(bench(w, a.steps) for _ in range(3))
        core = min(bench_core(w, a.steps) for _ in range(3))
        print(f"  window {w:>5} steps: {best:8.1f} us/step (of which the pure core, Curriculum.observe: {core:6.1f} us/step)")


if __name__ == "__main__":
    main()
