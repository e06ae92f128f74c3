"""The arithmetic example end to end on CPU: wall time, peak memory, transitions, and the
evaluation after SFT against the end of the run (greedy, 120 held-out sums, 95% intervals).

    python bench/bench_arith.py [RUN_DIR] [--set KEY=VALUE ...]

Runs `curriculum run examples/arith.toml` in a child process (or only reads RUN_DIR when it
already holds a finished run) and prints the figures the README quotes.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    run_dir = Path(argv[0]) if argv and not argv[0].startswith("--") else Path("/tmp/bench-arith")
    extra = [a for a in argv if a != str(run_dir)]
    wall = rss = None
    if not (run_dir / "events.jsonl").is_file():
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "curriculum.cli", "run", str(ROOT / "examples" / "arith.toml"),
                            "--run-dir", str(run_dir), "--no-progress", *extra], cwd=ROOT,
                           env={**os.environ, "WANDB_MODE": "disabled"})
        wall = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
        if r.returncode:
            print(f"run failed (exit {r.returncode})")
            return r.returncode
    events = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines() if x.strip()]
    if wall is not None:
        print(f"wall time: {wall / 60:.1f} min; peak RSS: {rss:.2f} GiB")
    for e in events:
        if e["event"] == "phase_transition":
            why = e["reason"] if e["reason"] == "max_steps" else f"{e['reason']} ({json.dumps(e.get('evidence'))[:200]})"
            print(f"transition {e['from_phase']} -> {e['to_phase']} at step {e['step']} (phase step {e['phase_step']}): {why}")
    evals = [(e["phase"], e["eval"]) for e in events if e["event"] == "phase_finished" and e.get("eval")]
    if len(evals) >= 2:
        (p0, a), (p1, b) = evals[0], evals[-1]
        print(f"\n| metric | end of {p0} | end of {p1} |\n|---|---|---|")
        for k in ("correct_rate", "format_rate", "extra_rate", "reward_mean"):
            if k in a and k in b:
                print(f"| {k} | {a[k]:.2f} [{a[k + '_lo']:.2f}, {a[k + '_hi']:.2f}] | {b[k]:.2f} [{b[k + '_lo']:.2f}, {b[k + '_hi']:.2f}] |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
