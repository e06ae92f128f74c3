"""Adaptive penalty annealing math: a PID-Lagrangian penalty controller.

(The collapse detector lives in :mod:`curriculum.collapse`.)  It is pure, optax-style:
``init(cfg) -> state`` and ``update(cfg, state, inputs) -> (state, output)``, where ``state`` is plain JSON-safe data (dicts, lists, floats, ints, None,
strings; never NaN) and the input state is never mutated.

PID-Lagrangian controller
-------------------------
Stooke, Achiam & Abbeel (2020), "Responsive Safety in Reinforcement Learning by PID Lagrangian
Methods".  For a constraint ``measurement <= target`` (``sense = "upper"``; ``"lower"`` for
``measurement >= target``)::

    e      = measurement - target                (target - measurement for "lower")
    I      = clip(I + ki * e, 0, integral_max)   (anti-windup: never negative, bounded)
    d      = m_t - m_{t-1}   on the EMA-smoothed measurement (sign flipped for "lower")
    lambda = clip(lam_init + kp * e + I + kd * max(0, d), 0, lam_max)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping


class ControllerConfigError(ValueError):
    """A controller / detector configuration value is invalid; ``key`` names it."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


def _isfinite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError, OverflowError):
        return False


def _number(table: Mapping[str, Any], key: str, default: float, *, lo: float | None = None,
            hi: float | None = None, lo_open: bool = False, allow_none: bool = False) -> Any:
    v = table.get(key, default)
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ControllerConfigError(key, f"must be a finite number, got {v!r}")
    v = float(v)
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ControllerConfigError(key, f"must be {'>' if lo_open else '>='} {lo:g}, got {v:g}")
    if hi is not None and v > hi:
        raise ControllerConfigError(key, f"must be <= {hi:g}, got {v:g}")
    return v


def _integer(table: Mapping[str, Any], key: str, default: int, *, lo: int = 0) -> int:
    v = table.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ControllerConfigError(key, f"must be an integer, got {v!r}")
    if v < lo:
        raise ControllerConfigError(key, f"must be >= {lo}, got {v}")
    return int(v)


def _unknown_keys(table: Mapping[str, Any], allowed: set[str], what: str) -> None:
    import difflib

    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ControllerConfigError(str(key), f"unknown {what} setting{hint}")


# =======================================================================================
# PID-Lagrangian controller
# =======================================================================================


@dataclass(frozen=True)
class PIDConfig:
    target: float
    kp: float = 1.0
    ki: float = 0.1
    kd: float = 0.0
    lam_init: float = 0.0
    lam_max: float = 10.0
    integral_max: float = 10.0
    ema_alpha: float = 1.0  # smoothing of the measurement for the derivative term (1 = none)
    sense: str = "upper"  # "upper": measurement <= target; "lower": measurement >= target

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PID_KEYS = {"target", "kp", "ki", "kd", "lam_init", "lam_max", "integral_max", "ema_alpha", "sense"}


def pid_config(table: Mapping[str, Any] | PIDConfig) -> PIDConfig:
    """Validate a PID table eagerly; raises :class:`ControllerConfigError` naming the key."""
    if isinstance(table, PIDConfig):
        return table
    t = dict(table)
    _unknown_keys(t, PID_KEYS, "PID controller")
    if "target" not in t:
        raise ControllerConfigError("target", "is required (the constraint threshold)")
    lam_max = _number(t, "lam_max", 10.0, lo=0.0, lo_open=True)
    cfg = PIDConfig(
        target=_number(t, "target", 0.0),
        kp=_number(t, "kp", 1.0, lo=0.0),
        ki=_number(t, "ki", 0.1, lo=0.0),
        kd=_number(t, "kd", 0.0, lo=0.0),
        lam_init=_number(t, "lam_init", 0.0, lo=0.0),
        lam_max=lam_max,
        integral_max=_number(t, "integral_max", lam_max, lo=0.0),
        ema_alpha=_number(t, "ema_alpha", 1.0, lo=0.0, hi=1.0, lo_open=True),
        sense=t.get("sense", "upper"),
    )
    if cfg.sense not in ("upper", "lower"):
        raise ControllerConfigError("sense", f'must be "upper" or "lower", got {cfg.sense!r}')
    if cfg.lam_init > cfg.lam_max:
        raise ControllerConfigError("lam_init", f"must be <= lam_max ({cfg.lam_max:g})")
    return cfg


def pid_init(cfg: PIDConfig | Mapping[str, Any]) -> dict[str, Any]:
    cfg = pid_config(cfg)
    return {
        "integral": 0.0,
        "smoothed": None,  # EMA of the measurement (None before the first finite one)
        "lam": float(min(cfg.lam_max, max(0.0, cfg.lam_init))),
        "error": None,
        "derivative": 0.0,
        "steps": 0,
        "skipped": 0,
        "last_nonfinite": False,
    }


def pid_update(
    cfg: PIDConfig | Mapping[str, Any], state: Mapping[str, Any], measurement: float
) -> tuple[dict[str, Any], float]:
    """One controller step; returns (new state, lambda).

    A non-finite measurement leaves the control state unchanged (``skipped`` is incremented and
    ``last_nonfinite`` set) and returns the previous lambda.
    """
    cfg = pid_config(cfg)
    s = dict(state)
    if not _isfinite(measurement):
        s["skipped"] = int(s.get("skipped", 0)) + 1
        s["last_nonfinite"] = True
        return s, float(s["lam"])
    m = float(measurement)
    sign = 1.0 if cfg.sense == "upper" else -1.0
    e = sign * (m - cfg.target)
    integral = min(cfg.integral_max, max(0.0, float(s["integral"]) + cfg.ki * e))
    prev = s.get("smoothed")
    smoothed = m if prev is None else cfg.ema_alpha * m + (1.0 - cfg.ema_alpha) * float(prev)
    d = 0.0 if prev is None else sign * (smoothed - float(prev))
    lam = cfg.lam_init + cfg.kp * e + integral + cfg.kd * max(0.0, d)
    lam = float(min(cfg.lam_max, max(0.0, lam)))
    s.update(
        integral=float(integral),
        smoothed=float(smoothed),
        lam=lam,
        error=float(e),
        derivative=float(d),
        steps=int(s.get("steps", 0)) + 1,
        last_nonfinite=False,
    )
    return s, lam


class PIDKind:
    """``controller = { type = "pid", ... }``: the kind behind a phase's controller table.

    Every controller kind has ``config(table)``, ``init(cfg)`` and ``update(cfg, state,
    measurement) -> (state, lambda)``; the core (curriculum/core.py) scales the preset's
    penalties by ``1 + lambda``.  The table's ``type``, ``metric`` and ``window`` keys are the
    core's (which metric, averaged over how many steps); the rest are the kind's.
    """

    name = "pid"
    keys = frozenset(PID_KEYS)

    def config(self, table: Mapping[str, Any]) -> PIDConfig:
        return pid_config({k: v for k, v in table.items() if k not in ("type", "metric", "window")})

    def init(self, cfg: PIDConfig) -> dict[str, Any]:
        return pid_init(cfg)

    def update(self, cfg: PIDConfig, state: Mapping[str, Any], measurement: float) -> tuple[dict[str, Any], float]:
        return pid_update(cfg, state, measurement)


CONTROLLER_KINDS: dict[str, PIDKind] = {"pid": PIDKind()}


__all__ = [
    "CONTROLLER_KINDS",
    "ControllerConfigError",
    "PIDConfig",
    "pid_config",
    "pid_init",
    "pid_update",
]
