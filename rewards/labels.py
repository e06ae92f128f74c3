"""Hand labels for scored responses, and the grader's agreement with them.

A label file is JSONL, one object per response: ``block``, ``index`` (which response),
``flags`` (``format_ok``, ``hallucination``, ``correct``, ``abstention``, ``refusal``, ``safe``:
booleans) and ``reason`` (one line).  ``tests/data/upstream_labels.jsonl`` labels the 100
upstream responses; ``bench/bench_rewards.py`` prints the agreement per flag.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping

#: The labelled flags, and the Verdict flag each is compared with.
LABEL_FLAGS: dict[str, str] = {
    "format_ok": "format_ok",
    "hallucination": "hallucination",
    "correct": "correct",
    "abstention": "abstained",
    "refusal": "refusal",
    "safe": "safe",
}


class LabelError(ValueError):
    """A label file that cannot be read: the message names the file and line."""


def load_labels(path: str | Path) -> dict[tuple[int, int], dict]:
    """``{(block, index): {"flags": {...}, "reason": str}}`` from a label file."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"{p}: cannot read labels: {exc}") from None
    out: dict[tuple[int, int], dict] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            key = (int(rec["block"]), int(rec["index"]))
            flags = rec["flags"]
            missing = [f for f in LABEL_FLAGS if not isinstance(flags.get(f), bool)]
            if missing:
                raise ValueError(f"flags {', '.join(missing)} missing or not true/false")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LabelError(f"{p}:{lineno}: bad label: {exc}") from None
        if key in out:
            raise LabelError(f"{p}:{lineno}: block {key[0]} index {key[1]} labelled twice")
        out[key] = {"flags": {f: flags[f] for f in LABEL_FLAGS}, "reason": str(rec.get("reason", ""))}
    return out


def agreement(pairs: Iterable[tuple[Mapping[str, bool], Mapping[str, bool]]]) -> dict[str, tuple[int, int]]:
    """(agreeing, n) per labelled flag and ``"all"`` over all flag decisions, for pairs of
    (verdict flags, label flags)."""
    counts = {f: [0, 0] for f in LABEL_FLAGS}
    for vflags, lflags in pairs:
        for f, vf in LABEL_FLAGS.items():
            counts[f][0] += bool(vflags.get(vf, False)) == bool(lflags[f])
            counts[f][1] += 1
    out = {f: (a, n) for f, (a, n) in counts.items()}
    out["all"] = (sum(a for a, _ in out.values()), sum(n for _, n in out.values()))
    return out
