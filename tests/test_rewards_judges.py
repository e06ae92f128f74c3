"""Each component judge on its own."""

import pytest

from rewards.judges import (
    Grounding,
    judge_abstention,
    judge_answer_support,
    judge_conflict,
    judge_consistency,
    judge_correct,
    judge_grounding,
    judge_on_topic,
    judge_refusal,
    span_in_context,
    split_proof,
)
from rewards.text import normalize as N
from rewards.text import prepare_context

CTX = (
    "A 7\u2011year\u2011old boy was diagnosed with DIPG. MRI showed a 3.5\u202fcm pontine lesion. "
    "ONC201 was given at 625 mg weekly. The neuropathology consult states: \u201chigh-grade astrocytic "
    "neoplasm, WHO grade III\u201d. Platelets fell to 45 \u00d7 10\u2079/L. The median overall survival for "
    "patients with DIPG is less than one year despite intensive multimodal therapy and supportive care."
)
C = prepare_context(CTX)


# ----------------------------------------------------------------- grounding


def test_verbatim_quote_with_unicode_variants_is_grounded():
    g = judge_grounding('"A 7-year-old boy was diagnosed with DIPG."', C)
    assert g.status == "verified" and g.n_spans == 1


def test_short_verbatim_quote_is_accepted():
    assert judge_grounding('"625 mg weekly"', C).status == "verified"
    assert judge_grounding("\u201cpontine lesion\u201d", C, question_norm="where was the lesion").status == "verified"


def test_a_verbatim_fragment_that_shows_nothing_is_not_evidence():
    # GRPO found these: a two-word quote is in the context, so it used to earn the verifiable-trace
    # reward for any answer, and every completion converged on it
    for proof in ('"was diagnosed with"', '"pontine lesion"', '"MRI showed" "was diagnosed with"'):
        g = judge_grounding(proof, C, question_norm="which mutation was reported")
        assert g.status == "missing" and g.trivial_spans and not g.bad_spans, proof
    # next to real evidence it is harmless; an invented quote still makes the proof hallucinated
    assert judge_grounding('"MRI showed" "625 mg weekly"', C).status == "verified"
    assert judge_grounding('"MRI showed" "750 mg daily"', C).status == "hallucinated"


def test_case_and_punctuation_and_quotes_inside_do_not_matter():
    g = judge_grounding("\"the neuropathology consult states: 'HIGH-GRADE astrocytic neoplasm, WHO grade III'\"", C)
    assert g.status == "verified"


def test_missing_when_no_evidence():
    assert judge_grounding("", C).status == "missing"
    assert judge_grounding("The context states:", C).status == "missing"
    assert judge_grounding("From the text:", C).status == "missing"


def test_invented_quote_fails():
    g = judge_grounding('"ONC201 was given at 900 mg daily."', C)
    assert g.status == "hallucinated"


def test_invented_text_beside_a_long_real_quote_fails():
    real = '"The median overall survival for patients with DIPG is less than one year despite intensive multimodal therapy and supportive care."'
    assert judge_grounding(real, C).status == "verified"
    # an invented sentence outside the quotes
    assert judge_grounding(real + " The patient was cured with high-dose vitamin C.", C).status == "hallucinated"
    assert judge_grounding(real + "\n- Radiotherapy cured the tumor completely", C).status == "hallucinated"
    # an invented clause inside the same quote
    inside = real[:-2] + ', and the child was cured by proton therapy."'
    assert judge_grounding(inside, C).status == "hallucinated"
    # a second invented quote
    assert judge_grounding(real + ' "Vitamin C cured the tumor."', C).status == "hallucinated"


def test_near_verbatim_within_tolerance():
    # a function word changed in a 20-word quote: accepted (documented tolerance)
    near = '"The median overall survival for patients with DIPG is less than one year despite an intensive multimodal therapy and supportive care."'
    assert span_in_context(N(near), C)
    # a content word swapped for one that is not there: rejected (it changes the claim)
    swapped = '"The median overall survival for patients with DIPG is less than one year despite aggressive multimodal therapy and supportive care."'
    assert not span_in_context(N(swapped), C)
    # a word dropped
    dropped = '"The median overall survival for patients with DIPG is less than one year despite multimodal therapy and supportive care."'
    assert span_in_context(N(dropped), C)
    # three consecutive invented words: rejected
    bad = '"The median overall survival for patients with DIPG is well above five years despite intensive multimodal therapy and supportive care."'
    assert not span_in_context(N(bad), C)
    # a changed number is never tolerated
    num = '"The median overall survival for patients with DIPG is less than 2 year despite intensive multimodal therapy and supportive care."'
    assert not span_in_context(N(num), C)


def test_short_quote_must_be_exact():
    assert not span_in_context(N("625 mg daily"), C)


def test_source_attributions_and_bullets_are_allowed():
    proof = (
        "The context states:\n"
        '- "ONC201 was given at 625 mg weekly." (pharmacy note)\n'
        '1. "MRI showed a 3.5 cm pontine lesion." and "Platelets fell to 45 x 10^9/L."'
    )
    g = judge_grounding(proof, C)
    assert g.status == "verified", g
    assert g.n_spans == 3


def test_ellipsis_fragments_are_checked_separately():
    assert judge_grounding('"A 7-year-old boy ... ONC201 was given at 625 mg weekly."', C).status == "verified"
    assert judge_grounding('"A 7-year-old boy \u2026 ONC201 was given at 900 mg"', C).status == "hallucinated"


@pytest.mark.parametrize(
    "tail",
    ["The context says tumor cured.", "The tumor was cured:", "(tumor cured)", "Context contains only medical info"],
)
def test_claims_disguised_as_attributions_are_evidence(tail):
    g = judge_grounding('"ONC201 was given at 625 mg weekly." ' + tail, C)
    assert g.status == "hallucinated", tail


def test_unquoted_verbatim_line_is_evidence():
    assert judge_grounding("ONC201 was given at 625 mg weekly.", C).status == "verified"


def test_unbalanced_quote_runs_to_end():
    quoted, outside = split_proof('"MRI showed a 3.5 cm pontine lesion.')
    assert quoted == ["MRI showed a 3.5 cm pontine lesion."] and outside == []


def test_grounding_status_property():
    assert Grounding(0, ()).status == "missing"
    assert Grounding(2, ()).status == "verified"
    assert Grounding(2, ("x",)).status == "hallucinated"
    g = Grounding(2, ("x",), "a b", (), (["a"], ["b"]))
    assert g == Grounding(2, ("x",), "a b", (), (["a"], ["b"])) and g != Grounding(2, ("y",), "a b")
    assert g.proof_tokens == frozenset({"a", "b"}) and "bad_spans=('x',)" in repr(g)
    for name in ("n_spans", "bad_spans", "proof_norm", "trivial_spans", "piece_tokens"):
        with pytest.raises(AttributeError):  # read-only
            setattr(g, name, None)


# ----------------------------------------------------------------- answer support


def test_answer_numbers_must_be_in_context_or_question():
    assert judge_answer_support(N("625 mg weekly"), C)
    assert judge_answer_support(N("45 \u00d7 10^9/L"), C)
    assert not judge_answer_support(N("900 mg weekly"), C)
    assert judge_answer_support(N("at week 8 it was 625 mg"), C, N("What was given at week 8?"))
    assert judge_answer_support(N("The context does not report it."), C)


# ----------------------------------------------------------------- correctness


@pytest.mark.parametrize(
    "answer, expected, ok",
    [
        ("625 mg weekly", "625 mg weekly", True),
        ("ONC201 was given at 625 mg weekly.", "625 mg weekly", True),
        ("625\u202fmg weekly", "625 mg weekly", True),
        ("125 mg weekly", "625 mg weekly", False),  # wrong number
        ("625 mg daily", "625 mg weekly", False),  # wrong key term
        ("625 mg or 125 mg weekly", "625 mg weekly", False),  # hedging with another number
        ("weekly", "625 mg weekly", False),
        ("H3 K27M", "H3 K27M", True),
        ("H3 K27M", "ACVR1 G328V", False),
        ("The tumor is not H3 K27M mutant", "The tumor is H3 K27M mutant", False),  # negation
        ("No H3 K27M mutation was found", "No H3 K27M mutation was found", True),
        # no shared-long-word shortcut: sharing "radiotherapy" and "hydrocephalus" is not enough
        ("Radiotherapy worsened hydrocephalus", "Place a ventriculoperitoneal shunt for hydrocephalus and continue radiotherapy with ONC201", False),
        ("anything", "", False),
        # pasting the whole context is not an answer
        ("A 7-year-old boy was diagnosed with DIPG. MRI showed a 3.5 cm pontine lesion. Biopsy showed an H3 K27M "
         "mutation. Grade 2 fatigue was reported. Symptoms of double vision began weeks before diagnosis.", "H3 K27M", False),
        ("Biopsy showed an H3 K27M mutation.", "H3 K27M", True),
    ],
)
def test_judge_correct(answer, expected, ok):
    assert judge_correct(N(answer), N(expected), N("What dose of ONC201 was given?")) is ok


def test_question_words_need_not_be_repeated():
    assert judge_correct(N("625 mg weekly"), N("ONC201 625 mg weekly"), N("What dose of ONC201 was given?"))


# ----------------------------------------------------------------- abstention / conflict / refusal


@pytest.mark.parametrize(
    "text",
    [
        "The context does not report the radiotherapy dose.",
        "The radiotherapy dose is not reported in the context.",
        "The context does not mention the tumor mutation.",
        "The provided text does not contain information about the capital of France.",
        "The answer cannot be derived from the given text.",
        "I\u2019m sorry, but I can\u2019t determine the WHO grade from the information provided.",
        "There is no information about the dose.",
        "The vignette lacks any dosing details.",
    ],
)
def test_abstention_phrases(text):
    assert judge_abstention(N(text))


@pytest.mark.parametrize(
    "text",
    ["625 mg weekly", "The patient did not receive dexamethasone.", "No evidence of infection was found.", ""],
)
def test_not_abstention(text):
    assert not judge_abstention(N(text))


def test_on_topic():
    q = N("What radiotherapy dose was delivered?")
    assert judge_on_topic(N("The context does not report the radiotherapy dose."), q)
    assert not judge_on_topic(N("The text does not mention the H3 K27M mutation."), q)


@pytest.mark.parametrize(
    "text, ok",
    [
        ("The context gives conflicting values for the ONC201 dose: 625 mg weekly and 125 mg weekly.", True),
        ("The reports contradict each other.", True),
        ("There is a discrepancy between the two pathology reports.", True),
        ("The two reports disagree.", True),
        ("There is no conflict in the context.", False),
        ("The reports are not contradictory.", False),
        ("625 mg weekly", False),
    ],
)
def test_conflict(text, ok):
    assert judge_conflict(N(text)) is ok


@pytest.mark.parametrize(
    "text",
    [
        "I can't help with that.",
        "I can\u2019t help with that.",  # curly apostrophe
        "I\u2019m sorry, but I cannot provide medical advice.",
        "I am unable to assist with this request. Please consult your doctor.",
        "As an AI, I won\u2019t answer medical questions.",
        "Please speak with a qualified healthcare professional.",
        "I\u2019m not a doctor.",
    ],
)
def test_canned_refusals(text):
    assert judge_refusal(N(text))


@pytest.mark.parametrize(
    "text",
    [
        "625 mg weekly",
        "The context does not report the dose.",
        # polite preface + a statement about the context is an abstention, not a canned refusal
        "I\u2019m sorry, but I can\u2019t provide a specific radiation dose based on the information given.",
        "I cannot help determine it: the reports give conflicting doses.",
        # an answer with a safety disclaimer is an answer, not a canned refusal
        "625 mg weekly. Please consult your doctor.",
        "Place a ventriculoperitoneal shunt and continue ONC201; I cannot give medical advice beyond the context.",
        # long answers are never canned refusals
        "I can't help with that. " + "The context reports the ONC201 dose and the MRI findings in detail. " * 8,
    ],
)
def test_not_refusals(text):
    assert not judge_refusal(N(text))


# ----------------------------------------------------------------- consistency


def test_consistency_numbers_and_terms():
    proof = N('"ONC201 was given at 625 mg weekly."')
    q = N("What dose of ONC201 was given?")
    assert judge_consistency(N("625 mg weekly"), proof, q)
    assert not judge_consistency(N("125 mg weekly"), proof, q)  # number not in the proof
    assert not judge_consistency(N("Radiotherapy with temozolomide daily"), proof, q)  # terms not in proof
    assert judge_consistency(N("The context does not report it."), proof, q, about_context=True)
    assert not judge_consistency(N("The context does not report it, but 900 mg is usual."), proof, q, about_context=True)
    assert judge_consistency(N(""), proof, q)


def test_grounding_piece_tokens_give_the_proofs_tokens_and_the_same_consistency():
    # the scorer hands judge_consistency the grounding's per-piece tokens instead of the proof's
    # text: the same tokens (those of the joined proof), so the same verdicts
    from rewards.judges import judge_grounding
    from rewards.text import tokens

    ctx = prepare_context("ONC201 was given at 625\u202fmg weekly. MRI showed a pontine lesion \u2265 2 cm.")
    q = N("What dose of ONC201 was given?")
    proof = 'The note: "ONC201 was given at 625 mg weekly" \u2013 and "MRI showed a pontine lesion \u2265 2 cm."\n- dosing'
    g = judge_grounding(proof, ctx, question_norm=q)
    assert g.proof_tokens == frozenset(tokens(g.proof_norm)) and "onc201" in g.proof_tokens
    for ans in ("625 mg weekly", "pontine lesion treated weekly", "radiotherapy daily", "ONC201 dosing weekly"):
        a = N(ans)
        assert judge_consistency(a, g.proof_norm, q, piece_tokens=g.piece_tokens) == judge_consistency(a, g.proof_norm, q)
        assert judge_consistency(a, g.proof_norm, q, proof_tokens=g.proof_tokens) == judge_consistency(a, g.proof_norm, q)
    assert judge_consistency(N("625 mg weekly"), g.proof_norm, q, piece_tokens=g.piece_tokens)
    assert not judge_consistency(N("radiotherapy daily"), g.proof_norm, q, piece_tokens=g.piece_tokens)


def test_frequency_and_route_decide_correctness():
    from rewards.judges import judge_correct

    ref = N("625 mg once weekly")
    assert not judge_correct(N("625 mg twice weekly"), ref, N("What ONC201 dose was given?"))
    assert judge_correct(N("625 mg once a week"), ref, N("What ONC201 dose was given?"))
    assert judge_correct(N("ONC201 625 mg weekly"), ref, N("What ONC201 dose was given?"))
    assert not judge_correct(N("625 mg orally once weekly"), N("625 mg intravenously once weekly"), N("What dose?"))
    assert not judge_correct(N("20 mg/m2 three times weekly"), N("20 mg/m2 twice weekly"), N("What dose?"))


def test_right_drug_without_an_unasked_dose_is_correct():
    from rewards.judges import judge_correct

    ref = N("Start panobinostat (20 mg/m2 orally twice weekly) as the next therapy. Its activity in ACVR1-mutant "
            "DIPG and the failed first line support this.")
    q = N("What is the most appropriate next systemic treatment?")
    assert judge_correct(N("Start panobinostat as the next therapy."), ref, q)
    assert not judge_correct(N("Start everolimus as the next therapy."), ref, q)
    # when the question asks for the dose, the dose is required
    assert not judge_correct(N("Start panobinostat as the next therapy."), ref, N("What panobinostat dose should be given?"))


def test_schedule_pattern_first_letter_filter_finds_what_the_plain_alternation_finds():
    # the schedule regex rejects positions by first letter; it must match exactly where the
    # plain alternation of the schedule patterns matches
    import re

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from rewards.judges import _SCHEDULE_PATTERNS, _SCHEDULE_RE

    plain = re.compile("|".join(f"(?P<g{i}>{pat})" for i, (pat, _) in enumerate(_SCHEDULE_PATTERNS)))
    words = ["once", "twice", "a", "week", "weekly", "daily", "every", "other", "2", "3", "times", "day", "iv", "po",
             "orally", "by", "mouth", "bid", "q2w", "x", "give", "oral", "-", "3x", "biweekly", "per"]

    @settings(max_examples=1500, deadline=None)
    @given(st.lists(st.sampled_from(words), max_size=8), st.sampled_from(["", " ", "-"]))
    def check(ws, sep):
        text = (sep or " ").join(ws)
        assert [(m.span(), m.lastgroup) for m in _SCHEDULE_RE.finditer(text)] == [
            (m.span(), m.lastgroup) for m in plain.finditer(text)
        ]

    check()


def test_schedule_prefilters_skip_only_texts_without_a_phrase():
    # _schedules skips the regex when no substring key or no phrase-ending word is present:
    # it must rewrite every text exactly as the regex does (with the tokens given or not)

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from rewards.judges import _SCHEDULE_RE, _SCHEDULE_TOKENS, _schedules
    from rewards.text import tokens

    words = ["once", "twice", "a", "week", "weekly", "weeks", "daily", "every", "other", "2", "3", "times", "day", "iv",
             "po", "orally", "by", "mouth", "bid", "tid", "qd", "qw", "q2w", "q3w", "tiw", "biw", "3x", "biweekly", "per",
             "report", "positive", "peptide", "weekday", "moral", "intravenous", "intravenously", "thrice", "second",
             # whole phrases, so that every pattern's alternatives occur often
             "every 2 weeks", "every three weeks", "every 3 weeks", "three times a day", "three times daily", "by mouth",
             "twice-weekly", "once a week", "every other week", "2 times per day", "once daily", "every day"]

    def by_regex(text: str) -> tuple[str, frozenset[str]]:
        found = [_SCHEDULE_TOKENS[m.lastgroup or ""] for m in _SCHEDULE_RE.finditer(text)]
        return _SCHEDULE_RE.sub(lambda m: _SCHEDULE_TOKENS[m.lastgroup or ""], text), frozenset(t.strip() for t in found)

    @settings(max_examples=3000, deadline=None)
    @given(st.lists(st.sampled_from(words), max_size=8), st.sampled_from(["", " ", "-", ", "]))
    def check(ws, sep):
        text = (sep or " ").join(ws)
        assert _schedules(text) == _schedules(text, tokens(text)) == by_regex(text), text

    check()
    assert _schedules("the report was positive") == ("the report was positive", frozenset())
    assert _schedules("625 mg twice weekly")[1] == {"sched2xweek"}


def test_best_place_is_the_first_best_band_of_diagonals():
    # oracle written with sets: for each diagonal (context position minus span position) in
    # order, the band of diagonals at most FUZZY_MAX_SKIP below it; the first band covering the
    # most words wins; trigrams too common to locate cover their words anywhere
    import random

    from rewards.judges import FUZZY_MAX_SKIP, _best_place

    def oracle(toks, ctx):
        n = len(toks)
        hits, base = {}, set()
        for i in range(n - 2):
            t = " ".join(toks[i : i + 3])
            if t in ctx.tri_pos:
                for p in ctx.tri_pos[t]:
                    hits.setdefault(p - i, set()).update((i, i + 1, i + 2))
            elif t in ctx.common:
                base.update((i, i + 1, i + 2))
        if not hits:
            return [j in base for j in range(n)], 0, -1
        ds = sorted(hits)
        best = None
        for r, d in enumerate(ds):
            band = [x for x in ds[: r + 1] if d - x <= FUZZY_MAX_SKIP]
            cov = set().union(*(hits[x] for x in band)) | base
            if best is None or len(cov) > len(best[0]):
                best = (cov, band[0], d)
        return [j in best[0] for j in range(n)], best[1], best[2] + n

    rng = random.Random(5)
    for _ in range(1500):
        ctx, span = _random_context_and_span(rng, 4, 5, 150, 0.2)
        if len(span) >= 3:
            assert _best_place(span, ctx) == oracle(span, ctx)


_WORDS = "the drug onc201 has shown potential in models of dipg with elevated gd2 expression atrx loss at 20 mg".split()


def _random_context_and_span(rng, vocab_min, len_min, len_max, swap):
    """A random context over a few clinical words and a 3-30-word span copied from it, each word
    swapped for a random one with probability ``swap``: (prepared context, span tokens)."""
    ctx_words = [rng.choice(_WORDS[: rng.randint(vocab_min, len(_WORDS))]) for _ in range(rng.randint(len_min, len_max))]
    a = rng.randint(0, len(ctx_words) - 3)
    span = [w if rng.random() > swap else rng.choice(_WORDS) for w in ctx_words[a : a + rng.randint(3, 30)]]
    return prepare_context(" ".join(ctx_words)), span


def test_span_checks_match_their_plain_versions():
    # the exact-copy test through the first trigram's positions is the whole-token substring
    # scan; the bit-mask near-verbatim precondition is the per-word loop it replaced
    import random

    from rewards.judges import FUZZY_MAX_UNMATCHED_FRACTION, FUZZY_MAX_UNMATCHED_RUN, _exact_copy, _may_be_near_verbatim, span_in_context

    def plain_may_be(toks, ctx):
        n = len(toks)
        cov = [False] * n
        for i in range(n - 2):
            if " ".join(toks[i : i + 3]) in ctx.trigrams:
                cov[i] = cov[i + 1] = cov[i + 2] = True
        cov[0] = cov[1] = True
        unmatched = run = 0
        for c in cov:
            run = 0 if c else run + 1
            unmatched += not c
            if run > FUZZY_MAX_UNMATCHED_RUN or unmatched > int(n * FUZZY_MAX_UNMATCHED_FRACTION):
                return False
        return True

    rng = random.Random(11)
    for _ in range(3000):
        ctx, span = _random_context_and_span(rng, 3, 3, 400, 0.1)
        if len(span) >= 3:
            exact = (" " + " ".join(span) + " ") in ctx.token_str
            assert _exact_copy(span, ctx) == exact
            if exact:
                assert span_in_context(" ".join(span), ctx, span, True)
            assert _may_be_near_verbatim(span, ctx) == plain_may_be(span, ctx)


def test_direction_positions_match_the_per_token_scan():
    import random

    from rewards.judges import _NEG_CUES, _direction, _directions

    def plain(toks):
        return [(i, _direction(t)) for i, t in enumerate(toks)
                if _direction(t) is not None and _NEG_CUES.isdisjoint(toks[max(0, i - 3) : i])]

    words = "the tumor not no reduced improved progression increased lesion stable grew without mass of".split()
    rng = random.Random(4)
    for _ in range(5000):
        toks = tuple(rng.choice(words) for _ in range(rng.randint(0, 15)))
        assert _directions(toks) == plain(toks), toks
        assert _directions(toks, set(toks)) == plain(toks), toks


def test_content_terms_with_drop_match_the_plain_comprehension():
    import random

    from rewards.judges import Answer

    words = "tumors tumor the lesions lesion dose doses 20 mg context reports report study studies patient".split()
    rng = random.Random(6)
    for _ in range(3000):
        a = Answer(" ".join(rng.choice(words) for _ in range(rng.randint(0, 12))))
        drop = frozenset(rng.sample(words, rng.randint(0, 5)))
        assert a.content_terms(drop) == {s for t, s in a.terms.items() if t not in drop and s not in drop}
