"""Spec loading: every error names the file, key, line and the closest valid name."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from curriculum.errors import SpecError
from curriculum.spec import END, load_spec

ROOT = Path(__file__).resolve().parents[1]

BASE = """\
[run]
name = "t"
seed = 3

[runner]
kind = "simulated"

[phases.soft]
kind = "grpo"
preset = "soft"
max_steps = 50
next = "end"

[phases.medium]
kind = "grpo"
preset = "medium"
max_steps = 50
next = "recovery"

[phases.recovery]
kind = "grpo"
preset = "soft"
max_steps = 50

[guards.strong]
when = "mean(reward_mean, 10) > 5 and mean(safe_rate, 10) > 0.9"
patience = 3

[guards.collapse]
type = "collapse"

[[transitions]]
from = "soft"
to = "medium"
guard = "strong"

[[transitions]]
from = "medium"
to = "recovery"
guard = "collapse"
"""


def write(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def problems(tmp_path: Path, text: str, **kw) -> list[str]:
    with pytest.raises(SpecError) as ei:
        load_spec(write(tmp_path, text), **kw)
    return ei.value.problems


def test_valid_spec_resolves(tmp_path):
    spec = load_spec(write(tmp_path, BASE))
    assert list(spec.phases) == ["soft", "medium", "recovery"]
    assert spec.start == "soft"
    assert spec.next_phase("soft") == END
    assert spec.next_phase("medium") == "recovery"
    assert spec.next_phase("recovery") == END
    preset, vals = spec.penalties_for("medium")
    assert preset == "medium" and vals["hallucination_penalty"] == -10
    assert spec.penalties_for("soft")[1]["hallucinated_trace_penalty"] == -10
    assert [(t.source, t.dest, t.guard) for t in spec.transitions] == [
        ("soft", "medium", "strong"),
        ("medium", "recovery", "collapse"),
    ]


def test_typo_in_phase_reference_names_file_line_and_suggestion(tmp_path):
    text = BASE.replace('to = "recovery"\nguard = "collapse"', 'to = "recovry"\nguard = "collapse"')
    probs = problems(tmp_path, text)
    assert len(probs) == 1
    msg = probs[0]
    assert "spec.toml:" in msg and "transitions.1.to" in msg
    assert "unknown phase 'recovry'" in msg and "did you mean 'recovery'?" in msg
    line = int(msg.split("spec.toml:")[1].split(":")[0])
    assert 'to = "recovry"' in text.splitlines()[line - 1]


def test_unknown_preset_and_metric_and_guard_function(tmp_path):
    text = BASE.replace('preset = "medium"', 'preset = "meduim"').replace(
        "mean(safe_rate, 10)", "mean(safe_rte, 10)"
    )
    text += '\n[guards.custom]\nwhen = "my_guard(reward_mean) > 1"\n'
    probs = "\n".join(problems(tmp_path, text))
    assert "phases.medium.preset" in probs and "did you mean 'medium'?" in probs
    assert "safe_rte" in probs and "did you mean 'safe_rate'?" in probs
    assert "guards.custom" in probs and "my_guard" in probs


def test_unknown_key_is_rejected_with_suggestion(tmp_path):
    probs = problems(tmp_path, BASE.replace("max_steps = 50\nnext = \"end\"", "max_step = 50\nnext = \"end\""))
    joined = "\n".join(probs)
    assert "phases.soft.max_step" in joined and "did you mean 'max_steps'?" in joined


def test_unreachable_phase_and_phase_without_way_out(tmp_path):
    text = BASE + '\n[phases.orphan]\nkind = "grpo"\npreset = "soft"\n'
    text = text.replace('[phases.recovery]\nkind = "grpo"\npreset = "soft"\nmax_steps = 50',
                        '[phases.recovery]\nkind = "grpo"\npreset = "soft"\nmax_steps = 50\nnext = "end"')
    probs = "\n".join(problems(tmp_path, text))
    assert "phase 'orphan' is unreachable" in probs
    assert "phase 'orphan' has no way out" in probs


def test_preset_missing_a_key(tmp_path):
    text = BASE + '\n[presets.harsh]\nhallucination_penalty = -20\n'
    probs = "\n".join(problems(tmp_path, text))
    assert "presets.harsh" in probs and "missing" in probs and "correct_synthesis" in probs


def test_preset_base_inherits(tmp_path):
    text = BASE.replace('preset = "medium"', 'preset = "harsh"') + (
        '\n[presets.harsh]\nbase = "medium"\nhallucination_penalty = -20\n'
    )
    spec = load_spec(write(tmp_path, text))
    _, vals = spec.penalties_for("medium")
    assert vals["hallucination_penalty"] == -20 and vals["hallucinated_trace_penalty"] == -15


def test_inline_penalty_override_and_unknown_key(tmp_path):
    text = BASE.replace('preset = "medium"', 'preset = "medium"\npenalties = { hallucination_penalty = -12 }')
    spec = load_spec(write(tmp_path, text))
    assert spec.penalties_for("medium")[1]["hallucination_penalty"] == -12
    bad = BASE.replace('preset = "medium"', 'preset = "medium"\npenalties = { halucination_penalty = -12 }')
    probs = "\n".join(problems(tmp_path, bad))
    assert "did you mean 'hallucination_penalty'?" in probs


def test_set_override_applies_and_is_validated(tmp_path):
    p = write(tmp_path, BASE)
    spec = load_spec(p, overrides=["phases.soft.max_steps=7", "guards.strong.patience=9"])
    assert spec.phases["soft"].max_steps == 7
    with pytest.raises(SpecError) as ei:
        load_spec(p, overrides=["phases.soft.max_steps=-1"])
    assert "phases.soft.max_steps" in str(ei.value)
    with pytest.raises(SpecError) as ei:
        load_spec(p, overrides=["phases.soft.preset=nope"])
    assert "unknown preset 'nope'" in str(ei.value)


def test_profiles_override_without_duplicating(tmp_path):
    text = BASE.replace('[run]\nname = "t"', '[run]\nname = "t"\ndefault_profile = "small"') + (
        "\n[profiles.small.phases.soft]\nmax_steps = 5\n[profiles.big.phases.soft]\nmax_steps = 500\n"
    )
    p = write(tmp_path, text)
    assert load_spec(p).phases["soft"].max_steps == 5
    assert load_spec(p, profile="big").phases["soft"].max_steps == 500
    with pytest.raises(SpecError) as ei:
        load_spec(p, profile="bigg")
    assert "did you mean 'big'?" in str(ei.value)


def test_transition_needs_exactly_one_of_guard_or_when(tmp_path):
    text = BASE.replace('guard = "strong"', 'guard = "strong"\nwhen = "reward_mean > 1"')
    assert any("exactly one of" in p for p in problems(tmp_path, text))


def test_inline_when_guard(tmp_path):
    text = BASE.replace('guard = "strong"', 'when = "mean(reward_mean, 5) > 3"')
    spec = load_spec(write(tmp_path, text))
    assert spec.transitions[0].guard == "soft->medium"


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('touch /tmp/curriculum-pwned')",
        "().__class__.__mro__",
        "open('/etc/passwd')",
        "reward_mean; import os",
        "lambda: 1",
    ],
)
def test_guard_expression_injection_is_a_spec_error(tmp_path, expr):
    marker = Path("/tmp/curriculum-pwned")
    marker.unlink(missing_ok=True)
    text = BASE.replace(
        'when = "mean(reward_mean, 10) > 5 and mean(safe_rate, 10) > 0.9"', "when = '''" + expr + "'''"
    )
    probs = problems(tmp_path, text)
    assert any("guards.strong" in p for p in probs)
    assert not marker.exists()


def test_not_toml(tmp_path):
    probs = problems(tmp_path, "[run\nname=")
    assert "not valid TOML" in probs[0] and "spec.toml" in probs[0]


def test_missing_file(tmp_path):
    with pytest.raises(SpecError) as ei:
        load_spec(tmp_path / "nope.toml")
    assert "not found" in str(ei.value)


def test_grpo_phase_needs_preset(tmp_path):
    text = BASE.replace('kind = "grpo"\npreset = "soft"\nmax_steps = 50\nnext = "end"', 'kind = "grpo"\nmax_steps = 50\nnext = "end"')
    assert any("needs preset" in p for p in problems(tmp_path, text))


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "examples").glob("*.toml")))
def test_every_example_validates(name):
    spec = load_spec(ROOT / "examples" / name)
    assert spec.phases
