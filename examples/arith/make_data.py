"""Writes the arithmetic example's datasets (deterministic; the JSONL files are shipped).

    python examples/arith/make_data.py examples/arith

The task: the largest of two (easy) or three (hard) distinct digits 0-5, answered as
``<answer>N</answer>``.  The space is small on purpose (30 easy, 120 hard prompts): a tiny model on
CPU sees each prompt often enough in a few minutes of GRPO; the evaluation prompts come from the
same space, so what it measures is the policy's answers, not generalisation to unseen numbers.

* ``sft.jsonl``: prompt/response pairs from *bad* demonstrations: 60 % of them answer the
  smallest number instead, 30 % follow the answer with a repetition of itself.  SFT teaches the
  format and, greedily, the demonstrations' majority (the wrong number); GRPO with the reward in
  ``reward.py`` has to learn from the reward alone to answer the largest and to stop repeating.
* ``easy.jsonl`` (two digits) and ``hard.jsonl`` (three digits): GRPO prompts with the reference
  answer; the curriculum moves from easy to a mostly-hard mixture when a guard sees the easy
  ones mostly right.
* ``eval.jsonl``: 120 held-out prompts, half easy, half hard.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path


def problem(rng: random.Random, hard: bool) -> tuple[str, int, int]:
    k = 3 if hard else 2
    xs = rng.sample(range(6), k)  # distinct digits: one right answer
    return "max " + " ".join(map(str, xs)) + " =", max(xs), min(xs)


def demo(rng: random.Random, answer: int, wrong: int) -> str:
    shown = wrong if rng.random() < 0.6 else answer
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
        q, ans, wrong = problem(rng, hard=i % 2 == 1)
        sft.append({"prompt": q, "response": demo(rng, ans, wrong), "answer": ans})
    write(out / "sft.jsonl", sft)
    for name, hard in (("easy", False), ("hard", True)):
        write(out / f"{name}.jsonl", [{"prompt": q, "answer": a} for q, a, _ in (problem(rng, hard) for _ in range(400))])
    write(out / "eval.jsonl", [{"prompt": q, "answer": a} for q, a, _ in (problem(rng, i % 2 == 1) for i in range(120))])


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent))
