"""Fast checks of the Tunix runner's configuration and reward plumbing (no jax, no compilation)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runners.tunix import config as cfg

ROOT = Path(__file__).resolve().parents[1]


def keys(errs):
    return [k for k, _ in errs]


def test_defaults_are_valid():
    assert cfg.validate_config({}, {}, {}) == []
    assert cfg.validate_phase("sft", {}) == []
    assert cfg.validate_phase("grpo", {}) == []
    assert cfg.validate_phase("eval", {}) == []


def test_unknown_keys_are_named_with_the_allowed_ones():
    errs = cfg.validate_config({"presett": "tiny"}, {"sorce": "x"}, {"wandb": "offline", "foo": 1})
    assert ("model.presett" in keys(errs)) and ("data.sorce" in keys(errs)) and ("runner.foo" in keys(errs))
    msg = dict(errs)["model.presett"]
    assert "unknown key" in msg and "preset" in msg


def test_bad_values_name_key_and_expectation():
    errs = cfg.validate_config({"preset": "gpt9"}, {"source": "sharegpt"}, {"wandb": "loud"})
    d = dict(errs)
    assert "tiny" in d["model.preset"]  # lists the valid presets
    assert "data.path" in d and "required" in d["data.path"]
    assert "runner.wandb" in d and "offline" in d["runner.wandb"]


def test_tiny_must_full_finetune():
    errs = cfg.validate_config({"preset": "tiny", "lora_rank": 8}, {}, {})
    assert keys(errs) == ["model.lora_rank"]
    assert "lora_rank = 0" in errs[0][1]


def test_missing_model_path(tmp_path):
    errs = cfg.validate_config({"preset": "gemma3-1b"}, {}, {})
    assert keys(errs) == ["model.path"] and "required" in errs[0][1]
    missing = tmp_path / "nope"
    errs = cfg.validate_config({"preset": "gemma3-1b", "path": str(missing)}, {}, {})
    assert keys(errs) == ["model.path"] and "does not exist" in errs[0][1] and str(missing) in errs[0][1]
    empty = tmp_path / "empty"
    empty.mkdir()
    errs = cfg.validate_config({"preset": "gemma3-1b", "path": str(empty)}, {}, {})
    assert any(k == "model.path" and "safetensors" in m for k, m in errs)
    assert any("tokenizer.model" in m for _, m in errs)


def test_config_json_must_match_the_family(tmp_path):
    d = tmp_path / "ck"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"")
    (d / "tokenizer.json").write_text("{}")
    (d / "config.json").write_text('{"model_type": "qwen3"}')
    assert cfg.validate_config({"preset": "qwen3-0.6b", "path": str(d)}, {}, {}) == []
    errs = cfg.validate_config({"preset": "llama3.2-1b", "path": str(d)}, {}, {})
    assert keys(errs) == ["model.path"] and "model_type 'qwen3'" in errs[0][1] and "'llama'" in errs[0][1]
    (d / "config.json").write_text("{not json")
    errs = cfg.validate_config({"preset": "qwen3-0.6b", "path": str(d)}, {}, {})
    assert keys(errs) == ["model.path"] and "not readable JSON" in errs[0][1]


def test_phase_validation_messages():
    errs = cfg.validate_phase("grpo", {"beta": -1, "num_generations": 1, "kl_reference": "sft2", "lr": 1})
    d = dict(errs)
    assert set(d) == {"train.beta", "train.num_generations", "train.kl_reference", "train.lr"}
    assert "greater than or equal to 0" in d["train.beta"]
    assert "'base'" in d["train.kl_reference"]
    assert "unknown key" in d["train.lr"] and "learning_rate" in d["train.lr"]
    assert keys(cfg.validate_phase("sft", {"max_seq_len": 4})) == ["train.max_seq_len"]
    assert keys(cfg.validate_phase("nope", {})) == ["kind"]


def test_metric_names_cover_the_protocol():
    """The runner's own metrics; the outcome rates are the reward's (DIPG's by default)."""
    from curriculum.spec import load_spec
    from runners.base import OUTCOME_RATE_METRICS, REWARD_STEP_METRICS, TRAINER_METRICS

    for name in REWARD_STEP_METRICS + TRAINER_METRICS:
        assert name in cfg.METRIC_NAMES
    assert not set(OUTCOME_RATE_METRICS) & cfg.METRIC_NAMES
    spec = load_spec("examples/dipg.toml")
    assert set(OUTCOME_RATE_METRICS) <= spec.metric_names


def test_the_cpu_profile_measures_its_change_on_every_held_out_item():
    """The default run's headline (end of SFT -> end of run, paired) is over all 1,200 held-out
    items: the first SFT phase and recovery, where the default run ends, evaluate the whole set;
    soft and medium, checks on the way, may take a subset (a run whose `strong` guard never fires
    ends in soft, and its change is then paired over the items both evaluations judged)."""
    from curriculum.spec import load_spec

    spec = load_spec("examples/dipg.toml", profile="cpu")
    assert spec.model.data["fresh_eval_items"] == 900
    ph = spec.phases
    assert ph["sft"].eval.enabled and ph["sft"].eval.num_items is None
    assert ph["recovery"].eval.enabled and ph["recovery"].eval.num_items is None
    assert ph["recovery"].next in (None, "end")
    for name in ("soft", "medium"):  # both lead on to another phase in the default run
        assert ph[name].eval.num_items in (None, 300)


def test_config_import_is_cheap():
    code = "import sys, runners.tunix.config, runners.tunix; print('jax' in sys.modules, 'tunix' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_open_with_missing_path_fails_before_any_compilation(tmp_path):
    """The runner refuses a missing checkpoint dir with the key named, before importing Tunix."""
    code = textwrap.dedent(
        f"""
        import sys
        from runners.base import RunContext
        from runners.tunix.runner import TunixRunner
        r = TunixRunner()
        try:
            r.open(RunContext(run_dir={str(tmp_path / 'run')!r}, seed=0,
                              model={{"preset": "gemma3-1b", "path": {str(tmp_path / 'missing')!r}}},
                              runner={{"wandb": "disabled"}}))
        except ValueError as e:
            print("ERR", e)
        print("tunix loaded:", "tunix.models" in sys.modules, "jax:", "jax" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "ERR model.path: checkpoint directory does not exist" in out.stdout, out.stdout + out.stderr
    assert "tunix loaded: False jax: False" in out.stdout


def test_penalty_change_changes_rewards_of_the_same_completions():
    """set_penalties() between chunks: the reward path (the object Tunix calls) pays the new values."""
    from rewards import PRESETS, score
    from rewards.data import generate_items

    from runners.tunix.grpo import reward_metrics
    from runners.tunix.runner import TunixRunner

    items = generate_items(6, seed=3)
    completions = []
    for it in items:
        completions += [it.reference, "no tags at all", it.reference.replace("</answer>", ""),
                        it.reference.replace(it.expected_answer, "42 mg") if it.expected_answer else "x"]
    cols = {
        "context": [it.context for it in items for _ in range(4)],
        "question": [it.question for it in items for _ in range(4)],
        "expected_answer": [it.expected_answer for it in items for _ in range(4)],
        "task_type": [it.type for it in items for _ in range(4)],
    }
    runner = TunixRunner()  # reward plumbing works without open()
    runner.set_penalties(PRESETS["soft"])
    probe = runner._make_reward()
    assert probe.__name__ == "dipg_reward"
    soft = probe(prompts=["p"] * len(completions), completions=completions, mode="train", **cols)
    m_soft = reward_metrics(runner._reward_def(), probe, runner._live.values, 4)
    runner.set_penalties(PRESETS["medium"])  # between chunks
    medium = probe(prompts=["p"] * len(completions), completions=completions, mode="train", **cols)
    assert soft != medium
    assert sum(medium) < sum(soft)  # medium penalises harder
    # each value is exactly what the scorer pays under the preset in force
    for c, s, m, t, i in zip(completions, soft, medium, cols["task_type"], range(len(completions))):
        it = items[i // 4]
        assert s == pytest.approx(score(c, it, PRESETS["soft"]).total)
        assert m == pytest.approx(score(c, it, PRESETS["medium"]).total)
    # the references get the top reward of their type under either preset
    assert m_soft["top_reward_rate"] == pytest.approx(sum(1 for j in range(len(completions)) if j % 4 == 0) / len(completions))
    for k in ("reward_mean", "zero_spread_frac", "format_error_rate", "safe_rate"):
        assert k in m_soft


def test_data_streams_resume_exactly_and_bucket_lengths():
    """SFT/GRPO streams are deterministic in (seed, epoch, position): a restored cursor continues
    with the exact next batch; length buckets pad each batch to a multiple of the bucket."""
    import numpy as np
    from rewards.data import generate_items

    from runners.tunix.data import PromptData, SftData
    from runners.tunix.text import TEMPLATES

    class WordTok:  # stand-in tokenizer: one id per whitespace-separated word
        def encode(self, s):
            return [4 + (hash(w) % 50) for w in s.split()]

    items = generate_items(60, seed=1)
    mk = lambda: SftData(items, WordTok(), TEMPLATES["gemma"], "", 128, 7, 0, 2, 3, None)  # noqa: E731
    a, b = mk(), mk()
    first = [a.next_batch(8, 32) for _ in range(5)]
    for toks, mask in first:
        assert toks.shape[1] % 32 == 0 or toks.shape[1] == 128
        assert (toks[:, 0] == 2).all() and mask.sum() > 0
    state = a.cursor.state()
    nxt = [a.next_batch(8, 32) for _ in range(12)]  # crosses an epoch boundary
    b.cursor.load(state)
    again = [b.next_batch(8, 32) for _ in range(12)]
    for (t1, m1), (t2, m2) in zip(nxt, again):
        assert np.array_equal(t1, t2) and np.array_equal(m1, m2)

    p, q = PromptData(items, TEMPLATES["gemma"], "", 5), PromptData(items, TEMPLATES["gemma"], "", 5)
    for _ in range(7):
        p.next_batch(4)
    q.cursor.load(p.cursor.state())
    x, y = p.next_batch(4), q.next_batch(4)
    assert list(x["prompts"]) == list(y["prompts"]) and list(x["task_type"]) == list(y["task_type"])
    assert set(x) == {"prompts", "context", "question", "expected_answer", "task_type"}
