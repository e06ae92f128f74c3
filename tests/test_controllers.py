"""curriculum.controllers: CUSUM collapse detector and PID-Lagrangian controller.

The collapse tests run the detector on seeded synthetic GRPO traces (tests/controller_traces.py):
200 healthy seeds x 300 steps (with 15-step top-reward droughts and single-step blips) must
never fire; 200 collapse seeds must be detected within 40 steps of the onset.
"""

import json
import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import controller_traces as tr  # noqa: E402

from curriculum.controllers import (  # noqa: E402
    ControllerConfigError,
    collapse_config,
    collapse_init,
    collapse_update,
    pid_config,
    pid_init,
    pid_update,
)
from curriculum.guards import compile_guard  # noqa: E402
from curriculum.windows import MetricHistory  # noqa: E402

NAN = math.nan
N_HEALTHY = 200
N_COLLAPSE = 200


def run_detector(cfg, prior, phase, use_prior=True):
    state = collapse_init(cfg)
    windows = tr.windows_from(prior, cfg.baseline_window) if use_prior else None
    fires, outs = [], []
    for t, m in enumerate(phase):
        state, out = collapse_update(cfg, state, {s: m[s] for s in tr.SIGNALS}, windows)
        outs.append(out)
        if out.fired:
            fires.append(t)
    return fires, outs, state


def detection_delays(cfg, seeds, use_prior=True):
    delays, early = [], 0
    for seed in seeds:
        prior, phase, onset = tr.collapse_trace(seed)
        fires, _, _ = run_detector(cfg, prior, phase, use_prior)
        early += any(f < onset for f in fires)
        after = [f for f in fires if f >= onset]
        delays.append(after[0] - onset + 1 if after else math.inf)
    return np.array(delays), early


# ---------------------------------------------------------------------------- collapse: traces


@pytest.mark.parametrize("baseline", ["previous_phase", "warmup"])
def test_healthy_traces_never_fire(baseline):
    cfg = collapse_config({"baseline": baseline})
    fired = []
    for seed in range(N_HEALTHY):
        prior, phase = tr.healthy_trace(seed, steps=300)
        fires, _, _ = run_detector(cfg, prior, phase)
        if fires:
            fired.append((seed, fires[0]))
    assert fired == [], f"false fires (seed, step): {fired}"


def test_collapses_are_detected_within_40_steps():
    cfg = collapse_config({})
    delays, early = detection_delays(cfg, range(N_COLLAPSE))
    assert early == 0
    assert np.all(np.isfinite(delays)), "missed collapses"
    assert delays.max() <= 40
    assert np.median(delays) <= 15  # typical detection well inside the 10-15 step target


def test_collapses_detected_with_warmup_baseline():
    cfg = collapse_config({"baseline": "warmup"})
    delays, early = detection_delays(cfg, range(50), use_prior=False)
    assert early == 0 and delays.max() <= 40


def test_top_reward_rate_alone_never_fires():
    # the top-reward rate drops to zero for 200 steps while range / zero-spread stay healthy
    cfg = collapse_config({})
    base = {"reward_range": [45.0, 50.0, 40.0, 51.0] * 12, "zero_spread_frac": [0.0, 0.25] * 24,
            "top_reward_rate": [0.2, 0.1, 0.25, 0.15] * 12, "refusal_rate": [0.05] * 48}
    state = collapse_init(cfg)
    for t in range(200):
        state, out = collapse_update(cfg, state, {"reward_range": 45.0, "zero_spread_frac": 0.0,
                                                  "top_reward_rate": 0.0, "refusal_rate": 0.05}, base)
        assert not out.fired
    assert state["signals"]["top_reward_rate"]["cusum"] == cfg.cap  # it did accumulate evidence
    assert out.primary_score == 0.0


def test_single_blip_does_not_fire_but_sustained_collapse_does():
    cfg = collapse_config({})
    base = {"reward_range": [45.0, 50.0, 40.0, 51.0] * 12, "zero_spread_frac": [0.0, 0.25] * 24,
            "top_reward_rate": [0.2, 0.1] * 24, "refusal_rate": [0.05] * 48}
    healthy = {"reward_range": 46.0, "zero_spread_frac": 0.0, "top_reward_rate": 0.15, "refusal_rate": 0.05}
    blip = {"reward_range": 1.0, "zero_spread_frac": 1.0, "top_reward_rate": 0.0, "refusal_rate": 0.05}
    state = collapse_init(cfg)
    for m in [healthy] * 5 + [blip] + [healthy] * 20:
        state, out = collapse_update(cfg, state, m, base)
        assert not out.fired
    steps = 0
    while not out.fired:
        state, out = collapse_update(cfg, state, blip, base)
        steps += 1
        assert steps < 10
    assert steps >= 2  # one collapsed step is never enough


def test_non_finite_values_are_skipped_and_counted():
    cfg = collapse_config({})
    prior, phase, onset = tr.collapse_trace(0)
    base = tr.windows_from(prior)
    state = collapse_init(cfg)
    state, _ = collapse_update(cfg, state, phase[0], base)
    before = json.dumps(state["signals"]["reward_range"]["cusum"])
    for _ in range(50):
        state, out = collapse_update(cfg, state, {**phase[1], "reward_range": NAN, "zero_spread_frac": math.inf}, base)
    assert state["signals"]["reward_range"]["skipped"] == 50
    assert state["signals"]["zero_spread_frac"]["skipped"] == 50
    assert json.dumps(state["signals"]["reward_range"]["cusum"]) == before
    assert out.evidence["reward_range"]["value"] is None
    json.dumps(state, allow_nan=False)


def test_state_is_json_and_update_is_pure():
    cfg = collapse_config({})
    prior, phase, onset = tr.collapse_trace(1)
    base = tr.windows_from(prior)
    state = collapse_init(cfg)
    for m in phase[:80]:
        snap = json.dumps(state, allow_nan=False)
        new, out = collapse_update(cfg, state, m, base)
        assert json.dumps(state, allow_nan=False) == snap
        state = json.loads(json.dumps(new, allow_nan=False))  # a checkpoint round trip
        json.dumps(out.evidence, allow_nan=False)
    # restored state continues identically
    a, oa = collapse_update(cfg, state, phase[80], base)
    b, ob = collapse_update(cfg, json.loads(json.dumps(state)), phase[80], base)
    assert a == b and oa == ob


def test_baseline_sources():
    cfg = collapse_config({})
    prior, phase = tr.healthy_trace(3)
    state = collapse_init(cfg)
    state, out = collapse_update(cfg, state, phase[0], tr.windows_from(prior))
    assert out.evidence["reward_range"]["baseline_source"] == "previous_phase"
    expected = np.mean([m["reward_range"] for m in prior[-50:]])
    assert out.evidence["reward_range"]["baseline_mean"] == pytest.approx(expected)
    # no previous-phase data: warm-up on the first `warmup` steps
    state = collapse_init(cfg)
    for t in range(cfg.warmup):
        state, out = collapse_update(cfg, state, phase[t], {"reward_range": [NAN] * 50})
        assert out.ready == (t == cfg.warmup - 1)  # ready once `warmup` values were seen
    assert out.ready and out.evidence["reward_range"]["baseline_source"] == "warmup"
    expected = np.mean([m["reward_range"] for m in phase[: cfg.warmup]])
    assert out.evidence["reward_range"]["baseline_mean"] == pytest.approx(expected)


def test_std_floor():
    cfg = collapse_config({"min_std": {"reward_range": 3.0}, "rel_std": {"reward_range": 0.0}})
    state = collapse_init(cfg)
    state, out = collapse_update(cfg, state, {"reward_range": 40.0}, {"reward_range": [40.0] * 20})
    assert out.evidence["reward_range"]["baseline_std"] == 3.0
    assert out.evidence["reward_range"]["z"] == 0.0


@pytest.mark.parametrize(
    "table, key",
    [
        ({"k": -1}, "k"), ({"h": 0}, "h"), ({"z_clip": 0}, "z_clip"), ({"warmup": 1}, "warmup"),
        ({"baseline": "x"}, "baseline"), ({"signals": "reward_range"}, "signals"),
        ({"weights": {"reward_range": -1}}, "weights"), ({"min_std": {"reward_range": 0}}, "min_std"),
        ({"primary": ["top_reward_rate", "nope"]}, "primary"), ({"cap": 1.0}, "cap"),
        ({"hh": 1}, "hh"), ({"min_baseline": 60}, "min_baseline"),
        ({"directions": {"reward_range": "sideways"}}, "directions"),
        ({"primary_fraction": 1.5}, "primary_fraction"),
    ],
)
def test_collapse_config_errors(table, key):
    with pytest.raises(ControllerConfigError) as info:
        collapse_config(table)
    assert info.value.key == key


def test_collapse_guard_end_to_end_through_metric_history():
    guard = compile_guard("collapse", {"type": "collapse"}, set(tr.SIGNALS) | {"reward_mean"})
    # healthy: no fire
    for seed in range(20):
        prior, phase = tr.healthy_trace(seed)
        h = MetricHistory(max(guard.windows_needed().values()))
        h.begin_phase("soft")
        for m in prior:
            h.push(m)
        h.begin_phase("medium")
        st = guard.init_state()
        for m in phase:
            h.push(m)
            st, res = guard.update(st, h, {})
            assert not res.fired, seed
        json.dumps(st, allow_nan=False)
    # collapse: fires within 40 steps, evidence has the per-signal numbers
    prior, phase, onset = tr.collapse_trace(7)
    h = MetricHistory(50)
    h.begin_phase("soft")
    for m in prior:
        h.push(m)
    h.begin_phase("medium")
    st = guard.init_state()
    fired = None
    for t, m in enumerate(phase):
        h.push(m)
        st, res = guard.update(st, h, {})
        if res.fired:
            fired = t
            break
    assert fired is not None and onset <= fired < onset + 40
    sig = res.evidence["signals"]["reward_range"]
    assert sig["baseline_source"] == "previous_phase" and sig["cusum"] > 0
    assert res.evidence["score"] >= res.evidence["h"]
    json.dumps(res.evidence, allow_nan=False)


def test_collapse_guard_consumes_steps_between_checks():
    """check_every only spaces the checks; the detector still sees every step."""
    every = compile_guard("c", {"type": "collapse", "check_every": 5}, set(tr.SIGNALS))
    each = compile_guard("c", {"type": "collapse"}, set(tr.SIGNALS))
    prior, phase, onset = tr.collapse_trace(11)
    states = []
    for g in (every, each):
        h = MetricHistory(50)
        h.begin_phase("soft")
        for m in prior:
            h.push(m)
        h.begin_phase("medium")
        st = g.init_state()
        for m in phase[:100]:
            h.push(m)
            st, _ = g.update(st, h, {})
        states.append(st["detector"]["signals"])
    assert states[0] == states[1]


def test_collapse_guard_reports_nonfinite_signals():
    guard = compile_guard("c", {"type": "collapse"}, set(tr.SIGNALS))
    h = MetricHistory(50)
    h.begin_phase("soft")
    prior, phase = tr.healthy_trace(0)
    for m in prior:
        h.push(m)
    h.begin_phase("medium")
    st = guard.init_state()
    h.push({**phase[0], "reward_range": NAN})
    st, res = guard.update(st, h, {})
    assert res.nonfinite_terms == ["reward_range"]
    assert res.evidence["signals"]["reward_range"]["skipped"] == 1


# ---------------------------------------------------------------------------- PID


def test_pid_lambda_rises_while_violated_and_decays_when_satisfied():
    cfg = pid_config({"target": 0.1, "kp": 1.0, "ki": 0.5, "kd": 0.0, "lam_max": 5.0})
    st = pid_init(cfg)
    lams = []
    for _ in range(30):
        st, lam = pid_update(cfg, st, 0.4)  # hallucination rate 0.4 > target 0.1
        lams.append(lam)
    assert all(b >= a for a, b in zip(lams, lams[1:]))
    assert lams[-1] > lams[0] > 0
    high = lams[-1]
    down = []
    for _ in range(120):  # the integral (4.5) unwinds at ki * |e| = 0.05 per step
        st, lam = pid_update(cfg, st, 0.0)  # constraint satisfied
        down.append(lam)
    assert all(b <= a for a, b in zip(down, down[1:]))
    assert down[-1] < high and down[-1] == 0.0


def test_pid_stays_in_bounds():
    cfg = pid_config({"target": 0.1, "kp": 50.0, "ki": 10.0, "kd": 20.0, "lam_max": 2.0, "ema_alpha": 0.5})
    st = pid_init(cfg)
    rng = np.random.default_rng(0)
    for m in rng.uniform(-5, 5, 500):
        st, lam = pid_update(cfg, st, float(m))
        assert 0.0 <= lam <= 2.0
        json.dumps(st, allow_nan=False)


def test_pid_integral_does_not_wind_up():
    cfg = pid_config({"target": 0.1, "kp": 0.0, "ki": 1.0, "lam_max": 3.0})
    st = pid_init(cfg)
    for _ in range(1000):  # long violation
        st, lam = pid_update(cfg, st, 1.0)
    assert st["integral"] <= cfg.integral_max == 3.0
    # after the violation ends, lambda falls promptly (bounded integral), not after 1000 steps
    steps = 0
    while lam > 0.0:
        st, lam = pid_update(cfg, st, 0.0)
        steps += 1
        assert steps <= 40
    for _ in range(1000):  # long satisfaction: integral never goes negative
        st, lam = pid_update(cfg, st, 0.0)
    assert st["integral"] == 0.0
    st, lam = pid_update(cfg, st, 0.2)  # a new violation acts immediately
    assert lam > 0.0


def test_pid_derivative_only_pushes_up_on_rising_violation():
    cfg = pid_config({"target": 0.1, "kp": 0.0, "ki": 0.0, "kd": 2.0})
    st = pid_init(cfg)
    st, lam = pid_update(cfg, st, 0.1)
    st, lam = pid_update(cfg, st, 0.3)  # rising by 0.2
    assert lam == pytest.approx(0.4)
    st, lam = pid_update(cfg, st, 0.2)  # falling: no negative push
    assert lam == 0.0


def test_pid_lower_sense():
    cfg = pid_config({"target": 0.8, "kp": 1.0, "ki": 0.0, "sense": "lower"})
    st = pid_init(cfg)
    st, lam = pid_update(cfg, st, 0.5)  # safe_rate 0.5 below 0.8: violated
    assert lam == pytest.approx(0.3)
    st, lam = pid_update(cfg, st, 0.9)
    assert lam == 0.0


@pytest.mark.parametrize("bad", [NAN, math.inf, -math.inf, None, "x"])
def test_pid_non_finite_measurement_leaves_state_unchanged(bad):
    cfg = pid_config({"target": 0.1, "ki": 0.5})
    st = pid_init(cfg)
    st, lam0 = pid_update(cfg, st, 0.5)
    st2, lam = pid_update(cfg, st, bad)
    assert lam == lam0
    assert st2["skipped"] == 1 and st2["last_nonfinite"] is True
    for k in ("integral", "smoothed", "lam", "steps"):
        assert st2[k] == st[k]
    st3, _ = pid_update(cfg, st2, 0.5)
    assert st3["last_nonfinite"] is False


@pytest.mark.parametrize(
    "table, key",
    [
        ({}, "target"), ({"target": "x"}, "target"), ({"target": NAN}, "target"),
        ({"target": 0.1, "kp": -1}, "kp"), ({"target": 0.1, "lam_max": 0}, "lam_max"),
        ({"target": 0.1, "ema_alpha": 0}, "ema_alpha"), ({"target": 0.1, "ema_alpha": 2}, "ema_alpha"),
        ({"target": 0.1, "lam_init": 20, "lam_max": 10}, "lam_init"),
        ({"target": 0.1, "sense": "both"}, "sense"), ({"target": 0.1, "kpp": 1}, "kpp"),
        ({"target": 0.1, "ki": True}, "ki"),
    ],
)
def test_pid_config_errors(table, key):
    with pytest.raises(ControllerConfigError) as info:
        pid_config(table)
    assert info.value.key == key
    assert isinstance(info.value, ValueError)
