"""The collapse detector: a per-group sequential test (Page's CUSUM on a likelihood ratio).

What counts as a collapse
-------------------------
GRPO learns from the spread of rewards inside a group (one prompt, G completions).  A *collapse*
is lost exploration without gain: groups stop spreading (every completion scores the same, the
advantages are zero, learning stalls) while the policy does not reach the top reward more often
and its mean reward does not rise.  "The model got good" (whole groups at the maximum reward,
mean rising) is the opposite and never fires the detector.

The observation is the group, not the step
------------------------------------------
Every group is one of four outcomes (counted by the runner, :func:`runners.base.group_outcomes`):

=============  ===========================================================
``flat``       zero spread, below the top reward: the collapse outcome
``spread``     some spread, no completion at the top reward
``top``        some spread, at least one completion at the top reward
``saturated``  every completion at the top reward (success)
=============  ===========================================================

When the reward has no known maximum (a user reward that declares none) the runner reports
``groups_top`` / ``groups_saturated`` as NaN: the detector then sees two outcomes, zero spread
or not, and tells success from collapse by the mean reward alone (see *the gain veto*).

A step with P prompts carries P independent observations, so more prompts per step means
faster detection at the same false-alarm rate and one prompt per step still works.

The test
--------
Pre-change (healthy) outcome probabilities ``p`` are estimated from a baseline of groups (the
previous phase's final ``baseline_window`` steps, or the first ``warmup`` steps of this phase)
with Dirichlet shrinkage: ``prior`` pseudo-groups spread evenly over the outcomes.  Small
baselines underestimate rare outcomes, and an underestimated healthy ``flat`` rate is what
would cause false alarms, so the detector uses an upper credible value for it
(``p_flat + baseline_margin * sd``, the Beta posterior's standard deviation) and rescales the
rest.

The alternative ``q`` is the smallest collapse worth catching: a share ``min_collapse`` of the
groups turn flat, and the others lose a share ``top_loss`` of their top scores::

    q_flat      = rho + (1 - rho) p_flat
    q_spread    = (1 - rho) (p_spread + theta (p_top + p_saturated))
    q_top       = (1 - rho) (1 - theta) p_top
    q_saturated = (1 - rho) (1 - theta) p_saturated

Each step adds the log-likelihood ratio of its groups, ``L = sum_c n_c log(q_c / p_c)``, to
Page's CUSUM ``S = max(0, S + min(L, max_step_evidence * h))`` and the detector alarms when
``S >= h``.  Under the alternative only ``flat`` groups carry positive evidence, and ``top`` or
``saturated`` groups carry strongly negative evidence, so droughts of top scores (spread groups
still spreading) and success do not accumulate.  ``max_step_evidence`` (default 0.5) means no
single step, however many identical groups it holds, can fire the detector alone.

Calibration: ``h = log(ARL)`` with ``ARL = 1 / false_alarm_rate`` steps.  For the exact
likelihood ratio of independent observations, Lorden (1971) gives an average run length to a
false alarm of at least ``e^h``; capping the increments only lowers ``S``.  The per-step LLR
already sums the step's groups, so the threshold does not depend on the batch shape; the
estimated baseline makes the bound approximate, which ``bench/bench_collapse.py`` checks on
thousands of seeded traces per shape.  The change point is estimated the CUSUM way: the step
after ``S`` was last zero.

The gain veto
-------------
When ``S`` reaches ``h`` the detector compares the groups since the estimated onset with the
baseline: if the share of groups reaching the top reward, or the mean reward, is higher than the
baseline's by more than two standard errors, the change is a gain, not a collapse: the alarm is
withheld (counted as ``vetoes``) and ``S`` restarts at zero.

Everything here is pure and optax-shaped: ``collapse_init(cfg) -> state`` and
``collapse_update(cfg, state, step, baseline) -> (state, output)``; state is plain JSON data.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

OUTCOMES = ("flat", "spread", "top", "saturated")
#: the per-step metrics the detector reads (counts of groups per outcome, and the mean reward)
GROUP_METRICS = tuple(f"groups_{o}" for o in OUTCOMES)
READS = GROUP_METRICS + ("reward_mean",)

#: keys of the detector's previous (per-step CUSUM) design, refused with a pointer
REMOVED_KEYS = frozenset({"signals", "weights", "min_std", "rel_std", "directions", "primary",
                          "k", "z_clip", "h", "primary_fraction", "cap", "min_baseline"})
COLLAPSE_KEYS = frozenset({
    "false_alarm_rate", "arl", "min_collapse", "top_loss", "baseline", "baseline_phase",
    "baseline_window", "warmup", "min_baseline_groups", "prior", "baseline_margin",
    "max_step_evidence", "veto", "tolerance",
})
MAX_WINDOW = 100_000


class CollapseConfigError(ValueError):
    """A detector setting is invalid; ``key`` names it."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


@dataclass(frozen=True)
class CollapseConfig:
    false_alarm_rate: float = 1e-4  # per step
    min_collapse: float = 0.75  # rho: share of groups that turn flat in the smallest collapse caught
    top_loss: float = 0.0  # theta: share of top scores the other groups lose
    baseline: str = "previous_phase"  # or "warmup"
    baseline_phase: str | None = None
    baseline_window: int = 100  # steps of the baseline phase's final window
    warmup: int = 20  # steps (fallback baseline: the first steps of this phase)
    min_baseline_groups: int = 40
    prior: float = 4.0  # Dirichlet pseudo-groups, spread evenly over the outcomes
    baseline_margin: float = 1.0  # posterior sds added to the healthy flat rate
    tolerance: float = 0.1  # a rise of the flat-group share this large is still healthy
    max_step_evidence: float = 0.34  # share of h one step may add (3 steps at least to fire)
    veto: bool = True

    @property
    def h(self) -> float:
        return math.log(1.0 / self.false_alarm_rate)

    @property
    def arl(self) -> float:
        return 1.0 / self.false_alarm_rate

    @property
    def reads(self) -> tuple[str, ...]:
        return READS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _num(t: Mapping[str, Any], key: str, default: float, lo: float, hi: float, lo_open=True, hi_open=False) -> float:
    v = t.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise CollapseConfigError(key, f"must be a finite number, got {v!r}")
    v = float(v)
    if (v <= lo if lo_open else v < lo) or (v >= hi if hi_open else v > hi):
        lo_s = f"{'>' if lo_open else '>='} {lo:g}"
        hi_s = f"{'<' if hi_open else '<='} {hi:g}"
        raise CollapseConfigError(key, f"must be {lo_s} and {hi_s}, got {v:g}")
    return v


def _int(t: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    v = t.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise CollapseConfigError(key, f"must be an integer, got {v!r}")
    if not lo <= v <= hi:
        raise CollapseConfigError(key, f"must be between {lo} and {hi}, got {v}")
    return int(v)


def collapse_config(table: Mapping[str, Any] | CollapseConfig | None = None) -> CollapseConfig:
    """Validate a detector table (every key optional); raises :class:`CollapseConfigError`."""
    if isinstance(table, CollapseConfig):
        return table
    t = dict(table or {})
    for key in t:
        if key in REMOVED_KEYS:
            raise CollapseConfigError(
                key, "belongs to the old per-step CUSUM detector, which was replaced by a per-group "
                "test; set its sensitivity with false_alarm_rate (per step, e.g. 1e-4) and "
                "optionally min_collapse (see docs/collapse.md)")
        if key not in COLLAPSE_KEYS:
            close = difflib.get_close_matches(str(key), sorted(COLLAPSE_KEYS), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise CollapseConfigError(str(key), f"unknown collapse detector setting{hint}")
    if "arl" in t and "false_alarm_rate" in t:
        raise CollapseConfigError("arl", "give either arl or false_alarm_rate, not both")
    if "arl" in t:
        arl = _num(t, "arl", 1e4, 1.0, 1e300)
        far = 1.0 / arl
    else:
        far = _num(t, "false_alarm_rate", 1e-4, 0.0, 1.0, hi_open=True)
    baseline = t.get("baseline", "previous_phase")
    if baseline not in ("previous_phase", "warmup"):
        raise CollapseConfigError("baseline", f'must be "previous_phase" or "warmup", got {baseline!r}')
    bp = t.get("baseline_phase")
    if bp is not None and (not isinstance(bp, str) or not bp):
        raise CollapseConfigError("baseline_phase", "must be a phase name")
    veto = t.get("veto", True)
    if not isinstance(veto, bool):
        raise CollapseConfigError("veto", f"must be true or false, got {veto!r}")
    return CollapseConfig(
        false_alarm_rate=far,
        min_collapse=_num(t, "min_collapse", 0.75, 0.0, 1.0, hi_open=True),
        top_loss=_num(t, "top_loss", 0.0, 0.0, 1.0, lo_open=False, hi_open=True),
        baseline=baseline,
        baseline_phase=bp,
        baseline_window=_int(t, "baseline_window", 100, 2, MAX_WINDOW),
        warmup=_int(t, "warmup", 20, 2, MAX_WINDOW),
        min_baseline_groups=_int(t, "min_baseline_groups", 40, 1, 10_000_000),
        prior=_num(t, "prior", 4.0, 0.0, 1e6),
        baseline_margin=_num(t, "baseline_margin", 1.0, 0.0, 10.0, lo_open=False),
        max_step_evidence=_num(t, "max_step_evidence", 0.34, 0.0, 1.0),
        tolerance=_num(t, "tolerance", 0.1, 0.0, 0.5, lo_open=False),
        veto=veto,
    )


# ---------------------------------------------------------------------- the statistics


def _count(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return 0.0
    return f if math.isfinite(f) and f > 0 else 0.0


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def estimate_baseline(cfg: CollapseConfig, steps: Sequence[Mapping[str, Any]], source: str) -> dict[str, Any] | None:
    """Healthy outcome probabilities from baseline steps (dicts of :data:`READS`); None when
    they hold fewer than ``min_baseline_groups`` groups."""
    counts = {o: 0.0 for o in OUTCOMES}
    means: list[tuple[float, float]] = []  # (reward_mean, groups) per step
    for s in steps:
        n_step = 0.0
        for o in OUTCOMES:
            c = _count(s.get(f"groups_{o}"))
            counts[o] += c
            n_step += c
        m = _finite(s.get("reward_mean"))
        if m is not None and n_step > 0:
            means.append((m, n_step))
    n = sum(counts.values())
    if n < cfg.min_baseline_groups:
        return None
    k = len(OUTCOMES)
    total = n + cfg.prior
    post = {o: (counts[o] + cfg.prior / k) / total if total > 0 else 1.0 / k for o in OUTCOMES}
    # guard against zero probabilities (prior = 0 and an outcome never seen)
    floor = 0.5 / (n + 1.0)
    post = {o: max(v, floor) for o, v in post.items()}
    z = sum(post.values())
    post = {o: v / z for o, v in post.items()}
    mf = post["flat"]
    sd = math.sqrt(mf * (1.0 - mf) / (total + 1.0))
    used_flat = min(0.98, mf + cfg.baseline_margin * sd + cfg.tolerance)
    scale = (1.0 - used_flat) / (1.0 - mf) if mf < 1.0 else 0.0
    p = {o: (used_flat if o == "flat" else post[o] * scale) for o in OUTCOMES}
    g = sum(w for _, w in means)
    if g > 0:
        mean = sum(m * w for m, w in means) / g
        steps_n = len(means)
        var = sum((m - mean) ** 2 for m, _ in means) / max(1, steps_n - 1)
        groups_per_step = g / steps_n
        # the sd of one group's mean reward, from the spread of step means of ~P groups each
        group_sd = math.sqrt(var * groups_per_step)
    else:
        mean, group_sd = None, None
    top_rate = (counts["top"] + counts["saturated"]) / n
    return {
        "source": source,
        "groups": n,
        "steps": len(steps),
        "counts": counts,
        "p": p,
        "p_flat_estimate": mf,
        "reward_mean": mean,
        "group_reward_sd": group_sd,
        "top_group_rate": top_rate,
    }


def llr_weights(cfg: CollapseConfig, p: Mapping[str, float]) -> dict[str, float]:
    """log(q_c / p_c) for each outcome under the alternative of ``cfg``."""
    rho, theta = cfg.min_collapse, cfg.top_loss
    q = {
        "flat": rho + (1.0 - rho) * p["flat"],
        "spread": (1.0 - rho) * (p["spread"] + theta * (p["top"] + p["saturated"])),
        "top": (1.0 - rho) * (1.0 - theta) * p["top"],
        "saturated": (1.0 - rho) * (1.0 - theta) * p["saturated"],
    }
    return {o: math.log(q[o] / p[o]) for o in OUTCOMES}


@dataclass(frozen=True)
class CollapseOutput:
    """``fired``: alarm at this step.  ``ready``: a baseline exists.  ``evidence``: JSON-safe."""

    fired: bool
    statistic: float
    threshold: float
    ready: bool
    evidence: dict[str, Any] = field(default_factory=dict)


#: the groups since the estimated onset (the current excursion of S), for the gain veto
_EMPTY_RUN = {"steps": 0, "groups": 0.0, "top": 0.0, "reward_sum": 0.0, "reward_groups": 0.0}


def collapse_init(cfg: CollapseConfig | Mapping[str, Any] | None = None) -> dict[str, Any]:
    collapse_config(cfg)
    return {
        "steps": 0,
        "baseline": None,
        "warmup": [],  # steps kept while the fallback baseline is gathered
        "s": 0.0,
        "onset": None,  # phase step at which the current excursion of S began
        "run": dict(_EMPTY_RUN),
        "vetoes": 0,
        "last_veto": None,
        "max_s": 0.0,
        "skipped": 0,
    }


def _gain(cfg: CollapseConfig, base: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any] | None:
    """Why the groups since onset are a gain over the baseline (None: they are not)."""
    n = float(run["groups"])
    if n <= 0:
        return None
    p0 = float(base["top_group_rate"])
    top_rate = float(run["top"]) / n
    se_top = math.sqrt(max(p0 * (1.0 - p0), 1e-12) / n)
    if top_rate > p0 + 2.0 * se_top:
        return {"reason": "top_reward_rate_rose", "top_group_rate": top_rate, "baseline": p0}
    m0, sd = base.get("reward_mean"), base.get("group_reward_sd")
    rg = float(run["reward_groups"])
    if m0 is not None and sd is not None and rg > 0:
        mean = float(run["reward_sum"]) / rg
        if mean > float(m0) + 2.0 * float(sd) / math.sqrt(rg):
            return {"reason": "mean_reward_rose", "reward_mean": mean, "baseline": float(m0)}
    return None


def collapse_update(
    cfg: CollapseConfig | Mapping[str, Any],
    state: Mapping[str, Any],
    step: Mapping[str, Any] | None,
    baseline_steps: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[dict[str, Any], CollapseOutput]:
    """Consume one step (a dict of :data:`READS`; None: report without consuming).

    ``baseline_steps``: the baseline phase's final window, used the first time a baseline is
    needed when ``cfg.baseline == "previous_phase"``.
    """
    cfg = collapse_config(cfg)
    st = {**state, "run": dict(state.get("run") or _EMPTY_RUN), "warmup": list(state.get("warmup") or [])}
    h = cfg.h
    if st["baseline"] is None and cfg.baseline == "previous_phase" and baseline_steps:
        st["baseline"] = estimate_baseline(cfg, list(baseline_steps)[-cfg.baseline_window:],
                                           cfg.baseline_phase or "previous_phase")
    fired = False
    llr = None
    veto = None
    if step is not None:
        st["steps"] = int(st["steps"]) + 1
        counts = {o: _count(step.get(f"groups_{o}")) for o in OUTCOMES}
        n = sum(counts.values())
        if n <= 0:
            st["skipped"] = int(st["skipped"]) + 1
        elif st["baseline"] is None:
            st["warmup"].append({k: _finite(step.get(k)) for k in READS})
            if len(st["warmup"]) >= cfg.warmup:
                b = estimate_baseline(cfg, st["warmup"], "warmup")
                if b is not None:
                    st["baseline"] = b
                    st["warmup"] = []
        else:
            w = llr_weights(cfg, st["baseline"]["p"])
            llr = sum(counts[o] * w[o] for o in OUTCOMES)
            s_prev = float(st["s"])
            inc = min(llr, cfg.max_step_evidence * h)
            s = max(0.0, s_prev + inc)
            run = st["run"]
            if s <= 0.0:
                st["onset"] = None
                run = dict(_EMPTY_RUN)
            else:
                if s_prev <= 0.0 or st["onset"] is None:
                    st["onset"] = st["steps"]
                    run = dict(_EMPTY_RUN)
                run["steps"] += 1
                run["groups"] += n
                run["top"] += counts["top"] + counts["saturated"]
                m = _finite(step.get("reward_mean"))
                if m is not None:
                    run["reward_sum"] += m * n
                    run["reward_groups"] += n
            st["run"] = run
            st["s"] = s
            st["max_s"] = max(float(st["max_s"]), s)
            if s >= h:
                veto = _gain(cfg, st["baseline"], run) if cfg.veto else None
                if veto is None:
                    fired = True
                else:
                    st["vetoes"] = int(st["vetoes"]) + 1
                    st["last_veto"] = {"step": st["steps"], **veto}
                    st["s"] = 0.0
                    st["onset"] = None
                    st["run"] = dict(_EMPTY_RUN)
    base = st["baseline"]
    run = st["run"]
    evidence: dict[str, Any] = {
        "statistic": float(st["s"]),
        "threshold": h,
        "false_alarm_rate": cfg.false_alarm_rate,
        "arl_steps": cfg.arl,
        "min_collapse": cfg.min_collapse,
        "onset_phase_step": st["onset"],
        "step_llr": llr,
        "vetoes": st["vetoes"],
        "warming_up": base is None,
    }
    if veto is not None:
        evidence["veto"] = veto
    if base is not None:
        evidence["baseline"] = {
            "source": base["source"], "groups": base["groups"], "p": dict(base["p"]),
            "reward_mean": base["reward_mean"], "top_group_rate": base["top_group_rate"],
        }
        if run["groups"] > 0:
            evidence["since_onset"] = {
                "steps": run["steps"], "groups": run["groups"],
                "top_group_rate": run["top"] / run["groups"],
                "reward_mean": (run["reward_sum"] / run["reward_groups"]) if run["reward_groups"] else None,
            }
    return st, CollapseOutput(fired, float(st["s"]), h, base is not None, evidence)


__all__ = [
    "OUTCOMES", "GROUP_METRICS", "READS", "COLLAPSE_KEYS", "CollapseConfig", "CollapseConfigError",
    "CollapseOutput", "collapse_config", "collapse_init", "collapse_update", "estimate_baseline",
    "llr_weights",
]
