"""``curriculum score FILE.jsonl [--json] [--preset NAME] [--jobs N] [--judge-model DIR]``: score recorded responses.

Each input line is a JSON object with ``context``, ``question``, ``expected_answer`` (a string
or an upstream ``{"final": ...}`` object; the ``<answer>`` part is used when it has tags),
``response``, and optionally ``type`` (else inferred from the expected answer) and ``id``
(else ``FILE:LINE``); other keys are ignored.  Malformed lines are reported on stderr as
``FILE:LINE: reason`` and skipped; the exit status is 1 when any line was bad, 2 for a usage
error or an unreadable file, else 0.

The file is read and scored in chunks of ``CHUNK_LINES`` lines (streaming: a compact row per
scored line is kept for the metrics, not the line).  ``--jobs N`` scores the chunks in N worker
processes, at most 2N chunks in flight, collected in file order, so the output (the table, the
JSON, the messages about bad lines and the exit status) is the same as with one.  The default is
1, not one process per CPU: scoring is CPU-bound and the machines this runs on are often shared
with a training job, so taking every core is left to an explicit ``--jobs 0``.
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
    ap.add_argument("--jobs", type=_jobs, default=1, metavar="N",
                    help="score with N processes (default 1: in this process; 0: one per CPU); the output is the same")
    ap.add_argument("--judge-model", metavar="DIR", default=None,
                    help="also ask a Gemma 3 judge model in DIR (local, never downloaded) whether each supported answer is "
                         "supported (docs/rewards.md, Model judge); needs --jobs 1")
    ap.add_argument("--judge-threshold", type=_probability, default=0.5, metavar="P",
                    help="P(yes) below which the judge makes an answer unsupported (default 0.5)")
    ap.add_argument("--judge-batch", type=int, default=8, metavar="N", help="prompts per judge forward pass (default 8)")
    return ap


def _probability(value: str) -> float:
    try:
        p = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {value!r}") from None
    if not 0.0 <= p <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {value}")
    return p


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


#: Lines per unit of work: what a worker scores at a time under ``--jobs``, and the unit the
#: main process reads ahead (at most ``2 * jobs`` chunks are in flight, so memory stays bounded
#: by the chunk size, not the file size).
CHUNK_LINES = 256

#: One scored line, kept compactly until the metrics are computed: (id, total, flags,
#: components, task type, judged).  The full verdict (its detail) is not kept.
Row = tuple


def _row(item, v: Verdict) -> Row:
    return (item.id, v.total, v.flags, v.components, v.task_type, v.detail.get("judged", True))


def _score_line(line: str, where: str, default_id: str, preset, keep: bool = False) -> tuple[str, object]:
    """("ok", row) or ("bad", message) for one non-blank input line (``keep``: ("ok", (item,
    response, verdict)) instead of the row, for the model judge)."""
    if len(line) > MAX_LINE_CHARS:
        return "bad", f"{where}: line is {len(line):,} characters; the limit is {MAX_LINE_CHARS:,}"
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as exc:
        return "bad", f"{where}: invalid JSON: {exc.msg} (column {exc.colno})"
    except RecursionError:
        return "bad", f"{where}: invalid JSON: nested too deeply"
    try:
        _check_record(rec)
        item = item_from_record(rec, default_id)
        v = score(rec["response"], item, preset)
    except RecursionError:
        return "bad", f"{where}: a field is nested too deeply"
    except Exception as exc:  # one bad line never stops the rest
        msg = " ".join(str(exc).split()) or type(exc).__name__
        return "bad", f"{where}: {msg}"
    return "ok", ((item, rec["response"], v) if keep else _row(item, v))


def _score_chunk(args: tuple) -> list[tuple[str, object]]:
    """Score a chunk: (path, name, preset name, (line number, line) pairs, judge), ``judge`` the
    JudgeConfig of --judge-model or None.  Run by the worker processes under --jobs, or in this
    process with --jobs 1 (the only case with a judge)."""
    path_str, name, preset_name, lines, cfg = args
    preset = get_preset(preset_name)
    if cfg is None:
        return [_score_line(line, f"{path_str}:{n}", f"{name}:{n}", preset) for n, line in lines]
    from . import model_judge

    scored = [_score_line(line, f"{path_str}:{n}", f"{name}:{n}", preset, keep=True) for n, line in lines]
    ok = [x for kind, x in scored if kind == "ok"]
    verdicts, _ = model_judge.apply([v for _, _, v in ok], [r for _, r, _ in ok], [it for it, _, _ in ok], preset,
                                    model_judge.load(cfg), cfg.threshold, cfg.batch_size)
    judged = iter(verdicts)
    out: list[tuple[str, object]] = []
    for kind, x in scored:
        out.append(("ok", _row(x[0], next(judged))) if kind == "ok" else (kind, x))  # type: ignore[index,arg-type]
    return out


def _chunks(fh, path: Path, preset_name: str, state: dict, judge=None):
    """The file's non-blank lines in chunks (as _score_chunk arguments), read as they are needed;
    ``state["lineno"]`` is the last line number read (for a decoding error's message)."""
    chunk: list[tuple[int, str]] = []
    lineno = 0
    for lineno, line in enumerate(fh, 1):
        state["lineno"] = lineno
        if line and not line.isspace():  # (a blank line is skipped; no stripped copy made)
            chunk.append((lineno, line))
            if len(chunk) >= CHUNK_LINES:
                yield (str(path), path.name, preset_name, chunk, judge)
                chunk = []
    if chunk:
        yield (str(path), path.name, preset_name, chunk, judge)


def _results(chunks, jobs: int):
    """The scored chunks in file order: in this process (jobs == 1), or by ``jobs`` worker
    processes with at most ``2 * jobs`` chunks in flight."""
    if jobs == 1:
        for c in chunks:
            yield _score_chunk(c)
        return
    import multiprocessing as mp
    from collections import deque

    methods = mp.get_all_start_methods()
    ctx = mp.get_context("fork" if "fork" in methods else methods[0])
    with ctx.Pool(jobs) as pool:
        pending: deque = deque()
        for c in chunks:
            pending.append(pool.apply_async(_score_chunk, (c,)))
            if len(pending) >= 2 * jobs:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def score_file(path: Path, preset_name: str, err: TextIO, jobs: int = 1, judge=None) -> tuple[list[Row], int] | None:
    """Score a JSONL file chunk by chunk (streaming: only a compact row per scored line is
    kept), with ``jobs`` processes.  Bad lines are reported to ``err`` in file order.  Returns
    (rows, number of bad lines), or None when the file cannot be read."""
    get_preset(preset_name)  # an unknown preset fails here, before any work
    rows: list[Row] = []
    bad = 0
    state = {"lineno": 0}
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            for results in _results(_chunks(fh, path, preset_name, state, judge), jobs):
                for kind, x in results:
                    if kind == "ok":
                        rows.append(x)
                    else:
                        err.write(f"{x}\n")
                        bad += 1
    except OSError as exc:
        err.write(f"{path}: cannot read: {exc.strerror or exc}\n")
        return None
    except UnicodeDecodeError as exc:
        err.write(f"{path}:{state['lineno'] + 1}: not UTF-8 text: {exc.reason}\n")
        return None
    return rows, bad


def _jobs(value: str) -> int:
    """--jobs: a positive number of processes, or 0 for one per CPU (os.cpu_count())."""
    import os

    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of processes (1 = score in this process, 0 = one per CPU), got {value!r}"
        ) from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"the number of processes cannot be negative, got {n}; use 1 (the default) or more, or 0 for one per CPU")
    if n > MAX_JOBS:
        raise argparse.ArgumentTypeError(f"at most {MAX_JOBS} processes, got {n} (0 = one per CPU: {os.cpu_count() or 1} here)")
    return n or (os.cpu_count() or 1)


#: Most worker processes --jobs accepts (each holds its own caches and start-up cost).
MAX_JOBS = 256


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
    cfg = None
    if args.judge_model is not None:
        from .model_judge import JudgeConfig, load, problem_with_dir

        jdir = Path(args.judge_model).expanduser().resolve()
        why = problem_with_dir(jdir)
        if why is None and args.jobs != 1:
            why = f"--judge-model runs the judge in this process: use --jobs 1 (got --jobs {args.jobs})"
        if why is None and args.judge_batch < 1:
            why = f"--judge-batch must be at least 1, got {args.judge_batch}"
        if why is not None:
            err.write(f"curriculum score: --judge-model: {why}\n")
            return 2
        cfg = JudgeConfig(path=str(jdir), threshold=args.judge_threshold, batch_size=args.judge_batch)
        try:
            load(cfg)
        except ValueError as exc:
            err.write(f"curriculum score: --judge-model: {exc}\n")
            return 2
    result = score_file(Path(args.file), args.preset, err, args.jobs, cfg)
    if result is None:
        return 2
    rows, bad = result
    metrics = aggregate(
        Verdict(total=total, components=comps, flags=flags, task_type=t, detail={"judged": judged})
        for _, total, flags, comps, t, judged in rows
    )
    if args.json:
        # the same text as json.dumps({"metrics": ..., "items": [...]}), written item by item
        dumps = json.JSONEncoder(ensure_ascii=False).encode
        out.write('{"metrics": ' + dumps({k: m.to_json() for k, m in metrics.items()}) + ', "items": [')
        for n, (i, total, flags, comps, _, _) in enumerate(rows):
            out.write((", " if n else "") + dumps({"id": i, "reward": total, "flags": flags, "components": comps}))
        out.write("]}\n")
    else:
        _table(metrics, len(rows), args.preset, out)
    if bad:
        err.write(f"{args.file}: {bad} malformed line(s) skipped\n")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
