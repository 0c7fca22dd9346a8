"""FeedbackStore: the only code that reads or writes ``feedback/feedback.jsonl``.

Writes are one ``write`` + ``flush`` + ``fsync`` per record under a ``filelock`` (safe across
processes) and a thread lock (cheap exclusion inside one process), so a record is on disk before
anyone is told it was saved. Reads start from a byte cursor. A torn or corrupt line, for example
after a crash mid-write, is skipped and reported, never silently dropped and never fatal.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock
from pydantic import ValidationError

from ..core.files import append_line
from .records import RECORD_ADAPTER, Feedback, Generation

log = logging.getLogger(__name__)

FEEDBACK_FILE = "feedback.jsonl"


@dataclass(frozen=True)
class CorruptLine:
    """A line that could not be parsed: where it starts and why it was skipped."""

    offset: int
    error: str


@dataclass
class ReadResult:
    """Records read from a cursor, the cursor to continue from, and the lines that were skipped."""

    records: list[tuple[int, Generation | Feedback]] = field(default_factory=list)
    cursor: int = 0
    corrupt: list[CorruptLine] = field(default_factory=list)


class FeedbackStore:
    """Append-only JSONL store of generations and feedback.

    Args:
        directory: the folder holding ``feedback.jsonl`` and its lock; created if missing.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / FEEDBACK_FILE
        self._file_lock = FileLock(str(self.path) + ".lock")
        self._thread_lock = threading.Lock()

    def append(self, record: Generation | Feedback) -> int:
        """Write one record durably and return the byte offset where its line starts.

        The record is re-validated first, so nothing invalid is ever stored. If the file ends in a
        torn line (a crash mid-write), the new record starts on a fresh line so it stays readable.

        Raises:
            pydantic.ValidationError: the record does not validate.
        """
        RECORD_ADAPTER.validate_python(record.model_dump())
        with self._thread_lock, self._file_lock:
            return append_line(self.path, record.model_dump_json())

    def read(self, cursor: int = 0) -> ReadResult:
        """Read complete lines from byte offset ``cursor``.

        A final line without its newline may still be being written, so it is left for the next
        read (the returned cursor stops before it) rather than reported as corrupt.
        """
        result = ReadResult(cursor=cursor)
        if not self.path.exists():
            return result
        with open(self.path, "rb") as f:
            f.seek(cursor)
            data = f.read()
        end = data.rfind(b"\n") + 1
        position = cursor
        for raw in data[:end].splitlines(keepends=True):
            offset, position = position, position + len(raw)
            text = raw.strip()
            if not text:
                continue
            try:
                record = RECORD_ADAPTER.validate_python(json.loads(text.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError, ValidationError) as exc:
                reason = str(exc).splitlines()[0][:200]
                log.warning("skipping corrupt line at byte %d of %s: %s", offset, self.path, reason)
                result.corrupt.append(CorruptLine(offset=offset, error=reason))
                continue
            result.records.append((offset, record))
        result.cursor = cursor + end
        return result
