"""Importing a question set into the review queue: read, screen, drop duplicates, store as one batch.

Each question goes through what a typed question goes through: identifiers are redacted
(``--redact-phi``) and the input guard screens it. A question the guard refuses is still queued,
flagged, so the team sees it and judges the refusal. Duplicates, by normalised text within the set
and against the queue, are dropped and counted. The batch is stored in one write (its items, then
its ``ImportBatch`` record), so an import is all there or not at all. This runs in the app (an
admin's upload) and in ``python main.py import`` beside a running app, which sees the new items at
its next queue refresh.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..core.errors import UserError, check_text
from ..feedback.queue import ReviewQueue
from ..feedback.queue_records import ImportBatch, QueueItem
from ..feedback.question_sets import DEFAULT_MAX_BYTES, Columns, QuestionRow, QuestionSet, read_question_set
from ..feedback.records import SafetyFlag, new_id
from ..feedback.training_rows import normalise
from ..safety.checker import SafetyChecker

log = logging.getLogger(__name__)

SYSTEM_USER = "system"  # the importer recorded for the shipped set and the command line
# Progress is reported every this many questions: often enough for a bar, rarely enough to cost nothing.
PROGRESS_EVERY = 2000
# Sets of at least this many questions are screened by worker processes, in chunks of CHUNK: below
# it, starting the workers (about a second) costs more than it saves.
PARALLEL_FROM = 20_000
CHUNK = 5_000


@dataclass(frozen=True)
class ImportReport:
    """What an import did."""

    batch_id: str
    name: str
    source: str
    imported: int
    duplicates: int
    refused: int
    redactions: dict[str, int]
    columns: dict[str, str | None]
    seconds: float

    @classmethod
    def of(cls, batch: ImportBatch, columns: dict[str, str | None], seconds: float) -> ImportReport:
        """The report of a stored batch."""
        return cls(
            batch_id=batch.id, name=batch.name, source=batch.source, imported=batch.imported,
            duplicates=batch.duplicates, refused=batch.refused, redactions=batch.redactions, columns=columns,
            seconds=round(seconds, 2),
        )  # fmt: skip

    def summary(self) -> str:
        """One line for the console and the UI."""
        redacted = sum(self.redactions.values())
        return (
            f"imported {self.imported} question(s) from {self.source} as batch {self.name!r}; skipped "
            f"{self.duplicates} duplicate(s); {self.refused} refused by the input guard (queued, flagged); "
            f"{redacted} identifier(s) redacted"
        )


def import_questions(
    path: Path,
    importer: str,
    queue: ReviewQueue,
    safety: SafetyChecker,
    *,
    redact: bool = True,
    columns: Columns | None = None,
    batch: str | None = None,
    priority: int = 0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: Callable[[float, str], None] | None = None,
) -> ImportReport:
    """Read a question set and store its new questions in the queue as one batch.

    Args:
        path: a JSONL, CSV or Parquet file, or a folder saved by ``datasets``.
        importer: who imports it (the login, or the system user for the command line).
        queue: the queue to add to; read again under its store's lock before storing, so repeats
            of any earlier import, by any process, are found.
        safety: redaction and the input guard.
        redact: replace identifiers before storing (``--redact-phi``).
        columns: which column holds what (guessed from the usual names when not given).
        batch: the batch's name (default: the file's name and the date).
        priority: the items' queue priority (higher first).
        max_bytes: files above this size are refused.
        progress: called with (fraction, message) while screening.

    Raises:
        UserError: the file, a column or a question is unusable, the batch name is empty or
            already used, or no question is new; nothing is stored.
    """
    started = time.perf_counter()
    report = progress or (lambda fraction, message: None)
    report(0.0, f"reading {Path(path).name}")
    qset = read_question_set(Path(path), columns, max_bytes)
    name = _batch_name(batch, qset)
    queue.refresh()
    _check_new_name(name, queue)  # before screening, which is most of a large import's time
    batch_id = new_id()
    screened = _screen_all(qset.rows, safety, redact, report)
    # Repeats within the set are dropped here; repeats of the queue below, under the store's lock.
    within: dict[str, QueueItem] = {}
    for row, (texts, found, refusal) in zip(qset.rows, screened):
        key = normalise(texts[0])
        if key in within:
            continue
        rest = iter(texts[1:])
        within[key] = QueueItem(
            reviewer=importer,
            batch_id=batch_id,
            prompt=texts[0],
            reference=next(rest) if row.reference is not None else None,
            context=next(rest) if row.context is not None else None,
            external_id=row.external_id,
            metadata=row.metadata,
            priority=priority,
            flags=[] if refusal is None else [SafetyFlag(kind="input_refused", severity="medium", explanation=refusal)],
            redactions=found,
        )
    report(0.92, f"storing up to {len(within)} question(s)")
    # Deciding what is new and storing it is one step under the queue store's lock, so two imports
    # (in the app and from a shell) never both store a question or a batch name.
    with queue.store.locked():
        queue.refresh()
        _check_new_name(name, queue)
        queued = {normalise(item.prompt) for item in queue.items()}
        items = [item for key, item in within.items() if key not in queued]
        if not items:
            raise UserError(
                f"nothing to import: all {len(qset.rows)} question(s) of {qset.source} are already in the queue "
                "or repeat each other"
            )
        totals: dict[str, int] = {}
        for item in items:
            for kind, count in item.redactions.items():
                totals[kind] = totals.get(kind, 0) + count
        record = ImportBatch(
            id=batch_id,
            reviewer=importer,
            name=name,
            source=qset.source,
            imported=len(items),
            duplicates=len(qset.rows) - len(items),
            refused=sum(1 for item in items if item.flags),
            redactions=totals,
        )
        queue.store.append_many([*items, record])  # the batch record last: it commits the items
        queue.refresh()
    result = ImportReport.of(record, qset.columns, time.perf_counter() - started)
    log.info("%s: %s in %.1f s", importer, result.summary(), result.seconds)
    report(1.0, result.summary())
    return result


# One question's screening: its texts (question, then reference and context if any) after
# redaction, the identifiers found per type, and the input guard's reason when it refuses.
Screened = tuple[list[str], dict[str, int], "str | None"]


def screen_row(row: QuestionRow, safety: SafetyChecker, redact: bool) -> Screened:
    """Redact a question row's texts and screen its question, exactly as a typed question is."""
    texts = [row.question, *(t for t in (row.reference, row.context) if t is not None)]
    found: dict[str, int] = {}
    if redact:
        texts, found = safety.redact_many(texts)
    verdict = safety.check_input(texts[0])
    return texts, found, None if verdict.allowed else verdict.reason


def _screen_all(
    rows: list[QuestionRow], safety: SafetyChecker, redact: bool, report: Callable[[float, str], None]
) -> list[Screened]:
    """Every row screened; a large set across all cores. Screening is pure regular-expression work
    in Python, so one interpreter would take most of a 100k import; worker
    processes are started fresh (spawn), never forked from a server holding a model and threads."""
    total = len(rows)
    workers = min(os.cpu_count() or 1, math.ceil(total / CHUNK))
    if total < PARALLEL_FROM or workers < 2:
        out = []
        for n, row in enumerate(rows):
            if n % PROGRESS_EVERY == 0:
                report(0.05 + 0.85 * n / max(total, 1), f"screening question {n + 1} of {total}")
            out.append(screen_row(row, safety, redact))
        return out
    chunks = [rows[i : i + CHUNK] for i in range(0, total, CHUNK)]
    results: list[list[Screened]] = [[] for _ in chunks]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(safety, redact)) as pool:
        futures = {pool.submit(_screen_chunk, chunk): i for i, chunk in enumerate(chunks)}
        for done, future in enumerate(as_completed(futures), start=1):
            results[futures[future]] = future.result()
            report(0.05 + 0.85 * done / len(chunks), f"screened {min(done * CHUNK, total)} of {total} questions")
    return [screened for chunk in results for screened in chunk]


_WORKER: tuple[SafetyChecker, bool] | None = None


def _init_worker(safety: SafetyChecker, redact: bool) -> None:
    global _WORKER
    _WORKER = (safety, redact)


def _screen_chunk(rows: list[QuestionRow]) -> list[Screened]:
    assert _WORKER is not None, "worker not initialised"
    safety, redact = _WORKER
    return [screen_row(row, safety, redact) for row in rows]


def _check_new_name(name: str, queue: ReviewQueue) -> None:
    if any(b.name == name for b in queue.batches.values()):
        raise UserError(f"a batch named {name!r} was already imported; choose another name with --batch")


def _batch_name(batch: str | None, qset: QuestionSet) -> str:
    if batch is not None:
        name = check_text(batch, "the batch name").strip()
        if not name:
            raise UserError("the batch name is empty")
    else:
        name = f"{qset.source} {time.strftime('%Y-%m-%d %H:%M')}"
    return name
