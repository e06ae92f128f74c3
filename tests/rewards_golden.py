"""Golden verdicts: a fixed, seeded set of (response, item) cases and the verdicts the scorer
gives them, so that a speed-up of the judges can be checked to change no verdict.

Cases: (1) synthetic items from ``generate_items`` with their reference and deterministic
perturbations (another item's response, a changed number, a mosaic of two quotes, a cut-off
response, abstentions, conflict reports, refusals, plain text); (2) the 100 upstream responses
(../shared/data/upstream-eval, when present) scored against their own item and two other items
of the same block.

    python tests/rewards_golden.py        # rewrite tests/data/rewards_golden.jsonl

Rewrite the file only for a deliberate change of a verdict, and say which in the commit.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rewards import PRESETS, Item, score  # noqa: E402
from rewards.data import generate_items, item_from_record  # noqa: E402

GOLDEN = ROOT / "tests" / "data" / "rewards_golden.jsonl"
UPSTREAM = ROOT.parent / "shared" / "data" / "upstream-eval"
PRESET = PRESETS["medium"]

_PROOF_RE = re.compile(r"<proof>(.*?)</proof>", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def _resp(think: str, proof: str, answer: str) -> str:
    return f"<think>{think}</think><proof>{proof}</proof><answer>{answer}</answer>"


def _bump_number(text: str, rng: random.Random) -> str:
    nums = list(re.finditer(r"\d+", text))
    if not nums:
        return text + " 7"
    m = rng.choice(nums)
    return text[: m.start()] + str(int(m.group(0)) + rng.randint(1, 9)) + text[m.end() :]


def _sentences(context: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", context) if len(s.split()) >= 6]


def synthetic_cases(n_items: int = 240, seed: int = 11) -> Iterator[tuple[str, str, Item]]:
    items = generate_items(n_items, seed=seed)
    rng = random.Random(seed)
    for i, it in enumerate(items):
        ref = it.reference
        proof = _PROOF_RE.search(ref).group(1)
        answer = _ANSWER_RE.search(ref).group(1)
        other = items[(i + 1) % len(items)]
        sents = _sentences(it.context) or [it.context]
        a, b = rng.choice(sents), rng.choice(sents)
        wa, wb = a.split(), b.split()
        mosaic = " ".join(wa[: len(wa) // 2] + wb[len(wb) // 2 :])
        quote_all = " ".join(f'"{s}"' for s in sents[:3])
        cut = rng.randint(5, max(6, len(ref) - 1))
        yield f"syn{i}:ref", ref, it
        yield f"syn{i}:other", other.reference, it
        yield f"syn{i}:num", _resp("Reading.", _bump_number(proof, rng), answer), it
        yield f"syn{i}:ansnum", _resp("Reading.", proof, _bump_number(answer, rng)), it
        yield f"syn{i}:mosaic", _resp("Stitching.", f'"{mosaic}"', answer), it
        yield f"syn{i}:multi", _resp("All of it.", quote_all, other.expected_answer), it
        yield f"syn{i}:cut", ref[:cut], it
        yield f"syn{i}:noproof", _resp("No proof.", "", answer), it
        yield f"syn{i}:unquoted", _resp("Claim.", f"The context says {a}", answer), it
        yield f"syn{i}:abstain", _resp("Not there.", f'"{a}"', f"The context does not report {it.question.lower().rstrip('?')}."), it
        yield f"syn{i}:conflict", _resp("Two values.", f'"{a}" "{b}"', "The reports give conflicting values; I cannot determine it."), it
        yield f"syn{i}:refusal", _resp("", "", "I'm sorry, I can't help with that. Please consult your doctor."), it
        yield f"syn{i}:plain", f"{answer} because {a}", it
        yield f"syn{i}:direction", _resp("Trend.", f'"{a}"', "The tumor is progressing and the disease has improved."), it
        yield f"syn{i}:strength", _resp("Strength.", f'"{a}"', f"{answer}; it is FDA approved and proven effective."), it


def _upstream_records() -> list[dict]:
    recs = []
    for name in ("block1.jsonl", "block2.jsonl"):
        f = UPSTREAM / name
        if not f.is_file():
            return []
        recs += [json.loads(x) for x in f.read_text(encoding="utf-8").splitlines() if x.strip()]
    return recs


def upstream_cases() -> Iterator[tuple[str, str, Item]]:
    recs = _upstream_records()
    by_block: dict[int, list[dict]] = {}
    for r in recs:
        by_block.setdefault(r["block"], []).append(r)
    for block, rs in by_block.items():
        for k, r in enumerate(rs):
            for off in (0, 7, 23):
                o = rs[(k + off) % len(rs)]
                yield f"up{block}:{r['index']}:{o['index']}", r["response"], item_from_record(o, "x")


def verdict_json(response: str, item: Item) -> dict:
    return score(response, item, PRESET).to_json()


def main() -> int:
    n = 0
    with open(GOLDEN, "w", encoding="utf-8") as out:
        for cid, resp, item in list(synthetic_cases()) + list(upstream_cases()):
            out.write(json.dumps({"id": cid, "verdict": verdict_json(resp, item)}, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    print(f"wrote {n} golden verdicts to {GOLDEN}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
