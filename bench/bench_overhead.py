"""Benchmark (b) of issue 3: the engine's overhead on real Tunix GRPO steps.

    python bench/bench_overhead.py [--steps 30] [--rounds 2]

In one process, on the tiny Gemma 3 preset with the cpu profile's GRPO settings (2 prompts x
G = 4, 112 new tokens), alternating in rounds:

  bare    a bare Tunix loop: the GRPOLearner over an RLCluster with the DIPG reward, N steps in
          ONE learner.train() call, as a hand-written Tunix script would run them;
  engine  the same GRPO steps through the engine (`curriculum run` minus argument parsing):
          one learner.train() per step, per-step metrics, guards (the dipg example's `strong`
          expression guard and the CUSUM collapse detector), metrics.jsonl, events, state.

Both paths use the same model size, data, reward and sampling settings; each warms up (compiles)
before its timed steps.  Prints seconds per step for each, and the overhead in percent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "disabled")

GRPO_TRAIN = {"batch_size": 2, "num_generations": 4, "max_new_tokens": 112, "learning_rate": 1e-4}

SPEC = """
[run]
name = "overhead"
seed = 3
progress = false
wandb = "disabled"
[runner]
kind = "tunix"
[data]
num_items = 300
eval_items = 4
[phases.soft]
kind = "grpo"
preset = "soft"
max_steps = {steps}
train = {{ batch_size = 2, num_generations = 4, max_new_tokens = 112, learning_rate = 1e-4 }}
eval = {{ enabled = false }}
[guards.strong]
when = "mean(reward_mean, 30) > 500 and mean(safe_rate, 30) > 0.9"
patience = 10
[guards.collapse]
type = "collapse"
[[transitions]]
from = "soft"
to = "soft"
guard = "strong"
[[transitions]]
from = "soft"
to = "soft"
guard = "collapse"
"""


class TimedRunner:
    """Wraps the real TunixRunner and notes the wall time at which each step is handed over."""

    def __init__(self, inner, stamps: list[float]):
        self._inner = inner
        self._stamps = stamps
        self.metric_names = inner.metric_names

    def train(self, n):
        for m in self._inner.train(n):
            self._stamps.append(time.perf_counter())
            yield m

    def __getattr__(self, name):
        return getattr(self._inner, name)


def engine_round(warmup: int, steps: int) -> float:
    from curriculum.engine import Engine
    from curriculum.spec import load_spec
    from runners.tunix.runner import TunixRunner

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "overhead.toml"
        p.write_text(SPEC.format(steps=warmup + steps))
        spec = load_spec(p)
        stamps: list[float] = []
        runner = TimedRunner(TunixRunner(), stamps)
        eng = Engine.create(spec, Path(tmp) / "run", runner_override=runner, console=False, progress=False)
        eng.run()
        assert len(stamps) == warmup + steps, len(stamps)
        # from the handover of the last warm-up step to the handover of the last step: every
        # timed step includes the engine's work on the step before it
        return (stamps[-1] - stamps[warmup - 1]) / steps


def bare_round(warmup: int, steps: int) -> float:
    """The same Tunix objects the runner builds, driven as a plain script would drive them."""
    import jax

    from runners.base import PhaseSetup, RunContext
    from runners.tunix.runner import TunixRunner

    with tempfile.TemporaryDirectory() as tmp:
        r = TunixRunner()
        r.open(RunContext(run_dir=Path(tmp), seed=3, data={"num_items": 300, "eval_items": 4},
                          runner={"kind": "tunix", "wandb": "disabled"}))
        from rewards import PRESETS

        r.setup_phase(PhaseSetup(name="soft", kind="grpo", ordinal=0, max_steps=warmup + steps, start_phase_step=0,
                                 global_step=0, penalties=dict(PRESETS["soft"]), train=dict(GRPO_TRAIN), eval={}))
        r._ensure_built()
        cluster, learner, it = r._cluster, r._learner, r._iterator
        r._rollout_cfg.seed = None  # Tunix default: one key for the whole train() call

        def run(n: int) -> float:
            cluster.cluster_config.training_config.max_steps = cluster.actor_trainer.train_steps + n
            it.allowance = n
            t0 = time.perf_counter()
            with jax.set_mesh(r.mesh):
                learner.train(it)
            return time.perf_counter() - t0

        run(warmup)
        dt = run(steps)
        r.close()
        return dt / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    bare, eng = [], []
    for i in range(a.rounds):
        bare.append(bare_round(a.warmup, a.steps))
        print(f"round {i + 1}: bare Tunix loop {bare[-1]:.3f} s/step", flush=True)
        eng.append(engine_round(a.warmup, a.steps))
        print(f"round {i + 1}: through the engine {eng[-1]:.3f} s/step", flush=True)
    b, e = statistics.mean(bare), statistics.mean(eng)
    print(f"\nGRPO, tiny Gemma 3, 2 prompts x G=4, 112 new tokens, {a.steps} timed steps x {a.rounds} rounds")
    print(f"  bare Tunix loop   {b:.3f} s/step  (rounds: {', '.join(f'{x:.3f}' for x in bare)})")
    print(f"  through engine    {e:.3f} s/step  (rounds: {', '.join(f'{x:.3f}' for x in eng)})")
    print(f"  overhead          {100 * (e - b) / b:+.1f} %")


if __name__ == "__main__":
    main()
