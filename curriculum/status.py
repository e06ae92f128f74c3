"""`curriculum status RUN_DIR`: what a run is doing, and whether anything on disk is damaged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from curriculum.events import read_jsonl
from curriculum.state import load_state


def run_status(run_dir: Path) -> tuple[str, bool, dict[str, Any]]:
    """(text, ok, data): ok is False when the run directory is damaged."""
    damage: list[str] = []
    notes: list[str] = []
    data: dict[str, Any] = {"run_dir": str(run_dir)}
    if not run_dir.is_dir():
        return f"{run_dir}: no such run directory", False, {**data, "damage": ["missing"]}

    for name in ("run.json", "spec.resolved.json"):
        try:
            json.loads((run_dir / name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            damage.append(f"{name} is missing: this is not a complete run directory")
        except (OSError, ValueError) as e:
            damage.append(f"{name} is unreadable ({e}); the spec cannot be recovered from it")

    state = None
    try:
        state = load_state(run_dir / "state.json")
    except FileNotFoundError:
        damage.append("state.json is missing: the run's position is unknown")
    except ValueError as e:
        damage.append(f"state.json is damaged ({e}); `curriculum resume` falls back to the newest intact checkpoint")

    ckroot = run_dir / "checkpoints"
    intact: list[str] = []
    if ckroot.exists():
        for p in sorted(ckroot.iterdir()):
            if p.name.startswith(".tmp-"):
                notes.append(f"checkpoints/{p.name}: an unfinished checkpoint write (a kill mid-save); ignored and removed on resume")
                continue
            if not p.is_dir():
                continue
            try:
                load_state(p / "engine.json")
                if not (p / "runner").exists():
                    raise ValueError("runner files missing")
                intact.append(f"checkpoints/{p.name}")
            except (OSError, ValueError) as e:
                damage.append(f"checkpoints/{p.name} is damaged ({e}); it will not be used")
    if state is not None and state.last_checkpoint and state.last_checkpoint not in intact:
        damage.append(f"state.json points at {state.last_checkpoint}, which is missing or damaged")

    for name in ("events.jsonl", "metrics.jsonl"):
        path = run_dir / name
        if not path.exists():
            damage.append(f"{name} is missing")
            continue
        _, probs = read_jsonl(path)
        for prob in probs:
            short = prob.replace(str(run_dir) + "/", "")
            if "torn last line" in prob:
                notes.append(short + "; resume cuts it off")
            else:
                damage.append(short)

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
    lines.append(f"intact checkpoints: {len(intact)}")
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
    return "\n".join(lines), not damage, data
