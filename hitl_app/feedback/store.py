"""The append-only stores: ``FeedbackStore`` is the only code that reads or writes
``feedback/feedback.jsonl``, ``QueueStore`` the only code for ``feedback/queue.jsonl``.

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
from pydantic import BaseModel, TypeAdapter, ValidationError

from ..core.files import append_line, append_lines
from .queue_records import QUEUE_ADAPTER
from .records import RECORD_ADAPTER

log = logging.getLogger(__name__)

FEEDBACK_FILE = "feedback.jsonl"
QUEUE_FILE = "queue.jsonl"
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

    records: list[tuple[int, BaseModel]] = field(default_factory=list)
    cursor: int = 0
    corrupt: list[CorruptLine] = field(default_factory=list)


class JsonlStore:
    """An append-only JSONL file of pydantic records, one writer at a time across processes.

    Subclasses name the file and the records' type adapter (a discriminated union).

    Args:
        directory: the folder holding the file and its lock; created if missing.
    """

    FILE: str = ""
    ADAPTER: TypeAdapter = RECORD_ADAPTER

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / self.FILE
        self._file_lock = FileLock(str(self.path) + ".lock")
        self._thread_lock = threading.RLock()

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the writers' lock for a block: a read-decide-append (a queue claim) that no other
        writer, in this process or another, can interleave with. ``append`` inside it is allowed."""
        with self._thread_lock, self._file_lock:
            yield

    def append(self, record: BaseModel) -> int:
        """Write one record durably and return the byte offset where its line starts.

        The record is re-validated first, so nothing invalid is ever stored. If the file ends in a
        torn line (a crash mid-write), the new record starts on a fresh line so it stays readable.

        Raises:
            pydantic.ValidationError: the record does not validate.
        """
        self.ADAPTER.validate_python(record.model_dump())
        with self.locked():
            return append_line(self.path, record.model_dump_json())

    def append_many(self, records: list[BaseModel]) -> int:
        """Write records durably in one write and one fsync; returns the offset of the first line.

        Each is re-validated before anything is written, so either all are stored or none.

        Raises:
            pydantic.ValidationError: a record does not validate (nothing is written).
        """
        lines = []
        for record in records:
            self.ADAPTER.validate_python(record.model_dump())
            lines.append(record.model_dump_json())
        with self.locked():
            return append_lines(self.path, lines)

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
                    record = parse_record(text, self.ADAPTER)
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


class FeedbackStore(JsonlStore):
    """The generations and judgements: ``feedback/feedback.jsonl``."""

    FILE = FEEDBACK_FILE
    ADAPTER = RECORD_ADAPTER


class QueueStore(JsonlStore):
    """The review queue's imports, claims and skips: ``feedback/queue.jsonl`` (see ``queue_records``)."""

    FILE = QUEUE_FILE
    ADAPTER = QUEUE_ADAPTER


def parse_record(line: bytes, adapter: TypeAdapter = RECORD_ADAPTER):
    """Parse and validate one stored line (surrounding whitespace allowed) with ``adapter``
    (the feedback records' by default).

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
        return adapter.validate_json(line)
    except ValidationError:
        return adapter.validate_python(json.loads(line.decode("utf-8")))


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
