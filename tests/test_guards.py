"""curriculum.guards: patience, check_every, cooldown, min_dwell, hysteresis, config errors."""

import json
import math

import pytest

from curriculum.guards import GuardConfigError, GuardResult, compile_guard, history_capacity
from curriculum.windows import MetricHistory

NAN = math.nan
METRICS = {"reward_mean", "reward_range", "zero_spread_frac", "top_reward_rate", "refusal_rate", "kl",
           "groups_flat", "groups_spread", "groups_top", "groups_saturated"}


def drive(guard, values, metric="reward_mean", functions=None, history=None, phase="medium"):
    """Push one value per step, update the guard each step; return the results."""
    h = history or MetricHistory(max(1, history_capacity([guard])))
    if history is None:
        h.begin_phase(phase)
    state = guard.init_state()
    out = []
    for v in values:
        h.push({metric: v} if not isinstance(v, dict) else v)
        state, res = guard.update(state, h, functions or {})
        json.dumps(state, allow_nan=False)  # state is strict JSON at every step
        json.dumps(res.evidence, allow_nan=False)
        out.append(res)
    return out, state


def fired_at(results):
    return [i + 1 for i, r in enumerate(results) if r.fired]


def test_fires_once_when_condition_holds_and_stays_active():
    g = compile_guard("g", {"when": "reward_mean > 10"}, METRICS)
    res, st = drive(g, [0, 20, 20, 20])
    assert fired_at(res) == [2]
    assert [r.active for r in res] == [False, True, True, True]
    assert [r.satisfied for r in res] == [False, True, True, True]
    assert st["fires"] == 1 and st["fired_at"] == 2


def test_patience_needs_consecutive_satisfied_checks():
    g = compile_guard("g", {"when": "reward_mean > 10", "patience": 3}, METRICS)
    res, _ = drive(g, [20, 20, 0, 20, 20, 20, 20])
    assert fired_at(res) == [6]
    assert res[5].evidence["consecutive"] == 3 and res[5].evidence["patience"] == 3
    assert res[2].evidence["consecutive"] == 0


def test_unknown_resets_patience_and_never_fires():
    g = compile_guard("g", {"when": "reward_mean > 10", "patience": 2}, METRICS)
    res, _ = drive(g, [20, NAN, 20, NAN, 20, 20])
    assert fired_at(res) == [6]
    assert res[1].satisfied is None and res[1].nonfinite_terms == ["reward_mean"]
    assert res[1].evidence["terms"] == {"reward_mean": None}  # JSON-safe evidence
    res, _ = drive(g, [NAN] * 10)
    assert fired_at(res) == [] and all(r.satisfied is None for r in res)


def test_not_of_nan_does_not_fire():
    g = compile_guard("g", {"when": "not (reward_mean < 5)"}, METRICS)
    res, _ = drive(g, [NAN, NAN, 10])
    assert fired_at(res) == [3]


def test_leaves_when_condition_stops_without_until_and_can_fire_again():
    g = compile_guard("g", {"when": "reward_mean > 10"}, METRICS)
    res, st = drive(g, [20, 20, 0, 0, 20])
    assert fired_at(res) == [1, 5]
    assert [r.active for r in res] == [True, True, False, False, True]
    assert st["fires"] == 2


def test_unknown_does_not_make_an_active_guard_leave():
    g = compile_guard("g", {"when": "reward_mean > 10"}, METRICS)
    res, _ = drive(g, [20, NAN, NAN, 0])
    assert [r.active for r in res] == [True, True, True, False]


def test_hysteresis_with_until():
    g = compile_guard("g", {"when": "reward_mean > 10", "until": "reward_mean < 2"}, METRICS)
    res, _ = drive(g, [20, 5, 5, 1, 5, 20])
    # active from step 1 until reward_mean < 2 (step 4); 5 does not re-enter, 20 does
    assert [r.active for r in res] == [True, True, True, False, False, True]
    assert fired_at(res) == [1, 6]
    assert res[1].evidence["until_satisfied"] is False
    assert res[3].evidence["until_satisfied"] is True


def test_until_unknown_keeps_active():
    g = compile_guard("g", {"when": "reward_mean > 10", "until": "reward_mean < 2"}, METRICS)
    res, _ = drive(g, [20, NAN, NAN])
    assert all(r.active for r in res)


def test_check_every():
    g = compile_guard("g", {"when": "reward_mean > 10", "check_every": 5}, METRICS)
    res, _ = drive(g, [20] * 12)
    assert [i + 1 for i, r in enumerate(res) if r.checked] == [5, 10]
    assert fired_at(res) == [5]
    assert res[0].evidence["skipped"] == "check_every"
    assert res[0].satisfied is None and not res[0].fired


def test_patience_counts_checks_not_steps():
    g = compile_guard("g", {"when": "reward_mean > 10", "check_every": 3, "patience": 2}, METRICS)
    res, _ = drive(g, [20] * 9)
    assert fired_at(res) == [6]


def test_min_dwell():
    g = compile_guard("g", {"when": "reward_mean > 10", "min_dwell": 4}, METRICS)
    res, _ = drive(g, [20] * 6)
    assert fired_at(res) == [4]
    assert [r.evidence.get("skipped") for r in res[:3]] == ["min_dwell"] * 3


def test_cooldown_after_phase_start_and_after_fire():
    g = compile_guard("g", {"when": "reward_mean > 10", "cooldown": 3}, METRICS)
    vals = [20, 20, 20, 20, 0, 0, 0, 20, 20, 20]
    res, _ = drive(g, vals)
    # steps 1-3: phase-start cooldown; fires at 4; steps 5-7 cooldown (no leave check either);
    # step 8 checks: still 20 > 10 -> stays active (never left), no second fire
    assert [i + 1 for i, r in enumerate(res) if r.checked] == [4, 8, 9, 10]
    assert fired_at(res) == [4]
    res, _ = drive(g, [20, 20, 20, 20, 0, 0, 0, 0, 20, 20, 20, 20, 20])
    # leaves at step 8 (first check after cooldown), fires again at 9
    assert fired_at(res) == [4, 9]


def test_state_resets_on_new_phase():
    g = compile_guard("g", {"when": "reward_mean > 10", "patience": 2}, METRICS)
    h = MetricHistory(4)
    h.begin_phase("soft")
    st = g.init_state()
    h.push({"reward_mean": 20.0})
    st, r = g.update(st, h, {})
    assert st["consecutive"] == 1
    h.begin_phase("medium")
    h.push({"reward_mean": 20.0})
    st, r = g.update(st, h, {})
    assert st["consecutive"] == 1 and st["phase"] == "medium" and not r.fired


def test_update_is_pure():
    g = compile_guard("g", {"when": "reward_mean > 10", "patience": 2}, METRICS)
    h = MetricHistory(4)
    h.begin_phase("a")
    h.push({"reward_mean": 20.0})
    st0 = g.init_state()
    snapshot = json.dumps(st0)
    st1, r1 = g.update(st0, h, {})
    assert json.dumps(st0) == snapshot
    st1b, r1b = g.update(st0, h, {})
    assert st1 == st1b and r1 == r1b


def test_same_step_is_not_checked_twice():
    g = compile_guard("g", {"when": "reward_mean > 10", "patience": 2}, METRICS)
    h = MetricHistory(4)
    h.begin_phase("a")
    h.push({"reward_mean": 20.0})
    st = g.init_state()
    st, r = g.update(st, h, {})
    st, r = g.update(st, h, {})
    assert not r.checked and r.evidence["skipped"] == "already_checked" and not r.fired


def test_evidence_carries_terms():
    g = compile_guard("g", {"when": "mean(reward_mean, 3) > 10 and kl < 1"}, METRICS)
    res, _ = drive(g, [{"reward_mean": 12.0, "kl": 0.5}] * 3)
    ev = res[-1].evidence
    assert ev["terms"] == {"mean(reward_mean, 3)": 12.0, "kl": 0.5}
    assert ev["satisfied"] is True


def test_result_is_frozen():
    r = GuardResult(True, True, True, True, {}, [])
    with pytest.raises(Exception):
        r.fired = False  # type: ignore[misc]


def test_windows_needed():
    g = compile_guard("g", {"when": "mean(reward_mean, 50) > 1", "until": "max(reward_mean, 80) < 0"}, METRICS)
    assert g.windows_needed() == {"reward_mean": 80}
    c = compile_guard("c", {"type": "collapse", "baseline_window": 30}, METRICS)
    assert c.windows_needed() == {s: 30 for s in ("groups_flat", "groups_spread", "groups_top", "groups_saturated", "reward_mean")}
    assert history_capacity([g, c]) == 80


# ---------------------------------------------------------------------------- custom


def test_custom_guard_calls_function_with_args():
    seen = []

    def low_range(view, metric, threshold):
        seen.append((metric, threshold))
        w = view.window(metric, 3)
        return len(w) == 3 and float(w.max()) < threshold

    g = compile_guard("g", {"type": "custom", "function": "low_range", "args": ["reward_range", 5],
                            "windows": {"reward_range": 3}}, METRICS, {"low_range": low_range})
    assert g.windows_needed() == {"reward_range": 3}
    res, _ = drive(g, [1.0, 1.0, 1.0, 9.0], metric="reward_range", functions={"low_range": low_range})
    assert fired_at(res) == [3]
    assert seen[0] == ("reward_range", 5.0)


def test_custom_function_that_raises_does_not_crash():
    def boom(view):
        raise ValueError("bad input")

    g = compile_guard("g", {"type": "custom", "function": "boom"}, METRICS, {"boom": boom})
    res, _ = drive(g, [1.0, 2.0], functions={"boom": boom})
    assert all(r.checked and r.satisfied is None and not r.fired for r in res)
    assert "ValueError: bad input" in json.dumps(res[0].evidence)


def test_custom_function_in_expression_that_raises_does_not_crash():
    def boom(view):
        raise ZeroDivisionError("x")

    g = compile_guard("g", {"when": "boom() or reward_mean > 100"}, METRICS, {"boom": boom})
    res, _ = drive(g, [1.0], functions={"boom": boom})
    assert res[0].satisfied is None and "ZeroDivisionError: x" in res[0].evidence["errors"]["boom()"]


def test_custom_function_returning_nan_is_unknown():
    g = compile_guard("g", {"type": "custom", "function": "f"}, METRICS, {"f"})
    res, _ = drive(g, [1.0], functions={"f": lambda view: NAN})
    assert res[0].satisfied is None


# ---------------------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    "table, key, fragment",
    [
        ({}, "when", "required"),
        ({"when": "reward_mean > 1", "patince": 2}, "patince", "did you mean 'patience'?"),
        ({"when": "reward_mean > 1", "false_alarm_rate": 2}, "false_alarm_rate", 'type = "collapse"'),
        ({"when": 5}, "when", "expression string"),
        ({"when": "  "}, "when", "empty"),
        ({"when": "mean(reward_mena, 5) > 1"}, "when", "did you mean 'reward_mean'?"),
        ({"when": "reward_mean > 1", "until": "reward_mean >"}, "until", "at column"),
        ({"when": "reward_mean > 1", "patience": 0}, "patience", ">= 1"),
        ({"when": "reward_mean > 1", "patience": 1.5}, "patience", "integer"),
        ({"when": "reward_mean > 1", "patience": True}, "patience", "integer"),
        ({"when": "reward_mean > 1", "check_every": 0}, "check_every", ">= 1"),
        ({"when": "reward_mean > 1", "cooldown": -1}, "cooldown", ">= 0"),
        ({"when": "reward_mean > 1", "min_dwell": "3"}, "min_dwell", "integer"),
        ({"when": "reward_mean > 1", "description": 3}, "description", "string"),
        ({"type": "colapse"}, "type", "did you mean 'collapse'?"),
        ({"type": "collapse", "h": 12}, "h", "false_alarm_rate"),
        ({"type": "collapse", "signals": ["reward_range"]}, "signals", "replaced by a per-group test"),
        ({"type": "collapse", "false_alarm_rate": 0}, "false_alarm_rate", "> 0"),
        ({"type": "collapse", "false_alarm_rate": "low"}, "false_alarm_rate", "number"),
        ({"type": "collapse", "arl": 1e4, "false_alarm_rate": 1e-4}, "arl", "either"),
        ({"type": "collapse", "min_collapse": 1.0}, "min_collapse", "< 1"),
        ({"type": "collapse", "baseline": "first"}, "baseline", "previous_phase"),
        ({"type": "collapse", "baseline_window": 10**9}, "baseline_window", "between"),
        ({"type": "collapse", "veto": "yes"}, "veto", "true or false"),
        ({"type": "collapse", "warmpu": 5}, "warmpu", "did you mean 'warmup'?"),
        ({"type": "custom"}, "function", "required"),
        ({"type": "custom", "function": "nope"}, "function", "no guard function named 'nope'"),
        ({"type": "custom", "function": "fn", "args": "x"}, "args", "list"),
        ({"type": "custom", "function": "fn", "args": [[1]]}, "args", "numbers or strings"),
        ({"type": "custom", "function": "fn", "windows": {"nope": 3}}, "windows", "unknown metric"),
        ({"type": "custom", "function": "fn", "windows": {"kl": 0}}, "windows", "positive integer"),
    ],
)
def test_config_errors_name_the_key(table, key, fragment):
    with pytest.raises(GuardConfigError) as info:
        compile_guard("myguard", table, METRICS, {"fn"})
    assert info.value.key == key
    assert fragment in str(info.value)
    assert "myguard" in str(info.value)


def test_custom_args_checked_against_signature():
    def two(view, a, b):
        return True

    with pytest.raises(GuardConfigError) as info:
        compile_guard("g", {"type": "custom", "function": "two", "args": [1]}, METRICS, {"two": two})
    assert info.value.key == "args"


def test_collapse_needs_a_runner_that_counts_groups():
    with pytest.raises(GuardConfigError) as info:
        compile_guard("c", {"type": "collapse"}, {"reward_range", "zero_spread_frac", "reward_mean"})
    assert info.value.key == "type"
    assert "groups_flat" in str(info.value)


# ---------------------------------------------------------------------------- invariants

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.one_of(st.floats(-5, 25), st.just(NAN)), min_size=1, max_size=60),
    patience=st.integers(1, 4),
    check_every=st.integers(1, 4),
    cooldown=st.integers(0, 5),
    min_dwell=st.integers(0, 6),
    with_until=st.booleans(),
)
def test_guard_invariants(values, patience, check_every, cooldown, min_dwell, with_until):
    table = {"when": "reward_mean > 10", "patience": patience, "check_every": check_every,
             "cooldown": cooldown, "min_dwell": min_dwell}
    if with_until:
        table["until"] = "reward_mean < 0"
    g = compile_guard("g", table, METRICS)
    res, st_ = drive(g, values)
    last_fire = None
    prev_active = False
    for step, r in enumerate(res, start=1):
        if r.checked:
            assert step >= min_dwell and step % check_every == 0
            ref = 0 if last_fire is None else last_fire
            assert step - ref > cooldown
            v = values[step - 1]
            assert r.satisfied is (None if math.isnan(v) else v > 10)
        else:
            assert r.satisfied is None and not r.fired and r.active == prev_active
        if r.fired:
            assert r.checked and r.active and not prev_active and r.satisfied is True
            last_fire = step
        if r.active and not prev_active:
            assert r.fired  # becoming active is always reported as a fire
        prev_active = r.active
    assert st_["fires"] == sum(r.fired for r in res)
    assert st_["checks"] == sum(r.checked for r in res)


def test_expr_error_pickles():
    import pickle

    from curriculum.expr import ExprError, parse

    with pytest.raises(ExprError) as info:
        parse("a >")
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value) and again.position == info.value.position
