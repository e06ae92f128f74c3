"""Strict parser for ``<think>…</think><proof>…</proof><answer>…</answer>`` responses."""

from __future__ import annotations

import re
from typing import Final

_TAGS: Final = tuple((f"<{n}>", n) for n in ("think", "/think", "proof", "/proof", "answer", "/answer"))
#: what follows the "<" of each tag -> its index in _TAGS
_TAG_INDEX: Final = {tag[1:]: k for k, (tag, _) in enumerate(_TAGS)}

#: Responses longer than this are format errors without being parsed (a runaway generation).
MAX_RESPONSE_CHARS: Final = 1_000_000


class Parsed:
    """A parsed response: ``ok`` (well formed), the ``think``, ``proof`` and ``answer`` sections,
    ``error`` ("" when ok; otherwise a short machine-readable reason) and ``proof_cut`` (lenient
    parse: the proof ran unclosed to the end, a cut-off generation).  Read-only; compared,
    hashed and shown by its fields.  (A plain class, not a frozen dataclass: compiled, its
    constructor is a few stores instead of one interpreted ``object.__setattr__`` per field.)"""

    def __init__(self, ok: bool, think: str = "", proof: str = "", answer: str = "", error: str = "",
                 proof_cut: bool = False) -> None:
        self._ok = ok
        self._think = think
        self._proof = proof
        self._answer = answer
        self._error = error
        self._proof_cut = proof_cut

    @property
    def ok(self) -> bool:
        return self._ok

    @property
    def think(self) -> str:
        return self._think

    @property
    def proof(self) -> str:
        return self._proof

    @property
    def answer(self) -> str:
        return self._answer

    @property
    def error(self) -> str:
        return self._error

    @property
    def proof_cut(self) -> bool:
        return self._proof_cut

    def _fields(self) -> tuple[bool, str, str, str, str, bool]:
        return (self._ok, self._think, self._proof, self._answer, self._error, self._proof_cut)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Parsed) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (f"Parsed(ok={self._ok!r}, think={self._think!r}, proof={self._proof!r}, answer={self._answer!r}, "
                f"error={self._error!r}, proof_cut={self._proof_cut!r})")


def parse_response(text: object) -> Parsed:
    """Parse a response strictly.

    Well formed means: the six tags ``<think> </think> <proof> </proof> <answer> </answer>``
    each appear exactly once, in that order, with only whitespace before ``<think>``, between
    ``</think>`` and ``<proof>``, between ``</proof>`` and ``<answer>`` and after
    ``</answer>``; and the answer is not blank.  Tags are lowercase and exact (``<Think>``,
    ``< think>`` are not tags, so they leave a tag missing).  Think and proof may be empty
    (an empty proof is judged by the grounding component, not here).

    Error codes: ``not_text``, ``too_long``, ``missing_tag:<name>``, ``duplicate_tag:<name>``
    (for the first tag, in the expected order, that is missing or repeated), ``out_of_order``,
    ``text_outside_tags``, ``empty_answer``.
    """
    if not isinstance(text, str):
        return Parsed(False, error="not_text")
    if len(text) > MAX_RESPONSE_CHARS:
        return Parsed(False, error="too_long")
    # every tag starts with "<": one split of the text finds them all (12 substring scans of
    # the whole text before: a find per tag and one more for a duplicate)
    # (a find loop: no copy of the text is made; a ">" found past the next "<" gives a name
    # holding "<", which is no tag, as the split's piece would have had no ">" at all)
    starts: list[list[int]] = [[], [], [], [], [], []]
    find, get = text.find, _TAG_INDEX.get
    pos = find("<")
    while pos >= 0:
        j = find(">", pos + 2, pos + 9)  # (the name is at least one character)
        if j > 0:
            k = get(text[pos + 1 : j + 1])
            if k is not None:
                starts[k].append(pos)
        pos = find("<", pos + 1)
    found = []
    for (tag, name), at in zip(_TAGS, starts):
        if not at:
            return Parsed(False, error=f"missing_tag:{name}")
        if len(at) > 1:
            return Parsed(False, error=f"duplicate_tag:{name}")
        found.append((at[0], at[0] + len(tag)))
    if not (found[0][0] < found[1][0] < found[2][0] < found[3][0] < found[4][0] < found[5][0]):
        return Parsed(False, error="out_of_order")
    (s0, e0), (s1, e1), (s2, e2), (s3, e3), (s4, e4), (s5, e5) = found
    outside = (text[:s0], text[e1:s2], text[e3:s4], text[e5:])
    if any(part.strip() for part in outside):
        return Parsed(False, error="text_outside_tags")
    answer = text[e4:s5].strip()
    if not answer:
        return Parsed(False, error="empty_answer")
    return Parsed(True, think=text[e0:s1].strip(), proof=text[e2:s3].strip(), answer=answer)


_ANSWER_RE: Final = re.compile(r"<answer>(.*?)(?:</answer>|\Z)", re.DOTALL)


def extract_answer(text: str) -> str:
    """The text inside the first ``<answer>`` tag when there is one, else the whole text
    (stripped).  Used for expected answers given as full reference responses."""
    if not text:
        return ""
    if "<answer>" in text:
        m = _ANSWER_RE.search(text)
        if m:
            return m.group(1).strip()
    return text.strip()


_TAG_RE: Final = re.compile(r"</?(?:think|proof|answer)>")


def _section(text: str, tag: str) -> tuple[str, bool]:
    """Text of the last ``<tag>`` section up to its closing tag (or the next tag, or the end);
    and whether it ran to the end of the text unclosed (a cut-off generation)."""
    i = text.rfind(f"<{tag}>")
    if i < 0:
        return "", False
    body = text[i + len(tag) + 2 :]
    m = _TAG_RE.search(body)
    if m is None:
        return body, True
    return body[: m.start()], False


def _drop_partial_word(s: str) -> str:
    """A cut-off section ends inside a word: drop that fragment (it is not evidence)."""
    s = s.rstrip()
    if not s or not s[-1].isalnum():
        return s
    j = len(s)
    while j > 0 and not s[j - 1].isspace():
        j -= 1
    return s[:j]


def parse_lenient(text: object, strict: Parsed | None = None) -> Parsed:
    """Best-effort sections of a malformed response, for judging its content in the metrics
    (its reward still pays the format penalty): the last ``<proof>`` and ``<answer>`` sections,
    each up to its closing tag, the next tag or the end of the text; a section cut off at the
    end loses its final partial word.  ``ok`` is always False; ``error`` is the strict
    parser's code.  A response over ``MAX_RESPONSE_CHARS`` yields empty sections.  ``strict``:
    ``parse_response(text)`` when the caller already has it."""
    if strict is None:
        strict = parse_response(text)
    if strict.ok or not isinstance(text, str) or len(text) > MAX_RESPONSE_CHARS:
        return Parsed(False, error=strict.error or "not_malformed")
    proof, proof_cut = _section(text, "proof")
    if proof_cut:
        proof = _drop_partial_word(proof)
    answer, cut = _section(text, "answer")
    if cut:
        answer = _drop_partial_word(answer)
    return Parsed(False, proof=proof.strip(), answer=answer.strip(), error=strict.error, proof_cut=proof_cut)
