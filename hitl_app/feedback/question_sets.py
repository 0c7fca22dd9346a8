"""Reading a question set that an admin imports for the clinical team: a file in, validated rows out.

Files are read through the Hugging Face ``datasets`` library (JSON Lines or JSON, CSV, Parquet, or
a folder written by ``save_to_disk``), never by hand, and columns are taken in bulk so that a
100k-row file reads in seconds. Every problem raises one ``UserError`` that says what to fix, and
nothing partial is returned. Redaction, screening, de-duplication and storage belong to the caller.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints

from ..core.errors import UserError, check_text
from ..core.shipped import shipped_file

DEFAULT_MAX_BYTES = 200 * 1_000_000
# The file extensions read, and the ``datasets`` builder and format name each one goes through.
SUPPORTED = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
FOLDER_FORMAT = "dataset folder"
# How each format is named in messages.
FORMAT_NAMES = {"jsonl": "a JSON Lines file", "json": "a JSON file", "csv": "a CSV file", "parquet": "a Parquet file",
                FOLDER_FORMAT: "a folder saved with Dataset.save_to_disk"}

# Column names tried, in order, when the admin names none.
QUESTION_NAMES = ("question", "prompt", "query", "text", "input", "instruction")
REFERENCE_NAMES = ("answer", "reference", "long_answer", "response", "output")
CONTEXT_NAMES = ("context", "contexts")
ID_NAMES = ("id", "pubid", "qid")
METADATA_NAMES = ("specialty", "source", "category", "qtype", "focus")
SHOWN_ROWS = 5

# The queue a fresh install starts with: patient-style questions with reference answers.
SHIPPED_QUEUE_SET = shipped_file("patient_questions.jsonl")

ColumnName = Annotated[str, StringConstraints(min_length=1)]


class Columns(BaseModel):
    """Which column holds each role; ``None`` means guess from the usual names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    question: ColumnName | None = None
    reference: ColumnName | None = None
    context: ColumnName | None = None
    id: ColumnName | None = None
    metadata: list[ColumnName] | None = None


@dataclass(frozen=True)
class QuestionRow:
    """One question as read, with its 1-based row number in the file."""

    row: int
    question: str
    reference: str | None
    context: str | None
    external_id: str | None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class QuestionSet:
    """Every row of a file, the file's name, the column used for each role and the format read."""

    rows: list[QuestionRow]
    source: str
    columns: dict[str, str | None]
    format: str


def read_question_set(path: Path, columns: Columns | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> QuestionSet:
    """Read and validate every row of a question set.

    Args:
        path: a ``.jsonl``, ``.json``, ``.csv`` or ``.parquet`` file, or a ``save_to_disk`` folder.
        columns: the column for each role; roles left ``None`` are guessed from the usual names.
        max_bytes: the largest file (or folder, all files summed) accepted.

    Returns:
        The rows in file order, neither de-duplicated nor redacted.

    Raises:
        UserError: the path is missing, unsupported, too large, unreadable or empty, a column is
            missing, or a question (or its reference, context, id or metadata) is not usable text.
    """
    path = Path(path)
    columns = columns or Columns()
    source = path.resolve().name
    table, fmt = _load(path, source, max_bytes)
    available = table.column_names
    roles = {
        "question": _pick("question", columns.question, QUESTION_NAMES, available, source),
        "reference": _pick("reference", columns.reference, REFERENCE_NAMES, available, source),
        "context": _pick("context", columns.context, CONTEXT_NAMES, available, source),
        "id": _pick("id", columns.id, ID_NAMES, available, source),
    }
    if roles["question"] is None:
        raise UserError(
            f"{source} has no question column: none of {', '.join(QUESTION_NAMES)} is among its columns "
            f"({', '.join(available)}); pass --question-column with the column that holds the questions"
        )
    if columns.metadata is None:
        metadata = [found for name in METADATA_NAMES if (found := _pick("metadata", None, (name,), available, source))]
    else:
        for name in columns.metadata:
            _pick("metadata", name, (), available, source)  # raises, listing the columns, if it is missing
        metadata = list(dict.fromkeys(columns.metadata))
    used = [name for name in roles.values() if name] + metadata
    # One bulk read of just the used columns, decoded by their features (mixed JSON types included).
    data = table.select_columns(list(dict.fromkeys(used))).with_format(None)[:]
    rows = _rows(data, roles, metadata, len(table))
    report = {**roles, "metadata": ", ".join(metadata) or None}
    return QuestionSet(rows=rows, source=source, columns=report, format=fmt)


def _load(path: Path, source: str, max_bytes: int) -> tuple[Any, str]:
    """The file or folder as a non-empty ``datasets.Dataset``, with the name of its format."""
    if not path.exists():
        raise UserError(f"{path} does not exist; check the path (or upload the file again) and retry")
    suffix = path.suffix.lower()
    if not path.is_dir() and suffix not in SUPPORTED:
        raise UserError(
            f"{source} is not a supported question set: use a {', '.join(SUPPORTED)} file "
            "or a folder saved with Dataset.save_to_disk"
        )
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
    if size > max_bytes:
        raise UserError(
            f"{source} is {_mb(size)} MB, over the {_mb(max_bytes)} MB limit for one question set; "
            "split it into smaller files and import each"
        )
    if size == 0:
        raise UserError(f"{source} is empty: it has no rows; export the questions again and retry")
    fmt = FOLDER_FORMAT if path.is_dir() else suffix.lstrip(".")
    table = _read(path, source, fmt)
    if len(table) == 0 or not table.column_names:
        raise UserError(f"{source} is empty: it has no rows; export the questions again and retry")
    return table, fmt


def _read(path: Path, source: str, fmt: str) -> Any:
    """Read through ``datasets``, in memory, caching only under a temporary folder (never the HF cache)."""
    import datasets  # imported here: it is slow to import and only imports need it

    try:
        if fmt == FOLDER_FORMAT:
            return _split(datasets.load_from_disk(str(path), keep_in_memory=True), source)
        with tempfile.TemporaryDirectory(prefix="hitl-import-") as cache:
            options: dict[str, Any] = {"keep_in_memory": True, "cache_dir": cache}
            if fmt == "csv":
                # CSV holds only text: read every column as a string so ids such as "007" keep their zeros.
                header = datasets.Dataset.from_csv(str(path), nrows=1, **options)
                features = datasets.Features({name: datasets.Value("string") for name in header.column_names})
                return datasets.Dataset.from_csv(str(path), features=features, keep_default_na=False, **options)
            reader = datasets.Dataset.from_parquet if fmt == "parquet" else datasets.Dataset.from_json
            return reader(str(path), **options)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file, reported with its cause
        cause = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        if "corresponds to no data" in first:
            # What ``datasets`` says of a file with a header or blank lines but no rows.
            raise UserError(f"{source} is empty: it has no rows; export the questions again and retry") from None
        raise UserError(
            f"could not read {source} as {FORMAT_NAMES[fmt]}: {first}; fix or export the file again and retry"
        ) from exc


def _split(loaded: Any, source: str) -> Any:
    """A ``Dataset`` as is; from a ``DatasetDict``, its "train" split, else its only split."""
    if not hasattr(loaded, "keys"):
        return loaded
    splits = list(loaded.keys())
    if "train" in loaded:
        return loaded["train"]
    if len(splits) == 1:
        return loaded[splits[0]]
    raise UserError(
        f"{source} holds several splits ({', '.join(splits)}) and none is named train; "
        "save the split to import on its own with Dataset.save_to_disk"
    )


def _pick(role: str, given: str | None, guesses: tuple[str, ...], available: list[str], source: str) -> str | None:
    """The column named ``given`` (which must exist), else the first usual name present, else None."""
    if given is not None:
        if given not in available:
            raise UserError(f"the {role} column {given!r} is not in {source}; its columns are: {', '.join(available)}")
        return given
    for name in guesses:
        # An exact match first, then any casing: spreadsheet headers are often capitalised.
        match = name if name in available else next((c for c in available if c.lower() == name), None)
        if match is not None:
            return match
    return None


def _rows(
    data: dict[str, list[Any]], roles: dict[str, str | None], metadata: list[str], count: int
) -> list[QuestionRow]:
    """Validate the columns and build one row per record; raise on the first problem found."""
    questions = data[roles["question"]]  # type: ignore[index]
    empty = [n for n, q in enumerate(questions, start=1) if q is None or (isinstance(q, str) and not q.strip())]
    if empty:
        more = len(empty) - SHOWN_ROWS
        shown = ", ".join(map(str, empty[:SHOWN_ROWS])) + (f" and {more} more" if more > 0 else "")
        raise UserError(
            f"{len(empty)} question(s) are empty, in rows {shown}; write the questions in or remove those rows"
        )
    absent: list[Any] = [None] * count  # an optional role with no column: None in every row
    optional = [data[name] if name else absent for name in (roles["reference"], roles["context"], roles["id"])]
    rows: list[QuestionRow] = []
    for n, (question, reference, context, ident) in enumerate(zip(questions, *optional), start=1):
        if not isinstance(question, str):
            raise UserError(
                f"the question in row {n} is {type(question).__name__} {_preview(question)}, not text; "
                f"the question column {roles['question']!r} must hold text"
            )
        meta = {name: _text(str(data[name][n - 1]), f"the {name} in row {n}") for name in metadata
                if data[name][n - 1] is not None}
        rows.append(QuestionRow(
            row=n,
            question=check_text(question.strip(), f"the question in row {n}"),
            reference=_text(reference, f"the reference in row {n}"),
            context=_text(_join_context(context), f"the context in row {n}"),
            external_id=_text(None if ident is None else str(ident), f"the id in row {n}"),
            metadata={name: value for name, value in meta.items() if value},
        ))
    return rows


def _join_context(value: Any) -> Any:
    """PubMedQA context as one text: a list of passages, or its ``{"contexts": [...]}`` form, joined."""
    if isinstance(value, dict) and "contexts" in value:
        value = value["contexts"]
    if isinstance(value, list) and all(isinstance(part, str) or part is None for part in value):
        return "\n\n".join(part.strip() for part in value if part and part.strip())
    return value


def _text(value: Any, what: str) -> str | None:
    """An optional text: stripped, ``None`` when absent or blank, refused when not valid text."""
    if value is None:
        return None
    if not isinstance(value, str):
        check_text(value, what)  # raises: "... must be text, not int"
    return check_text(value.strip(), what) or None


def _preview(value: Any) -> str:
    """A short repr of a bad value, so a huge list does not flood the message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _mb(size: int) -> str:
    """Bytes as megabytes, with up to two decimals and no trailing zeros."""
    return f"{size / 1_000_000:.2f}".rstrip("0").rstrip(".")
