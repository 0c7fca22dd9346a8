"""The form of generated answers: loops, repeated phrases, distinct pairs, endings."""

from __future__ import annotations

import pytest

from hitl_app.evaluation.answer_quality import (
    answer_quality,
    distinct_n,
    has_loop,
    repeated_ngram_rate,
)

LOOPS = [
    "Urgent care is recommended. Urgent care is recommended. Urgent care is recommended. Urgent care is recommended.",
    "Clinical summary:\n\nClinical summary:\n\nClinical summary:\n\nClinical summary:",
    # A short line said three times is a loop even when no 4-word phrase reaches three occurrences.
    "Call your GP.\nCall your GP.\nCall your GP.",
    "Croup is a life-threatening condition that requires immediate medical attention. Croup is a "
    "life-threatening condition that requires immediate medical attention. Croup is a life-threatening",
]
CLEAN = [
    "Paracetamol 500 mg every 6 hours, at most 4 g a day.",
    "Clinical summary:\nSciatica is nerve pain down the leg.\nSafety net: seek urgent care if symptoms get worse.",
    # A closing line said twice is a repetition, not a loop.
    "Key points:\n- Rest and fluids help.\nSafety net: seek urgent care if symptoms get worse.\n"
    "Safety net: seek urgent care if symptoms get worse.",
    # Repeating a two-word phrase is ordinary prose, not a loop.
    "Take the tablets with food. Take the tablets at night if they make you sleepy.",
    "",
]


@pytest.mark.parametrize("text", LOOPS)
def test_loops_are_caught(text: str) -> None:
    assert has_loop(text)


@pytest.mark.parametrize("text", CLEAN)
def test_answers_without_loops_pass(text: str) -> None:
    assert not has_loop(text)


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("a b c d", 0.0),  # one 4-gram
        ("a b c d a b c d", 1 / 5),  # abcd bcda cdab dabc abcd: the last of five repeats the first
        ("A b, c. D\na B c d", 1 / 5),  # case, punctuation and line breaks do not hide a repeat
        ("x", 0.0),  # no 4-gram at all
    ],
)
def test_repeated_ngram_rate_by_hand(text: str, rate: float) -> None:
    assert repeated_ngram_rate(text) == pytest.approx(rate)


def test_a_sentence_said_k_times_repeats_about_k_minus_one_in_k() -> None:
    sentence = "the patient should rest and drink plenty of fluids today"
    rate = repeated_ngram_rate(" ".join([sentence] * 4))
    assert 0.7 < rate < 0.75 + 1e-9


def test_distinct_n_counts_pairs_over_all_answers() -> None:
    assert distinct_n(["a b", "a b"], 2) == pytest.approx(1 / 2)
    assert distinct_n(["a b c"], 2) == pytest.approx(1.0)
    assert distinct_n([""], 2) == 1.0


def test_answer_quality_summarises_a_set() -> None:
    q = answer_quality([LOOPS[0], CLEAN[0], CLEAN[1], LOOPS[1]], [False, True, True, False])
    assert q.answers == 4
    assert q.loop_rate == pytest.approx(0.5)
    assert q.finished_rate == pytest.approx(0.5)
    assert 0 < q.repeated_ngram_rate < 1 and 0 < q.distinct_2 <= 1


def test_answer_quality_refuses_mismatched_input() -> None:
    with pytest.raises(ValueError, match="no answers"):
        answer_quality([], [])
    with pytest.raises(ValueError, match="one per answer"):
        answer_quality(["a"], [True, False])
