"""Benchmark ``store``: how long a fresh ledger takes to read a large feedback store.

Every app start and every new trainer process builds a ``FeedbackLedger`` and refreshes it from
cursor 0, so this is on the start-up path. The benchmark writes a synthetic store (seeded; half
generations with two candidate answers, half judgements of every action: accept, edit with its
text, rank with a ranking, reject with a reason) with the real record classes, one
``model_dump_json`` line each as ``FeedbackStore.append`` writes them, only without an fsync per
line. It then times, interleaved, cold reads (a fresh ledger's ``refresh()``) by two ways of
reading:

- the reference: ``json.loads`` then ``RECORD_ADAPTER.validate_python`` per line, with the garbage
  collector left alone (``FeedbackStore.read`` before it was made faster, kept here inline);
- the app's ``FeedbackStore.read`` as it is now (``parse_record`` and the collector paused).

Each figure is the median of ``REPEATS`` reads, each from the same heap (garbage collected
first). The app's read ends with its own full garbage collection, so its time leaves no collector
work for later; the reference's may leave some, so if anything the ratio understates the gain.
The file is in the page cache for every read (it was just written), so disk time is not counted.
The headline figure is ``read_s``; the goal is at most 2 s for 100k records.
"""

from __future__ import annotations

import gc
import json
import logging
import random
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from ..core.config import DEFAULT_SYSTEM_PROMPT
from ..feedback.ledger import FeedbackLedger
from ..feedback.records import RECORD_ADAPTER, Feedback, Generation, SafetyFlag, Sampling
from ..feedback.store import FEEDBACK_FILE, CorruptLine, FeedbackStore, ReadResult
from .figures import fmt, ratio
from .items import ITEMS, REJECT_REASON
from .plan import BenchConfig
from .timing import METER

log = logging.getLogger(__name__)

RECORDS = 100_000  # the store the 2 s goal is set for
QUICK_RECORDS = 20_000
REPEATS = 3  # cold reads per way of reading; the figures are their medians
SEED = 0
# Words per candidate answer and per edited text. With the other fields this makes a record about
# 0.8 kB on average, so 100k records are about 80 MB, the size of the store the goal was set on.
ANSWER_WORDS = 35
GOAL_S = 2.0
ACTIONS = ("accept", "edit", "rank", "reject")


def bench_store(cfg: BenchConfig) -> dict[str, Any]:
    """Benchmark ``store`` (see the module docstring): cold ledger reads, reference vs the app's.

    Args:
        cfg: only ``cfg.quick`` is read (20k records instead of 100k).

    Returns:
        Flat figures: ``records``, ``megabytes``, ``write_s`` (building the synthetic store),
        ``reference_s`` and ``read_s`` (median cold ``refresh()``; ``read_s`` is the headline),
        ``ratio`` (reference / read), ``read_per_100k_s``, ``records_within_goal``
        (how many records ``read_s`` scales to in ``GOAL_S``, assuming linear growth),
        ``meets_goal`` (``read_s`` scaled to 100k records <= ``GOAL_S``), ``repeats`` and
        ``foreign_cores`` (CPU used by other processes meanwhile; None without /proc).

    Raises:
        RuntimeError: the two ways of reading indexed different records.
    """
    records = QUICK_RECORDS if cfg.quick else RECORDS
    with tempfile.TemporaryDirectory(prefix="hitl-bench-store-") as tmp:
        directory = Path(tmp) / "feedback"
        started = time.perf_counter()
        path = write_synthetic_store(directory, records, SEED)
        write_s = time.perf_counter() - started
        megabytes = path.stat().st_size / 1e6
        _check_same(directory)

        since = METER.reading()
        reference: list[float] = []
        current: list[float] = []
        for _ in range(REPEATS):  # interleaved, so that load on a shared machine hits both alike
            reference.append(_cold_read(lambda: FeedbackLedger(_ReferenceStore(directory))))
            current.append(_cold_read(lambda: FeedbackLedger(FeedbackStore(directory))))
        foreign = METER.foreign_cores(since)

    reference_s = statistics.median(reference)
    read_s = statistics.median(current)
    per_100k = read_s * 100_000 / records
    figures: dict[str, Any] = {
        "records": records,
        "megabytes": round(megabytes, 1),
        "write_s": write_s,
        "reference_s": reference_s,
        "read_s": read_s,
        "ratio": ratio(reference_s, read_s),
        "read_per_100k_s": per_100k,
        "records_within_goal": int(GOAL_S / per_100k * 100_000),
        "meets_goal": per_100k <= GOAL_S,
        "repeats": REPEATS,
        "foreign_cores": foreign,
    }
    log.info(
        "store: %d records (%.1f MB): cold ledger read %s (reference %s, %sx); %s per 100k "
        "(goal <= %.0f s); other processes used %s cores",
        records, megabytes, fmt(read_s, " s", digits=2), fmt(reference_s, " s", digits=2),
        fmt(figures["ratio"], digits=2), fmt(per_100k, " s", digits=2), GOAL_S, fmt(foreign, digits=2),
    )
    return figures


def write_synthetic_store(directory: Path, records: int, seed: int) -> Path:
    """Write a store of ``records`` records (half generations, half judgements) and return its path.

    Each line is ``model_dump_json()`` of a validated record plus a newline, exactly what
    ``FeedbackStore.append`` writes, but in one buffered write without an fsync per record.
    Judgement ``i`` judges generation ``i`` and cycles through ``ACTIONS``; ids and times come
    from ``seed``, so the same arguments give the same bytes.

    Args:
        directory: the store's folder; created if missing, and its ``feedback.jsonl`` replaced.
        records: how many records to write (an odd count ends with a generation).
        seed: the random seed of the texts, ids and times.
    """
    rng = random.Random(seed)
    vocabulary = sorted({word for item in ITEMS for text in item for word in text.split()})
    started = datetime(2025, 1, 1, tzinfo=timezone.utc)
    sampling = Sampling(do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=256)
    flag = SafetyFlag(kind="interaction", severity="medium", explanation="warfarin with ibuprofen raises bleeding risk")

    def text() -> str:
        return " ".join(rng.choices(vocabulary, k=ANSWER_WORDS))

    def record_id() -> str:
        return f"{rng.getrandbits(128):032x}"

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FEEDBACK_FILE
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i in range((records + 1) // 2):
            reviewer = f"dr-{i % 7}"
            at = started + timedelta(minutes=2 * i)
            generation = Generation(
                id=record_id(),
                created_at=at,
                reviewer=reviewer,
                prompt=ITEMS[i % len(ITEMS)][0],
                system_prompt=DEFAULT_SYSTEM_PROMPT,
                candidates=[text(), text()],
                version=f"v{1 + i // 5000:04d}",
                sampling=sampling,
                prompt_tokens=rng.randint(20, 60),
                # The app checks every candidate; now and then one is flagged.
                flags=[[], [flag]] if i % 10 == 0 else [[], []],
            )
            f.write(generation.model_dump_json() + "\n")
            if 2 * i + 1 >= records:
                break
            action = ACTIONS[i % len(ACTIONS)]
            extra: dict[str, Any] = {}
            if action == "edit":
                extra["text"] = text()
            elif action == "rank":
                extra["ranking"] = [[0], [1]] if i % 8 < 4 else [[1], [0]]
            elif action == "reject":
                extra["reason"] = REJECT_REASON
            feedback = Feedback(
                id=record_id(),
                created_at=at + timedelta(seconds=rng.randint(10, 110)),
                reviewer=reviewer,
                generation_id=generation.id,
                action=action,
                **extra,
            )
            f.write(feedback.model_dump_json() + "\n")
    return path


def reference_read(store: FeedbackStore, cursor: int = 0) -> ReadResult:
    """``FeedbackStore.read`` as it was before it was made faster: ``json.loads`` + ``validate_python``
    per line, with the garbage collector left alone. The behaviour the fast read must keep."""
    result = ReadResult(cursor=cursor)
    if not store.path.exists():
        return result
    with open(store.path, "rb") as f:
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
            result.corrupt.append(CorruptLine(offset=offset, error=str(exc).splitlines()[0][:200]))
            continue
        result.records.append((offset, record))
    result.cursor = cursor + end
    return result


class _ReferenceStore(FeedbackStore):
    """The store read the reference way (``reference_read``)."""

    def read(self, cursor: int = 0) -> ReadResult:
        """``reference_read`` of this store."""
        return reference_read(self, cursor)


def _cold_read(make: Callable[[], FeedbackLedger]) -> float:
    """Seconds for ``refresh()`` of a fresh ledger from cursor 0.

    Garbage from earlier reads is collected first, so every read starts from the same heap.

    Raises:
        RuntimeError: the store has corrupt lines (the synthetic one has none).
    """
    gc.collect()
    ledger = make()
    started = time.perf_counter()
    ledger.refresh()
    elapsed = time.perf_counter() - started
    if ledger.corrupt:
        raise RuntimeError(f"the synthetic store has {len(ledger.corrupt)} corrupt lines")
    return elapsed


def _check_same(directory: Path) -> None:
    """Read the store both ways and check that they give the same records, offsets and cursor.

    Raises:
        RuntimeError: they differ.
    """
    reference = _ReferenceStore(directory).read()
    current = FeedbackStore(directory).read()
    if (reference.records, reference.cursor, reference.corrupt) != (current.records, current.cursor, current.corrupt):
        raise RuntimeError("the reference read and FeedbackStore.read gave different records")
