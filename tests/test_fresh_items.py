"""[data] fresh_items (synthetic DIPG data): prompts generated apart from the training and
held-out items, for GRPO phases (train.data = "fresh"), without touching the split a shipped
policy was fine-tuned on."""

from __future__ import annotations

import pytest

from curriculum.errors import SpecError
from curriculum.spec import load_spec
from runners.tunix.config import DataSection
from runners.tunix.data import load_items

SPEC = """\
[run]
name = "f"
wandb = "disabled"

[runner]
kind = "tunix"

[model]
preset = "tiny"

[data]
num_items = 90
eval_items = 30
fresh_items = 60

[phases.sft]
kind = "sft"
max_steps = 2

[phases.rl]
kind = "grpo"
preset = "soft"
max_steps = 2
train = { data = "fresh" }
"""


def test_fresh_items_are_disjoint_and_leave_the_split_alone():
    with_fresh, ev = load_items(DataSection.model_validate({"num_items": 300, "eval_items": 60, "fresh_items": 120}), 42)
    without, ev0 = load_items(DataSection.model_validate({"num_items": 300, "eval_items": 60}), 42)
    # the training and held-out items are exactly those without fresh_items
    assert [x.id for x in with_fresh["default"]] == [x.id for x in without["default"]]
    assert [x.id for x in ev] == [x.id for x in ev0] and set(without) == {"default"}
    fresh = with_fresh["fresh"]
    assert len(fresh) == 120 and len({x.id for x in fresh}) == 120
    seen = {x.user for x in with_fresh["default"]} | {x.user for x in ev}
    assert not any(x.user in seen for x in fresh)
    assert not {x.id for x in fresh} & {x.id for x in with_fresh["default"] + ev}
    types = [x.columns["task_type"] for x in fresh]
    assert {t: types.count(t) for t in set(types)} == {"answerable": 40, "abstain": 40, "conflict": 40}
    # deterministic for a seed, different for another
    again, _ = load_items(DataSection.model_validate({"num_items": 300, "eval_items": 60, "fresh_items": 120}), 42)
    assert [x.id for x in again["fresh"]] == [x.id for x in fresh]
    other, _ = load_items(DataSection.model_validate({"num_items": 300, "eval_items": 60, "fresh_items": 120}), 7)
    assert [x.user for x in other["fresh"]] != [x.user for x in fresh]


def test_fresh_eval_items_widen_the_eval_set_without_touching_training_or_fresh():
    base = {"num_items": 300, "eval_items": 60, "fresh_items": 120}
    sets0, ev0 = load_items(DataSection.model_validate(base), 42)
    sets, ev = load_items(DataSection.model_validate({**base, "fresh_eval_items": 90}), 42)
    # training, fresh and the split's held-out items are exactly as without; 90 more come after
    assert [x.id for x in sets["default"]] == [x.id for x in sets0["default"]]
    assert [x.id for x in sets["fresh"]] == [x.id for x in sets0["fresh"]]
    assert [x.id for x in ev[:60]] == [x.id for x in ev0] and len(ev) == 150
    more = ev[60:]
    assert len({x.id for x in ev}) == 150
    seen = {x.user for x in sets["default"] + sets["fresh"] + ev0}
    assert not any(x.user in seen for x in more)
    types = [x.columns["task_type"] for x in more]
    assert {t: types.count(t) for t in set(types)} == {"answerable": 30, "abstain": 30, "conflict": 30}
    with pytest.raises(ValueError, match="fresh_eval_items"):
        DataSection.model_validate({"source": "jsonl", "path": "x.jsonl", "fresh_eval_items": 10})


def test_a_phase_names_the_fresh_set_and_bad_uses_are_refused(tmp_path):
    p = tmp_path / "spec.toml"
    p.write_text(SPEC)
    load_spec(p)  # valid
    with pytest.raises(SpecError) as e:
        load_spec(p, overrides=["phases.rl.train.data=\"frsh\""])
    assert "phases.rl.train.data: unknown dataset 'frsh'; expected one of default, fresh (did you mean 'fresh'?)" in str(e.value)
    with pytest.raises(SpecError) as e:
        load_spec(p, overrides=["data.fresh_items=0"])
    assert "unknown dataset 'fresh'" in str(e.value) and "fresh_items = N declares 'fresh'" in str(e.value)
    with pytest.raises(SpecError) as e:
        load_spec(p, overrides=["data.source=\"sharegpt\"", "data.path=\"x.jsonl\""])
    assert "fresh_items: only for source = 'synthetic'" in str(e.value)
