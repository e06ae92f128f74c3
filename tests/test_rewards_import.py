"""Importing rewards must never import jax (checked in a fresh interpreter)."""

import subprocess
import sys


def test_import_rewards_does_not_import_jax():
    code = (
        "import sys\n"
        "import rewards, rewards.data, rewards.cli, rewards.metrics\n"
        "from rewards import aggregate, score, Item, PRESETS\n"
        "it = Item('i', 'answerable', 'c.', 'q?', 'a')\n"
        "aggregate([score('x', it, PRESETS['medium'])])\n"
        "bad = [m for m in sys.modules if m == 'jax' or m.startswith(('jax.', 'jaxlib', 'tunix', 'flax'))]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "ok"


def test_contract_names_exist():
    import rewards
    from rewards.data import generate_items, load_items, load_sharegpt, split_items  # noqa: F401

    for name in ("REWARD_KEYS", "PRESETS", "Item", "Verdict", "score", "max_reward", "aggregate", "outcome_rates",
                 "build_prompt", "LivePreset", "DipgReward"):
        assert hasattr(rewards, name), name
    assert len(rewards.REWARD_KEYS) == 12
    assert set(rewards.PRESETS) >= {"soft", "medium"}
    assert rewards.PRESETS["soft"]["hallucination_penalty"] == -5 and rewards.PRESETS["medium"]["hallucination_penalty"] == -10
