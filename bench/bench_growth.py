"""Does the cost per step stay flat over a long run with a long guard window?

    python bench/bench_growth.py [--steps 50000] [--window 10000] [--block 5000] [--checkpoint-every 100]

Replays a synthetic trace (8 prompts x G = 4 rewards per step, plus outcome rates) through the
real engine and replay runner, one guard reading a `--window`-step window, periodic
checkpoints every `--checkpoint-every` steps (each one writes the runner's file, engine.json and
state.json), the progress bar and wandb off.  Prints the wall time per step in each block of
`--block` steps, so growth shows as a rising column, and the sizes of the last checkpoint's
engine.json and of state.json.  `--window` goes up to the largest window validation allows
(curriculum/limits.py MAX_WINDOW).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curriculum.engine import Engine  # noqa: E402
from curriculum.spec import load_spec  # noqa: E402
from runners.replay import ReplayRunner  # noqa: E402

SPEC = """
[run]
name = "growth"
checkpoint_every = {every}
progress = false
wandb = "disabled"
[runner]
kind = "replay"
[phases.medium]
kind = "grpo"
preset = "medium"
max_steps = {steps}
[guards.long]
when = "mean(reward_mean, {window}) > 1e9"
[[transitions]]
from = "medium"
to = "medium"
guard = "long"
"""


class TimedReplay(ReplayRunner):
    """The replay runner, noting the clock as each step is handed to the engine."""

    def __init__(self, trace: Path):
        super().__init__(trace=trace)
        self.stamps: list[float] = []

    def train(self, n_steps):
        for m in super().train(n_steps):
            self.stamps.append(time.perf_counter())
            yield m


def write_trace(path: Path, steps: int, seed: int = 0) -> None:
    rnd = random.Random(seed)
    with open(path, "w") as f:
        for i in range(1, steps + 1):
            rewards = [rnd.choice([-15.0, 5.0, 20.0, 30.0, 50.0, 60.0]) for _ in range(32)]
            metrics = {"safe_rate": rnd.uniform(0.7, 0.95), "hallucination_rate": rnd.uniform(0, 0.2)}
            f.write(json.dumps({"step": i, "rewards": rewards, "group_size": 4, "metrics": metrics}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50_000)
    ap.add_argument("--window", type=int, default=10_000)
    ap.add_argument("--block", type=int, default=5_000)
    ap.add_argument("--checkpoint-every", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trace = tmp / "trace.jsonl"
        write_trace(trace, args.steps)
        spec_path = tmp / "growth.toml"
        spec_path.write_text(SPEC.format(steps=args.steps, window=args.window, every=args.checkpoint_every))
        spec = load_spec(spec_path)
        runner = TimedReplay(trace)
        eng = Engine.create(spec, tmp / "run", runner_override=runner, console=False, progress=False)
        t0 = time.perf_counter()
        eng.run()
        total = time.perf_counter() - t0
        t = runner.stamps
        print(f"{args.steps} replay steps, one guard on a {args.window}-step window, "
              f"a checkpoint every {args.checkpoint_every} steps: {total:.1f} s in all")
        print(f"{'steps':>15}  {'ms per step':>11}")
        for lo in range(0, len(t) - 1, args.block):
            hi = min(lo + args.block, len(t) - 1)
            print(f"{lo + 1:>7}-{hi + 1:<7}  {1000 * (t[hi] - t[lo]) / (hi - lo):>11.3f}")
        ckpts = sorted((tmp / "run" / "checkpoints").glob("step-*"))
        if ckpts:
            print(f"last periodic checkpoint's engine.json: {(ckpts[-1] / 'engine.json').stat().st_size / 1e3:.1f} kB")
        print(f"state.json: {(tmp / 'run' / 'state.json').stat().st_size / 1e3:.1f} kB")


if __name__ == "__main__":
    main()
