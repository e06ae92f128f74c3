"""Metrics to wandb: offline unless the user configures otherwise; never needs a network or key.

Any wandb failure (not installed, no network, a crash in its service) is logged once as a
`wandb_unavailable` event and tracking is switched off; training and the local logs go on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class Tracker:
    def __init__(self, mode: str, run_dir: Path, name: str, config: dict[str, Any], events: Any):
        # WANDB_MODE in the environment wins over the spec, as wandb users expect.
        self.mode = os.environ.get("WANDB_MODE") or mode
        self.run_dir = Path(run_dir)
        self.name = name
        self.config = config
        self.events = events
        self._run = None

    def start(self) -> None:
        if self.mode == "disabled":
            return
        try:
            os.environ.setdefault("WANDB_SILENT", "true")
            import wandb

            self._run = wandb.init(
                project="curriculum",
                name=f"{self.name}-{self.run_dir.name}",
                dir=str(self.run_dir),
                mode=self.mode,
                config=self.config,
                reinit="finish_previous",
                settings=wandb.Settings(console="off", silent=True, init_timeout=20),
            )
        except Exception as e:  # noqa: BLE001 - an unavailable service must not stop training
            self._fail(e)

    def _fail(self, e: BaseException) -> None:
        self._run = None
        self.events.emit("wandb_unavailable", level="warning", mode=self.mode, error=f"{type(e).__name__}: {e}")

    def log(self, step: int, metrics: dict[str, float], **extra: float) -> None:
        if self._run is None:
            return
        try:
            self._run.log({**metrics, **extra}, step=step)
        except Exception as e:  # noqa: BLE001
            self._fail(e)

    def log_eval(self, step: int, phase: str, ev: dict[str, float]) -> None:
        self.log(step, {f"eval/{k}": v for k, v in ev.items()})

    def mark_transition(self, step: int, src: str, dest: str, reason: str) -> None:
        if self._run is None:
            return
        try:
            self._run.log({"transition": 1.0}, step=step)
            self._run.summary[f"transition_{step}"] = f"{src} -> {dest} ({reason})"
        except Exception as e:  # noqa: BLE001
            self._fail(e)

    def finish(self) -> None:
        if self._run is None:
            return
        try:
            self._run.finish()
        except Exception as e:  # noqa: BLE001
            self._fail(e)
        self._run = None
