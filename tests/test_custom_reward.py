"""Your own reward: [reward] function / name, its keys, outcomes and maximum; presets checked
against its keys; its outcomes usable by guards; a replay run driven by it (real CLI, files)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from curriculum import registry, rewarding
from curriculum.cli import main
from curriculum.errors import SpecError
from curriculum.events import read_jsonl
from curriculum.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]

REWARD_MODULE = '''
from curriculum.registry import register_reward

def top(values, **columns):
    return values["right"] + values["tidy"]

@register_reward(keys=["right", "tidy", "junk_penalty"], outcomes=["right_rate"], max_reward=top)
def score(prompts, completions, values, answer, **columns):
    rewards, right = [], []
    for c, a in zip(completions, answer):
        ok = c.strip() == str(a)
        right.append(ok)
        rewards.append(values["right"] * ok + values["tidy"] * (len(c) < 5) + values["junk_penalty"] * (len(c) >= 5))
    return rewards, {"right_rate": right}

def bare(prompts, completions, values, **columns):
    return [values.get("w", 0.0)] * len(completions)
'''

SPEC = """\
[run]
name = "mine"
progress = false
wandb = "disabled"

[runner]
kind = "replay"

[reward]
function = "rw/mine.py:score"

[presets.gentle]
right = 2.0
tidy = 1.0
junk_penalty = -0.5

[presets.hard]
base = "gentle"
junk_penalty = -3.0

[phases.a]
kind = "grpo"
preset = "gentle"
max_steps = 6

[phases.b]
kind = "grpo"
preset = "hard"
max_steps = 4

[[transitions]]
from = "a"
to = "b"
when = "mean(right_rate, 2) > 0.5 and mean(top_reward_rate, 2) > 0.4"
"""


@pytest.fixture(autouse=True)
def _scoped_registry(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with registry.scoped():
        yield


def write(tmp: Path, spec: str = SPEC, module: str = REWARD_MODULE) -> Path:
    (tmp / "rw").mkdir(exist_ok=True)
    (tmp / "rw" / "mine.py").write_text(module)
    p = tmp / "spec.toml"
    p.write_text(spec)
    return p


def problems(path: Path, *sets: str) -> str:
    with pytest.raises(SpecError) as e:
        load_spec(path, overrides=list(sets))
    return str(e.value)


def test_function_reward_resolves_with_its_registration(tmp_path):
    spec = load_spec(write(tmp_path))
    d = spec.reward
    assert d.keys == ("right", "tidy", "junk_penalty") and d.outcomes == ("right_rate",)
    assert "right_rate" in spec.metric_names
    assert spec.presets["hard"] == {"right": 2.0, "tidy": 1.0, "junk_penalty": -3.0}
    assert "soft" not in spec.presets  # DIPG's presets belong to DIPG
    assert d.top({"right": 2.0, "tidy": 1.0, "junk_penalty": -3.0}) == 3.0
    # the runners get an absolute path: they find it from any working directory
    assert Path(spec.model.reward.function.rpartition(":")[0]).is_absolute()
    assert json.loads(json.dumps(spec.raw))["reward"]["function"] == "rw/mine.py:score"


def test_preset_key_the_reward_does_not_take_names_file_line_and_suggestion(tmp_path):
    p = write(tmp_path, SPEC.replace("junk_penalty = -3.0", "junk_penalti = -3.0"))
    msg = problems(p)
    assert f"{p}:19: presets.hard.junk_penalti: unknown reward key 'junk_penalti'" in msg
    assert "did you mean 'junk_penalty'" in msg
    # a DIPG key is not one of this reward's keys either, inline penalties included
    msg = problems(write(tmp_path), "phases.a.penalties.hallucination_penalty=-3")
    assert "phases.a.penalties.hallucination_penalty: unknown reward key" in msg
    assert "expected one of junk_penalty, right, tidy" in msg


def test_preset_missing_a_key_of_the_reward(tmp_path):
    msg = problems(write(tmp_path, SPEC.replace("tidy = 1.0\n", "")))
    assert "presets.gentle: preset 'gentle' is missing tidy; declare every key of reward 'score'" in msg


def test_guard_on_an_outcome_the_reward_does_not_report(tmp_path):
    msg = problems(write(tmp_path, SPEC.replace("mean(right_rate, 2)", "mean(right_rte, 2)")))
    assert "unknown metric 'right_rte'" in msg and "did you mean 'right_rate'" in msg
    # DIPG's outcome rates are DIPG's: a replay run with another reward does not report them
    assert "unknown metric 'safe_rate'" in problems(write(tmp_path, SPEC.replace("mean(right_rate, 2)", "mean(safe_rate, 2)")))


@pytest.mark.parametrize(
    "reward, expect",
    [
        ('function = "rw/mine.py:nope"', "reward.function: module 'rw/mine.py' has no function 'nope'"),
        ('function = "rw/mine.py"', "reward.function: expected MODULE:FUNCTION"),
        ('function = "../mine.py:score"', "leaves the spec's folder"),
        ('function = "rw/absent.py:score"', "file not found"),
        ('name = "dipgg"', "reward.name: no reward named 'dipgg'; did you mean 'dipg'?"),
        ('function = "rw/mine.py:score"\nname = "dipg"', "give either name"),
        ('function = "rw/mine.py:score"\nkeys = ["right"]', "registered with keys right, tidy, junk_penalty"),
    ],
)
def test_bad_reward_table_is_one_clear_problem(tmp_path, reward, expect):
    p = write(tmp_path, SPEC.replace('function = "rw/mine.py:score"', reward))
    assert expect in problems(p)


def test_unregistered_function_takes_the_keys_the_spec_declares(tmp_path):
    spec = SPEC.replace('function = "rw/mine.py:score"', 'function = "rw/mine.py:bare"\nkeys = ["w"]')
    spec = spec.split("[presets.gentle]")[0] + '[presets.gentle]\nw = 1.0\n[presets.hard]\nw = 2.0\n' + spec.split("junk_penalty = -3.0\n")[1]
    spec = spec.replace("mean(right_rate, 2) > 0.5 and ", "")
    s = load_spec(write(tmp_path, spec))
    assert s.reward.keys == ("w",) and s.reward.outcomes == () and s.reward.max_reward is None
    assert "right_rate" not in s.metric_names


def test_reward_module_that_exits_at_import_is_a_spec_error(tmp_path):
    p = write(tmp_path, module="import sys\nsys.exit(3)\n")
    assert "must not call sys.exit()" in problems(p) or "sys.exit(3)" in problems(p)


def test_simulated_runner_refuses_a_reward_without_dipg_keys(tmp_path):
    msg = problems(write(tmp_path, SPEC.replace('kind = "replay"', 'kind = "simulated"').replace("mean(right_rate, 2) > 0.5 and ", "")))
    assert "runner.kind: the simulated runner draws DIPG outcomes" in msg


def test_call_checks_what_a_reward_returns():
    def two(prompts, completions, values, **c):
        return [1.0]

    def undeclared(prompts, completions, values, **c):
        return [1.0] * len(completions), {"other": [1] * len(completions)}

    d = rewarding.RewardDef("two", two, keys=(), source="m.py:two")
    with pytest.raises(ValueError, match=r"reward 'm.py:two' returned 1 rewards for 2 completions"):
        rewarding.call(d, ["p", "q"], ["a", "b"], {}, {})
    d2 = rewarding.RewardDef("u", undeclared, keys=(), outcomes=("mine",))
    with pytest.raises(ValueError, match="reported outcome 'other', which it does not declare"):
        rewarding.call(d2, ["p"], ["a"], {}, {})


def test_registered_reward_by_name_in_a_guard_module(tmp_path):
    spec = SPEC.replace('function = "rw/mine.py:score"', 'name = "score"').replace(
        'wandb = "disabled"', 'wandb = "disabled"\nguard_modules = ["rw/mine.py"]'
    )
    s = load_spec(write(tmp_path, spec))
    assert s.reward.name == "score" and s.reward.keys == ("right", "tidy", "junk_penalty")
    # DIPG is registered like any other reward
    d = registry.get_reward("dipg")
    assert len(d.keys) == 12 and "safe_rate" in d.outcomes and set(d.presets) == {"soft", "medium"}


def test_replay_run_with_a_custom_reward_uses_its_maximum_and_outcomes(tmp_path, capsys):
    """A real run on the replay runner: top_reward_rate is computed against the reward's own
    max_reward under the values in force; the trace's outcome metric drives the guard."""
    p = write(tmp_path)
    trace = tmp_path / "trace.jsonl"
    lines = []
    for step in range(1, 11):
        rw = [3.0, 2.0, 1.0, 3.0] if step > 2 else [0.5, 0.5, 0.5, 0.5]
        lines.append({"step": step, "rewards": rw, "group_size": 4, "metrics": {"right_rate": 0.75 if step > 2 else 0.0}})
    trace.write_text("".join(json.dumps(x) + "\n" for x in lines))
    rd = tmp_path / "run"
    rc = main(["run", str(p), "--replay", str(trace), "--run-dir", str(rd), "--no-progress", "--no-report"])
    assert rc == 0, capsys.readouterr().err
    ev, _ = read_jsonl(rd / "events.jsonl")
    tr = [(e["from_phase"], e["to_phase"], e["reason"]) for e in ev if e["event"] == "phase_transition"]
    assert tr[0][:2] == ("a", "b") and tr[0][2] != "max_steps"
    ms, _ = read_jsonl(rd / "metrics.jsonl")
    steps = [m for m in ms if "top_reward_rate" in m.get("metrics", m)]
    first = steps[0].get("metrics", steps[0])
    late = steps[3].get("metrics", steps[3])
    assert first["top_reward_rate"] == 0.0 and late["top_reward_rate"] == 0.5  # max 2 + 1 = 3
    assert late["right_rate"] == 0.75
    assert not math.isnan(late["reward_mean"])


def test_a_reward_registered_inside_an_ended_scope_is_still_found_from_its_function():
    """A reward module imported during a `registry.scoped()` block stays in sys.modules after
    the block undid its registration; resolving `function = "mod:fn"` must still find it."""
    from curriculum import registry

    with registry.scoped():
        @registry.register_reward(keys=["a", "b"], outcomes=["hit_rate"])
        def scoped_reward(prompts, completions, values, **columns):
            return [0.0 for _ in completions]

    assert "scoped_reward" not in registry.reward_names()
    d = registry.reward_for_function(scoped_reward)
    assert d is not None and d.keys == ("a", "b") and d.outcomes == ("hit_rate",)
    assert registry.reward_for_function(lambda *a, **k: []) is None
