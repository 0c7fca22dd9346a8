"""The project's own evaluation data, validated on load.

Two hand-written JSON Lines files ship in ``hitl_app/data/`` (described in its README):

- ``eval_questions.jsonl``: questions a clinician would ask, each with a short reference answer,
  grouped by specialty. Used to compare model versions on held-out questions.
- ``probe_texts.jsonl``: short textbook-style passages. Used for perplexity, and their first
  sentence as a prompt for KL estimates against the base model.

Every line is checked against a pydantic model by ``core.shipped.load_entries``.
"""

from __future__ import annotations

from pathlib import Path

from ..core.shipped import DataEntry, Text, load_entries, shipped_file

EVAL_QUESTIONS_PATH = shipped_file("eval_questions.jsonl")
PROBE_TEXTS_PATH = shipped_file("probe_texts.jsonl")
PATIENT_QUESTIONS_PATH = shipped_file("patient_questions.jsonl")

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


def load_patient_questions(path: Path | None = None) -> list[PatientQuestion]:
    """Load and validate the patient question set, in file order.

    These questions are for clinicians to work through and for the teaching benchmark; they are
    never part of the evaluation before publishing, which keeps to ``eval_questions.jsonl``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: as for ``load_eval_questions``.
    """
    return load_entries(PATIENT_QUESTIONS_PATH if path is None else Path(path), PatientQuestion)
