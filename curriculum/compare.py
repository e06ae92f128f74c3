"""`curriculum compare RUN_DIR RUN_DIR ... --out DIR`: several runs side by side.

Writes ``DIR/compare.md`` (per run: phases with steps, transitions with their reasons, the final
evaluation's rates with 95% intervals; then each run's difference from the first with Newcombe
intervals, paired item by item over the items both final evaluations judged when both runs wrote
per-item rows in ``evals/``, else for independent samples) and ``DIR/compare.png`` (reward mean
per step overlaid, each run's phases as a band, final evaluation rates side by side with their
intervals), and prints the table.

Runs of different specs, seeds or runners compare: nothing is assumed beyond what each run
directory logged.  A directory that is not a run, or whose integrity check fails, is a one-line
error naming it (``curriculum status`` says what is wrong).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from curriculum.errors import RunDirError
from curriculum.report.load import (
    END_PHASE,
    EVAL_RATES,
    Interval,
    PhaseVisit,
    RunData,
    _diff_interval,
    _paired_outcomes,
    eval_samples,
    load_run,
    paired_diff_interval,
)
from curriculum.report.picture import _phase_colour

MD_NAME = "compare.md"
PNG_NAME = "compare.png"


def load_runs(dirs: Sequence[str | Path]) -> list[RunData]:
    from curriculum import rundir

    if len(dirs) < 2:
        raise RunDirError("compare needs at least two run directories")
    runs = []
    seen: set[Path] = set()
    for d in dirs:
        p = Path(d)
        if p.resolve() in seen:
            raise RunDirError(f"{p}: given twice")
        seen.add(p.resolve())
        run = load_run(p)  # a clear error for a missing or non-run directory
        verdict = rundir.inspect(p)
        if verdict.damage:
            raise RunDirError(f"{p}: damaged run directory ({verdict.damage[0]}); `curriculum status {p}` says more")
        if not run.steps:
            raise RunDirError(f"{p}: the run logged no training step, nothing to compare")
        runs.append(run)
    return runs


def _final_eval(run: RunData):
    evaluated = [v for v in run.visits if v.eval]
    return evaluated[-1] if evaluated else None


def _label(run: RunData, i: int) -> str:
    return f"{i + 1}: {run.run_dir.name}"


def _rates(runs: list[RunData]) -> list[tuple[str, str]]:
    out = []
    for key, label, _ in EVAL_RATES:
        if any((v := _final_eval(r)) is not None and v.eval_interval(key) is not None for r in runs):
            out.append((key, label))
    return out


def table(runs: list[RunData]) -> str:
    """The markdown comparison (also what the command prints)."""
    rates = _rates(runs)
    L = ["# Run comparison", "", "| run | spec / profile / seed | phases (steps) | steps | transitions | "
         + " | ".join(f"final {lab}" for _, lab in rates) + " |",
         "|---|---|---|---:|---|" + "---|" * len(rates)]
    for i, r in enumerate(runs):
        info = r.info or {}
        spec = f"{Path(str(info.get('spec') or '?')).name} / {info.get('profile') or '-'} / {info.get('seed', '?')}"
        phases = ", ".join(f"{v.name} ({v.n_steps})" for v in r.visits)
        trans = "; ".join(
            f"{t.from_phase}->{t.to_phase}@{t.step} ({t.reason})" for t in r.transitions if t.to_phase != END_PHASE
        ) or "none"
        fe = _final_eval(r)
        cells = [(fe.eval_interval(k) or Interval(math.nan)).fmt() if fe else "–" for k, _ in rates]
        L.append(f"| {_label(r, i)} | {spec} | {phases} | {len(r.steps)} | {trans} | " + " | ".join(cells) + " |")
    L.append("")
    if rates and len(runs) > 1:
        L.append(f"Differences from run 1 ({runs[0].run_dir.name}), final evaluation, 95% Newcombe intervals "
                 "(an interval that excludes 0 is a difference beyond sampling noise):")
        L.append("")
        L.append("| run | items compared | " + " | ".join(lab for _, lab in rates) + " |")
        L.append("|---|---|" + "---|" * len(rates))
        base = _final_eval(runs[0])
        base_rows = eval_samples(runs[0], base) if base else None
        notes = []
        for i, r in enumerate(runs[1:], start=1):
            fe = _final_eval(r)
            rows = eval_samples(r, fe) if fe else None
            cells, how, n_common = _differences(base, base_rows, fe, rows, rates)
            L.append(f"| {_label(r, i)} | {how} | " + " | ".join(cells) + " |")
            if base_rows is not None and rows is not None and not len(base_rows) == len(rows) == n_common:
                notes.append(f"run {i + 1}'s final evaluation judged {len(rows)} items and run 1's {len(base_rows)}: "
                             "its differences are measured on the items both judged, so they need not equal the "
                             "difference of the final rates above")
        L.append("")
        L.append("*paired*: both final evaluations wrote their per-item rows (`evals/`), so the difference is "
                 "taken item by item over the items both judged (Newcombe's interval for paired proportions); "
                 "*independent*: the two final rates as independent samples (the runs' items may differ).")
        for n in notes:
            L.append("")
            L.append(f"Note: {n}.")
        L.append("")
    L.append(f"![comparison]({PNG_NAME})")
    L.append("")
    return "\n".join(L)


def _differences(base: PhaseVisit | None, base_rows: list[dict] | None, fe: PhaseVisit | None,
                 rows: list[dict] | None, rates: list[tuple[str, str]]) -> tuple[list[str], str, int]:
    """One difference row (run - run 1), how it was measured (paired over the items both final
    evaluations judged when both wrote per-item rows and share items, else independent) and the
    number of items both judged."""
    cells: list[str] = []
    n_common = 0
    if base_rows is not None and rows is not None:
        n_common = len({x["id"] for x in base_rows} & {x["id"] for x in rows})
    paired_any = False
    for k, _ in rates:
        pairs = (_paired_outcomes(base_rows, rows, k, common=True)
                 if base_rows is not None and rows is not None else None)
        if pairs is not None:
            # (start, end) = (run 1, this run): the difference is this run minus run 1
            cells.append(paired_diff_interval(pairs).fmt(sign=True))
            paired_any = True
            continue
        a = base.eval_interval(k) if base else None
        b = fe.eval_interval(k) if fe else None
        cells.append(_diff_interval(a, b).fmt(sign=True) if a and b else "–")
    how = f"paired, {n_common}" if paired_any else "independent"
    return cells, how, n_common


def picture(runs: list[RunData], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n = len(runs)
    fig = plt.figure(figsize=(16, 10), dpi=100)
    gs = fig.add_gridspec(3, 1, height_ratios=[3.0, 0.25 * n + 0.4, 2.2], hspace=0.35)
    ax = fig.add_subplot(gs[0])
    colours = plt.get_cmap("tab10")
    for i, r in enumerate(runs):
        pts = [(s.step, s.metrics.get("reward_mean", math.nan)) for s in r.steps]
        x = np.array([p[0] for p in pts], dtype=float)
        y = np.array([p[1] for p in pts], dtype=float)
        if np.isfinite(y).any():
            ax.plot(x, y, color=colours(i % 10), linewidth=1.4, label=_label(r, i), alpha=0.9)
        for t in r.transitions:
            if t.step is not None and t.to_phase != END_PHASE:
                ax.axvline(t.step + 0.5, color=colours(i % 10), linestyle="--", linewidth=0.9, alpha=0.6)
    ax.set_title("Training reward mean per step (dashed: each run's transitions)", loc="left", fontsize=13)
    ax.set_xlabel("global training step")
    ax.set_ylabel("reward mean")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=10)
    xmin, xmax = ax.get_xlim()

    band = fig.add_subplot(gs[1], sharex=ax)
    phase_colours: dict[str, str] = {}
    for i, r in enumerate(runs):
        row = n - 1 - i
        for v in r.visits:
            if v.first_step is None:
                continue
            c = _phase_colour(v.name, phase_colours)
            band.broken_barh([(v.first_step - 0.5, v.n_steps)], (row + 0.1, 0.8), facecolors=c, alpha=0.55)
            if v.n_steps > (xmax - xmin) * 0.04:
                band.text(v.first_step + v.n_steps / 2, row + 0.5, v.name, ha="center", va="center", fontsize=9)
    band.set_yticks([n - 1 - i + 0.5 for i in range(n)])
    band.set_yticklabels([_label(r, i) for i, r in enumerate(runs)], fontsize=9)
    band.set_ylim(0, n)
    band.set_title("Phases per run", loc="left", fontsize=11)

    ev = fig.add_subplot(gs[2])
    rates = _rates(runs)
    if rates:
        width = 0.8 / n
        for i, r in enumerate(runs):
            fe = _final_eval(r)
            xs, ys, lo, hi = [], [], [], []
            for j, (k, _) in enumerate(rates):
                iv = fe.eval_interval(k) if fe else None
                if iv is None or not math.isfinite(iv.value):
                    continue
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(iv.value)
                lo.append(iv.value - iv.lo if iv.has_ci else 0.0)
                hi.append(iv.hi - iv.value if iv.has_ci else 0.0)
            if xs:
                ev.errorbar(xs, ys, yerr=[lo, hi], fmt="o", color=colours(i % 10), capsize=4, label=_label(r, i))
        ev.set_xticks(range(len(rates)))
        ev.set_xticklabels([lab for _, lab in rates])
        ev.set_ylim(-0.02, 1.02)
        ev.legend(loc="upper right", fontsize=9)
    else:
        ev.text(0.5, 0.5, "no run recorded an evaluation", ha="center", va="center", transform=ev.transAxes)
    ev.set_title("Final evaluation of each run (points: rate; bars: 95% interval)", loc="left", fontsize=13)
    ev.grid(alpha=0.3, axis="y")
    fig.suptitle(f"Curriculum runs compared ({n})", fontsize=15, fontweight="bold")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def compare(dirs: Sequence[str | Path], out: str | Path) -> tuple[Path, Path, str]:
    """Load, check and compare run directories; returns (markdown path, picture path, table)."""
    runs = load_runs(dirs)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: --out must be a directory")
    if any(out.resolve() == r.run_dir.resolve() for r in runs):
        raise RunDirError(f"{out}: --out must not be one of the run directories (they are never written)")
    out.mkdir(parents=True, exist_ok=True)
    text = table(runs)
    md = out / MD_NAME
    md.write_text(text, encoding="utf-8")
    png = picture(runs, out / PNG_NAME)
    return md, png, text


__all__ = ["compare", "load_runs", "table", "picture"]
