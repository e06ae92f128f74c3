"""Prompt construction shared by training and evaluation (context AND question, always)."""

from __future__ import annotations

DEFAULT_SYSTEM_PROMPT = (
    "You are a careful clinical reading assistant. Answer the question using only the context. "
    "Reply in exactly this format: <think>your reasoning</think><proof>\"exact quotes from the "
    "context\"</proof><answer>the short answer</answer>. If the context does not contain the "
    "answer, say that the context does not report it. If the context contradicts itself, say "
    "that it reports conflicting information."
)


def build_prompt(context: str, question: str, system_prompt: str | None = None) -> str:
    """The user-turn text: instructions, then the context and the question in tags.

    ``system_prompt=None`` uses :data:`DEFAULT_SYSTEM_PROMPT`; pass ``""`` for none (e.g. when
    the chat template carries the instructions separately).
    """
    instructions = DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt
    body = f"<context>\n{context.strip()}\n</context>\n\n<question>\n{question.strip()}\n</question>"
    return f"{instructions.strip()}\n\n{body}" if instructions.strip() else body
