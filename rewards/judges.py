"""One small pure function per reward component.

All judges take *normalised* text (see :mod:`rewards.text`) unless stated otherwise, so the
scorer normalises each piece once.  Patterns are precompiled and linear-time.
"""

from __future__ import annotations

import itertools
import math
import re
from functools import lru_cache
from typing import Final, Iterable, Sequence

import ahocorasick  # type: ignore[import-untyped,import-not-found]

from .parse import Parsed
from .text import (
    NormContext, merge_variant_names, variant_pair_spans, normalize, numbers, tokens, tokens_of_pieces, split_top,
    unify_double_quotes, word_start,
)

def _fast(rx: re.Pattern[str]) -> re.Pattern[str]:
    """``rx`` with its leading word boundaries rewritten by :func:`rewards.text.word_start`
    (the same matches, found several times faster); patterns are written with ``\\b`` for
    readability and compiled through this."""
    alts = split_top(rx.pattern)
    if not any(a.startswith("\\b") for a in alts):
        return rx
    if len(alts) > 1 and any(a.startswith("\\b(") for a in alts):
        return rx  # a group under a top-level alternation: no first-letter set either way, and slower
    return re.compile(word_start(rx.pattern), rx.flags)


# --------------------------------------------------------------------------- format


def judge_format(parsed: Parsed) -> bool:
    """Format component: True only for a strictly well-formed response (see ``parse_response``)."""
    return parsed.ok


# --------------------------------------------------------------------------- grounding

#: Near-verbatim tolerance for a quoted span that is not an exact (token-level) copy:
#: at most this fraction of its words may be unmatched (rounded down) ...
FUZZY_MAX_UNMATCHED_FRACTION: Final = 0.10
#: ... never more than this many unmatched words in a row ...
FUZZY_MAX_UNMATCHED_RUN: Final = 2
#: ... and spans shorter than this many words must match exactly.
FUZZY_MIN_WORDS: Final = 4

_ELLIPSIS_RE: Final = re.compile(r"\[?\.\.\.+\]?|\[…\]|…")
_BULLET_RE: Final = re.compile(r"^\s*(?:[-*•·▪–—]+|\(?\d{1,2}[.)]|\(?[a-z][.)](?=\s))\s*", re.IGNORECASE)
#: Words an attribution next to a quote may consist of ("The context states:", "From the text").
ATTRIBUTION_WORDS: Final = frozenset(
    """the this that a an from according to in per as provided given above below following relevant key
    supporting context text vignette passage case report reports source evidence quote quotes quoted
    excerpt excerpts document note notes record records states state stated says say said noted reads
    read mentions mentioned shows describes described indicates includes sentence sentences line lines
    here verbatim see cited and also it is are we i""".split()
)
#: Last word of a parenthesised source citation ("(pathology report)", "(MRI note)").
_CITATION_WORDS: Final = frozenset(
    "report reports note notes consult consultation summary letter record records context text sheet log form chart".split()
)
#: First word of a parenthesised note on what a quote shows ("(Provides imaging details)",
#: "(Lists the drugs and dosing)"): a comment on the evidence, not a claim about the patient.
_ANNOTATION_VERBS: Final = frozenset(
    """provides provide details detail lists list shows show describes describe gives give supports support
    confirms confirm indicates indicate explains explain summarizes summarises summarize establishes
    establish documents document identifies identify specifies specify relevant""".split()
)
_CONNECTIVES: Final = frozenset({"and", "or", "also", "plus", "then", "while", "but", "whereas", "vs", "versus"})


#: A quote found in the context is evidence only when it carries at least this many content
#: words and numbers together, or two that include a word of the question ("pontine lesion"
#: for "where was the lesion?"), or is a whole sentence of the context ("MRI was normal.").
#: "The patient." or, for a question about a mutation, "Focal radiotherapy." are in the
#: context but show nothing, and a proof made only of such fragments has no evidence
#: ("missing"), however verbatim.
EVIDENCE_MIN_TERMS: Final = 3


def _is_informative(span_norm: str, toks: list[str], ctx: NormContext, q_terms: frozenset[str]) -> bool:
    # content_terms(span_norm), from the span's tokens (``toks`` is tokens(span_norm)), built
    # only until it is known to hold EVIDENCE_MIN_TERMS terms (then the span is informative)
    get = _STEMS.get
    terms: set[str] = set()
    for t in toks:
        if t in STOPWORDS or t.isdigit():
            continue
        terms.add(get(t) or _stem(t))
        if len(terms) >= EVIDENCE_MIN_TERMS:
            return True
    n = len(terms)
    # tokens holding a digit (an alphabetic token holds none: the common case, one C call)
    n += sum(1 for t in toks if not t.isalpha() and any(ch.isdigit() for ch in t))
    if n >= EVIDENCE_MIN_TERMS or (n == 2 and not q_terms.isdisjoint(terms)):
        return True
    return frozenset(toks) in ctx.sentences


class Grounding:
    """Result of the grounding judge: ``n_spans`` evidence spans checked (quoted fragments and
    unquoted claim lines, trivial ones aside), ``bad_spans`` those not found in the context
    (normalised text), ``proof_norm`` the whole proof normalised (pieces joined by spaces),
    ``trivial_spans`` found in the context but too short to show anything, ``piece_tokens`` the
    word tokens of each piece.  Read-only; compared and shown by its fields.  (A plain class, not
    a frozen dataclass: compiled, its constructor is a few stores.)"""

    def __init__(self, n_spans: int, bad_spans: tuple[str, ...], proof_norm: str = "",
                 trivial_spans: tuple[str, ...] = (), piece_tokens: tuple[list[str], ...] = ()) -> None:
        self._n_spans = n_spans
        self._bad_spans = bad_spans
        self._proof_norm = proof_norm
        self._trivial_spans = trivial_spans
        self._piece_tokens = piece_tokens

    @property
    def n_spans(self) -> int:
        return self._n_spans

    @property
    def bad_spans(self) -> tuple[str, ...]:
        return self._bad_spans

    @property
    def proof_norm(self) -> str:
        return self._proof_norm

    @property
    def trivial_spans(self) -> tuple[str, ...]:
        return self._trivial_spans

    @property
    def piece_tokens(self) -> tuple[list[str], ...]:
        return self._piece_tokens

    @property
    def status(self) -> str:
        """``verified`` | ``missing`` (no evidence at all) | ``hallucinated``."""
        if self._bad_spans:
            return "hallucinated"
        return "verified" if self._n_spans else "missing"

    @property
    def proof_tokens(self) -> frozenset[str]:
        """The proof's word tokens (from the pieces' tokens: built only when asked for)."""
        return frozenset(itertools.chain.from_iterable(self._piece_tokens))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Grounding) and (
            self._n_spans, self._bad_spans, self._proof_norm, self._trivial_spans, self._piece_tokens
        ) == (other._n_spans, other._bad_spans, other._proof_norm, other._trivial_spans, other._piece_tokens)

    def __repr__(self) -> str:
        return (f"Grounding(n_spans={self._n_spans!r}, bad_spans={self._bad_spans!r}, proof_norm={self._proof_norm!r}, "
                f"trivial_spans={self._trivial_spans!r})")


def _is_leadin(raw_segment: str, norm_segment: str, toks: list[str]) -> bool:
    """Short source attribution next to quotes: at most 6 words, no digits, and either made
    only of attribution words ("The context states:", "and"), a parenthesised citation
    ending in a source word ("(pathology report)") or a parenthesised note starting with a
    verb about the evidence ("(Provides imaging details)").  Anything else is a claim."""
    if len(toks) > 6 or any(ch.isdigit() for ch in norm_segment):
        return False
    if all(t in ATTRIBUTION_WORDS or t in _CONNECTIVES for t in toks):
        return True
    seg = raw_segment.strip().rstrip(".,;")
    if not (seg.startswith("(") and seg.endswith(")")):
        return False
    # "(pathology report)": a citation; "(Provides imaging details)": a note on what the quote shows
    return toks[-1] in _CITATION_WORDS or toks[0] in _ANNOTATION_VERBS


def split_proof(proof: str) -> tuple[list[str], list[str]]:
    """Split raw proof text into (quoted spans, unquoted segments).

    Quoted spans are the texts between double quotes (straight, curly or guillemets; an
    unbalanced final quote runs to the end); each is further split at ellipses (``...``,
    ``…``, ``[...]``) into fragments that are checked separately.  Unquoted segments are the
    lines of the text outside quotes, with list bullets and numbering removed.
    """
    parts = unify_double_quotes(proof).split('"')
    quoted: list[str] = []
    for q in parts[1::2]:
        quoted.extend(f for f in _ELLIPSIS_RE.split(q) if f.strip())
    segments: list[str] = []
    for outside in parts[0::2]:
        for line in outside.splitlines():
            line = _BULLET_RE.sub("", line)
            if line.strip(" \t.,;:-()[]"):
                segments.append(line)
    return quoted, segments


#: A near-verbatim quote may skip at most this many context words in all (a dropped clause)
#: while staying one place of the context; anything further apart is a different place.
FUZZY_MAX_SKIP: Final = 8
#: Contexts longer than this (in characters of the token string) are searched through the
#: trigram index only (no substring scan), so the work per quote does not grow with them.
_SCAN_MAX_CHARS: Final = 20_000


def _trigrams(toks: list[str]) -> list[str]:
    """The span's word trigrams ("a b c"), in order (computed once per span)."""
    return [f"{a} {b} {c}" for a, b, c in zip(toks, toks[1:], toks[2:])]


def _best_place(toks: list[str], ctx: NormContext, tris: list[str] | None = None) -> tuple[list[bool], int, int]:
    """Align a span to the one place of the context that covers most of it.

    Every word trigram of the span found in the context votes for a place: its context
    position minus its position in the span (the diagonal).  The place is the band of
    diagonals at most ``FUZZY_MAX_SKIP`` wide that covers most words (so dropped words are
    allowed, pieces from elsewhere in the context are not).  Trigrams too common to locate
    (``ctx.common``) cover their words wherever they are.  Returns (covered flags per word,
    first, last context position of the place); work is at most
    ``MAX_TRIGRAM_POSITIONS`` per trigram of the span.
    """
    n = len(toks)
    # diagonal -> bit mask of the words its trigram hits cover (bit j = word j); the window is
    # evaluated per diagonal: within one diagonal, coverage only grows, so this finds the
    # same first best band as adding the hits one by one
    groups: dict[int, int] = {}
    gget = groups.get
    base_mask = 0
    tget, common = ctx.tri_pos.get, ctx.common
    for i, t in enumerate(_trigrams(toks) if tris is None else tris):
        ps = tget(t)
        if ps is None:
            if t in common:
                base_mask |= 7 << i
            continue
        m = 7 << i
        for p in ps:
            groups[p - i] = gget(p - i, 0) | m
    if not groups:
        return _mask_flags(base_mask, n), 0, -1
    ds = sorted(groups)
    masks = [groups[d] for d in ds]
    not_base = ~base_mask
    best_cov, best_lo, best_hi, best_u = -1, 0, 0, 0
    left = 0
    for right, d in enumerate(ds):
        while d - ds[left] > FUZZY_MAX_SKIP:
            left += 1
        u = 0
        for k in range(left, right + 1):
            u |= masks[k]
        cov = (u & not_base).bit_count()
        if cov > best_cov:
            best_cov, best_lo, best_hi, best_u = cov, left, right, u
    return _mask_flags(base_mask | best_u, n), ds[best_lo], ds[best_hi] + n


def _mask_flags(mask: int, n: int) -> list[bool]:
    """``[bool(mask >> j & 1) for j in range(n)]`` for a mask of at most n bits, by C calls
    (its binary digits, lowest first)."""
    return list(map("1".__eq__, format(mask, "b").zfill(n)[::-1]))


def _may_be_near_verbatim(toks: list[str], ctx: NormContext, tris: list[str] | None = None) -> bool:
    """Necessary condition for the near-verbatim rule, without locating a place: the words
    covered by a trigram found *anywhere* in the context leave at most the allowed number of
    uncovered words, and no longer uncovered run (one place covers no more than that).
    (As bit masks: bit j = word j; a run longer than allowed is a set bit whose next
    ``FUZZY_MAX_UNMATCHED_RUN`` bits are set too.)"""
    n = len(toks)
    tri = ctx.trigrams
    cov = 3  # a reworded opening of up to 2 words is allowed (see span_in_context)
    for i, t in enumerate(_trigrams(toks) if tris is None else tris):
        if t in tri:
            cov |= 7 << i
    unc = ~cov & ((1 << n) - 1)
    if unc.bit_count() > int(n * FUZZY_MAX_UNMATCHED_FRACTION):
        return False
    run = unc
    for k in range(1, FUZZY_MAX_UNMATCHED_RUN + 1):
        run &= unc >> k
    return not run


def _too_many_new_words(toks: list[str], ctx: NormContext) -> bool:
    """Cheap necessary condition of the near-verbatim rule, as set operations: a word that is
    not a word of the context is covered by no trigram of it, so when more distinct such
    words follow the first two (an opening of 2 words may be reworded) than the allowed
    number of uncovered words, no place of the context can accept the span."""
    return len(set(toks[2:]).difference(ctx.unigrams)) > int(len(toks) * FUZZY_MAX_UNMATCHED_FRACTION)


#: context (normalised text) -> the stems of its tokens (``NormContext.toks``), in order
_CTX_STEMS: Final[dict[str, tuple[str, ...]]] = {}


def _context_stems(ctx: NormContext) -> tuple[str, ...]:
    """``tuple(_stem(t) for t in ctx.toks)``, memoised per context (bounded as the context cache)."""
    st = _CTX_STEMS.get(ctx.norm)
    if st is None:
        if len(_CTX_STEMS) >= 4096:
            _CTX_STEMS.clear()
        st = _CTX_STEMS[ctx.norm] = tuple(_stem(t) for t in ctx.toks)
    return st


def _exact_copy(toks: list[str], ctx: NormContext) -> bool:
    """``(" " + " ".join(toks) + " ") in ctx.token_str`` for at least 3 tokens: the run occurs
    in the context's tokens, so at a start position of its first trigram (tokens hold no
    spaces, so a whole-token substring of token_str starts at a token); a trigram too common to
    be indexed falls back to the substring scan."""
    needle = " " + " ".join(toks) + " "
    first = f"{toks[0]} {toks[1]} {toks[2]}"
    ps = ctx.tri_pos.get(first)
    if ps is not None:
        ts, at = ctx.token_str, ctx.tok_at
        for p in ps:
            if ts.startswith(needle, at[p]):
                return True
        return False
    return first in ctx.common and needle in ctx.token_str


def span_in_context(span_norm: str, ctx: NormContext, toks: list[str] | None = None, unmerged: bool = False) -> bool:
    """Whether one normalised evidence span is a (near-)verbatim copy of one place of the context.

    Exact when its word tokens occur contiguously in the context's tokens (so punctuation and
    the normalisations of :func:`rewards.text.normalize` never matter).  Otherwise a span of at
    least ``FUZZY_MIN_WORDS`` words is a near-verbatim copy when, aligned to the one place of
    the context that covers most of it (see ``_best_place``: a band of the context at most
    ``FUZZY_MAX_SKIP`` words longer than the span), every number in it occurs in the context,
    at most 10 % of its words (rounded down) are not covered by a word trigram of that place,
    no more than 2 uncovered words are consecutive, and every uncovered word is a stopword or
    occurs in that place (a dropped, moved or re-inflected word).  So a dropped or changed
    function word inside a long quote passes; a stitched "mosaic" of trigrams from different
    sentences, a drug or gene swapped for one named elsewhere, or an invented clause do not.
    """
    if toks is None:
        toks = tokens(span_norm)
    if not unmerged:  # (unmerged: the caller knows the span holds no name + variant pair)
        toks = merge_variant_names(toks, span_norm)
    if not toks:
        return True
    n = len(toks)
    if n == 1:
        return toks[0] in ctx.unigrams
    if n == 2:
        return f"{toks[0]} {toks[1]}" in ctx.bigrams
    small = len(ctx.token_str) <= _SCAN_MAX_CHARS
    if small:
        if _exact_copy(toks, ctx):
            return True
        # not exact: what follows can only accept a near-verbatim copy, so the cheap
        # necessary conditions come first (the same verdicts, in a different order)
        if n < FUZZY_MIN_WORDS or _too_many_new_words(toks, ctx) or not numbers(span_norm) <= ctx.numbers:
            return False
        tris = _trigrams(toks)
        if not _may_be_near_verbatim(toks, ctx, tris):
            return False
    else:
        tris = _trigrams(toks)
    flags, lo, hi = _best_place(toks, ctx, tris)
    if not small:
        if all(flags) and hi - lo <= n + 2:
            # exact through the index (a large context is not scanned)
            return True
        if n < FUZZY_MIN_WORDS:
            return False
        if not numbers(span_norm) <= ctx.numbers:
            return False
    unmatched = run = longest = 0
    lead = True  # still in the quote's opening words
    place = None
    for j, c in enumerate(flags):
        if c:
            if lead:
                # a reworded opening of at most 2 words is not counted, unless it changes a number
                if not any(ch.isdigit() for w in toks[:run] for ch in w):
                    unmatched -= run
                lead = False
            run = 0
            continue
        unmatched += 1
        run += 1
        longest = max(longest, run)
        w = toks[j]
        if w in STOPWORDS:
            continue
        if place is None:
            place = set(_context_stems(ctx)[max(0, lo - 2) : hi + 2])
        if _stem(w) not in place:  # a re-inflected word ("gliomas" for "glioma") is the same word
            return False
    return unmatched <= int(n * FUZZY_MAX_UNMATCHED_FRACTION) and longest <= FUZZY_MAX_UNMATCHED_RUN


_QMARK: Final = "\x01"  # stands for a double quote while the whole proof is normalised at once
_NLMARK: Final = "\x02"  # stands for a line break
#: what a line holding no evidence is made of (besides the line breaks between lines)
_NOT_SEGMENT: Final = " \t.,;:-()[]" + _NLMARK


def split_proof_normalized(proof: str) -> tuple[list[str], list[str]]:
    """:func:`split_proof` followed by :func:`normalize` of every piece, done with a single
    normalisation of the whole proof (quotes and line breaks are kept as marker characters).
    Returns (normalised quoted fragments, normalised unquoted segments)."""
    text = unify_double_quotes(proof)
    if '"' in text:
        text = text.replace('"', _QMARK)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    norm = normalize(text.replace("\n", _NLMARK))
    parts = norm.split(_QMARK)
    quoted: list[str] = []
    for q in parts[1::2]:
        if _NLMARK in q:
            q = " ".join(q.replace(_NLMARK, " ").split())
        # (normalisation turned every ellipsis character into "...")
        for f in _ELLIPSIS_RE.split(q) if "..." in q else (q,):
            f = f.strip()
            if f:
                quoted.append(f)
    segments: list[str] = []
    for outside in parts[0::2]:
        if not outside.strip(_NOT_SEGMENT):
            continue  # (every line of it is only spaces, tabs and ``.,;:-()[]``: no segment)
        for line in outside.split(_NLMARK):
            if _may_be_bullet(line):
                m = _BULLET_RE.match(line)  # (anchored at the start: one match at most, as sub)
                if m is not None:
                    line = line[m.end() :]
            line = line.strip()
            if line.strip(" \t.,;:-()[]"):
                segments.append(line)
    return quoted, segments


_BULLET_FIRST: Final = frozenset("-*•·▪–—(0123456789")


def _may_be_bullet(line: str) -> bool:
    """Cheap test before ``_BULLET_RE``: a bullet or numbering starts the (stripped) line with a
    bullet character, a parenthesis or a digit, or is a letter followed by ``.`` or ``)``."""
    s = line.lstrip()
    return bool(s) and (s[0] in _BULLET_FIRST or (len(s) > 1 and s[1] in ".)"))


def judge_grounding(proof: str, ctx: NormContext, cut_off: bool = False, question_norm: str = "") -> Grounding:
    """Grounding component: every piece of evidence in the proof must come from the context.

    Each quoted fragment must pass :func:`span_in_context`.  Text outside quotes is allowed only
    as a short source attribution (see ``_is_leadin``); any other unquoted line is itself
    evidence and must pass :func:`span_in_context` -- so an invented sentence placed next to a
    long real quote fails.  ``cut_off``: the proof is a cut-off generation; then an unclosed
    final quote shorter than ``FUZZY_MIN_WORDS`` words is a stub too short to check and is
    not judged (a longer one is checked as it stands: a truncated copy is still a copy).
    A piece found in the context but too short to show anything (``EVIDENCE_MIN_TERMS``;
    ``question_norm`` gives the question's words) is not evidence: it is listed in
    ``trivial_spans`` and a proof of such pieces alone is ``missing``.
    """
    quoted, segments = split_proof_normalized(proof)
    if cut_off and quoted and unify_double_quotes(proof).count('"') % 2 == 1 and len(tokens(quoted[-1])) < FUZZY_MIN_WORDS:
        quoted = quoted[:-1]
    n = 0
    bad: list[str] = []
    trivial: list[str] = []
    q_terms = question_terms(question_norm) if question_norm else frozenset()
    pieces = quoted + segments
    proof_norm = " ".join(pieces)
    piece_toks = tokens_of_pieces(pieces, proof_norm)
    # a "h3 k27m" pair in one piece is one in the joined text: without one there, no piece's
    # tokens need merging; with one, the pieces holding a pair are found from the spans of all
    # the pairs of the joined text (one scan instead of one per piece)
    pair_spans = variant_pair_spans(proof_norm)
    has_pair = None
    if pair_spans:
        has_pair = []
        at = 0
        for piece in pieces:
            end = at + len(piece)
            has_pair.append(any(at <= a and b <= end for a, b in pair_spans))
            at = end + 1
    for k, qn in enumerate(quoted):
        toks = piece_toks[k]
        if not toks:
            continue
        if not span_in_context(qn, ctx, merge_variant_names(toks) if has_pair and has_pair[k] else toks, True):
            n += 1
            bad.append(qn)
        elif _is_informative(qn, toks, ctx, q_terms):
            n += 1
        else:
            trivial.append(qn)
    nq = len(quoted)
    for k, sn in enumerate(segments, nq):
        toks = piece_toks[k]
        if not toks or _is_leadin(sn, sn, toks):
            continue
        if not span_in_context(sn, ctx, merge_variant_names(toks) if has_pair and has_pair[k] else toks, True):
            n += 1
            bad.append(sn)
        elif _is_informative(sn, toks, ctx, q_terms):
            n += 1
        else:
            trivial.append(sn)
    return Grounding(n_spans=n, bad_spans=tuple(bad), proof_norm=proof_norm, trivial_spans=tuple(trivial),
                     piece_tokens=tuple(piece_toks))


_WORD_RE: Final = re.compile(r"\w")

# Per-score memos.  The scorer asks several judges about the same answer and proof; these
# caches are deliberately tiny (a handful of entries) so they only share work *within* one
# score() call and never across responses (a GRPO completion is new text every time).
_SCORE_MEMO: Final = 8


@lru_cache(maxsize=_SCORE_MEMO)
def _numbers_of(norm_text: str) -> frozenset[str]:
    return frozenset(numbers(norm_text))


@lru_cache(maxsize=_SCORE_MEMO)
def _tokens_of(norm_text: str) -> tuple[str, ...]:
    return tuple(tokens(norm_text))


def _has_word(norm_text: str) -> bool:
    return _WORD_RE.search(norm_text) is not None


# --------------------------------------------------------------------------- answer support


def judge_answer_support(answer_norm: "str | Answer", ctx: NormContext, question_norm: str = "") -> bool:
    """No-hallucination component for the answer: every number it states occurs in the context
    (or in the question).  Numbers are compared canonically (``1,000`` == ``1000``,
    ``1.50`` == ``1.5``, ``10⁹`` == ``10^9``)."""
    nums = analyse_answer(answer_norm).nums
    if not nums:
        return True
    return nums <= ctx.numbers or nums <= (ctx.numbers | question_numbers(question_norm))


# --------------------------------------------------------------------------- words

STOPWORDS: Final = frozenset(
    """a an the of to in on at by for with from and or but as is are was were be been being it its
    this that these those there here which who whom whose what when where why how than then so
    such any all each per via into onto over under after before during about against between
    has have had do does did will would should could may might must can shall i we you he she
    they them his her their our your my me us also only very more most less least other some
    same both either if while until up down out off again further once not no nor""".split()
)
#: Words about the response itself / the source, ignored when comparing claims.
META_WORDS: Final = frozenset(
    """context text vignette passage case information report reports reported reporting state
    states stated says say note notes noted mention mentions mentioned provide provided give gives
    given contain contains include includes document documented answer question conflict
    conflicting conflicts contradict contradicts contradictory contradiction inconsistent
    discrepancy different differ record records value values two""".split()
)
_NEG_RE: Final = re.compile(
    r"\b(?:not|no|never|none|neither|nor|without|cannot|cant|dont|doesnt|didnt|isnt|arent|"
    r"wasnt|werent|wont|absent|negative)\b"
)
#: the words of _NEG_RE: it matches exactly when one of them is a whole word token
_NEG_WORDS: Final = frozenset(_NEG_RE.pattern[len("\\b(?:") : -len(")\\b")].split("|"))


_STEMS: Final[dict[str, str]] = {}


def _stem(tok: str) -> str:
    """Light plural stemming (memoised; the vocabulary of a run is small)."""
    s = _STEMS.get(tok)
    if s is None:
        if len(tok) > 4 and tok.endswith("ies"):
            s = tok[:-3] + "y"
        elif len(tok) > 3 and tok.endswith("s") and not tok.endswith("ss"):
            s = tok[:-1]
        else:
            s = tok
        if len(_STEMS) < 200_000:
            _STEMS[tok] = s
    return s


def content_terms(norm_text: str, drop: frozenset[str] = frozenset()) -> set[str]:
    """Stemmed non-stopword word tokens without digits (numbers are compared separately)."""
    m = _term_map(norm_text)
    if not drop:
        return set(m.values())
    return {s for t, s in m.items() if t not in drop and s not in drop}


@lru_cache(maxsize=_SCORE_MEMO)
def _term_map(norm_text: str) -> dict[str, str]:
    """token -> stem for the non-stopword, non-digit tokens of a text (per-score memo: the
    answer's terms are asked for with several ``drop`` sets)."""
    cand = set(_tokens_of(norm_text))  # (usually memoised already: the answer's tokens)
    cand -= STOPWORDS
    get = _STEMS.get
    return {t: get(t) or _stem(t) for t in cand if not t.isdigit()}


def _term_in(term: str, toks: set[str]) -> bool:
    """Whether a stemmed term occurs in a set of raw tokens (as itself or a plural form)."""
    return term in toks or term + "s" in toks or (term.endswith("y") and term[:-1] + "ies" in toks)


class Answer:
    """One response's answer, analysed once: its normalised text, word tokens, numbers,
    content terms (token -> stem) and the abstention and conflict verdicts.  The scorer builds
    one per score() call (:func:`analyse_answer`) and hands it to every judge of the answer,
    which read these instead of re-tokenising or re-running patterns; what a judge may not
    need (terms, verdicts) is computed on first use.  Judges also accept the normalised text
    itself (they analyse it then).  Nothing here outlives the call that built it."""

    __slots__ = ("norm", "toks", "_tokset", "_nums", "_terms", "_abstained", "_conflict", "_keys", "_key_ends")

    def __init__(self, norm: str) -> None:
        self.norm = norm
        self.toks: tuple[str, ...] = tuple(tokens(norm))
        self._tokset: set[str] | None = None
        self._nums: frozenset[str] | None = None
        self._terms: dict[str, str] | None = None
        self._abstained: bool | None = None
        self._conflict: bool | None = None
        self._keys: int | None = None
        self._key_ends: list[tuple[int, int]] = []

    @property
    def keys(self) -> int:
        """The prefilter keyword groups present in the text (:func:`_key_mask`)."""
        if self._keys is None:
            m = 0
            for end, v in _KEYWORDS_ITER(self.norm):
                self._key_ends.append((end, v))
                m |= v
            self._keys = m
        return self._keys

    def sentence_keys(self) -> list[tuple[str, int]]:
        """``[(sent, _key_mask(sent)) for sent in _SENTENCE_RE.split(norm)]`` from the one
        keyword pass over the whole text: no keyword holds a sentence separator, so each
        occurrence lies inside the sentence holding its last character."""
        text = self.norm
        self.keys  # (the keyword pass, which records where each occurrence ends)
        ends = self._key_ends
        out: list[tuple[str, int]] = []
        start = 0
        k = 0
        for m in _SENTENCE_RE.finditer(text):
            stop = m.start()
            mask = 0
            while k < len(ends) and ends[k][0] < stop:
                mask |= ends[k][1]
                k += 1
            out.append((text[start:stop], mask))
            start = m.end()
        mask = 0
        for _, v in ends[k:]:
            mask |= v
        out.append((text[start:], mask))
        return out

    @property
    def tokset(self) -> set[str]:
        """``set(toks)`` (not to be modified)."""
        if self._tokset is None:
            self._tokset = set(self.toks)
        return self._tokset

    @property
    def nums(self) -> frozenset[str]:
        """Canonical numbers (:func:`rewards.text.numbers`)."""
        if self._nums is None:
            self._nums = frozenset(numbers(self.norm))
        return self._nums

    @property
    def terms(self) -> dict[str, str]:
        """token -> stem for the non-stopword, non-digit tokens."""
        if self._terms is None:
            get = _STEMS.get
            self._terms = {t: get(t) or _stem(t) for t in self.tokset - STOPWORDS if not t.isdigit()}
        return self._terms

    def content_terms(self, drop: frozenset[str] = frozenset()) -> set[str]:
        """:func:`content_terms` of the answer."""
        m = self.terms
        if not drop:
            return set(m.values())
        # {s for t, s in m.items() if t not in drop and s not in drop}, by C-level set operations
        out = set(map(m.__getitem__, m.keys() - drop))
        out -= drop
        return out

    @property
    def abstained(self) -> bool:
        """:func:`judge_abstention` of the answer."""
        if self._abstained is None:
            self._abstained = _any_masked(self.norm, self.keys & _ABSTAIN_BITS, _ABSTAIN_RES)
        return self._abstained

    @property
    def conflict(self) -> bool:
        """:func:`judge_conflict` of the answer."""
        if self._conflict is None:
            self._conflict = bool(self.keys & _CONFLICT_BIT) and _conflict_reported(self.norm, True)
        return self._conflict


def analyse_answer(answer: "str | Answer") -> Answer:
    """The :class:`Answer` analysis of a normalised answer (itself when already one)."""
    return answer if isinstance(answer, Answer) else Answer(answer)


@lru_cache(maxsize=8192)
def question_terms(question_norm: str) -> frozenset[str]:
    """content_terms of a question (memoised: questions repeat across a GRPO group)."""
    return frozenset(content_terms(question_norm))


@lru_cache(maxsize=8192)
def question_numbers(question_norm: str) -> frozenset[str]:
    return frozenset(numbers(question_norm))


@lru_cache(maxsize=8192)
def _question_key_terms(question_norm: str) -> frozenset[str]:
    return frozenset(content_terms(question_norm, META_WORDS))


def has_negation(norm_text: str) -> bool:
    """A negation cue (a word of ``_NEG_RE``) is one of the text's word tokens."""
    return not _NEG_WORDS.isdisjoint(_tokens_of(norm_text))


# --------------------------------------------------------------------------- correctness

#: Fraction of the reference's key terms a correct answer must contain (all of them when the
#: reference has at most ``CORRECT_ALL_TERMS_UPTO`` key terms).
CORRECT_TERM_RECALL: Final = 0.6
CORRECT_ALL_TERMS_UPTO: Final = 3
#: An answer may add at most max(8, 2 x reference key terms) key terms of its own, so pasting
#: the whole context is not a correct answer.
CORRECT_MIN_EXTRA_TERMS: Final = 8


@lru_cache(maxsize=8192)
def _reference_facts(expected_norm: str) -> tuple[frozenset[str], frozenset[str], bool]:
    """numbers, content terms and negation of a reference answer (memoised)."""
    return frozenset(numbers(expected_norm)), frozenset(content_terms(expected_norm)), has_negation(expected_norm)


# Schedule and route phrases, rewritten to one token each before answers are compared, so
# "once a week" == "once weekly" == "weekly" and "twice weekly" != "once weekly".
_SCHEDULE_PATTERNS: Final[tuple[tuple[str, str], ...]] = (
        (r"\b(?:three times|thrice|3 times|3x) (?:a |per |each |every )?week(?:ly)?\b|\btiw\b", " sched3xweek "),
        (r"\b(?:twice|two times|2 times|2x) (?:a |per |each |every )?week(?:ly)?\b|\btwice-weekly\b|\bbiw\b", " sched2xweek "),
        (r"\bevery (?:other|2nd|second) week\b|\bevery 2 weeks\b|\bbiweekly\b|\bq2w\b", " schedq2week "),
        (r"\bevery (?:3|three) weeks\b|\bq3w\b", " schedq3week "),
        (r"\bonce (?:a |per |each |every )?week(?:ly)?\b|\bevery week\b|\bweekly\b|\bqw\b", " sched1xweek "),
        (r"\b(?:twice|two times|2 times) (?:a |per |each )?day\b|\btwice daily\b|\bbid\b", " sched2xday "),
        (r"\b(?:three times|3 times) (?:a |per |each )?day\b|\bthree times daily\b|\btid\b", " sched3xday "),
        (r"\bonce (?:a |per |each )?day\b|\bonce daily\b|\bevery day\b|\bdaily\b|\bqd\b", " sched1xday "),
        (r"\b(?:orally|oral|by mouth|po)\b", " routeoral "),
        (r"\b(?:intravenously|intravenous|iv)\b", " routeiv "),
)
#: all of them as one alternation (earlier patterns win), each a named group
# (every pattern starts a word with one of these letters: the lookahead rejects other positions
# before the alternation is tried, several times faster on long answers, same matches; the
# word_start rewrite is 4x slower here: with named groups the engine finds no first-letter set)
_SCHEDULE_RE: Final = re.compile(
    "(?=[t23beqowdpi])(?<!\\w)(?:" + "|".join(f"(?P<g{i}>{pat})" for i, (pat, _) in enumerate(_SCHEDULE_PATTERNS)) + ")"
)
_SCHEDULE_TOKENS: Final = {f"g{i}": tok for i, (_, tok) in enumerate(_SCHEDULE_PATTERNS)}
_SCHEDULE_KEYS: Final = ("week", "day", "daily", "tiw", "biw", "qw", "q2w", "q3w", "bid", "tid", "qd", "oral", "po", "iv", "intraven", "mouth")
#: the words a schedule or route phrase ends with (each pattern ends with one of them and a word
#: boundary): a text none of whose tokens is one holds no phrase.  The substrings above are a
#: cheaper first test, but "po" is in "report" and "iv" in "positive": most texts passing them
#: hold no phrase, and the alternation costs tens of microseconds on a long answer
_SCHEDULE_WORDS: Final = frozenset(
    "week weekly weeks tiw biw biweekly q2w q3w qw day daily bid tid qd orally oral mouth po intravenously intravenous iv".split()
)


def _schedules(norm_text: str, toks: "Iterable[str] | None" = None) -> tuple[str, frozenset[str]]:
    """(text with schedule/route phrases replaced by tokens, the set of those tokens).
    ``toks``: ``tokens(norm_text)`` when the caller has them."""
    if not any(k in norm_text for k in _SCHEDULE_KEYS):
        return norm_text, frozenset()
    if _SCHEDULE_WORDS.isdisjoint(tokens(norm_text) if toks is None else toks):
        return norm_text, frozenset()
    found: set[str] = set()

    def sub(m: re.Match[str]) -> str:
        tok = _SCHEDULE_TOKENS[m.lastgroup or ""]
        found.add(tok.strip())
        return tok

    return _SCHEDULE_RE.sub(sub, norm_text), frozenset(found)


#: for reference answers, which repeat (answers are not memoised: they rarely repeat)
_reference_schedules: Final = lru_cache(maxsize=8192)(_schedules)
#: per-score memo for answers (judge_correct asks twice: through judge_schedule and for the text)
_answer_schedules: Final = lru_cache(maxsize=_SCORE_MEMO)(_schedules)


def judge_schedule(answer_norm: str, expected_norm: str) -> bool:
    """Frequency and route agree: every schedule or route the answer states ("twice
    weekly", "once a week", "orally", "IV") is one the reference states, for each kind
    (frequency, route) the reference states.  "625 mg twice weekly" is wrong against "625 mg
    once weekly"; "once a week" is right against "weekly"."""
    return _schedules_agree(_answer_schedules(answer_norm)[1], _reference_schedules(expected_norm)[1])


def _schedules_agree(a: frozenset[str], r: frozenset[str]) -> bool:
    """judge_schedule on the answer's and the reference's schedule tokens."""
    for kind in ("sched", "route"):
        rk = {t for t in r if t.startswith(kind)}
        ak = {t for t in a if t.startswith(kind)}
        if rk and ak and not ak <= rk:
            return False
    return True


_QUANTITY_RE: Final = re.compile(
    r"\b(?:dose|doses|dosage|dosing|dosed|how much|how many|how long|rate|percentage|percent|mg|gy|months?|weeks?|"
    r"days?|survival|number|cumulative|total|count|level|size|duration|frequency|schedule|volume|change|"
    r"probability|reduction|ratio|age|when|value|concentration|threshold|risk)\b|%"
)


_DOSE_WORDS: Final = frozenset("mg m2 kg gy ml mcg μg g dose doses dosage".split())


@lru_cache(maxsize=8192)
def _asks_quantity(question_norm: str) -> bool:
    """Whether the question asks for an amount (a dose, a rate, a duration ...); when it does
    not ("which therapy next?"), the reference's numbers are not required of the answer.  A
    question of unknown wording ("") asks one."""
    return not question_norm or _QUANTITY_RE.search(question_norm) is not None


@lru_cache(maxsize=8192)
def _headline(expected_norm: str) -> str:
    """The first sentence of a reference answer: what it answers; later sentences are the
    rationale, which a correct answer need not repeat."""
    parts = re.split(r"(?<=[.!?])\s+(?=[a-z])", expected_norm, maxsplit=1)
    return parts[0]


def judge_correct(answer_norm: "str | Answer", expected_norm: str, question_norm: str = "") -> bool:
    """Answer-correctness component for answerable items (no shared-word shortcut).

    Correct when, after normalisation: (1) every number of the reference is in the answer;
    (2) when the reference has numbers, the answer states no other number except ones from the
    question (so "625 mg or 125 mg" is wrong when the reference is 625 mg); (3) the answer
    contains the reference's key terms -- content words (stopwords and words already in the
    question removed, light plural stemming) -- all of them when there are at most 3, else at
    least 60 %; (4) the answer adds at most max(8, 2 x the reference's key terms) key terms of
    its own (pasting the context is not an answer); and (5) the answer and the reference agree
    on negation (both or neither contain a negation cue such as "not", "no", "without").  A reference with neither numbers
    nor key terms must equal the answer.
    """
    if not expected_norm:
        return False
    a = analyse_answer(answer_norm)
    # everything about the reference and the question, memoised per pair (they repeat)
    ref_found, head_nums, allowed_nums, known_terms, extra_max, ref_terms, need, exp_toks, ref_neg, asks = (
        _correct_reference(expected_norm, question_norm)
    )
    if ref_found:  # otherwise no schedule can disagree and the words compare as they are
        rewritten, a_found = _schedules(a.norm, a.toks)
        if not _schedules_agree(a_found, ref_found):
            return False
        if rewritten != a.norm:
            a = Answer(rewritten)
    if asks:
        ans_nums = a.nums
        if not head_nums <= ans_nums:
            return False
        if head_nums and not ans_nums <= allowed_nums:
            return False
    ans_terms = a.content_terms()
    if len(ans_terms - known_terms) > extra_max:
        return False
    if ref_terms:
        if len(ref_terms & ans_terms) < need:
            return False
    elif exp_toks is not None and list(a.toks) != exp_toks:
        return False
    return (not _NEG_WORDS.isdisjoint(a.toks)) == ref_neg


@lru_cache(maxsize=8192)
def _correct_reference(expected_norm: str, question_norm: str) -> tuple:
    """What judge_correct needs of a reference and a question (memoised per pair): the
    reference's schedule tokens, its headline's numbers, the numbers an answer may state, the
    reference's and question's terms, the number of extra terms allowed, the key terms and how
    many of them are needed, the reference's tokens when the answer must equal it (else None),
    the headline's negation, and whether the question asks for an amount."""
    ref_sched, ref_found = _reference_schedules(expected_norm)
    if ref_found:
        expected_norm = ref_sched
    headline = _headline(expected_norm)
    ref_nums, ref_all_terms, _ = _reference_facts(expected_norm)
    head_nums, head_terms, ref_neg = _reference_facts(headline)
    asks = _asks_quantity(question_norm)
    q_terms = question_terms(question_norm)
    ref_terms: "frozenset[str] | set[str]" = head_terms - q_terms or head_terms
    if not asks:  # the dose's units, schedule and route were not asked for either
        ref_terms = {t for t in ref_terms if t not in _DOSE_WORDS and not t.startswith(("sched", "route"))} or ref_terms
    need = len(ref_terms) if len(ref_terms) <= CORRECT_ALL_TERMS_UPTO else CORRECT_TERM_RECALL * len(ref_terms)
    exp_toks = tokens(expected_norm) if not ref_terms and not ref_nums else None
    return (
        ref_found, head_nums, ref_nums | question_numbers(question_norm), frozenset(ref_all_terms | q_terms),
        max(CORRECT_MIN_EXTRA_TERMS, 2 * len(ref_all_terms)), frozenset(ref_terms), need, exp_toks, ref_neg, asks,
    )


# --------------------------------------------------------------------------- abstention / conflict / refusal

_SRC: Final = r"(?:context|text|vignette|passage|case|information|notes?|reports?|records?|data|documents?|excerpt|source|summary|details|findings)"
_ABSTAIN_RES: tuple[re.Pattern[str], ...] = (
    re.compile(
        _SRC + r"s? (?:provided |given |above |here )?(?:does not|doesnt|do not|dont|did not|didnt|"
        r"fails to|fail to) (?:\w+ ){0,2}?(?:contain|include|mention|report|state|specify|provide|give|"
        r"list|describe|document|say|indicate|address|offer|have|record|discuss)"
    ),
    re.compile(
        r"\bnot (?:\w+ ){0,2}?(?:mentioned|reported|stated|provided|specified|given|documented|included|"
        r"available|described|listed|found|present|contained|addressed|recorded|discussed|defined|"
        r"clear|established|known|determined) "
        r"(?:in|by|within|anywhere in) (?:the |this )?(?:provided |given |available )?" + _SRC
    ),
    re.compile(r"\b(?:no|not enough|insufficient) (?:information|mention|data|details?) (?:about|on|regarding|of|for|to|is|are)\b"),
    re.compile(
        r"\b(?:cannot|cant|can not|unable to|not able to|not possible to|impossible to) (?:be )?(?:\w+ly )?"
        r"(?:made|confirmed|assessed|recommended|concluded|determine|determined|answer|answered|derive|derived|infer|inferred|establish|established|"
        r"ascertain|ascertained|identify|identified|tell|say|know|known|provide|specify|give|state|find|found)\b"
        r"(?: \S+){0,12}? (?:from|based on|with|given|using|in) (?:the |this )?"
        r"(?:provided |given |available )?" + _SRC
    ),
    re.compile(r"\b(?:is|are|was|were) not (?:reported|stated|specified|documented|mentioned|available|recorded|known)\b"),
    re.compile(_SRC + r" (?:lacks|lack|is silent|are silent|is missing|omits|omit)\b"),
    re.compile(
        r"\b(?:not|dont|do not|doesnt|does not) (?:have|contain|provide|give|include) (?:enough|sufficient|adequate) "
        r"(?:information|data|details?)\b|\b(?:insufficient|not enough) (?:information|data|details?)\b"
    ),
    re.compile(
        r"\bno (?:\w+ ){0,3}?(?:data|information|details?|results?|testing|profiling|specifics|plan|dose|dosing) "
        r"(?:\S+ ){0,8}?(?:is|are|was|were|has been|have been) (?:provided|available|reported|documented|given|"
        r"included|performed|recorded|established|specified)\b"
    ),
    re.compile(
        r"\b(?:diagnosis|grade|type|classification|dose|dosing|regimen|plan|location|subtype|prognosis|answer) "
        r"(?:is|remains|are) (?:uncertain|unclear|unknown|ambiguous|undetermined|not known|not clear)\b"
    ),
    # "makes it impossible to determine the exact tumor type": declining, like "cannot be determined"
    re.compile(r"\b(?:impossible|not possible) to (?:\w+ly )?(?:determine|establish|ascertain|confirm)\b"),
    # "The provided text describes X ... but does not offer a diagnosis": the source is the subject
    re.compile(
        r"\b(?:the|this) (?:provided |given |available )?" + _SRC + r"s? [^.;:!?]{0,200}?\b(?:but|and|yet) "
        r"(?:does not|doesnt|do not|dont) (?:\w+ ){0,2}?(?:contain|include|mention|report|state|specify|provide|"
        r"give|offer|describe|discuss|address|list|document)\b"
    ),
    # "No definitive diagnosis can be made at this time": declining, like "cannot be made"
    re.compile(
        r"\bno (?:\w+ ){0,2}?(?:diagnosis|determination|conclusion|recommendation|answer|assessment|decision) "
        r"can be (?:made|given|drawn|reached|established|determined|provided)\b"
    ),
)
_ABSTAIN_RES = tuple(_fast(r) for r in _ABSTAIN_RES)
_CONFLICT_RE = re.compile(
    r"\b(?:conflict\w*|contradict\w*|inconsisten\w*|discrepan\w*|disagree\w*|(?:do|does) not agree|"
    r"dont agree|doesnt agree|differ|differs|differing|(?:do|does|did) not (?:match|align)|dont match|doesnt match|"
    r"different (?:\w+ )?(?:values|doses|dosages|results|findings|diagnoses|numbers|grades|reports|ages|sizes|"
    r"schedules|amounts|figures|readings|measurements|types|locations|interpretations|conclusions|"
    r"classifications|opinions|descriptions)|"
    # "…, but the second neuroradiology opinion suggests …": one source set against another
    r"but (?:the |a )?(?:second|other|another|separate|outside|later) (?:\w+ ){0,2}?"
    r"(?:opinions?|reports?|reviews?|readings?|interpretations?|reads?))\b"
)
_CONFLICT_RE = _fast(_CONFLICT_RE)
_CONFLICT_NEG_RE = re.compile(
    r"\b(?:no|not|without|nor|never) (?:\w+ ){0,2}?(?:conflict\w*|contradict\w*|discrepan\w*|"
    r"disagree\w*|inconsisten\w*|differ\w*)\b"
)
_CONFLICT_NEG_RE = _fast(_CONFLICT_NEG_RE)
_REFUSAL_RES: tuple[re.Pattern[str], ...] = (
    re.compile(
        r"\b(?:i|we) (?:cant|cannot|can not|am unable to|m unable to|are unable to|am not able to|"
        r"m not able to|wont|will not|must decline to|have to decline to|decline to|am not allowed to|"
        r"m not allowed to) (?:help|assist|provide|give|offer|answer|comply|respond|discuss|advise)\b"
    ),
    re.compile(
        r"\b(?:consult|speak to|speak with|talk to|talk with|contact|ask) (?:with )?(?:a|an|your|the)"
        r" (?:\w+ ){0,2}?(?:doctor|physician|healthcare|health care|medical|oncologist|clinician|"
        r"professional|provider|specialist|care team)"
    ),
    re.compile(r"\bas an ai\b|\bi am an ai\b|\bim an ai\b|\blanguage model\b"),
    re.compile(r"\b(?:i am|im) not a (?:doctor|physician|medical professional|clinician)\b"),
    re.compile(r"\b(?:cannot|cant|can not|unable to|not able to|not allowed to|not permitted to|wont|will not) "
               r"(?:give|provide|offer) (?:\w+ )?(?:medical|health|clinical) (?:advice|guidance|recommendations?)"),
)
_REFUSAL_RES = tuple(_fast(r) for r in _REFUSAL_RES)


# Cheap keyword prefilters: a pattern can only match when one of its keywords is present, so
# most texts never reach the (slower) regexes.
# one keyword group per abstention pattern, in the order of _ABSTAIN_RES
_ABSTAIN_KEYS: Final = (
    ("does not", "doesnt", "do not", "dont", "did not", "didnt", "fail"),
    ("not ",),
    # "no|not enough|insufficient" + " " + "information|mention|data|detail..."
    tuple(f"{a} {b}" for a in ("no", "enough", "insufficient") for b in ("information", "mention", "data", "detail")),
    ("cannot", "cant", "can not", "unable", "not able", "not possible", "impossible"),
    (" not reported", " not stated", " not specified", " not documented", " not mentioned", " not available",
     " not recorded", " not known"),
    ("lack", "silent", "missing", "omit"),
    ("enough", "sufficient", "adequate"),
    ("no ",),
    ("uncertain", "unclear", "unknown", "ambiguous", "undetermined", "not known", "not clear"),
    ("possible",),
    ("does not", "doesnt", "do not", "dont"),
    ("can be",),
)
_CONFLICT_KEYS: Final = ("conflict", "contradict", "inconsisten", "discrepan", "disagree", "agree", "differ", "match", "align",
                         "but ")
#: Words naming a source: "X is inconsistent with Y" reports a conflict only between sources
#: ("the pathology is inconsistent with the imaging"), not a finding vs a diagnosis ("imaging
#: inconsistent with DIPG").
_SOURCE_WORDS: Final = frozenset(
    """report reports imaging pathology radiology note notes biopsy mri scan scans consult consultation
    opinion opinions assay sources source record records histology neuropathology neuroradiology""".split()
)
_INCONSISTENT_WITH_RE: Final = re.compile(r"\b(?:inconsistent|not consistent) with\b")
_REFUSAL_KEYS: Final = (
    ("cant", "cannot", "can not", "unable", "not able", "wont", "will not", "decline", "not allowed"),
    # (the pattern's verbs, each followed by a space: rarer in answers than the nouns it needs too)
    ("consult ", "speak to ", "speak with ", "talk to ", "talk with ", "contact ", "ask "),
    ("an ai", "language model"),  # "as an ai", "i am an ai", "im an ai" all hold "an ai"
    ("not a ",),
    ("advice", "guidance", "recommendation"),
)


_ABSTAIN_PAIRS: Final = tuple(zip(_ABSTAIN_KEYS, _ABSTAIN_RES))
_REFUSAL_PAIRS: Final = tuple(zip(_REFUSAL_KEYS, _REFUSAL_RES))

# Every keyword of the abstention, refusal and conflict prefilters in one Aho-Corasick automaton
# (pyahocorasick): one C pass over a text finds which keyword groups occur in it, instead of
# 40-60 substring scans (``_key_mask``).  Bit k (k < 12): a keyword of abstention pattern k;
# bit 12 + k: of refusal pattern k; _CONFLICT_BIT: a conflict keyword.
_REFUSAL_SHIFT: Final = len(_ABSTAIN_KEYS)
_CONFLICT_BIT: Final = 1 << (_REFUSAL_SHIFT + len(_REFUSAL_KEYS))
_ABSTAIN_BITS: Final = (1 << _REFUSAL_SHIFT) - 1
_REFUSAL_BITS: Final = ((1 << len(_REFUSAL_KEYS)) - 1) << _REFUSAL_SHIFT


def _keyword_automaton() -> "ahocorasick.Automaton":
    bits: dict[str, int] = {}
    groups = [(k, keys) for k, keys in enumerate(_ABSTAIN_KEYS)]
    groups += [(_REFUSAL_SHIFT + k, keys) for k, keys in enumerate(_REFUSAL_KEYS)]
    groups.append((_CONFLICT_BIT.bit_length() - 1, _CONFLICT_KEYS))
    for bit, keys in groups:
        for key in keys:
            bits[key] = bits.get(key, 0) | (1 << bit)
    automaton = ahocorasick.Automaton()
    for key, mask in bits.items():
        automaton.add_word(key, mask)
    automaton.make_automaton()
    return automaton


_KEYWORDS: Final = _keyword_automaton()
_KEYWORDS_ITER: Final = _KEYWORDS.iter


def _key_mask(text: str) -> int:
    """The keyword groups present in ``text`` (bits as above): bit b is set exactly when
    ``k in text`` for a keyword ``k`` of group b (the automaton reports every occurrence of
    every keyword, overlapping ones included)."""
    m = 0
    for _, v in _KEYWORDS_ITER(text):
        m |= v
    return m


def _any_masked(text: str, mask: int, patterns: tuple[re.Pattern[str], ...]) -> bool:
    """``_any_pattern(text, pairs)`` given the text's keyword groups (``mask`` shifted so that
    bit k is pattern k's group): the patterns whose keywords are present are tried in order."""
    k = 0
    while mask:
        if mask & 1 and patterns[k].search(text) is not None:
            return True
        mask >>= 1
        k += 1
    return False


def _has_any(text: str, keys: tuple[str, ...]) -> bool:
    for k in keys:
        if k in text:
            return True
    return False


def _any_pattern(text: str, pairs: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...]) -> bool:
    """Whether one of the (keywords, pattern) pairs matches; a pattern is tried only when one
    of its keywords is present."""
    for keys, r in pairs:
        for k in keys:
            if k in text:
                if r.search(text) is not None:
                    return True
                break
    return False


@lru_cache(maxsize=2 * _SCORE_MEMO)  # keyed by the text alone (hashing the pattern table costs more)
def judge_abstention(answer_norm: str) -> bool:
    """The answer says the context does not contain what was asked (phrase family in docs)."""
    return _any_masked(answer_norm, _key_mask(answer_norm) & _ABSTAIN_BITS, _ABSTAIN_RES)


def judge_on_topic(answer_norm: "str | Answer", question_norm: str) -> bool:
    """The answer names something the question asks about: it shares at least one key term
    (content word other than meta words like "context", "information") with the question.
    Used so that "the text does not mention X" counts as abstaining only when X is what was
    asked.  Words naming the patient ("patient", "child", "boy", "girl") do not count when the
    question has other key terms: every vignette is about the patient, so "the patient" in an
    answer about monitoring is not on the topic of "the recommended radiation dose for this
    patient".  True when the question has no key terms."""
    q = _question_key_terms(question_norm)
    if not q:
        return True
    topic = q - _PATIENT_WORDS or q
    if "old" in topic:  # "How old is the patient?" asks for the age
        topic = topic | {"age"}
    return bool(topic & analyse_answer(answer_norm).content_terms(META_WORDS))


#: Words naming the patient, ignored by ``judge_on_topic`` when the question has others.
_PATIENT_WORDS: Final = frozenset("patient child boy girl kid infant adolescent".split())


def judge_conflict(answer_norm: str) -> bool:
    """The answer reports that the context contradicts itself (and does not deny a conflict)."""
    return _conflict_reported(answer_norm)


def _conflict_reported(answer_norm: str, has_key: bool = False) -> bool:
    """``has_key``: the caller knows a conflict keyword is present."""
    if not has_key and not _has_any(answer_norm, _CONFLICT_KEYS):
        return False
    # (the denial pattern is tried only once a conflict phrase is found: most answers with a
    # keyword such as "but " or "match" hold none, and without one the answer is False anyway)
    found = _CONFLICT_RE.finditer(answer_norm)
    first = next(found, None)
    if first is None or _CONFLICT_NEG_RE.search(answer_norm) is not None:
        return False
    for m in itertools.chain((first,), found):
        if not m.group(0).startswith("inconsisten"):
            return True
        # "inconsistent with": a conflict only when the sentence names two sources
        start = answer_norm.rfind(".", 0, m.start()) + 1
        end = answer_norm.find(".", m.end())
        sent = set(tokens(answer_norm[start : end if end >= 0 else len(answer_norm)]))
        if not _INCONSISTENT_WITH_RE.match(answer_norm, m.start()) or len(sent & _SOURCE_WORDS) >= 2:
            return True
    return False


@lru_cache(maxsize=2 * _SCORE_MEMO)
def has_refusal_boilerplate(answer_norm: str) -> bool:
    """Refusal boilerplate anywhere in the text (see :func:`judge_refusal`)."""
    return _any_masked(answer_norm, (_key_mask(answer_norm) & _REFUSAL_BITS) >> _REFUSAL_SHIFT, _REFUSAL_RES)


#: A canned refusal is short: longer answers are never treated as one.
REFUSAL_MAX_CHARS: Final = 400
#: Words that carry no content in a refusal ("Sorry, unfortunately I can't help with your request").
_REFUSAL_FILLER: Final = frozenset(
    """sorry unfortunately please however request question help assist understand apologize apologise
    thank thanks qualified""".split()
)
_SENTENCE_RE: Final = re.compile(r"[.!?;:\n]+")


def judge_refusal(answer_norm: "str | Answer", abstained: bool | None = None, conflict: bool | None = None) -> bool:
    """A canned refusal: a short answer (at most ``REFUSAL_MAX_CHARS`` normalised characters)
    made of refusal boilerplate ("I can't help with that", "I cannot provide medical advice",
    "consult your doctor", "as an AI", "I'm not a doctor") and nothing else: once the sentences
    holding boilerplate are removed, no number and at most 2 content words remain, and the
    answer makes no statement about the context (no abstention, no conflict report).  So
    "625 mg weekly. Please consult your doctor." is an answer with a disclaimer, not a refusal.
    Apostrophes are removed by normalisation, so curly and straight ones are the same.
    ``abstained``/``conflict`` may be passed when already computed."""
    a = answer_norm if isinstance(answer_norm, Answer) else None
    text: str = a.norm if a is not None else answer_norm  # type: ignore[assignment]
    if len(text) > REFUSAL_MAX_CHARS:
        return False
    if a is not None:  # (the answer's keyword groups are known: no second keyword pass)
        if not _any_masked(text, (a.keys & _REFUSAL_BITS) >> _REFUSAL_SHIFT, _REFUSAL_RES):
            return False
    elif not has_refusal_boilerplate(text):
        return False
    if abstained is None:
        abstained = a.abstained if a is not None else judge_abstention(text)
    if conflict is None:
        conflict = a.conflict if a is not None else judge_conflict(text)
    if abstained or conflict:
        return False
    rest = " ".join(sent for sent in _SENTENCE_RE.split(text) if not has_refusal_boilerplate(sent))
    if numbers(rest):
        return False
    return len(content_terms(rest, _REFUSAL_FILLER)) <= 2


# --------------------------------------------------------------------------- proof/answer consistency

#: Fraction of the answer's key terms that must appear in the proof.
CONSISTENCY_TERM_RECALL: Final = 0.5


def judge_consistency(
    answer_norm: "str | Answer",
    proof_norm: str,
    question_norm: str = "",
    about_context: bool = False,
    proof_tokens: frozenset[str] | set[str] | None = None,
    piece_tokens: Sequence[list[str]] | None = None,
) -> bool:
    """Proof-answer consistency: the answer's claims are supported by the proof.

    Every number in the answer must appear in the proof (or the question).  For an answer
    that states a fact, at least half of its key terms (content words, minus the question's
    words and meta words such as "context", "reports") must also appear in the proof.  When
    the answer is a statement about the context (``about_context``: an abstention or a
    conflict report), its words name the asked topic rather than claim a fact, so only its
    numbers are checked.  An answer with no numbers and no key terms is consistent.
    ``proof_tokens`` (the proof's word tokens) or ``piece_tokens`` (those of its pieces, as
    :class:`Grounding` has them) save tokenising ``proof_norm`` again.
    """
    a = analyse_answer(answer_norm)
    a_nums = a.nums
    if a_nums and not a_nums <= (_numbers_of(proof_norm) | question_numbers(question_norm)):
        return False
    if about_context:
        return True
    a_terms = a.content_terms(_consistency_drop(question_norm))
    if not a_terms:
        return True
    p_toks: frozenset[str] | set[str]
    if proof_tokens is not None:
        p_toks = proof_tokens
    else:  # (the proof's tokens: from its pieces' tokens when given, as judge_grounding has them)
        p_toks = set(itertools.chain.from_iterable(piece_tokens)) if piece_tokens is not None else set(tokens(proof_norm))
    direct = a_terms & p_toks
    hits = len(direct)
    for t in a_terms - direct:  # (_term_in, inlined: t itself is not in p_toks)
        if t + "s" in p_toks or (t.endswith("y") and t[:-1] + "ies" in p_toks):
            hits += 1
    return hits >= CONSISTENCY_TERM_RECALL * len(a_terms)


@lru_cache(maxsize=8192)
def _consistency_drop(question_norm: str) -> frozenset[str]:
    return META_WORDS | question_terms(question_norm)


# --------------------------------------------------------------------------- claims beyond numbers

#: Direction words, by stem prefix: a claim that something got better (``down``: the tumour
#: shrank, symptoms resolved) or worse (``up``: progression, worsening, enlargement).
_DIRECTION_PREFIXES: Final[dict[str, tuple[str, ...]]] = {
    "better": ("respon", "improv", "reduc", "decreas", "shrink", "shrank", "resol", "regress", "diminish", "relie"),
    "worse": ("progress", "worsen", "increas", "grow", "enlarg", "deteriorat", "exacerbat"),
}
_OPPOSITE: Final = {"better": "worse", "worse": "better"}
#: Subjects a direction claim may be about, and the words that name the same thing.
_SUBJECT_SYNONYMS: Final[dict[str, frozenset[str]]] = {
    w: frozenset({"tumor", "tumour", "lesion", "disease", "glioma", "dipg", "mass"})
    for w in ("tumor", "tumour", "lesion", "disease", "glioma", "dipg", "mass")
}
_NEG_CUES: Final = frozenset(
    "not no never none without cannot cant dont doesnt didnt isnt arent wasnt werent wont absent absence lack lacks lacking nor neither".split()
)
_DIRECTION_CACHE: Final[dict[str, str | None]] = {}


def _direction(tok: str) -> str | None:
    d = _DIRECTION_CACHE.get(tok, "")
    if d == "":
        d = None
        for name, prefixes in _DIRECTION_PREFIXES.items():
            if tok.startswith(prefixes):
                d = name
                break
        if len(_DIRECTION_CACHE) < 100_000:
            _DIRECTION_CACHE[tok] = d
    return d


#: tokens known to be no direction word (filled by _directions; bounded as _DIRECTION_CACHE)
_NOT_DIRECTION: Final[set[str]] = set()


def _directions(toks: list[str] | tuple[str, ...], tokset: "set[str] | frozenset[str] | None" = None) -> list[tuple[int, str]]:
    """(position, direction) of each direction word not negated by one of the 3 words before.
    ``tokset``: ``set(toks)`` when the caller has it."""
    # the distinct tokens not known to be plain words, found by one set difference: usually
    # none or a few, so the positions are scanned only when a direction word is present
    cand = (set(toks) if tokset is None else tokset) - _NOT_DIRECTION
    if not cand:
        return []
    found = {}
    for t in cand:
        d = _direction(t)
        if d is None:
            if len(_NOT_DIRECTION) < 100_000:
                _NOT_DIRECTION.add(t)
        else:
            found[t] = d
    if not found:
        return []
    # the positions of the (few) direction words, found by C-level count/index calls
    out = []
    for t, d in found.items():
        i = -1
        for _ in range(toks.count(t)):
            i = toks.index(t, i + 1)
            if _NEG_CUES.isdisjoint(toks[max(0, i - 3) : i]):
                out.append((i, d))
    if len(found) > 1:
        out.sort()  # (in position order; positions are distinct)
    return out


@lru_cache(maxsize=4096)
def _context_directions_norm(norm: str) -> tuple[tuple[frozenset[str], frozenset[str]], ...]:
    from .text import sentences as _split

    out = []
    for sent in _split(norm):
        toks = tokens(sent)
        out.append((frozenset(toks), frozenset(d for _, d in _directions(toks))))
    return tuple(out)


@lru_cache(maxsize=4096)
def _context_direction_index(norm: str) -> dict[str, frozenset[str]]:
    """word -> the directions stated by the context sentences holding it (sentences stating
    none left out), so a subject's directions are a few lookups (memoised per context)."""
    index: dict[str, set[str]] = {}
    for stoks, sdirs in _context_directions_norm(norm):
        if sdirs:
            for w in stoks:
                index.setdefault(w, set()).update(sdirs)
    return {w: frozenset(d) for w, d in index.items()}


def judge_direction(answer_norm: "str | Answer", ctx: NormContext) -> list[str]:
    """Direction claims the context contradicts.

    For each direction word of the answer (better: responding, improved, reduced, resolved;
    worse: progressing, worsening, increased, enlarged) not negated just before it, the
    subject is the content words after it when it is followed by "of"/"in" ("resolution of
    headache"), else up to 3 before and 3 after it (tumour, lesion, disease,
    glioma and DIPG name the same thing).  The claim is contradicted when the context
    sentences that mention the subject state only the opposite direction.  Returns the
    contradicted claims (normalised snippets), [] when none."""
    a = analyse_answer(answer_norm)
    toks = a.toks
    dirs = _directions(toks, a.tokset)
    if not dirs:
        return []
    sents = None
    bad = []
    for i, d in dirs:
        subj: set[str] = set()
        # "resolution of headache": the subject follows; "the disease is progressing": it precedes
        near = toks[i + 1 : i + 5] if toks[i + 1 : i + 2] in (("of",), ("in",)) else toks[max(0, i - 3) : i] + toks[i + 1 : i + 4]
        for w in near:
            if w in STOPWORDS or w in META_WORDS or w.isdigit() or _direction(w) is not None:
                continue
            subj |= _SUBJECT_SYNONYMS.get(w, frozenset({w}))
        if not subj:
            continue
        if sents is None:
            sents = _context_direction_index(ctx.norm)
        # the directions of the context sentences that mention the subject
        seen: set[str] = set()
        for w in subj:
            stated = sents.get(w)
            if stated is not None:
                seen |= stated
        if _OPPOSITE[d] in seen and d not in seen:
            bad.append(" ".join(toks[max(0, i - 2) : i + 4]))
    return bad


#: Claims of evidence strength that need the context (or question) to say so: approval,
#: proof, statistical significance, cure, efficacy.  Each maps to the words that support it.
_STRENGTH_TERMS: Final[dict[str, frozenset[str]]] = {
    "approved": frozenset({"approved", "approval", "approve"}),
    "approval": frozenset({"approved", "approval", "approve"}),
    "fda": frozenset({"fda"}),
    "proven": frozenset({"proven", "proved", "proof"}),
    "significant": frozenset({"significant", "significantly", "p"}),
    "significantly": frozenset({"significant", "significantly", "p"}),
    "curative": frozenset({"curative", "cure", "cured", "cures"}),
    "cure": frozenset({"curative", "cure", "cured", "cures"}),
    "cured": frozenset({"curative", "cure", "cured", "cures"}),
    "efficacy": frozenset({"efficacy", "effective", "efficacious", "activity", "benefit"}),
    "effective": frozenset({"efficacy", "effective", "efficacious", "activity", "benefit"}),
    "efficacious": frozenset({"efficacy", "effective", "efficacious", "activity", "benefit"}),
}


def judge_strength_claims(answer_norm: "str | Answer", ctx: NormContext, question_norm: str = "") -> list[str]:
    """Evidence-strength words in the answer ("approved", "FDA", "proven", "significant",
    "curative", "efficacy"/"effective") that no affirmative sentence of the context or the
    question supports ("the absence of FDA-approved agents" does not support "approved").
    A strength word negated just before it ("not approved") is not a claim.  Returns the
    unsupported words."""
    toks = analyse_answer(answer_norm).toks
    if _STRENGTH_TERMS.keys().isdisjoint(toks):
        return []
    found = [
        (i, t) for i, t in enumerate(toks) if t in _STRENGTH_TERMS and not any(w in _NEG_CUES for w in toks[max(0, i - 3) : i])
    ]
    if not found:
        return []
    support = _affirmed_tokens(ctx.sentences) | _question_affirmed(question_norm)
    return [t for _, t in found if not (_STRENGTH_TERMS[t] & support)]


@lru_cache(maxsize=8192)
def _affirmed_tokens(sents: tuple[frozenset[str], ...]) -> frozenset[str]:
    """Tokens of the sentences that have no negation cue (memoised per context/question)."""
    out: set[str] = set()
    for s in sents:
        if not (s & _NEG_CUES):
            out |= s
    return frozenset(out)


@lru_cache(maxsize=8192)
def _question_affirmed(question_norm: str) -> frozenset[str]:
    return _affirmed_tokens(tuple(frozenset(tokens(q)) for q in _split_sentences(question_norm)))


def _split_sentences(norm_text: str) -> list[str]:
    from .text import sentences as _split

    return _split(norm_text) if norm_text else []


# --------------------------------------------------------------------------- truthful abstention

#: Words that say an abstention is about certainty, not about what the context mentions
#: ("does not give a definitive diagnosis"): such abstentions are not checked against it.
_HEDGES: Final = frozenset("definitive definitively definite conclusive conclusively clear clearly precise exact certain enough sufficient".split())
#: Words of an abstention's topic that name no content ("no information about ...").
_TOPIC_GENERIC: Final = META_WORDS | frozenset(
    """information data detail details specific any evidence numerical result results regarding about
    mention available relevant further additional explicit explicitly direct directly actual""".split()
)
_TOPIC_END_RE: Final = re.compile(r",|;| such as | which | but | because | so | while | whereas | although | e\.g\.")
_TOPIC_SPLIT_RE: Final = re.compile(r" or | and | nor |/")
#: Share of a topic's content words one affirmative context sentence must hold for the topic
#: to count as reported.
ABSTAIN_TOPIC_RECALL: Final = 0.6
#: A quantity word in an abstention's topic ("the radiotherapy dose", "the symptom duration")
#: is what a number with one of these units states: "does not report the radiotherapy dose"
#: misstates a context reporting "radiotherapy was 30 Gy" although the word "dose" is absent.
_QUANTITY_UNITS: Final[dict[str, frozenset[str]]] = {
    "dose": frozenset("gy cgy mg mcg ug g ml iu unit mg/kg mg/m2".split()),
    "dosage": frozenset("gy cgy mg mcg ug g ml iu unit mg/kg mg/m2".split()),
    "duration": frozenset("day days week weeks month months year years hour hours".split()),
    "size": frozenset("cm mm".split()),
}


def _quantity_in(term: str, sent: frozenset[str]) -> bool:
    units = _QUANTITY_UNITS.get(term)
    return units is not None and not units.isdisjoint(sent) and any(t[:1].isdigit() for t in sent)


def _abstention_topics(sent: str, keys: int | None = None) -> list[str]:
    """The topic texts an abstention sentence says are missing ("does not report X" -> X;
    "X is not reported in the context" -> X).  ``keys``: ``_key_mask(sent)`` when known."""
    out = []
    if keys is None:
        keys = _key_mask(sent)
    for k, r in zip(range(len(_ABSTAIN_RES)), _ABSTAIN_RES):
        if k in (3, 9, 11):  # "cannot be / impossible to determine": inference, not what is mentioned
            continue
        if not keys >> k & 1:  # (the keywords: a necessary condition, as in judge_abstention)
            continue
        m = r.search(sent)
        if m is None:
            continue
        if k in (1, 4):
            topic = sent[: m.start()]
            cut = list(_TOPIC_END_RE.finditer(topic))
            if cut:
                topic = topic[cut[-1].end() :]
        else:
            topic = sent[m.end() :]
            stop = _TOPIC_END_RE.search(topic)
            if stop:
                after = topic[stop.start() :].lstrip(", ")
                if after.startswith("such as "):
                    # "does not contain X, such as Y": the examples Y are said to be missing too
                    rest = after[8:]
                    end = _TOPIC_END_RE.search(rest)
                    out.append(rest[: end.start()] if end else rest)
                topic = topic[: stop.start()]
        out.append(topic)
    return out


def judge_abstention_truthful(answer_norm: "str | Answer", ctx: NormContext) -> list[str]:
    """Abstentions that misstate the context: for each sentence saying the context lacks
    something ("the text does not include any survival data", "X is not reported"), the
    topic (the words after/before the abstention phrase, up to a comma or "such as", split at
    "or"/"and") is reported when one sentence of the context without a negation cue holds at
    least 60 % of a part's content words (generic words like "information", "data",
    "specific" and meta words removed).  A hedged abstention ("no definitive diagnosis") is
    not checked, nor "cannot be determined" (an inference, judged by correctness).  Returns
    the misstated topics, [] when none."""
    bad: list[str] = []
    a = analyse_answer(answer_norm)
    if not a.abstained:
        return bad
    index = None
    for sent, keys in a.sentence_keys():  # (each sentence's keyword groups: judge_abstention(sent), topics)
        if not sent:
            continue
        if not _any_masked(sent, keys & _ABSTAIN_BITS, _ABSTAIN_RES):
            continue
        stoks = set(tokens(sent))
        if stoks & _HEDGES:
            continue
        for topic in _abstention_topics(sent, keys):
            for part in _TOPIC_SPLIT_RE.split(topic):
                terms = content_terms(part, _TOPIC_GENERIC)
                if not terms:
                    continue
                need = max(1, math.ceil(ABSTAIN_TOPIC_RECALL * len(terms)))
                # per affirmative context sentence, how many of the terms it holds (as
                # _term_in: the term or a plural form), through the per-context word index
                if index is None:
                    index = _affirmative_index(ctx.norm)
                hits: dict[int, int] = {}
                for t in terms:
                    ids: "frozenset[int] | set[int] | tuple[()]" = index.get(t, ())
                    for v in (t + "s", t[:-1] + "ies") if t.endswith("y") else (t + "s",):
                        more = index.get(v)
                        if more:
                            ids = set(ids).union(more)
                    for i in ids:
                        hits[i] = hits.get(i, 0) + 1
                if hits and max(hits.values()) >= need:
                    bad.append(part.strip())
    return bad


@lru_cache(maxsize=4096)
def _affirmative_index(context_norm: str) -> dict[str, frozenset[int]]:
    """word -> the positions of the context sentences without a negation cue that hold it
    (the sentences of ``prepare_context``; memoised per context)."""
    from .text import sentences as _split

    index: dict[str, set[int]] = {}
    for i, sent in enumerate(_split(context_norm)):
        s = frozenset(tokens(sent))
        if s & _NEG_CUES:
            continue
        for w in s:
            index.setdefault(w, set()).add(i)
        for q in _QUANTITY_UNITS:  # "dose" is held by a sentence stating a dose ("30 Gy")
            if _quantity_in(q, s):
                index.setdefault(q, set()).add(i)
    return {w: frozenset(ids) for w, ids in index.items()}


def unsupported_claims(answer_norm: "str | Answer", ctx: NormContext, question_norm: str = "") -> list[str]:
    """Everything in the answer the context does not support, beyond numbers: contradicted
    direction claims, unsupported evidence-strength words, and abstentions that misstate the
    context (see the three judges).  [] when the answer's claims are supported."""
    answer_norm = analyse_answer(answer_norm)
    return (
        judge_direction(answer_norm, ctx)
        + judge_strength_claims(answer_norm, ctx, question_norm)
        + judge_abstention_truthful(answer_norm, ctx)
    )


_DECLINE_RE: Final = re.compile(
    r"\b(?:i|we) (?:cannot|cant|can not|am unable to|m unable to|am not able to|m not able to) "
    r"(?:\w+ly )?(?:determine|ascertain|say|tell|establish|provide a (?:\w+ )?(?:answer|recommendation|dose))\b"
)


def reference_declines(expected_norm: str) -> bool:
    """A reference answer that declines to answer: an abstention (``judge_abstention``) or a
    first-person "I can't determine / ascertain / provide a definitive recommendation ...".
    Used for conflict items, whose references often decline because the reports conflict: an
    on-topic abstention is then a right outcome too."""
    return judge_abstention(expected_norm) or _DECLINE_RE.search(expected_norm) is not None
