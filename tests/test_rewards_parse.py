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
