"""curriculum.controllers: the PID-Lagrangian penalty controller (the collapse detector's tests
are in tests/test_collapse.py)."""

import json
import math

import numpy as np
import pytest

from curriculum.controllers import ControllerConfigError, pid_config, pid_init, pid_update

NAN = math.nan


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
