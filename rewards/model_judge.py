"""An optional model-based judge: a second opinion, from a language model loaded from a local
directory, on whether the context supports an answer's claims.

Off by default.  A spec turns it on with ``[reward.judge]`` (``path``, ``use`` = "eval", "train"
or "both", ``threshold``, ...; see docs/rewards.md, "Model judge"); ``curriculum score`` with
``--judge-model DIR``.  The rules stay the grader: the model is asked only about answers that
state a fact and that the rules found supported, and it can only withdraw that support (the
answer becomes a hallucination, paid as the rules pay one: :func:`rewards.scoring.score`'s
``model_supported``).  It never clears a fabricated proof or an unsupported number, never judges
abstentions, conflict reports or refusals.

The model is any causal LM the Tunix runner can load from a directory (``config.json``,
``model.safetensors``, a tokenizer: ``runners/tunix/judge.py``); it is never downloaded.  It is
asked :data:`PROMPT` and its verdict is P(yes) between the first tokens of " yes" and " no" as
its next token; below ``threshold`` the answer is unsupported.  This module never imports jax:
the model is loaded on first use.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .parse import parse_lenient, parse_response
from .scoring import Item, Verdict, score

#: What the judge model is asked (the answer, the question and the context it must rest on).
PROMPT = (
    "You check answers against a clinical context. Answer yes only if every claim in the answer is "
    "stated in the context.\n\nContext:\n{context}\n\nQuestion: {question}\n\nAnswer: {answer}\n\n"
    "Is every claim in the answer supported by the context? Reply yes or no."
)
USES = ("eval", "train", "both")


@dataclass(frozen=True)
class JudgeConfig:
    """``[reward.judge]``: where the model is and how its verdicts are used."""

    path: str
    use: str = "eval"  # "eval": evaluations only; "train": training rewards only; "both"
    threshold: float = 0.5  # P(yes) below this: the answer is unsupported
    max_prompt_tokens: int = 1024  # longer prompts lose the start of the context
    batch_size: int = 8
    template: str | None = None  # chat template ("gemma", "chatml", "plain"); default gemma
    dtype: str = "float32"  # of the judge's weights: "float32" or "bfloat16"

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> "JudgeConfig":
        return cls(**{k: v for k, v in dict(table).items() if v is not None})


#: a support judge: prompts -> P(supported) each (runners/tunix/judge.py's LMSupportJudge)
SupportJudge = Callable[[Sequence[str]], list[float]]

_LOADED: dict[tuple[str, int, str | None, str], SupportJudge] = {}
_LOCK = threading.Lock()


def load(cfg: JudgeConfig) -> SupportJudge:
    """The judge model of ``cfg`` (loaded once per process and path)."""
    key = (str(Path(cfg.path).resolve()), cfg.max_prompt_tokens, cfg.template, cfg.dtype)
    with _LOCK:
        judge = _LOADED.get(key)
        if judge is None:
            from runners.tunix.judge import LMSupportJudge

            judge = _LOADED[key] = LMSupportJudge(Path(cfg.path), max_prompt_tokens=cfg.max_prompt_tokens,
                                                  template=cfg.template, dtype=cfg.dtype)
        return judge


def prompt(item: Item, answer: str) -> str:
    return PROMPT.format(context=item.context.strip(), question=item.question.strip(), answer=answer.strip())


def _answer_text(response: object) -> str:
    if not isinstance(response, str):
        return ""
    parsed = parse_response(response)
    return parsed.answer if parsed.ok else parse_lenient(response, parsed).answer


def needs_model(v: Verdict) -> bool:
    """Whether the model's opinion could change this verdict: an answer stating a fact that the
    rules found supported (no hallucination, no abstention, conflict report or refusal)."""
    f = v.flags
    if f["hallucination"] or f["abstained"] or f["conflict_reported"] or f["refusal"]:
        return False
    return bool(f["format_ok"]) or bool(v.detail.get("judged"))


def apply(verdicts: Sequence[Verdict | None], responses: Sequence[object], items: Sequence[Item],
          preset: Mapping[str, float], judge: SupportJudge, threshold: float,
          batch_size: int = 8) -> tuple[list[Verdict | None], int]:
    """The rules' ``verdicts`` with the model judge's opinion applied: ``judge`` is asked about
    the answers it could change (:func:`needs_model`), ``batch_size`` prompts at a time, and those
    responses are scored again with its verdict (P(yes) >= ``threshold``: supported).  A None
    verdict (the scorer failed) stays None.  Returns (verdicts, number of answers asked about)."""
    out = list(verdicts)
    ask = []
    for i, v in enumerate(out):
        if v is not None and needs_model(v):
            answer = _answer_text(responses[i])
            if answer.strip():
                ask.append((i, prompt(items[i], answer)))
    step = max(1, int(batch_size))
    for at in range(0, len(ask), step):
        chunk = ask[at : at + step]
        probs = judge([p for _, p in chunk])
        if len(probs) != len(chunk):
            raise ValueError(f"the judge gave {len(probs)} verdicts for {len(chunk)} prompts")
        for (i, _), p in zip(chunk, probs):
            v = score(responses[i], items[i], preset, model_supported=float(p) >= threshold)
            v.detail["model_p_supported"] = round(float(p), 4)
            out[i] = v
    return out, len(ask)


def score_batch(responses: Sequence[object], items: Sequence[Item], preset: Mapping[str, float],
                judge: SupportJudge, threshold: float, batch_size: int = 8) -> tuple[list[Verdict], int]:
    """:func:`rewards.scoring.score` of every response, then the model judge (:func:`apply`).
    Returns (verdicts, number of answers the model was asked about)."""
    verdicts = [score(r, it, preset) for r, it in zip(responses, items)]
    judged, n = apply(verdicts, responses, items, preset, judge, threshold, batch_size)
    return [v for v in judged if v is not None], n


def problem_with_dir(path: Path) -> str | None:
    """What keeps ``path`` from being a judge model directory, or None (file checks only: no
    model is loaded)."""
    import json

    if not path.is_dir():
        return f"{path} is not a directory (expected the judge model's config.json, *.safetensors and tokenizer)"
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        return f"{path} has no config.json (a Hugging Face Gemma 3 config is expected)"
    try:
        raw = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{cfg_file} is not readable JSON ({exc})"
    text = raw.get("text_config", raw) if isinstance(raw, dict) else {}
    kind = str((text.get("model_type") if isinstance(text, dict) else None) or (raw.get("model_type") if isinstance(raw, dict) else "") or "")
    if not kind.startswith("gemma3"):
        return f"{cfg_file} has model_type {kind or '(none)'!r}; the judge loads Gemma 3 checkpoints (gemma3 or gemma3_text)"
    if not any(path.glob("*.safetensors")):
        return f"{path} has no *.safetensors weights"
    if not ((path / "tokenizer.model").is_file() or (path / "tokenizer.json").is_file()):
        return f"{path} has no tokenizer (tokenizer.model or tokenizer.json)"
    return None
