"""Scoring throughput on the 100 real upstream responses (repeated), on one core.

    python bench/bench_rewards.py [--data DIR] [--repeat N] [--preset NAME]

Prints responses/second for the plain scorer and for the DipgReward batch call.  The data
directory defaults to ../shared/data/upstream-eval relative to the repository root (or
$UPSTREAM_EVAL_DIR); when it is absent the synthetic references are used instead.
Goal: >= 10,000 responses/s (the original implementation managed about 560/s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rewards import DipgReward, LivePreset, get_preset, score  # noqa: E402
from rewards.data import generate_items, item_from_record  # noqa: E402
from rewards.text import prepare_context  # noqa: E402


def load_pairs(data_dir: Path):
    pairs = []
    for f in sorted(data_dir.glob("block*.jsonl")):
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                rec = json.loads(line)
                pairs.append((rec["response"], item_from_record(rec, f"{f.stem}:{i}")))
    return pairs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = os.environ.get("UPSTREAM_EVAL_DIR", str(ROOT.parent / "shared" / "data" / "upstream-eval"))
    ap.add_argument("--data", default=default_dir)
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    preset = get_preset(args.preset)
    data_dir = Path(args.data)
    pairs = load_pairs(data_dir) if data_dir.is_dir() else []
    source = f"{len(pairs)} upstream responses from {data_dir}"
    if not pairs:
        items = generate_items(100, seed=1)
        pairs = [(it.reference, it) for it in items]
        source = "100 synthetic references (upstream data not found)"
    # warm-up (also fills the per-context cache, as in training where contexts repeat)
    for resp, item in pairs:
        score(resp, item, preset)
    n = len(pairs) * args.repeat
    best = best_wall = float("inf")
    for _ in range(args.rounds):  # best of several rounds: the machine may be shared
        t0, w0 = time.process_time(), time.perf_counter()
        for _ in range(args.repeat):
            for resp, item in pairs:
                score(resp, item, preset)
        best = min(best, time.process_time() - t0)
        best_wall = min(best_wall, time.perf_counter() - w0)
    dt = best
    print(f"source: {source}; preset {args.preset}; {n} scorings per round, best of {args.rounds}")
    print(f"score():      {n / dt:,.0f} responses/s of CPU time on one core ({dt * 1e6 / n:.1f} us each; "
          f"wall clock {n / best_wall:,.0f}/s)")

    fn = DipgReward(LivePreset(preset))
    cols = {
        "context": [it.context for _, it in pairs],
        "question": [it.question for _, it in pairs],
        "expected_answer": [it.expected_answer for _, it in pairs],
        "task_type": [it.type for _, it in pairs],
    }
    comps = [r for r, _ in pairs]
    dt = float("inf")
    for _ in range(args.rounds):
        t0 = time.process_time()
        for _ in range(args.repeat):
            fn(prompts=comps, completions=comps, **cols)
        dt = min(dt, time.process_time() - t0)
    print(f"DipgReward(): {n / dt:,.0f} responses/s (batches of {len(pairs)}, incl. outcome rates)")

    prepare_context.cache_clear()
    t0 = time.process_time()
    for resp, item in pairs:
        score(resp, item, preset)
    dt = time.process_time() - t0
    print(f"cold cache:   {len(pairs) / dt:,.0f} responses/s (every context normalised once)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
