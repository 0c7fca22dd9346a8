"""The shipped evaluation sets load and meet their coverage rules; bad files fail precisely."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from hitl_app.evaluation.evalsets import (
    EVAL_QUESTIONS_PATH,
    PATIENT_QUESTIONS_PATH,
    PROBE_TEXTS_PATH,
    EvalQuestion,
    ProbeText,
    load_eval_questions,
    load_patient_questions,
    load_probe_texts,
)

GOOD_Q = {"id": "q-1", "specialty": "cardiology", "question": "What is angina?", "reference": "Chest pain."}
GOOD_P = {"id": "p-1", "topic": "heart", "text": "The heart pumps blood."}


def _line(**fields: object) -> str:
    return json.dumps(fields)


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- the shipped sets -------------------------------------------------------------------------


def test_shipped_files_live_next_to_the_module() -> None:
    assert EVAL_QUESTIONS_PATH.is_file() and PROBE_TEXTS_PATH.is_file()
    assert load_eval_questions() == load_eval_questions(EVAL_QUESTIONS_PATH)


def test_shipped_questions_cover_enough_specialties() -> None:
    questions = load_eval_questions()
    per_specialty = Counter(q.specialty for q in questions)
    assert len(questions) >= 64
    assert len(per_specialty) >= 12
    thin = {name: n for name, n in per_specialty.items() if n < 4}
    assert not thin, f"specialties with fewer than 4 questions: {thin}"


def test_shipped_questions_are_distinct_and_concise() -> None:
    questions = load_eval_questions()
    assert len({q.id for q in questions}) == len(questions)
    texts = Counter(" ".join(q.question.split()).casefold() for q in questions)
    assert [t for t, n in texts.items() if n > 1] == []
    bad_length = {q.id: len(q.reference.split()) for q in questions if not 10 <= len(q.reference.split()) <= 100}
    assert not bad_length, f"references outside 10-100 words: {bad_length}"


def test_shipped_patient_questions_are_many_distinct_and_apart_from_the_evaluation() -> None:
    questions = load_patient_questions(PATIENT_QUESTIONS_PATH)
    assert len(questions) >= 100 and len({q.id for q in questions}) == len(questions)
    assert len({q.specialty for q in questions}) >= 12
    texts = [" ".join(q.question.split()).casefold() for q in questions]
    assert len(set(texts)) == len(texts)
    evaluation = {" ".join(q.question.split()).casefold() for q in load_eval_questions()}
    assert not evaluation & set(texts), "a patient question is also an evaluation question"
    bad_length = {q.id: len(q.answer.split()) for q in questions if not 10 <= len(q.answer.split()) <= 100}
    assert not bad_length, f"answers outside 10-100 words: {bad_length}"


def test_shipped_probes_are_many_and_distinct() -> None:
    probes = load_probe_texts()
    assert len(probes) >= 40
    assert len({p.id for p in probes}) == len(probes)
    assert len({p.text for p in probes}) == len(probes)


# --- validation -------------------------------------------------------------------------------


def test_fields_are_stripped_and_blank_lines_skipped(tmp_path: Path) -> None:
    path = _write(tmp_path, ["", _line(**{**GOOD_Q, "question": "  What is angina?  "}), "   "])
    assert load_eval_questions(path) == [EvalQuestion(**GOOD_Q)]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param([_line(**GOOD_Q), '{"id": "q-2", '], "line 2: not valid JSON", id="corrupt-json"),
        pytest.param(['["q-1", "cardiology"]'], "line 1: expected a JSON object, got list", id="not-an-object"),
        pytest.param(
            [_line(**{k: v for k, v in GOOD_Q.items() if k != "reference"})],
            "line 1: reference: Field required",
            id="missing-field",
        ),
        pytest.param(
            [_line(**{**GOOD_Q, "question": "   "})], "line 1: question: String should have at least 1", id="blank"
        ),
        pytest.param(
            [_line(**{**GOOD_Q, "answer": "x"})], "line 1: answer: Extra inputs are not permitted", id="extra-field"
        ),
        pytest.param([_line(**{**GOOD_Q, "id": 7})], "line 1: id: Input should be a valid string", id="not-a-string"),
        pytest.param(
            [_line(**GOOD_Q), _line(**{**GOOD_Q, "question": "Other?"})],
            "line 2: duplicate id 'q-1' (first used on line 1)",
            id="duplicate-id",
        ),
        pytest.param([], "no entries", id="empty-file"),
    ],
)
def test_bad_question_file_names_file_line_and_problem(tmp_path: Path, lines: list[str], expected: str) -> None:
    path = _write(tmp_path, lines)
    with pytest.raises(ValueError) as caught:
        load_eval_questions(path)
    message = str(caught.value)
    assert str(path) in message
    assert expected in message


def test_every_bad_line_is_reported_at_once(tmp_path: Path) -> None:
    path = _write(tmp_path, ["not json", _line(**GOOD_Q), _line(id="q-2"), _line(**GOOD_Q)])
    with pytest.raises(ValueError, match="3 invalid line") as caught:
        load_eval_questions(path)
    message = str(caught.value)
    assert "line 1: not valid JSON" in message
    assert "line 3: specialty: Field required" in message
    assert "line 4: duplicate id 'q-1'" in message


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param([_line(id="p-1", topic="heart")], "line 1: text: Field required", id="missing-field"),
        pytest.param([_line(**GOOD_P), _line(**GOOD_P)], "line 2: duplicate id 'p-1'", id="duplicate-id"),
        pytest.param([_line(**GOOD_P), "{oops"], "line 2: not valid JSON", id="corrupt-json"),
    ],
)
def test_bad_probe_file_names_file_line_and_problem(tmp_path: Path, lines: list[str], expected: str) -> None:
    path = _write(tmp_path, lines)
    with pytest.raises(ValueError) as caught:
        load_probe_texts(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_good_probe_file_loads(tmp_path: Path) -> None:
    assert load_probe_texts(_write(tmp_path, [_line(**GOOD_P)])) == [ProbeText(**GOOD_P)]
