"""Spec fuzzing: thousands of mutated and malformed specs and guard expressions.

The contract a user relies on: `load_spec` (and `curriculum validate`) either accepts a spec
that is really valid, or raises SpecError whose every problem names the file and a key path.
No other exception type escapes, and nothing invalid is accepted.

Mutations start from examples/dipg_simulated.toml: structural ones on the parsed tables (drop,
rename, retype, insert, nest), textual ones on the TOML source (delete/duplicate lines, random
text and unicode, nan/inf/huge literals, deep nesting, invalid UTF-8), `--set` overrides and
profiles, targeted invalid edits that must be refused, and guard expressions from a grammar,
from random text and from code-injection attempts.
"""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomli
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from curriculum.errors import SpecError
from curriculum.spec import END, load_spec
from curriculum.state import dumps
from rewards import REWARD_KEYS
import runners

ROOT = Path(__file__).resolve().parents[1]
BASE_PATH = ROOT / "examples" / "dipg_simulated.toml"
BASE_TEXT = BASE_PATH.read_text(encoding="utf-8")
BASE = tomli.loads(BASE_TEXT)
FNAME = "fuzzed/dipg.toml"  # the name given to load_spec for table-level mutations

SECTIONS = {"run", "reward", "runner", "model", "data", "presets", "phases", "transitions", "guards", "profiles"}
METRICS = sorted(runners.ALL_METRICS & set(__import__("runners.simulated", fromlist=["x"]).METRIC_NAMES))
PHASES = list(BASE["phases"])

FUZZ = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))


def fuzz(n: int) -> settings:
    return settings(FUZZ, max_examples=n)

INJECTIONS = [
    "__import__('os').system('touch /tmp/pwned')",
    '__import__("os").system("touch /tmp/pwned")',
    "exec(\"import os\")",
    "eval(\"1+1\") > 0",
    "open(\"/etc/passwd\")",
    "reward_mean.__class__.__mro__ > 1",
    "().__class__.__bases__[0].__subclasses__()",
    "lambda: 1",
    "[x for x in (1,)]",
    "reward_mean if 1 else 2",
    "reward_mean ** 2 > 1",
    "reward_mean > 1; import os",
    "reward_mean > 1\nimport os",
    "reward_mean > 1 && safe_rate > 0",
    "reward_mean > 1 || 1",
    "{'a': 1}",
    "`id`",
    "$(id) > 1",
    "${HOME} > 1",
    "{{7*7}} > 1",
    "globals()['x'] > 1",
    "reward_mean @ 2 > 1",
    "a := 1",
    "reward_mean > 1 # comment",
    "'; DROP TABLE runs; --",
    "\x00",
    "reward_mean\u202e > 1",
    "print(1)",
    "getattr(reward_mean, \"real\") > 0",
    "mean(reward_mean, 10) > 1 and __builtins__ > 0",
]


# --------------------------------------------------------------------------- the oracle


def _key_path_ok(key: str, top_keys: set[str]) -> bool:
    first = key.split(".")[0]
    return first in SECTIONS or first in top_keys or key == "(top level)"


def assert_clear_error(err: SpecError, fname: str, top_keys: set[str] = frozenset(), allow_set: bool = False) -> None:
    """Every problem is one line(s) of text naming the file (or the --set item) and a key path."""
    assert err.problems, "a SpecError lists at least one problem"
    for m in err.problems:
        assert isinstance(m, str) and m.strip()
        assert "Traceback" not in m
        if allow_set and m.startswith("--set "):
            assert "=" in m or "key" in m, m
            continue
        assert m.startswith(fname), f"problem does not name the file {fname!r}: {m!r}"
        rest = m[len(fname):]
        if rest.startswith(": not valid TOML") or rest.startswith(": cannot read"):
            continue
        mo = re.match(r"^(?::\d+)?: ", rest)
        assert mo, f"problem names no key path: {m!r}"
        key = rest[mo.end():]
        if key.startswith('"'):  # a quoted first segment, TOML style
            first, _ = json.JSONDecoder().raw_decode(key)
            assert first in top_keys, f"key path {key!r} is not one of the spec's: {m!r}"
            continue
        mo = re.match(r"^(.+?)(?::| \(transition #)", key)
        assert mo, f"problem names no key path: {m!r}"
        assert _key_path_ok(mo.group(1), top_keys), f"key path {mo.group(1)!r} is not one of the spec's: {m!r}"


def assert_sound(spec) -> None:
    """What an accepted spec guarantees the engine (and a resume) can rely on."""
    m = spec.model
    phases = spec.phases
    assert phases and spec.start in phases
    run = m.run
    for name, val, lo in (("seed", run.seed, 0), ("chunk_steps", run.chunk_steps, 1),
                          ("checkpoint_every", run.checkpoint_every, 0), ("keep_checkpoints", run.keep_checkpoints, 1),
                          ("window", run.window, 0)):
        assert type(val) is int and val >= lo, (name, val)
    assert run.on_nonfinite in ("skip", "penalty", "stop_phase")
    assert m.runner.get("kind", "simulated") in runners.RUNNER_KINDS
    for pname, vals in spec.presets.items():
        assert set(vals) == set(REWARD_KEYS), pname
        assert all(type(v) is float and math.isfinite(v) for v in vals.values()), (pname, vals)
    for name, ph in phases.items():
        assert ph.kind in ("sft", "grpo", "eval")
        assert ph.max_steps is None or (type(ph.max_steps) is int and ph.max_steps >= 1), ph.max_steps
        assert type(ph.min_dwell) is int and ph.min_dwell >= 0
        assert ph.next is None or ph.next in phases or ph.next == END
        assert ph.preset is None or ph.preset in spec.presets
        if ph.kind == "grpo":
            assert ph.preset is not None
        for k, v in ph.penalties.items():
            assert k in REWARD_KEYS and type(v) is float and math.isfinite(v), (k, v)
        _, pen = spec.penalties_for(name)
        assert all(math.isfinite(v) for v in pen.values())
        has_exit = ph.max_steps is not None or ph.kind == "eval" or spec.transitions_from(name)
        assert has_exit, f"phase {name} has no way out"
    for t in spec.transitions:
        assert t.source in phases and t.dest in phases
        assert t.guard in spec.guards
        for ref in spec.guards[t.guard].phases_referenced():
            assert ref in phases, ref
    assert spec.window_capacity() >= 1
    # the run directory stores the resolved spec as JSON; resume must accept it again
    again = load_spec(spec.path, raw=json.loads(dumps(spec.raw)))
    assert list(again.phases) == list(phases)


def load_checked(raw, fname: str = FNAME, **kw):
    """load_spec on a table; returns the spec or None (rejected properly); anything else fails."""
    try:
        spec = load_spec(fname, raw=raw, **kw)
    except SpecError as e:
        top = set(raw) if isinstance(raw, dict) else set()
        for prof in (raw.get("profiles") or {}).values() if isinstance(raw.get("profiles"), dict) else ():
            top |= set(prof) if isinstance(prof, dict) else set()
        top |= {str(item).partition("=")[0].split(".")[0].strip() for item in kw.get("overrides") or []}
        assert_clear_error(e, fname, top, allow_set=bool(kw.get("overrides")))
        return None
    assert_sound(spec)
    return spec


def must_reject(raw, *needles: str, fname: str = FNAME, **kw) -> list[str]:
    with pytest.raises(SpecError) as ei:
        load_spec(fname, raw=raw, **kw)
    assert_clear_error(ei.value, fname, set(raw), allow_set=bool(kw.get("overrides")))
    text = "\n".join(ei.value.problems)
    for n in needles:
        assert n in text, f"{n!r} not named in:\n{text}"
    return ei.value.problems


def test_base_spec_is_sound():
    spec = load_spec(BASE_PATH)
    assert_sound(spec)
    assert load_checked(copy.deepcopy(BASE)) is not None


# --------------------------------------------------------------------------- structural mutations


def _paths(d, pre=()):
    if isinstance(d, dict):
        for k, v in d.items():
            yield pre + (k,)
            yield from _paths(v, pre + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield pre + (i,)
            yield from _paths(v, pre + (i,))


BASE_WITH_EXTRAS = copy.deepcopy(BASE)
BASE_WITH_EXTRAS["presets"] = {"gentle": {"base": "soft", "hallucination_penalty": -7.0}}
BASE_WITH_EXTRAS["phases"]["recovery"]["preset"] = "gentle"
BASE_WITH_EXTRAS["phases"]["medium"]["penalties"] = {"format_mismatch_penalty": -12.0}
BASE_WITH_EXTRAS["phases"]["medium"]["controller"] = {
    "type": "pid", "metric": "hallucination_rate", "target": 0.1, "kp": 1.0, "ki": 0.05, "lam_max": 1.0, "window": 10,
}
BASE_WITH_EXTRAS["phases"]["soft"]["eval"] = {"samples": 2, "preset": "soft"}
BASE_WITH_EXTRAS["transitions"].append({"from": "recovery", "to": "medium", "when": "mean(hallucination_rate, 20) < 0.01"})
ALL_PATHS = list(_paths(BASE_WITH_EXTRAS))

KNOWN_KEYS = sorted(
    {str(p[-1]) for p in ALL_PATHS if isinstance(p[-1], str)}
    | {"signals", "weights", "min_std", "baseline", "baseline_phase", "warmup", "k", "h", "until", "function",
       "args", "windows", "cooldown", "check_every", "base", "start", "default_profile", "on_nonfinite",
       "top_reward", "eval_preset", "num_items", "max_new_tokens", "greedy", "enabled", "trace", "step_seconds"}
)


def deep(depth: int, leaf) -> object:
    x = leaf
    for i in range(depth):
        x = {"k": x} if i % 2 else [x]
    return x


scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**63, -(2**63), 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324]),
    st.booleans(),
    st.text(max_size=20),
    st.sampled_from(INJECTIONS + PHASES + METRICS + ["end", "soft", "medium", "collapse", "strong", "pid", "expr",
                                                     "grpo", "sft", "eval", "simulated", "tunix", "replay", "stop_phase"]),
    st.none(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
) | st.builds(deep, st.integers(1, 300), scalars)
keys = st.sampled_from(KNOWN_KEYS) | st.text(min_size=0, max_size=12)

mutation = st.one_of(
    st.tuples(st.just("drop"), st.sampled_from(ALL_PATHS)),
    st.tuples(st.just("set"), st.sampled_from(ALL_PATHS), values),
    st.tuples(st.just("rename"), st.sampled_from(ALL_PATHS), keys),
    st.tuples(st.just("insert"), st.sampled_from(ALL_PATHS + [()]), keys, values),
)


def apply(raw, mut) -> None:
    op, path = mut[0], mut[1]
    node = raw
    try:
        for k in path[:-1] if op != "insert" else path:
            node = node[k]
    except (KeyError, IndexError, TypeError):
        return
    if op == "insert":
        if isinstance(node, dict):
            node[mut[2]] = copy.deepcopy(mut[3])
        elif isinstance(node, list):
            node.append(copy.deepcopy(mut[3]))
        return
    last = path[-1]
    if isinstance(node, dict) and last in node:
        if op == "drop":
            del node[last]
        elif op == "set":
            node[last] = copy.deepcopy(mut[2])
        elif op == "rename":
            node[mut[2]] = node.pop(last)
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        if op == "drop":
            node.pop(last)
        elif op == "set":
            node[last] = copy.deepcopy(mut[2])


@fuzz(1000)
@given(st.lists(mutation, min_size=1, max_size=4))
def test_structural_mutations_give_a_clear_error_or_a_sound_spec(muts):
    raw = copy.deepcopy(BASE_WITH_EXTRAS)
    for m in muts:
        apply(raw, m)
    load_checked(raw)


@fuzz(200)
@given(st.dictionaries(keys, values, max_size=4), st.sampled_from([None, "fast", "x"]))
def test_profiles_and_overrides_of_any_shape(profile_tbl, chosen):
    raw = copy.deepcopy(BASE)
    raw["profiles"] = {"fast": profile_tbl, "x": 3}
    raw["run"]["default_profile"] = chosen
    if chosen is None:
        del raw["run"]["default_profile"]
    load_checked(raw)


override_items = st.one_of(
    st.text(max_size=40),
    st.builds(lambda p, v: f"{p}={v}", st.sampled_from([".".join(map(str, p)) for p in ALL_PATHS] + ["", ".", "a..b", "phases."]),
              st.sampled_from(["nan", "inf", "-inf", "1e999", "-5", "0", "\"x\"", "[1, [2, [3]]]", "{a = 1}", "true",
                               "soft", "[" * 500 + "]" * 500, "__import__('os')", "\"\\u0000\"", "1979-05-27", ""])
              | st.text(max_size=20)),
)


@fuzz(400)
@given(st.lists(override_items, min_size=1, max_size=3))
def test_set_overrides_give_a_clear_error_or_a_sound_spec(items):
    load_checked(copy.deepcopy(BASE), overrides=items)


# --------------------------------------------------------------------------- targeted: must be refused

ident = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
not_a_number = st.one_of(st.text(max_size=10), st.booleans(), st.lists(st.integers(), max_size=2),
                         st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                         st.sampled_from([math.nan, math.inf, -math.inf, "-5", "1e3", True, None]))


@fuzz(150)
@given(st.sampled_from(PHASES), ident)
def test_renaming_a_referenced_phase_is_refused(old, new):
    assume(new not in PHASES and new != END)
    raw = copy.deepcopy(BASE)
    raw["phases"] = {(new if k == old else k): v for k, v in raw["phases"].items()}
    must_reject(raw, f"unknown phase '{old}'")


@fuzz(100)
@given(st.sampled_from(["strong", "collapse"]), ident)
def test_renaming_a_referenced_guard_is_refused(old, new):
    assume(new not in ("strong", "collapse"))
    raw = copy.deepcopy(BASE)
    raw["guards"][new] = raw["guards"].pop(old)
    i = 0 if old == "strong" else 1
    must_reject(raw, f"transitions.{i}.guard", f"unknown guard '{old}'")


@fuzz(100)
@given(ident)
def test_renaming_a_referenced_preset_is_refused(new):
    assume(new not in ("gentle", "soft", "medium"))
    raw = copy.deepcopy(BASE_WITH_EXTRAS)
    raw["presets"][new] = raw["presets"].pop("gentle")
    must_reject(raw, "phases.recovery.preset", "unknown preset 'gentle'")


@fuzz(200)
@given(st.sampled_from(PHASES), st.one_of(st.integers(max_value=0), not_a_number, st.floats(1.0, 1e6)))
def test_bad_max_steps_is_refused(phase, bad):
    assume(not (isinstance(bad, int) and not isinstance(bad, bool) and bad >= 1))
    raw = copy.deepcopy(BASE)
    raw["phases"][phase]["max_steps"] = bad
    if bad is None:
        del raw["phases"][phase]["max_steps"]  # TOML has no null: "no budget" -> still has guards? only soft
        if phase == "soft":
            load_checked(raw)  # soft leaves by its guard: no budget is valid
            return
        raw["transitions"] = [t for t in raw["transitions"] if t["from"] != phase]
        must_reject(raw, f"phases.{phase}", "no way out")
        return
    must_reject(raw, f"phases.{phase}.max_steps")


@fuzz(200)
@given(st.sampled_from(PHASES), st.sampled_from(REWARD_KEYS), not_a_number.filter(lambda v: v is not None))
def test_non_number_penalty_is_refused(phase, key, bad):
    raw = copy.deepcopy(BASE)
    raw["phases"][phase]["penalties"] = {key: bad}
    must_reject(raw, f"phases.{phase}.penalties")


@fuzz(100)
@given(st.sampled_from(REWARD_KEYS), not_a_number.filter(lambda v: v is not None))
def test_non_number_preset_value_is_refused(key, bad):
    raw = copy.deepcopy(BASE_WITH_EXTRAS)
    raw["presets"]["gentle"][key] = bad
    must_reject(raw, f"presets.gentle.{key}")


@fuzz(100)
@given(st.one_of(st.integers(max_value=-1), st.integers(min_value=2**63, max_value=2**80), not_a_number))
def test_bad_seed_is_refused(bad):
    raw = copy.deepcopy(BASE)
    raw["run"]["seed"] = bad
    if bad is None:
        return
    must_reject(raw, "run.seed")


@pytest.mark.parametrize(
    "edit,needle",
    [
        (lambda r: r["run"].__setitem__("start", "sotf"), "did you mean 'soft'?"),
        (lambda r: r["phases"]["medium"].__setitem__("next", "recovry"), "phases.medium.next"),
        (lambda r: r["phases"]["soft"].__setitem__("kind", "ppo"), "phases.soft.kind"),
        (lambda r: r["runner"].__setitem__("kind", "tunixx"), "runner.kind"),
        (lambda r: r["runner"].__setitem__("batch_size", "8"), "runner.batch_size"),
        (lambda r: r["runner"]["behaviour"]["soft"]["weights"].__setitem__("perfect", math.nan), "runner.behaviour.soft.weights"),
        (lambda r: r["runner"]["behaviour"]["soft"]["weights"].__setitem__("perfect", 1e308), "runner.behaviour.soft.weights"),
        (lambda r: r["runner"].__setitem__("step_seconds", math.inf), "runner.step_seconds"),
        (lambda r: r["run"].__setitem__("progress", "yes"), "run.progress"),
        (lambda r: r["run"].__setitem__("checkpoint_every", -1), "run.checkpoint_every"),
        (lambda r: r["run"].__setitem__("on_nonfinite", "ignore"), "run.on_nonfinite"),
        (lambda r: r.setdefault("reward", {}).__setitem__("top_reward", math.inf), "reward.top_reward"),
        (lambda r: r["run"].__setitem__("default_profile", ["x"]), "run.default_profile"),
        (lambda r: r["run"].__setitem__("default_profile", "fast"), "unknown profile 'fast'"),
        (lambda r: r["guards"]["strong"].__setitem__("type", ["collapse"]), "guards.strong.type"),
        (lambda r: r["guards"]["strong"].__setitem__("type", {"a": 1}), "guards.strong.type"),
        (lambda r: r["guards"]["collapse"].__setitem__("baseline_phase", "nosuch"), "unknown phase 'nosuch'"),
        (lambda r: r["guards"]["strong"].__setitem__("when", 'phase("sotf", mean(reward_mean, 10)) > 1'), "did you mean 'soft'?"),
        (lambda r: r["transitions"].append({"from": "recovery", "to": "soft", "when": 'prev(reward_mean) > 1 and phase("x", reward_mean) > 1'}), "transitions.2.when"),
        (lambda r: r["transitions"].append({"from": "recovery", "to": "soft"}), "give exactly one of"),
        (lambda r: r.__setitem__("phases", {}), "no phases declared"),
        (lambda r: r.__setitem__("phases", []), "phases"),
        (lambda r: r.__setitem__("transitions", {"from": "soft"}), "transitions"),
        (lambda r: (r["phases"]["recovery"].__setitem__("next", "end"),
                    r["phases"].__setitem__("orphan", {"kind": "grpo", "preset": "soft", "max_steps": 5})), "unreachable"),
    ],
)
def test_specific_invalid_edits_are_refused(edit, needle):
    raw = copy.deepcopy(BASE)
    edit(raw)
    must_reject(raw, needle)


# --------------------------------------------------------------------------- guard expressions

metric = st.sampled_from(METRICS)
window = st.integers(1, 500).map(str)
number = st.one_of(st.integers(0, 10**6).map(str), st.floats(0, 1e6, allow_nan=False).map(repr),
                   st.sampled_from(["0.5", "1e-3", "2.5E2", "0"]))


def stat_call():
    return st.one_of(
        st.builds(lambda f, m, n: f"{f}({m}, {n})", st.sampled_from(["mean", "min", "max", "std", "range", "median",
                                                                     "slope", "nonfinite", "count"]), metric, window),
        st.builds(lambda m, q, n: f"quantile({m}, {q}, {n})", metric, st.sampled_from(["0.1", "0.5", "0.9"]), window),
        st.builds(lambda m, a: f"ema({m}, {a})", metric, st.sampled_from(["0.1", "0.5", "0.9"])),
        st.builds(lambda m: f"last({m})", metric),
        st.builds(lambda m: f"count({m})", metric),
        metric,
    )


def num_expr():
    base = st.one_of(stat_call(), number,
                     stat_call().map(lambda s: f"prev({s})"),
                     st.builds(lambda p, s: f'phase("{p}", {s})', st.sampled_from(PHASES), stat_call()))
    return st.recursive(
        base,
        lambda inner: st.one_of(
            st.builds(lambda a, op, b: f"{a} {op} {b}", inner, st.sampled_from(["+", "-", "*", "/"]), inner),
            inner.map(lambda a: f"-{a}"),
            inner.map(lambda a: f"({a})"),
            inner.map(lambda a: f"abs({a})"),
        ),
        max_leaves=4,
    )


comparison = st.builds(lambda a, op, b: f"{a} {op} {b}", num_expr(), st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), num_expr())
bool_expr = st.recursive(
    comparison,
    lambda inner: st.one_of(
        st.builds(lambda a, op, b: f"{a} {op} {b}", inner, st.sampled_from(["and", "or"]), inner),
        inner.map(lambda a: f"not {a}"),
        inner.map(lambda a: f"({a})"),
    ),
    max_leaves=4,
)


def with_when(expr: str, where: str):
    raw = copy.deepcopy(BASE)
    if where == "guard":
        raw["guards"]["strong"]["when"] = expr
    else:
        raw["transitions"].append({"from": "recovery", "to": "medium", "when": expr})
    return raw


@fuzz(400)
@given(bool_expr, st.sampled_from(["guard", "inline"]))
def test_grammar_expressions_over_known_metrics_are_accepted(expr, where):
    spec = load_spec(FNAME, raw=with_when(expr, where))
    assert_sound(spec)
    gname = "strong" if where == "guard" else "recovery->medium"
    assert spec.guards[gname].when is not None


@fuzz(200)
@given(bool_expr, ident, st.sampled_from(["guard", "inline"]))
def test_expressions_with_an_unknown_metric_are_refused(expr, name, where):
    assume(name not in runners.ALL_METRICS and name not in ("and", "or", "not"))
    bad = f"({expr}) and mean({name}, 10) > 0" if len(name) % 2 else f"{name} > 1 or {expr}"
    key = "guards.strong.when" if where == "guard" else "transitions.2.when"
    must_reject(with_when(bad, where), key, f"'{name}'")


@fuzz(200)
@given(st.sampled_from(INJECTIONS), st.one_of(st.just(""), bool_expr), st.sampled_from(["guard", "inline"]))
def test_code_injection_and_python_syntax_are_refused(snippet, expr, where):
    bad = snippet if not expr else f"{expr} and {snippet}"
    key = "guards.strong.when" if where == "guard" else "transitions.2.when"
    must_reject(with_when(bad, where), key)


@fuzz(600)
@given(st.one_of(st.text(max_size=60),
                 st.builds(lambda e, i, t: e[:i] + t + e[i:], bool_expr, st.integers(0, 200), st.text(max_size=8))),
       st.sampled_from(["guard", "inline"]))
def test_random_text_expressions_never_escape(text, where):
    load_checked(with_when(text, where))


def test_expression_limits():
    long = " and ".join(["mean(reward_mean, 10) > 1"] * 200)
    must_reject(with_when(long, "guard"), "guards.strong.when")
    nested = "(" * 500 + "reward_mean > 1" + ")" * 500
    must_reject(with_when(nested, "guard"), "guards.strong.when")
    must_reject(with_when("-" * 300 + "reward_mean > 1", "guard"), "guards.strong.when")


# --------------------------------------------------------------------------- TOML text mutations


LINES = BASE_TEXT.splitlines()
text_mutation = st.one_of(
    st.tuples(st.just("del"), st.integers(0, len(LINES) - 1)),
    st.tuples(st.just("dup"), st.integers(0, len(LINES) - 1)),
    st.tuples(st.just("swap"), st.integers(0, len(LINES) - 1), st.integers(0, len(LINES) - 1)),
    st.tuples(st.just("insert"), st.integers(0, len(LINES)), st.text(max_size=30)),
    st.tuples(st.just("chars"), st.integers(0, len(LINES) - 1), st.integers(0, 80), st.text(max_size=5)),
    st.tuples(st.just("number"), st.integers(0, 40),
              st.sampled_from(["nan", "inf", "-inf", "+nan", "1e999", "-1e999", "99999999999999999999999",
                               "-1", "0", "1.5", "true", '"10"', "0x10", "1_000", "[]", "{}"])),
    st.tuples(st.just("deep"), st.integers(0, len(LINES)), st.integers(1, 3000)),
    st.tuples(st.just("table"), st.integers(0, len(LINES)), st.integers(1, 300)),
    st.tuples(st.just("header"), st.sampled_from(["[phases.soft]", "[guards.strong]", "[run]", "[[phases]]", "[phases]",
                                                   "[[transitions]]", "[transitions]", "[phases.soft.eval.x.y]"])),
)
_NUM = re.compile(r"(?<=[=\s])-?\d+(?:\.\d+)?\b")


def apply_text(lines: list[str], m) -> list[str]:
    op = m[0]
    if op == "del" and m[1] < len(lines):
        del lines[m[1]]
    elif op == "dup" and m[1] < len(lines):
        lines.insert(m[1], lines[m[1]])
    elif op == "swap" and max(m[1], m[2]) < len(lines):
        lines[m[1]], lines[m[2]] = lines[m[2]], lines[m[1]]
    elif op == "insert":
        lines.insert(min(m[1], len(lines)), m[2])
    elif op == "chars" and m[1] < len(lines):
        s = lines[m[1]]
        i = min(m[2], len(s))
        lines[m[1]] = s[:i] + m[3] + s[i:]
    elif op == "number":
        text = "\n".join(lines)
        found = list(_NUM.finditer(text))
        if found:
            f = found[m[1] % len(found)]
            text = text[: f.start()] + m[2] + text[f.end():]
        lines[:] = text.split("\n")
    elif op == "deep":
        lines.insert(min(m[1], len(lines)), "deep_x = " + "[" * m[2] + "1" + "]" * m[2])
    elif op == "table":
        lines.insert(min(m[1], len(lines)), "[" + ".".join(f"t{i}" for i in range(m[2])) + "]")
    elif op == "header":
        lines.append(m[1])
        lines.append('kind = "grpo"')
    return lines


def _top_keys(text: str) -> set[str]:
    try:
        raw = tomli.loads(text)
    except Exception:  # noqa: BLE001 - then the error is "not valid TOML"
        return set()
    out = set(raw)
    for prof in (raw.get("profiles") or {}).values() if isinstance(raw.get("profiles"), dict) else ():
        out |= set(prof) if isinstance(prof, dict) else set()
    return out


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@fuzz(800)
@given(st.lists(text_mutation, min_size=1, max_size=4), st.integers(0, 10**9))
def test_toml_text_mutations_give_a_clear_error_or_a_sound_spec(fuzz_dir, muts, n):
    lines = list(LINES)
    for m in muts:
        apply_text(lines, m)
    path = fuzz_dir / f"spec-{n}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    try:
        spec = load_spec(path)
    except SpecError as e:
        assert_clear_error(e, str(path), _top_keys("\n".join(lines)))
    else:
        assert_sound(spec)
    finally:
        path.unlink()


@fuzz(150)
@given(st.binary(max_size=200), st.integers(0, len(BASE_TEXT)))
def test_random_bytes_in_the_file(fuzz_dir, junk, at):
    data = BASE_TEXT.encode()
    path = fuzz_dir / "bytes.toml"
    path.write_bytes(data[:at] + junk + data[at:])
    try:
        spec = load_spec(path)
    except SpecError as e:
        assert_clear_error(e, str(path), _top_keys(path.read_bytes().decode("utf-8", "replace")))
    else:
        assert_sound(spec)


@pytest.mark.parametrize(
    "text,needle",
    [
        (BASE_TEXT.replace("max_steps = 300\nnext = \"end\"", "max_steps = nan\nnext = \"end\""), "phases.soft.max_steps"),
        (BASE_TEXT.replace("max_steps = 300\nnext = \"end\"", "max_steps = inf\nnext = \"end\""), "phases.soft.max_steps"),
        (BASE_TEXT.replace("max_steps = 300\nnext = \"end\"", "max_steps = -300\nnext = \"end\""), "phases.soft.max_steps"),
        (BASE_TEXT.replace('preset = "soft"\nmax_steps = 300\nnext', 'preset = "soft"\npenalties = { hallucination_penalty = nan }\nmax_steps = 300\nnext'), "phases.soft.penalties"),
        (BASE_TEXT.replace('preset = "soft"\nmax_steps = 300\nnext', 'preset = "soft"\npenalties = { hallucination_penalty = "-5" }\nmax_steps = 300\nnext'), "phases.soft.penalties"),
        (BASE_TEXT.replace("seed = 7", "seed = 7\nseed = 8"), "not valid TOML"),  # duplicate key
        (BASE_TEXT + "\n[phases.soft]\nkind = \"grpo\"\n", "not valid TOML"),  # duplicate table
        (BASE_TEXT + "\nx = " + "[" * 5000 + "]" * 5000 + "\n", "not valid TOML"),  # deep nesting
        (BASE_TEXT.replace("patience = 10", "patience = 10.0"), "guards.strong.patience"),
        (BASE_TEXT.replace("patience = 10", "patience = 1e999"), "guards.strong.patience"),
        (BASE_TEXT.replace('when = "mean(reward_mean, 30) > 5', 'when = "mean(reward_mena, 30) > 5'), "did you mean 'reward_mean'?"),
    ],
)
def test_specific_bad_files(tmp_path, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as ei:
        load_spec(path)
    assert_clear_error(ei.value, str(path))
    assert needle in "\n".join(ei.value.problems)


def test_file_problems(tmp_path):
    for path, needle in ((tmp_path / "missing.toml", "not found"), (tmp_path, "cannot read")):
        with pytest.raises(SpecError) as ei:
            load_spec(path)
        assert str(path) in ei.value.problems[0] and needle in ei.value.problems[0]


# --------------------------------------------------------------------------- the CLI path


def test_cli_validate_bad_specs_exit_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        BASE_TEXT.replace('preset = "soft"\nmax_steps = 300\nnext', 'preset = "sofft"\nmax_steps = 300\nnext')
        .replace('when = "mean(reward_mean, 30) > 5', "when = \"__import__('os').system('id') or mean(reward_mean, 30) > 5")
    )
    deep_file = tmp_path / "deep.toml"
    deep_file.write_text(BASE_TEXT + "\nx = " + "[" * 3000 + "]" * 3000 + "\n")
    code = (
        "import sys; from curriculum.cli import main\n"
        "rcs = [main(['validate', p]) for p in sys.argv[1:]]\n"
        "print('RCS', rcs)\n"
    )
    p = subprocess.run([sys.executable, "-c", code, str(bad), str(deep_file)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert "RCS [2, 2]" in p.stdout, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    assert "2 problem(s)" in p.stderr
    assert f"{bad}:" in p.stderr and "phases.soft.preset" in p.stderr and "guards.strong.when" in p.stderr
    assert f"{deep_file}: not valid TOML" in p.stderr
    # and the installed entry point itself
    exe = Path(sys.executable).with_name("curriculum")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "curriculum.cli"]
    q = subprocess.run([*cmd, "validate", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert q.returncode == 2 and "Traceback" not in q.stderr and "did you mean 'soft'?" in q.stderr
    assert q.stdout == ""
