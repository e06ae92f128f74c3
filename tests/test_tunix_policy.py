"""The shipped tiny policy (``[model] init_from``): validation of the key, packaging, and a real
load through the runner that generates well-formed answers."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest

from runners.tunix import config as cfg

ROOT = Path(__file__).resolve().parents[1]


def errors(model: dict) -> dict[str, str]:
    return dict(cfg.validate_config(model, {}, {}))


def test_shipped_policy_is_complete_and_valid():
    assert cfg.validate_config({"init_from": "shipped"}, {}, {}) == []
    card = json.loads((cfg.SHIPPED_POLICY / "policy.json").read_text())
    # how it was made is recorded next to it, with what it measured
    assert card["command"].startswith("python bench/train_tiny_policy.py")
    assert card["data"]["eval_items"] > 0 and card["sft"]["steps"] > 0
    assert 0.0 <= card["eval"]["verbatim_proofs"]["all"]["rate"] <= 1.0
    size = sum(f.stat().st_size for f in cfg.SHIPPED_POLICY.iterdir())
    assert size < 8e6  # a few MB


def test_package_data_ships_every_policy_file():
    """A normal (non-editable) install copies only files package-data names."""
    import fnmatch

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["runners"]
    base = ROOT / "runners"
    for f in cfg.SHIPPED_POLICY.iterdir():
        rel = f.relative_to(base).as_posix()
        assert any(fnmatch.fnmatch(rel, p) and rel.count("/") == p.count("/") for p in patterns), rel


def test_init_from_a_missing_or_incomplete_directory(tmp_path):
    missing = tmp_path / "nope"
    msg = errors({"init_from": str(missing)})["model.init_from"]
    assert "does not exist" in msg and str(missing) in msg and "'shipped'" in msg
    part = tmp_path / "part"
    part.mkdir()
    (part / "config.json").write_text("{}")
    msg = errors({"init_from": str(part)})["model.init_from"]
    assert "lacks model.safetensors, tokenizer.model" in msg
    assert "empty string" in errors({"init_from": " "})["model.init_from"]


def test_init_from_needs_a_gemma3_config(tmp_path):
    d = tmp_path / "p"
    shutil.copytree(cfg.SHIPPED_POLICY, d)
    (d / "config.json").write_text('{"model_type": "qwen3"}')
    msg = errors({"init_from": str(d)})["model.init_from"]
    assert "config.json" in msg and "Gemma 3" in msg
    raw = json.loads((cfg.SHIPPED_POLICY / "config.json").read_text())
    (d / "config.json").write_text(json.dumps(dict(raw, model_type="qwen3")))
    assert "model_type 'qwen3'" in errors({"init_from": str(d)})["model.init_from"]


def test_init_from_only_for_tiny_and_conflicting_keys():
    e = errors({"preset": "gemma3-1b", "init_from": "shipped"})
    assert "only for preset 'tiny'" in e["model.init_from"]
    layers = json.loads((cfg.SHIPPED_POLICY / "config.json").read_text())["num_hidden_layers"]
    e = errors({"init_from": "shipped", "num_layers": layers + 2, "init_seed": 3, "tokenizer_path": "/x"})
    assert f"differs from the {layers}" in e["model.num_layers"]
    assert "no effect" in e["model.init_seed"]
    assert "own tokenizer" in e["model.tokenizer_path"]
    # the same value as the checkpoint is fine; full fine-tuning is still required
    assert errors({"init_from": "shipped", "num_layers": layers}) == {}
    assert "lora_rank = 0" in errors({"init_from": "shipped", "lora_rank": 4})["model.lora_rank"]


def test_a_spec_with_a_bad_init_from_is_one_clear_error(tmp_path):
    from tests.tunix_util import cli

    p = cli("validate", "examples/dipg.toml", "--set", f"model.init_from={tmp_path / 'gone'}")
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    line = next(x for x in p.stderr.splitlines() if "model.init_from" in x)
    assert "examples/dipg.toml" in line and "does not exist" in line


@pytest.mark.slow
def test_shipped_policy_loads_and_answers_in_format(tmp_path):
    """Through the runner's real path: weights bit-exact from model.safetensors, the shipped
    tokenizer, greedy generations that are well formed and quote the context."""
    import safetensors.numpy as st

    from rewards import PRESETS, parse_response, score
    from runners.base import RunContext
    from runners.tunix import data as datamod
    from runners.tunix.runner import TunixRunner

    card = json.loads((cfg.SHIPPED_POLICY / "policy.json").read_text())
    r = TunixRunner()
    r.open(RunContext(run_dir=tmp_path, seed=card["seed"], model={"init_from": "shipped"}, data=card["data"],
                      runner={"wandb": "disabled"}))
    try:
        assert Path(r.tokenizer_path) == cfg.SHIPPED_POLICY / "tokenizer.model"
        assert not (tmp_path / "tokenizer").exists()  # no tokenizer trained for the run
        emb = st.load_file(str(cfg.SHIPPED_POLICY / "model.safetensors"))["model.embed_tokens.weight"]
        np.testing.assert_array_equal(np.asarray(r.model.embedder.input_embedding[...]), emb)
        items = r.eval_items[:8]
        prompts = [datamod.prompt_text(it, r.template, r.system_prompt) for it in items]
        texts = r.generate(prompts, 128, batch_size=8)
    finally:
        r.close()
    assert all(parse_response(t).ok for t in texts), texts
    from runners.datasets import to_dipg

    grounded = [score(t, to_dipg(it), PRESETS["soft"]).flags["grounded"] for t, it in zip(texts, items)]
    assert any(grounded), texts
