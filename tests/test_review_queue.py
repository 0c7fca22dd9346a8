"""The review queue's rules on its own records: order, overlap, claims, skips, lapses, races."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

from hitl_app.feedback.queue import CLAIM_TTL, ReviewQueue
from hitl_app.feedback.queue_records import Claim, ImportBatch, QueueItem, Skip
from hitl_app.feedback.records import SafetyFlag, utc_now
from hitl_app.feedback.store import QueueStore


def add_batch(store: QueueStore, prompts: list[str], priority: int = 0, flagged: tuple[int, ...] = ()) -> list[QueueItem]:
    batch = ImportBatch(reviewer="admin", name=f"b{len(prompts)}-{priority}", source="set.jsonl", imported=len(prompts),
                        duplicates=0, refused=0)  # fmt: skip
    flag = SafetyFlag(kind="input_refused", severity="medium", explanation="refused")
    items = [
        QueueItem(reviewer="admin", batch_id=batch.id, prompt=p, priority=priority, flags=[flag] if i in flagged else [])
        for i, p in enumerate(prompts)
    ]
    store.append_many([*items, batch])
    return items


def claim(queue: ReviewQueue, reviewer: str) -> QueueItem | None:
    with queue.store.locked():
        queue.refresh()
        item = queue.peek(reviewer)
        if item is not None and queue.available(item.id, reviewer):
            queue.store.append(Claim(reviewer=reviewer, item_id=item.id, generation_id=f"g-{item.id}"))
            queue.refresh()
            return item
    return None


def test_order_is_priority_then_flagged_then_oldest(tmp_path: Path) -> None:
    store = QueueStore(tmp_path)
    low = add_batch(store, ["a", "b", "c"], flagged=(2,))
    high = add_batch(store, ["d"], priority=5)
    queue = ReviewQueue(store)
    queue.refresh()
    assert [i.prompt for i in queue.items()] == ["d", "c", "a", "b"]
    assert queue.peek("x").id == high[0].id
    queue.reprioritise(low[1].id, flagged=True)  # its candidates were flagged: it moves up among the flagged
    assert [i.prompt for i in queue.items()] == ["d", "b", "c", "a"]


def test_a_later_batchs_flagged_item_goes_before_earlier_unflagged_ones(tmp_path: Path) -> None:
    store = QueueStore(tmp_path)
    add_batch(store, ["a", "b"])
    queue = ReviewQueue(store)
    queue.refresh()
    add_batch(store, ["c", "d"], flagged=(1,))
    queue.refresh()  # merged into the order read before, not appended after it
    assert [i.prompt for i in queue.items()] == ["d", "a", "b", "c"]


def test_items_count_only_once_their_batch_record_is_stored(tmp_path: Path) -> None:
    store = QueueStore(tmp_path)
    orphan = QueueItem(reviewer="admin", batch_id="never-committed", prompt="half-imported")
    store.append(orphan)  # a crash before the batch record: the item is not part of the queue
    add_batch(store, ["whole"])
    queue = ReviewQueue(store)
    queue.refresh()
    assert [i.prompt for i in queue.items()] == ["whole"] and queue.item(orphan.id) is None


def test_k_slots_nobody_twice_and_open_claims_come_back(tmp_path: Path) -> None:
    store = QueueStore(tmp_path)
    first, second = add_batch(store, ["one", "two"])
    queue = ReviewQueue(store, reviews_per_item=2)
    assert claim(queue, "a").id == first.id
    assert queue.peek("a").id == first.id  # a reload shows the same item, not a second slot
    assert claim(queue, "b").id == first.id
    assert claim(queue, "c").id == second.id  # both slots of the first are taken
    queue.note_judged(first.id, "a")
    assert queue.peek("a").id == second.id and queue.open_claim("a") is None
    queue.note_judged(first.id, "b")
    assert queue.full == 1
    assert queue.progress("a").done == 1


def test_a_skip_frees_the_slot_and_the_item_is_not_offered_again(tmp_path: Path) -> None:
    store = QueueStore(tmp_path)
    [only] = add_batch(store, ["one"])
    queue = ReviewQueue(store, reviews_per_item=1)
    assert claim(queue, "a").id == only.id
    assert claim(queue, "b") is None
    store.append(Skip(reviewer="a", item_id=only.id))
    queue.refresh()
    assert queue.skipped(only.id, "a") and queue.peek("a") is None
    assert claim(queue, "b").id == only.id
    assert queue.progress("a").skipped == 1


def test_a_lapsed_claim_frees_its_slot(tmp_path: Path) -> None:
    store = QueueStore(tmp_path)
    [only] = add_batch(store, ["one"])
    queue = ReviewQueue(store)
    assert claim(queue, "a").id == only.id
    later = utc_now() + CLAIM_TTL + timedelta(minutes=1)
    assert queue.available(only.id, "b", now=later) and not queue.available(only.id, "b")


def test_a_judgement_noted_before_its_item_is_read_still_counts(tmp_path: Path) -> None:
    store = QueueStore(tmp_path)
    [only] = add_batch(store, ["one"])
    queue = ReviewQueue(store)
    queue.note_judged(only.id, "a")  # the feedback store was read first
    queue.refresh()
    assert queue.full == 1 and queue.peek("b") is None


@pytest.mark.parametrize("k", [1, 2, 3])
def test_racing_reviewers_never_take_more_than_k_slots(tmp_path: Path, k: int) -> None:
    store = QueueStore(tmp_path)
    [only] = add_batch(store, ["contested"])
    taken: list[str] = []
    start = threading.Barrier(8)

    def press_next(name: str) -> None:
        queue = ReviewQueue(QueueStore(tmp_path), reviews_per_item=k)  # as separate processes would
        start.wait()
        if claim(queue, name) is not None:
            taken.append(name)

    threads = [threading.Thread(target=press_next, args=(f"r{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(taken) == k
    queue = ReviewQueue(store, reviews_per_item=k)
    queue.refresh()
    assert len({c for c in taken}) == k and not queue.available(only.id, "someone-else")


@pytest.mark.parametrize("uncertain_first", [True, False])
def test_uncertain_items_first_within_their_priority(tmp_path: Path, uncertain_first: bool) -> None:
    store = QueueStore(tmp_path)
    low = add_batch(store, ["a", "b", "c", "d"])
    high = add_batch(store, ["urgent"], priority=5)
    queue = ReviewQueue(store, uncertain_first=uncertain_first)
    queue.refresh()
    a, b, c, d = low
    queue.set_uncertainty(c.id, 0.1)  # the reward model can hardly tell c's top two candidates apart
    queue.set_uncertainty(b.id, 0.8)
    queue.set_uncertainty(high[0].id, 3.0)  # priority still comes first, whatever the gap
    order = [item.prompt for item in queue.items()]
    assert order == (["urgent", "c", "b", "a", "d"] if uncertain_first else ["urgent", "a", "b", "c", "d"])
    assert queue.peek("dr-x").prompt == "urgent"
    queue.set_uncertainty(b.id, 0.05)  # new candidates (a new version) move an item again
    assert [item.prompt for item in queue.items()][1] == ("b" if uncertain_first else "a")
