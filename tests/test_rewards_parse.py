"""Strict format parsing (component: format)."""

import pytest

from rewards.judges import judge_format
from rewards.parse import MAX_RESPONSE_CHARS, extract_answer, parse_response

GOOD = "<think>t</think><proof>\"p\"</proof><answer>a</answer>"


def test_well_formed_extracts_sections():
    p = parse_response("  <think> reason </think>\n\n<proof>\"q\"</proof>\n<answer> 625 mg </answer>\n")
    assert p.ok and judge_format(p)
    assert (p.think, p.proof, p.answer) == ("reason", '"q"', "625 mg")


@pytest.mark.parametrize(
    "text, error",
    [
        ("The dose was 625 mg weekly.", "missing_tag:think"),  # plain text never gets the format reward
        ("", "missing_tag:think"),
        ("<think>t</think><proof>p</proof>", "missing_tag:answer"),
        ("<think>t<proof>p</proof><answer>a</answer>", "missing_tag:/think"),  # unclosed think (common upstream)
        ("<think>t</think><proof>p</proof><answer>a", "missing_tag:/answer"),  # truncated
        ("<think>t</think><think>u</think><proof>p</proof><answer>a</answer>", "duplicate_tag:think"),
        ("<think>t<proof>x</proof></think><proof>p</proof><answer>a</answer>", "duplicate_tag:proof"),  # tag inside tag
        ("<proof>p</proof><think>t</think><answer>a</answer>", "out_of_order"),
        ("<think>t</think><answer>a</answer><proof>p</proof>", "out_of_order"),
        ("</think><think>t<proof>p</proof><answer>a</answer>", "out_of_order"),
        ("Sure! " + GOOD, "text_outside_tags"),
        (GOOD + " Hope this helps.", "text_outside_tags"),
        ("<think>t</think> so <proof>p</proof><answer>a</answer>", "text_outside_tags"),
        ("<think>t</think><proof>p</proof><answer>   </answer>", "empty_answer"),
        ("<Think>t</Think><proof>p</proof><answer>a</answer>", "missing_tag:think"),  # tags are exact
        ("< think>t</think><proof>p</proof><answer>a</answer>", "missing_tag:think"),
    ],
)
def test_malformed(text, error):
    p = parse_response(text)
    assert not p.ok and not judge_format(p)
    assert p.error == error


def test_whitespace_between_tags_is_allowed_including_unicode_spaces():
    assert parse_response("\u00a0<think>t</think>\u202f\n<proof></proof>\t<answer>a</answer>\u3000").ok


def test_empty_think_and_proof_are_format_ok():
    p = parse_response("<think></think><proof></proof><answer>a</answer>")
    assert p.ok and p.proof == ""


def test_non_text_and_too_long():
    assert parse_response(None).error == "not_text"  # type: ignore[arg-type]
    assert parse_response(b"<think>")  .error == "not_text"  # type: ignore[arg-type]
    huge = "<think>" + "x" * (MAX_RESPONSE_CHARS + 1) + "</think><proof></proof><answer>a</answer>"
    assert parse_response(huge).error == "too_long"


def test_extract_answer():
    assert extract_answer("<think>x</think><proof>y</proof><answer>\n30%\n</answer>") == "30%"
    assert extract_answer("  plain reference ") == "plain reference"
    assert extract_answer("<answer>unterminated") == "unterminated"
    assert extract_answer("") == ""


def _reference_parse(text):
    """parse_response as it was written before the single split (a find per tag)."""
    from rewards.parse import _TAGS, Parsed

    found = []
    for tag, name in _TAGS:
        i = text.find(tag)
        if i < 0:
            return Parsed(False, error=f"missing_tag:{name}")
        if text.find(tag, i + 1) >= 0:
            return Parsed(False, error=f"duplicate_tag:{name}")
        found.append((i, i + len(tag)))
    if not (found[0][0] < found[1][0] < found[2][0] < found[3][0] < found[4][0] < found[5][0]):
        return Parsed(False, error="out_of_order")
    (s0, e0), (s1, e1), (s2, e2), (s3, e3), (s4, e4), (s5, e5) = found
    if any(part.strip() for part in (text[:s0], text[e1:s2], text[e3:s4], text[e5:])):
        return Parsed(False, error="text_outside_tags")
    answer = text[e4:s5].strip()
    if not answer:
        return Parsed(False, error="empty_answer")
    return Parsed(True, think=text[e0:s1].strip(), proof=text[e2:s3].strip(), answer=answer)


def test_tags_found_by_one_split_as_by_finds():
    import random

    from rewards.parse import parse_response

    bits = ["<think>", "</think>", "<proof>", "</proof>", "<answer>", "</answer>", "<", ">", "<<", "<think", "think>",
            "</answer", "<Answer>", "< proof>", "x", " ", "\n", "a < b", "5>3", "<answer><", "</proof>>"]
    rng = random.Random(7)
    for _ in range(30000):
        if rng.random() < 0.5:
            parts = ["<think>", "t", "</think>", "<proof>", "p", "</proof>", "<answer>", "a", "</answer>"]
            for _ in range(rng.randint(0, 3)):
                parts.insert(rng.randint(0, len(parts)), rng.choice(bits))
            if rng.random() < 0.3:
                del parts[rng.randrange(len(parts))]
        else:
            parts = [rng.choice(bits) for _ in range(rng.randint(0, 12))]
        text = "".join(parts)
        assert parse_response(text) == _reference_parse(text), text


def test_parsed_is_read_only_and_compared_by_its_fields():
    from rewards.parse import Parsed

    p = parse_response("<think>t</think><proof>p</proof><answer>a</answer>")
    assert p == Parsed(True, think="t", proof="p", answer="a") and hash(p) == hash(Parsed(True, think="t", proof="p", answer="a"))
    assert p != Parsed(True, think="t", proof="p", answer="b") and p != ("ok", "t")
    assert repr(p) == "Parsed(ok=True, think='t', proof='p', answer='a', error='', proof_cut=False)"
    for name in ("ok", "think", "proof", "answer", "error", "proof_cut"):
        with pytest.raises(AttributeError):
            setattr(p, name, None)
