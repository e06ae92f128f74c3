"""The optional model judge: what its verdict changes in a score, the Gemma 3 judge model itself
(the tiny Gemma 3 shipped in the package, loaded from its directory through the same Tunix code a
real checkpoint takes), batching and truncation, the spec's [reward.judge], `curriculum score
--judge-model`."""

import io
import json
import math
from pathlib import Path

import pytest

from rewards import PRESETS, Item, score

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "runners" / "tunix" / "assets" / "tiny-dipg"
P = PRESETS["medium"]
CTX = "A 9-year-old girl was diagnosed with DIPG. ONC201 was given at 625 mg weekly. MRI showed a 3.1 cm pontine lesion."
ANS = Item("a1", "answerable", CTX, "What dose of ONC201 was given?", "625 mg weekly")
ABS = Item("b1", "abstain", CTX, "What radiotherapy dose was delivered?", "The context does not report the radiotherapy dose.")


def R(proof='"ONC201 was given at 625 mg weekly."', answer="625 mg weekly"):
    return f"<think>The context reports the dose.</think><proof>{proof}</proof><answer>{answer}</answer>"


# ----------------------------------------------------------------- what a model verdict changes


def test_model_denial_makes_a_verified_answer_a_hallucination():
    rules = score(R(), ANS, P)
    assert rules.flags["safe"] and "no_hallucination" in rules.components
    denied = score(R(), ANS, P, model_supported=False)
    assert denied.flags["hallucination"] and not denied.flags["safe"]
    assert "hallucination_penalty" in denied.components and "no_hallucination" not in denied.components
    assert denied.detail["model_unsupported"] is True and denied.total < rules.total
    # the rules' other verdicts stand: the proof is still verbatim, the answer still right
    assert denied.flags["grounded"] and denied.flags["correct"]


def test_model_approval_changes_nothing_and_never_clears_the_rules():
    rules = score(R(), ANS, P)
    ok = score(R(), ANS, P, model_supported=True)
    assert (ok.total, ok.flags, ok.components) == (rules.total, rules.flags, rules.components)
    fabricated = R(proof='"ONC201 was given at 900 mg daily with complete remission."')
    a, b = score(fabricated, ANS, P), score(fabricated, ANS, P, model_supported=True)
    assert a.flags["hallucination"] and b.flags["hallucination"] and a.total == b.total


def test_model_verdict_does_not_touch_abstentions():
    text = R(proof='"MRI showed a 3.1 cm pontine lesion."', answer="The context does not report the radiotherapy dose.")
    rules = score(text, ABS, P)
    denied = score(text, ABS, P, model_supported=False)
    assert rules.flags["abstained"] and (denied.total, denied.flags) == (rules.total, rules.flags)


# ----------------------------------------------------------------- the judge model


@pytest.fixture(scope="module")
def judge():
    from runners.tunix.judge import LMSupportJudge

    return LMSupportJudge(TINY, max_prompt_tokens=256)


def test_judge_gives_probabilities_and_batches_like_single_prompts(judge):
    from rewards.model_judge import prompt

    prompts = [prompt(ANS, "625 mg weekly"), prompt(ANS, "900 mg daily"), "short", prompt(ABS, "x " * 300)]
    batch = judge(prompts)
    assert len(batch) == 4 and all(0.0 < p < 1.0 for p in batch)
    singles = [judge([p])[0] for p in prompts]
    assert max(abs(a - b) for a, b in zip(batch, singles)) < 1e-5  # (padding changes nothing)
    assert judge(prompts) == batch  # deterministic
    # the verdict is read at each prompt's own last token: the same as the model run on exactly
    # its tokens, unpadded and unbatched
    import jax.numpy as jnp
    import numpy as np

    for p, got in zip(prompts[:3], batch):
        ids = judge._ids(p)
        n = len(ids)
        mask = jnp.tril(jnp.ones((1, n, n), dtype=bool))
        logits, _ = judge.model(jnp.asarray([ids], dtype=jnp.int32), jnp.arange(n)[None, :], None, mask)
        yes, no = np.asarray(logits[0, -1, jnp.array([judge.yes_id, judge.no_id])], dtype=np.float64)
        assert got == pytest.approx(1.0 / (1.0 + math.exp(no - yes)), abs=1e-5)


def test_long_prompts_keep_their_end(judge):
    # over max_prompt_tokens, the start of the context goes: two prompts that differ only there
    # get the same verdict; differing in the answer, they do not
    tail = " Question: What dose? Answer: 625 mg weekly. Is every claim supported? Reply yes or no."
    body = "patient " * 400
    a, b, c = judge(["alpha " * 50 + body + tail, "omega " * 50 + body + tail, "alpha " * 50 + body + tail.replace("625", "900")])
    assert a == pytest.approx(b, abs=1e-6) and a != pytest.approx(c, abs=1e-6)


def test_judge_directory_problems_are_named():
    from rewards.model_judge import problem_with_dir
    from runners.tunix.judge import JudgeModelError, LMSupportJudge

    assert problem_with_dir(TINY) is None
    assert "not a directory" in problem_with_dir(TINY / "missing")
    assert "no config.json" in problem_with_dir(ROOT / "examples")
    with pytest.raises(JudgeModelError, match="not a directory"):
        LMSupportJudge(TINY / "missing")


def test_apply_asks_only_about_supported_factual_answers(judge):
    from rewards.model_judge import needs_model, score_batch

    texts = [R(), R(answer="ONC201 at 625 mg weekly for DIPG"), R(proof='"ONC201 was given at 900 mg daily."'),
             R(proof='"MRI showed a 3.1 cm pontine lesion."', answer="The context does not report the radiotherapy dose."),
             "no tags at all"]
    items = [ANS, ANS, ANS, ABS, ANS]
    rules = [score(t, it, P) for t, it in zip(texts, items)]
    expect_asked = [i for i, v in enumerate(rules) if needs_model(v)]
    assert expect_asked == [0, 1]
    batches = []

    def counting(prompts):
        batches.append(len(prompts))
        return judge(prompts)

    same, n = score_batch(texts, items, P, counting, threshold=0.0, batch_size=1)
    assert n == 2 and batches == [1, 1]
    assert [(v.total, v.flags) for v in same] == [(v.total, v.flags) for v in rules]
    assert all(0 < same[i].detail["model_p_supported"] < 1 for i in expect_asked)
    strict, n = score_batch(texts, items, P, judge, threshold=1.0)  # every P(yes) is below 1
    assert n == 2
    for i, (a, b) in enumerate(zip(rules, strict)):
        if i in expect_asked:
            assert b.flags["hallucination"] and b.total < a.total
        else:
            assert (a.total, a.flags) == (b.total, b.flags)


# ----------------------------------------------------------------- the spec and the CLI


def _spec(tmp_path, judge_table):
    text = (ROOT / "examples" / "dipg.toml").read_text()
    text = text.replace('[reward]\nname = "dipg"\n', '[reward]\nname = "dipg"\n\n[reward.judge]\n' + judge_table + "\n", 1)
    assert text.count("\n[reward.judge]\n") == 1  # (the example holds it only commented out)
    p = tmp_path / "dipg.toml"
    p.write_text(text)
    return p


def test_spec_judge_for_evaluation_and_training(tmp_path):
    from curriculum import rewarding
    from curriculum.spec import load_spec

    texts = [R(), R(answer="ONC201 at 625 mg weekly for DIPG"), "no tags"]
    columns = {"task_type": ["answerable"] * 3, "context": [CTX] * 3, "question": [ANS.question] * 3,
               "expected_answer": ["625 mg weekly"] * 3}
    plain = rewarding.from_context({"name": "dipg"})
    base_rewards, _ = plain.fn(completions=texts, values=P, **columns)
    base_eval = plain.evaluate(texts, columns, P)["hallucination_rate"].value
    for use in ("eval", "train", "both"):
        spec = load_spec(_spec(tmp_path, f'path = "{TINY}"\nuse = "{use}"\nthreshold = 1.0'))
        table = spec.model.reward.model_dump()
        assert table["judge"]["path"] == str(TINY.resolve())
        rdef = rewarding.from_context(table)  # what the runner builds from the run context
        rewards, outcomes = rdef.fn(completions=texts, values=P, **columns)
        ev = rdef.evaluate(texts, columns, P)["hallucination_rate"].value
        if use in ("train", "both"):
            assert rewards[0] < base_rewards[0] and rewards[1] < base_rewards[1] and rewards[2] == base_rewards[2]
            assert outcomes["hallucination_rate"][:2] == [1.0, 1.0]
        else:
            assert rewards == base_rewards
        assert (ev > base_eval) if use in ("eval", "both") else math.isclose(ev, base_eval)


def test_judge_in_bfloat16(tmp_path):
    # [reward.judge] dtype = "bfloat16" loads the weights at half the memory; verdicts stay
    # probabilities, close to the float32 ones
    from curriculum.spec import load_spec
    from rewards.model_judge import JudgeConfig, load, prompt

    spec = load_spec(_spec(tmp_path, f'path = "{TINY}"\ndtype = "bfloat16"'))
    cfg = JudgeConfig.from_table(spec.model.reward.model_dump()["judge"])
    assert cfg.dtype == "bfloat16"
    half, full = load(cfg), load(JudgeConfig(path=str(TINY)))
    assert half is not full and str(half.model.embedder.input_embedding.value.dtype) == "bfloat16"
    prompts = [prompt(ANS, "625 mg weekly"), prompt(ANS, "900 mg daily")]
    for a, b in zip(half(prompts), full(prompts)):
        assert 0 < a < 1 and abs(a - b) < 0.1


def test_spec_judge_errors_name_the_file_and_key(tmp_path):
    from curriculum.spec import SpecError, load_spec

    cases = [('path = "nowhere"', "reward.judge.path", "not a directory"),
             (f'path = "{TINY}"\nthreshold = 2', "reward.judge.threshold", "less than or equal to 1"),
             (f'path = "{TINY}"\nthresh = 0.5', "reward.judge.thresh", "did you mean 'threshold'"),
             (f'path = "{TINY}"\nuse = "always"', "reward.judge.use", "'eval', 'train' or 'both'"),
             (f'path = "{TINY}"\ndtype = "float16"', "reward.judge.dtype", "'float32' or 'bfloat16'"),
             ("use = \"eval\"", "reward.judge.path", "required key is missing")]
    for table, key, why in cases:
        with pytest.raises(SpecError) as e:
            load_spec(_spec(tmp_path, table))
        msg = str(e.value)
        assert "dipg.toml:" in msg and key in msg and why in msg, msg
        assert "Traceback" not in msg


def test_judge_is_an_option_of_the_dipg_reward_only():
    from curriculum import rewarding

    with pytest.raises(rewarding.RewardSpecError, match="option of the built-in dipg reward"):
        rewarding.resolve({"function": "x.py:f", "judge": {"path": str(TINY)}}, ROOT)


def _lines(tmp_path, n=12):
    rows = []
    for t, it in [(R(), ANS), (R(answer="ONC201 at 625 mg weekly for DIPG"), ANS), ("no tags", ANS)] * (n // 3):
        rows.append(json.dumps({"context": it.context, "question": it.question, "expected_answer": it.expected_answer,
                                "type": it.type, "response": t}))
    p = tmp_path / "lines.jsonl"
    p.write_text("\n".join(rows) + "\n")
    return p


def test_cli_judge_model(tmp_path):
    from rewards.cli import main

    path = _lines(tmp_path)
    got = {}
    for name, extra in (("rules", []), ("strict", ["--judge-model", str(TINY), "--judge-threshold", "1"]),
                        ("lenient", ["--judge-model", str(TINY), "--judge-threshold", "0", "--judge-batch", "3"])):
        out, err = io.StringIO(), io.StringIO()
        assert main(["score", str(path), "--json", *extra], out=out, err=err) == 0, err.getvalue()
        got[name] = json.loads(out.getvalue())
    h = {k: v["metrics"]["hallucination_rate"]["value"] for k, v in got.items()}
    assert h["lenient"] == h["rules"] < h["strict"]
    # the two factual answers become hallucinations; the response without tags has nothing to judge
    assert [x["flags"]["hallucination"] for x in got["strict"]["items"]][:3] == [True, True, False]
    for extra, why in ((["--judge-model", str(TINY / "missing")], "not a directory"),
                       (["--judge-model", str(TINY), "--jobs", "2"], "use --jobs 1"),
                       (["--judge-model", str(TINY), "--judge-threshold", "1.5"], "from 0 to 1")):
        out, err = io.StringIO(), io.StringIO()
        assert main(["score", str(path), *extra], out=out, err=err) == 2
        assert why in err.getvalue() and "Traceback" not in err.getvalue()


@pytest.mark.slow
def test_a_grpo_step_pays_the_judged_reward(tmp_path):
    """use = "train": the Tunix runner builds the reward from the run context's [reward] table,
    and a real GRPO step on the shipped policy pays the judged rewards: every completion the rules
    found supported and factual is paid less under threshold 1.0, every other one the same."""
    from curriculum import rewarding
    from rewards.model_judge import needs_model
    from runners.tunix.runner import TunixRunner
    from test_tunix_support import context, grpo_phase

    ctx = context(tmp_path / "run", model={"preset": "tiny", "init_from": "shipped"})
    ctx.reward = {"name": "dipg", "judge": {"path": str(TINY), "use": "train", "threshold": 1.0}}
    r = TunixRunner()
    r.open(ctx)
    r.setup_phase(grpo_phase(max_new_tokens=112, num_generations=8))
    plain = rewarding.from_context({"name": "dipg"})
    from rewards.builtin import _items

    seen = 0
    for _ in range(4):  # steps until one holds a supported factual answer to judge
        next(r.train(1))
        probe = r._reward
        judged = list(probe.rewards)
        assert len(judged) == len(probe.completions) == 16
        values = probe.live.values
        rules, _ = plain.fn(completions=probe.completions, values=values, **probe.columns)
        items = _items(probe.columns, len(probe.completions))
        asked = [needs_model(score(c, it, values)) for c, it in zip(probe.completions, items)]
        for a, j, q in zip(rules, judged, asked):
            assert (j < a) if q else (j == a)
        seen += sum(asked)
        if seen:
            break
    assert seen, "the shipped policy gave no supported factual answer to judge in 4 steps"
