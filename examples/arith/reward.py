"""The arithmetic example's reward: format, correctness, and a penalty on text after the answer.

Registered with ``@register_reward``, so ``[reward] function = "arith/reward.py:arith"`` finds its
keys, outcomes and maximum.  Values (a preset holds all three; the curriculum anneals
``extra_penalty`` from lenient to strict):

* ``format``: paid when the completion starts with ``<answer>N</answer>``;
* ``correct``: paid when N is the reference answer;
* ``extra_penalty`` (negative): times the share of the completion after the answer (repetition
  or rambling), from 0 (nothing after it) to 1.
"""

from __future__ import annotations

import re

from curriculum.registry import register_reward

KEYS = ["format", "correct", "extra_penalty"]
_ANSWER = re.compile(r"\s*<answer>\s*(-?\d+)\s*</answer>(.*)", re.S)


def max_reward(values, **_columns):
    """The most one completion can earn: well formed, right, nothing after the answer."""
    return max(0.0, values["format"]) + max(0.0, values["correct"])


@register_reward(keys=KEYS, outcomes=["correct_rate", "format_rate", "extra_rate"], max_reward=max_reward)
def arith(prompts, completions, values, answer, **columns):
    rewards, correct, formed, extra = [], [], [], []
    for text, want in zip(completions, answer):
        m = _ANSWER.match(text)
        ok_format = m is not None
        ok = ok_format and int(m.group(1)) == int(want)
        tail = m.group(2).strip() if m else ""
        share = len(tail) / max(1, len(text.strip())) if m else 1.0
        rewards.append(values["format"] * ok_format + values["correct"] * ok + values["extra_penalty"] * share)
        correct.append(ok)
        formed.append(ok_format)
        extra.append(bool(tail) if m else None)  # not judged when there is no answer at all
    return rewards, {"correct_rate": correct, "format_rate": formed, "extra_rate": extra}
