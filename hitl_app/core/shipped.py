"""The data files shipped in ``hitl_app/data/``, and the one loader for their JSON Lines.

Every line is checked against a pydantic model and ids must be unique. A file with any bad line
raises one ``ValueError`` that names the file and lists every bad line with its number and the
problem, so a hand edit that breaks the file is caught when it is loaded, all at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def shipped_file(name: str) -> Path:
    """The path of the shipped data file ``name`` (it may not exist; loaders say so)."""
    return DATA_DIR / name


# Surrounding whitespace is stripped before the length check, so "  " is rejected as empty.
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class DataEntry(BaseModel):
    """One line of a shipped JSON Lines data file: an object with a unique ``id``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Text


EntryT = TypeVar("EntryT", bound=DataEntry)


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
