"""Training back ends.  The registry imports a runner only when it is used (Tunix pulls in jax).

Each kind has two halves:
  - a *hooks* module, cheap to import (no jax), that validates the spec tables for that runner
    and lists the metrics it can report: used by `curriculum validate` and at load time;
  - the runner class itself, imported only to train.
"""

from __future__ import annotations

import importlib
from typing import Any

from runners.base import (  # noqa: F401  (re-exported)
    OUTCOME_RATE_METRICS,
    REWARD_STEP_METRICS,
    TRAINER_METRICS,
    PhaseSetup,
    RunContext,
    Runner,
    reward_step_stats,
)

# kind -> (runner class "module:attr", hooks module)
_REGISTRY: dict[str, tuple[str, str]] = {
    "simulated": ("runners.simulated:SimulatedRunner", "runners.simulated"),
    "replay": ("runners.replay:ReplayRunner", "runners.replay"),
    "tunix": ("runners.tunix.runner:TunixRunner", "runners.tunix.config"),
}

RUNNER_KINDS = tuple(_REGISTRY)
ALL_METRICS = frozenset(REWARD_STEP_METRICS) | frozenset(OUTCOME_RATE_METRICS) | frozenset(TRAINER_METRICS)


def get_runner_class(kind: str) -> Any:
    target, _ = _REGISTRY[kind]
    mod, attr = target.split(":")
    return getattr(importlib.import_module(mod), attr)


def get_hooks(kind: str) -> Any:
    """The spec-validation hooks of a runner kind: a module (or class) offering
    ``validate_config(model, data, runner) -> list[(key, msg)]``,
    ``validate_phase(kind, train) -> list[(key, msg)]`` and ``METRIC_NAMES``."""
    _, hooks = _REGISTRY[kind]
    return importlib.import_module(hooks)
