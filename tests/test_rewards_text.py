"""Normalisation used by every judge."""

from rewards.text import canonical_number, normalize, numbers, prepare_context, tokens


def test_unicode_spaces_hyphens_quotes_case():
    assert normalize("H3\u2011K27M") == normalize("h3-k27m") == "h3-k27m"
    assert normalize("25\u202fmg\u00a0daily") == "25 mg daily"
    assert normalize("I can\u2019t") == normalize("I can't") == normalize("I CANT") == "i cant"
    assert normalize("\u201cquoted\u201d and \"plain\"") == "quoted and plain"
    assert normalize("a \u2014 b \u2013 c \u2212 d") == "a - b - c - d"


def test_numbers_and_units():
    assert normalize("30 %") == normalize("30%") == "30%"
    assert normalize("10\u2079/L") == normalize("10^9/L") == "10^9/l"
    assert normalize("20 mg/m\u00b2") == normalize("20 mg/m^2") == normalize("20 mg/m2") == "20 mg/m2"
    assert normalize("\u2265 3") == "\u22653"
    assert normalize("45 \u00d7 10") == "45 x 10"
    assert numbers(normalize("ONC201 H3 K27M 625mg")) == {"625"}
    assert numbers(normalize("1,000 mg, 1.50 and 0.48 or 07")) == {"1000", "1.5", "0.48", "7"}
    assert canonical_number("2,5") == "2.5"
    assert canonical_number("1.0") == "1"


def test_whitespace_collapses_and_empty():
    assert normalize("  a\n\n\tb  ") == "a b"
    assert normalize("") == ""
    assert tokens(normalize("Hello, world!")) == ["hello", "world"]


def test_prepare_context_is_cached_per_string():
    a = prepare_context("MRI showed a 3.5 cm lesion.")
    b = prepare_context("MRI showed a 3.5 cm lesion.")
    assert a is b
    assert "3.5" in a.numbers and "mri showed a" in a.trigrams
    assert " mri showed a 3 5 cm lesion " == a.token_str


def test_tokens_ascii_fast_path_matches_regex():
    import re

    for t in ["a-b c_d e.f 12,5 x/y", "h3-k27m mg/m2 10^9/l", "", "   ", "über straße 5", "a\tb\nc"]:
        n = normalize(t)
        assert tokens(n) == re.findall(r"\w+", n)


def test_letter_power_fast_path_matches_the_regex():
    # the per-caret rewrite used by normalize gives what the regex rewrite gives, on any text
    import re

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from rewards.text import _LETTER_POWER_RE, _drop_letter_powers

    @settings(max_examples=2000, deadline=None)
    @given(st.text(alphabet="am1²_^ é٣x.", max_size=14))
    def check(s):
        assert _drop_letter_powers(s) == _LETTER_POWER_RE.sub(r"\1\2", s)

    check()
    assert normalize("125 mg/m^2 and 10^9/L") == "125 mg/m2 and 10^9/l"
    assert re.sub(r"\s", "", normalize("m ^ 2")) == "m2"


def test_word_start_rewrite_keeps_every_match():
    import random
    import re

    from rewards import judges
    from rewards.text import word_start

    patterns = [
        r"\b(?:no|not enough|insufficient) (?:information|data|details?) (?:about|on)\b",
        r"\bas an ai\b|\bi am an ai\b|%|\blanguage model\b",
        r"\b(?:conflict\w*|(?:do|does) not agree|different (?:\w+ )?(?:values|doses))\b",
        r"\b(?:dose|months?|weeks?|how much)\b|%",
        r"(?<!\w)\d+(?:[.,]\d+)*",  # no leading \b: unchanged
    ]
    words = "no not enough insufficient information data details about on as an ai i am language model conflicts do does agree different values doses dose months weeks how much 3.5 x1,5 % ano notx".split()
    rng = random.Random(5)
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(3000)]
    texts += [t.replace(" ", "") for t in texts[:300]] + [t.replace(" ", "-") for t in texts[300:600]]
    for p in patterns:
        old, new = re.compile(p), re.compile(word_start(p))
        assert old.pattern == new.pattern or "(?<!\\w" in new.pattern
        for t in texts:
            assert [m.span() for m in old.finditer(t)] == [m.span() for m in new.finditer(t)], (p, t)
    # the judges' patterns went through the rewrite
    assert "(?<!\\wnot)" in judges._ABSTAIN_RES[1].pattern
    assert numbers("a1.5 x 2,000 and onc201 at 3.5") == {"5", "2000", "3.5"}


def test_keyword_prefilters_are_necessary_conditions():
    # a pattern is tried only when one of its keywords is present: every text it matches must
    # hold one, or a prefilter would change a verdict
    import random

    from rewards import judges

    words = (
        "the context text does not doesnt mention report no not enough insufficient information data details detail "
        "about on is are reported cannot be determined from consult speak to with talk ask contact a your doctor "
        "physician as an ai i am im language model not a medical advice give provide unable lacks missing uncertain "
        "diagnosis possible impossible to determine can made definitive".split()
    )
    rng = random.Random(3)
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 14))) for _ in range(20000)]
    matched = 0
    for keys, rx in judges._ABSTAIN_PAIRS + judges._REFUSAL_PAIRS:
        for t in texts:
            if rx.search(t):
                matched += 1
                assert any(k in t for k in keys), (rx.pattern[:60], t)
    assert matched > 300  # the corpus exercises the patterns


def _reference_normalize(text):
    """The normal form as plain passes over the whole text (the implementation before the
    per-character-set fast paths), to check normalize against."""
    import re
    import unicodedata

    from rewards import text as T

    if not text:
        return ""
    text = re.sub("[⁰¹²³⁴⁵⁶⁷⁸⁹]+", lambda m: "^" + m.group(0).translate(T._SUPERSCRIPTS), text)
    text = re.sub("[" + re.escape("".join(T._SPECIAL)) + "]", lambda m: T._SPECIAL[m.group(0)], text)
    if not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
        text = re.sub("[" + T._DASHES + "]", "-", text)
        text = re.sub("[" + re.escape(T._QUOTES) + "]", "", text)
    text = " ".join(text.casefold().split())
    text = text.replace(" %", "%")
    for ch in T._SYMBOLS:
        text = text.replace(" " + ch, ch).replace(ch + " ", ch)
    return re.sub(r"([^\W\d_])\^(\d)", r"\1\2", text)


def test_normalize_matches_the_plain_passes_on_random_text():
    import random

    from rewards.text import normalize

    alphabet = list("aZk9 0.,%/^-'\"`\t\n\x1c\x00") + list(
        "⁰¹²³⁹²µμαΑßΣİ≥≤≈×…–—‑\u00a0\u202f\u2028\u0085\u200b’“”«»＂＇ｆ①ﬁ\u0301é\ufffd\ud800"
    )
    rng = random.Random(11)
    for _ in range(20000):
        t = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        assert normalize(t) == _reference_normalize(t), repr(t)


def test_tokens_match_the_word_regex_on_random_non_ascii_text():
    import random
    import re

    alphabet = list("ab9_ .-/") + list("μαΑß≥≈①²٣é\u0301\u00a0\u2028\ufffd\ud800–")
    rng = random.Random(12)
    for _ in range(20000):
        t = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16)))
        assert tokens(t) == re.findall(r"\w+", t), repr(t)


def test_tokens_of_pieces_matches_tokens_of_each_piece():
    # judge_grounding tokenises a proof's pieces together: the separators found once in the
    # joined text, each piece then tokenised as tokens() would
    import random
    import re

    from rewards.text import tokens_of_pieces

    alphabet = list("ab9_ .-/") + list("\u03bc\u03b1\u0391\u00df\u2265\u2248\u2460\u00b2\u0663\u00e9\u0301\u2028\ufffd\ud800\u2013")
    rng = random.Random(13)
    for _ in range(5000):
        pieces = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(rng.randint(1, 5))]
        got = tokens_of_pieces(pieces, " ".join(pieces))
        assert got == [re.findall(r"\w+", p) for p in pieces], pieces


def test_variant_pair_spans_answer_has_variant_pair_for_every_piece():
    # judge_grounding scans the joined proof once: a piece holds a "h3 k27m" pair exactly when
    # one of the joined text's pair spans lies within it
    import random

    from rewards.text import has_variant_pair, variant_pair_spans

    alphabet = ["h3", "k27m", "1", "a2", "b3", " ", "-", ", ", "x", "\u03b1", "g328v", "7", "(", "acvr1", "\u00b2",
                "\u0663", "\u03b13", "\u2265", "_", "\u00e9\u0301", "\ud800", "\u2160"]  # (٣: a decimal digit; Ⅰ: numeric, no digit)
    rng = random.Random(7)
    for _ in range(5000):
        pieces = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8))) for _ in range(rng.randint(1, 5))]
        joined = " ".join(pieces)
        spans = variant_pair_spans(joined)
        assert bool(spans) == has_variant_pair(joined)
        at = 0
        for piece in pieces:
            end = at + len(piece)
            assert any(at <= a and b <= end for a, b in spans) == has_variant_pair(piece), (pieces, piece)
            at = end + 1


def test_keyword_automaton_finds_the_groups_the_substring_scans_find():
    import random

    from rewards import judges

    words = (
        "the context text does not doesnt dont mention report no not enough insufficient sufficient information "
        "data detail about is reported cannot can not cant significant be determined speak to talk with consult a "
        "your doctor as an ai im not a medical advice unable lacks uncertain possible impossible can be conflict "
        "agree disagree differ match align but differs".split()
    )
    groups = list(judges._ABSTAIN_KEYS) + list(judges._REFUSAL_KEYS) + [judges._CONFLICT_KEYS]
    rng = random.Random(9)
    for _ in range(20000):
        t = rng.choice(("", " ")).join(rng.choice(words) for _ in range(rng.randint(0, 12)))
        want = sum(1 << b for b, keys in enumerate(groups) if any(k in t for k in keys))
        assert judges._key_mask(t) == want, t
        assert judges.judge_abstention(t) == judges._any_pattern(t, judges._ABSTAIN_PAIRS)
        assert judges.has_refusal_boilerplate(t) == judges._any_pattern(t, judges._REFUSAL_PAIRS)


def test_sentence_keyword_groups_from_one_pass_equal_each_sentences_own():
    # judge_abstention_truthful takes each sentence's keyword groups from the answer's single
    # automaton pass: the same as running the automaton on each sentence of the split
    import random

    from rewards import judges

    words = "the text does not mention report no not enough data cannot be determined unable but differ an ai x".split()
    seps = [" ", " ", ". ", ".", "; ", ":", "!", "?\n", "...", " ,"]
    rng = random.Random(15)
    for _ in range(20000):
        t = "".join(rng.choice(words) + rng.choice(seps) for _ in range(rng.randint(0, 8)))
        if rng.random() < 0.3:
            t = rng.choice(seps) + t
        want = [(s, judges._key_mask(s)) for s in judges._SENTENCE_RE.split(t)]
        assert judges.Answer(t).sentence_keys() == want, t
    seps_chars = set(".!?;:\n")
    for key, _ in judges._KEYWORDS.items():
        assert not seps_chars & set(key), key


def test_normalize_ignores_surrounding_space():
    # the scorer reuses a malformed response's normalised answer for its raw refusal candidate
    # when they differ only by surrounding space
    import random

    chars = ["a", "B", " ", "\n", "\t", "\u202f", "\u00a0", "\u2028", "\u0085", "\x1c", "\u0301", "\u00b4", "\u00b2", "^",
             "\u2011", "\u2019", '"', "%", "/", "\u00e9", "\u00df", "1", "\u2026", "\u1100", "\u1161", "\u00b5"]
    rng = random.Random(3)
    for _ in range(20000):
        t = "".join(rng.choice(chars) for _ in range(rng.randint(0, 12)))
        assert normalize(t) == normalize(t.strip()), repr(t)


def test_variant_pair_spans_of_ascii_text_match_the_regex():
    import random

    from rewards.text import _VARIANT_PAIR_RE_ASCII, variant_pair_spans

    def by_regex(text):
        out, m = [], _VARIANT_PAIR_RE_ASCII.search(text)
        while m is not None:
            out.append(m.span())
            m = _VARIANT_PAIR_RE_ASCII.search(text, m.end() - 1)
        return out

    alphabet = ["h3", "k27m", "1", " ", "  ", "a2", "b3", "-", ", ", "x", "_", "g328v", "7", "(", "acvr1", "z", "9_", "a"]
    rng = random.Random(12)
    for _ in range(20000):
        t = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10)))
        assert variant_pair_spans(t) == by_regex(t), t
        t = "".join(chr(rng.randint(0, 127)) for _ in range(rng.randint(0, 12)))
        assert variant_pair_spans(t) == by_regex(t), repr(t)


def test_numbers_of_ascii_text_match_the_number_regex():
    # numbers() finds the spans in the text's shape (digits -> "0", other word characters ->
    # "a"): the same numbers as the regex over the text itself, glued digits and separators
    # included
    import random
    import re

    from rewards.text import _canonical_stored

    rx = re.compile(r"\d(?<!\w\d)\d*(?:[.,]\d+)*", re.ASCII)
    alphabet = ["1", "0", "25", "a", "0a", "k", "_", " ", ".", ",", "..", "-", "%", "/", "3.5", "1,000", "x9", "0.", "a0", "00"]
    rng = random.Random(13)
    for _ in range(20000):
        t = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10)))
        assert numbers(t) == {_canonical_stored(m) for m in rx.findall(t)}, t
        t = "".join(chr(rng.randint(0, 127)) for _ in range(rng.randint(0, 12)))
        assert numbers(t) == {_canonical_stored(m) for m in rx.findall(t)}, repr(t)


def test_nfkc_stable_characters_never_change_in_any_text():
    # normalize skips the whole-text NFKC check when every non-ASCII character left is in
    # _NFKC_STABLE; that is exact only if no such character is ever the second of a canonical
    # composition (checked over all of Unicode) and each is NFKC-normal next to any other
    import random
    import sys
    import unicodedata

    from rewards.text import _NFKC_STABLE

    assert {"≥", "≤", "±", "≈", "α", "β", "é", "\ufffd", "→"} <= _NFKC_STABLE
    assert not {"µ", "²", "ﬁ", "\u0301", "\u1161", "\u212b"} & _NFKC_STABLE  # (micro sign, superscript, ligature, mark, jamo, angstrom)
    for cp in range(sys.maxunicode + 1):
        d = unicodedata.decomposition(chr(cp))
        if d and not d.startswith("<") and len(d.split()) == 2:
            assert chr(int(d.split()[1], 16)) not in _NFKC_STABLE, hex(cp)
    stable = sorted(_NFKC_STABLE)
    others = list("ae ,.1") + ["\u0301", "\u0338", "\u1100", "\u1161", "ﬁ", "µ"]
    rng = random.Random(14)
    for _ in range(20000):
        t = "".join(rng.choice(stable if rng.random() < 0.7 else others) for _ in range(rng.randint(1, 6)))
        if all(c.isascii() or c in _NFKC_STABLE for c in t):
            assert unicodedata.is_normalized("NFKC", t), repr(t)
        assert normalize(t) == _reference_normalize(t), repr(t)
