"""The model judge's language model: a Gemma 3 checkpoint from a local directory, asked whether an
answer is supported (rewards/model_judge.py builds the prompts and uses the verdicts).

``LMSupportJudge(path)(prompts)`` returns, per prompt, P(yes) between the first token of " yes"
and of " no" as the model's next token after the prompt (laid out with the chat template of the
model's family).  The directory holds ``config.json`` (model_type gemma3 / gemma3_text),
``model.safetensors`` and ``tokenizer.model`` (SentencePiece) or a Hugging Face tokenizer; it is
never downloaded.  It runs on this process's devices (in a multi-host run each process judges
its own completions).  Prompts are right-padded into batches of a few fixed lengths (multiples of
64 tokens, so few shapes are compiled), and a prompt longer than ``max_prompt_tokens`` keeps its
last tokens (the question and the answer; the start of the context goes).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from runners.tunix.config import FAMILIES
from runners.tunix.model import _dtype, gemma3_config_from_json
from runners.tunix.text import TEMPLATES, load_tokenizer

_BUCKET = 64


class JudgeModelError(ValueError):
    """The judge directory cannot be used (what is missing or wrong, and where)."""


class LMSupportJudge:
    """A Gemma 3 judge loaded from ``path``; callable on a list of prompts."""

    def __init__(self, path: Path, max_prompt_tokens: int = 1024, template: str | None = None, dtype: str = "float32"):
        from tunix.models import automodel
        from tunix.sft import utils as sft_utils

        from rewards.model_judge import problem_with_dir

        self.path = Path(path).expanduser()
        why = problem_with_dir(self.path)
        if why:
            raise JudgeModelError(why)
        self.max_prompt_tokens = int(max_prompt_tokens)
        self.template = TEMPLATES[template or "gemma"]
        self.tokenizer = load_tokenizer(self.path)
        self._sft_utils = sft_utils
        # this process's devices only: every process of a multi-host run asks about its own
        # completions, so the judge must not span (and wait for) the others
        local = jax.local_devices()
        self.mesh = jax.make_mesh((len(local), 1), ("fsdp", "tp"), axis_types=(jax.sharding.AxisType.Auto,) * 2,
                                  devices=local)
        cfg = gemma3_config_from_json(self.path, _dtype(dtype))
        try:
            self.model = automodel.create_model_from_safe_tensors(FAMILIES["gemma3-1b"], str(self.path), cfg, self.mesh,
                                                                  dtype=_dtype(dtype))
        except (ValueError, AssertionError, RuntimeError) as exc:
            first = " ".join(str(exc).split())[:300]
            raise JudgeModelError(f"{self.path}: could not load the weights as Gemma 3: {first}") from exc
        self.yes_id, self.no_id = self._first_id(" yes"), self._first_id(" no")
        if self.yes_id == self.no_id:
            raise JudgeModelError(f"{self.path}: the tokenizer starts ' yes' and ' no' with the same token")
        self.bos = self._special("bos_id", "bos_token_id")
        self.pad = self._special("pad_id", "pad_token_id")
        if self.pad is None or self.pad < 0:
            self.pad = 0

        @nnx.jit
        def last_logits(model, tokens, positions, mask, last):
            logits, _ = model(tokens, positions, None, mask)
            return jnp.take_along_axis(logits, last[:, None, None], axis=1)[:, 0, :]

        self._last_logits = last_logits

    def _special(self, sp_name: str, hf_name: str) -> int | None:
        v = getattr(self.tokenizer, sp_name, None)
        v = v() if callable(v) else getattr(self.tokenizer, hf_name, v)
        return None if v is None else int(v)

    def _encode(self, text: str) -> list[int]:
        tk = self.tokenizer
        if hasattr(tk, "encode_as_ids"):
            return list(tk.encode_as_ids(text))
        return list(tk.encode(text, add_special_tokens=False))

    def _first_id(self, text: str) -> int:
        ids = self._encode(text)
        if not ids:
            raise JudgeModelError(f"{self.path}: the tokenizer encodes {text!r} as nothing")
        return ids[0]

    def _ids(self, prompt: str) -> list[int]:
        ids = self._encode(self.template.prompt(prompt))
        keep = self.max_prompt_tokens - (1 if self.bos is not None and self.bos >= 0 else 0)
        ids = ids[-keep:]
        if self.bos is not None and self.bos >= 0:
            ids = [self.bos] + ids
        return ids

    def __call__(self, prompts: Sequence[str]) -> list[float]:
        if not prompts:
            return []
        rows = [self._ids(p) for p in prompts]
        width = _BUCKET * math.ceil(max(len(r) for r in rows) / _BUCKET)
        tokens = np.full((len(rows), width), self.pad, dtype=np.int32)
        valid = np.zeros((len(rows), width), dtype=bool)
        for i, r in enumerate(rows):
            tokens[i, : len(r)] = r
            valid[i, : len(r)] = True
        last = np.array([len(r) - 1 for r in rows], dtype=np.int32)
        positions = self._sft_utils.build_positions_from_mask(jnp.asarray(valid))
        mask = self._sft_utils.make_causal_attn_mask(jnp.asarray(valid))
        with jax.set_mesh(self.mesh):
            logits = self._last_logits(self.model, jnp.asarray(tokens), positions, mask, jnp.asarray(last))
        pair = np.asarray(logits[:, jnp.array([self.yes_id, self.no_id])], dtype=np.float64)
        pair -= pair.max(axis=1, keepdims=True)
        p = np.exp(pair)
        return [float(x) for x in p[:, 0] / p.sum(axis=1)]
