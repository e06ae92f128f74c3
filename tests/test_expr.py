"""curriculum.expr: grammar, errors, checking, three-valued evaluation, injection safety."""

import math
import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curriculum import expr as ex
from curriculum.expr import ExprError, check, evaluate, parse, windows_needed
from curriculum.windows import MetricHistory

NAN, INF = math.nan, math.inf
METRICS = {"reward_mean", "reward_max", "reward_range", "reward_std", "zero_spread_frac", "kl", "a", "b"}


def view_with(current=None, previous=None, cap=100):
    h = MetricHistory(cap)
    if previous:
        h.begin_phase("soft")
        for row in previous:
            h.push(row)
    h.begin_phase("medium")
    for row in current or []:
        h.push(row)
    return h


def run(text, view, functions=None, fnames=()):
    node = parse(text)
    check(node, METRICS, set(fnames) | set(functions or {}))
    return evaluate(node, view, functions or {})


# ---------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("mean(reward_mean,50)>25", "mean(reward_mean, 50) > 25"),
        ("a + b * 2 > 1", "a + b * 2 > 1"),
        ("(a + b) * 2 > 1", "(a + b) * 2 > 1"),
        ("a - (b - 1) > 0", "a - (b - 1) > 0"),
        ("a - b - 1 > 0", "a - b - 1 > 0"),
        ("a / (b / 2) > 0", "a / (b / 2) > 0"),
        ("-a > -3", "-a > -3"),
        ("not a > 1 and b < 2 or kl >= 0.5", "not a > 1 and b < 2 or kl >= 0.5"),
        ("not (a > 1 and b < 2)", "not (a > 1 and b < 2)"),
        ("(a > 1 or b > 1) and kl > 0", "(a > 1 or b > 1) and kl > 0"),
        ("a > 1.5e-3", "a > 0.0015"),
        ('phase("soft",mean(a,5))>1', 'phase("soft", mean(a, 5)) > 1'),
        ("max(reward_max, 50) < 0.5 * prev(max(reward_max, 50))",
         "max(reward_max, 50) < 0.5 * prev(max(reward_max, 50))"),
    ],
)
def test_canonical_text_round_trips(text, canonical):
    node = parse(text)
    assert node.canonical == canonical
    assert parse(canonical) == node  # canonical text parses back to the same tree


def test_precedence_and_associativity():
    n = parse("a - b - 1 > 0")
    assert isinstance(n, ex.Compare)
    assert isinstance(n.left, ex.Binary) and n.left.op == "-" and isinstance(n.left.left, ex.Binary)
    n = parse("a > 1 or b > 1 and kl > 1")  # and binds tighter than or
    assert isinstance(n, ex.BoolOp) and n.op == "or" and isinstance(n.operands[1], ex.BoolOp)
    n = parse("not a > 1")  # not binds looser than comparison
    assert isinstance(n, ex.Unary) and isinstance(n.operand, ex.Compare)


def test_ast_nodes_are_frozen():
    n = parse("a > 1")
    with pytest.raises(Exception):
        n.op = "<"  # type: ignore[misc]


@pytest.mark.parametrize(
    "text, column, fragment",
    [
        ("mean(reward_mean, 50) > ", 25, "expected a number"),
        ("(a > 1", 7, "expected ')'"),
        ("a > 1)", 6, "no matching '('"),
        ("a < b < c", 7, "cannot be chained"),
        ("a >", 4, "unexpected end of expression"),
        ("a = 1", 3, "did you mean '=='"),
        ("a > 1 && b > 1", 7, "use 'and'"),
        ("a ! b", 3, "use 'not'"),
        ("mean(a, 5", 10, "',' or ')'"),
        ("", 1, "empty expression"),
        ('"x" > 1', 1, "only allowed as function arguments"),
        ("1.2.3 > 1", 1, "malformed number"),
        ("a > 1e", 6, "exponent"),
        ("a > 1e999", 5, "out of range"),
        ('f("abc) > 1', 3, "unterminated string"),
        ("+a > 1", 1, "unary '+'"),
    ],
)
def test_parse_errors_are_one_line_plus_caret(text, column, fragment):
    with pytest.raises(ExprError) as info:
        parse(text)
    err = info.value
    lines = str(err).split("\n")
    assert f"at column {column}" in lines[0]
    assert fragment in lines[0]
    assert err.position == column - 1
    if text:
        assert len(lines) == 3
        assert lines[1] == "  " + text
        assert lines[2].index("^") == err.position + 2


def test_unexpected_token_names_the_token_and_what_was_expected():
    with pytest.raises(ExprError) as info:
        parse("mean(a, 5) > 1 )")
    assert str(info.value).startswith("unexpected ')' at column 16")
    with pytest.raises(ExprError) as info:
        parse("a > > 1")
    assert "unexpected '>' at column 5; expected" in str(info.value)


# ---------------------------------------------------------------------------- checking


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("mean(reward_rnage, 5) > 1", "did you mean 'reward_range'?"),
        ("reward_men > 1", "did you mean 'reward_mean'?"),
        ("mena(a, 5) > 1", "did you mean 'mean'?"),
        ("nosuchfn(a) > 1", "unknown function 'nosuchfn'"),
        ("mean(a) > 1", "mean() got 1 argument"),
        ("mean(a, 5, 6) > 1", "mean() got 3 arguments"),
        ("mean(a, 0) > 1", "positive integer literal"),
        ("mean(a, 2.5) > 1", "positive integer literal"),
        ("mean(a, 5.0) > 1", "positive integer literal"),
        ("mean(a, b) > 1", "positive integer literal"),
        ("mean(a, -3) > 1", "positive integer literal"),
        ("mean(a, 99999999) > 1", "too large"),
        ("quantile(a, 1.5, 10) > 1", "[0, 1]"),
        ("quantile(a, 10) > 1", "quantile() got 2 arguments"),
        ("ema(a, 0) > 1", "(0, 1]"),
        ("ema(a, 1.5, 10) > 1", "(0, 1]"),
        ("mean(a + 1, 5) > 1", "must be a metric name"),
        ('mean("a", 5) > 1', "must be a metric name"),
        ("mean(a, 5)", "must be true/false"),
        ("a + 1", "must be true/false"),
        ("(a > 1) + 1 > 2", "needs numbers"),
        ("(a > 1) < (b > 1)", "compares numbers"),
        ("a and b > 1", "true/false operands"),
        ("not a", "true/false operand"),
        ("prev(a + 1) > 0", "statistic call or a metric name"),
        ("prev(prev(mean(a, 5))) > 0", "statistic call or a metric name"),
        ("phase(a, mean(a, 5)) > 0", "phase name in double quotes"),
        ('phase("", mean(a, 5)) > 0', "phase name in double quotes"),
        ("prev(mean(a, 5), 3) > 0", "prev() got 2 arguments"),
        ("abs(a > 1) > 0", "abs() needs a number"),
        ("myfn(a + 1) > 0", "numbers, strings or metric names"),
        ("myfn(nosuch) > 0", "unknown metric 'nosuch'"),
    ],
)
def test_check_errors(text, fragment):
    with pytest.raises(ExprError) as info:
        check(parse(text), METRICS, {"myfn"})
    assert fragment in str(info.value)
    assert "at column" in str(info.value).split("\n")[0]


def test_check_accepts_valid_expressions():
    for text in [
        "mean(reward_mean, 50) > 25 and std(reward_mean, 50) < 4",
        "max(reward_max, 50) < 0.5 * prev(max(reward_max, 50))",
        'phase("soft", mean(reward_range, 50)) - mean(reward_range, 20) > 10',
        "quantile(a, 0.9, 20) > 1 or median(a, 3) < 0 or slope(a, 10) < -0.1",
        "ema(a, 0.1) > 1 and ema(a, 0.5, 20) > 0 and last(a) > 0 and count(a) >= 10",
        "nonfinite(a, 20) == 0 and count(a, 20) == 20 and abs(slope(a, 20)) < 1",
        "prev(a) > 0",
        'myfn(a, 3, "x", -2)',
        "myfn(a) and a > 1",
        "myfn(a) * 2 > 1",
    ]:
        check(parse(text), METRICS, {"myfn"})


def test_check_uses_custom_signature_when_given_callables():
    def two(view, metric, n):
        return True

    check(parse("two(a, 3)"), METRICS, {"two": two})
    with pytest.raises(ExprError, match="bad arguments for custom function two"):
        check(parse("two(a)"), METRICS, {"two": two})


def test_builtin_names_cannot_be_shadowed_by_custom_functions():
    # a custom 'mean' is ignored: mean() keeps its statistic meaning and arity rules
    with pytest.raises(ExprError, match="mean\\(\\) got 1 argument"):
        check(parse("mean(a) > 1"), METRICS, {"mean"})


def test_windows_needed_takes_the_largest_window_per_metric():
    n = parse(
        "mean(a, 50) > 1 and max(a, 200) > 0 and quantile(b, 0.5, 30) > 0 "
        "and prev(std(kl, 400)) > 0 and ema(reward_mean, 0.1) > 0 and reward_max > 0 "
        "and ema(reward_std, 0.1, 70) > 0"
    )
    assert windows_needed(n) == {"a": 200, "b": 30, "kl": 400, "reward_mean": 1, "reward_max": 1,
                                 "reward_std": 70}


def test_helpers_report_phases_and_functions():
    n = parse('phase("soft", mean(a, 5)) > myfn(b) and prev(a) > 0')
    assert ex.phases_referenced(n) == {"soft"}
    assert ex.functions_referenced(n) == {"myfn"}
    assert ex.uses_previous_phase(n)


# ---------------------------------------------------------------------------- evaluation


def test_statistics_evaluate_over_windows_and_record_terms():
    v = view_with([{"a": float(i), "b": 1.0} for i in range(10)])
    ev = run("mean(a, 4) > 7 and max(a, 10) == 9 and b > 0", v)
    assert ev.value is True and ev.satisfied is True
    assert ev.terms == {"mean(a, 4)": 7.5, "max(a, 10)": 9.0, "b": 1.0}
    assert ev.nonfinite_terms == []
    ev = run("slope(a, 10) > 0.99 and quantile(a, 0.5, 3) == 8 and count(a, 5) == 5", v)
    assert ev.value is True


def test_prev_and_named_phase():
    v = view_with([{"reward_max": 10.0}] * 5, previous=[{"reward_max": 36.0}] * 5)
    ev = run("max(reward_max, 50) < 0.5 * prev(max(reward_max, 50))", v)
    assert ev.value is True
    assert ev.terms == {"max(reward_max, 50)": 10.0, "prev(max(reward_max, 50))": 36.0}
    ev = run('phase("soft", mean(reward_max, 3)) == 36 and prev(reward_max) == 36', v)
    assert ev.value is True


def test_prev_without_previous_phase_is_unknown_not_true():
    v = view_with([{"a": 1.0}])
    ev = run("mean(a, 5) < prev(mean(a, 5))", v)
    assert ev.value is False and ev.satisfied is None
    assert ev.nonfinite_terms == ["prev(mean(a, 5))"]
    ev = run("not (mean(a, 5) < prev(mean(a, 5)))", v)
    assert ev.value is False and ev.satisfied is None


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
@pytest.mark.parametrize("op", ["<", "<=", ">", ">=", "==", "!="])
def test_comparison_with_non_finite_operand_never_satisfies(bad, op):
    v = view_with([{"a": bad}])
    ev = run(f"a {op} 0", v)
    assert ev.value is False and ev.satisfied is None and "a" in ev.nonfinite_terms
    ev = run(f"not (a {op} 0)", v)
    assert ev.value is False and ev.satisfied is None


def test_kleene_logic():
    v = view_with([{"a": NAN, "b": 1.0}])
    U, T, F = "a > 0", "b > 0", "b < 0"
    cases = {
        f"{U} and {T}": None, f"{U} and {F}": False, f"{T} and {U}": None, f"{F} and {U}": False,
        f"{U} or {T}": True, f"{U} or {F}": None, f"{T} or {U}": True,
        f"not ({U} or {F})": None, f"not ({U} and {F})": True, f"not ({U} or {T})": False,
    }
    for text, want in cases.items():
        ev = run(text, v)
        assert ev.satisfied is want, text
        assert ev.value is (want is True), text
        assert "a" in ev.nonfinite_terms  # evidence is complete: no short-circuit


def test_statistics_skip_nan_in_window_but_no_data_is_unknown():
    v = view_with([{"a": 1.0}, {"a": NAN}, {"a": 3.0}])
    assert run("mean(a, 3) == 2", v).value is True
    assert run("nonfinite(a, 3) == 1", v).value is True
    assert run("last(a) == 3", v).value is True
    empty = view_with([])
    ev = run("mean(a, 3) > 0 or mean(a, 3) <= 0", empty)
    assert ev.satisfied is None and ev.nonfinite_terms == ["mean(a, 3)"]


def test_division_by_zero_is_unknown_not_an_exception():
    v = view_with([{"a": 1.0, "b": 0.0}])
    ev = run("a / b > 1", v)
    assert ev.satisfied is None and ev.value is False
    assert "a / b" in ev.nonfinite_terms
    ev = run("0 / b < 1", v)
    assert ev.satisfied is None
    ev = run("a / (b - b) > 1 or a > 0", v)
    assert ev.satisfied is True


def test_numeric_expression_evaluates_to_float():
    v = view_with([{"a": 2.0}])
    node = parse("a * 3 + 1")  # not a valid guard (check rejects it) but evaluable
    ev = evaluate(node, v, {})
    assert ev.value == 7.0 and ev.satisfied is None


def test_custom_functions_receive_view_and_metric_names():
    calls = []

    def stalled(view, metric, n, label):
        calls.append((metric, n, label))
        w = view.window(metric, int(n))
        return float(w.max() - w.min()) < 1.0

    v = view_with([{"a": 5.0}] * 6)
    ev = run('stalled(a, 5, "x")', v, {"stalled": stalled})
    assert ev.value is True
    assert calls == [("a", 5.0, "x")]
    assert ev.terms == {'stalled(a, 5, "x")': True}


def test_custom_function_that_raises_is_unknown_with_error_text():
    def boom(view):
        raise RuntimeError("kaput")

    v = view_with([{"a": 1.0}])
    ev = run("boom() or a > 5", v, {"boom": boom})
    assert ev.satisfied is None and ev.value is False
    assert "RuntimeError: kaput" in ev.errors["boom()"]
    ev = run("boom() or a > 0", v, {"boom": boom})
    assert ev.satisfied is True  # Kleene: unknown or True


def test_custom_function_bad_return_or_nan_is_unknown():
    v = view_with([{"a": 1.0}])
    assert run("f()", v, {"f": lambda view: "yes"}).satisfied is None
    assert run("f()", v, {"f": lambda view: NAN}).satisfied is None
    assert run("f() > 0", v, {"f": lambda view: np.float64(2.0)}).satisfied is True
    assert run("f()", v, {"f": lambda view: np.bool_(True)}).satisfied is True
    # registered at check time but missing at evaluation: unknown, not a crash
    node = parse("g()")
    check(node, METRICS, {"g"})
    assert evaluate(node, v, {}).satisfied is None


# ---------------------------------------------------------------------------- safety

INJECTIONS = [
    "__import__('os').system('touch /tmp/pwned')",
    '__import__("os").system("touch /tmp/pwned")',
    "__import__(\"os\")",
    "().__class__.__mro__",
    "().__class__.__bases__[0].__subclasses__()",
    "open('/etc/passwd')",
    'open("/etc/passwd").read()',
    "lambda: 1",
    "(lambda: 1)()",
    "x if y else z",
    "[i for i in ()]",
    "{1: 2}",
    "reward_mean; import os",
    "reward_mean\nimport os",
    "import os",
    "`ls`",
    "$(touch /tmp/pwned)",
    'f"{__import__(\'os\').system(\'touch /tmp/pwned\')}"',
    "f'{1}'",
    "a.b",
    "reward_mean.__class__",
    "a[0]",
    "a[::-1]",
    "a ** 2 > 1",
    "a % 2",
    "a @ b",
    "a := 1",
    "a if a else a",
    "exec('x')",
    "eval('1')",
    "compile('1', 'x', 'eval')",
    "getattr(a, 'b')",
    "globals()",
    "__builtins__",
    "print(1)",
    "a == 1 #comment",
    "\\x41 > 1",
    "a > 1 \u2028",
    "r\u00e9ward > 1",
]


@pytest.mark.parametrize("text", INJECTIONS)
def test_injection_attempts_get_expr_error_and_nothing_runs(text, tmp_path):
    marker = "/tmp/pwned"
    existed = os.path.exists(marker)
    with pytest.raises(ExprError):
        node = parse(text)
        check(node, METRICS, ())
        evaluate(node, view_with([{"a": 1.0}]), {})
    if not existed:
        assert not os.path.exists(marker)


def test_very_long_input_is_rejected_cleanly():
    with pytest.raises(ExprError, match="too long"):
        parse("a > 1 and " * 1000 + "a > 1")


@pytest.mark.parametrize(
    "text",
    [
        "(" * 5000 + "a" + ")" * 5000,
        "(" * 100 + "a > 1" + ")" * 100,
        "not " * 300 + "a > 1",
        "-" * 300 + "a > 1",
        "a" + " + a" * 200 + " > 1",
        "mean(" * 100 + "a" + ", 5)" * 100 + " > 1",
    ],
)
def test_deep_nesting_is_an_expr_error_not_recursion_error(text):
    with pytest.raises(ExprError) as info:
        parse(text)
    assert "too long" in str(info.value) or "nested too deeply" in str(info.value)


def test_reasonable_nesting_is_fine():
    text = "(" * 20 + "a > 1" + ")" * 20
    check(parse(text), METRICS, ())


def test_no_dynamic_code_execution_in_the_guard_layer():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / "curriculum"
    banned = re.compile(r"(?<![\w.])(eval|exec|compile|__import__)\s*\(|literal_eval|^\s*(import|from)\s+(jax|ast)\b")
    for name in ("expr.py", "stats.py", "windows.py", "guards.py", "controllers.py", "registry.py"):
        for i, line in enumerate((root / name).read_text().splitlines(), 1):
            assert not banned.search(line), f"{name}:{i}: {line.strip()}"


def test_importing_the_guard_layer_does_not_import_jax():
    import subprocess

    code = (
        "import sys; import curriculum.expr, curriculum.guards, curriculum.controllers, "
        "curriculum.registry, curriculum.windows, curriculum.stats; "
        "assert 'jax' not in sys.modules, 'jax imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_random_text_only_ever_raises_expr_error(text):
    try:
        node = parse(text)
        check(node, METRICS, {"myfn"})
    except ExprError:
        return


_token = st.sampled_from(
    ["a", "b", "kl", "reward_mean", "(", ")", ",", "and", "or", "not", "<", "<=", ">", ">=",
     "==", "!=", "+", "-", "*", "/", "0", "1", "2.5", "1e3", '"soft"', "mean", "prev", "phase",
     "quantile", "ema", "0.5", "myfn", "abs", "count", "last", "nonfinite", "slope"]
)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_token, max_size=30))
def test_random_token_soup_parses_checks_and_evaluates_without_other_errors(tokens):
    text = " ".join(tokens)
    try:
        node = parse(text)
        check(node, METRICS, {"myfn"})
    except ExprError:
        return
    v = view_with([{"a": 1.0, "b": NAN, "kl": 0.0, "reward_mean": INF}] * 3,
                  previous=[{"a": 2.0}])
    ev = evaluate(node, v, {"myfn": lambda view, *args: 1.0})
    assert isinstance(ev.value, bool)
    assert parse(node.canonical) == node


def test_ema_without_window_uses_history_capacity_and_count():
    v = view_with([{"a": float(i)} for i in range(30)], cap=10)  # holds the last 10: 20..29
    ev = run("ema(a, 1) == 29 and count(a) == 10 and count(a, 3) == 3", v)
    assert ev.value is True
    want = 20.0
    for x in range(21, 30):
        want = 0.5 * x + 0.5 * want
    ev = run("ema(a, 0.5) > 0", v)
    assert ev.terms["ema(a, 0.5)"] == pytest.approx(want)


def test_bare_metric_is_latest_raw_value_but_last_skips_nan():
    v = view_with([{"a": 1.0}, {"a": NAN}])
    assert run("a > 0", v).satisfied is None
    assert run("last(a) > 0", v).satisfied is True


def test_error_has_no_caret_without_text():
    err = ExprError("boom", 3)
    assert str(err) == "boom at column 4"
