"""Synthetic generator, splits, loaders."""

import json
from collections import Counter

import pytest

from rewards import PRESETS, max_reward, score
from rewards.data import (
    DISCLAIMER,
    DataError,
    eval_set,
    generate_items,
    infer_task_type,
    load_items,
    load_sharegpt,
    split_items,
    write_jsonl,
)
from rewards.parse import parse_response
from rewards.text import normalize


@pytest.fixture(scope="module")
def items():
    return generate_items()


def test_size_types_and_marking(items):
    assert len(items) >= 1500
    counts = Counter(it.type for it in items)
    assert set(counts) == {"answerable", "abstain", "conflict"}
    assert min(counts.values()) >= 500
    assert all(it.meta["synthetic"] and it.meta["disclaimer"] == DISCLAIMER for it in items)
    assert "not medical advice" in DISCLAIMER.lower()
    assert len({it.id for it in items}) == len(items)
    assert len({(it.context, it.question) for it in items}) == len(items)


def test_deterministic_per_seed():
    a, b, c = generate_items(300, seed=7), generate_items(300, seed=7), generate_items(300, seed=8)
    assert a == b
    assert [x.context for x in a] != [x.context for x in c]


def test_short_and_regular(items):
    for it in items:
        n_sent = it.context.count(". ") + 1
        assert 2 <= n_sent <= 4, it.context
        assert len(it.question.split()) <= 12
        assert len(it.reference.split()) <= 64, it.reference
        p = parse_response(it.reference)
        assert p.ok
        assert p.proof.startswith('"')


def test_variety(items):
    assert len({it.context for it in items}) >= 0.99 * len(items)
    assert len({it.question for it in items}) >= 60
    assert len({it.meta["target"] for it in items}) >= 15
    answers = Counter(it.expected_answer for it in items if it.type == "answerable")
    assert answers.most_common(1)[0][1] < 0.05 * sum(answers.values())


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_reference_is_perfect_and_safe(items, preset):
    p = PRESETS[preset]
    for it in items:
        v = score(it.reference, it, p)
        assert v.total == max_reward(p, it.type), (it, v)
        assert v.flags["safe"] and v.flags["correct"] and not v.flags["hallucination"]


def test_type_semantics(items):
    for it in items:
        ctx = normalize(it.context)
        if it.type == "answerable":
            assert normalize(it.expected_answer).split()[0] in ctx
        elif it.type == "abstain":
            assert infer_task_type(it.expected_answer) == "abstain"
        else:
            assert infer_task_type(it.expected_answer) == "conflict"
            assert it.reference.count('"') == 4  # two quoted sentences


def test_stratified_split(items):
    train, ev = split_items(items, eval_fraction=0.1, seed=3)
    assert len(train) + len(ev) == len(items)
    assert not {i.id for i in train} & {i.id for i in ev}
    c = Counter(i.type for i in ev)
    assert all(c[t] == 60 for t in ("answerable", "abstain", "conflict"))
    assert split_items(items, 0.1, seed=3) == (train, ev)
    assert split_items(items, 0.1, seed=4)[1] != ev


def test_eval_set_fixed_and_stratified(items):
    a = eval_set(items, 20, seed=1)
    assert a == eval_set(items, 20, seed=1)
    assert Counter(i.type for i in a) == {"answerable": 20, "abstain": 20, "conflict": 20}


def test_infer_task_type():
    assert infer_task_type("<answer>The provided text does not contain information about the capital of France.</answer>") == "abstain"
    assert infer_task_type("I\u2019m sorry, but I can\u2019t determine the dose. The reports provide conflicting diagnoses.") == "conflict"
    assert infer_task_type("30% objective response rate") == "answerable"


def _sharegpt_line(ctx="ONC201 was given at 625 mg weekly. MRI showed a lesion.", q="What dose?", ans="625 mg weekly", meta=None):
    user = f"Read this.\n<context>{ctx}</context>\n<question>{q}</question>"
    asst = f'<think>t</think><proof>"{ctx.split(". ")[0]}."</proof><answer>{ans}</answer>'
    return json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": asst}], "metadata": meta or {}})


def test_load_sharegpt(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(
        "\n".join(
            [
                _sharegpt_line(meta={"id": "x1"}),
                _sharegpt_line(q="What radiotherapy dose?", ans="The context does not report the radiotherapy dose."),
                _sharegpt_line(ans="The answer is 625 mg weekly.", meta={"type": "conflicting"}),
                "",
            ]
        ),
        encoding="utf-8",
    )
    got = load_sharegpt(f)
    assert [i.type for i in got] == ["answerable", "abstain", "conflict"]
    assert got[0].id == "x1" and got[1].id == "d:2"
    assert got[0].expected_answer == "625 mg weekly" and got[0].context.startswith("ONC201")
    assert score(got[0].reference, got[0], PRESETS["medium"]).flags["correct"]
    # ShareGPT "from"/"value" spelling
    alt = tmp_path / "alt.jsonl"
    alt.write_text(
        json.dumps({"messages": [{"from": "human", "value": "<context>c.</context><question>q?</question>"}, {"from": "gpt", "value": "<answer>a</answer>"}]}),
        encoding="utf-8",
    )
    assert load_sharegpt(alt)[0].expected_answer == "a"


@pytest.mark.parametrize(
    "line, needle",
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "messages"),
        (json.dumps({"messages": [{"role": "user", "content": "no tags"}, {"role": "assistant", "content": "x"}]}), "<context>"),
        (json.dumps({"messages": [{"role": "user", "content": "<context>c</context><question>q</question>"}]}), "assistant"),
        (json.dumps({"messages": [{"role": "user", "content": 3}]}), "text content"),
    ],
)
def test_load_sharegpt_errors_name_file_and_line(tmp_path, line, needle):
    f = tmp_path / "bad.jsonl"
    f.write_text(_sharegpt_line() + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_sharegpt(f)
    assert f"{f}:2:" in str(e.value) and needle in str(e.value)


def test_load_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        load_sharegpt(tmp_path / "nope.jsonl")


def test_load_items_round_trip(tmp_path):
    items = generate_items(30, seed=5)
    f = tmp_path / "items.jsonl"
    write_jsonl(items, f)
    back = load_items(f)
    assert [(i.id, i.type, i.context, i.question, i.expected_answer, i.reference) for i in back] == [
        (i.id, i.type, i.context, i.question, i.expected_answer, i.reference) for i in items
    ]
    assert len(load_items("synthetic:45", seed=2)) == 45
    assert load_items("synthetic", seed=2, n=12) == generate_items(12, seed=2)


def test_flat_record_with_upstream_expected_answer(tmp_path):
    f = tmp_path / "u.jsonl"
    rec = {"context": "c.", "question": "Who won the 1994 FIFA World Cup?",
           "expected_answer": {"final": "<think>x</think><proof>y</proof><answer>The provided text does not contain information about the winner.</answer>", "proof": ""}}
    f.write_text(json.dumps(rec) + "\n" + json.dumps({**rec, "type": "weird"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"u.jsonl:2: unknown type 'weird'"):
        load_items(f)
    f.write_text(json.dumps(rec) + "\n", encoding="utf-8")
    it = load_items(f)[0]
    assert it.type == "abstain" and it.expected_answer.startswith("The provided text")
