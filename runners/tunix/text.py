"""Tokenizers and chat templates of the Tunix runner (no jax here).

The tiny preset gets a SentencePiece BPE model trained on the run's own dataset: about 1,000
pieces, the answer tags and the chat-turn markers as user-defined symbols, byte fallback, identity
normalisation (every text round-trips exactly), no dummy prefix (prompt and response tokenise
independently of each other).  It is cached in the run directory and reused when present.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

TAGS: tuple[str, ...] = ("<think>", "</think>", "<proof>", "</proof>", "<answer>", "</answer>")


@dataclass(frozen=True)
class ChatTemplate:
    """How one exchange (optional system prompt, user turn, assistant turn) is laid out as text."""

    name: str
    user_start: str
    user_end: str
    assistant_start: str
    assistant_end: str  # appended to the SFT target (then EOS); also a stop token for generation
    system_start: str = ""
    system_end: str = ""
    system_in_user: bool = True  # Gemma has no system role: the system prompt opens the user turn

    @property
    def markers(self) -> tuple[str, ...]:
        parts = {
            self.user_start.strip(),
            self.user_end.strip(),
            self.assistant_start.strip(),
            self.assistant_end.strip(),
            self.system_start.strip(),
            self.system_end.strip(),
        }
        # keep only marker-like pieces ("<...>" or "<|...|>")
        out = []
        for p in parts:
            for tok in p.split():
                if tok.startswith("<") and tok.endswith(">"):
                    out.append(tok)
        return tuple(sorted(set(out)))

    def prompt(self, user: str, system_prompt: str | None = None) -> str:
        """The text the model is conditioned on: everything up to the assistant's first token."""
        text = ""
        if system_prompt and not self.system_in_user:
            text += f"{self.system_start}{system_prompt}{self.system_end}"
        if system_prompt and self.system_in_user:
            user = f"{system_prompt}\n\n{user}"
        text += f"{self.user_start}{user}{self.user_end}{self.assistant_start}"
        return text


TEMPLATES: dict[str, ChatTemplate] = {
    "gemma": ChatTemplate(
        name="gemma",
        user_start="<start_of_turn>user\n",
        user_end="<end_of_turn>\n",
        assistant_start="<start_of_turn>model\n",
        assistant_end="<end_of_turn>",
    ),
    "chatml": ChatTemplate(
        name="chatml",
        system_start="<|im_start|>system\n",
        system_end="<|im_end|>\n",
        user_start="<|im_start|>user\n",
        user_end="<|im_end|>\n",
        assistant_start="<|im_start|>assistant\n",
        assistant_end="<|im_end|>",
        system_in_user=False,
    ),
    "plain": ChatTemplate(
        name="plain",
        user_start="User: ",
        user_end="\n",
        assistant_start="Assistant: ",
        assistant_end="",
    ),
}


def default_template(family: str) -> str:
    return "gemma" if family == "gemma3" else ("chatml" if family.startswith("qwen") else "plain")


def train_sentencepiece(
    texts: Iterable[str],
    out_path: Path,
    *,
    vocab_size: int,
    extra_symbols: Sequence[str] = (),
    seed_text: str = "",
) -> Path:
    """Train a SentencePiece BPE model on ``texts`` and write it atomically to ``out_path``."""
    import sentencepiece as spm

    symbols = list(dict.fromkeys([*TAGS, *extra_symbols, "\n"]))
    texts = [t for t in texts if t]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type="bpe",
        user_defined_symbols=symbols,
        byte_fallback=True,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        split_digits=True,
        character_coverage=1.0,
        max_sentence_length=1 << 20,
        hard_vocab_limit=False,
        num_threads=max(1, min(4, os.cpu_count() or 1)),
        minloglevel=2,
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(out_path.suffix + ".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, out_path)
    return out_path


def corpus_fingerprint(texts: Sequence[str], vocab_size: int, symbols: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(f"v1|{vocab_size}|{'|'.join(symbols)}".encode())
    for t in texts:
        h.update(b"\x00")
        h.update(t.encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:16]


def load_or_train_tiny_tokenizer(
    run_dir: Path, texts: Sequence[str], vocab_size: int, template: ChatTemplate
):
    """The tiny preset's tokenizer: RUN_DIR/tokenizer/spm-<fingerprint>.model, trained once."""
    import sentencepiece as spm

    symbols = list(dict.fromkeys([*TAGS, *template.markers]))
    fp = corpus_fingerprint(texts, vocab_size, symbols)
    path = Path(run_dir) / "tokenizer" / f"spm-{vocab_size}-{fp}.model"
    if not path.exists():
        train_sentencepiece(texts, path, vocab_size=vocab_size, extra_symbols=template.markers)
    sp = spm.SentencePieceProcessor()
    sp.Load(str(path))
    return sp, path


def load_tokenizer(path: str | Path):
    """A real model's tokenizer: a SentencePiece ``tokenizer.model`` or an HF tokenizer dir/file."""
    p = Path(path).expanduser()
    if p.is_dir() and (p / "tokenizer.model").exists():
        p = p / "tokenizer.model"
    if p.is_file() and p.suffix == ".model":
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor()
        sp.Load(str(p))
        return sp
    from transformers import AutoTokenizer  # type: ignore[import-not-found]

    return AutoTokenizer.from_pretrained(str(p if p.is_dir() else p.parent), local_files_only=True)


def vocab_size(tokenizer) -> int:
    """Number of token ids the tokenizer can produce (added tokens included for HF tokenizers)."""
    if hasattr(tokenizer, "get_piece_size"):
        return int(tokenizer.get_piece_size())
    return len(tokenizer)


def token_id(tokenizer, piece: str) -> int | None:
    """Id of a single-token piece, or None when the tokenizer lacks it."""
    if not piece:
        return None
    try:
        import sentencepiece as spm

        if isinstance(tokenizer, spm.SentencePieceProcessor):
            i = tokenizer.piece_to_id(piece)
            return None if i == tokenizer.unk_id() else int(i)
    except ImportError:  # pragma: no cover
        pass
    ids = tokenizer.encode(piece, add_special_tokens=False) if hasattr(tokenizer, "convert_tokens_to_ids") else tokenizer.encode(piece)
    return int(ids[0]) if len(ids) == 1 else None
