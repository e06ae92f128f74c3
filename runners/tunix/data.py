"""Datasets of the Tunix runner: examples -> prompts, SFT token batches, GRPO prompt batches.

Examples (runners.datasets.Example) come from the ``[data]`` table: your own JSONL records, or
the DIPG datasets; a phase trains on the default dataset, a named one (``train.data = "hard"``)
or a weighted mixture (``train.data = { easy = 1, hard = 3 }``).

Both streams are deterministic functions of (seed, epoch, position), so their position is two
integers that go into the checkpoint JSON; a resumed run continues with the exact next batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from runners.tunix.config import FRESH_SET, DataSection
from runners.tunix.text import ChatTemplate


def load_items(d: DataSection, seed: int) -> tuple[dict[str, list[Any]], list[Any]]:
    """({dataset name: train examples}, eval examples) from the ``[data]`` table."""
    from rewards import data as rdata

    from runners.datasets import from_dipg, read_jsonl

    if d.source == "jsonl":
        sets = {"default": read_jsonl(Path(d.path), d.fields, d.columns, "data")}  # type: ignore[arg-type]
        for n, s in d.sets.items():
            sets[n] = read_jsonl(Path(s.path), s.fields if s.fields is not None else d.fields,
                                 s.columns if s.columns is not None else d.columns, f"data.sets.{n}")
        if d.eval_path:
            ev = read_jsonl(Path(d.eval_path), d.fields, d.columns, "data", eval_file=True)
        else:
            items = sets["default"]
            if len(items) < 2:
                raise ValueError(f"data.path: {d.path} holds {len(items)} records; need at least 2 (or give data.eval_path)")
            perm = np.random.default_rng([seed, 4099]).permutation(len(items))
            k = min(d.eval_items, len(items) // 2)
            held = set(perm[:k].tolist())
            ev = [items[i] for i in sorted(held)]
            sets["default"] = [it for i, it in enumerate(items) if i not in held]
        return sets, ev
    fresh = None
    fresh_eval: list[Any] = []
    if d.source == "synthetic":
        items = rdata.generate_items(d.num_items + d.eval_items, seed=seed)
        if d.fresh_items:
            fresh = fresh_items(items, d.fresh_items, seed)
        if d.fresh_eval_items:
            fresh_eval = fresh_items(list(items) + list(fresh or []), d.fresh_eval_items, seed, salt=EVAL_SALT)
    else:
        items = rdata.load_sharegpt(d.path)
        if len(items) < 2:
            raise ValueError(f"data.path: {d.path} holds {len(items)} usable items; need at least 2")
    frac = min(0.5, d.eval_items / max(1, len(items)))
    train, ev = rdata.split_items(items, eval_fraction=frac, seed=seed)
    sets = {"default": [from_dipg(it) for it in train]}
    if fresh is not None:
        sets[FRESH_SET] = [from_dipg(it) for it in fresh]
    return sets, [from_dipg(it) for it in list(ev) + fresh_eval]


#: the seed offsets of the items generated apart: GRPO prompts ("fresh") and more held-out items
FRESH_SALT = 7_919
EVAL_SALT = 104_729


def fresh_items(existing: Sequence[Any], n: int, seed: int, salt: int = FRESH_SALT) -> list[Any]:
    """``n`` synthetic items generated apart from ``existing`` (the training and held-out items of
    the same seed, and for ``EVAL_SALT`` the fresh ones too): their own seed (``salt``, so their
    own ids), no (context, question) pair in common,
    task types cycling as ``generate_items`` makes them.  The training/held-out split is not
    touched, so a policy fine-tuned on the training items has seen none of them."""
    from rewards import data as rdata

    seen = {(it.context, it.question) for it in existing}
    out: list[Any] = []
    k = n
    while len(out) < n:
        gen = rdata.generate_items(n + k, seed=(int(seed) * 1_000_003 + salt) % (2**31))
        out = [it for it in gen if (it.context, it.question) not in seen][:n]
        k *= 2
    return out


def prompt_text(item: Any, template: ChatTemplate, system_prompt: str | None) -> str:
    """The prompt an example is conditioned on (the spec's system prompt, else the record's)."""
    from runners.datasets import as_example

    ex = as_example(item)
    return template.prompt(ex.user, system_prompt if system_prompt is not None else ex.system)


def columns_of(items: Sequence[Any]) -> dict[str, list[Any]]:
    """The reward columns of examples, one list per column (a missing value is "")."""
    from runners.datasets import as_example

    exs = [as_example(it) for it in items]
    names: list[str] = []
    for ex in exs:
        names += [k for k in ex.columns if k not in names]
    return {k: [ex.columns.get(k, "") for ex in exs] for k in names}


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
        from runners.datasets import as_example

        rows, masks, lengths = [], [], []
        self.truncated = 0
        self.dropped = 0
        for it in (as_example(x) for x in items):
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
    """GRPO prompt batches: dicts of numpy arrays, "prompts" and every reward column."""

    def __init__(
        self, items: Sequence[Any], template: ChatTemplate, system_prompt: str | None, seed: int, shuffle: bool = True
    ) -> None:
        from runners.datasets import as_example

        self.items = [as_example(it) for it in items]
        self.prompts = [prompt_text(it, template, system_prompt) for it in self.items]
        self.columns = columns_of(self.items)
        self.cursor = Cursor(len(self.items), seed + 7919, shuffle)

    def rows(self, idx: Sequence[int]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"prompts": [self.prompts[i] for i in idx]}
        for k, col in self.columns.items():
            out[k] = [col[i] for i in idx]
        return out

    def next_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, dtype=object) for k, v in self.rows(self.cursor.take(batch_size).tolist()).items()}


class MixedPrompts:
    """A weighted mixture of prompt streams: each slot of a batch picks its dataset with a draw
    seeded by (seed, batches drawn), then takes that dataset's next prompt; deterministic, and
    its position (the batch count) goes into the checkpoint with each stream's cursor."""

    def __init__(self, sources: Mapping[str, PromptData], weights: Mapping[str, float], seed: int) -> None:
        self.sources = dict(sources)
        self.names = list(weights)
        w = np.asarray([float(weights[n]) for n in self.names], dtype=np.float64)
        self.p = w / w.sum()
        self.seed = seed
        self.drawn = 0
        cols: list[str] = []
        for n in self.names:
            cols += [c for c in self.sources[n].columns if c not in cols]
        self.column_names = cols

    def next_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, 52711, self.drawn])
        self.drawn += 1
        picks = rng.choice(len(self.names), size=batch_size, p=self.p) if len(self.names) > 1 else np.zeros(batch_size, int)
        out: dict[str, list[Any]] = {"prompts": [], **{c: [] for c in self.column_names}}
        for j in picks.tolist():
            src = self.sources[self.names[j]]
            row = src.rows(src.cursor.take(1).tolist())
            for k in out:
                out[k].append(row[k][0] if k in row else "")
        return {k: np.asarray(v, dtype=object) for k, v in out.items()}


class StepIterator:
    """One persistent iterator handed to Tunix; yields exactly the batches we allow."""

    def __init__(self, source: "PromptData | MixedPrompts", batch_size: int) -> None:
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
