"""`curriculum status RUN_DIR`: what a run is doing, and whether anything on disk is damaged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curriculum import rundir


def run_status(run_dir: Path) -> tuple[str, bool, dict[str, Any]]:
    """(text, ok, data): ok is False when the run directory is damaged.

    The checks are `curriculum.rundir.inspect`, the same that `curriculum resume` acts on, and
    the text says what resume will do; no lock is taken.
    """
    data: dict[str, Any] = {"run_dir": str(run_dir)}
    if not run_dir.is_dir():
        return f"{run_dir}: no such run directory", False, {**data, "damage": ["missing"]}
    v = rundir.inspect(run_dir)
    damage, notes = list(v.damage), list(v.notes)
    state = v.top if v.top is not None else (v.chosen.state if v.chosen else None)
    intact = [c.rel for c in v.checkpoints if c.problem is None]
    holder = rundir.lock_holder(run_dir)
    if holder is not None:
        if holder["state"] == "dead":
            notes.append(f"a stale writer lock ({rundir.describe_holder(holder)}, no longer running); the next resume takes it over")
        data["writer"] = holder

    lines = [f"run: {run_dir}"]
    if state is not None:
        pen = state.penalties()
        data.update(
            status=state.status,
            phase=state.phase,
            global_step=state.global_step,
            phase_step=state.phase_step,
            preset=state.preset,
            penalty_scale=state.penalty_scale,
            penalties=pen,
            transitions=state.transitions,
            last_checkpoint=state.last_checkpoint,
        )
        lines.append(f"status: {state.status}" + (f" ({state.finish_reason})" if state.finish_reason else ""))
        lines.append(f"phase: {state.phase}  step {state.global_step} (phase step {state.phase_step})")
        if state.preset or pen:
            scale = f" x{state.penalty_scale:.3g}" if state.penalty_scale != 1.0 else ""
            shown = ", ".join(f"{k}={v:g}" for k, v in pen.items() if v < 0)
            lines.append(f"penalties: {state.preset or '-'}{scale}  {shown}")
        lines.append(f"last checkpoint: {state.last_checkpoint or 'none yet'}")
        if state.transitions:
            lines.append("last transitions:")
            for t in state.transitions[-5:]:
                lines.append(f"  step {t['step']:>6}  {t['from_phase']} -> {t['to_phase']}  ({t['reason']})")
        if state.nonfinite_steps:
            lines.append(f"steps with non-finite metrics: {state.nonfinite_steps}")
    if holder is not None and holder["state"] != "dead":
        lines.append(f"writer: {rundir.describe_holder(holder)}" + (" (running)" if holder["state"] == "alive" else ""))
    lines.append(f"intact checkpoints: {len(intact)}")
    lines.append(v.resume_line(run_dir))
    for n in notes:
        lines.append(f"note: {n}")
    if damage:
        lines.append("DAMAGED:")
        for d in damage:
            lines.append(f"  {d}")
    else:
        lines.append("integrity: ok")
    data["damage"] = damage
    data["notes"] = notes
    data["intact_checkpoints"] = intact
    data["resume"] = {
        "refuses": v.refusal,
        "finished": v.finished,
        "checkpoint": v.chosen.rel if v.chosen else None,
        "set_aside": v.set_aside,
        "cuts": v.cuts,
    }
    return "\n".join(lines), not damage, data
