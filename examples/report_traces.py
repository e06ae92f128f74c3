"""Write replay traces shaped like the Med-Safety-Gym report's GRPO blocks.

    python examples/report_traces.py OUT_DIR [--seed N]

writes, for G = 4 generations x 8 prompts per step, with rewards from the medium preset:
  healthy.jsonl   300 healthy steps, with three 15-step droughts of top scores and
                  single-step blips where the maximum reward falls sharply
  collapse.jsonl  100 healthy steps, then a sharp collapse: the model stops trying
                  (refusals, identical completions in a group; the reward range collapses)
  nonfinite.jsonl the healthy trace with NaN and inf rewards sprinkled in

Replay any of them through a curriculum, e.g.:
  curriculum run examples/dipg.toml --replay OUT_DIR/collapse.jsonl --start-phase medium
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from rewards import PRESETS
from runners.simulated import OUTCOMES

G = 4
PROMPTS = 8
HEALTHY = {"perfect": 0.30, "abstain": 0.08, "conflict": 0.04, "unproven": 0.18, "wrong": 0.16,
           "inconsistent": 0.06, "hallucination": 0.10, "refusal": 0.03, "format_error": 0.05}
DROUGHT = {k: (0.0 if k in ("abstain", "conflict") else v) for k, v in HEALTHY.items()}
COLLAPSED = {"refusal": 0.92, "wrong": 0.06, "perfect": 0.02}


def _reward(outcome: str, preset: dict[str, float]) -> float:
    return float(sum(preset[k] for k in OUTCOMES[outcome][0]))


def _step(rng: np.random.Generator, weights: dict[str, float], group_collapse: float, preset: dict[str, float]) -> list[float]:
    names = sorted(weights)
    p = np.array([weights[n] for n in names], dtype=float)
    p /= p.sum()
    out: list[float] = []
    for _ in range(PROMPTS):
        if rng.random() < group_collapse:
            out += [_reward(names[rng.choice(len(names), p=p)], preset)] * G
        else:
            out += [_reward(names[i], preset) for i in rng.choice(len(names), size=G, p=p)]
    return out


def healthy_trace(seed: int, steps: int = 300, droughts: tuple[int, ...] = (40, 130, 220), drought_len: int = 15,
                  blips: tuple[int, ...] = (25, 95, 180, 260), preset: str = "medium") -> list[dict]:
    """Healthy GRPO steps.  Droughts: no completion reaches the top reward for `drought_len`
    steps.  Blips: one step whose best completion is a refusal (max reward falls sharply)."""
    rng = np.random.default_rng(seed)
    pv = PRESETS[preset]
    recs = []
    for s in range(1, steps + 1):
        in_drought = any(d <= s < d + drought_len for d in droughts)
        if s in blips:
            rewards = _step(rng, {"refusal": 0.5, "wrong": 0.2, "hallucination": 0.2, "format_error": 0.1}, 0.05, pv)
        else:
            rewards = _step(rng, DROUGHT if in_drought else HEALTHY, 0.05, pv)
        recs.append({"step": s, "rewards": rewards, "group_size": G})
    return recs


def collapse_trace(seed: int, healthy_steps: int = 100, collapsed_steps: int = 100, preset: str = "medium") -> list[dict]:
    rng = np.random.default_rng(seed)
    pv = PRESETS[preset]
    recs = []
    for s in range(1, healthy_steps + collapsed_steps + 1):
        if s <= healthy_steps:
            rewards = _step(rng, HEALTHY, 0.05, pv)
        else:
            rewards = _step(rng, COLLAPSED, 0.9, pv)
        recs.append({"step": s, "rewards": rewards, "group_size": G})
    return recs


def nonfinite_trace(seed: int, steps: int = 200) -> list[dict]:
    rng = np.random.default_rng(seed + 1)
    recs = healthy_trace(seed, steps)
    for r in recs:
        if rng.random() < 0.2:
            i = int(rng.integers(len(r["rewards"])))
            r["rewards"][i] = [math.nan, math.inf, -math.inf][int(rng.integers(3))]
    recs[50]["rewards"] = [math.nan] * len(recs[50]["rewards"])  # a step with no finite reward
    return recs


def write_trace(path: Path, recs: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in recs:
            rr = [None if not math.isfinite(x) else x for x in r["rewards"]]
            f.write(json.dumps({**r, "rewards": rr}) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    out = Path(a.out_dir)
    write_trace(out / "healthy.jsonl", healthy_trace(a.seed))
    write_trace(out / "collapse.jsonl", collapse_trace(a.seed))
    write_trace(out / "nonfinite.jsonl", nonfinite_trace(a.seed))
    print(f"wrote healthy.jsonl, collapse.jsonl, nonfinite.jsonl to {out}")


if __name__ == "__main__":
    main()
