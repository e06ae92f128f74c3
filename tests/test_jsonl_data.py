"""Your own data: [data] source = "jsonl" with a field mapping, named datasets and mixtures.

What a user relies on: a missing file, a missing field, a bad line or an empty dataset is one
clear problem at validation naming the file (and line) and the key; records become prompts,
SFT targets and reward columns as mapped; a mixture is deterministic and resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curriculum.errors import SpecError
from curriculum.spec import load_spec
from runners.datasets import DataFileError, read_jsonl

ROOT = Path(__file__).resolve().parents[1]

SPEC = """\
[run]
name = "d"
wandb = "disabled"

[runner]
kind = "tunix"

[model]
preset = "tiny"

[data]
source = "jsonl"
path = "data/train.jsonl"
fields = { prompt = "q", response = "a_full", answer = "a" }
columns = ["level"]

[data.sets.hard]
path = "data/hard.jsonl"
fields = { prompt = "q", answer = "a" }
columns = []

[reward]
function = "arith/reward.py:arith"
eval_preset = "p"

[presets.p]
format = 1.0
correct = 1.0
extra_penalty = -1.0

[phases.sft]
kind = "sft"
max_steps = 2

[phases.rl]
kind = "grpo"
preset = "p"
max_steps = 2
train = { data = { default = 1, hard = 2 } }
"""


@pytest.fixture(autouse=True)
def _scoped_registry():
    from curriculum import registry

    with registry.scoped():  # each test's copy of the reward module registers it again
        yield


def rows(path: Path, recs: list) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in recs))


def setup(tmp: Path, spec: str = SPEC, train=None, hard=None) -> Path:
    (tmp / "data").mkdir(exist_ok=True)
    (tmp / "arith").mkdir(exist_ok=True)
    (tmp / "arith" / "reward.py").write_text((ROOT / "examples" / "arith" / "reward.py").read_text())
    rows(tmp / "data" / "train.jsonl", train if train is not None else [
        {"q": f"{i}+1=", "a_full": f"<answer>{i + 1}</answer>", "a": i + 1, "level": 1} for i in range(6)])
    rows(tmp / "data" / "hard.jsonl", hard if hard is not None else [{"q": f"1{i}+5=", "a": 15 + i} for i in range(4)])
    p = tmp / "spec.toml"
    p.write_text(spec)
    return p


def problems(p: Path, *sets: str) -> str:
    with pytest.raises(SpecError) as e:
        load_spec(p, overrides=list(sets))
    return str(e.value)


def test_valid_jsonl_spec_paths_are_relative_to_the_spec(tmp_path, monkeypatch):
    p = setup(tmp_path)
    monkeypatch.chdir("/")
    spec = load_spec(p)
    assert spec.model.data["path"] == str(tmp_path / "data" / "train.jsonl")
    assert spec.raw["data"]["path"] == "data/train.jsonl"  # the stored spec keeps what was written


def test_missing_file_names_file_and_key(tmp_path):
    p = setup(tmp_path)
    (tmp_path / "data" / "hard.jsonl").unlink()
    msg = problems(p)
    assert "data.sets.hard.path: file not found: " + str(tmp_path / "data" / "hard.jsonl") in msg
    assert f"{p}:" in msg


def test_missing_field_names_file_line_and_key(tmp_path):
    p = setup(tmp_path, train=[{"q": "1+1=", "a_full": "2", "a": 2, "level": 1}, {"question": "2+2=", "a_full": "4", "a": 4, "level": 1}])
    msg = problems(p)
    assert "data.fields.prompt: " in msg and "train.jsonl:2: no key 'q' (keys: a, a_full, level, question)" in msg
    p = setup(tmp_path, train=[{"q": "1+1=", "a_full": "2", "a": 2}])
    assert "data.columns: " in problems(p) and "train.jsonl:1: no key 'level'" in problems(p)
    p = setup(tmp_path, hard=[{"q": "10+1="}])
    assert "data.sets.hard.fields.answer: " in problems(p) and "hard.jsonl:1: no string or number at key 'a'" in problems(p)


def test_empty_dataset_and_bad_json(tmp_path):
    p = setup(tmp_path, hard=[])
    assert "hard.jsonl holds no records (an empty dataset)" in problems(p)
    p = setup(tmp_path, hard=['{"q": "1+1=", "a": 2}', "{not json"])
    assert "hard.jsonl:2: not valid JSON" in problems(p)


def test_phase_dataset_names_are_checked(tmp_path):
    p = setup(tmp_path)
    msg = problems(p, "phases.rl.train.data=\"hrad\"")
    assert "phases.rl.train.data: unknown dataset 'hrad'; expected one of default, hard (did you mean 'hard'?)" in msg
    assert "a mixture weight is a positive number" in problems(p, "phases.rl.train.data={default=1, hard=0}")
    # an SFT phase trains on a dataset with SFT targets
    msg = problems(p, "phases.sft.train.data=\"hard\"")
    assert "sft phase on dataset 'hard', whose records have no SFT target" in msg


def test_sft_evaluation_needs_a_preset_of_the_reward(tmp_path):
    msg = problems(setup(tmp_path, SPEC.replace('eval_preset = "p"\n', "")))
    assert "phases.sft.eval: an sft phase has no preset, and reward 'arith' has no built-in one" in msg


def test_field_mapping_errors(tmp_path):
    p = setup(tmp_path, SPEC.replace('answer = "a" }\ncolumns', 'answr = "a" }\ncolumns'))
    assert "unknown role 'answr'" in problems(p)
    p = setup(tmp_path, SPEC.replace('path = "data/train.jsonl"\n', ""))
    assert "data.path: required when source = 'jsonl'" in problems(p)


def test_records_become_prompts_targets_and_columns(tmp_path):
    f = tmp_path / "chat.jsonl"
    rows(f, [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2="},
                           {"role": "assistant", "content": "<answer>4</answer>"}], "a": 4, "id": "x"}])
    (ex,) = read_jsonl(f, {"messages": "messages", "answer": "a"}, ["id"], "data")
    assert (ex.user, ex.reference, ex.system) == ("2+2=", "<answer>4</answer>", "Be brief.")
    assert dict(ex.columns) == {"answer": "4", "id": "x"}
    rows(f, [{"messages": [{"role": "robot", "content": "?"}]}])
    with pytest.raises(DataFileError, match=r"chat.jsonl:1: key 'messages': unknown role 'robot'"):
        read_jsonl(f, {"messages": "messages"}, [], "data")

    from runners.tunix.data import prompt_text
    from runners.tunix.text import TEMPLATES

    rows(f, [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2="},
                           {"role": "assistant", "content": "4"}]}])
    (ex,) = read_jsonl(f, {"messages": "messages"}, [], "data")
    assert prompt_text(ex, TEMPLATES["chatml"], None).startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert "Be brief." not in prompt_text(ex, TEMPLATES["chatml"], "")  # the spec's system prompt wins


def test_mixture_is_deterministic_weighted_and_resumes(tmp_path):
    from runners.tunix.data import MixedPrompts, PromptData
    from runners.tunix.text import TEMPLATES

    easy = read_jsonl(_write(tmp_path / "e.jsonl", [{"q": f"{i}+0=", "a": i} for i in range(10)]), {"prompt": "q", "answer": "a"}, [], "e")
    hard = read_jsonl(_write(tmp_path / "h.jsonl", [{"q": f"1{i}+9=", "a": 19 + i} for i in range(10)]), {"prompt": "q", "answer": "a"}, [], "h")

    def mk():
        srcs = {"easy": PromptData(easy, TEMPLATES["plain"], "", 1), "hard": PromptData(hard, TEMPLATES["plain"], "", 2)}
        return srcs, MixedPrompts(srcs, {"easy": 1, "hard": 3}, seed=4)

    srcs, mix = mk()
    seen = [mix.next_batch(8) for _ in range(25)]
    prompts = [p for b in seen for p in b["prompts"]]
    share_hard = sum("+9=" in p for p in prompts) / len(prompts)
    assert 0.65 < share_hard < 0.85  # weights 1:3
    assert set(seen[0]) == {"prompts", "answer"}
    # resume: the streams' cursors and the draw count give exactly the next batches
    state = ({n: s.cursor.state() for n, s in srcs.items()}, mix.drawn)
    nxt = [list(mix.next_batch(8)["prompts"]) for _ in range(3)]
    srcs2, mix2 = mk()
    for n, st in state[0].items():
        srcs2[n].cursor.load(st)
    mix2.drawn = state[1]
    assert [list(mix2.next_batch(8)["prompts"]) for _ in range(3)] == nxt


def _write(p: Path, recs: list) -> Path:
    rows(p, recs)
    return p


def test_arith_example_validates():
    spec = load_spec(ROOT / "examples" / "arith.toml")
    assert spec.reward.name == "arith" and "correct_rate" in spec.metric_names
    assert [t.guard for t in spec.transitions] == ["easy_mastered"]
