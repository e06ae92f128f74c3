"""Adaptive penalty annealing math: a CUSUM collapse detector and a PID-Lagrangian controller.

Both are pure, optax-style: ``init(cfg) -> state`` and ``update(cfg, state, inputs) ->
(state, output)``, where ``state`` is plain JSON-safe data (dicts, lists, floats, ints, None,
strings; never NaN) and the input state is never mutated.

Collapse detector
-----------------
Watches GRPO reward signals for a *collapse*: the policy converging to one behaviour so every
completion in a group scores the same, the advantages vanish and learning stalls.  Each signal
has a bad direction (``reward_range`` down, ``zero_spread_frac`` up, ``top_reward_rate`` down,
``refusal_rate`` up).  Per signal a baseline mean/std comes from the previous phase's final
window (``baseline = "previous_phase"``) or the first ``warmup`` steps of the current phase
(``baseline = "warmup"``, also the fallback when the previous phase has too little data for a
signal); the std is floored at ``max(min_std, rel_std * |mean|)`` (defaults below).  Each step,
with ``z`` the standardised deviation in the bad direction::

    s = min(cap, max(0, s + clip(z, -z_clip, z_clip) - k))

and the detector alarms when ``score = sum(weight * s) >= h`` **and** the primary signals
(``reward_range``, ``zero_spread_frac``) alone contribute ``>= primary_fraction * h``, so the
weak ``top_reward_rate`` (frequent 10-20 step droughts at small batch sizes) can never fire it
alone.  ``z_clip`` bounds what a single step can add (a one-step blip adds at most
``weight * (z_clip - k)`` per signal), ``k`` is the drift per step that is tolerated.

Defaults (tuned on seeded synthetic Med-Safety-Gym-shaped GRPO traces, G=4, 4-8 prompts per
step, rewards -15..+36; generator in tests/test_controllers_traces.py, figures from bench/bench_guards.py):
``k=2.0``, ``z_clip=4.0``, ``h=12.0``, ``primary_fraction=0.6``, ``cap=2h=24``; weights
reward_range 1.0, zero_spread_frac 1.0, top_reward_rate 0.25, refusal_rate 0.5; std floors
reward_range ``max(1.0, 0.2 * mean)`` (the range saturates at max-min reward, so its sample
std underestimates healthy dips: a 15-step top-reward drought drops it from ~50 to ~30-45),
zero_spread_frac 0.1 (one identical group is a 0.125-0.25 jump at 4-8 prompts per step),
top_reward_rate / refusal_rate 0.05; ``baseline_window=50``, ``warmup=20``,
``min_baseline=10``.  Measured: 0 false fires on 1,000 healthy traces x 300 steps (each with
two 15-step droughts and three whole-step blips; worst alarm ratio 0.88 of the threshold);
all 500 collapses detected, delay after onset (ramp of 1-10 steps included) p50 7, p90 10,
max 14-15 steps.  A single collapsed step adds at most ``2 * (z_clip - k) = 4`` to the
primary score, so one blip can never fire (h = 12).

Caveats: a collapse that starts inside the warm-up window (``baseline = "warmup"``) becomes
the baseline and is not detected; a strong model that saturates the top reward looks like a
collapse (range -> 0, zero spread -> 1) and must be told apart by the spec (e.g. a guard on
``top_reward_rate``).

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
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np


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
# Collapse detector
# =======================================================================================

#: signal -> (bad direction: +1 up is bad, -1 down is bad, weight, min_std, rel_std)
#: the baseline std is floored at max(min_std, rel_std * |baseline mean|)
SIGNAL_DEFAULTS: dict[str, tuple[int, float, float, float]] = {
    "reward_range": (-1, 1.0, 1.0, 0.2),
    "zero_spread_frac": (+1, 1.0, 0.1, 0.0),
    "top_reward_rate": (-1, 0.25, 0.05, 0.0),
    "refusal_rate": (+1, 0.5, 0.05, 0.0),
}
PRIMARY_SIGNALS = frozenset({"reward_range", "zero_spread_frac"})


@dataclass(frozen=True)
class SignalConfig:
    name: str
    direction: int  # +1: an increase is bad; -1: a decrease is bad
    weight: float
    min_std: float
    rel_std: float
    primary: bool


@dataclass(frozen=True)
class CollapseConfig:
    signals: tuple[SignalConfig, ...]
    baseline: str = "previous_phase"  # or "warmup"
    baseline_phase: str | None = None  # read the baseline from this named phase instead
    baseline_window: int = 50
    warmup: int = 20
    min_baseline: int = 10
    k: float = 2.0
    z_clip: float = 4.0
    h: float = 12.0
    primary_fraction: float = 0.6
    cap: float = 24.0

    @property
    def signal_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.signals)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


COLLAPSE_KEYS = {
    "signals", "weights", "min_std", "rel_std", "directions", "primary", "baseline", "baseline_phase",
    "baseline_window", "warmup", "min_baseline", "k", "z_clip", "h", "primary_fraction", "cap",
}


def collapse_config(table: Mapping[str, Any] | CollapseConfig | None = None) -> CollapseConfig:
    """Validate a detector table (all keys optional) into a :class:`CollapseConfig`.

    Keys: ``signals`` (list of names, or table name -> weight), ``weights`` / ``min_std`` /
    ``directions`` (tables name -> value; direction "up" or "down" is needed for a signal
    outside the four built-in ones), ``primary`` (list: signals that must carry the evidence),
    ``baseline`` ("previous_phase" | "warmup"), ``baseline_phase``, ``baseline_window``,
    ``warmup``, ``min_baseline``, ``k``, ``z_clip``, ``h``, ``primary_fraction``, ``cap``.
    Raises :class:`ControllerConfigError` naming the key.
    """
    if isinstance(table, CollapseConfig):
        return table
    t = dict(table or {})
    _unknown_keys(t, COLLAPSE_KEYS, "collapse detector")

    raw_signals = t.get("signals", list(SIGNAL_DEFAULTS))
    weights_in: dict[str, Any] = {}
    if isinstance(raw_signals, Mapping):
        weights_in.update(raw_signals)
        names = list(raw_signals)
    elif isinstance(raw_signals, (list, tuple)):
        names = list(raw_signals)
    else:
        raise ControllerConfigError("signals", "must be a list of metric names or a table name -> weight")
    if not names:
        raise ControllerConfigError("signals", "needs at least one signal")
    if len(set(names)) != len(names):
        raise ControllerConfigError("signals", "lists a signal twice")
    for key in ("weights", "min_std", "rel_std", "directions"):
        if key in t and not isinstance(t[key], Mapping):
            raise ControllerConfigError(key, "must be a table of signal name -> value")
        for name in t.get(key, {}):
            if name not in names:
                raise ControllerConfigError(key, f"'{name}' is not one of the signals {names}")
    weights_in.update(t.get("weights", {}))
    min_std_in = dict(t.get("min_std", {}))
    rel_std_in = dict(t.get("rel_std", {}))
    dirs_in = dict(t.get("directions", {}))
    primary_in = t.get("primary", None)
    if primary_in is None:
        primary = {n for n in names if n in PRIMARY_SIGNALS}
        if not primary:
            primary = set(names)
    else:
        if not isinstance(primary_in, (list, tuple)) or not primary_in:
            raise ControllerConfigError("primary", "must be a non-empty list of signal names")
        for n in primary_in:
            if n not in names:
                raise ControllerConfigError("primary", f"'{n}' is not one of the signals {names}")
        primary = set(primary_in)

    sigs: list[SignalConfig] = []
    for name in names:
        if not isinstance(name, str) or not name:
            raise ControllerConfigError("signals", f"signal names must be strings, got {name!r}")
        d_default, w_default, s_default, r_default = SIGNAL_DEFAULTS.get(name, (0, 1.0, 0.05, 0.0))
        if name in dirs_in:
            dv = dirs_in[name]
            if dv not in ("up", "down"):
                raise ControllerConfigError("directions", f"{name}: must be \"up\" or \"down\", got {dv!r}")
            d_default = 1 if dv == "up" else -1
        if d_default == 0:
            raise ControllerConfigError(
                "directions", f"signal '{name}' is not built in; give its bad direction (\"up\"/\"down\")"
            )
        w = _number({"weights": weights_in.get(name, w_default)}, "weights", w_default, lo=0.0)
        ms = _number({"min_std": min_std_in.get(name, s_default)}, "min_std", s_default, lo=0.0, lo_open=True)
        rs = _number({"rel_std": rel_std_in.get(name, r_default)}, "rel_std", r_default, lo=0.0)
        sigs.append(SignalConfig(name, d_default, w, ms, rs, name in primary))

    baseline = t.get("baseline", "previous_phase")
    if baseline not in ("previous_phase", "warmup"):
        raise ControllerConfigError("baseline", f'must be "previous_phase" or "warmup", got {baseline!r}')
    baseline_phase = t.get("baseline_phase")
    if baseline_phase is not None and (not isinstance(baseline_phase, str) or not baseline_phase):
        raise ControllerConfigError("baseline_phase", "must be a phase name")
    h = _number(t, "h", 12.0, lo=0.0, lo_open=True)
    cfg = CollapseConfig(
        signals=tuple(sigs),
        baseline=baseline,
        baseline_phase=baseline_phase,
        baseline_window=_integer(t, "baseline_window", 50, lo=2),
        warmup=_integer(t, "warmup", 20, lo=2),
        min_baseline=_integer(t, "min_baseline", 10, lo=2),
        k=_number(t, "k", 2.0, lo=0.0),
        z_clip=_number(t, "z_clip", 4.0, lo=0.0, lo_open=True),
        h=h,
        primary_fraction=_number(t, "primary_fraction", 0.6, lo=0.0, hi=1.0),
        cap=_number(t, "cap", 2.0 * h, lo=0.0, lo_open=True),
    )
    primary_w = sum(s.weight for s in cfg.signals if s.primary)
    total_w = sum(s.weight for s in cfg.signals)
    if primary_w <= 0.0:
        raise ControllerConfigError("weights", "the primary signals need a positive weight")
    if cfg.cap * total_w < cfg.h or cfg.cap * primary_w < cfg.primary_fraction * cfg.h:
        raise ControllerConfigError("cap", "is too small: the detector could never reach h")
    if cfg.min_baseline > cfg.baseline_window:
        raise ControllerConfigError("min_baseline", "must be <= baseline_window")
    return cfg


@dataclass(frozen=True)
class CollapseOutput:
    """``fired``: the detector's alarm at this step (score >= h with primary evidence).
    ``score``: the weighted CUSUM sum.  ``evidence``: per-signal numbers (JSON-safe)."""

    fired: bool
    score: float
    primary_score: float
    ready: bool  # at least one primary signal has a baseline
    evidence: dict[str, Any] = field(default_factory=dict)


def collapse_init(cfg: CollapseConfig | Mapping[str, Any] | None = None) -> dict[str, Any]:
    cfg = collapse_config(cfg)
    return {
        "steps": 0,
        "signals": {
            s.name: {"baseline": None, "warmup": [], "cusum": 0.0, "updates": 0, "skipped": 0}
            for s in cfg.signals
        },
    }


def _baseline(values: Sequence[float], sc: SignalConfig, source: str) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    mean = float(arr.mean())
    return {
        "mean": mean,
        "std": float(max(float(arr.std()), sc.min_std, sc.rel_std * abs(mean))),
        "raw_std": float(arr.std()),
        "n": int(arr.size),
        "source": source,
    }


def collapse_update(
    cfg: CollapseConfig | Mapping[str, Any],
    state: Mapping[str, Any],
    values: Mapping[str, float],
    baseline_windows: Mapping[str, Sequence[float]] | None = None,
) -> tuple[dict[str, Any], CollapseOutput]:
    """Consume one step's signal values; returns the new state and the detector output.

    ``baseline_windows``: per signal, the values of the baseline phase's final window (used the
    first time a signal needs a baseline, when ``cfg.baseline == "previous_phase"``).  Missing
    or non-finite values are skipped (counted in ``skipped``), never fed to the CUSUM.
    """
    cfg = collapse_config(cfg)
    new_sigs: dict[str, Any] = {}
    evidence: dict[str, Any] = {}
    score = 0.0
    primary_score = 0.0
    ready = False
    old_sigs = state.get("signals", {})
    for sc in cfg.signals:
        old = old_sigs.get(sc.name) or {"baseline": None, "warmup": [], "cusum": 0.0, "updates": 0, "skipped": 0}
        st = {
            "baseline": old["baseline"],
            "warmup": old["warmup"],
            "cusum": float(old["cusum"]),
            "updates": int(old["updates"]),
            "skipped": int(old["skipped"]),
        }
        x = values.get(sc.name)
        finite = x is not None and _isfinite(x)
        if st["baseline"] is None and cfg.baseline == "previous_phase" and baseline_windows:
            win = baseline_windows.get(sc.name)
            if win is not None and len(win):
                arr = np.asarray(win, dtype=np.float64)[-cfg.baseline_window :]
                if int(np.isfinite(arr).sum()) >= cfg.min_baseline:
                    st["baseline"] = _baseline(arr, sc, cfg.baseline_phase or "previous_phase")
        z = None
        if not finite:
            if sc.name in values:
                st["skipped"] += 1
        elif st["baseline"] is None:
            st["warmup"] = list(st["warmup"]) + [float(x)]
            if len(st["warmup"]) >= cfg.warmup:
                st["baseline"] = _baseline(st["warmup"], sc, "warmup")
                st["warmup"] = []
        else:
            b = st["baseline"]
            z = sc.direction * (float(x) - b["mean"]) / b["std"]
            zc = min(cfg.z_clip, max(-cfg.z_clip, z))
            st["cusum"] = min(cfg.cap, max(0.0, st["cusum"] + zc - cfg.k))
            st["updates"] += 1
        if st["baseline"] is not None and sc.primary:
            ready = True
        contrib = sc.weight * st["cusum"]
        score += contrib
        if sc.primary:
            primary_score += contrib
        new_sigs[sc.name] = st
        b = st["baseline"]
        evidence[sc.name] = {
            "value": float(x) if finite else None,
            "baseline_mean": None if b is None else b["mean"],
            "baseline_std": None if b is None else b["std"],
            "baseline_source": None if b is None else b["source"],
            "z": None if z is None else float(z),
            "cusum": st["cusum"],
            "weight": sc.weight,
            "skipped": st["skipped"],
            "warming_up": b is None,
        }
    fired = ready and score >= cfg.h and primary_score >= cfg.primary_fraction * cfg.h
    evidence["score"] = score
    evidence["primary_score"] = primary_score
    evidence["h"] = cfg.h
    new_state = {"steps": int(state.get("steps", 0)) + 1, "signals": new_sigs}
    return new_state, CollapseOutput(bool(fired), float(score), float(primary_score), ready, evidence)


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


__all__ = [
    "ControllerConfigError",
    "SIGNAL_DEFAULTS",
    "PRIMARY_SIGNALS",
    "SignalConfig",
    "CollapseConfig",
    "CollapseOutput",
    "collapse_config",
    "collapse_init",
    "collapse_update",
    "PIDConfig",
    "pid_config",
    "pid_init",
    "pid_update",
]
