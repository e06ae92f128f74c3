"""Datasets of the Tunix runner: items -> prompts, SFT token batches, GRPO prompt batches.

Both streams are deterministic functions of (seed, epoch, position), so their position is two
integers that go into the checkpoint JSON; a resumed run continues with the exact next batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from runners.tunix.config import DataSection
from runners.tunix.text import ChatTemplate


def load_items(d: DataSection, seed: int) -> tuple[list[Any], list[Any]]:
    """(train items, eval items) from the ``[data]`` table, via rewards.data."""
    from rewards import data as rdata

    if d.source == "synthetic":
        items = rdata.generate_items(d.num_items + d.eval_items, seed=seed)
    else:
        items = rdata.load_sharegpt(d.path)
        if len(items) < 2:
            raise ValueError(f"data.path: {d.path} holds {len(items)} usable items; need at least 2")
    frac = min(0.5, d.eval_items / max(1, len(items)))
    train, ev = rdata.split_items(items, eval_fraction=frac, seed=seed)
    return list(train), list(ev)


def prompt_text(item: Any, template: ChatTemplate, system_prompt: str | None) -> str:
    from rewards import build_prompt

    return template.prompt(build_prompt(item.context, item.question, system_prompt=system_prompt))


@dataclass
class Cursor:
    """Position in an endless, per-epoch shuffled stream over ``n`` rows."""

    n: int
    seed: int
    shuffle: bool = True
    epoch: int = 0
    pos: int = 0
    _perm: np.ndarray | None = field(default=None, repr=False)
    _perm_epoch: int = -1

    def _order(self) -> np.ndarray:
        if self._perm is None or self._perm_epoch != self.epoch:
            if self.shuffle:
                self._perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            else:
                self._perm = np.arange(self.n)
            self._perm_epoch = self.epoch
        return self._perm

    def take(self, k: int) -> np.ndarray:
        out = []
        while len(out) < k:
            order = self._order()
            j = min(self.n - self.pos, k - len(out))
            out.extend(order[self.pos : self.pos + j].tolist())
            self.pos += j
            if self.pos >= self.n:
                self.epoch += 1
                self.pos = 0
        return np.asarray(out, dtype=np.int64)

    def state(self) -> dict[str, int]:
        return {"epoch": int(self.epoch), "pos": int(self.pos)}

    def load(self, s: dict[str, int]) -> None:
        self.epoch, self.pos = int(s["epoch"]), int(s["pos"])
        self._perm = None


class SftData:
    """Pre-tokenised SFT rows: [BOS] prompt | response assistant_end [EOS], loss on the response."""

    def __init__(
        self,
        items: Sequence[Any],
        tokenizer,
        template: ChatTemplate,
        system_prompt: str | None,
        max_len: int,
        seed: int,
        pad_id: int,
        bos_id: int | None,
        eos_id: int,
        end_id: int | None,
        shuffle: bool = True,
    ) -> None:
        rows, masks, lengths = [], [], []
        self.truncated = 0
        self.dropped = 0
        for it in items:
            p = list(tokenizer.encode(prompt_text(it, template, system_prompt)))
            r = list(tokenizer.encode(it.reference))
            if bos_id is not None and bos_id >= 0:
                p = [bos_id] + p
            tail = ([end_id] if end_id is not None else []) + [eos_id]
            r = r + tail
            toks = p + r
            mask = [0] * len(p) + [1] * len(r)
            if len(toks) > max_len:
                self.truncated += 1
                toks, mask = toks[:max_len], mask[:max_len]
                if not any(mask):  # nothing left to learn from: drop the row
                    self.dropped += 1
                    continue
            rows.append(toks + [pad_id] * (max_len - len(toks)))
            masks.append(mask + [0] * (max_len - len(mask)))
            lengths.append(len(toks))
        if not rows:
            raise ValueError(
                f"train.max_seq_len = {max_len} leaves no response token in any SFT row; raise it"
            )
        self.tokens = np.asarray(rows, dtype=np.int32)
        self.masks = np.asarray(masks, dtype=np.int32)
        # real lengths, not a count of non-pad ids: with pad == EOS (Llama 3 has no pad token) that
        # count misses the final EOS and length bucketing could cut it off
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.max_len = max_len
        self.seed = seed
        self.shuffle = shuffle
        self.cursor = Cursor(len(rows), seed, shuffle)  # pos counts rows taken in the epoch

    def __len__(self) -> int:
        return len(self.tokens)

    def _plan(self, epoch: int, batch_size: int, bucket: int) -> list[np.ndarray]:
        """The epoch's batches: a shuffled order; with ``bucket`` > 0, rows are sorted by length
        inside windows of 16 batches (so a batch pads to a short length) and the batches are
        shuffled again.  Deterministic in (seed, epoch, batch_size, bucket)."""
        key = (epoch, batch_size, bucket)
        if getattr(self, "_plan_key", None) == key:
            return self._plan_cache
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self)) if self.shuffle else np.arange(len(self))
        n_full = len(order) // batch_size * batch_size
        if n_full == 0:  # fewer rows than a batch: repeat rows
            order = np.resize(order, batch_size)
            n_full = batch_size
        order = order[:n_full]
        if bucket > 0:
            window = batch_size * 16
            parts = []
            for i in range(0, n_full, window):
                w = order[i : i + window]
                parts.append(w[np.argsort(self.lengths[w], kind="stable")])
            order = np.concatenate(parts)
        batches = [order[i : i + batch_size] for i in range(0, n_full, batch_size)]
        if bucket > 0 and self.shuffle:
            perm = rng.permutation(len(batches))
            batches = [batches[i] for i in perm]
        self._plan_key, self._plan_cache = key, batches
        return batches

    def next_batch(self, batch_size: int, bucket: int = 0):
        """(tokens, masks) of the next batch; with ``bucket`` > 0 padded only up to the batch's
        longest row rounded up to a multiple of ``bucket`` (few distinct shapes -> few compiles)."""
        c = self.cursor
        batches = self._plan(c.epoch, batch_size, bucket)
        b = c.pos // batch_size
        if b >= len(batches):
            c.epoch, c.pos, b = c.epoch + 1, 0, 0
            batches = self._plan(c.epoch, batch_size, bucket)
        idx = batches[b]
        c.pos = (b + 1) * batch_size
        if c.pos >= len(batches) * batch_size:
            c.epoch, c.pos = c.epoch + 1, 0
        length = self.max_len
        if bucket > 0:
            longest = int(self.lengths[idx].max())
            length = min(self.max_len, -(-longest // bucket) * bucket)
        return self.tokens[idx, :length], self.masks[idx, :length]


class PromptData:
    """GRPO prompt batches: dicts of numpy string arrays (the columns DipgReward reads)."""

    def __init__(
        self, items: Sequence[Any], template: ChatTemplate, system_prompt: str | None, seed: int, shuffle: bool = True
    ) -> None:
        self.items = list(items)
        self.prompts = [prompt_text(it, template, system_prompt) for it in self.items]
        self.cursor = Cursor(len(self.items), seed + 7919, shuffle)

    def next_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        idx = self.cursor.take(batch_size)
        its = [self.items[i] for i in idx]
        return {
            "prompts": np.asarray([self.prompts[i] for i in idx], dtype=object),
            "context": np.asarray([it.context for it in its], dtype=object),
            "question": np.asarray([it.question for it in its], dtype=object),
            "expected_answer": np.asarray([it.expected_answer for it in its], dtype=object),
            "task_type": np.asarray([it.type for it in its], dtype=object),
        }


class StepIterator:
    """One persistent iterator handed to Tunix; yields exactly the batches we allow."""

    def __init__(self, source: PromptData, batch_size: int) -> None:
        self.source = source
        self.batch_size = batch_size
        self.allowance = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.allowance <= 0:
            raise StopIteration
        self.allowance -= 1
        return self.source.next_batch(self.batch_size)
