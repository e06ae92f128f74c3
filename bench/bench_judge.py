"""The optional model judge's cost: load time, then seconds per batch of judge prompts.

    python bench/bench_judge.py [--model DIR] [--batch N] [--rounds N]

``--model`` defaults to the tiny Gemma 3 shipped in the package (runners/tunix/assets/tiny-dipg:
its verdicts mean nothing, its cost shows the code path's overhead); give a real Gemma 3
checkpoint directory to measure that one.  The prompts are the judge prompts of synthetic DIPG
items with their reference answers.  The first call compiles (reported separately).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "runners" / "tunix" / "assets" / "tiny-dipg"))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args(argv)

    from rewards.data import generate_items
    from rewards.model_judge import problem_with_dir, prompt

    why = problem_with_dir(Path(args.model))
    if why:
        print(f"--model: {why}")
        return 1
    from runners.tunix.judge import LMSupportJudge

    t0 = time.perf_counter()
    judge = LMSupportJudge(Path(args.model))
    load = time.perf_counter() - t0
    items = generate_items(args.batch, seed=1)
    prompts = [prompt(it, it.expected_answer) for it in items]
    lengths = [len(judge._ids(p)) for p in prompts]
    t0 = time.perf_counter()
    judge(prompts)
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        judge(prompts)
        best = min(best, time.perf_counter() - t0)
    print(f"judge model: {args.model}")
    print(f"load {load:.2f} s; first batch (compiles) {first:.2f} s")
    print(f"batch of {args.batch} prompts ({min(lengths)}-{max(lengths)} tokens): {best:.3f} s "
          f"(best of {args.rounds}), {args.batch / best:.0f} prompts/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
