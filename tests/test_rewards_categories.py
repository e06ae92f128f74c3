"""Grader categories found in the second round of disagreements with the hand labels
(docs/rewards.md, "Agreement"): mutation names written glued or spaced, re-inflected words and
reworded openings in near-verbatim quotes, notes next to quotes, cut-off quote stubs, declining
phrased as "impossible to determine" or with the source as the subject, and abstentions whose
"such as" examples are in the context.  Real-looking synthetic vignettes, not the labelled lines."""

from rewards import Item, get_preset, score
from rewards.judges import judge_abstention, judge_abstention_truthful, judge_grounding, span_in_context
from rewards.parse import parse_lenient, parse_response
from rewards.text import merge_variant_names, normalize as N, prepare_context, tokens

CTX = (
    "A 6-year-old girl presented with diplopia and ataxia. "
    "Molecular profiling demonstrated an H3 K27M mutation and a concurrent ACVR1 G328V mutation. "
    "The experimental drug ONC201 has shown potential in preclinical models of H3 K27M-mutant glioma with elevated GD2 expression. "
    "After 6 weeks of combined therapy, MRI demonstrated a 30 % reduction in tumor volume, and the neurological exam improved. "
    "The board noted that the patient's tumor harbors PDGFRA amplification, suggesting sensitivity to PDGFRA inhibitors."
)
C = prepare_context(CTX)
P = get_preset("medium")


def ok(quote):
    return span_in_context(N(quote), C)


def test_variant_names_glued_spaced_or_hyphenated_are_the_same_words():
    assert merge_variant_names(tokens(N("H3 K27M and ACVR1-G328V"))) == ["h3k27m", "and", "acvr1g328v"]
    assert merge_variant_names(["tp53", "r175h"]) == ["tp53r175h"]
    assert merge_variant_names(["braf", "v600e"]) == ["braf", "v600e"]  # only names ending in a digit
    assert merge_variant_names(["grade", "4", "glioma"]) == ["grade", "4", "glioma"]  # no protein change
    assert ok("Molecular profiling demonstrated an H3K27M mutation")
    assert ok("an H3-K27M mutation and a concurrent ACVR1 G328V mutation")
    # a different variant is still a different word
    assert not ok("Molecular profiling demonstrated an H3 G34R mutation and a concurrent ACVR1 G328V mutation")


def test_a_re_inflected_word_passes_a_swapped_word_does_not():
    assert ok("The experimental drug ONC201 has shown potential in preclinical models of H3K27M-mutant gliomas with elevated GD2 expression")
    assert not ok("The experimental drug ONC201 has shown potential in preclinical models of H3K27M-mutant gliomas with elevated ATRX expression")


def test_a_reworded_opening_of_at_most_two_words_passes():
    # "The tumor MRI demonstrated ..." for "After 6 weeks of combined therapy, MRI demonstrated ..."
    assert ok("The tumor MRI demonstrated a 30 % reduction in tumor volume, and the neurological exam improved")
    # three changed opening words are a paraphrase, and an opening word from nowhere is invented
    assert not ok("And the tumor MRI demonstrated a 30 % reduction in tumor volume, and the neurological exam improved")
    assert not ok("Radiotherapy alone demonstrated a 30 % reduction in tumor volume, and the neurological exam improved")
    # a changed number is never a rewording, even at the start ("Grade 11" for "Grade 3")
    two = prepare_context("Median overall survival in the trial was 11 months. Grade 3 rash was reported during treatment.")
    assert span_in_context(N("Grade 3 rash was reported during treatment."), two)
    assert not span_in_context(N("Grade 11 rash was reported during treatment."), two)


def test_a_note_on_what_a_quote_shows_is_not_a_claim():
    proof = '- "Molecular profiling demonstrated an H3 K27M mutation." (Provides the molecular profile)\n- "A 6-year-old girl presented with diplopia and ataxia." (Details the presentation)'
    g = judge_grounding(proof, C)
    assert g.status == "verified" and g.n_spans == 2
    # a parenthesised claim is still evidence and still checked
    assert judge_grounding('"A 6-year-old girl presented with diplopia and ataxia." (tumor cured)', C).status == "hallucinated"


def test_a_cut_off_quote_stub_is_not_judged_but_a_longer_cut_quote_is():
    head = '<think>Looking at the profile.</think><proof>- "Molecular profiling demonstrated an H3 K27M mutation."\n- "The tumor harbors'
    parsed = parse_lenient(head)
    assert parsed.proof_cut and not parse_response(head).ok
    assert judge_grounding(parsed.proof, C, cut_off=True).status == "verified"
    # the same stub in a proof that was closed is a quote like any other
    assert judge_grounding(parsed.proof, C, cut_off=False).status == "hallucinated"
    # a cut-off quote of 4+ words is checked as it stands
    long_cut = '<proof>"The trial showed complete remission in all'
    p2 = parse_lenient(long_cut)
    assert p2.proof_cut and judge_grounding(p2.proof, C, cut_off=True).status == "hallucinated"
    # through score(): the cut-off response is judged not hallucinated for the metrics
    item = Item("x", "answerable", CTX, "Which mutation was found?", "H3 K27M")
    v = score(head, item, P)
    assert not v.flags["format_ok"] and not v.flags["hallucination"] and v.components == {"format_mismatch_penalty": P["format_mismatch_penalty"]}


def test_declining_phrasings_are_abstentions():
    assert judge_abstention(N("However, the absence of molecular confirmation makes it impossible to determine the exact tumor type."))
    assert judge_abstention(N("It is not possible to definitively establish the grade."))
    assert judge_abstention(N("The provided text describes the presentation and imaging, but does not offer a diagnosis or treatment recommendation."))
    # a negated clinical fact without a source as the subject is not one
    assert not judge_abstention(N("The drug does not cross the blood-brain barrier and the tumor did not respond."))
    assert not judge_abstention(N("ONC201 was possible to give orally at 625 mg weekly."))


def test_an_abstention_whose_examples_are_in_the_context_misstates_it():
    a = N("The provided text does not contain information about the molecular characteristics, such as the presence of the H3 K27M mutation.")
    assert judge_abstention_truthful(a, C) == ["the presence of the h3 k27m mutation"]
    other = prepare_context("A 6-year-old girl presented with diplopia and ataxia. MRI showed a pontine lesion.")
    assert judge_abstention_truthful(a, other) == []
    item = Item("y", "abstain", CTX, "Who won the 1994 FIFA World Cup?", "The provided text does not contain information about the 1994 FIFA World Cup.")
    v = score(f'<think>x</think><proof>"A 6-year-old girl presented with diplopia and ataxia."</proof><answer>{a}</answer>', item, P)
    assert v.flags["hallucination"] and not v.flags["safe"]


def test_a_second_opinion_set_against_the_first_is_a_conflict_report():
    from rewards.judges import judge_conflict

    assert judge_conflict(N("The MRI is consistent with DIPG, but the second neuroradiology opinion suggests a hemispheric glioma rather than classic DIPG."))
    assert judge_conflict(N("Pathology reads grade 2, but another pathology report describes grade 4 features."))
    # "but" alone, or a second dose, is not one
    assert not judge_conflict(N("ONC201 was continued, but the second cycle was delayed by one week."))
    assert not judge_conflict(N("The tumor responded, but the patient developed hydrocephalus."))


def test_declining_without_naming_the_source_is_an_abstention():
    assert judge_abstention(N("No definitive diagnosis can be made at this time."))
    assert judge_abstention(N("The molecular profile of the tumor is not known."))
    assert not judge_abstention(N("A definitive diagnosis of DIPG can be made from the MRI."))


def test_the_patient_alone_does_not_make_an_abstention_on_topic():
    from rewards.judges import judge_on_topic

    q = N("What is the recommended radiation dose (in Gy) for this patient?")
    assert not judge_on_topic(N("Continue monitoring the patient; no definitive diagnosis can be made."), q)
    assert judge_on_topic(N("The radiation dose is not reported in the context."), q)
    # a question only about the patient still counts them, and "how old" asks for the age
    assert judge_on_topic(N("The context does not report the patient's age."), N("How old is the patient?"))
    assert judge_on_topic(N("The patient is not described."), N("Who is the patient?"))
