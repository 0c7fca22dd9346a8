"""A team's judgements of queued items, grouped by item and resolved into what training uses.

With one review per item (``--reviews-per-item 1``) every judgement is used as it is, as for a
typed question. With k > 1, an item is used once it is resolved:

- its k reviewers agree (``consensus.resolve`` at ``--consensus-threshold``): the consensus is
  used, as judgements by the reviewer ``consensus`` (an accept or reject per agreed candidate,
  and the merged ranking);
- or an admin adjudicated it: the adjudication (a judgement with ``settles``) is used as it is.

Every edit is used as well, resolved or not: an edit is a clinician's own correct answer.
Judgements of typed questions are used as they are. A consensus judgement sits at the store
offset of the judgement that resolved the item, so a round's "new since the last version" and the
retrain threshold count an item when it is resolved, and its id is fixed by the judgements behind
it, so the hold-out draw never changes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from .consensus import Resolution, resolve
from .ledger import Judgement
from .records import Feedback

CONSENSUS_REVIEWER = "consensus"
_ID_SPACE = uuid.UUID("6f1c2d1e-8f7a-4a57-9a51-3c1c0de5e7a1")


@dataclass
class ItemReview:
    """The judgements of one queued item: the reviewers' and any adjudications, in store order."""

    item_id: str
    reviews: list[Judgement] = field(default_factory=list)
    adjudications: list[Judgement] = field(default_factory=list)

    @property
    def reviewers(self) -> set[str]:
        """Who judged the item (adjudicators not counted)."""
        return {j.feedback.reviewer for j in self.reviews}

    @property
    def candidates(self) -> int:
        """How many candidates the judged generation has."""
        return len((self.reviews or self.adjudications)[0].generation.candidates)

    def resolution(self, threshold: float) -> Resolution:
        """The consensus of the reviewers' judgements."""
        return resolve([j.feedback for j in self.reviews], self.candidates, threshold)


def group_by_item(judgements: list[Judgement]) -> tuple[dict[str, ItemReview], list[Judgement]]:
    """Judgements of queued items grouped by item, and the judgements of typed questions."""
    items: dict[str, ItemReview] = {}
    typed: list[Judgement] = []
    for j in judgements:
        settles = j.feedback.settles
        item_id = settles or j.generation.item_id
        if item_id is None:
            typed.append(j)
            continue
        review = items.setdefault(item_id, ItemReview(item_id))
        (review.adjudications if settles else review.reviews).append(j)
    return items, typed


def item_state(review: ItemReview, k: int, threshold: float) -> str:
    """``adjudicated``, ``resolved``, ``disputed`` (k reviewers who disagree: waits for an admin) or ``open``."""
    if review.adjudications:
        return "adjudicated"
    if len(review.reviewers) < k:
        return "open"
    return "resolved" if review.resolution(threshold).status == "resolved" else "disputed"


def training_judgements(judgements: list[Judgement], k: int, threshold: float) -> list[Judgement]:
    """What training uses of ``judgements`` (see the module docstring), in store order.

    Args:
        judgements: the ledger's judgements, in store order.
        k: reviews per item (``--reviews-per-item``).
        threshold: the consensus threshold (``--consensus-threshold``).
    """
    if k <= 1:
        return list(judgements)
    items, out = group_by_item(judgements)
    for review in items.values():
        out.extend(j for j in review.reviews if j.feedback.action == "edit")
        if review.adjudications:
            out.append(review.adjudications[-1])
        else:
            out.extend(consensus_judgements(review, k, threshold))
    return sorted(out, key=lambda j: j.offset)


def consensus_judgements(review: ItemReview, k: int, threshold: float) -> list[Judgement]:
    """The consensus of a resolved item as judgements by ``consensus`` (none if it is not resolved)."""
    if len(review.reviewers) < k:
        return []
    resolution = review.resolution(threshold)
    if resolution.status != "resolved":
        return []
    # The item is resolved by its k-th reviewer's first judgement: that is where it counts as new.
    first_by = {}
    for j in review.reviews:
        first_by.setdefault(j.feedback.reviewer, j)
    deciding = sorted(first_by.values(), key=lambda j: j.offset)[k - 1]
    generation = deciding.generation
    sources = ",".join(sorted(j.feedback.id for j in review.reviews))
    made = []

    def add(kind: str, **fields) -> None:
        fid = uuid.uuid5(_ID_SPACE, f"{review.item_id}|{kind}|{sources}").hex
        fb = Feedback(id=fid, reviewer=CONSENSUS_REVIEWER, generation_id=generation.id, created_at=deciding.feedback.created_at, **fields)
        made.append(Judgement(deciding.offset, fb, generation))

    reviewers = len(review.reviewers)
    for candidate, label in sorted(resolution.labels.items()):
        if label == "accept":
            add(f"accept:{candidate}", action="accept", candidate=candidate)
        else:
            add(f"reject:{candidate}", action="reject", candidate=candidate, reason=f"rejected by the consensus of {reviewers} reviewers")
    if resolution.ranking is not None:
        add("rank", action="rank", ranking=resolution.ranking)
    return made


def resolved_count(judgements: list[Judgement], k: int, threshold: float, after: int = 0) -> int:
    """What the retrain threshold counts: with k > 1, items resolved or adjudicated at or after
    offset ``after`` plus judgements of typed questions there; with k = 1, every judgement there."""
    if k <= 1:
        return sum(1 for j in judgements if j.offset >= after)
    items, typed = group_by_item(judgements)
    count = sum(1 for j in typed if j.offset >= after)
    for review in items.values():
        if review.adjudications:
            count += review.adjudications[-1].offset >= after
        elif made := consensus_judgements(review, k, threshold):  # empty unless k reviewers agree
            count += made[0].offset >= after
    return count
