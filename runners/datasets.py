"""Datasets a runner trains on, as plain records (no jax here: the spec checks them at load time).

An :class:`Example` is one prompt: the user turn, an optional SFT target (``reference``) and the
columns handed to the reward (the reference answer among them).  Sources:

* ``jsonl``: one JSON object per line; ``fields`` maps roles to keys: ``prompt`` (the user turn,
  default "prompt"), ``answer`` (the reference answer, passed to the reward as ``answer``),
  ``response`` (the SFT target of prompt/response pairs) or ``messages`` (a chat: a list of
  ``{"role", "content"}``, the last assistant turn is the SFT target, the last user turn the
  prompt, a system turn the system prompt unless the spec gives one); ``columns`` lists more keys
  passed on to the reward under their own names.
* ``synthetic`` / ``sharegpt``: the DIPG datasets (rewards.data), with the DIPG reward's columns.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

#: how many problems one file reports before it stops
_MAX_PROBLEMS = 5


@dataclass(frozen=True)
class Example:
    id: str
    user: str  # the user turn (the system prompt is added by the chat template)
    reference: str = ""  # SFT target ("" when the dataset has none)
    columns: Mapping[str, Any] = field(default_factory=dict)  # passed to the reward
    system: str | None = None  # a system prompt the record carries (chat messages)


class DataFileError(ValueError):
    """``key`` names the spec key (e.g. "data.fields.prompt"); the message names the file."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


def from_dipg(item: Any) -> Example:
    """A DIPG item (rewards.data.Item) as an Example with the DIPG reward's columns."""
    from rewards import DEFAULT_SYSTEM_PROMPT, build_prompt

    return Example(
        id=str(item.id),
        user=build_prompt(item.context, item.question, system_prompt=""),
        reference=item.reference,
        system=DEFAULT_SYSTEM_PROMPT,  # its instructions, unless the spec gives a system prompt
        columns={
            "context": item.context,
            "question": item.question,
            "expected_answer": item.expected_answer,
            "task_type": item.type,
        },
    )


def to_dipg(example: Example) -> Any:
    """The DIPG item (rewards.Item) behind an Example made by :func:`from_dipg` (for scoring a
    generation with ``rewards.score`` directly, as the policy tests and benchmarks do)."""
    from rewards import Item

    c = example.columns
    return Item(id=example.id, type=str(c["task_type"]), context=str(c["context"]), question=str(c["question"]),
                expected_answer=str(c["expected_answer"]), reference=example.reference)


def as_example(item: Any) -> Example:
    return item if isinstance(item, Example) else from_dipg(item)


def _text(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)) and math.isfinite(v):
        return str(v)
    return None


def _from_messages(msgs: Any) -> tuple[str, str, str | None] | str:
    """(user, reference, system) of a chat, or why it is not usable."""
    if not isinstance(msgs, list) or not msgs:
        return "expected a non-empty list of {\"role\": ..., \"content\": ...} messages"
    system = user = ref = None
    for m in msgs:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            return "each message needs a string 'content'"
        role = m.get("role", m.get("from"))
        if role == "system":
            system = m["content"]
        elif role in ("user", "human"):
            if user is not None and ref is not None:
                return "only single-turn chats are supported (one user turn, then the assistant's)"
            user = m["content"]
        elif role in ("assistant", "gpt", "model"):
            ref = m["content"]
        else:
            return f"unknown role {role!r}; expected system, user or assistant"
    if user is None:
        return "no user message"
    return user, ref or "", system


def read_jsonl(path: Path, fields: Mapping[str, str], columns: Sequence[str], key: str, need_reference: bool = False,
               eval_file: bool = False) -> list[Example]:
    """The examples of one JSONL file; :class:`DataFileError` naming the file, line and key.
    An evaluation file (``eval_file``) needs no response: it is generated, not trained on."""
    p = Path(path)
    if not p.is_file():
        raise DataFileError(f"{key}.path", f"file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataFileError(f"{key}.path", f"cannot read {p}: {e}") from None
    f_prompt = fields.get("prompt", "prompt")
    f_answer, f_resp, f_msgs = fields.get("answer"), fields.get("response"), fields.get("messages")
    out: list[Example] = []
    problems: list[tuple[str, str]] = []
    for ln, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        if len(problems) >= _MAX_PROBLEMS:
            break
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            problems.append((f"{key}.path", f"{p}:{ln}: not valid JSON ({e.msg})"))
            continue
        if not isinstance(obj, dict):
            problems.append((f"{key}.path", f"{p}:{ln}: expected a JSON object per line"))
            continue
        system = None
        if f_msgs is not None:
            if f_msgs not in obj:
                problems.append((f"{key}.fields.messages", f"{p}:{ln}: no key '{f_msgs}' (keys: {', '.join(sorted(obj)) or 'none'})"))
                continue
            got = _from_messages(obj[f_msgs])
            if isinstance(got, str):
                problems.append((f"{key}.fields.messages", f"{p}:{ln}: key '{f_msgs}': {got}"))
                continue
            user, ref, system = got
        else:
            user = _text(obj.get(f_prompt))
            if user is None:
                what = "no key" if f_prompt not in obj else "not a string at key"
                problems.append((f"{key}.fields.prompt", f"{p}:{ln}: {what} '{f_prompt}' (keys: {', '.join(sorted(obj)) or 'none'})"))
                continue
            ref = ""
            if f_resp is not None and not (eval_file and f_resp not in obj):
                r = _text(obj.get(f_resp))
                if r is None:
                    problems.append((f"{key}.fields.response", f"{p}:{ln}: no string at key '{f_resp}'"))
                    continue
                ref = r
        cols: dict[str, Any] = {}
        if f_answer is not None:
            a = _text(obj.get(f_answer))
            if a is None:
                problems.append((f"{key}.fields.answer", f"{p}:{ln}: no string or number at key '{f_answer}'"))
                continue
            cols["answer"] = a
        bad = [c for c in columns if c not in obj]
        if bad:
            problems.append((f"{key}.columns", f"{p}:{ln}: no key {', '.join(repr(c) for c in bad)}"))
            continue
        for c in columns:
            v = obj[c]
            cols[c] = v if isinstance(v, (str, int, float, bool)) else json.dumps(v)
        if need_reference and not ref:
            problems.append((f"{key}.fields.response", f"{p}:{ln}: an SFT phase trains on this set but the record has no response"))
            continue
        out.append(Example(id=f"{p.stem}:{ln}", user=user, reference=ref, columns=cols, system=system))
    if problems:
        k, _ = problems[0]
        raise DataFileError(k, "; ".join(m for _, m in problems))
    if not out:
        raise DataFileError(f"{key}.path", f"{p} holds no records (an empty dataset)")
    return out


__all__ = ["Example", "DataFileError", "from_dipg", "as_example", "read_jsonl"]
