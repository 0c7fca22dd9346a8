"""FeedbackLedger: an in-memory index of the store, kept current by reading from a cursor.

The app and the trainer each hold one. ``refresh()`` reads only what was appended since the last
call (by any process), so lookups and counts stay O(new records).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ..core.errors import NotFoundError
from .records import Feedback, Generation
from .store import CorruptLine, FeedbackStore


@dataclass(frozen=True)
class Judgement:
    """A feedback record, where it starts in the store, and the generation it judges."""

    offset: int
    feedback: Feedback
    generation: Generation


class FeedbackLedger:
    """Generations by id and judgements in store order.

    Args:
        store: the store to index.
    """

    def __init__(self, store: FeedbackStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._cursor = 0
        self._generations: dict[str, Generation] = {}
        self._judgements: list[Judgement] = []
        self._orphans: list[tuple[int, Feedback]] = []
        self._in_order: list[Generation] = []  # the generations in store order, for followers
        self._by_item: dict[str, list[Generation]] = {}  # queued item id -> its generations, oldest first
        self.corrupt: list[CorruptLine] = []

    def refresh(self) -> None:
        """Index every record appended since the last refresh."""
        with self._lock:
            result = self.store.read(self._cursor)
            self._cursor = result.cursor
            self.corrupt.extend(result.corrupt)
            for offset, record in result.records:
                if isinstance(record, Generation):
                    self._generations[record.id] = record
                    self._in_order.append(record)
                    if record.item_id is not None:
                        self._by_item.setdefault(record.item_id, []).append(record)
                else:
                    self._orphans.append((offset, record))
            # A feedback line may precede its generation's line only if another process wrote out
            # of order; keep it until the generation shows up rather than drop it.
            waiting = []
            for offset, fb in self._orphans:
                gen = self._generations.get(fb.generation_id)
                if gen is None:
                    waiting.append((offset, fb))
                else:
                    self._judgements.append(Judgement(offset, fb, gen))
            self._orphans = waiting

    @property
    def cursor(self) -> int:
        """Byte offset up to which the store has been indexed."""
        return self._cursor

    def generation(self, generation_id: str) -> Generation:
        """The generation with this id.

        Raises:
            NotFoundError: no such generation in the store.
        """
        gen = self._generations.get(generation_id)
        if gen is None:
            self.refresh()
            gen = self._generations.get(generation_id)
        if gen is None:
            raise NotFoundError(f"unknown generation id {generation_id!r}: ask a question first")
        return gen

    def judgements(self, after: int = 0) -> list[Judgement]:
        """Judgements whose line starts at or after byte offset ``after``, in store order."""
        with self._lock:
            return [j for j in self._judgements if j.offset >= after]

    def judgements_from(self, index: int) -> list[Judgement]:
        """Judgements from position ``index`` on, in store order (``len`` of an earlier call's list
        is where to continue from): an O(new) way to follow the ledger."""
        with self._lock:
            return self._judgements[index:]

    def item_generations(self, item_id: str) -> list[Generation]:
        """The generations of a queued item, oldest first."""
        with self._lock:
            return list(self._by_item.get(item_id, ()))

    def generations(self) -> list[Generation]:
        """Every generation, in store order."""
        with self._lock:
            return list(self._in_order)

    def generations_from(self, index: int) -> list[Generation]:
        """Generations from position ``index`` on, in store order: an O(new) way to follow the ledger."""
        with self._lock:
            return self._in_order[index:]

    def refused_generations(self) -> list[Generation]:
        """Generations whose question the input guard refused, in store order."""
        with self._lock:
            return [g for g in self._generations.values() if g.refused is not None]

    def find_same(self, feedback: Feedback) -> Feedback | None:
        """An already stored judgement identical to ``feedback`` (same reviewer, generation,
        action, candidate, text, reason and ranking), if any: a double-submit, not a new judgement."""
        key = _judgement_key(feedback)
        with self._lock:
            for j in reversed(self._judgements):
                if j.feedback.generation_id == feedback.generation_id and _judgement_key(j.feedback) == key:
                    return j.feedback
        return None

    def count(self, after: int = 0) -> int:
        """How many judgements start at or after ``after``."""
        with self._lock:
            return sum(1 for j in self._judgements if j.offset >= after)

    @property
    def generations_total(self) -> int:
        """How many generations are indexed."""
        return len(self._generations)


def _judgement_key(fb: Feedback) -> tuple:
    ranking = tuple(map(tuple, fb.ranking)) if fb.ranking is not None else None
    return (fb.reviewer, fb.generation_id, fb.action, fb.candidate, fb.text, fb.reason, ranking)
