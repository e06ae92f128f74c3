"""Shared helpers of the Tunix runner tests (no tests here): the smallest useful tiny model and phases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

TINY_MODEL: dict[str, Any] = {
    "num_layers": 2,
    "embed_dim": 32,
    "hidden_dim": 64,
    "num_heads": 2,
    "head_dim": 16,
    "num_kv_heads": 1,
    "vocab_size": 600,
}
TINY_DATA: dict[str, Any] = {"num_items": 90, "eval_items": 9, "system_prompt": ""}
RUNNER: dict[str, Any] = {"log_every": 1000, "eval_batch_size": 8}  # no "wandb": leave WANDB_MODE alone


def context(run_dir: Path, model: dict | None = None, data: dict | None = None, seed: int = 0):
    from runners.base import RunContext

    return RunContext(
        run_dir=Path(run_dir),
        seed=seed,
        model=dict(TINY_MODEL if model is None else model),
        data=dict(TINY_DATA if data is None else data),
        runner=dict(RUNNER),
    )


def real_context(tmp_path: Path, preset: str, path, **model):
    """A RunContext for real weights: ``preset`` loaded from the checkpoint directory ``path``."""
    return context(tmp_path / "run", {"preset": preset, "path": str(path), "dtype": "float32", **model})


def sft_phase(global_step: int = 0, start: int = 0, max_steps: int = 4):
    from rewards import PRESETS

    from runners.base import PhaseSetup

    return PhaseSetup(
        name="sft",
        kind="sft",
        ordinal=0,
        max_steps=max_steps,
        start_phase_step=start,
        global_step=global_step,
        penalties=dict(PRESETS["soft"]),
        train={"batch_size": 4, "max_seq_len": 256, "learning_rate": 1e-2, "length_bucket": 0},
        eval={"max_new_tokens": 8, "num_items": 4},
    )


def grpo_phase(name: str = "soft", global_step: int = 0, start: int = 0, preset: str = "soft", **train):
    from rewards import PRESETS

    from runners.base import PhaseSetup

    hp = {"batch_size": 2, "num_generations": 2, "max_new_tokens": 8, "beta": 0.04, "learning_rate": 1e-3}
    hp.update(train)
    return PhaseSetup(
        name=name,
        kind="grpo",
        ordinal=1,
        max_steps=20,
        start_phase_step=start,
        global_step=global_step,
        penalties=dict(PRESETS[preset]),
        train=hp,
        eval={"max_new_tokens": 8, "num_items": 4},
        previous_phase="sft",
    )


def params(model) -> dict[str, np.ndarray]:
    """Host copy of every parameter of a model, keyed by path."""
    import jax
    from flax import nnx

    flat = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(model, nnx.Param)))[0]
    return {jax.tree_util.keystr(p): np.array(jax.device_get(v)) for p, v in flat}


def weights(runner) -> dict[str, np.ndarray]:
    """Host copy of every parameter of the runner's model, keyed by path."""
    return params(runner.model)


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def differs(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return any(not np.array_equal(a[k], b[k]) for k in a)
