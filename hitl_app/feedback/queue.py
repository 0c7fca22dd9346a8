"""The review queue: which imported item each clinician gets next, derived from the queue's records.

State is rebuilt from ``feedback/queue.jsonl`` (items, batches, claims, skips) and from the
judgements of queued items (``note_judged``), never owned here. The rules:

- **Order.** By the admin's priority (higher first), then safety-flagged items, then oldest first.
  With ``uncertain_first`` (``--uncertain-first on``), within the same priority and flag, items whose
  candidates are already generated come first, the closest reward of their top two candidates
  first (``set_uncertainty``): where the reward model is least sure, a clinician's judgement
  teaches most.
- **Overlap.** An item has ``k`` review slots (``--reviews-per-item``). A reviewer takes one with a
  ``Claim``; the claim holds the slot until they judge the item, skip it (``Skip`` frees the slot),
  or it lapses unjudged after ``CLAIM_TTL`` (someone who closed the tab does not block the item).
- **Nobody sees an item twice,** claimed, judged or skipped: an item is offered to a reviewer once.
  A reviewer's open claim (taken, not yet judged or skipped) is what they get back first, so a
  reload shows the same item rather than taking a second slot.
- **Races.** Choosing and claiming happen under the queue store's lock (``QueueStore.locked``),
  after reading what other writers appended, so two reviewers never both take the k-th slot.
  Within a process, every method holds the queue's own lock, so a refresh in one thread never
  applies records another thread is applying, nor changes what another is reading.
"""

from __future__ import annotations

import bisect
import functools
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, TypeVar

from .queue_records import Claim, ImportBatch, QueueItem, Skip
from .records import utc_now
from .store import QueueStore

# How long a claim without a judgement holds its slot.
CLAIM_TTL = timedelta(hours=1)
# The order key's reward gap for an item whose candidates have not been scored: after every known gap.
_UNKNOWN_GAP = float("inf")
_T = TypeVar("_T")


def _locked(method: Callable[..., _T]) -> Callable[..., _T]:
    """Run ``method`` holding the queue's lock (re-entrant: locked methods call each other)."""

    @functools.wraps(method)
    def run(self: "ReviewQueue", *args, **kwargs) -> _T:
        with self._lock:
            return method(self, *args, **kwargs)

    return run


@dataclass
class ReviewerProgress:
    """One reviewer's standing in the queue."""

    done: int
    skipped: int
    left: int
    open: int  # claimed, not yet judged or skipped


@dataclass
class _ItemState:
    item: QueueItem
    order: tuple
    claims: dict[str, Claim] = field(default_factory=dict)  # reviewer -> their claim
    skipped: set[str] = field(default_factory=set)
    judged: set[str] = field(default_factory=set)

    def holds_slot(self, reviewer: str, now: datetime) -> bool:
        """Whether ``reviewer``'s claim on this item still takes one of its slots."""
        if reviewer in self.judged:
            return True
        if reviewer in self.skipped or reviewer not in self.claims:
            return False
        return now - self.claims[reviewer].created_at < CLAIM_TTL

    def taken(self, now: datetime) -> int:
        """Slots taken: judged, or claimed and neither skipped nor lapsed."""
        return len(self.judged | {r for r in self.claims if self.holds_slot(r, now)})


class ReviewQueue:
    """The queue derived from ``QueueStore`` records; ``refresh`` reads what was appended since.

    Args:
        store: the queue's store.
        reviews_per_item: slots per item (``--reviews-per-item``).
    """

    def __init__(self, store: QueueStore, reviews_per_item: int = 1, uncertain_first: bool = False) -> None:
        self.store = store
        self.k = reviews_per_item
        self.uncertain_first = uncertain_first
        self._lock = threading.RLock()
        self._cursor = 0
        self._items: dict[str, _ItemState] = {}
        self._order: list[tuple] = []  # sorted order keys of the committed items
        self._pending: dict[str, list[tuple[int, QueueItem]]] = {}  # batch id -> items awaiting its record
        self.batches: dict[str, ImportBatch] = {}
        self._claims_of: dict[str, list[str]] = {}  # reviewer -> item ids claimed, oldest first
        self._seen: dict[str, set[str]] = {}  # reviewer -> items claimed, skipped or judged
        self._full: set[str] = set()  # items judged by k reviewers
        self._early_judged: dict[str, set[str]] = {}  # judgements noted before their item was read

    # ----- reading -----
    @_locked
    def refresh(self) -> None:
        """Apply every queue record appended since the last refresh (by any process)."""
        result = self.store.read(self._cursor)
        self._cursor = result.cursor
        for offset, record in result.records:
            if isinstance(record, QueueItem):
                self._pending.setdefault(record.batch_id, []).append((offset, record))
            elif isinstance(record, ImportBatch):
                self._commit(record)
            elif isinstance(record, Claim):
                self._apply_claim(record)
            elif isinstance(record, Skip):
                self._apply_skip(record)

    def _commit(self, batch: ImportBatch) -> None:
        self.batches[batch.id] = batch
        added = []
        for offset, item in self._pending.pop(batch.id, []):
            key = (-item.priority, 0 if item.flags else 1, _UNKNOWN_GAP, offset, item.id)
            state = _ItemState(item=item, order=key, judged=self._early_judged.pop(item.id, set()))
            self._items[item.id] = state
            added.append(key)
            for reviewer in state.judged:
                self._seen.setdefault(reviewer, set()).add(item.id)
            if len(state.judged) >= self.k:
                self._full.add(item.id)
        # Two sorted runs: Python's sort merges them in linear time.
        self._order = sorted(self._order + sorted(added))

    def _apply_claim(self, claim: Claim) -> None:
        state = self._items.get(claim.item_id)
        if state is None or claim.reviewer in state.claims:
            return
        state.claims[claim.reviewer] = claim
        self._claims_of.setdefault(claim.reviewer, []).append(claim.item_id)
        self._seen.setdefault(claim.reviewer, set()).add(claim.item_id)

    def _apply_skip(self, skip: Skip) -> None:
        state = self._items.get(skip.item_id)
        if state is not None:
            state.skipped.add(skip.reviewer)
            self._seen.setdefault(skip.reviewer, set()).add(skip.item_id)

    @_locked
    def note_judged(self, item_id: str, reviewer: str) -> None:
        """Record that ``reviewer`` judged ``item_id`` (from the feedback store's judgements)."""
        state = self._items.get(item_id)
        if state is None:
            self._early_judged.setdefault(item_id, set()).add(reviewer)
            return
        state.judged.add(reviewer)
        self._seen.setdefault(reviewer, set()).add(item_id)
        if len(state.judged) >= self.k:
            self._full.add(item_id)

    # ----- looking up -----
    @_locked
    def item(self, item_id: str) -> QueueItem | None:
        """The committed item with this id, if any."""
        state = self._items.get(item_id)
        return state.item if state else None

    @_locked
    def claim_of(self, item_id: str, reviewer: str) -> Claim | None:
        """``reviewer``'s claim on ``item_id``, if they took it."""
        state = self._items.get(item_id)
        return state.claims.get(reviewer) if state else None

    @_locked
    def skipped(self, item_id: str, reviewer: str) -> bool:
        """Whether ``reviewer`` skipped ``item_id``."""
        state = self._items.get(item_id)
        return state is not None and reviewer in state.skipped

    @_locked
    def first_claim(self, item_id: str) -> Claim | None:
        """The earliest claim on the item: its generation is the one every reviewer of it sees."""
        state = self._items.get(item_id)
        return min(state.claims.values(), key=lambda c: c.created_at) if state and state.claims else None

    @_locked
    def open_claim(self, reviewer: str, now: datetime | None = None) -> QueueItem | None:
        """The oldest item ``reviewer`` claimed and has neither judged nor skipped (nor let lapse)."""
        now = now or utc_now()
        for item_id in self._claims_of.get(reviewer, []):
            state = self._items[item_id]
            if reviewer not in state.judged and state.holds_slot(reviewer, now):
                return state.item
        return None

    @_locked
    def available(self, item_id: str, reviewer: str, now: datetime | None = None) -> bool:
        """Whether ``reviewer`` may take a slot of ``item_id`` now."""
        state = self._items.get(item_id)
        if state is None or item_id in self._full or item_id in self._seen.get(reviewer, ()):
            return False
        return state.taken(now or utc_now()) < self.k

    @_locked
    def peek(self, reviewer: str, now: datetime | None = None) -> QueueItem | None:
        """The item ``reviewer`` would get next: their open claim, else the first available in order."""
        now = now or utc_now()
        mine = self.open_claim(reviewer, now)
        if mine is not None:
            return mine
        seen = self._seen.get(reviewer, set())
        for key in self._order:
            item_id = key[-1]
            if item_id in self._full or item_id in seen:
                continue
            state = self._items[item_id]
            if state.taken(now) < self.k:
                return state.item
        return None

    @_locked
    def upcoming(self, limit: int, now: datetime | None = None) -> list[QueueItem]:
        """The first ``limit`` items in order that still have a free slot and no claim yet: the ones
        to generate candidates for ahead of time."""
        now = now or utc_now()
        out = []
        for key in self._order:
            if len(out) >= limit:
                break
            state = self._items[key[-1]]
            if key[-1] not in self._full and not state.claims and state.taken(now) < self.k:
                out.append(state.item)
        return out

    @_locked
    def reprioritise(self, item_id: str, flagged: bool) -> None:
        """Move an item among the safety-flagged ones (its candidates were flagged) or back."""
        state = self._items.get(item_id)
        if state is None or (state.order[1] == 0) == flagged:
            return
        self._move(state, (state.order[0], 0 if flagged else 1, *state.order[2:]))

    @_locked
    def set_uncertainty(self, item_id: str, gap: float) -> None:
        """Record the reward gap between an item's top two candidates; with ``uncertain_first`` the
        item moves ahead of the items of its priority and flag with a larger gap or none known."""
        state = self._items.get(item_id)
        if state is None or not self.uncertain_first or state.order[2] == gap:
            return
        self._move(state, (*state.order[:2], gap, *state.order[3:]))

    def _move(self, state: "_ItemState", key: tuple) -> None:
        index = bisect.bisect_left(self._order, state.order)
        del self._order[index]
        state.order = key
        bisect.insort(self._order, state.order)

    @_locked
    def progress(self, reviewer: str, now: datetime | None = None) -> ReviewerProgress:
        """What ``reviewer`` has done, skipped and may still take."""
        now = now or utc_now()
        seen = self._seen.get(reviewer, set())
        done = sum(1 for i in seen if reviewer in self._items[i].judged)
        skipped = sum(1 for i in seen if reviewer in self._items[i].skipped and reviewer not in self._items[i].judged)
        open_ = sum(1 for i in seen if self._items[i].holds_slot(reviewer, now) and reviewer not in self._items[i].judged)
        # Left: items still open to anyone, minus those this reviewer has already been shown.
        unseen_open = len(self._items) - len(self._full) - sum(1 for i in seen if i not in self._full)
        return ReviewerProgress(done=done, skipped=skipped, left=unseen_open + open_, open=open_)

    @property
    def size(self) -> int:
        """Committed items."""
        return len(self._items)

    @property
    def full(self) -> int:
        """Items judged by ``k`` reviewers."""
        return len(self._full)

    @_locked
    def items(self) -> list[QueueItem]:
        """Every committed item, in queue order."""
        return [self._items[key[-1]].item for key in self._order]
