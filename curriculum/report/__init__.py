"""Run report: read a run directory, draw ``report.png``, write ``report.md``.

load.py reads the run directory, markdown.py writes the tables and report.md, picture.py
draws report.png; this module joins them.

Public API::

    run = load_run(run_dir)            # -> RunData (raises RunDirError naming a missing file)
    write_png(run, path)               # 1600x1000 picture of the run
    write_markdown(run, path, png_name="report.png")
    summary_table(run) -> str          # plain-text per-phase table (printed by `curriculum run`)
    make_report(run_dir) -> (png_path, md_path)   # writes report.png and report.md into run_dir

Inputs (see docs/CONTRACTS.md, "Run directory"):

* ``metrics.jsonl`` -- one object per training step: ``step`` (global, 1-based), ``phase``,
  ``phase_step``, ``preset`` (penalty preset in force or null), ``penalty_scale`` (1.0 unless a
  controller scales penalties) and ``metrics`` (name -> float or null; NaN/inf are written as null).
* ``events.jsonl`` -- structlog JSON lines: run_started, phase_started, phase_transition,
  penalties_changed, phase_finished (with ``eval``), checkpoint_saved, guard_nonfinite,
  run_finished.

Both files may end in a torn line (a crash); it is skipped and noted in ``RunData.warnings``.
When a resumed run rewrote steps, the last line written for a step wins.

A phase that is entered more than once (e.g. medium -> recovery -> medium) gives one
``PhaseVisit`` per entry; tables and the picture follow run order.

This module imports neither jax nor the engine; matplotlib is imported only when drawing.
"""


from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from curriculum.report.load import (
    END_PHASE,
    EVAL_RATES,
    MD_NAME,
    PNG_NAME,
    TABLE_RATES,
    Interval,
    PhaseVisit,
    RunData,
    RunDirError,
    StepRecord,
    Transition,
    load_run,
)
from curriculum.report.markdown import format_evidence, summary_table, write_markdown
from curriculum.report.picture import write_png

__all__ = [
    "END_PHASE",
    "EVAL_RATES",
    "TABLE_RATES",
    "format_evidence",
    "PhaseVisit",
    "RunData",
    "StepRecord",
    "Transition",
    "Interval",
    "load_run",
    "make_report",
    "summary_table",
    "write_markdown",
    "write_png",
]

# --------------------------------------------------------------------------------------------
# entry points


def make_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.png`` and ``report.md`` into ``run_dir``; return their paths."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    png = write_png(run, run_dir / PNG_NAME)
    md = write_markdown(run, run_dir / MD_NAME, png_name=PNG_NAME)
    return png, md


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m curriculum.report RUN_DIR``: write the report and print the summary table."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m curriculum.report RUN_DIR", file=sys.stderr)
        return 2
    try:
        png, md = make_report(args[0])
    except RunDirError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(summary_table(load_run(args[0])))
    print(f"\nwrote {png}\nwrote {md}")
    return 0


