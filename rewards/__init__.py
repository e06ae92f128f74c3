"""Reward for DIPG-safety RL post-training: strict format, grounding, correctness, abstention,
conflict and refusal judges, combined with signed preset values.

Importing this package never imports jax (numpy is imported lazily by metrics).  The hot
modules (text, parse, judges, scoring) run compiled by mypyc when the install built them and
their sources are unchanged since; otherwise from source (``rewards.native``).
"""

from . import native

native.select()  # before any compiled module can be imported

from .metrics import Metric, aggregate, evaluate, outcome_rates, wilson
from .parse import Parsed, extract_answer, parse_response
from .presets import PRESETS, REWARD_KEYS, TASK_TYPES, LivePreset, get_preset, max_reward, validate_preset
from .prompt import DEFAULT_SYSTEM_PROMPT, build_prompt
from .reward_fn import DipgReward
from .scoring import FLAG_NAMES, Item, Verdict, score

__all__ = [
    "REWARD_KEYS",
    "PRESETS",
    "TASK_TYPES",
    "FLAG_NAMES",
    "Item",
    "Verdict",
    "Metric",
    "Parsed",
    "score",
    "max_reward",
    "aggregate",
    "evaluate",
    "outcome_rates",
    "wilson",
    "build_prompt",
    "DEFAULT_SYSTEM_PROMPT",
    "LivePreset",
    "DipgReward",
    "get_preset",
    "validate_preset",
    "parse_response",
    "extract_answer",
]
