"""Text normalisation shared by the judges (pure functions, precompiled regexes, cached contexts).

Normal form (``normalize``): superscript digit runs become ``^digits`` (so ``10⁹`` and
``10^9`` agree) and a power right after a letter loses its caret (``m²`` == ``m^2`` ==
``m2``); NFKC (maps U+202F/U+00A0 and other unicode spaces to a plain space, ``…`` to
``...``, ``µ`` to ``μ``); ``×`` becomes ``x``; every dash/hyphen variant (U+2010-U+2015,
U+2212, U+FE58, U+FE63, U+FF0D) becomes ``-``; every quote character (straight, curly,
primes, guillemets) and the apostrophe is deleted (so ``can’t`` == ``can't`` == ``cant``);
case is folded; whitespace runs collapse to one space; spaces next to ``/ ≥ ≤ < > = ± ^`` and
before ``%`` are removed (``30 %`` == ``30%``).  Word tokens (``tokens``) are the ``\\w+``
runs of the normal form, so punctuation never matters for token comparisons."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final

_SUPERSCRIPTS: Final = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹", "0123456789")
_SUPER_RE: Final = re.compile(r"[⁰¹²³⁴⁵⁶⁷⁸⁹]+")
_DASHES: Final = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d\u00ad"
_QUOTES: Final = "\"'`\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u2032\u2033\u00ab\u00bb\u2039\u203a\u02bc\uff02\uff07"
_SYMBOLS: Final = "/≥≤<>=±^"
_SYMBOLS_ASCII: Final = "".join(c for c in _SYMBOLS if c.isascii())
_SYMBOLS_NON_ASCII: Final = frozenset(c for c in _SYMBOLS if not c.isascii())
_LETTER_POWER_RE: Final = re.compile(r"([^\W\d_])\^(\d)")
_TOKEN_RE: Final = re.compile(r"\w+")
# a number is a digit run not glued to a preceding letter (so ONC201, H3, K27M are names);
# the same matches as ``(?<!\w)\d+(?:[.,]\d+)*``, with the look-behind after the first digit
# so that the regex engine can skip to digits instead of trying every position
_NUMBER_RE: Final = re.compile(r"\d(?<!\w\d)\d*(?:[.,]\d+)*")
#: ASCII byte -> ``0`` for a digit, ``a`` for another word character (letter or ``_``), else
#: itself: the shape of a text, in which ``_NUMBER_SHAPE_RE`` finds the spans ``_NUMBER_RE``
#: finds in the text (every digit is the same literal there, so the regex engine skips to it
#: by a character search instead of testing a class at every position)
_SHAPE_BYTES: Final = bytes(48 if chr(i).isdigit() else 97 if chr(i).isalnum() or i == 95 else i for i in range(128)) + bytes(range(128, 256))
_NUMBER_SHAPE_RE: Final = re.compile(r"0(?<!a0)(?<!00)0*(?:[.,]0+)*")
#: Double-quote characters that delimit quoted spans in a proof (single quotes are too
#: ambiguous with apostrophes to delimit spans).
DOUBLE_QUOTES: Final = "\"\u201c\u201d\u201e\u201f\u00ab\u00bb\uff02"


def _structure(pattern: str):
    """(index, character, group depth after it) of each character of a regex that is neither
    escaped nor inside a character class."""
    depth, i, n, in_class = 0, 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "]":  # "[]...]": the first ] is a member
                i += 1
        else:
            depth += (c == "(") - (c == ")")
            yield i, c, depth
        i += 1


def split_top(pattern: str) -> list[str]:
    """``pattern`` split at its top-level ``|`` (outside groups, classes and escapes)."""
    cuts = [i for i, c, depth in _structure(pattern) if c == "|" and depth == 0]
    return [pattern[a + 1 : b] for a, b in zip([-1] + cuts, cuts + [len(pattern)])]


def _close_paren(pattern: str) -> int:
    """Index of the parenthesis closing the group that opens ``pattern``."""
    for i, c, depth in _structure(pattern):
        if c == ")" and depth == 0:
            return i
    raise ValueError(f"unbalanced pattern {pattern!r}")


_LITERAL_RUN_RE: Final = re.compile(r"[a-z0-9][a-z0-9 ]*")


def _word_start_alt(alt: str) -> str:
    if alt.startswith("(?:"):
        close = _close_paren(alt)
        rest = alt[close + 1 :]
        if rest[:1] in ("?", "*", "+", "{"):
            raise ValueError(f"a quantified leading group cannot be rewritten: {alt!r}")
        return "(?:" + "|".join(_word_start_alt(a) for a in split_top(alt[3:close])) + ")" + rest
    m = _LITERAL_RUN_RE.match(alt)
    if m is None:
        raise ValueError(f"no leading literal in {alt!r}")
    lit = m.group(0)
    if alt[len(lit) : len(lit) + 1] in ("?", "*", "+", "{"):  # "weeks?": the quantified char is not literal
        lit = lit[:-1]
    lit = lit.rstrip(" ")
    if not lit:
        raise ValueError(f"no leading literal in {alt!r}")
    return lit + "(?<!\\w" + lit + ")" + alt[len(lit) :]


def word_start(pattern: str) -> str:
    """The same regex as ``pattern`` (the same matches, spans and groups) with every leading
    ``\\b`` of a top-level alternative (``\\b(?:not|no) x|\\bnever``) moved after the
    literal word it guards (``(?:not(?<!\\wnot)|no(?<!\\wno)) x|never(?<!\\wnever)``).  A
    leading ``\\b`` makes the regex engine try the pattern at every position of the text; a
    leading literal lets it skip to the candidate first characters (ten times faster on a
    typical answer).  Before a word character ``\\b`` means "no word character just before",
    which is what the look-behind checks once the word has matched.  Each guarded alternative
    must start with a lowercase word or digit literal (or a group of such alternatives)."""
    out = []
    for alt in split_top(pattern):
        out.append(_word_start_alt(alt[2:]) if alt.startswith("\\b") else alt)
    return "|".join(out)


def _superscript(m: re.Match[str]) -> str:
    return "^" + m.group(0).translate(_SUPERSCRIPTS)


_SPACES: Final = "\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"
_SPECIAL: Final = {**{c: "-" for c in _DASHES}, **{c: "" for c in _QUOTES}, **{c: " " for c in _SPACES}, "\u2026": "...", "\u00d7": "x",
                   # the micro sign (common in lab values: "µL") is NFKC's Greek mu; mapped here so
                   # that a text whose only non-NFKC character it is skips the NFKC pass (same result)
                   "\u00b5": "\u03bc"}
_SUPER_CHARS: Final = frozenset("⁰¹²³⁴⁵⁶⁷⁸⁹")
_DASH_QUOTE: Final = {c: r for c, r in _SPECIAL.items() if c in _DASHES or c in _QUOTES}
_ASCII_BYTES: Final = bytes(range(128))
#: the non-ASCII characters ``normalize`` replaces before NFKC (by ASCII text, but the micro sign)
_REPLACED: Final = _SUPER_CHARS | frozenset(_SPECIAL)
_DASH_QUOTE_CHARS: Final = frozenset(_DASH_QUOTE)
_SPECIAL_CHARS: Final = frozenset(_SPECIAL)


def _nfkc_stable_chars() -> frozenset[str]:
    """Non-ASCII characters that never change under NFKC, in any text: no decomposition
    (``is_normalized`` alone), canonical combining class 0 (never reordered) and not a mark
    (the characters that compose with the one before them are marks or Hangul jamo, none of
    them in these blocks).  A text whose non-ASCII characters are all such is NFKC-normal, so
    its whole-text check (a database lookup per character) is skipped."""
    blocks = [range(0xA0, 0x250), range(0x370, 0x400), range(0x2190, 0x2300), range(0xFFFD, 0xFFFE)]
    return frozenset(
        c for r in blocks for c in map(chr, r)
        if unicodedata.is_normalized("NFKC", c) and unicodedata.combining(c) == 0 and unicodedata.category(c)[0] != "M"
    )


_NFKC_STABLE: Final = _nfkc_stable_chars()
#: each superscript digit -> the run marker and its digit (see ``_superscripts``)
_SUPER_DIGIT: Final = {c: "\x00" + c.translate(_SUPERSCRIPTS) for c in _SUPER_CHARS}


def _non_ascii_chars(text: str) -> set[str]:
    """The distinct non-ASCII characters of ``text``: its UTF-8 bytes with the ASCII ones
    deleted, decoded (three C passes of a few instructions a byte, against a regex class test
    or a character object per character)."""
    return set(text.encode("utf-8", "surrogatepass").translate(None, _ASCII_BYTES).decode("utf-8", "surrogatepass"))


def _superscripts(text: str, found: set[str]) -> str:
    """``_SUPER_RE.sub(_superscript, text)`` (a run of superscript digits -> ``^digits``) by one
    replacement per superscript character present (``found``) instead of a class scan of the
    whole text: each becomes a marker and its digit, and a marker starts a run unless the
    previous superscript is right before it."""
    if "\x00" in text:  # (the marker itself is in the text: the regex)
        return _SUPER_RE.sub(_superscript, text)
    for ch in found & _SUPER_CHARS:
        text = text.replace(ch, _SUPER_DIGIT[ch])
    parts = text.split("\x00")
    out = [parts[0]]
    run = False
    for part in parts[1:]:  # each part: the superscript's digit, then the text up to the next one
        out.append(part if run else "^" + part)
        run = len(part) == 1
    return "".join(out)


def normalize(text: str) -> str:
    """The normal form described in the module docstring (linear time)."""
    if not text:
        return ""
    ascii_in = text.isascii()  # (then: no non-ASCII symbol is in the text)
    rest: set[str] = set()
    if not ascii_in:
        # the distinct non-ASCII characters decide every pass below (found from the UTF-8
        # bytes: three C passes of a few instructions a byte).  Each special character present
        # is then replaced by one search of the text (a replacement by one character is a
        # copy and a store per occurrence; no regex scans the text); once the last non-ASCII
        # character is gone, the result is an ASCII string again
        found = _non_ascii_chars(text)
        # (no pass below makes a ≥, ≤ or ±: the NFKC form of no other character holds one)
        ascii_in = found.isdisjoint(_SYMBOLS_NON_ASCII)
        if not found.isdisjoint(_SUPER_CHARS):
            text = _superscripts(text, found)
        # the common special characters first (cheap); NFKC only for what is left
        for ch in found & _SPECIAL_CHARS:  # (a set: intersecting a dict walks all its keys)
            text = text.replace(ch, _SPECIAL[ch])
        # the non-ASCII characters left: those found, less the ones replaced by ASCII text (the
        # micro sign became the Greek mu)
        rest = found - _REPLACED
        if "\u00b5" in found:
            rest.add("\u03bc")
    if '"' in text or "'" in text or "`" in text:
        text = text.replace('"', "").replace("'", "").replace("`", "")
    if text.isascii():
        text = _collapse_ascii_spaces(text.casefold())
    else:
        if not rest <= _NFKC_STABLE and not unicodedata.is_normalized("NFKC", text):
            # the dash and quote replacements only when NFKC changed something (every dash
            # and quote it could leave was replaced above); ``rest`` recomputed after it
            text = unicodedata.normalize("NFKC", text)
            rest = _non_ascii_chars(text)
            for ch in rest & _DASH_QUOTE_CHARS:
                text = text.replace(ch, _DASH_QUOTE[ch])
            rest -= _DASH_QUOTE_CHARS
            if '"' in text or "'" in text or "`" in text:
                text = text.replace('"', "").replace("'", "").replace("`", "")
        if text.isascii():
            text = _collapse_ascii_spaces(text.casefold())
        else:
            if all(c.casefold() == c for c in rest):
                # only the ASCII letters change: lowered as UTF-8 bytes (multi-byte sequences
                # hold no ASCII byte), the same as casefold and several times faster
                text = text.encode("utf-8", "surrogatepass").lower().decode("utf-8", "surrogatepass")
                # no non-ASCII space left: the ASCII collapse is the same as split/join
                space = any(c.isspace() for c in rest)
            else:
                text = text.casefold()
                space = True
            text = " ".join(text.split()) if space else _collapse_ascii_spaces(text)
    if " %" in text:
        text = text.replace(" %", "%")
    # (the non-ASCII symbols only when found in the text: no replacement above makes one)
    for ch, before, after in _SYMBOL_SPACES_ASCII if ascii_in else _SYMBOL_SPACES:
        if ch in text:
            text = text.replace(before, ch).replace(after, ch)
    if "^" in text:
        text = _drop_letter_powers(text)
    return text


#: (symbol, space + symbol, symbol + space) for the spaces ``normalize`` removes
_SYMBOL_SPACES: Final = tuple((c, " " + c, c + " ") for c in _SYMBOLS)
_SYMBOL_SPACES_ASCII: Final = tuple(x for x in _SYMBOL_SPACES if x[0].isascii())
#: what ``str.split()`` splits ASCII text at, besides the space
_ASCII_WS: Final = "\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"


def _collapse_ascii_spaces(text: str) -> str:
    """``" ".join(text.split())`` for ASCII text, by whole-string replacements (no list of words)."""
    for ch in _ASCII_WS:  # (a memchr each: cheaper than one isprintable() test per character)
        if ch in text:
            text = text.replace(ch, " ")
    while "  " in text:
        text = text.replace("  ", " ")
    if text[:1] == " " or text[-1:] == " ":
        text = text.strip(" ")
    return text


_LETTER_RE: Final = re.compile(r"[^\W\d_]")
_DIGIT_RE: Final = re.compile(r"\d")


def _drop_letter_powers(text: str) -> str:
    """``_LETTER_POWER_RE.sub(r"\1\2", text)`` (``m^2`` -> ``m2``), done per caret: the regex
    scans every position of the text, while carets are rare."""
    parts = text.split("^")
    out = [parts[0]]
    for prev, nxt in zip(parts, parts[1:]):
        if not (prev and nxt and _LETTER_RE.match(prev[-1]) and _DIGIT_RE.match(nxt[0])):
            out.append("^")
        out.append(nxt)
    return "".join(out)


@lru_cache(maxsize=8192)
def normalize_cached(text: str) -> str:
    """:func:`normalize`, memoised (for questions and expected answers, which repeat)."""
    return normalize(text)


#: ASCII byte -> itself when a word character (alphanumeric or "_"), else a space.  Applied to
#: the bytes of an ASCII text (a C table lookup per byte; ``str.translate`` looks every distinct
#: character up in a dict, building an int object for it, on each call)
_ASCII_WORD_BYTES: Final = bytes(i if i < 128 and (chr(i).isalnum() or chr(i) == "_") else 32 for i in range(256))


def _ascii_words(text: str) -> list[str]:
    """The ``\\w+`` runs of an ASCII text."""
    return text.encode("ascii").translate(_ASCII_WORD_BYTES).decode("ascii").split()


def tokens(norm_text: str) -> list[str]:
    """Word tokens (``\\w+`` runs) of already-normalised text."""
    if norm_text.isascii():  # same result, about twice as fast
        return _ascii_words(norm_text)
    # the non-ASCII characters that are not word characters (``\w`` is alphanumeric or "_")
    # separate tokens as a space does; when only those make the text non-ASCII, it takes the
    # ASCII path (2-3x faster than the regex)
    for c in _non_ascii_chars(norm_text):
        if not c.isalnum():
            norm_text = norm_text.replace(c, " ")
    if norm_text.isascii():
        return _ascii_words(norm_text)
    return _TOKEN_RE.findall(norm_text)


def tokens_of_pieces(pieces: list[str], joined: str) -> list[list[str]]:
    """``[tokens(p) for p in pieces]`` where ``joined`` is ``" ".join(pieces)``: the non-ASCII
    characters that separate words are found once, in the joined text, instead of once per
    piece (most pieces then take the ASCII path of :func:`tokens`)."""
    if joined.isascii():
        return [_ascii_words(p) for p in pieces]
    seps = [c for c in _non_ascii_chars(joined) if not c.isalnum()]
    out = []
    for p in pieces:
        if seps and not p.isascii():
            for c in seps:
                if c in p:
                    p = p.replace(c, " ")
        out.append(tokens(p))
    return out


def canonical_number(raw: str) -> str:
    """``1,000`` -> ``1000``; ``1.50`` -> ``1.5``; ``07`` -> ``7``; ``0.48`` stays."""
    s = raw
    if "," in s:
        parts = s.split(",")
        # thousands separators: every group after the first has 3 digits
        if all(len(p) == 3 and p.isdigit() for p in parts[1:]):
            s = "".join(parts)
        else:
            s = s.replace(",", ".")
    if s.count(".") > 1:
        return s  # a version-like string; keep as is
    if "." in s:
        whole, frac = s.split(".")
        frac = frac.rstrip("0")
        whole = whole.lstrip("0") or "0"
        return f"{whole}.{frac}" if frac else whole
    return s.lstrip("0") or "0"


def numbers(norm_text: str) -> set[str]:
    """Canonical numbers appearing in already-normalised text.  Digits glued to a preceding
    letter are part of a name (``onc201``, ``h3``, ``k27m``) and are compared as words."""
    if norm_text.isascii():
        # most pieces of text have no digit at all: a memchr per digit finds out (the regex
        # tests a class at every position)
        for d in "0123456789":
            if d in norm_text:
                break
        else:
            return set()
        shape = norm_text.encode("ascii").translate(_SHAPE_BYTES).decode("ascii")
        found = [norm_text[m.start() : m.end()] for m in _NUMBER_SHAPE_RE.finditer(shape)]
    else:
        if _DIGIT_RE.search(norm_text) is None:
            return set()
        found = _NUMBER_RE.findall(norm_text)
    known = _CANONICAL.get
    return {known(m) or _canonical_stored(m) for m in found}


#: raw number -> canonical_number(raw) (numbers repeat across responses: "625", "100,000")
_CANONICAL: Final[dict[str, str]] = {}


def _canonical_stored(raw: str) -> str:
    c = canonical_number(raw)  # never "" (so ``known(m) or ...`` above is exact)
    if len(_CANONICAL) < 100_000:
        _CANONICAL[raw] = c
    return c


def unify_double_quotes(text: str) -> str:
    """Map every double-quote variant to ``"``."""
    if not text.isascii():
        for ch in DOUBLE_QUOTES[1:]:  # (a find per quote character: cheaper than a class scan)
            if ch in text:
                text = text.replace(ch, '"')
    return text


#: A word trigram that occurs more often than this in one context is not used to locate a
#: quote (it is "common": boilerplate such as "has shown potential"); this bounds the work of
#: a near-verbatim check to at most this many candidate places per trigram of the quote.
MAX_TRIGRAM_POSITIONS: Final = 32

_SENT_SPLIT_RE: Final = re.compile(r"(?<=[.!?;:])\s+")


@dataclass(frozen=True)
class NormContext:
    """A context prepared once for grounding checks."""

    norm: str
    token_str: str  # " tok tok tok " (padded), for whole-token substring checks
    trigrams: frozenset[str]
    numbers: frozenset[str]
    toks: tuple[str, ...] = ()
    #: trigram -> its start positions in ``toks`` (only trigrams seen at most
    #: MAX_TRIGRAM_POSITIONS times; the others are in ``common``)
    tri_pos: dict = field(default_factory=dict)
    common: frozenset[str] = frozenset()
    #: the context's sentences as token sets (for claim checks), in order
    sentences: tuple[frozenset[str], ...] = ()
    unigrams: frozenset[str] = frozenset()
    bigrams: frozenset[str] = frozenset()
    #: index in ``token_str`` of the space before each token of ``toks`` (so a run of tokens
    #: starting at position p is ``token_str.startswith(" " + " ".join(run) + " ", tok_at[p])``)
    tok_at: tuple[int, ...] = ()


def sentences(norm_text: str) -> list[str]:
    """Sentences of normalised text (split after . ! ? ; : followed by a space, so decimals
    such as ``3.5`` never split)."""
    return [s for s in _SENT_SPLIT_RE.split(norm_text) if s]


def _is_variant(tok: str) -> bool:
    """A protein-change token such as ``k27m``, ``g328v``, ``v600e``: letter, digits, letter."""
    return len(tok) >= 3 and tok[0].isalpha() and tok[-1].isalpha() and tok[1:-1].isdigit()


#: cheap test on text: a digit, a separator, then letter + digit (``h3 k27m``); without it no
#: pair of tokens can be merged by ``merge_variant_names``
_VARIANT_PAIR_RE: Final = re.compile(r"\d\W+[^\W\d_]\d")
_VARIANT_PAIR_RE_ASCII: Final = re.compile(_VARIANT_PAIR_RE.pattern, re.ASCII)


def has_variant_pair(text: str) -> bool:
    """``_VARIANT_PAIR_RE`` occurs in ``text`` (through its ASCII twin when ``text`` is ASCII)."""
    return (_VARIANT_PAIR_RE_ASCII if text.isascii() else _VARIANT_PAIR_RE).search(text) is not None


def variant_pair_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every match of ``_VARIANT_PAIR_RE`` in ``text``, overlapping ones
    included ([] when ``has_variant_pair(text)`` is False).  The pattern has no look-around and
    its ``\\W+`` run is followed by a word character, so a piece ``text[a:b]`` holds a match
    exactly when one of these spans lies within ``[a, b)``: one scan of a joined text answers
    ``has_variant_pair`` for each of its pieces.  (A match is digit, non-word run, letter,
    digit: the only position inside it where another match can start is its last digit, so the
    next search starts there.)"""
    if not text.isascii():
        # each non-ASCII character becomes an ASCII one of its class for the pattern, so the
        # positions stay: a decimal digit (``\d``) "0", another word character ("²", "α") "a",
        # anything else (not ``\w``) a space
        for c in _non_ascii_chars(text):
            text = text.replace(c, "0" if c.isdecimal() else "a" if c.isalnum() else " ")
    return _variant_pair_spans_ascii(text)


#: ASCII byte -> its class for ``_VARIANT_PAIR_RE``: "0" a digit, "a" a letter, "_" the
#: underscore (a word character that is neither), " " any other (non-word) character
_VARIANT_CLASS: Final = bytes(
    ord("0") if chr(i).isdigit() else ord("a") if chr(i).isalpha() else ord("_") if chr(i) == "_" else ord(" ")
    for i in range(256)
)


def _variant_pair_spans_ascii(text: str) -> list[tuple[int, int]]:
    """:func:`variant_pair_spans` of an ASCII text without the regex (which tests a character
    class at every position): in the text's class string (``_VARIANT_CLASS``) a match is a
    ``0``, a run of spaces, then ``a0``; so each ``" a0"`` (found by a C-level substring search,
    and rare: a word starting with one letter and a digit) closes at most one match, the one
    whose space run ends there when a ``0`` precedes that run.  Every match ends so; in text
    order."""
    cls = text.encode("ascii").translate(_VARIANT_CLASS)
    out = []
    i = cls.find(b" a0")
    while i >= 0:
        j = i - 1  # back to the last character before the run of spaces (runs are disjoint:
        while j >= 0 and cls[j] == 32:  # linear in all)
            j -= 1
        if j >= 0 and cls[j] == 48:  # "0"
            out.append((j, i + 3))
        i = cls.find(b" a0", i + 1)
    return out


def merge_variant_names(toks: list[str], text: str | None = None) -> list[str]:
    """Join a gene or histone name ending in a digit and the protein change after it into one
    token (``h3 k27m`` -> ``h3k27m``, ``acvr1 g328v`` -> ``acvr1g328v``), so that "H3K27M",
    "H3 K27M" and "H3-K27M" are the same words when quotes are compared with the context.
    ``text``: the normalised text the tokens come from, for a quick test first."""
    if text is not None and not has_variant_pair(text):
        return toks
    out: list[str] = []
    i, n = 0, len(toks)
    while i < n:
        t = toks[i]
        if i + 1 < n and t[-1].isdigit() and t[0].isalpha() and _is_variant(toks[i + 1]):
            out.append(t + toks[i + 1])
            i += 2
        else:
            out.append(t)
            i += 1
    return out


@lru_cache(maxsize=4096)
def prepare_context(context: str) -> NormContext:
    """Normalise a context once; cached per context string (contexts repeat across a group).
    Its word tokens for quote checks have variant names merged (``merge_variant_names``)."""
    norm = normalize(context)
    toks = merge_variant_names(tokens(norm), norm)
    pos: dict[str, list[int]] = {}
    for i in range(len(toks) - 2):
        t = f"{toks[i]} {toks[i + 1]} {toks[i + 2]}"
        lst = pos.get(t)
        if lst is None:
            pos[t] = [i]
        else:
            lst.append(i)
    common = frozenset(t for t, lst in pos.items() if len(lst) > MAX_TRIGRAM_POSITIONS)
    tri_pos = {t: tuple(lst) for t, lst in pos.items() if t not in common}
    tok_at = []
    at = 0
    for t in toks:
        tok_at.append(at)
        at += len(t) + 1
    return NormContext(
        norm=norm,
        token_str=" " + " ".join(toks) + " ",
        trigrams=frozenset(pos),
        numbers=frozenset(numbers(norm)),
        toks=tuple(toks),
        tri_pos=tri_pos,
        common=common,
        sentences=tuple(frozenset(tokens(s)) for s in sentences(norm)),
        unigrams=frozenset(toks),
        bigrams=frozenset(f"{toks[i]} {toks[i + 1]}" for i in range(len(toks) - 1)),
        tok_at=tuple(tok_at),
    )
