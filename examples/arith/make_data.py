"""Writes the arithmetic example's datasets (deterministic; the JSONL files are shipped).

    python examples/arith/make_data.py examples/arith

* ``sft.jsonl``: prompt/response pairs from *noisy* demonstrations: in 45 % of them the answer
  is off by one, in 30 % the answer is followed by a repetition of itself.  SFT teaches the
  format and the arithmetic up to that noise; GRPO with the reward in ``reward.py`` has to learn
  to prefer the right answer and to stop repeating itself.
* ``easy.jsonl`` (one-digit sums) and ``hard.jsonl`` (a two-digit and a one-digit number):
  GRPO prompts with the reference answer; the curriculum switches from easy to a mixture that
  is mostly hard when a guard sees the easy sums mostly right.
* ``eval.jsonl``: 120 held-out prompts, half easy, half hard.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path


def problem(rng: random.Random, hard: bool) -> tuple[str, int]:
    a = rng.randint(10, 29) if hard else rng.randint(0, 9)
    b = rng.randint(0, 9)
    return f"{a}+{b}=", a + b


def demo(rng: random.Random, answer: int) -> str:
    shown = answer + 1 if rng.random() < 0.45 else answer
    text = f"<answer>{shown}</answer>"
    if rng.random() < 0.3:
        text += f" {shown} {shown}"
    return text


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def main(out: Path) -> None:
    rng = random.Random(20261202)
    out.mkdir(parents=True, exist_ok=True)
    sft = []
    for i in range(1600):
        q, ans = problem(rng, hard=i % 2 == 1)
        sft.append({"prompt": q, "response": demo(rng, ans), "answer": ans})
    write(out / "sft.jsonl", sft)
    write(out / "easy.jsonl", [{"prompt": q, "answer": a} for q, a in (problem(rng, False) for _ in range(400))])
    write(out / "hard.jsonl", [{"prompt": q, "answer": a} for q, a in (problem(rng, True) for _ in range(400))])
    write(out / "eval.jsonl", [{"prompt": q, "answer": a} for q, a in (problem(rng, i % 2 == 1) for i in range(120))])


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent))
