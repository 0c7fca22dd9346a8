"""FeedbackStore: the only code that reads or writes ``feedback/feedback.jsonl``.

Writes are one ``write`` + ``flush`` + ``fsync`` per record under a ``filelock`` (safe across
processes) and a thread lock (cheap exclusion inside one process), so a record is on disk before
anyone is told it was saved. Reads start from a byte cursor. A torn or corrupt line, for example
after a crash mid-write, is skipped and reported, never silently dropped and never fatal.

Reading is on every start-up path (the app, each trainer process), so it is kept cheap: pydantic
parses and validates each line's bytes in one pass, and a large read pauses the cyclic garbage
collector (see ``read``). ``hitl_app/bench/store_read.py`` measures it against the reference way.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from filelock import FileLock
from pydantic import ValidationError

from ..core.files import append_line
from .records import RECORD_ADAPTER, Feedback, Generation

log = logging.getLogger(__name__)

FEEDBACK_FILE = "feedback.jsonl"
# A read of at least this many bytes (about 10k records: a start-up or a new trainer process, never
# a running app's refresh) parses with the cyclic garbage collector paused; see ``read``.
BULK_READ_BYTES = 8 * 1024 * 1024
# What parsing a line may raise; each means a corrupt line, skipped and reported. RecursionError:
# a line nested too deeply for ``json.loads``, which must not stop the read either.
CORRUPT_LINE_ERRORS: tuple[type[Exception], ...] = (
    UnicodeDecodeError, json.JSONDecodeError, ValidationError, RecursionError
)


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
        read (the returned cursor stops before it) rather than reported as corrupt. Each line is
        parsed by ``parse_record``.

        A read of ``BULK_READ_BYTES`` or more runs with the cyclic garbage collector paused, then
        one full collection: every record is several tracked containers (the model, its
        ``__dict__``, lists, nested models), and with the collector running, the growing heap is
        traversed again and again while the records are built, which dominated the time of a
        large read. One collection at the end moves them all to the oldest generation in a
        single pass, and here, rather than as a pause in some later request. Small reads leave the
        collector alone. A bulk read logs its size and time, so a store outgrowing a quick start
        shows in the log.
        """
        result = ReadResult(cursor=cursor)
        if not self.path.exists():
            return result
        with open(self.path, "rb") as f:
            f.seek(cursor)
            data = f.read()
        end = data.rfind(b"\n") + 1
        position = cursor
        bulk = end >= BULK_READ_BYTES
        started = time.perf_counter()
        with _collector_paused(bulk):
            for raw in data[:end].splitlines(keepends=True):
                offset, position = position, position + len(raw)
                text = raw.strip()
                if not text:
                    continue
                try:
                    record = parse_record(text)
                except CORRUPT_LINE_ERRORS as exc:
                    reason = str(exc).splitlines()[0][:200]
                    log.warning("skipping corrupt line at byte %d of %s: %s", offset, self.path, reason)
                    result.corrupt.append(CorruptLine(offset=offset, error=reason))
                    continue
                result.records.append((offset, record))
        result.cursor = cursor + end
        if bulk:
            log.info("read %d records (%.1f MB) of %s in %.2f s", len(result.records), end / 1e6, self.path,
                     time.perf_counter() - started)
        return result


def parse_record(line: bytes) -> Generation | Feedback:
    """Parse and validate one stored line (surrounding whitespace allowed).

    pydantic-core parses the bytes and validates them in one pass (in Rust, with no intermediate
    Python objects), which is what makes reading fast. Should that fail, the line is parsed again the
    reference way, ``json.loads`` then ``validate_python``, and that decides: corrupt lines are
    rare, and this way a line is rejected exactly when it was before, with the same error text.
    (The tests check that both ways accept the same lines and give equal records.)

    Args:
        line: one line of the store, as bytes.

    Raises:
        UnicodeDecodeError, json.JSONDecodeError, pydantic.ValidationError, RecursionError: the
            line is not a valid record (``CORRUPT_LINE_ERRORS``).
    """
    try:
        return RECORD_ADAPTER.validate_json(line)
    except ValidationError:
        return RECORD_ADAPTER.validate_python(json.loads(line.decode("utf-8")))


class _CollectorPause:
    """Pauses the cyclic garbage collector while any thread is inside a bulk read.

    The collector is process-wide, so concurrent bulk reads share one pause: the first in disables
    it (if it was enabled), the last out re-enables it and runs the one full collection. A
    collector that someone else disabled stays disabled.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._was_enabled = False

    def enter(self) -> None:
        """Start (or join) a pause."""
        with self._lock:
            if self._depth == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._depth += 1

    def leave(self) -> None:
        """Leave a pause; the last one out re-enables the collector and collects once."""
        with self._lock:
            self._depth -= 1
            resume = self._depth == 0 and self._was_enabled
            if resume:
                gc.enable()
        if resume:
            gc.collect()


_PAUSE = _CollectorPause()


@contextmanager
def _collector_paused(pause: bool) -> Iterator[None]:
    """Run the block with the cyclic garbage collector paused if ``pause`` (see ``_CollectorPause``)."""
    if not pause:
        yield
        return
    _PAUSE.enter()
    try:
        yield
    finally:
        _PAUSE.leave()
