"""The curriculum inside a training loop you wrote yourself (README: "Embedding the curriculum").

    python examples/embed_loop.py examples/dipg.toml TRACE.jsonl [--start-phase medium] [--set K=V]

Your loop keeps its trainer, data, logging and checkpoints; at each step it asks the curriculum
what now.  Here the "trainer" is a recorded reward trace (the replay format of runners/replay.py:
one GRPO step's rewards per line), so the loop runs anywhere in a second; replace ``my_grpo_step``
with your own step.  It prints one JSON line per transition: the same decisions, at the same
steps, as ``curriculum run SPEC --replay TRACE`` (tests/test_core.py checks that).
"""

from __future__ import annotations

import argparse
import json

import curriculum
from rewards import max_reward


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("spec")
    ap.add_argument("trace")
    ap.add_argument("--start-phase")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    steps = (json.loads(line) for line in open(args.trace, encoding="utf-8") if line.strip())

    def my_grpo_step(penalties):  # your trainer: one step with these reward values in force
        rec = next(steps, None)
        if rec is None:
            return None
        stats = curriculum.step_metrics(rec["rewards"], rec["group_size"], max_reward(penalties))
        return {**stats, **rec.get("metrics", {})}

    cur = curriculum.Curriculum(curriculum.load_spec(args.spec, overrides=args.set))
    state = cur.init(args.start_phase)
    while not state.finished:
        state, d = cur.begin(state)  # a phase begins, or an eval phase / spent budget moves on
        if isinstance(d, curriculum.Stay):
            metrics = my_grpo_step(state.penalties)
            if metrics is None:  # out of data: the run ends where it is (no transition)
                state, _ = cur.finish(state, "runner_exhausted")
                continue
            state, d = cur.observe(state, metrics)
        if isinstance(d, curriculum.Transition):
            print(json.dumps({"from": d.phase, "to": d.to, "step": d.step, "reason": d.reason}))
    print(json.dumps({"finished": state.finish_reason, "steps": state.global_step}))


if __name__ == "__main__":
    main()
