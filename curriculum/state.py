"""Run state as plain data, and crash-safe files.

`RunState` is everything the engine needs to continue a run exactly: the phase, step counters,
guard and controller state, metric windows, penalties in force, the transition history and the
seed.  It is written atomically (temp file, fsync, rename, fsync of the folder) at every
checkpoint and transition, so a kill at any instant leaves either the old or the new file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_VERSION = 1


def _clean(x: Any) -> Any:
    """JSON-safe copy: NaN/inf become None (json with allow_nan=False must accept it)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and callable(x.item):  # numpy scalars
        return _clean(x.item())
    return x


def dumps(obj: Any) -> str:
    return json.dumps(_clean(obj), allow_nan=False, sort_keys=False)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old or the new content, never a mix."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, dumps(obj) + "\n")


@dataclass
class TransitionRecord:
    from_phase: str
    to_phase: str
    step: int
    phase_step: int
    reason: str


@dataclass
class RunState:
    spec_digest: str
    seed: int
    phase: str
    phase_ordinal: int = 0  # phases entered before the current one
    global_step: int = 0
    phase_step: int = 0
    preset: str | None = None
    base_penalties: dict[str, float] = field(default_factory=dict)  # preset + inline overrides
    penalty_scale: float = 1.0  # from a PID controller; 1.0 otherwise
    guards: dict[str, dict] = field(default_factory=dict)  # guard name -> guard state
    controller: dict | None = None
    history: dict | None = None  # MetricHistory.to_dict()
    transitions: list[dict] = field(default_factory=list)
    visits: list[dict] = field(default_factory=list)  # {"phase", "start_step", "ordinal", "checkpoint"}
    status: str = "running"  # running | finished | failed
    finish_reason: str | None = None
    last_checkpoint: str | None = None
    pending_phase_start: bool = True  # the current phase has not been set up yet
    log_offsets: dict[str, int] = field(default_factory=dict)  # bytes of events/metrics at checkpoint
    log_digests: dict[str, str] = field(default_factory=dict)  # sha256 of those first bytes
    nonfinite_steps: int = 0
    # a rewind decided by a transition, carried out when the next phase is set up
    pending_rewind: dict | None = None
    rewinds: list[dict] = field(default_factory=list)  # rewinds done: checkpoint, steps, onset
    version: int = STATE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunState":
        known = {f for f in cls.__dataclass_fields__}
        data = {k: v for k, v in d.items() if k in known}
        if data.get("penalty_scale") is None:
            data["penalty_scale"] = 1.0
        return cls(**data)

    def penalties(self) -> dict[str, float]:
        """Values in force: penalties (negative values) scaled by the controller's lambda."""
        return effective_penalties(self.base_penalties, self.penalty_scale)


def effective_penalties(base: dict[str, float], scale: float) -> dict[str, float]:
    return {k: (v * scale if v < 0 else v) for k, v in base.items()}


def save_state(run_dir: Path, state: RunState) -> None:
    atomic_write_json(Path(run_dir) / "state.json", state.to_dict())


def load_state(path: Path) -> RunState:
    """Read state.json (or an engine.json from a checkpoint).  Raises ValueError when damaged."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: damaged run state ({e})") from None
    if not isinstance(d, dict) or "phase" not in d or "spec_digest" not in d:
        raise ValueError(f"{path}: damaged run state (missing phase/spec_digest)")
    try:
        return RunState.from_dict(d)
    except TypeError as e:
        raise ValueError(f"{path}: damaged run state ({e})") from None
