"""Question sets read the same from every format, guess or take their columns, and refuse bad files precisely."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
from datasets import Dataset, DatasetDict
from pydantic import ValidationError

from hitl_app.core.errors import UserError
from hitl_app.feedback.question_sets import (
    DEFAULT_MAX_BYTES,
    SHIPPED_QUEUE_SET,
    Columns,
    QuestionRow,
    read_question_set,
)

RECORDS = [
    {"id": "q-001", "question": "  Is a resting pulse of 55 normal?  ", "answer": "Often, in fit adults.", "specialty": "cardiology"},
    {"id": "q-002", "question": "Can I take ibuprofen with asthma?", "answer": "  ", "specialty": "respiratory"},
]
EXPECTED = [
    QuestionRow(1, "Is a resting pulse of 55 normal?", "Often, in fit adults.", None, "q-001", {"specialty": "cardiology"}),
    QuestionRow(2, "Can I take ibuprofen with asthma?", None, None, "q-002", {"specialty": "respiratory"}),
]


def _write(tmp_path: Path, records: list[dict[str, Any]], name: str = "set.jsonl") -> Path:
    """Write ``records`` in the format named by ``name``'s extension (no extension: a saved folder)."""
    path = tmp_path / name
    ds = Dataset.from_list(records)
    writers: dict[str, Callable[[], Any]] = {
        ".jsonl": lambda: ds.to_json(str(path)),
        ".json": lambda: ds.to_json(str(path), lines=False),
        ".csv": lambda: ds.to_csv(str(path), index=False),
        ".parquet": lambda: ds.to_parquet(str(path)),
        "": lambda: ds.save_to_disk(str(path)),
    }
    writers[path.suffix]()
    return path


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("set.jsonl", "jsonl"), ("set.json", "json"), ("set.csv", "csv"), ("set.parquet", "parquet"), ("folder", "dataset folder")],
)
def test_every_format_reads_the_same_rows(tmp_path: Path, name: str, fmt: str) -> None:
    result = read_question_set(_write(tmp_path, RECORDS, name))
    assert result.rows == EXPECTED
    assert result.format == fmt
    assert result.source == name
    assert result.columns == {"question": "question", "reference": "answer", "context": None, "id": "id", "metadata": "specialty"}


def test_csv_keeps_ids_and_numbers_as_written(tmp_path: Path) -> None:
    path = tmp_path / "set.csv"
    path.write_text("qid,question\n007,42\n", encoding="utf-8")
    row = read_question_set(path).rows[0]
    assert (row.external_id, row.question) == ("007", "42")


def test_csv_from_excel_with_a_byte_order_mark_finds_its_first_column(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_text("question,answer\nIs it safe?,Yes.\n", encoding="utf-8-sig")
    result = read_question_set(path)
    assert result.columns["question"] == "question"
    assert result.rows[0].question == "Is it safe?"


@pytest.mark.parametrize(
    ("fields", "question", "reference"),
    [
        ({"prompt": "Q?", "response": "A."}, "prompt", "response"),
        ({"Question": "Q?", "Answer": "A."}, "Question", "Answer"),
        ({"instruction": "Q?", "output": "A."}, "instruction", "output"),
        ({"text": "not this", "question": "Q?", "long_answer": "A."}, "question", "long_answer"),
        ({"query": "Q?"}, "query", None),
    ],
)
def test_columns_are_guessed_from_the_usual_names(tmp_path: Path, fields: dict, question: str, reference: str | None) -> None:
    result = read_question_set(_write(tmp_path, [fields]))
    assert (result.columns["question"], result.columns["reference"]) == (question, reference)
    assert result.rows[0].question == "Q?"
    assert result.rows[0].reference == ("A." if reference else None)


def test_named_columns_override_the_guesses(tmp_path: Path) -> None:
    record = {"question": "ignored", "body": "Q?", "ideal": "A.", "ref_no": 12, "ward": "A&E", "specialty": "x"}
    columns = Columns(question="body", reference="ideal", id="ref_no", metadata=["ward"])
    result = read_question_set(_write(tmp_path, [record]), columns)
    assert result.rows == [QuestionRow(1, "Q?", "A.", None, "12", {"ward": "A&E"})]
    assert result.columns == {"question": "body", "reference": "ideal", "context": None, "id": "ref_no", "metadata": "ward"}


@pytest.mark.parametrize(
    "context",
    [
        ["Aspirin reduced events.", "  ", "No bleeding was seen."],
        {"contexts": ["Aspirin reduced events.", "No bleeding was seen."], "labels": ["RESULTS", "RESULTS"]},
    ],
)
@pytest.mark.parametrize("name", ["pubmedqa.jsonl", "pubmedqa.parquet"])
def test_pubmedqa_context_is_joined(tmp_path: Path, context: Any, name: str) -> None:
    record = {"pubid": 21645374, "question": "Does aspirin help?", "context": context, "long_answer": "Yes.",
              "final_decision": "yes"}
    row = read_question_set(_write(tmp_path, [record], name)).rows[0]
    assert row.context == "Aspirin reduced events.\n\nNo bleeding was seen."
    assert (row.external_id, row.reference) == ("21645374", "Yes.")


def test_metadata_is_text_without_missing_values(tmp_path: Path) -> None:
    records = [
        {"question": "A?", "specialty": " cardiology ", "category": 3, "source": None},
        {"question": "B?", "specialty": None, "category": 4, "source": "NICE"},
    ]
    result = read_question_set(_write(tmp_path, records))
    assert [row.metadata for row in result.rows] == [
        {"specialty": "cardiology", "category": "3"},
        {"category": "4", "source": "NICE"},
    ]
    assert read_question_set(_write(tmp_path, records), Columns(metadata=[])).rows[0].metadata == {}


@pytest.mark.parametrize(("splits", "expected"), [(["test", "train"], "train"), (["validation"], "validation")])
def test_a_dataset_dict_folder_reads_train_or_its_only_split(tmp_path: Path, splits: list[str], expected: str) -> None:
    DatasetDict({s: Dataset.from_list([{"question": f"From {s}?"}]) for s in splits}).save_to_disk(str(tmp_path / "dd"))
    assert [row.question for row in read_question_set(tmp_path / "dd").rows] == [f"From {expected}?"]


def test_the_shipped_queue_set_reads_all_120_questions() -> None:
    result = read_question_set(SHIPPED_QUEUE_SET)
    assert len(result.rows) == 120
    assert len({row.external_id for row in result.rows}) == 120
    assert all(row.reference and row.question for row in result.rows)
    assert all(set(row.metadata) == {"specialty", "source"} for row in result.rows)
    assert result.columns["reference"] == "answer"


def test_columns_are_strict() -> None:
    with pytest.raises(ValidationError):
        Columns(questions="q")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Columns().question = "q"  # type: ignore[misc]
    assert DEFAULT_MAX_BYTES == 200_000_000


def _text_file(name: str, text: str) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        (tmp_path / name).write_text(text, encoding="utf-8")
        return tmp_path / name
    return make


def _records(records: list[dict[str, Any]], name: str = "set.jsonl") -> Callable[[Path], Path]:
    return lambda tmp_path: _write(tmp_path, records, name)


def _splits(tmp_path: Path) -> Path:
    DatasetDict({s: Dataset.from_list([{"question": "Q?"}]) for s in ("dev", "test")}).save_to_disk(str(tmp_path / "dd"))
    return tmp_path / "dd"


def _plain_folder(tmp_path: Path) -> Path:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello", encoding="utf-8")
    return tmp_path / "notes"


Q = [{"question": "Q?"}]
ERROR_CASES: list[tuple[str, Callable[[Path], Path], dict[str, Any], str]] = [
    ("missing", lambda tmp_path: tmp_path / "nope.jsonl", {}, "nope.jsonl does not exist"),
    ("extension", _text_file("set.xlsx", "x"), {}, "use a .jsonl, .json, .csv, .parquet file"),
    ("too large", _records(Q * 1000), {"max_bytes": 10_000}, "set.jsonl is 0.02 MB, over the 0.01 MB limit"),
    ("folder too large", lambda tmp_path: _write(tmp_path, [{"question": "Why? " * 100}] * 100, "big"),
     {"max_bytes": 10_000}, "over the 0.01 MB limit for one question set; split it"),
    ("corrupt jsonl", _text_file("bad.jsonl", '{"question": "a"}\n{not json\n'), {},
     "could not read bad.jsonl as a JSON Lines file: JSON parse error"),
    ("corrupt parquet", _text_file("bad.parquet", "garbage!"), {}, "could not read bad.parquet as a Parquet file: Parquet"),
    ("plain folder", _plain_folder, {}, "could not read notes as a folder saved with Dataset.save_to_disk"),
    ("empty file", _text_file("e.jsonl", ""), {}, "e.jsonl is empty: it has no rows"),
    ("blank lines", _text_file("blank.jsonl", "\n\n"), {}, "blank.jsonl is empty: it has no rows"),
    ("header only", _text_file("e.csv", "question,answer\n"), {}, "e.csv is empty: it has no rows"),
    ("no parquet rows", lambda tmp_path: _write_empty_parquet(tmp_path), {}, "e.parquet is empty: it has no rows"),
    ("named question", _records([{"prompt": "Q?"}]), {"question": "body"},
     "the question column 'body' is not in set.jsonl; its columns are: prompt"),
    ("no question", _records([{"body": "Q?", "notes": "n"}]), {}, "its columns (body, notes); pass --question-column"),
    ("named reference", _records(Q), {"reference": "ideal"}, "the reference column 'ideal' is not in"),
    ("named context", _records(Q), {"context": "abstract"}, "the context column 'abstract' is not in"),
    ("named id", _records(Q), {"id": "key"}, "the id column 'key' is not in"),
    ("named metadata", _records(Q), {"metadata": ["ward"]}, "the metadata column 'ward' is not in"),
    ("empty questions", _records([{"question": q} for q in ["A?", "", "B?", " \t", None]]), {},
     "3 question(s) are empty, in rows 2, 4, 5;"),
    ("many empty", _records([{"question": "A?"}] + [{"question": " "}] * 7), {},
     "7 question(s) are empty, in rows 2, 3, 4, 5, 6 and 2 more;"),
    ("number question", _records([{"question": 1}, {"question": 2}]), {}, "the question in row 1 is int 1, not text"),
    ("list question", _text_file("m.jsonl", '{"question": "A?"}\n{"question": ["x"]}\n'), {},
     "the question in row 2 is list ['x'], not text"),
    ("control question", _records([{"question": "A?"}, {"question": "B\x1b[2J?"}]), {},
     "the question in row 2 contains control characters (U+001B"),
    ("control reference", _records([{"question": "A?", "answer": "x\x00y"}]), {},
     "the reference in row 1 contains control characters (U+0000"),
    ("control context", _records([{"question": "A?", "context": ["ok", "b\x07"]}]), {},
     "the context in row 1 contains control characters (U+0007"),
    ("number reference", _records([{"question": "A?", "answer": 5}]), {}, "the reference in row 1 must be text, not int"),
    ("splits", _splits, {}, "holds several splits (dev, test) and none is named train"),
]


def _write_empty_parquet(tmp_path: Path) -> Path:
    Dataset.from_dict({"question": []}).to_parquet(str(tmp_path / "e.parquet"))
    return tmp_path / "e.parquet"


@pytest.mark.parametrize(("make", "options", "message"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_bad_sets_are_refused_with_their_own_message(
    tmp_path: Path, make: Callable[[Path], Path], options: dict[str, Any], message: str
) -> None:
    options = dict(options)  # the table is shared between cases: never change it
    max_bytes = options.pop("max_bytes", DEFAULT_MAX_BYTES)
    columns = Columns(**options)
    with pytest.raises(UserError) as caught:
        read_question_set(make(tmp_path), columns, max_bytes=max_bytes)
    assert message in str(caught.value)

