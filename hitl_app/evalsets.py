"""The project's own evaluation data, validated on load.

Two hand-written JSON Lines files ship in ``hitl_app/data/`` (described in its README):

- ``eval_questions.jsonl``: questions a clinician would ask, each with a short reference answer,
  grouped by specialty. Used to compare model versions on held-out questions.
- ``probe_texts.jsonl``: short textbook-style passages. Used for perplexity, and their first
  sentence as a prompt for KL estimates against the base model.

Every line is checked against a pydantic model and ids must be unique. A file with any bad line
raises one ``ValueError`` that names the file and lists every bad line with its number and the
problem, so a hand edit that breaks the file is caught when it is loaded, all at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

DATA_DIR = Path(__file__).parent / "data"
EVAL_QUESTIONS_PATH = DATA_DIR / "eval_questions.jsonl"
PROBE_TEXTS_PATH = DATA_DIR / "probe_texts.jsonl"
PATIENT_QUESTIONS_PATH = DATA_DIR / "patient_questions.jsonl"

# Surrounding whitespace is stripped before the length check, so "  " is rejected as empty.
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class DataEntry(BaseModel):
    """One line of a shipped JSON Lines data file: an object with a unique ``id``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Text


class EvalQuestion(DataEntry):
    """A clinician's question with a concise, guideline-level reference answer."""

    specialty: Text
    question: Text
    reference: Text


class ProbeText(DataEntry):
    """A short general medical passage (2 to 4 sentences) on one topic."""

    topic: Text
    text: Text


class PatientQuestion(DataEntry):
    """A question as a patient would write it, with a short reference answer and the guidance it follows."""

    specialty: Text
    question: Text
    answer: Text
    source: Text


EntryT = TypeVar("EntryT", bound=DataEntry)


def load_eval_questions(path: Path | None = None) -> list[EvalQuestion]:
    """Load and validate evaluation questions, in file order.

    Args:
        path: a JSON Lines file with one ``{"id", "specialty", "question", "reference"}`` object
            per line; defaults to the shipped ``hitl_app/data/eval_questions.jsonl``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file holds no entries, or a line is not a JSON object, misses or adds a
            field, has an empty field, or repeats an id; the message lists every such line.
    """
    return load_entries(EVAL_QUESTIONS_PATH if path is None else Path(path), EvalQuestion)


def load_probe_texts(path: Path | None = None) -> list[ProbeText]:
    """Load and validate probe passages, in file order.

    Args:
        path: a JSON Lines file with one ``{"id", "topic", "text"}`` object per line; defaults to
            the shipped ``hitl_app/data/probe_texts.jsonl``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: as for ``load_eval_questions``.
    """
    return load_entries(PROBE_TEXTS_PATH if path is None else Path(path), ProbeText)


def load_entries(path: Path, model: type[EntryT]) -> list[EntryT]:
    """Parse every non-blank line of ``path`` as ``model``; raise one error listing all problems."""
    entries: list[EntryT] = []
    problems: list[str] = []
    first_line_of: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue  # a trailing or separating blank line is harmless
            entry, problem = _parse_line(line, model)
            if problem is not None:
                problems.append(f"line {number}: {problem}")
                continue
            assert entry is not None
            if entry.id in first_line_of:
                first = first_line_of[entry.id]
                problems.append(f"line {number}: duplicate id {entry.id!r} (first used on line {first})")
                continue
            first_line_of[entry.id] = number
            entries.append(entry)
    if problems:
        listing = "\n  ".join(problems)
        raise ValueError(f"{path}: {len(problems)} invalid line(s); fix them and reload:\n  {listing}")
    if not entries:
        raise ValueError(f"{path}: no entries; expected one JSON object per line")
    return entries


def _parse_line(line: str, model: type[EntryT]) -> tuple[EntryT | None, str | None]:
    """One line as ``(entry, None)``, or ``(None, problem)`` saying what is wrong with it."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(data, dict):
        return None, f"expected a JSON object, got {type(data).__name__}"
    try:
        return model.model_validate(data), None
    except ValidationError as exc:
        fields = ", ".join(model.model_fields)
        details = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'entry'}: {err['msg']}" for err in exc.errors()
        )
        return None, f"{details} (fields are: {fields})"


def load_patient_questions(path: Path | None = None) -> list[PatientQuestion]:
    """Load and validate the patient question set, in file order.

    These questions are for clinicians to work through and for the teaching benchmark; they are
    never part of the evaluation before publishing, which keeps to ``eval_questions.jsonl``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: as for ``load_eval_questions``.
    """
    return load_entries(PATIENT_QUESTIONS_PATH if path is None else Path(path), PatientQuestion)
