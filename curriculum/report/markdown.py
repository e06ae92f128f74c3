"""The report's text: the per-phase summary table (printed by `curriculum run`) and report.md."""

from __future__ import annotations

import math
from pathlib import Path
from datetime import datetime
from typing import Any, Mapping, Sequence
from curriculum.report.load import (
    END_PHASE,
    PNG_NAME,
    TABLE_RATES,
    PhaseVisit,
    RunData,
    _baseline_and_final,
    _diff_interval,
    _finite,
    change_detail,
    eval_samples,
    _int_or_none,
    _num,
)

# --------------------------------------------------------------------------------------------
# formatting helpers


def _fmt_num(x: Any, digits: int = 4) -> str:
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
        return f"{x:.{digits}g}"
    if x is None:
        return "null"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_fmt_num(v, digits) for v in x) + "]"
    return str(x)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.extend(_flatten(v, key + "."))
        else:
            out.append((key, v))
    return out


def format_evidence(evidence: Mapping[str, Any]) -> list[str]:
    """``term = value`` strings for a transition's evidence (nested dicts use dotted names)."""
    return [f"{k} = {_fmt_num(v)}" for k, v in _flatten(evidence)]


def _is_table(v: Any) -> bool:
    """A dict of dicts (e.g. the collapse guard's per-signal evidence) reads best as a table."""
    return isinstance(v, Mapping) and bool(v) and all(isinstance(x, Mapping) for x in v.values())


def _md_table(d: Mapping[str, Mapping[str, Any]]) -> list[str]:
    cols: list[str] = []
    for row in d.values():
        for k, x in _flatten(row):
            if k not in cols:
                cols.append(k)
    out = ["| name | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, row in d.items():
        flat = dict(_flatten(row))
        out.append(
            f"| {_md_escape(str(name))} | "
            + " | ".join(_md_escape(_fmt_num(flat[c])) if c in flat else "–" for c in cols)
            + " |"
        )
    return out


def _short_evidence(evidence: Mapping[str, Any], limit: int = 6) -> str:
    """The scalar evidence terms (nested ones by count) for one table cell."""
    items = [(k, v) for k, v in _flatten({k: v for k, v in evidence.items() if not _is_table(v)})]
    shown = [f"{k} = {_fmt_num(v)}" for k, v in items[:limit]]
    hidden = len(items) - len(shown)
    tables = [k for k, v in evidence.items() if _is_table(v)]
    if hidden > 0:
        shown.append(f"… {hidden} more")
    if tables:
        shown.append(", ".join(f"{k}: {len(evidence[k])} entries" for k in tables) + " (below)")
    return "; ".join(shown) or "–"


def _fmt_float(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if _finite(x) else "–"


def _step_range(v: PhaseVisit) -> str:
    if v.steps:
        return f"{v.first_step}–{v.last_step}"
    return "–"


def _penalty_diff(before: Mapping[str, float] | None, after: Mapping[str, float] | None) -> list[str]:
    before = before or {}
    after = after or {}
    out = []
    for k in list(before) + [k for k in after if k not in before]:
        b, a = before.get(k), after.get(k)
        if b is None and a is None:
            continue
        if b is None or a is None or not (
            (_finite(a) and _finite(b) and abs(a - b) < 1e-12) or (a == b)
        ):
            out.append(f"{k} {_fmt_num(b)} → {_fmt_num(a)}")
    return out


def _parse_ts(ts: Any) -> datetime | None:
    if not isinstance(ts, str):
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None


def _duration(run: RunData) -> str | None:
    stamps = [t for t in (_parse_ts(e.get("timestamp")) for e in run.events) if t is not None]
    if len(stamps) < 2:
        return None
    try:
        secs = (max(stamps) - min(stamps)).total_seconds()
    except TypeError:  # naive vs aware
        return None
    h, rem = divmod(int(secs), 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def _end_state(run: RunData) -> str:
    if run.finished:
        return f"finished ({run.finished.get('reason', '?')}) at step {run.finished.get('step', run.last_step)}"
    return f"did not finish (last step {run.last_step}: crashed, killed or still running)"


# --------------------------------------------------------------------------------------------
# plain-text summary table


#: eval rates whose change from the end of SFT to the end of the run the report shows
CHANGE_RATES: tuple[str, ...] = ("safe_rate", "grounded_rate", "correct_rate", "abstention_accuracy", "hallucination_rate",
                                 "refusal_rate", "consistency_rate", "format_error_rate")


def _changes(run: RunData, base: PhaseVisit, final: PhaseVisit, keys: Sequence[str]):
    """(key, start, end, change, paired?, change as if independent, items in common) for each
    rate both evaluations have: the change's interval is the paired one when both evaluations
    wrote per-item rows (RUN_DIR/evals/), over the items both judged (start and end then over
    those items too; ``common`` > 0 when that is fewer than either judged), else Newcombe's for
    independent rates."""
    rows = (eval_samples(run, base), eval_samples(run, final))  # read once for every key
    for key in keys:
        got = change_detail(run, base, final, key, rows)
        if got is not None:
            yield key, got.start, got.end, got.change, got.paired, _diff_interval(got.start, got.end), got.common


def _change_summary(run: RunData) -> list[str]:
    """Plain-text lines: the safe and verbatim-proof rates from the end of SFT to the end."""
    base, final = _baseline_and_final(run)
    if base is None or final is None or base is final:
        return []
    out = [f"change from the end of {base.name} to the end of the run (eval, 95% CI; Newcombe for the change):"]
    # safe and verbatim proofs are what GRPO should raise; the right-outcome rate shows whether a
    # rise in "safe" came from declining to answer (a cautious non-answer counts as safe)
    for key, a, b, d, paired, d_ind, common in _changes(run, base, final, ("safe_rate", "grounded_rate", "correct_rate")):
        beyond = "excludes 0" if d.has_ci and (d.lo > 0 or d.hi < 0) else "includes 0"
        over = f"the {common} items both judged" if common else "the same items"
        how = f"paired over {over}; as if independent {d_ind.fmt(sign=True)}" if paired else "independent"
        out.append(f"  {key}: {a.fmt()} -> {b.fmt()}, change {d.fmt(sign=True)} ({beyond}; {how})")
    return out if len(out) > 1 else []


def _table_rates(run: RunData) -> tuple[tuple[str, str], ...]:
    """The rates of the tables: DIPG's when the evaluations report them, else the outcome rates
    the run's reward reports (every evaluated metric with an interval, reward statistics aside)."""
    evals = [v.eval for v in run.visits if v.eval]
    if not evals or any(k in e for e in evals for k, _ in TABLE_RATES):
        return TABLE_RATES
    keys: list[str] = []
    for e in evals:
        keys += [k for k in e if f"{k}_lo" in e and not k.startswith("reward_") and k not in keys]
    return tuple((k, k[: -len("_rate")] if k.endswith("_rate") else k) for k in keys[:6])


def _table_rows(run: RunData) -> tuple[list[str], list[list[str]]]:
    rates = _table_rates(run)
    header = ["#", "phase", "steps", "range", "preset", "reward mean", "reward max"]
    header += [label for _, label in rates] + ["eval n"]
    rows = []
    for v in run.visits:
        row = [
            str(v.ordinal + 1),
            v.name,
            str(v.n_steps),
            _step_range(v),
            " → ".join(v.presets) or "–",
            _fmt_float(v.reward_mean()),
            _fmt_float(v.reward_max()),
        ]
        for key, _ in rates:
            iv = v.eval_interval(key)
            row.append(iv.fmt() if iv else "–")
        n = _num((v.eval or {}).get("n_items"))
        row.append(str(int(n)) if _finite(n) else "–")
        rows.append(row)
    return header, rows


def summary_table(run: RunData) -> str:
    """Plain-text per-phase table (one row per phase entry, in run order)."""
    header, rows = _table_rows(run)
    if not rows:
        return f"run {run.title}: no phases recorded"
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    right = {0, 2, 5, 6}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    out.append(
        "reward mean/max: mean and best of the per-step mean reward; "
        "rates: end-of-phase eval [95% CI]"
    )
    out += _change_summary(run)
    out.append(_end_state(run))
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# markdown


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def write_markdown(run: RunData, path: str | Path, png_name: str | None = PNG_NAME) -> Path:
    path = Path(path)
    L: list[str] = []
    L.append(f"# Run report: {run.title}")
    L.append("")
    if png_name:
        L.append(f"![run overview]({png_name})")
        L.append("")
        L.append(f"Picture: [{png_name}]({png_name})")
        L.append("")
    L.append("## Run")
    L.append("")
    info = run.info
    L.append(f"- run directory: `{run.run_dir}`")
    for key in ("spec", "profile", "seed", "runner"):
        if info.get(key) is not None:
            L.append(f"- {key}: `{info[key]}`")
    if isinstance(info.get("phases"), list):
        L.append(f"- declared phases: {' → '.join(str(p) for p in info['phases'])}")
    visited = [v.name for v in run.visits]
    if visited:
        L.append(f"- phases entered: {' → '.join(visited)}")
    L.append(f"- steps: {len(run.steps)} (last global step {run.last_step})")
    L.append(f"- outcome: {_end_state(run)}")
    if run.resumes:
        L.append(f"- resumed: {run.resumes} time(s)")
    dur = _duration(run)
    if dur:
        L.append(f"- wall time (first to last event): {dur}")
    if run.checkpoints:
        L.append(f"- checkpoints saved: {len(run.checkpoints)}")
    if run.nonfinite_events:
        L.append(f"- non-finite metric / guard events: {len(run.nonfinite_events)}")
    if run.finished and run.finished.get("nonfinite_steps"):
        L.append(f"- steps with non-finite metrics: {run.finished['nonfinite_steps']}")
    L.append("")

    # per-phase table
    L.append("## Phases")
    L.append("")
    header, rows = _table_rows(run)
    if rows:
        L.append("| " + " | ".join(header) + " |")
        L.append("|" + "|".join("---:" if i in (0, 2, 5, 6, 11) else "---" for i in range(len(header))) + "|")
        for r in rows:
            L.append("| " + " | ".join(_md_escape(c) for c in r) + " |")
        L.append("")
        L.append(
            "*reward mean / max*: mean and best of the per-step mean reward over the phase "
            "(– for SFT). Rates come from the evaluation at the end of the phase, with 95% "
            "intervals in brackets."
        )
        extra = [v for v in run.visits if v.eval]
        more_keys = tuple(
            k
            for k in ("format_error_rate", "correct_rate", "abstention_accuracy", "reward_mean")
            if any(v.eval_interval(k) is not None for v in extra)
        )
        if extra and more_keys:
            L.append("")
            L.append("| # | phase | " + " | ".join(more_keys) + " |")
            L.append("|---:|---|" + "|".join("---" for _ in more_keys) + "|")
            for v in extra:
                cells = []
                for k in more_keys:
                    iv = v.eval_interval(k)
                    cells.append(iv.fmt() if iv else "–")
                L.append(f"| {v.ordinal + 1} | {v.name} | " + " | ".join(cells) + " |")
    else:
        L.append("No phase was recorded.")
    L.append("")

    # change in eval rates
    L.append("## Change in evaluation rates")
    L.append("")
    base, final = _baseline_and_final(run)
    if base is None or final is None:
        L.append("No evaluation results were recorded (no `phase_finished` event carried `eval`).")
    elif base is final:
        L.append(
            f"Only one evaluation (end of {base.name}, phase #{base.ordinal + 1}); nothing to compare."
        )
    else:
        what = "end of the first SFT phase" if base.is_sft else "first evaluation"
        L.append(
            f"From the {what} (**{base.name}**, #{base.ordinal + 1}, step {base.last_step or base.finished_step}) "
            f"to the end of the run (**{final.name}**, #{final.ordinal + 1}, step {final.last_step or final.finished_step}):"
        )
        L.append("")
        rates = _table_rates(run)
        keys = CHANGE_RATES if rates is TABLE_RATES else tuple(k for k, _ in rates)
        rows = list(_changes(run, base, final, keys))
        any_paired = any(r[4] for r in rows)
        if any_paired:
            L.append("| metric | start | end | change [95% CI, paired] | [95% CI, as if independent] |")
            L.append("|---|---|---|---|---|")
        else:
            L.append("| metric | start | end | change [95% CI] |")
            L.append("|---|---|---|---|")
        commons = sorted({r[6] for r in rows if r[4] and r[6]})
        for key, a, b, d, paired, d_ind, _common in rows:
            if any_paired:
                L.append(f"| {key} | {a.fmt()} | {b.fmt()} | {d.fmt(sign=True) if paired else '–'} | {d_ind.fmt(sign=True)} |")
            else:
                L.append(f"| {key} | {a.fmt()} | {b.fmt()} | {d.fmt(sign=True)} |")
        L.append("")
        if commons:
            L.append(
                f"The two evaluations judged different item sets; start, end and change are over the "
                f"{' / '.join(map(str, commons))} items both judged."
            )
        if any_paired:
            L.append(
                "The change's interval pairs the items both evaluations judged (their responses are in "
                "`evals/`): Newcombe's interval for paired proportions (1998, method 10), where items whose outcome did "
                "not change do not widen it. The last column treats the two evaluations as independent "
                "samples (Newcombe's method for two rates), which is wider. An interval that excludes 0 "
                "is a change beyond sampling noise."
            )
        else:
            L.append(
                "The interval of a change combines the two 95% intervals (Newcombe's method); "
                "an interval that excludes 0 is a change beyond sampling noise."
            )
    L.append("")

    # transitions
    L.append("## Transitions")
    L.append("")
    if not run.transitions:
        L.append("No phase transition was recorded.")
        L.append("")
    else:
        L.append("| # | step | from → to | reason | evidence |")
        L.append("|---:|---:|---|---|---|")
        for i, t in enumerate(run.transitions, start=1):
            ev = _short_evidence(t.evidence)
            L.append(
                f"| {i} | {t.step} | {t.from_phase} → {t.to_phase} | {_md_escape(t.reason)} "
                f"| {_md_escape(ev)} |"
            )
        L.append("")
    for i, t in enumerate(run.transitions, start=1):
        kind = f" ({t.guard_kind})" if t.guard_kind else ""
        L.append(f"### {i}. step {t.step}: {t.from_phase} → {t.to_phase}")
        L.append("")
        L.append(f"- reason: **{t.reason}**{kind}")
        if t.phase_step is not None:
            L.append(f"- after {t.phase_step} step(s) of {t.from_phase}")
        if t.story:
            L.append(f"- {_md_escape(t.story)}")
        if t.rewind:
            rw = t.rewind
            L.append(
                f"- rewind: the policy was restored from `{rw.get('checkpoint')}` (step "
                f"{rw.get('checkpoint_step')}); steps {_int_or_none(rw.get('checkpoint_step') or 0) + 1}"
                f"-{rw.get('detected_step')} stay in the logs but not in the policy"
            )
        if t.evidence:
            L.append("- evidence:")
            flat = {k: v for k, v in t.evidence.items() if not _is_table(v)}
            for s in format_evidence(flat):
                L.append(f"  - `{s}`")
            for k, v in t.evidence.items():
                if _is_table(v):
                    L.append(f"  - `{k}`:")
                    L.append("")
                    L.extend("    " + row for row in _md_table(v))
                    L.append("")
        elif t.reason == "max_steps":
            L.append("- evidence: the phase reached its step budget")
        if t.metrics:
            L.append(
                "- recent metrics: "
                + ", ".join(f"`{k} = {_fmt_num(v)}`" for k, v in _flatten(t.metrics))
            )
        if t.preset_before != t.preset_after and t.to_phase != END_PHASE:
            L.append(f"- preset: {t.preset_before or '–'} → {t.preset_after or '–'}")
        if t.to_phase == END_PHASE:
            pass  # the run ends: no penalties after it
        elif not t.penalties_before and t.penalties_after:
            in_force = [f"{k} {_fmt_num(v)}" for k, v in t.penalties_after.items() if _finite(v) and v < 0]
            if in_force:
                L.append("- penalties now in force: " + "; ".join(in_force))
        else:
            diff = _penalty_diff(t.penalties_before, t.penalties_after)
            if diff:
                L.append("- penalties: " + "; ".join(diff))
        L.append("")

    # penalty changes within phases
    if run.penalty_changes:
        L.append("## Penalty changes")
        L.append("")
        for c in run.penalty_changes:
            diff = _penalty_diff(c["before"], c["after"])
            L.append(
                f"- step {c['step']} ({c['phase']}, {c['reason'] or 'no reason given'}): "
                + ("; ".join(diff) if diff else "no value changed")
            )
        L.append("")

    if run.nonfinite_events:
        L.append("## Non-finite metrics")
        L.append("")
        for e in run.nonfinite_events[:50]:
            fields = {k: v for k, v in e.items() if k not in ("event", "timestamp", "level", "run")}
            L.append(
                f"- {e.get('event')}: "
                + ", ".join(f"{k} = {_fmt_num(v)}" for k, v in _flatten(fields))
            )
        if len(run.nonfinite_events) > 50:
            L.append(f"- ... {len(run.nonfinite_events) - 50} more")
        L.append("")

    if run.warnings:
        L.append("## Notes on the input files")
        L.append("")
        for w in run.warnings:
            L.append(f"- {w}")
        L.append("")

    path.write_text("\n".join(L).rstrip() + "\n", encoding="utf-8")
    return path


