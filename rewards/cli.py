"""``curriculum score FILE.jsonl [--json] [--preset NAME]``: score recorded responses.

Each input line is a JSON object with ``context``, ``question``, ``expected_answer`` (a string
or an upstream ``{"final": ...}`` object; the ``<answer>`` part is used when it has tags),
``response``, and optionally ``type`` (else inferred from the expected answer) and ``id``
(else ``FILE:LINE``); other keys are ignored.  Malformed lines are reported on stderr as
``FILE:LINE: reason`` and skipped; the exit status is 1 when any line was bad, 2 for a usage
error or an unreadable file, else 0.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Sequence, TextIO

from .data import item_from_record
from .metrics import REWARD_METRICS, RATE_METRICS, aggregate
from .presets import PRESETS, get_preset
from .scoring import Verdict, score


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # no traceback, no sys.exit from inside main
        raise _UsageError(f"{self.prog}: error: {message}")


class _UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="curriculum score", description="Score recorded responses with the DIPG reward.")
    ap.add_argument("file", help="JSONL file: context, question, expected_answer, response[, type, id]")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--preset", default="medium", choices=sorted(PRESETS), help="reward preset (default medium)")
    return ap


def _fmt(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.3f}"


def _table(metrics, n_items: int, preset: str, out: TextIO) -> None:
    out.write(f"scored {n_items} responses with preset {preset!r}\n")
    out.write(f"{'metric':<22}{'value':>10}{'95% CI':>22}{'n':>7}\n")
    for name in REWARD_METRICS + RATE_METRICS + ("unjudged_rate",):
        m = metrics[name]
        ci = f"[{_fmt(m.lo)}, {_fmt(m.hi)}]"
        out.write(f"{name:<22}{_fmt(m.value):>10}{ci:>22}{m.n:>7}\n")
    u = metrics["unjudged_rate"]
    k = round(u.value * u.n) if u.n else 0
    out.write(f"{k} of {u.n} responses had no proof or answer to judge (counted as not hallucinated, not safe)\n")


#: Work bound per input line: a longer line is reported as bad without being parsed ...
MAX_LINE_CHARS = 4_000_000
#: ... and so is a context longer than this (every judge is linear in the response and the
#: context, and a quote costs at most MAX_TRIGRAM_POSITIONS lookups per word, so a line's
#: work is bounded by these two sizes).
MAX_CONTEXT_CHARS = 1_000_000


def _check_record(rec: object) -> None:
    if not isinstance(rec, dict):
        raise ValueError("expected a JSON object")
    if not isinstance(rec.get("response"), str):
        raise ValueError('missing or non-string "response"')
    ctx = rec.get("context")
    if isinstance(ctx, str) and len(ctx) > MAX_CONTEXT_CHARS:
        raise ValueError(f'"context" is {len(ctx):,} characters; the limit is {MAX_CONTEXT_CHARS:,}')


def score_file(path: Path, preset_name: str, err: TextIO) -> tuple[list[str], list[Verdict], int] | None:
    """Score a JSONL file line by line (streaming: only the verdicts are kept).  Returns
    (ids, verdicts, number of bad lines), or None when the file cannot be read."""
    preset = get_preset(preset_name)
    ids: list[str] = []
    verdicts: list[Verdict] = []
    bad = 0
    lineno = 0
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                if len(line) > MAX_LINE_CHARS:
                    err.write(f"{path}:{lineno}: line is {len(line):,} characters; the limit is {MAX_LINE_CHARS:,}\n")
                    bad += 1
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    err.write(f"{path}:{lineno}: invalid JSON: {exc.msg} (column {exc.colno})\n")
                    bad += 1
                    continue
                except RecursionError:
                    err.write(f"{path}:{lineno}: invalid JSON: nested too deeply\n")
                    bad += 1
                    continue
                try:
                    _check_record(rec)
                    item = item_from_record(rec, f"{path.name}:{lineno}")
                    verdict = score(rec["response"], item, preset)
                except RecursionError:
                    err.write(f"{path}:{lineno}: a field is nested too deeply\n")
                    bad += 1
                    continue
                except Exception as exc:  # one bad line never stops the rest
                    msg = " ".join(str(exc).split()) or type(exc).__name__
                    err.write(f"{path}:{lineno}: {msg}\n")
                    bad += 1
                    continue
                ids.append(item.id)
                verdicts.append(verdict)
    except OSError as exc:
        err.write(f"{path}: cannot read: {exc.strerror or exc}\n")
        return None
    except UnicodeDecodeError as exc:
        err.write(f"{path}:{lineno + 1}: not UTF-8 text: {exc.reason}\n")
        return None
    return ids, verdicts, bad


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in and args_in[0] == "score":
        args_in = args_in[1:]
    try:
        args = _parser().parse_args(args_in)
    except _UsageError as exc:
        err.write(f"{exc}\n")
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    result = score_file(Path(args.file), args.preset, err)
    if result is None:
        return 2
    ids, verdicts, bad = result
    metrics = aggregate(verdicts)
    if args.json:
        doc = {
            "metrics": {k: m.to_json() for k, m in metrics.items()},
            "items": [
                {"id": i, "reward": v.total, "flags": v.flags, "components": v.components}
                for i, v in zip(ids, verdicts)
            ],
        }
        out.write(json.dumps(doc, ensure_ascii=False) + "\n")
    else:
        _table(metrics, len(verdicts), args.preset, out)
    if bad:
        err.write(f"{args.file}: {bad} malformed line(s) skipped\n")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
